"""Fleet planning on a real GPU cluster's jobs: CO2e, deadlines and waits of six strategies.

Jobs: Microsoft's ITP 2021 traces (Gu et al., "ElasticFlow", ASPLOS '23; microsoft/elasticflow-traces,
MIT licence), one week of arrivals of a cluster (--start-day, --days), with their real submission
times, run times and GPU counts. Grid: the 2020 GB and FR carbon-intensity traces (Wiesner et al.,
"Let's Wait Awhile", Middleware 2021). Trace time 0 (2021-03-04, a Thursday) is mapped to 2020-03-05
00:00 UTC (a Thursday): same weekday and time of day.

Simulated on a 15-minute grid: a job arriving between two steps may start at the next one; a run holds
its GPUs for every step it touches; run times are known exactly (the trace's). Every GPU draws the
uncapped mean of greenjobs.planning.gpu_model (0.888 x 400 W); emissions are integrated over the TRUE
trace. Strategies:

  fifo         carbon-agnostic: pending jobs in arrival order start as soon as they fit (first fit,
               in the zone with the most free GPUs), as the Kubernetes scheduler would
  per-job      today's per-job planner (greenjobs.planning.job.plan, perfect forecast) at arrival,
               then a FIFO queue in the planned zone from the planned start
  cap          CAP-style carbon-dependent quota (after Lechowicz et al., SIGCOMM 2025): a zone may use
               cap x clip((U - c) / (U - L), 1/4, 1) GPUs at intensity c, L and U the lowest and highest
               intensity of the next 24 h; FIFO within the quota (cleanest zone first); a job at its
               latest start ignores the quota
  fleet        greenjobs.planning.fleet with a perfect 7-day forecast: re-planned from scratch every
               --replan (1 h), each arrival folded in with add_job between re-plans; the planner's
               defaults, zone_gap_percent 1 (learnt on other days by bench/zone_gap.py) included
  fleet-noisy  the same, each re-plan with a freshly issued noisy 7-day forecast (bench/carbon_savings.py's
               model: x (1 + e), e = (a + b x lead hours) z, z an AR(1) series, rho 0.95; one z per
               target hour, so that successive forecasts converge on the truth as the hour nears)
  fleet-offline  the fleet planner given every job of the sample up front, with a perfect forecast:
               what the algorithm reaches with the lower bound's information (not an operator mode);
               zone_gap_percent 0: no later arrival to leave clean-zone GPUs to
  lower-bound  time-indexed LP relaxation (HiGHS interior point through scipy): fractional (zone, start)
               choices on the 15-minute grid, a start holding the job's GPUs for its whole run; capacity
               per zone and step; each job ends by max(deadline + 15 min, its latest end under the
               strategies other than per-job); it knows every arrival of the sample in advance. No
               schedule that ends each job by then emits less (per-job's pile-up may end later).

    .venv/bin/python bench/fleet_planning.py --cluster cluster04 --deadlines slack24h
    .venv/bin/python bench/fleet_planning.py --cluster cluster04 --deadlines elasticflow   (and cluster07)

Writes bench/results/fleet_planning_<cluster>_<deadlines>.json; --plot draws docs/benchmarks/img/fleet-planning.png
from the result files present.
"""

import argparse
import csv
import functools
import heapq
import io
import json
import math
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from _common import CITATION, RESULTS, ROOT, load_trace, table, trace_dir
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.signal import lfilter
from scipy.sparse import coo_matrix

from greenjobs.carbon.series import IntensitySeries, from_epoch, to_epoch
from greenjobs.planning import gpu_model
from greenjobs.planning.capacity import Capacity
from greenjobs.planning.fleet import FleetJob, FleetPlan, Placement, add_job, plan_fleet
from greenjobs.planning.job import PlanRequest, plan

STEP = 900.0
ORIGIN = to_epoch(datetime(2020, 3, 5, tzinfo=UTC))
WATTS_PER_GPU = gpu_model.draw_fraction(1.0) * 400
HORIZON = 7 * 86400.0
ITP = ROOT.parent / "shared" / "data" / "gpu-cluster-traces" / "itp-2021"
ITP_CITATION = (
    'Jobs: Microsoft ITP 2021 traces, Gu et al., "ElasticFlow: An Elastic Serverless Training Platform '
    "for Distributed Deep Learning\", ASPLOS '23 (microsoft/elasticflow-traces, MIT licence)."
)
IMG = ROOT / "docs" / "benchmarks" / "img"


@dataclass(frozen=True)
class Job:
    id: str
    arrival: float  # epoch s on the 2020 grid
    duration: float  # s
    gpus: int
    deadline: float  # epoch s

    @property
    def latest(self) -> float:
        return self.deadline - self.duration

    @property
    def bins(self) -> int:
        return math.ceil(self.duration / STEP)


