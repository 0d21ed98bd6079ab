"""The fleet planner: a (zone, start) for every job that has not started, against GPU capacity.

Pure code, no Kubernetes and no I/O, shared by the operator, the Kueue AdmissionCheck,
`greenjobs plan --capacity` and the benchmarks. The API:

    plan = plan_fleet(jobs, capacity, forecasts, now, min_gain_percent=2.0, wait_gain_percent=0.0,
                      zone_gap_percent=1.0, exact_time_limit_s=1.0)
    plan.assignments[job.id]  -> Assignment(zone, start, expected_g_per_kwh, baseline_g_per_kwh,
                                            late_by, waits_for, message, run_time)
    plan.unplaced[job.id]     -> why a job has no assignment (no usable zone, more GPUs than a zone has)
    plan = add_job(plan, job, now) -> the plan with one arrival folded in, the others left in place

Continuous time. A zone's free GPUs are a step function (planning.profile.FreeProfile) whose breakpoints
are now, the running jobs' expected ends and the planned runs' starts and ends; a run's score is the
mean forecast over it, linear in its start between forecast points. So the cleanest feasible start of
one job is at one of finitely many instants (its earliest and latest start, a forecast point or one
less the run time, an instant where enough GPUs become free or stop being free, less the run time) and
the planner evaluates exactly those: no job is made late or kept idle by a step size.

Guarantees: no zone is ever over `capacity`; deadlines first, then carbon; at equal intensity the
earlier start (no GPU stays idle while a job that could use it waits for nothing).

Algorithm. Two constructions, the better kept (fewest late jobs, then least total lateness, then least
expected CO2e, then earliest starts), and an exact stage where a job is still late:
  A. carbon first: jobs one at a time (inflexible jobs; jobs at their latest start, smallest first;
     then by priority, regret = GPU-hours x the gap between their cleanest and second-cleanest zone,
     latest start, arrival, id), each at its cleanest feasible start within its window, or where none
     fits, its earliest feasible start (least lateness).
  B. deadlines first, only when A leaves a job late: each job in a list at its earliest feasible start
     (serial schedule generation); the list is the best of earliest deadline first, smallest first
     (least total lateness when all are late) and Moore-Hodgson's (the fewest late jobs on one
     machine); where jobs are released over time, the earliest-deadline-first list is also scheduled
     without reservations (at each release or change of free GPUs, the listed jobs that fit start:
     parallel schedule generation); while a job is late and the batch is small, a late job is moved
     ahead of earlier-listed ones (local search over the list: the earliest-start schedules of all
     lists contain a least-lateness one), within a budget of placements, and a batch of up to six is
     searched exhaustively; then an improvement pass moves one job at a time to its cleanest feasible start in
     its window, the others fixed (an on-time job stays on time, a late job only moves earlier), so
     CO2e falls and no deadline is lost.
  C. exact, where the best of A and B still leaves a job late and the batch is small (up to
     EXACT_MAX_JOBS jobs and a program of bounded size): the flexible jobs as one time-indexed program
     on the grid of `step` (planning.fleet_exact, HiGHS's branch and bound), the fewest late jobs, then
     the least lateness, then the earliest starts, within `exact_time_limit_s`; kept where it plans
     less lateness, then the improvement pass for carbon. The greedy stays the fast path; where HiGHS
     proves its optimum in time, a batch's fewest late jobs on the grid are exact
     (tests/unit/test_fleet_exact.py).
Stability: a job whose current plan is still feasible keeps it unless the best start is more than
`min_gain_percent` cleaner, or as clean and earlier. With `wait_gain_percent` > 0 a job takes the
earliest start within that share of its baseline intensity of the cleanest one (0: off).
Online, the clean zone: a job with a choice of zones takes the earliest start within
`zone_gap_percent` (default 1 %) of what that choice is worth (the second-cleanest zone's mean minus
the cleanest's over its window) of the cleanest start. Waiting in the clean zone for a marginally
cleaner hour holds GPUs that later arrivals would use there instead of the dirtier zone; a planner
that knew every arrival would not need it. Learnt offline (bench/zone_gap.py: ITP replays, best on
training days, checked on held-out ones; docs/benchmarks/fleet-planning.md).
Re-plan from scratch on arrival, completion, capacity change and new forecast (bench/fleet_throughput.py
times it); `add_job` folds one arrival in cheaply between re-plans. bench/fleet_planning.py compares
it with FIFO and a time-indexed LP lower bound (docs/benchmarks/fleet-planning.md).

Speed (10,000 jobs, 4 zones, a week of 15-minute forecasts: about 2 s on one core; one arrival folded
in: about a millisecond). Each placement first finds every zone's earliest feasible start, and scores the
candidates only of zones where one is within the job's window: on a full queue most jobs have none.
That search walks the free-GPU steps from a floor learnt from earlier searches of the same build (a job
needing no more GPUs for no longer a run found nothing before it), and stops in a zone once it is past
the best one. The left-shift pass looks again only at jobs that a run moved since could move. Each
shortcut gives the plan that the plain search gives (tests/unit/test_fleet_speedups.py).

Forecast horizon: a zone's forecast covers [its first point, its horizon). A start is scored only when
the whole run is covered; a job whose window reaches past the horizon is planned on the covered part of
its window. A job whose run is longer than what any zone covers from its earliest start is not shifted
for carbon: it starts as early as capacity allows, in the zone whose covered part is cleanest. Nothing
is extended flat past the horizon to invent savings.

A job's run time is its duration slowed by its power cap (greenjobs.planning.gpu_model).
"""

import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np

from greenjobs.carbon.series import FloatArray, IntensitySeries, from_epoch, to_epoch
from greenjobs.planning.capacity import Capacity
from greenjobs.planning.gpu_model import capped_run_time

from .fleet_exact import ExactJob, ExactProblem
from .profile import EPS_S, BoolArray, FreeProfile, Scorer, snap

WAITS_CLEAN_WINDOW = "CleanWindow"
WAITS_CAPACITY = "Capacity"
WAITS_START_NOW = "StartNow"

DEFAULT_STEP = timedelta(minutes=15)
DEFAULT_MIN_GAIN_PERCENT = 2.0
DEFAULT_WAIT_GAIN_PERCENT = 0.0
# Learnt offline from the ITP replays (bench/zone_gap.py: the best on training days, checked on
# held-out ones); 0 turns it off.
DEFAULT_ZONE_GAP_PERCENT = 1.0
REL_TOLERANCE = 1e-9


class Planned(Protocol):
    """A job's present plan: an Assignment, or anything with a zone and a start."""

    @property
    def zone(self) -> str: ...

    @property
    def start(self) -> datetime: ...


@dataclass(frozen=True)
class Placement:
    zone: str
    start: datetime


