"""Whole-run planning (issue 19): pauses around dirty hours and deadline-paced GPU caps, on real jobs.

Part 1, the fleet: Microsoft's ITP 2021 jobs (Gu et al., ASPLOS '23; bench/fleet_planning.py's loader and
cluster sizes), --days of arrivals of each --clusters, on the 2020 GB, FR and GB+FR grids (Wiesner et al.,
Middleware 2021), deadlines = arrival + run time + 24 h (fleet_planning's slack24h). Every ITP job is
assumed resumable from a checkpoint, with --overhead (default 5 min) lost at each resume (GPUs held at the
uncapped draw, no work) and --min-segment (30 min) between restarts. Jobs are planned one at a time, as
they arrive, against a reservation calendar of each zone's GPUs on a 15-minute grid (what earlier plans
hold), with a perfect forecast (the trace itself) up to the deadline; a plan is followed as made. Strategies:

  fifo        start at arrival (or as soon as the GPUs are free), straight through at full power
  start-only  greenjobs.planning.whole_run with no pauses and no caps: the cleanest start a job's window
              allows that fits the calendar (today's start-time planning; plan_fleet's model)
  +pauses     the same, pausing and resuming around dirty hours
  +caps       the same, one start and a deadline-paced cap per slot (60-100 % of TDP)
  +both       pauses and paced caps
  bound       each job's own whole-run optimum (+both) with no capacity limit: the lower bound of the
              whole-run model where capacity never binds (roomy clusters); capacity only removes options

Part 2, one job: an 8-GPU job needing --work-hours at full power, starting every 13 h over 2020 (as
bench/power_capping.py), deadline = start + 1.10 x work: no cap, static caps, today's CarbonAware cap
(greenjobs.power.target_cap, re-evaluated every 30 min as the operator does) and the deadline-paced cap
(whole_run with caps only, no pauses), for the joint fit of the GPU model and for V100 and A40 fitted alone
(Zeus's power-limit traces, NSDI '23).

    .venv/bin/python bench/whole_run.py            # both parts, default sample; bench/results/whole_run_*.json
"""

import argparse
import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import fleet_planning as fp
import numpy as np
import power_capping as pc
from _common import CITATION, RESULTS, load_trace, table, trace_dir

from greenjobs.api.models import Power
from greenjobs.carbon.series import IntensitySeries, from_epoch, to_epoch
from greenjobs.planning import gpu_model
from greenjobs.planning.whole_run import (
    FleetWholeRunJob,
    Interruptible,
    WholeRunPlan,
    WholeRunRequest,
    plan_fleet_whole_run,
    plan_whole_run,
)

STEP = 900.0
TDP_W = 400.0
CAPS = (0.6, 0.7, 0.8, 0.9, 1.0)
ZEUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpu-power-limits" / "zeus-nsdi23"
ZEUS_CITATION = (
    'GPU power limits: You, Chung, Chowdhury, "Zeus: Understanding and Optimizing GPU Energy Consumption of '
    'DNN Training", NSDI 2023 (ml-energy/zeus traces, Apache-2.0).'
)
BUCKETS = [("<6 h", 0, 6), ("6-24 h", 6, 24), ("1-3 d", 24, 72), (">3 d", 72, math.inf)]


@contextmanager
def curve(params: Mapping[str, float] | None) -> Iterator[None]:
    """Run with another fit of the GPU model (the module's constants are read at call time)."""
    keep = (gpu_model.MODEL_A, gpu_model.MODEL_B, gpu_model.MODEL_C, gpu_model.MODEL_U)
    if params:
        gpu_model.MODEL_A, gpu_model.MODEL_B = params["A"], params["B"]
        gpu_model.MODEL_C, gpu_model.MODEL_U = params["C"], params["U"]
    try:
        yield
    finally:
        gpu_model.MODEL_A, gpu_model.MODEL_B, gpu_model.MODEL_C, gpu_model.MODEL_U = keep


# ------------------------------------------------------------------ part 1: the fleet


@dataclass(frozen=True)
class Strategy:
    name: str
    caps: tuple[float, ...]
    pauses: bool


STRATEGIES = [
    Strategy("start-only", (1.0,), False),
    Strategy("+pauses", (1.0,), True),
    Strategy("+caps", CAPS, False),
    Strategy("+both", CAPS, True),
]


@dataclass
class Outcome:
    grams: float
    finish: float
    interruptions: int
    overhead_kwh: float
    energy_kwh: float
    gpu_s: float  # GPU-seconds held inside the sampled days
    plan_s: float