def load_jobs(cluster: str, start_day: float, days: float, rule: str) -> list[Job]:
    """One cluster's jobs arriving in [start_day, start_day + days), with the deadline rule applied."""
    with tarfile.open(ITP / "elasticflow-traces.tar.gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(f"{cluster}.csv"))
        f = tar.extractfile(member)
        assert f is not None
        rows = list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))
    lo, hi = start_day * 86400, (start_day + days) * 86400
    jobs = []
    for r in rows:
        sub = float(r["submission_time"])
        if not lo <= sub < hi:
            continue
        d = max(float(r["duration"]), 60.0)
        arrival = ORIGIN + sub
        # ElasticFlow's generated deadline: our jobs do not scale out, so never before arrival + run.
        deadline = arrival + d + 86400.0 if rule == "slack24h" else max(ORIGIN + float(r["deadline"]), arrival + d)
        jobs.append(Job(r["job_id"], arrival, d, int(r["num_gpu"]), deadline))
    jobs.sort(key=lambda j: (j.arrival, j.id))
    return jobs


# ------------------------------------------------------------------ simulation


@dataclass
class World:
    zones: list[str]
    cap: dict[str, int]
    truth: Mapping[str, IntensitySeries]


@dataclass
class State:
    t: float
    free: dict[str, int]
    running: list[tuple[float, str, int]]  # (end, zone, gpus) heap
    pending: dict[str, Job]  # arrival order


class Policy:
    name = ""
    planning_s = 0.0
    plans = 0

    def decide(self, st: State, new: list[Job], world: World) -> list[tuple[Job, str]]:
        raise NotImplementedError


def simulate(jobs: Sequence[Job], world: World, policy: Policy) -> dict[str, tuple[str, float]]:
    st = State(0.0, dict(world.cap), [], {})
    st.t = math.floor(jobs[0].arrival / STEP) * STEP
    i = 0
    out: dict[str, tuple[str, float]] = {}
    while i < len(jobs) or st.pending:
        if not st.pending and i < len(jobs) and not st.running:
            st.t = max(st.t, math.ceil(jobs[i].arrival / STEP) * STEP)
        while st.running and st.running[0][0] <= st.t:
            _, zone, g = heapq.heappop(st.running)
            st.free[zone] += g
        new = []
        while i < len(jobs) and jobs[i].arrival <= st.t:
            st.pending[jobs[i].id] = jobs[i]
            new.append(jobs[i])
            i += 1
        for job, zone in policy.decide(st, new, world):
            assert st.free[zone] >= job.gpus, (policy.name, job, zone, st.free)
            st.free[zone] -= job.gpus
            heapq.heappush(st.running, (st.t + job.bins * STEP, zone, job.gpus))
            del st.pending[job.id]
            out[job.id] = (zone, st.t)
        st.t += STEP
    return out


class Fifo(Policy):
    name = "fifo"

    def decide(self, st: State, new: list[Job], world: World) -> list[tuple[Job, str]]:
        started = []
        free = dict(st.free)
        for job in st.pending.values():
            zone = max(world.zones, key=lambda z: free[z])
            if free[zone] >= job.gpus:
                free[zone] -= job.gpus
                started.append((job, zone))
        return started


class PerJob(Policy):
    """Today's per-job planner, then a FIFO queue per zone from the planned start."""

    name = "per-job"

    def __init__(self) -> None:
        self.planned: dict[str, tuple[str, float]] = {}

    def decide(self, st: State, new: list[Job], world: World) -> list[tuple[Job, str]]:
        t0 = time.perf_counter()
        for job in new:
            now = from_epoch(st.t)
            latest = from_epoch(max(job.latest, st.t))
            req = PlanRequest(now=now, duration=timedelta(seconds=job.duration), latest_start=latest, zones=world.zones)
            r = plan(req, world.truth)
            self.planned[job.id] = (r.zone, to_epoch(r.start))
        self.planning_s += time.perf_counter() - t0
        self.plans += len(new)
        free = dict(st.free)
        due = sorted(
            (self.planned[j.id][1], j.arrival, j.id) for j in st.pending.values() if self.planned[j.id][1] <= st.t
        )
        started = []
        for _, _, jid in due:
            job = st.pending[jid]
            zone = self.planned[jid][0]
            if free[zone] >= job.gpus:
                free[zone] -= job.gpus
                started.append((job, zone))
        return started