@dataclass(frozen=True)
class FleetJob:
    id: str
    gpus: int  # GPUs of all its pods at full parallelism
    duration: timedelta  # run time at full power
    latest_start: datetime  # deadline - run time, or creation + maxDelay
    zones: Sequence[str]  # candidate zones in the user's order; the first one is the baseline zone
    arrival: datetime  # creation time: ties after priority and deadline go to the earlier arrival
    priority: int = 0  # higher first (the template's priorityClassName value)
    earliest_start: datetime | None = None
    current: Planned | None = None  # its present plan, kept unless a meaningful gain
    flexible: bool = True  # False: no timing, inflexible load, placed first and as early as possible
    power_cap_fraction: float | None = None  # lowest cap / TDP under its power policy (None: uncapped)
    # The head of `duration` before the run draws power (admission, pod start): it holds the GPUs but
    # is not scored, nor stretched by a cap (planning.decisions.with_start_latency sets both).
    start_latency: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ValueError(f"job {self.id}: gpus must not be negative, got {self.gpus}")
        if self.duration <= timedelta(0):
            raise ValueError(f"job {self.id}: duration must be positive, got {self.duration}")
        if not timedelta(0) <= self.start_latency < self.duration:
            raise ValueError(f"job {self.id}: start latency must be in [0, duration), got {self.start_latency}")
        if not self.zones:
            raise ValueError(f"job {self.id}: needs at least one candidate zone")

    @property
    def run_time(self) -> timedelta:
        """How long a start holds its GPUs: the latency, then the run (longer under a cap)."""
        return self.start_latency + capped_run_time(self.duration - self.start_latency, self.power_cap_fraction)


@dataclass(frozen=True)
class Assignment:
    zone: str
    start: datetime
    expected_g_per_kwh: float  # mean forecast over the (covered part of the) run in `zone`
    baseline_g_per_kwh: float  # mean over the covered part of [now, now + run) in the first zone
    late_by: timedelta  # how far the start is past the latest start (0 when the deadline holds)
    waits_for: str  # CleanWindow | Capacity | StartNow
    message: str
    run_time: timedelta

    @property
    def end(self) -> datetime:
        return self.start + self.run_time


@dataclass
class FleetPlan:
    now: datetime
    step: timedelta
    assignments: dict[str, Assignment]
    unplaced: dict[str, str]  # job id -> why
    _state: "_State" = field(repr=False)
    min_gain_percent: float = DEFAULT_MIN_GAIN_PERCENT
    wait_gain_percent: float = DEFAULT_WAIT_GAIN_PERCENT
    zone_gap_percent: float = DEFAULT_ZONE_GAP_PERCENT


DUE_TOLERANCE_S = 1.0
# Local search over the deadline-first list runs on batches up to this size (it is quadratic in it);
# bigger ones keep the earliest-deadline-first list.
LOCAL_SEARCH_MAX_JOBS = 40
# Placements the deadline-first search may make (each list tried costs one per job): about 0.5 s.
SEARCH_BUDGET_PLACEMENTS = 20_000
# Batches up to this size try the smallest-first and Moore-Hodgson lists too. Not bigger ones: in the
# ITP replays (bench/fleet_planning.py) the lists cut planned lateness on 300-job overloaded batches
# but the deadline-first plans they made win cost a third of the CO2e saving for one deadline fewer
# missed, and at 10,000 jobs the improvement pass over them takes the re-plan past 2 s.
OTHER_LISTS_MAX_JOBS = LOCAL_SEARCH_MAX_JOBS
# The earliest-deadline-first list of jobs released over time is also scheduled without reservations
# (_parallel) on batches up to this size: each event looks at every job still waiting.
PARALLEL_MAX_JOBS = 2_000
COMPACT_MAX_ROUNDS = 4
# The exact stage (planning.fleet_exact) re-plans batches up to this size as one program, within its
# time limit, kept only where it plans less lateness than the greedy plan.
EXACT_MAX_JOBS = 300
# The program's size: candidate (zone, start) pairs and grid cells (a week in 15-minute steps is 672; a
# forecast in seconds makes many more). Past them HiGHS's root LP alone can outrun the time limit.
EXACT_MAX_STARTS = 10_000
EXACT_MAX_CELLS = 5_000
DEFAULT_EXACT_TIME_LIMIT_S = 1.0
EXHAUSTIVE_MAX_JOBS = 6  # 720 lists at most, only when the local search leaves a job late
# _State.floors: runs in FLOOR_RUN_S buckets (the longest in the last one).
FLOOR_RUN_S = 300.0
FLOOR_RUNS = 384


def plan_fleet(
    jobs: Iterable[FleetJob],
    capacity: Capacity,
    forecasts: Mapping[str, IntensitySeries],
    now: datetime,
    *,
    step: timedelta = DEFAULT_STEP,
    min_gain_percent: float = DEFAULT_MIN_GAIN_PERCENT,
    wait_gain_percent: float = DEFAULT_WAIT_GAIN_PERCENT,
    zone_gap_percent: float = DEFAULT_ZONE_GAP_PERCENT,
    exact_time_limit_s: float = DEFAULT_EXACT_TIME_LIMIT_S,
) -> FleetPlan:
    """Plan every job from scratch (see the module docstring for the rules and the order).

    `step` sets which jobs count as due now (their latest start within one step) for the carbon-first
    order, and the grid of the exact stage; times themselves are continuous. `exact_time_limit_s`: the
    exact stage's budget on a batch of up to EXACT_MAX_JOBS (0: off).
    """
    if step <= timedelta(0):
        raise ValueError("step must be positive")
    job_list = list(jobs)
    seen: set[str] = set()
    for job in job_list:
        if job.id in seen:
            raise ValueError(f"duplicate job id {job.id!r}")
        seen.add(job.id)
    base = _State(capacity, Scorer(forecasts), to_epoch(now))
    prepared: list[_Job] = []
    unplaced: dict[str, str] = {}
    for job in job_list:
        pj = _prepare(base, job)
        if isinstance(pj, str):
            unplaced[job.id] = pj
        else:
            prepared.append(pj)
    rules = _Rules(min_gain_percent, wait_gain_percent, zone_gap_percent)

    best = _carbon_first(base, prepared, rules, lambda p: _carbon_order(p, base, step.total_seconds()))
    small = len(prepared) <= LOCAL_SEARCH_MAX_JOBS
    if small:
        # A small batch affords other orders: the smallest runs first pack a clean window that one
        # big run would fragment, the biggest first suit the opposite; the best plan is kept.
        for size in (1, -1):
            tried = _carbon_first(base, prepared, rules, lambda p, s=size: _size_order(p, s))  # type: ignore[misc]
            _improve(tried, prepared, rules)
            if tried.quality(prepared) < best.quality(prepared):
                best = tried
    if small or best.late_count(prepared):
        deadline_first = _deadline_first(base, prepared)
        if _lateness(deadline_first, prepared) <= _lateness(best, prepared):
            _improve(deadline_first, prepared, rules)
            if deadline_first.quality(prepared) < best.quality(prepared):
                best = deadline_first

    if exact_time_limit_s > 0 and best.late_count(prepared) and len(prepared) <= EXACT_MAX_JOBS:
        # The fewest late jobs the batch allows (on the step's grid), then carbon where no deadline is lost.
        exact = _exact(base, prepared, best, step.total_seconds(), exact_time_limit_s)
        if exact is not None and _lateness(exact, prepared) < _lateness(best, prepared):
            _improve(exact, prepared, rules)
            best = exact
    _compact(best, prepared)
    plan = FleetPlan(now, step, {}, unplaced, best, min_gain_percent, wait_gain_percent, zone_gap_percent)
    for pj in prepared:
        plan.assignments[pj.job.id] = _assignment(best, pj)
    return plan