def request(job: fp.Job, now: float, caps: tuple[float, ...], ir: Interruptible | None) -> WholeRunRequest:
    return WholeRunRequest(
        now=from_epoch(now),
        remaining_work=timedelta(seconds=job.duration),
        deadline=from_epoch(max(job.deadline, now + job.duration)),
        gpus=job.gpus,
        tdp_watts=TDP_W,
        caps=caps,
        interruptible=ir,
        running=False,
    )


def held(plan: WholeRunPlan, gpus: int, lo: float, hi: float) -> float:
    return sum(gpus * max(min(to_epoch(s.end), hi) - max(to_epoch(s.start), lo), 0.0) for s in plan.segments)


class Calendar:
    """Free GPUs per zone and 15-minute slot from `origin`; a run holds every slot it touches."""

    def __init__(self, cap: Mapping[str, int], origin: float, n: int) -> None:
        self.origin = origin
        self.free = {z: np.full(n, c, dtype=np.int64) for z, c in cap.items()}

    def index(self, t: float) -> int:
        return int((t - self.origin + 1e-3) // STEP)

    def window(self, zone: str, now: float) -> np.ndarray:
        return self.free[zone][self.index(now) :]

    def take(self, zone: str, plan: WholeRunPlan, gpus: int) -> None:
        for s in plan.segments:
            a, b = self.index(to_epoch(s.start)), math.ceil((to_epoch(s.end) - self.origin - 1e-3) / STEP)
            self.free[zone][a:b] -= gpus
            assert (self.free[zone][a:b] >= 0).all(), "over capacity"


def fifo(job: fp.Job, now: float, cal: Calendar, truth: Mapping[str, IntensitySeries]) -> tuple[str, WholeRunPlan]:
    """The earliest contiguous run at full power, in the zone where it starts first (then cleaner)."""
    need = math.ceil(job.duration / STEP)
    best: tuple[int, float, str, WholeRunPlan] | None = None
    for z in cal.free:
        ok = cal.window(z, now) >= job.gpus
        run = np.convolve(ok.astype(np.int64), np.ones(need, dtype=np.int64), mode="valid")
        hits = np.flatnonzero(run == need)
        if not len(hits):
            continue
        i = int(hits[0])
        start = now + i * STEP
        req = request(job, start, (1.0,), None)
        req = WholeRunRequest(**{**req.__dict__, "deadline": from_epoch(start + job.duration)})
        plan = plan_whole_run(req, truth[z])
        if best is None or (i, plan.expected_grams) < best[:2]:
            best = (i, plan.expected_grams, z, plan)
    assert best is not None, f"job {job.id} never fits"
    return best[2], best[3]


def run_fleet(
    jobs: Sequence[fp.Job],
    zones: list[str],
    cap: Mapping[str, int],
    truth: Mapping[str, IntensitySeries],
    ir: Interruptible,
    days: float,
) -> dict[str, dict[str, Outcome]]:
    origin = math.floor(min(j.arrival for j in jobs) / STEP) * STEP
    end = max(j.deadline for j in jobs) + 30 * 86400
    n = math.ceil((end - origin) / STEP)
    lo, hi = origin, origin + days * 86400
    out: dict[str, dict[str, Outcome]] = {}

    def record(name: str, job: fp.Job, plan: WholeRunPlan, took: float) -> None:
        out.setdefault(name, {})[job.id] = Outcome(
            plan.expected_grams,
            to_epoch(plan.finishes_at),
            plan.interruptions,
            plan.overhead_kwh,
            plan.energy_kwh,
            held(plan, job.gpus, lo, hi),
            took,
        )

    cal = Calendar(cap, origin, n)
    for job in jobs:
        now = math.ceil(job.arrival / STEP) * STEP
        t0 = time.perf_counter()
        zone, plan = fifo(job, now, cal, truth)
        record("fifo", job, plan, time.perf_counter() - t0)
        cal.take(zone, plan, job.gpus)
    for strat in STRATEGIES:
        cal = Calendar(cap, origin, n)
        for job in jobs:
            now = math.ceil(job.arrival / STEP) * STEP
            req = request(job, now, strat.caps, ir if strat.pauses else None)
            fj = FleetWholeRunJob(job.id, req, zones)
            capacity = {z: cal.window(z, now) for z in zones}
            t0 = time.perf_counter()
            plan = plan_fleet_whole_run([fj], capacity, truth, from_epoch(now))[job.id]
            took = time.perf_counter() - t0
            if plan.zone is None:
                raise SystemExit(f"job {job.id} ({job.gpus} GPUs) fits no zone")
            record(strat.name, job, plan, took)
            cal.take(plan.zone, plan, job.gpus)
    # The bound: each job alone, every option, no capacity (cleanest zone).
    for job in jobs:
        now = math.ceil(job.arrival / STEP) * STEP
        t0 = time.perf_counter()
        plans = [plan_whole_run(request(job, now, CAPS, ir), truth[z]) for z in zones]
        record("bound", job, min(plans, key=lambda p: p.expected_grams), time.perf_counter() - t0)
    return out


def summarise(
    jobs: Sequence[fp.Job], res: Mapping[str, Mapping[str, Outcome]], total_gpus: int, days: float
) -> dict[str, dict[str, float]]:
    base = res["fifo"]
    out: dict[str, dict[str, float]] = {}
    for name, per in res.items():
        m: dict[str, float] = {}
        for label, a, b in [*BUCKETS, ("all", 0, math.inf)]:
            ids = [j.id for j in jobs if a <= j.duration / 3600 < b]
            g0 = sum(base[i].grams for i in ids)
            g = sum(per[i].grams for i in ids)
            m[f"saved_{label}"] = 100 * (g0 - g) / g0 if g0 > 0 else float("nan")
            m[f"jobs_{label}"] = len(ids)
        m["kg"] = sum(o.grams for o in per.values()) / 1000
        m["missed"] = sum(per[j.id].finish > j.deadline + STEP for j in jobs)
        m["interruptions_per_job"] = float(np.mean([per[j.id].interruptions for j in jobs]))
        long = [j for j in jobs if j.duration > 86400]
        m["interruptions_per_long_job"] = float(np.mean([per[j.id].interruptions for j in long])) if long else 0.0
        energy = sum(o.energy_kwh for o in per.values())
        m["resume_energy_percent"] = 100 * sum(o.overhead_kwh for o in per.values()) / energy
        m["gpu_util_percent"] = 100 * sum(o.gpu_s for o in per.values()) / (total_gpus * days * 86400)
        m["planning_s"] = sum(o.plan_s for o in per.values())
        m["planning_max_s"] = max(o.plan_s for o in per.values())
        out[name] = m
    bound = out["bound"]
    for m in out.values():
        m["percent_of_bound"] = 100 * m["saved_all"] / bound["saved_all"] if bound["saved_all"] > 0 else float("nan")
    return out


def fleet_part(args: argparse.Namespace, truth: Mapping[str, IntensitySeries]) -> list[dict[str, object]]:
    ir = Interruptible(timedelta(minutes=args.overhead), timedelta(minutes=args.min_segment))
    settings: list[dict[str, object]] = []
    for cluster in args.clusters:
        jobs = fp.load_jobs(cluster, args.start_day, args.days, "slack24h")
        size = fp.sizes(jobs, args.days)[args.size]
        for zspec in args.zones:
            zones = zspec.split("+")
            cap = fp.split(size, zones, max(j.gpus for j in jobs))
            t0 = time.perf_counter()
            res = run_fleet(jobs, zones, cap, {z: truth[z] for z in zones}, ir, args.days)
            summ = summarise(jobs, res, sum(cap.values()), args.days)
            print(
                f"\n{cluster}, {len(jobs)} jobs (trace days {args.start_day:g}-{args.start_day + args.days:g}), "
                f"zones {zspec} x {cap[zones[0]]} GPUs ({args.size}), deadlines arrival + run + 24 h, "
                f"resume overhead {args.overhead:g} min, min segment {args.min_segment:g} min "
                f"[{time.perf_counter() - t0:.0f} s]"
            )
            header = ["strategy", "t CO2e", *[f"saved {b[0]} %" for b in BUCKETS], "saved all %", "% of bound"]
            header += ["missed", "pauses/job", "pauses/job >1 d", "resume kWh %", "GPU util %", "plan s", "max s"]
            rows = [
                [
                    name,
                    m["kg"] / 1000,
                    *[m[f"saved_{b[0]}"] for b in BUCKETS],
                    m["saved_all"],
                    m["percent_of_bound"],
                    int(m["missed"]),
                    m["interruptions_per_job"],
                    m["interruptions_per_long_job"],
                    m["resume_energy_percent"],
                    m["gpu_util_percent"],
                    m["planning_s"],
                    m["planning_max_s"],
                ]
                for name, m in summ.items()
            ]
            print("jobs per length: " + ", ".join(f"{b[0]} {summ['fifo'][f'jobs_{b[0]}']:.0f}" for b in BUCKETS))
            print(table(header, rows), flush=True)
            settings.append(
                {"cluster": cluster, "zones": zspec, "gpus_per_zone": cap[zones[0]], "jobs": len(jobs), "results": summ}
            )
    return settings


# ------------------------------------------------------------------ part 2: one job, cap policies


def single_part(args: argparse.Namespace, truth: Mapping[str, IntensitySeries]) -> dict[str, object]:
    fits = {
        "joint fit (V100+A40)": None,
        "V100 alone": pc.fit_zeus([ZEUS / "summary_power_v100.csv"], ["imagenet", "squad", "sentiment140"]),
        "A40 alone": pc.fit_zeus([ZEUS / "summary_power_a40.csv"], ["imagenet", "squad", "sentiment140"]),
    }
    starts = pc.starts()[:: args.every]
    out: dict[str, object] = {}
    for gpu, params in fits.items():
        with curve(params):
            for zone in ("GB", "FR"):
                series = truth[zone]
                rows, data = [], {}
                policies = pc.policies(series)
                names = ["no cap", "static 360 W", "static 320 W", "static 280 W", "static 240 W"]
                power: dict[str, Power] = {n: p for n, p in policies.items() if n in names}
                power["static 360 W"] = Power(policy="Static", cap_watts=360)
                power["static 240 W"] = Power(policy="Static", cap_watts=240)
                power.update({n: p for n, p in policies.items() if n.startswith("carbon-aware")})
                for work in args.work_hours:
                    deadline_h = work * args.deadline_factor
                    results: dict[str, tuple[float, float, int]] = {}
                    for name, pw in power.items():
                        runs = [pc.simulate(series, pw, s, work) for s in starts]
                        results[name] = (
                            float(np.mean([r.kg for r in runs])),
                            float(np.mean([r.hours for r in runs])),
                            sum(r.hours > deadline_h + 1e-6 for r in runs),
                        )
                    kg, hours, missed, took = [], [], 0, []
                    for s in starts:
                        req = WholeRunRequest(
                            s,
                            timedelta(hours=work),
                            s + timedelta(hours=deadline_h),
                            pc.GPUS_PER_JOB,
                            TDP_W,
                            CAPS,
                            None,
                            running=True,
                        )
                        t0 = time.perf_counter()
                        p = plan_whole_run(req, series)
                        took.append(time.perf_counter() - t0)
                        kg.append(p.expected_grams / 1000)
                        hours.append((to_epoch(p.finishes_at) - to_epoch(s)) / 3600)
                        missed += int(not p.feasible)
                    results["deadline-paced"] = (float(np.mean(kg)), float(np.mean(hours)), missed)
                    base = results["no cap"][0]
                    for name, (k, h, mi) in results.items():
                        rows.append([f"{work:g} h", name, k, 100 * (base - k) / base, h, mi])
                    data[f"{work:g}"] = {
                        n: {"kg": k, "hours": h, "missed": mi} for n, (k, h, mi) in results.items()
                    } | {"paced_plan_s_mean": float(np.mean(took))}
                print(
                    f"\n{gpu}, {zone}: {len(starts)} starts, 8 GPUs, deadline = start + {args.deadline_factor:g} x work"
                )
                print(table(["work", "policy", "kg CO2e", "saved vs no cap %", "run h", "missed"], rows), flush=True)
                out[f"{gpu} | {zone}"] = {"params": params, "results": data}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clusters", nargs="+", default=["cluster04", "cluster07"])
    ap.add_argument("--start-day", type=float, default=28)
    ap.add_argument("--days", type=float, default=1)
    ap.add_argument("--size", default="roomy", choices=["roomy", "tight"])
    ap.add_argument("--zones", nargs="+", default=["GB", "FR", "GB+FR"])
    ap.add_argument("--overhead", type=float, default=5.0, help="minutes lost at each resume")
    ap.add_argument("--min-segment", type=float, default=30.0, help="minutes between restarts")
    ap.add_argument("--work-hours", type=float, nargs="+", default=[6, 24])
    ap.add_argument("--deadline-factor", type=float, default=1.10)
    ap.add_argument("--every", type=int, default=4, help="take every n-th start of power_capping's (13 h apart)")
    ap.add_argument("--part", choices=["fleet", "single", "both"], default="both")
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--tag", default="", help="suffix of the result files")
    args = ap.parse_args()

    data = trace_dir(args.data_dir)
    truth = {"GB": load_trace("GB", data), "FR": load_trace("FR", data)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    sources = [fp.ITP_CITATION, CITATION, ZEUS_CITATION]
    if args.part in ("fleet", "both"):
        doc = {"parameters": params, "settings": fleet_part(args, truth), "data": sources}
        path = RESULTS / f"whole_run_fleet{args.tag}.json"
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {path}")
    if args.part in ("single", "both"):
        doc = {"parameters": params, "zones": single_part(args, truth), "data": sources}
        path = RESULTS / f"whole_run_single{args.tag}.json"
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {path}")
    print("\n" + "\n".join(sources))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