class CapQuota(Policy):
    name = "cap"

    def __init__(self, floor: float = 0.25) -> None:
        self.floor = floor

    def decide(self, st: State, new: list[Job], world: World) -> list[tuple[Job, str]]:
        quota, now_c = {}, {}
        for z in world.zones:
            s = world.truth[z]
            a, b = np.searchsorted(s.times, (st.t, st.t + 86400), side="right")
            window = s.values[max(a - 1, 0) : b]
            lo, hi = float(window.min()), float(window.max())
            c = s.at(from_epoch(st.t))
            now_c[z] = c
            frac = 1.0 if hi <= lo else min(max((hi - c) / (hi - lo), self.floor), 1.0)
            quota[z] = world.cap[z] * frac
        free = dict(st.free)
        used = {z: world.cap[z] - st.free[z] for z in world.zones}
        order = sorted(world.zones, key=lambda z: now_c[z])
        started = []
        for job in st.pending.values():
            due = job.latest <= st.t
            for z in order:
                if free[z] >= job.gpus and (due or used[z] + job.gpus <= quota[z]):
                    free[z] -= job.gpus
                    used[z] += job.gpus
                    started.append((job, z))
                    break
        return started


class NoisyIssuer:
    """Forecasts issued at time t: the true trace x (1 + (a + b x lead hours) z).

    z is one AR(1) unit-variance series per zone over the trace's points (correlation rho), drawn once:
    successive forecasts of the same hour share their error draw and it shrinks as the hour nears, as
    real forecast revisions converge (independent redraws at every issue would make plans chase noise).
    """

    def __init__(self, a: float, b: float, rho: float, seed: int = 2020) -> None:
        self.a, self.b, self.rho = a, b, rho
        self.rng = np.random.default_rng(seed)
        self.z: dict[int, np.ndarray] = {}

    def __call__(self, s: IntensitySeries, t: float) -> IntensitySeries:
        z_all = self.z.get(id(s))
        if z_all is None:
            shocks = self.rng.standard_normal(len(s.times))
            z_all = lfilter([math.sqrt(1 - self.rho**2)], [1.0, -self.rho], shocks)
            z_all[0] = shocks[0]
            self.z[id(s)] = z_all
        i = max(int(np.searchsorted(s.times, t, side="right")) - 1, 0)
        j = int(np.searchsorted(s.times, t + HORIZON, side="left"))
        times = s.times[i:j].copy()
        times[0] = max(times[0], t)
        lead = np.maximum(times - t, 0.0) / 3600.0
        values = s.values[i:j] * np.maximum(1.0 + (self.a + self.b * lead) * z_all[i:j], 0.0)
        return IntensitySeries(times, values, t + HORIZON)


class Fleet(Policy):
    def __init__(
        self,
        name: str,
        replan_s: float,
        issuer: NoisyIssuer | None,
        fold_arrivals: bool = False,
        planner: Callable[..., FleetPlan] = plan_fleet,
    ) -> None:
        self.name = name
        self.planner = planner
        self.fold_arrivals = fold_arrivals
        self.replan_s = replan_s
        self.issuer = issuer
        self.plan: FleetPlan | None = None
        self.next_replan = -math.inf
        self.fleet_jobs: dict[str, FleetJob] = {}
        self.forecasts: dict[str, IntensitySeries] = {}
        self.replan_times: list[float] = []
        self.pending_sizes: list[int] = []

    def _job(self, job: Job, zones: list[str]) -> FleetJob:
        fj = self.fleet_jobs.get(job.id)
        if fj is None:
            fj = FleetJob(
                id=job.id,
                gpus=job.gpus,
                duration=timedelta(seconds=job.duration),
                latest_start=from_epoch(job.latest),
                zones=zones,
                arrival=from_epoch(job.arrival),
            )
            self.fleet_jobs[job.id] = fj
        return fj

    def decide(self, st: State, new: list[Job], world: World) -> list[tuple[Job, str]]:
        t0 = time.perf_counter()
        due = self.plan is None or st.t >= self.next_replan
        if due or (new and not self.fold_arrivals):
            if due:  # a fresh forecast every replan interval; arrivals in between re-plan on the last one
                self.next_replan = st.t + self.replan_s
                if self.issuer is None:
                    self.forecasts = {
                        z: world.truth[z].window(from_epoch(st.t), from_epoch(st.t + HORIZON)) for z in world.zones
                    }
                else:
                    self.forecasts = {z: self.issuer(world.truth[z], st.t) for z in world.zones}
            releases: dict[str, list[tuple[float, int]]] = {}
            for end, z, g in st.running:
                releases.setdefault(z, []).append((end, g))
            capacity = Capacity(base=dict(st.free), releases={z: sorted(r) for z, r in releases.items()})
            jobs = []
            for job in st.pending.values():
                fj = self._job(job, world.zones)
                a = self.plan.assignments.get(job.id) if self.plan else None
                jobs.append(replace(fj, current=Placement(a.zone, a.start)) if a is not None else fj)
            self.plan = self.planner(jobs, capacity, self.forecasts, from_epoch(st.t))
            self.replan_times.append(time.perf_counter() - t0)
            self.pending_sizes.append(len(jobs))
        else:
            for job in new:
                self.plan = add_job(self.plan, self._job(job, world.zones), from_epoch(st.t))
        self.planning_s += time.perf_counter() - t0
        self.plans += 1
        assert self.plan is not None
        free = dict(st.free)
        started = []
        late = []
        for job in st.pending.values():
            a = self.plan.assignments.get(job.id)
            if a is None:
                raise SystemExit(f"{self.name}: job {job.id} unplaced: {self.plan.unplaced.get(job.id)}")
            if to_epoch(a.start) <= st.t:
                if free[a.zone] >= job.gpus:
                    free[a.zone] -= job.gpus
                    started.append((job, a.zone))
                else:
                    late.append(job)
        if late:  # cannot happen with exact run times; re-plan at once if it ever does
            self.next_replan = st.t
        return started