def add_job(plan: FleetPlan, job: FleetJob, now: datetime | None = None) -> FleetPlan:
    """Fold one arrival into `plan` without moving the others (the next full re-plan may rebalance).

    `now` (default: the plan's) is when it arrives: it starts no earlier. Replaces the job's assignment
    if it was already in the plan. Costs one placement.
    """
    state = plan._state.copy(certs=False)  # one placement: no compaction to serve
    if now is not None and to_epoch(now) > state.now:
        state.now = to_epoch(now)
    new = FleetPlan(
        from_epoch(state.now),
        plan.step,
        dict(plan.assignments),
        dict(plan.unplaced),
        state,
        plan.min_gain_percent,
        plan.wait_gain_percent,
        plan.zone_gap_percent,
    )
    new.assignments.pop(job.id, None)
    new.unplaced.pop(job.id, None)
    state.remove(job.id)
    pj = _prepare(state, job)
    if isinstance(pj, str):
        new.unplaced[job.id] = pj
        return new
    _place_cleanest(state, pj, _Rules(plan.min_gain_percent, plan.wait_gain_percent, plan.zone_gap_percent))
    new.assignments[job.id] = _assignment(state, pj)
    return new


def with_current(jobs: Iterable[FleetJob], plan: FleetPlan) -> list[FleetJob]:
    """The jobs with their assignment in `plan` as their present plan (for the next re-plan)."""
    out = []
    for job in jobs:
        a = plan.assignments.get(job.id)
        out.append(replace(job, current=Placement(a.zone, a.start)) if a is not None else job)
    return out


# ------------------------------------------------------------------ internals


@dataclass(frozen=True)
class _Rules:
    min_gain_percent: float
    wait_gain_percent: float
    zone_gap_percent: float


@dataclass(frozen=True)
class _Job:
    """A job with what every placement needs precomputed (epoch seconds)."""

    job: FleetJob
    zones: tuple[str, ...]  # candidate zones that have a forecast, in the user's order
    run: float  # the hold: lead, then the run that draws power
    lead: float  # job.start_latency: not scored
    earliest: float
    latest: float  # the last on-time start (= earliest for an inflexible job)
    shiftable: bool  # some zone's forecast covers a whole run from `earliest`
    baseline: float  # mean over [now, now + run) in the first zone
    zone_gap: float  # second-cleanest minus cleanest zone's mean over its window (0: one usable zone)
    id: str  # job.id and job.gpus, read in every search: attributes, not properties
    gpus: int

    def late_by(self, start: float) -> float:
        return max(start - self.latest, 0.0) if self.job.flexible else 0.0


@dataclass(frozen=True)
class _Option:
    zone: str
    start: float
    mean: float
    # From _cleanest: no earlier feasible start anywhere is as clean (what _compact looks for).
    certain: bool = field(default=False, compare=False)


