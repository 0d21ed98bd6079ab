"""The fleet planner: a (zone, start) for every job that has not started, against GPU capacity.

Pure code, no Kubernetes and no I/O, shared by the operator, `greenjobs plan --capacity` and the
benchmarks. The API:

    plan = plan_fleet(jobs, capacity, forecasts, now, step=timedelta(minutes=15), min_gain_percent=2.0,
                      wait_gain_percent=0.0)
    plan.assignments[job.id]  -> Assignment(zone, start, expected_g_per_kwh, baseline_g_per_kwh,
                                            late_by, waits_for, message, run_time)
    plan.unplaced[job.id]     -> why a job has no assignment (no usable zone, more GPUs than a zone has)
    plan = add_job(plan, job, now) -> the plan with one arrival folded in, the others left in place

Guarantees: no zone is ever over `capacity` at any grid step (a run occupies every step it touches);
a deadline (latest start) is held wherever a feasible start exists, else the earliest feasible start
is taken (least lateness, `late_by` > 0); among the feasible starts the one with the lowest mean
forecast intensity over the run.

Algorithm: regret-ordered greedy on a time grid of `step` from `now`. Jobs are placed one at a time in
this order: inflexible jobs (no timing: they start as soon as there is room); then jobs at their
latest start (never displaced; by priority, then smallest first, so that the fewest deadlines are
missed when not all can start); then the others by priority, regret (GPU-hours x the gap between
their cleanest and second-cleanest zone over their window: the jobs with the most CO2e at stake claim
the clean zone first and smaller ones fill its gaps; 0 for single-zone jobs), latest start (earliest
deadline first), arrival, id. Each job takes its cleanest feasible (zone, start) in the residual
capacity, so the overflow of a full clean window goes to the next-best windows and zones; where no
start in its window fits, the earliest feasible one (least lateness). Stability: a job whose current
plan is still feasible keeps it unless the best start is more than `min_gain_percent` cleaner. With
`wait_gain_percent` > 0 a job takes the earliest start within that share of its baseline intensity
of the cleanest one (0: off).
Re-plan from scratch on arrival, completion, capacity change and new forecast (it is fast enough:
bench/fleet_throughput.py); `add_job` folds one arrival in cheaply between re-plans.
bench/fleet_planning.py compares it with a time-indexed LP lower bound (docs/benchmarks/fleet-planning.md).

Forecast horizon: a zone's forecast covers [its first point, `end`) (or the last point plus one step
when `end` is None). A start is scored only when the whole run is covered; a job whose window reaches
past the horizon is planned on the covered part of its window. A job whose run is longer than what is
covered from `now` is not shifted for carbon: it starts as early as capacity allows, in the zone whose
covered part is cleanest. Nothing is extended flat past the horizon to invent savings.

A job's run time is its duration slowed by its power cap (greenjobs.planning.gpu_model).
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np
import numpy.typing as npt

from greenjobs.carbon.series import FloatArray, IntensitySeries, from_epoch, to_epoch
from greenjobs.planning.capacity import Capacity, IntArray
from greenjobs.planning.gpu_model import capped_run_time

WAITS_CLEAN_WINDOW = "CleanWindow"
WAITS_CAPACITY = "Capacity"
WAITS_START_NOW = "StartNow"

DEFAULT_STEP = timedelta(minutes=15)
DEFAULT_MIN_GAIN_PERCENT = 2.0
DEFAULT_WAIT_GAIN_PERCENT = 0.0
REL_TOLERANCE = 1e-9

BoolArray = npt.NDArray[np.bool_]


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

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ValueError(f"job {self.id}: gpus must not be negative, got {self.gpus}")
        if self.duration <= timedelta(0):
            raise ValueError(f"job {self.id}: duration must be positive, got {self.duration}")
        if not self.zones:
            raise ValueError(f"job {self.id}: needs at least one candidate zone")

    @property
    def run_time(self) -> timedelta:
        return capped_run_time(self.duration, self.power_cap_fraction)


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
    _board: "_Board" = field(repr=False)
    min_gain_percent: float = DEFAULT_MIN_GAIN_PERCENT
    wait_gain_percent: float = DEFAULT_WAIT_GAIN_PERCENT


def plan_fleet(
    jobs: Iterable[FleetJob],
    capacity: Capacity,
    forecasts: Mapping[str, IntensitySeries],
    now: datetime,
    *,
    step: timedelta = DEFAULT_STEP,
    min_gain_percent: float = DEFAULT_MIN_GAIN_PERCENT,
    wait_gain_percent: float = DEFAULT_WAIT_GAIN_PERCENT,
) -> FleetPlan:
    """Plan every job from scratch (see the module docstring for the rules and the order)."""
    if step <= timedelta(0):
        raise ValueError("step must be positive")
    job_list = list(jobs)
    seen: set[str] = set()
    for job in job_list:
        if job.id in seen:
            raise ValueError(f"duplicate job id {job.id!r}")
        seen.add(job.id)
    board = _Board(capacity, forecasts, now, step, job_list)
    plan = FleetPlan(now, step, {}, {}, board, min_gain_percent, wait_gain_percent)
    for job in sorted(job_list, key=lambda j: _order(j, now, step, _regret(board, j))):
        _place(plan, job)
    return plan


def add_job(plan: FleetPlan, job: FleetJob, now: datetime | None = None) -> FleetPlan:
    """Fold one arrival into `plan` without moving the others (the next full re-plan may rebalance).

    `now` (default: the plan's) is when it arrives: it starts no earlier. Replaces the job's assignment
    if it was already in the plan. Costs one placement: O(zones x steps).
    """
    board = plan._board.copy()
    if now is not None and to_epoch(now) > board.now:
        board.now = to_epoch(now)
    new = FleetPlan(
        from_epoch(board.now),
        plan.step,
        dict(plan.assignments),
        dict(plan.unplaced),
        board,
        plan.min_gain_percent,
        plan.wait_gain_percent,
    )
    old = new.assignments.pop(job.id, None)
    new.unplaced.pop(job.id, None)
    if old is not None:
        board.release(old, board.gpus.get(job.id, 0))
    board.ensure(to_epoch(job.latest_start) + job.run_time.total_seconds())
    _place(new, job)
    return new


# ------------------------------------------------------------------ internals


def _regret(board: "_Board", job: FleetJob) -> float:
    """gCO2e at stake in the choice of zone: GPU-hours x (second-cleanest - cleanest zone's mean over
    the job's window). 0 for a job with one usable zone."""
    zones = [z for z in dict.fromkeys(job.zones) if z in board.forecasts]
    if len(zones) < 2 or not job.flexible:
        return 0.0
    run = job.run_time.total_seconds()
    means = []
    for zone in zones:
        end = min(to_epoch(job.latest_start) + run, board.horizon[zone])
        span = end - board.now
        means.append(float(board.means(zone, np.array([board.now]), span)[0]) if span > 0 else math.inf)
    first, second = sorted(means)[:2]
    if not math.isfinite(second):
        return 0.0
    return job.gpus * run / 3600.0 * (second - first)


def _order(
    job: FleetJob, now: datetime, step: timedelta, regret: float = 0.0
) -> tuple[int, int, float, datetime, datetime, str]:
    if not job.flexible:
        group = 0
    elif job.latest_start <= now + step:
        group = 1  # at its latest start: never displaced
    else:
        group = 2
    # Among jobs at (or past) their latest start, the smallest first: when not all of them can start on
    # time, that misses the fewest deadlines (bench/fleet_planning.py: up to 7x fewer than EDF when tight).
    # The others: the most CO2e at stake in the zone choice first (big jobs claim the clean zone, small
    # ones fill its gaps), then earliest deadline first.
    key = job.gpus * job.run_time.total_seconds() if group == 1 else -regret
    return (group, -job.priority, key, job.latest_start, job.arrival, job.id)


def _horizon(series: IntensitySeries, step_s: float) -> float:
    if series.end is not None:
        return series.end
    last = float(series.times[-1])
    return last + (float(series.times[-1] - series.times[-2]) if len(series) > 1 else step_s)


def _phase(forecasts: Mapping[str, IntensitySeries], step_s: float) -> float:
    """Where the forecasts' points fall within the step grid (seconds; 0 when they sit on it, as hourly
    or 15-minute forecasts do): the first zone's first point decides."""
    for series in forecasts.values():
        if len(series):
            return float(series.times[0]) % step_s
    return 0.0


class _Board:
    """The grid: free GPUs per zone per step from `origin`, and each zone's forecast integral."""

    def __init__(
        self,
        capacity: Capacity,
        forecasts: Mapping[str, IntensitySeries],
        now: datetime,
        step: timedelta,
        jobs: Sequence[FleetJob],
    ) -> None:
        self.capacity = capacity
        self.forecasts = forecasts
        self.now = to_epoch(now)
        self.step = step.total_seconds()
        # Steps start where the forecasts' own intervals do, so a clean interval is one whole step.
        phase = _phase(forecasts, self.step)
        self.origin = math.floor((self.now - phase) / self.step) * self.step + phase
        self.horizon = {z: _horizon(s, self.step) for z, s in forecasts.items()}
        self.gpus: dict[str, int] = {}
        far = max([*self.horizon.values(), self.now])
        for job in jobs:
            far = max(far, to_epoch(job.latest_start) + job.run_time.total_seconds())
        self.n = 0
        self.free: dict[str, IntArray] = {}
        self.ensure(far)

    def copy(self) -> "_Board":
        other = object.__new__(_Board)
        other.__dict__.update(self.__dict__)
        other.free = {z: f.copy() for z, f in self.free.items()}
        other.gpus = dict(self.gpus)
        return other

    def ensure(self, until: float) -> None:
        """Grow the grid to cover `until` (capacity beyond the old end comes from the model)."""
        need = math.ceil((until - self.origin) / self.step) + 2
        if need <= self.n:
            return
        n = max(need, 2 * self.n)
        for zone in {*self.capacity.zones(), *self.forecasts}:
            extra = self.capacity.grid(zone, self.origin + self.n * self.step, self.step, n - self.n)
            old = self.free.get(zone)
            self.free[zone] = extra if old is None else np.concatenate((old, extra))
        self.n = n

    def bins(self, start: float, run: float) -> tuple[int, int]:
        """The steps [k0, k1) that a run over [start, start + run) touches."""
        k0 = math.floor((start - self.origin) / self.step)
        k1 = math.ceil((start + run - self.origin) / self.step - 1e-9)
        return k0, max(k1, k0 + 1)

    def fits(self, zone: str, start: float, run: float, gpus: int) -> bool:
        k0, k1 = self.bins(start, run)
        self.ensure(start + run)
        return bool(np.all(self.free[zone][k0:k1] >= gpus))

    def take(self, zone: str, start: float, run: float, gpus: int) -> None:
        k0, k1 = self.bins(start, run)
        self.free[zone][k0:k1] -= gpus

    def release(self, a: Assignment, gpus: int) -> None:
        k0, k1 = self.bins(to_epoch(a.start), a.run_time.total_seconds())
        self.free[a.zone][k0:k1] += gpus

    def cumulative(self, zone: str, x: FloatArray) -> FloatArray:
        series = self.forecasts[zone]
        i = np.searchsorted(series.times, x, side="right") - 1
        np.maximum(i, 0, out=i)
        out: FloatArray = series.prefix[i] + series.values[i] * (x - series.times[i])
        return out

    def means(self, zone: str, starts: FloatArray, run: float) -> FloatArray:
        """Mean forecast over the covered part of each run; inf where nothing of it is covered."""
        ends = np.minimum(starts + run, self.horizon[zone])
        c = self.cumulative(zone, np.concatenate((starts, ends)))
        n = len(starts)
        span = ends - starts
        with np.errstate(divide="ignore", invalid="ignore"):
            m: FloatArray = np.where(span > 0, (c[n:] - c[:n]) / np.where(span > 0, span, 1.0), np.inf)
        return m


@dataclass(frozen=True)
class _Option:
    zone: str
    start: float
    mean: float


def _place(plan: FleetPlan, job: FleetJob) -> None:
    board = plan._board
    zones = [z for z in dict.fromkeys(job.zones) if z in board.forecasts]
    if not zones:
        plan.unplaced[job.id] = f"no forecast for any candidate zone: {', '.join(job.zones)}"
        return
    run = job.run_time.total_seconds()
    most = max(board.capacity.final(z) for z in zones)
    if job.gpus > most:
        plan.unplaced[job.id] = f"needs {job.gpus} GPUs; no candidate zone ever has more than {most} free"
        return
    now = board.now
    earliest = max(now, to_epoch(job.earliest_start)) if job.earliest_start else now
    latest = max(to_epoch(job.latest_start), earliest) if job.flexible else earliest
    board.ensure(latest + run)
    baseline = float(board.means(zones[0], np.array([now]), run)[0])

    # Candidate starts: `earliest`, then every grid point after it up to the latest start.
    k_first = math.floor((earliest - board.origin) / board.step) + 1
    k_last = math.floor((latest - board.origin) / board.step)
    grid = board.origin + board.step * np.arange(k_first, max(k_last, k_first - 1) + 1, dtype=np.float64)
    starts = np.concatenate(([earliest], grid[grid <= latest]))

    # Scored starts: the whole run covered by the zone's forecast. If no zone covers a whole run from
    # `earliest`, the job is not shifted for carbon: every start in its window scores the zone's mean
    # over the covered part from `earliest` (zones still differ; times cannot be told apart), so it
    # takes the earliest feasible start in the cleanest zone that has one.
    whole = {z: starts + run <= board.horizon[z] for z in zones}
    shiftable = any(bool(w.any()) for w in whole.values())
    feasible: list[tuple[str, FloatArray, FloatArray]] = []  # zone, starts, means (inf where full)
    best_free = math.inf  # the best score ignoring capacity, to tell CleanWindow from Capacity
    for zone in zones:
        if shiftable:
            if not whole[zone].any():
                continue
            s = starts[whole[zone]]
            m = board.means(zone, s, run)
        else:
            s = starts
            m = np.full(len(s), float(board.means(zone, starts[:1], run)[0]))
        best_free = min(best_free, float(m.min()))
        ok = _feasible(board, zone, s, run, job.gpus)
        if ok.any():
            feasible.append((zone, s, np.where(ok, m, np.inf)))
    chosen = _choose(feasible, zones, plan.wait_gain_percent * abs(baseline) / 100.0)
    overflowed = chosen is None

    if chosen is not None and job.current is not None and job.flexible:
        kept = _keep_current(board, job, zones, run, earliest, latest, shiftable)
        if kept is not None and kept.mean - chosen.mean <= plan.min_gain_percent / 100.0 * abs(kept.mean):
            chosen = kept
    if chosen is None:
        chosen = _overflow(board, zones, run, earliest, job.gpus)

    board.take(chosen.zone, chosen.start, run, job.gpus)
    board.gpus[job.id] = job.gpus
    plan.assignments[job.id] = _assignment(job, chosen, baseline, best_free, now, run, overflowed=overflowed)


def _choose(
    feasible: Sequence[tuple[str, FloatArray, FloatArray]], zones: Sequence[str], slack_g_per_kwh: float
) -> _Option | None:
    """The earliest feasible start within `slack_g_per_kwh` of the cleanest one (then the cleaner,
    then the earlier zone): waiting for a marginal gain holds capacity that later arrivals need."""
    if not feasible:
        return None
    best = min(float(m.min()) for _, _, m in feasible)
    limit = best + max(slack_g_per_kwh, REL_TOLERANCE * abs(best))
    options = []
    for zone, s, m in feasible:
        near = np.flatnonzero(m <= limit)
        if len(near):
            k = int(near[0])
            options.append(_Option(zone, float(s[k]), float(m[k])))
    return min(options, key=lambda o: (o.start, o.mean, zones.index(o.zone)))


def _feasible(board: _Board, zone: str, starts: FloatArray, run: float, gpus: int) -> BoolArray:
    """For each start, whether `gpus` are free in every step the run touches."""
    first = ((starts - board.origin) // board.step).astype(np.int64)
    last = np.ceil((starts + run - board.origin) / board.step - 1e-9).astype(np.int64)
    last = np.maximum(last, first + 1)
    hi = int(last.max())
    if hi > board.n:
        board.ensure(board.origin + hi * board.step)
    lo = int(first.min())
    short = (board.free[zone][lo:hi] < gpus).astype(np.int64)
    bad = np.concatenate(([0], np.cumsum(short)))
    result: BoolArray = (bad[last - lo] - bad[first - lo]) == 0
    return result


def _keep_current(
    board: _Board, job: FleetJob, zones: Sequence[str], run: float, earliest: float, latest: float, shiftable: bool
) -> _Option | None:
    """The job's present plan, if it is still allowed and fits in the residual capacity."""
    assert job.current is not None
    zone = job.current.zone
    start = max(to_epoch(job.current.start), earliest)
    if zone not in zones or start > latest:
        return None
    if shiftable and start + run > board.horizon[zone]:
        return None
    if not shiftable:
        return (
            _Option(zone, start, float(board.means(zone, np.array([earliest]), run)[0]))
            if board.fits(zone, start, run, job.gpus)
            else None
        )
    if not board.fits(zone, start, run, job.gpus):
        return None
    return _Option(zone, start, float(board.means(zone, np.array([start]), run)[0]))


def _overflow(board: _Board, zones: Sequence[str], run: float, earliest: float, gpus: int) -> _Option:
    """No feasible scored start: the earliest feasible start from `earliest` on (least lateness)."""
    best: _Option | None = None
    k0 = math.floor((earliest - board.origin) / board.step) + 1
    while best is None:
        starts = np.concatenate(([earliest], board.origin + board.step * np.arange(k0, board.n)))
        starts = starts[starts + run <= board.origin + board.n * board.step]
        for zone in zones:
            if len(starts) == 0:
                break
            ok = _feasible(board, zone, starts, run, gpus)
            if ok.any():
                k = int(np.flatnonzero(ok)[0])
                s = float(starts[k])
                option = _Option(zone, s, float(board.means(zone, np.array([s]), run)[0]))
                if best is None or (option.start, option.mean) < (best.start, best.mean):
                    best = option
        if best is None:
            board.ensure(board.origin + 2 * board.n * board.step)
    return best


def _assignment(
    job: FleetJob, chosen: _Option, baseline: float, best_free: float, now: float, run: float, *, overflowed: bool
) -> Assignment:
    start = from_epoch(chosen.start)
    late = max(chosen.start - to_epoch(job.latest_start), 0.0) if job.flexible else 0.0
    when = start.strftime("%Y-%m-%dT%H:%MZ")
    if chosen.start <= now:
        waits, message = WAITS_START_NOW, f"starts now in {chosen.zone}"
    elif not overflowed and chosen.mean <= best_free + REL_TOLERANCE * abs(best_free):
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
        expected_g_per_kwh=chosen.mean if math.isfinite(chosen.mean) else baseline,
        baseline_g_per_kwh=baseline,
        late_by=timedelta(seconds=late),
        waits_for=waits,
        message=message,
        run_time=timedelta(seconds=run),
    )


def with_current(jobs: Iterable[FleetJob], plan: FleetPlan) -> list[FleetJob]:
    """The jobs with their assignment in `plan` as their present plan (for the next re-plan)."""
    out = []
    for job in jobs:
        a = plan.assignments.get(job.id)
        out.append(replace(job, current=Placement(a.zone, a.start)) if a is not None else job)
    return out