class FleetOffline(Policy):
    """The fleet planner told every job of the sample up front (clairvoyant, like the lower bound)."""

    name = "fleet-offline"

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.jobs = jobs
        self.plan: FleetPlan | None = None

    def decide(self, st: State, new: list[Job], world: World) -> list[tuple[Job, str]]:
        if self.plan is None:
            t0 = time.perf_counter()
            # Planned with the holds the simulation gives each run (every step it touches): planned
            # with the exact run times, back-to-back runs could not start as planned (the GPUs are
            # still held to the end of the step) and, with no re-plan, each slip cascaded into misses.
            fleet_jobs = [
                FleetJob(
                    id=j.id,
                    gpus=j.gpus,
                    duration=timedelta(seconds=j.bins * STEP),
                    latest_start=from_epoch(j.latest),
                    zones=world.zones,
                    arrival=from_epoch(j.arrival),
                    earliest_start=from_epoch(math.ceil(j.arrival / STEP) * STEP),
                )
                for j in self.jobs
            ]
            # Every arrival known: no clean-zone GPUs to leave to unknown ones (zone_gap_percent 0).
            self.plan = plan_fleet(
                fleet_jobs, Capacity.constant(world.cap), world.truth, from_epoch(st.t), zone_gap_percent=0
            )
            self.planning_s = time.perf_counter() - t0
        free = dict(st.free)
        started = []
        for job in st.pending.values():
            a = self.plan.assignments[job.id]
            if to_epoch(a.start) <= st.t and free[a.zone] >= job.gpus:
                free[a.zone] -= job.gpus
                started.append((job, a.zone))
        return started


# ------------------------------------------------------------------ lower bound