class _State:
    """Free-GPU profiles per zone with the runs placed so far."""

    def __init__(self, capacity: Capacity, scorer: Scorer, now: float) -> None:
        self.capacity = capacity
        self.scorer = scorer
        self.now = snap(now)
        self.profiles: dict[str, FreeProfile] = {}
        self.placed: dict[str, tuple[_Option, float, int]] = {}  # id -> (option, run, gpus)
        # Runs moved away, (zone, start, end, {gpus: longest room}) in order: the only way a start can
        # become free again (the room, filled as _still_certified asks, bounds what fits there).
        self.freed: list[tuple[str, float, float, dict[int, float]]] = []
        # id -> len(freed) when the job was known to have no earlier start as clean as its own (the
        # others where they were then): until a freed run nears it, `_compact` need not look again.
        self.certs: dict[str, int] = {}
        # id -> len(freed) when the job was placed at its earliest feasible start: nothing earlier fit
        # at all, so it can start earlier only where a run freed since overlaps (what _improve asks).
        self.at_earliest: dict[str, int] = {}
        # zone -> g -> [run bucket] -> the latest start that a search for g GPUs and a run in an earlier
        # bucket from `now` found (see first_fit); valid while the zone only loses GPUs: a removal drops it.
        self.floors: dict[str, dict[int, FloatArray]] = {}

    def copy(self, *, certs: bool = True) -> "_State":
        """A copy to build on; `certs=False` leaves out what only _compact reads (none is as good)."""
        other = _State(self.capacity, self.scorer, self.now)
        other.profiles = {z: p.copy() for z, p in self.profiles.items()}
        other.placed = dict(self.placed)
        if certs:
            other.freed = [(z, a, b, dict(room)) for z, a, b, room in self.freed]
            other.certs = dict(self.certs)
            other.at_earliest = dict(self.at_earliest)
        return other

    def profile(self, zone: str) -> FreeProfile:
        p = self.profiles.get(zone)
        if p is None:
            p = self.profiles[zone] = FreeProfile.of(self.capacity, zone, self.now)
        return p

    def take(self, pj: _Job, option: _Option, *, certified: bool = False, earliest: bool = False) -> None:
        """Place `pj` at `option`; `certified`: no feasible start before it is as clean (see certs);
        `earliest`: none before it at all (certified too)."""
        self.profile(option.zone).add(option.start, option.start + pj.run, -pj.gpus)
        self.placed[pj.id] = (option, pj.run, pj.gpus)
        if certified or earliest:
            self.certs[pj.id] = len(self.freed)
        else:
            self.certs.pop(pj.id, None)
        if earliest:
            self.at_earliest[pj.id] = len(self.freed)
        else:
            self.at_earliest.pop(pj.id, None)

    def remove(self, job_id: str) -> _Option | None:
        """Take a job out; the caller logs its run in `freed` if it does not go back where it was."""
        held = self.placed.pop(job_id, None)
        if held is None:
            return None
        option, run, gpus = held
        self.profile(option.zone).add(option.start, option.start + run, gpus)
        self.certs.pop(job_id, None)
        self.at_earliest.pop(job_id, None)
        self.floors.pop(option.zone, None)
        return option

    def floor(self, zone: str, pj: _Job) -> float:
        """A start before which `pj` certainly does not fit in `zone` (no profile read: see first_fit)."""
        rows = self.floors.get(zone)
        floor = pj.earliest
        if rows:
            b = min(int(pj.run // FLOOR_RUN_S), FLOOR_RUNS - 1)
            for gpus, row in rows.items():
                if gpus <= pj.gpus and row[b] > floor:
                    floor = float(row[b])
        return floor

    def first_fit(self, zone: str, pj: _Job, floor: float, give_up: float = math.inf) -> float:
        """The earliest feasible start of `pj` in `zone` from its earliest (inf: it never fits), or once
        that is past `give_up`, an instant past `give_up` before which it does not fit.

        A plan built up one placement at a time asks this of every job: a job needing g GPUs for a run
        r from `now` fits nowhere before where one needing g' <= g for r' <= r did not, earlier in the
        build, so the search starts at that `floor` instead of at the front of a long queue."""
        t = self.profile(zone).earliest_fit(floor, pj.run, pj.gpus, give_up)
        if pj.earliest == self.now and math.isfinite(t):
            rows = self.floors.setdefault(zone, {})
            row = rows.get(pj.gpus)
            if row is None:
                row = rows[pj.gpus] = np.full(FLOOR_RUNS, -math.inf)
            longer = row[min(int(pj.run // FLOOR_RUN_S), FLOOR_RUNS - 1) + 1 :]  # it bounds longer runs
            np.maximum(longer, t, out=longer)
        return t

    def move(
        self, pj: _Job, present: _Option, chosen: _Option, *, certified: bool = False, earliest: bool = False
    ) -> None:
        """Put a removed job back at `chosen`; if that is not `present`, log the run it freed."""
        if chosen != present:
            self.freed.append((present.zone, present.start, present.start + pj.run, {}))
        self.take(pj, chosen, certified=certified, earliest=earliest)

    def late_count(self, jobs: Sequence[_Job]) -> int:
        return sum(1 for pj in jobs if pj.late_by(self.placed[pj.id][0].start) > 0)

    def quality(self, jobs: Sequence[_Job]) -> tuple[int, float, float, float]:
        """Smaller is better: late jobs, total lateness, expected gCO2e-ish (GPU-seconds x mean), starts."""
        late = 0
        total = co2 = starts = 0.0
        for pj in jobs:
            option = self.placed[pj.id][0]
            lateness = pj.late_by(option.start)
            late += int(lateness > 0)
            total += lateness
            co2 += pj.gpus * pj.run * (option.mean if math.isfinite(option.mean) else pj.baseline)
            starts += option.start - self.now
        return late, round(total, 3), round(co2, 0), starts


def _prepare(state: _State, job: FleetJob) -> "_Job | str":
    """The job's window and scoring facts, or why it cannot be placed."""
    zones = tuple(z for z in dict.fromkeys(job.zones) if z in state.scorer.forecasts)
    if not zones:
        return f"no forecast for any candidate zone: {', '.join(job.zones)}"
    most = max(state.profile(z).final for z in zones)
    if job.gpus > most:
        return f"needs {job.gpus} GPUs; no candidate zone ever has more than {most} free"
    run = snap(job.run_time.total_seconds())
    lead = snap(job.start_latency.total_seconds())
    earliest = snap(max(state.now, to_epoch(job.earliest_start))) if job.earliest_start else state.now
    latest = snap(max(to_epoch(job.latest_start), earliest)) if job.flexible else earliest
    scorer = state.scorer
    # Scorer.whole for one start, in plain floats (the same comparisons).
    shiftable = any(
        earliest + lead >= scorer.first[z] - EPS_S and earliest + run <= scorer.horizon[z] + EPS_S for z in zones
    )
    baseline = state.scorer.mean(zones[0], state.now, run, lead)
    gap = _zone_gap(scorer, state.now, zones, latest + run) if job.flexible else 0.0
    return _Job(job, zones, run, lead, earliest, latest, shiftable, baseline, gap, job.id, job.gpus)


def _carbon_first(base: _State, jobs: Sequence[_Job], rules: _Rules, order: "Callable[[_Job], Any]") -> _State:
    state = base.copy()
    for pj in sorted(jobs, key=order):
        _place_cleanest(state, pj, rules)
    return state


def _size_order(pj: _Job, sign: int) -> tuple[bool, float, float, str]:
    """Inflexible jobs first, then by GPU-seconds (sign 1: smallest first), then deadline."""
    return (pj.job.flexible, sign * pj.gpus * pj.run, pj.latest, pj.id)


def _carbon_order(pj: _Job, state: _State, step_s: float) -> tuple[int, int, float, float, datetime, str]:
    job = pj.job
    if not job.flexible:
        group = 0
    elif pj.latest <= state.now + step_s:
        group = 1  # at its latest start: never displaced
    else:
        group = 2
    # Among jobs at (or past) their latest start, the smallest first: when not all of them can start on
    # time, that misses the fewest deadlines. The others: the most CO2e at stake in the zone choice first
    # (big jobs claim the clean zone, small ones fill its gaps), then earliest deadline first.
    key = pj.gpus * pj.run if group == 1 else -_regret(pj)
    return (group, -job.priority, key, pj.latest, job.arrival, job.id)


def _regret(pj: _Job) -> float:
    """gCO2e at stake in the choice of zone: GPU-hours x (second-cleanest - cleanest zone's mean over
    the job's window). 0 for a job with one usable zone."""
    return pj.gpus * pj.run / 3600.0 * pj.zone_gap


def _zone_gap(scorer: Scorer, now: float, zones: Sequence[str], window_end: float) -> float:
    """The second-cleanest minus the cleanest zone's mean over [now, window_end) (g/kWh); 0 for a job
    with one usable zone."""
    if len(zones) < 2:
        return 0.0
    means = []
    for zone in zones:
        span = min(window_end, scorer.horizon[zone]) - now
        means.append(scorer.mean(zone, now, span) if span > 0 else math.inf)
    first, second = sorted(means)[:2]
    if not math.isfinite(second):
        return 0.0
    return second - first


def _candidates(state: _State, pj: _Job, zone: str, lo: float, hi: float) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Candidate starts in [lo, hi] in `zone` (see the module docstring), their scores and which fit."""
    prof = state.profile(zone)
    breaks = state.scorer.breakpoints(zone, lo, hi, pj.run, pj.lead)
    starts, means = _scored(state, pj, zone, np.concatenate(([lo, hi], breaks, prof.edges(lo, hi, pj.run, pj.gpus))))
    return starts, means, prof.fits(starts, pj.run, pj.gpus)


def _scored(state: _State, pj: _Job, zone: str, points: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The distinct starts among `points` (to the millisecond), those whose run the forecast covers
    where the job can be shifted, and their scores."""
    scorer = state.scorer
    starts: FloatArray = np.unique(np.round(points, 3)).astype(np.float64)
    if pj.shiftable:
        starts = starts[scorer.whole(zone, starts, pj.run, pj.lead)]
        return starts, scorer.means(zone, starts, pj.run, pj.lead)
    return starts, np.full(len(starts), scorer.mean(zone, pj.earliest, pj.run, pj.lead))


def _score(state: _State, pj: _Job, zone: str, start: float) -> float:
    """The job's mean forecast intensity if started at `start` in `zone` (a job the forecast cannot
    shift is scored from its earliest start, wherever it is placed)."""
    return state.scorer.mean(zone, start if pj.shiftable else pj.earliest, pj.run, pj.lead)


def _cleanest(
    state: _State, pj: _Job, lo: float, hi: float, slack: float, fit: Mapping[str, float] | None = None
) -> _Option | None:
    """The earliest feasible start in [lo, hi] within `slack` g/kWh of the cleanest one (then the
    cleaner, then the earlier zone): waiting for a marginal gain holds capacity that later jobs need.
    `fit`: each zone's earliest feasible start from `lo`, if known; a zone where it is past `hi` is
    skipped (on a full queue most are: scoring their candidates is most of the cost)."""
    found: list[tuple[str, FloatArray, FloatArray, BoolArray]] = []
    for zone in pj.zones:
        if fit is not None and fit[zone] > hi:
            continue
        starts, means, ok = _candidates(state, pj, zone, lo, hi)
        if ok.any():
            found.append((zone, starts, means, ok))
    if not found:
        return None
    best = min(float(m[ok].min()) for _, _, m, ok in found)
    if not math.isfinite(best):  # nothing scored (no forecast covers the runs): the earliest start
        return min((_Option(z, float(s[ok][0]), math.inf) for z, s, _, ok in found), key=lambda o: o.start)
    limit = best + max(slack, REL_TOLERANCE * abs(best))
    options = []
    for zone, starts, means, ok in found:
        near = np.flatnonzero(ok & (means <= limit))
        if len(near):
            options.append(_first_within(state, pj, zone, starts, means, ok, int(near[0]), limit))
    return min(options, key=lambda o: (o.start, o.mean, pj.zones.index(o.zone)))


def _first_within(
    state: _State, pj: _Job, zone: str, starts: FloatArray, means: FloatArray, ok: BoolArray, k: int, limit: float
) -> _Option:
    """The earliest start whose score is within `limit`: candidate k, or, when the score falls through
    the limit on the feasible stretch before it (linear there), the crossing point. Candidate k is
    `certain` when what _compact would accept as as clean is within `limit` too."""
    mean_k = float(means[k])
    option = _Option(zone, float(starts[k]), mean_k, certain=mean_k + REL_TOLERANCE * abs(mean_k) <= limit)
    if k == 0 or not ok[k - 1] or not means[k - 1] > limit or not pj.shiftable:
        return option
    s0, s1, m0, m1 = float(starts[k - 1]), float(starts[k]), float(means[k - 1]), float(means[k])
    if not state.profile(zone).fits(np.array([(s0 + s1) / 2]), pj.run, pj.gpus)[0]:
        return option  # a gap between two feasible stretches
    cross = math.ceil((s0 + (m0 - limit) / (m0 - m1) * (s1 - s0)) * 1000) / 1000
    if not s0 < cross < s1:
        return option
    mean = _score(state, pj, zone, cross)
    return _Option(zone, cross, mean) if mean <= limit + REL_TOLERANCE * abs(limit) else option


def _first_fits(state: _State, pj: _Job, hi: float = -math.inf) -> dict[str, float]:
    """Each zone's earliest feasible start from the job's earliest (inf where it never fits), exact
    where it is at most `hi` or the earliest of all; elsewhere a lower bound past both (the zone is of
    no use to `_cleanest` in a window ending at `hi`, nor to `_earliest`), its search cut short. The
    zones in the order of their floors: the first search sets the bound the others stop at."""
    out = dict.fromkeys(pj.zones, math.inf)  # in the user's order: _earliest breaks ties by it
    best = math.inf
    floors = [(state.floor(zone, pj), k, zone) for k, zone in enumerate(pj.zones)]
    if len(floors) > 1:
        floors.sort()
    for floor, _, zone in floors:
        give_up = max(hi, best)
        out[zone] = floor if floor > give_up else state.first_fit(zone, pj, floor, give_up)
        best = min(best, out[zone])
    return out


def _earliest(state: _State, pj: _Job, fit: Mapping[str, float] | None = None) -> _Option:
    """The earliest feasible start from the job's earliest in any zone (`fit`: _first_fits, if known);
    ties to the cleaner zone. Always exists: the job fits the zone that has the most GPUs once every
    run ends."""
    starts = _first_fits(state, pj) if fit is None else fit
    first = min(starts.values())
    assert math.isfinite(first), f"job {pj.id} fits no zone"  # excluded by _prepare
    options = [_Option(zone, start, _score(state, pj, zone, start)) for zone, start in starts.items() if start == first]
    return min(options, key=lambda o: o.mean)


def _kept(state: _State, pj: _Job) -> _Option | None:
    """The job's present plan (job.current), if still allowed and free in the residual capacity."""
    current = pj.job.current
    if current is None or not pj.job.flexible or current.zone not in pj.zones:
        return None
    start = snap(max(to_epoch(current.start), pj.earliest))
    if start > pj.latest:
        return None
    at = np.array([start])
    if pj.shiftable and not state.scorer.whole(current.zone, at, pj.run, pj.lead)[0]:
        return None
    if not state.profile(current.zone).fits(at, pj.run, pj.gpus)[0]:
        return None
    return _Option(current.zone, start, _score(state, pj, current.zone, start))


def _stable(chosen: _Option, kept: _Option | None, gain_percent: float) -> _Option:
    """Keep the present plan unless the new one is meaningfully cleaner, or as clean and earlier."""
    if kept is None:
        return chosen
    as_clean = chosen.mean <= kept.mean + REL_TOLERANCE * abs(kept.mean)
    if chosen.start < kept.start and as_clean:
        return chosen
    if kept.mean - chosen.mean <= gain_percent / 100.0 * abs(kept.mean):
        return kept
    return chosen


def _slack(state: _State, pj: _Job, rules: _Rules) -> float:
    """How much dirtier (g/kWh) than its cleanest start a job's earlier start may be: `wait_gain_percent`
    of its baseline, or `zone_gap_percent` of what its zone choice is worth, if more. A job waiting in
    the clean zone for a marginally cleaner hour holds GPUs there that later arrivals would otherwise
    use instead of a dirtier zone: online, that costs them the whole gap (one zone: no gap, no slack)."""
    slack = rules.wait_gain_percent * abs(pj.baseline) / 100.0 if math.isfinite(pj.baseline) else 0.0
    if rules.zone_gap_percent > 0:
        slack = max(slack, rules.zone_gap_percent / 100.0 * pj.zone_gap)
    return slack


def _place_cleanest(state: _State, pj: _Job, rules: _Rules) -> None:
    """Carbon first: the cleanest feasible start in the window, else the earliest one (least late)."""
    slack = _slack(state, pj, rules)
    fit = _first_fits(state, pj, pj.latest)
    chosen = _cleanest(state, pj, pj.earliest, pj.latest, slack, fit)
    if chosen is None:
        state.take(pj, _earliest(state, pj, fit), earliest=True)
    else:
        stable = _stable(chosen, _kept(state, pj), rules.min_gain_percent)
        state.take(pj, stable, certified=stable is chosen and chosen.certain)


def _exact(base: _State, jobs: Sequence[_Job], greedy: _State, step_s: float, time_limit_s: float) -> "_State | None":
    """The batch's flexible jobs as one program for their deadlines (planning.fleet_exact), the
    inflexible ones where the greedy put them (first, as early as they fit); None where the program is
    too big for its time limit or the solver found nothing in time."""
    state = base.copy()
    flexible = []
    for pj in jobs:
        if pj.job.flexible:
            flexible.append(pj)
        else:
            state.take(pj, greedy.placed[pj.id][0], earliest=True)
    if not flexible:
        return None
    zones = sorted({z for pj in flexible for z in pj.zones})
    index = {z: k for k, z in enumerate(zones)}
    last = max(greedy.placed[pj.id][0].start for pj in flexible)
    spec = [
        ExactJob(
            pj.gpus,
            pj.run,
            pj.earliest,
            pj.latest,
            max(pj.latest, last),
            greedy.placed[pj.id][0].start,
            tuple(index[z] for z in pj.zones),
        )
        for pj in flexible
    ]
    problem = ExactProblem(spec, [state.profile(z) for z in zones], base.now, step_s)
    if problem.starts > EXACT_MAX_STARTS or problem.cells > EXACT_MAX_CELLS:
        return None
    chosen = problem.solve(time_limit_s)
    if chosen is None:
        return None
    left_out = []
    for pj, place in zip(flexible, chosen, strict=True):
        if place is None:
            left_out.append(pj)
            continue
        zone, start = zones[place[0]], place[1]
        if not state.profile(zone).fits(np.array([start]), pj.run, pj.gpus)[0]:
            return None  # cannot happen (the grid is conservative); the greedy plan stands if it does
        state.take(pj, _Option(zone, start, _score(state, pj, zone, start)))
    for pj in sorted(left_out, key=lambda p: (p.latest, p.id)):  # late: after the others, deadlines first
        state.take(pj, _earliest(state, pj), earliest=True)
    return state


def _serial(base: _State, order: Sequence[_Job]) -> _State:
    """Serial schedule generation: each job in turn at its earliest feasible start."""
    state = base.copy()
    for pj in order:
        state.take(pj, _earliest(state, pj), earliest=True)
    return state


def _parallel(base: _State, order: Sequence[_Job]) -> _State:
    """Parallel schedule generation: time moves from event to event (a job's release, a change in the
    free GPUs); at each, the listed jobs released by then start, in list order, where they fit now
    (the cleaner zone first); one that does not fit waits for the next event and holds nothing.
    Unlike _serial, no job reserves its future start: nothing waits behind a reservation while GPUs
    are free. Each job starts at its earliest feasible start given the others (the free GPUs only
    fall at or after each event as the pass goes on)."""
    state = base.copy()
    pending = list(order)
    t = min((pj.earliest for pj in pending), default=state.now)
    while pending:
        free = {z: state.profile(z).at(t) for z in state.scorer.forecasts}
        most = max(free.values(), default=0)
        waiting = []
        for pj in pending:
            if pj.earliest > t + EPS_S or pj.gpus > most:
                waiting.append(pj)
                continue
            at = np.array([t])
            zones = [z for z in pj.zones if free[z] >= pj.gpus and state.profile(z).fits(at, pj.run, pj.gpus)[0]]
            if not zones:
                waiting.append(pj)
                continue
            options = [_Option(z, t, _score(state, pj, z, t)) for z in zones]
            option = min(options, key=lambda o: o.mean)
            state.take(pj, option, earliest=True)
            free[option.zone] -= pj.gpus
            most = max(free.values())
        pending = waiting
        upcoming = [pj.earliest for pj in pending if pj.earliest > t + EPS_S]
        for prof in state.profiles.values():
            i = int(np.searchsorted(prof.times, t + EPS_S, side="right"))
            if i < len(prof.times):
                upcoming.append(float(prof.times[i]))
        if not upcoming:  # cannot happen (every job fits once all runs end); placed as _serial would
            for pj in pending:
                state.take(pj, _earliest(state, pj), earliest=True)
            break
        t = min(upcoming)
    return state


def _deadline_first(base: _State, jobs: Sequence[_Job]) -> _State:
    """Inflexible jobs first and as early as possible (never displaced); then the best of three lists
    (earliest deadline first, smallest first, Moore-Hodgson), improved by moving late jobs ahead in
    the list while that lowers the lateness, within a budget of placements."""
    fixed = base.copy()
    for pj in jobs:
        if not pj.job.flexible:
            fixed.take(pj, _earliest(fixed, pj), earliest=True)
    flexible = [p for p in jobs if p.job.flexible]
    budget = _Budget(SEARCH_BUDGET_PLACEMENTS)
    edf = sorted(flexible, key=lambda p: (p.latest, -p.job.priority, p.job.arrival, p.id))
    order = edf
    state = budget.serial(fixed, order)
    quality = _lateness(state, order)
    released_later = any(pj.earliest > base.now + EPS_S for pj in edf)
    if quality[0] and released_later and len(edf) <= PARALLEL_MAX_JOBS:
        # The same list without reservations: where jobs are released over time, a big job listed
        # early holds GPUs for its start that jobs released before it could use meanwhile. Not where
        # every job is released now (the operator's re-plans): in the ITP replays it then won on
        # planned lateness, missed no fewer deadlines and cost cluster04 GB+FR tight half its saving.
        parallel = _parallel(fixed, edf)
        q = _lateness(parallel, edf)
        if q < quality:
            state, quality = parallel, q
    # Where every job cannot be on time: the smallest first is least total lateness when all are late
    # (shortest processing time), Moore-Hodgson the fewest late jobs on one machine.
    others: list[Callable[[], list[_Job]]] = [
        lambda: sorted(edf, key=lambda p: (p.gpus * p.run, p.latest, p.id)),
        lambda: _moore_hodgson(fixed, edf),
    ]
    for other in others:
        if quality[0] == 0 or len(edf) > OTHER_LISTS_MAX_JOBS or not budget.allows(len(edf)):
            break
        trial = other()
        tried = budget.serial(fixed, trial)
        q = _lateness(tried, trial)
        if q < quality:
            order, state, quality = trial, tried, q
    if len(order) <= LOCAL_SEARCH_MAX_JOBS:
        while quality[0] and budget.allows(len(order)):
            better = _move_a_late_job_ahead(fixed, order, state, quality, budget)
            if better is None:
                break
            order, state, quality = better
    if quality[0] and len(order) <= EXHAUSTIVE_MAX_JOBS:
        # The local search can stop in a local optimum; a batch this small is searched exactly: some
        # list's earliest-start schedule has the least lateness (lateness is a regular measure).
        for permutation in itertools.permutations(order):
            tried = _serial(fixed, permutation)
            q = _lateness(tried, permutation)
            if q < quality:
                state, quality = tried, q
                if quality[0] == 0:
                    break
    return state


class _Budget:
    """Placements left to the deadline-first search: an overloaded batch (every job late) would have
    the local search try O(n^2) lists per move, each a schedule of n placements."""

    def __init__(self, placements: int) -> None:
        self.left = placements

    def allows(self, placements: int) -> bool:
        return self.left >= placements

    def serial(self, base: _State, order: Sequence[_Job]) -> _State:
        self.left -= len(order)
        return _serial(base, order)


def _moore_hodgson(base: _State, order: Sequence[_Job]) -> list[_Job]:
    """Earliest deadline first, but where a job would start late the biggest job listed so far goes to
    the end and the job is placed again (Moore-Hodgson's rule, exact for the fewest late jobs on one
    machine); those moved go last, smallest first."""
    state = base.copy(certs=False)
    kept: dict[str, _Job] = {}  # in list order
    biggest: list[tuple[float, int, str]] = []  # a max-heap of GPU-seconds, the later listed first
    moved: list[_Job] = []
    for k, pj in enumerate(order):
        option = _earliest(state, pj)
        state.take(pj, option)
        kept[pj.id] = pj
        heapq.heappush(biggest, (-pj.gpus * pj.run, -k, pj.id))
        while pj.id in kept and pj.late_by(option.start) > 0:
            _, _, job_id = heapq.heappop(biggest)
            moved.append(kept.pop(job_id))
            state.remove(job_id)
            if job_id != pj.id:  # its GPUs may let this one start in time
                state.remove(pj.id)
                option = _earliest(state, pj)
                state.take(pj, option)
    return [*kept.values(), *sorted(moved, key=lambda p: (p.gpus * p.run, p.latest, p.id))]


def _lateness(state: _State, jobs: Sequence[_Job]) -> tuple[int, float]:
    late, total, _, _ = state.quality(jobs)
    return late, total


def _move_a_late_job_ahead(
    base: _State, order: list[_Job], state: _State, quality: tuple[int, float], budget: _Budget
) -> tuple[list[_Job], _State, tuple[int, float]] | None:
    # Late jobs first; then any job: an on-time job moved ahead can open the room a late one needs.
    late_first = sorted(range(len(order)), key=lambda k: order[k].late_by(state.placed[order[k].id][0].start) <= 0)
    for i in late_first:
        pj = order[i]
        for to in range(i):
            if not budget.allows(len(order)):
                return None
            trial = [*order[:to], pj, *order[to:i], *order[i + 1 :]]
            tried = budget.serial(base, trial)
            q = _lateness(tried, trial)
            if q < quality:
                return trial, tried, q
    return None


def _improve(state: _State, jobs: Sequence[_Job], rules: _Rules) -> None:
    """Move one job at a time to its cleanest feasible start, the others fixed: an on-time job stays
    within its window, a late one only moves earlier. The biggest jobs first (the most CO2e at stake)."""
    for pj in sorted(jobs, key=lambda p: (-p.gpus * p.run, p.id)):
        if not pj.job.flexible:
            continue
        present = state.placed[pj.id][0]
        late = pj.late_by(present.start) > 0
        if late and _still_earliest(state, pj, present):
            continue
        cert, at_earliest = state.certs.get(pj.id), state.at_earliest.get(pj.id)
        state.remove(pj.id)
        if late:
            state.move(pj, present, _earliest(state, pj), earliest=True)
            continue
        slack = _slack(state, pj, rules)
        cleanest = _cleanest(state, pj, pj.earliest, pj.latest, slack)
        chosen = present if cleanest is None else _stable(cleanest, _kept(state, pj), rules.min_gain_percent)
        if present.mean <= chosen.mean + REL_TOLERANCE * abs(chosen.mean) and present.start <= chosen.start:
            chosen = present
        state.move(pj, present, chosen, certified=chosen is cleanest and chosen.certain)
        if chosen == present:  # back where it was: what held then holds
            if cert is not None:
                state.certs[pj.id] = cert
            if at_earliest is not None:
                state.at_earliest[pj.id] = at_earliest


def _compact(state: _State, jobs: Sequence[_Job]) -> None:
    """Left-shift: each job, in start order, moves to the earliest feasible start (any allowed zone)
    that is no dirtier than its own, the others fixed, until nothing moves. No job gets later or
    dirtier, so no deadline is lost and the CO2e does not rise; what it removes is GPUs idle while a
    job waits for nothing (a move made by one job can free an earlier start for the next).

    A job certified since (state.certs) is looked at again only where a run freed since could hold it:
    the same result as looking at every job, at a fraction of the cost on big batches."""
    for _ in range(COMPACT_MAX_ROUNDS):
        moved = False
        for pj in sorted(jobs, key=lambda p: (state.placed[p.id][0].start, p.id)):
            if not pj.job.flexible:
                continue
            present = state.placed[pj.id][0]
            if _still_certified(state, pj, present):
                state.certs[pj.id] = len(state.freed)
                continue
            state.remove(pj.id)
            earlier = _earliest_as_clean(state, pj, present)
            if earlier is not None:
                moved = True  # not certified: looked at again next round, as every moved job was
                state.move(pj, present, earlier)
            else:
                state.take(pj, present, certified=True)
        if not moved:
            return


def _freed_in_reach(state: _State, pj: _Job, present: _Option, since: int) -> Iterator[tuple[str, float, float, bool]]:
    """The runs freed since `since` (an index into state.freed) that could give `pj` a start before
    `present`, as (zone, lo, hi, own): a start s it gains overlaps a freed run [a, b), so s is in
    [lo, hi) = (a - run, b) within its window and before `present`; `own`: its own run is in reach
    (then the caller looks without it, as a fresh placement would). Where its own run is not in reach,
    a run that leaves no room as long as pj's is skipped: the longest room there now is a cheap bound
    cached per freed run (the profile only loses GPUs until the next freed run, checked on its own)."""
    for zone, a, b, room in state.freed[since:]:
        if zone not in pj.zones:
            continue
        lo, hi = max(pj.earliest, a - pj.run), min(b, present.start)
        if hi <= lo:
            continue
        own = zone == present.zone and present.start < hi + pj.run
        if not own:
            longest = room.get(pj.gpus)
            if longest is None:
                longest = room[pj.gpus] = state.profile(zone).longest_room(a, b, pj.gpus)
            if longest < pj.run - EPS_S:
                continue
        yield zone, lo, hi, own


@contextmanager
def _without_own_run(state: _State, pj: _Job, present: _Option) -> Iterator[FreeProfile]:
    """`present`'s zone's profile with pj's own run given back for the duration."""
    prof = state.profile(present.zone)
    prof.add(present.start, present.start + pj.run, pj.gpus)
    try:
        yield prof
    finally:
        prof.add(present.start, present.start + pj.run, -pj.gpus)


def _still_certified(state: _State, pj: _Job, present: _Option) -> bool:
    """Whether `pj` certainly has no earlier start as clean as `present`: it had none when certified,
    the others only took GPUs since, except the runs freed since, and none of those lets it start
    earlier. So one look per zone, at the candidates of the stretch that spans its freed runs in
    reach, gives the answer of _earliest_as_clean (whose candidates there are among them)."""
    k = state.certs.get(pj.id)
    if k is None:
        return False
    spans: dict[str, tuple[float, float]] = {}
    for zone, lo, hi, _ in _freed_in_reach(state, pj, present, k):
        span = spans.get(zone)
        spans[zone] = (lo, hi) if span is None else (min(span[0], lo), max(span[1], hi))
    for zone, (lo, hi) in spans.items():
        if zone == present.zone:  # looked at without its own run, as _compact does
            with _without_own_run(state, pj, present):
                gains = _first_as_clean(state, pj, zone, lo, hi, present) is not None
        else:
            gains = _first_as_clean(state, pj, zone, lo, hi, present) is not None
        if gains:
            return False
    return True


def _still_earliest(state: _State, pj: _Job, present: _Option) -> bool:
    """Whether `pj` certainly has no earlier feasible start at all: it had none when placed at its
    earliest, the others only took GPUs since, except the runs freed since, and none of those has
    room for it before `present`."""
    k = state.at_earliest.get(pj.id)
    if k is None:
        return False
    for zone, lo, hi, own in _freed_in_reach(state, pj, present, k):
        if own:
            with _without_own_run(state, pj, present) as prof:
                start = prof.earliest_fit(lo, pj.run, pj.gpus, hi)
        else:
            start = state.profile(zone).earliest_fit(lo, pj.run, pj.gpus, hi)
        if start < hi - EPS_S:
            return False
    return True


def _earliest_as_clean(state: _State, pj: _Job, present: _Option) -> _Option | None:
    """The earliest feasible start before `present` whose mean is no higher (None: there is none)."""
    best: _Option | None = None
    for zone in pj.zones:
        option = _first_as_clean(state, pj, zone, pj.earliest, present.start, present)
        if option is not None and (best is None or (option.start, option.mean) < (best.start, best.mean)):
            best = option
    return best


def _first_as_clean(state: _State, pj: _Job, zone: str, lo: float, hi: float, present: _Option) -> _Option | None:
    """The first candidate in [lo, hi] in `zone`, before `present`, feasible and no dirtier than it."""
    limit = present.mean + REL_TOLERANCE * abs(present.mean) if math.isfinite(present.mean) else math.inf
    starts, means, ok = _candidates(state, pj, zone, lo, hi)
    good = np.flatnonzero(ok & (means <= limit) & (starts < present.start - 1e-3))
    return _Option(zone, float(starts[good[0]]), float(means[good[0]])) if len(good) else None


def _assignment(state: _State, pj: _Job) -> Assignment:
    chosen = state.placed[pj.id][0]
    start = from_epoch(chosen.start)
    late = pj.late_by(chosen.start)
    when = start.strftime("%Y-%m-%dT%H:%MZ")
    # What it waits for: a clean window when nothing cleaner was free of capacity limits in its window.
    if chosen.start <= state.now + 1e-3:
        waits, message = WAITS_START_NOW, f"starts now in {chosen.zone}"
    elif late == 0 and math.isfinite(chosen.mean) and _as_clean_as_unlimited(state, pj, chosen.mean):
        waits = WAITS_CLEAN_WINDOW
        message = f"waits for a clean window in {chosen.zone} until {when} ({chosen.mean:.0f} g/kWh expected)"
    else:
        waits = WAITS_CAPACITY
        message = f"waits for capacity in {chosen.zone} until {when}"
        if late > 0:
            message += f", {timedelta(seconds=round(late))} past its latest start: no GPUs free before"
    return Assignment(
        zone=chosen.zone,
        start=start,
        expected_g_per_kwh=chosen.mean if math.isfinite(chosen.mean) else pj.baseline,
        baseline_g_per_kwh=pj.baseline,
        late_by=timedelta(seconds=late),
        waits_for=waits,
        message=message,
        run_time=timedelta(seconds=pj.run),
    )


def _as_clean_as_unlimited(state: _State, pj: _Job, mean: float) -> bool:
    unlimited = _unlimited_best(state, pj)
    return mean <= unlimited + REL_TOLERANCE * abs(unlimited)


def _unlimited_best(state: _State, pj: _Job) -> float:
    """The cleanest score in the job's window ignoring capacity (to tell CleanWindow from Capacity);
    the same starts as _candidates (_scored) but for the capacity edges."""
    best = math.inf
    lo, hi = pj.earliest, pj.latest
    for zone in pj.zones:
        breaks = state.scorer.breakpoints(zone, lo, hi, pj.run, pj.lead)
        _, means = _scored(state, pj, zone, np.concatenate(([lo, hi], breaks)))
        if len(means):
            best = min(best, float(means.min()))
    return best