def lower_bound(
    jobs: Sequence[Job],
    world: World,
    window_end: Mapping[str, float],
    method: str = "highs-ipm",
    integral_s: float = 0.0,
    max_late: int | None = None,
) -> tuple[float, float]:
    """Time-indexed LP relaxation: min kg CO2e over fractional (zone, start) choices on the 15-minute grid.

    x[j, z, s] >= 0 is the fraction of job j started at step s in zone z (sum 1 over z and s); a start
    at s holds the job's GPUs in steps [s, s + L_j), exactly as in the simulation, so every simulated
    schedule is a feasible (integral) point of this LP and none of them emits less than its optimum.
    Written with cumulative variables C[j, z, i] = x[j, z, s_0] + ... + x[j, z, s_i] (non-decreasing),
    so that a job's GPUs in step k are C[min(k, last)] - C[k - L]: O(window + L) non-zeros per job.

    `integral_s` > 0: the integer program instead (each job started once, HiGHS's branch and bound for
    at most that long), returning its proven lower bound (the optimum where it finishes); `max_late`:
    at most that many jobs end past their deadline plus the replay's 15-minute grace (one more row).
    """
    t0 = time.perf_counter()
    k_origin = math.floor(min(j.arrival for j in jobs) / STEP)
    nbins = math.ceil(max(window_end.values()) / STEP) - k_origin + 1
    cost: list[float] = []
    eq_rows: list[int] = []
    eq_cols: list[int] = []
    mono: list[tuple[int, int]] = []
    cap_r: list[int] = []
    cap_c: list[int] = []
    cap_v: list[float] = []
    late_cols: list[int] = []  # sum over jobs and zones of C[last] - C[last on-time start]: the late
    late_vals: list[float] = []
    nz = len(world.zones)
    for j, job in enumerate(jobs):
        first = math.ceil(job.arrival / STEP)
        last = max(math.floor((window_end[job.id] - job.bins * STEP) / STEP + 1e-9), first)
        starts = np.arange(first, last + 1, dtype=np.float64) * STEP
        m, big_l = len(starts), job.bins
        for zi, z in enumerate(world.zones):
            s = world.truth[z]
            c = np.array([s._cumulative(x) for x in (starts + job.duration).tolist()]) - np.array(
                [s._cumulative(x) for x in starts.tolist()]
            )
            c *= job.gpus * WATTS_PER_GPU / 3.6e9
            coef = np.append(c[:-1] - c[1:], c[-1])  # sum_i c_i (C_i - C_{i-1})
            base = len(cost)
            cost.extend(coef.tolist())
            eq_rows.append(j)
            eq_cols.append(base + m - 1)
            mono.extend((base + i - 1, base + i) for i in range(1, m))
            if max_late is not None:
                on_time = int(np.sum(starts + job.duration <= job.deadline + STEP))  # the first ones
                late_cols.append(base + m - 1)
                late_vals.append(1.0)
                if on_time:
                    late_cols.append(base + on_time - 1)
                    late_vals.append(-1.0)
            row0 = zi * nbins + (first - k_origin)
            for k in range(m - 1 + big_l):
                cap_r.append(row0 + k)
                cap_c.append(base + min(k, m - 1))
                cap_v.append(job.gpus)
                if k >= big_l:
                    cap_r.append(row0 + k)
                    cap_c.append(base + k - big_l)
                    cap_v.append(-job.gpus)
    nv = len(cost)
    a_eq = coo_matrix((np.ones(len(eq_rows)), (eq_rows, eq_cols)), shape=(len(jobs), nv)).tocsr()
    mono_rows = np.repeat(np.arange(len(mono)), 2)
    mono_cols = np.array(mono, dtype=np.int64).ravel()
    mono_vals = np.tile([1.0, -1.0], len(mono))
    a_ub = coo_matrix(
        (
            np.concatenate((cap_v, mono_vals)),
            (np.concatenate((cap_r, mono_rows + nz * nbins)), np.concatenate((cap_c, mono_cols))),
        ),
        shape=(nz * nbins + len(mono), nv),
    ).tocsr()
    b_ub = np.concatenate([*(np.full(nbins, world.cap[z], dtype=np.float64) for z in world.zones), np.zeros(len(mono))])
    if integral_s > 0:
        rows = [LinearConstraint(a_ub, -np.inf, b_ub), LinearConstraint(a_eq, 1, 1)]
        if max_late is not None:
            late = coo_matrix((late_vals, ([0] * len(late_cols), late_cols)), shape=(1, nv)).tocsr()
            rows.append(LinearConstraint(late, -np.inf, max_late))
        mip = milp(
            np.array(cost),
            integrality=np.ones(nv),
            bounds=Bounds(0, 1),
            constraints=rows,
            options={"time_limit": integral_s, "mip_rel_gap": 1e-4},
        )
        if mip.x is None and mip.status != 1:
            raise SystemExit(f"integer program failed: {mip.message}")
        return float(mip.mip_dual_bound), time.perf_counter() - t0
    res = linprog(
        np.array(cost), A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=np.ones(len(jobs)), bounds=(0, 1), method=method
    )
    if res.status != 0:
        raise SystemExit(f"lower bound LP failed: {res.message}")
    return float(res.fun), time.perf_counter() - t0


# ------------------------------------------------------------------ metrics


def kg(world: World, job: Job, zone: str, start: float) -> float:
    return world.truth[zone].integral_s(start, start + job.duration) * job.gpus * WATTS_PER_GPU / 3.6e9


def metrics(jobs: Sequence[Job], world: World, sched: Mapping[str, tuple[str, float]], days: float) -> dict[str, float]:
    total = sum(kg(world, j, *sched[j.id]) for j in jobs)
    waits = np.array([(sched[j.id][1] - j.arrival) / 3600 for j in jobs])
    missed = sum(sched[j.id][1] + j.duration > j.deadline + STEP for j in jobs)
    # Utilisation over the sampled arrival days: GPU-time in use then over the GPUs' time.
    first = min(j.arrival for j in jobs)
    last = first + days * 86400
    used = sum(j.gpus * max(min(sched[j.id][1] + j.duration, last) - max(sched[j.id][1], first), 0.0) for j in jobs)
    return {
        "kg": total,
        "missed": int(missed),
        "mean_wait_h": float(waits.mean()),
        "p95_wait_h": float(np.percentile(waits, 95)),
        "utilisation_percent": 100 * used / (sum(world.cap.values()) * (last - first)),
    }


def sizes(jobs: Sequence[Job], days: float) -> dict[str, int]:
    """If every job ran at arrival: tight = 1.1 x the mean GPUs busy over the sampled days (queues at
    busy times), roomy = the peak (never queues)."""
    first = min(j.arrival for j in jobs)
    last = first + days * 86400
    busy = sum(j.gpus * max(min(j.arrival + j.duration, last) - j.arrival, 0.0) for j in jobs)
    mean = busy / (days * 86400)
    events = sorted([(j.arrival, j.gpus) for j in jobs] + [(j.arrival + j.duration, -j.gpus) for j in jobs])
    peak = max(np.cumsum([g for _, g in events]))
    return {"tight": 8 * math.ceil(1.1 * mean / 8), "roomy": 8 * math.ceil(peak / 8)}


def split(total: int, zones: list[str], biggest: int) -> dict[str, int]:
    per = max(8 * math.ceil(total / len(zones) / 8), 8 * math.ceil(biggest / 8))
    return dict.fromkeys(zones, per)


def sample(cluster: str, zones: str, size: str, rule: str, day: float, days: float) -> tuple[list[Job], World]:
    """One setting of the replays: the cluster's jobs arriving in [day, day + days) and its zones."""
    data = trace_dir(None)
    truth = {"GB": load_trace("GB", data), "FR": load_trace("FR", data)}
    jobs = load_jobs(cluster, day, days, rule)
    zone_list = zones.split("+")
    return jobs, World(zone_list, split(sizes(jobs, days)[size], zone_list, max(j.gpus for j in jobs)), truth)


def replay_values(
    cluster: str, zones: str, size: str, rule: str, day: float, days: float, param: str, values: Sequence[float]
) -> dict[str, Any]:
    """FIFO and the online `fleet` strategy with plan_fleet's `param` at each of `values`, one setting."""
    jobs, world = sample(cluster, zones, size, rule, day, days)
    fifo = metrics(jobs, world, simulate(jobs, world, Fifo()), days)
    out: dict[str, Any] = {"fifo_kg": fifo["kg"], "fifo_missed": fifo["missed"], "runs": {}}
    for value in values:
        policy = Fleet("fleet", 3600, None, planner=functools.partial(plan_fleet, **{param: value}))
        t0 = time.perf_counter()
        m = metrics(jobs, world, simulate(jobs, world, policy), days)
        out["runs"][str(value)] = {
            "kg": m["kg"],
            "saved_percent": 100 * (1 - m["kg"] / fifo["kg"]),
            "missed": m["missed"],
            "replan_max_s": max(policy.replan_times),
            "wall_s": time.perf_counter() - t0,
        }
    return out


def save_result(name: str, doc: dict[str, Any]) -> None:
    """Print the data's citations and write `doc` (with them) to bench/results/NAME.json."""
    print(f"\n{ITP_CITATION}\n{CITATION}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(
        json.dumps({**doc, "data": [ITP_CITATION, CITATION]}, indent=2, default=str) + "\n"
    )


def run_setting(
    jobs: list[Job],
    world: World,
    noise: tuple[float, float, float],
    replan_s: float,
    days: float,
    explain: bool = False,
) -> dict[str, dict[str, float]]:
    policies: list[Policy] = [
        Fifo(),
        PerJob(),
        CapQuota(),
        Fleet("fleet", replan_s, None),
        Fleet("fleet-noisy", replan_s, NoisyIssuer(*noise)),
        FleetOffline(jobs),
    ]
    out: dict[str, dict[str, float]] = {}
    scheds = {}
    for p in policies:
        t0 = time.perf_counter()
        sched = simulate(jobs, world, p)
        wall = time.perf_counter() - t0
        scheds[p.name] = sched
        m = metrics(jobs, world, sched, days)
        m["planning_s"] = p.planning_s
        m["sim_s"] = wall
        if isinstance(p, Fleet):
            m["replans"] = len(p.replan_times)
            m["replan_mean_s"] = float(np.mean(p.replan_times))
            m["replan_max_s"] = float(np.max(p.replan_times))
            m["pending_max"] = int(max(p.pending_sizes))
        out[p.name] = m
    # Every simulated schedule but per-job's (whose pile-up is the point) is a feasible point of the LP.
    ends = [s for name, s in scheds.items() if name != "per-job"]
    window_end = {j.id: max(j.deadline + STEP, *(s[j.id][1] + j.bins * STEP for s in ends)) for j in jobs}
    if explain:
        print(f"\n--explain, zones {world.cap}:\n{explanation(jobs, world, scheds)}", flush=True)
    bound, lp_s = lower_bound(jobs, world, window_end)
    out["lower-bound"] = {"kg": bound, "planning_s": lp_s}
    base = out["fifo"]["kg"]
    for m in out.values():
        m["saved_percent"] = 100 * (base - m["kg"]) / base
        m["percent_of_bound_saving"] = 100 * (base - m["kg"]) / (base - bound) if base > bound else float("nan")
    return out


# ------------------------------------------------------------------ output


def explanation(
    jobs: Sequence[Job], world: World, scheds: Mapping[str, Mapping[str, tuple[str, float]]], top: int = 7
) -> str:
    """Where a setting's CO2e goes (--explain): the jobs with the most GPU-hours under FIFO, the online
    and the offline fleet plan, with the free GPUs per zone the online plan left at each one's
    arrival; how much of the online-offline gap they account for; and the deadlines the online plan
    missed that FIFO kept."""
    names = ("fifo", "fleet", "fleet-offline")
    first = min(j.arrival for j in jobs)
    total = sum(j.gpus * j.duration for j in jobs)

    def free_at(sched: Mapping[str, tuple[str, float]], zone: str, t: float, skip: str) -> int:
        held = sum(
            j.gpus
            for j in jobs
            if j.id != skip and sched[j.id][0] == zone and sched[j.id][1] <= t < sched[j.id][1] + j.bins * STEP
        )
        return world.cap[zone] - held

    big = sorted(jobs, key=lambda j: (-j.gpus * j.duration, j.id))[:top]
    rows = []
    for j in big:
        arrived = math.ceil(j.arrival / STEP) * STEP
        row: list[object] = [j.id[:8], j.gpus, j.duration / 3600, (j.latest - j.arrival) / 3600]
        row += [100 * j.gpus * j.duration / total, (j.arrival - first) / 3600]
        for name in names:
            zone, start = scheds[name][j.id]
            row.append(f"{zone} +{(start - j.arrival) / 3600:.1f} h {kg(world, j, zone, start):.0f} kg")
        row.append(" ".join(f"{z} {free_at(scheds['fleet'], z, arrived, j.id)}" for z in world.zones))
        rows.append(row)
    header = ["job", "GPUs", "run h", "slack h", "GPU-h %", "arrival h", *names, "free at arrival (fleet)"]
    online = sum(kg(world, j, *scheds["fleet"][j.id]) for j in jobs)
    offline = sum(kg(world, j, *scheds["fleet-offline"][j.id]) for j in jobs)
    theirs = sum(kg(world, j, *scheds["fleet"][j.id]) - kg(world, j, *scheds["fleet-offline"][j.id]) for j in big)
    out = [
        table(header, rows),
        f"online - offline: {online - offline:.0f} kg; the {top} jobs above: {theirs:.0f} kg"
        f" ({sum(j.gpus * j.duration for j in big) / total:.0%} of the GPU-hours)",
    ]

    def missed(name: str, j: Job) -> bool:
        return scheds[name][j.id][1] + j.duration > j.deadline + STEP

    only = [j for j in jobs if missed("fleet", j) and not missed("fifo", j)]
    late = [
        [j.gpus, j.duration / 3600, (j.latest - j.arrival) / 3600, (j.arrival - first) / 3600]
        + [(scheds[name][j.id][1] - j.arrival) / 3600 for name in ("fleet", "fifo")]
        for j in only
    ]
    out.append(f"deadlines fleet missed and FIFO kept: {len(only)}")
    if late:
        out.append(table(["GPUs", "run h", "slack h", "arrival h", "fleet wait h", "FIFO wait h"], late))
    return "\n".join(out)


def plot(paths: Sequence[Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = [json.loads(p.read_text()) for p in paths]
    settings = [(d["cluster"], s) for d in docs for s in d["settings"]]
    n = len(settings)
    cols = 4
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    markers = {"fifo": "o", "per-job": "s", "cap": "^", "fleet": "*", "fleet-noisy": "P", "fleet-offline": "x"}
    for ax, (cluster, s) in zip(axes.flat, settings, strict=False):
        for name, m in s["results"].items():
            if name in markers:
                ax.scatter(m["p95_wait_h"], m["saved_percent"], marker=markers[name], s=70, label=name)
        ax.axhline(s["results"]["lower-bound"]["saved_percent"], color="grey", ls="--", lw=1, label="lower bound")
        ax.set_title(f"{cluster} {s['zones']} {s['size']} {s['deadlines']}", fontsize=8)
        ax.set_xlabel("p95 wait (h)", fontsize=8)
        ax.set_ylabel("CO2e saved vs FIFO (%)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.flat[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("CO2e saved vs p95 wait, ITP 2021 jobs (Gu et al.) on 2020 grids (Wiesner et al.)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def summary(paths: Sequence[Path]) -> str:
    """One Markdown row per setting: the figures the targets are about."""
    header = ["cluster", "zones", "size", "deadlines", "FIFO missed", "per-job saved % / missed / p95 h"]
    header += ["CAP saved % / missed", "fleet saved % / % of bound / missed / p95 h", "noisy % of perfect / missed"]
    header += ["offline % of bound", "bound saved %"]
    rows = []
    for path in paths:
        doc = json.loads(path.read_text())
        for st in doc["settings"]:
            r = st["results"]
            fl, nz, pj = r["fleet"], r["fleet-noisy"], r["per-job"]
            noisy_share = 100 * nz["saved_percent"] / fl["saved_percent"] if fl["saved_percent"] > 0 else float("nan")
            rows.append(
                [
                    doc["cluster"],
                    f"{st['zones']} x {st['gpus_per_zone']}",
                    st["size"],
                    st["deadlines"],
                    r["fifo"]["missed"],
                    f"{pj['saved_percent']:.1f} / {pj['missed']} / {pj['p95_wait_h']:.1f}",
                    f"{r['cap']['saved_percent']:.1f} / {r['cap']['missed']}",
                    f"{fl['saved_percent']:.1f} / {fl['percent_of_bound_saving']:.0f} / {fl['missed']} / "
                    f"{fl['p95_wait_h']:.1f}",
                    f"{noisy_share:.0f} / {nz['missed']}",
                    f"{r['fleet-offline']['percent_of_bound_saving']:.0f}",
                    f"{r['lower-bound']['saved_percent']:.1f}",
                ]
            )
    return table(header, rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cluster", default="cluster04")
    ap.add_argument("--start-day", type=float, default=28, help="first arrival day of the sample (trace days)")
    ap.add_argument("--days", type=float, default=2, help="days of arrivals sampled")
    ap.add_argument("--replan", type=float, default=1.0, help="hours between full re-plans of the fleet planner")
    ap.add_argument("--noise-a", type=float, default=0.03)
    ap.add_argument("--noise-b", type=float, default=0.004)
    ap.add_argument("--noise-rho", type=float, default=0.95)
    ap.add_argument("--zones", nargs="+", default=["GB+FR", "GB", "FR"])
    ap.add_argument("--sizes", nargs="+", default=["tight", "roomy"])
    ap.add_argument("--deadlines", nargs="+", default=["slack24h", "elasticflow"])
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--explain", action="store_true", help="where each setting's CO2e and misses go (see explanation)")
    ap.add_argument("--out", type=Path, help="result file (default: fleet_planning_<cluster>_<deadlines>.json)")
    ap.add_argument(
        "--plot", action="store_true", help="only the plot and summary of bench/results/fleet_planning_*.json"
    )
    args = ap.parse_args()

    if args.plot:
        paths = sorted(RESULTS.glob("fleet_planning_cluster*.json"))
        plot(paths, IMG / "fleet-planning.png")
        print(summary(paths))
        print(f"wrote {IMG / 'fleet-planning.png'} from {', '.join(p.name for p in paths)}")
        return 0

    data = trace_dir(args.data_dir)
    truth = {"GB": load_trace("GB", data), "FR": load_trace("FR", data)}
    settings = []
    for rule in args.deadlines:
        jobs = load_jobs(args.cluster, args.start_day, args.days, rule)
        size_of = sizes(jobs, args.days)
        for size in args.sizes:
            for zspec in args.zones:
                zones = zspec.split("+")
                cap = split(size_of[size], zones, max(j.gpus for j in jobs))
                world = World(zones, cap, truth)
                t0 = time.perf_counter()
                noise = (args.noise_a, args.noise_b, args.noise_rho)
                results = run_setting(jobs, world, noise, args.replan * 3600, args.days, args.explain)
                head = (
                    f"\n{args.cluster}, {len(jobs)} jobs "
                    f"(trace days {args.start_day:g}-{args.start_day + args.days:g}), "
                    f"zones {zspec} x {cap[zones[0]]} GPUs ({size}), deadlines {rule} "
                    f"[{time.perf_counter() - t0:.0f} s]"
                )
                print(head)
                rows = [
                    [
                        name,
                        m["kg"] / 1000,
                        m["saved_percent"],
                        m["percent_of_bound_saving"],
                        m.get("missed", "-"),
                        m.get("mean_wait_h", "-"),
                        m.get("p95_wait_h", "-"),
                        m.get("utilisation_percent", "-"),
                        m["planning_s"],
                    ]
                    for name, m in results.items()
                ]
                header = ["strategy", "t CO2e", "saved vs FIFO %", "% of bound saving", "missed", "mean wait h"]
                header += ["p95 wait h", "GPU util %", "planning s"]
                print(table(header, rows), flush=True)
                settings.append(
                    {
                        "zones": zspec,
                        "size": size,
                        "gpus_per_zone": cap[zones[0]],
                        "deadlines": rule,
                        "jobs": len(jobs),
                        "results": results,
                    }
                )
    doc = {
        "cluster": args.cluster,
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "settings": settings,
        "data": [ITP_CITATION, CITATION],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"fleet_planning_{args.cluster}_{'_'.join(args.deadlines)}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\n{ITP_CITATION}\n{CITATION}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
