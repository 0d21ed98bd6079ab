"""The carbon-aware planner: the best (zone, start) for a job before its latest start.

Pure functions, no Kubernetes and no I/O, so that the operator, `greenjobs plan` and the benchmarks run
the very same code.

Why the search is exact: a forecast is a step function, so its cumulative integral C is piecewise
linear with breakpoints at the forecast's points t_i. The mean over [s, s + D) is (C(s + D) - C(s)) / D,
piecewise linear in s with breakpoints where s or s + D meets a t_i. Its minimum over [now, latest] is
therefore reached at one of {now, latest} | {t_i} | {t_i - D} inside that interval; evaluating exactly
those candidates (with the series' prefix sums) gives the true optimum, and a start need not sit on a
forecast point.
"""

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import accumulate

import numpy as np

from greenjobs.carbon.series import FloatArray, IntensitySeries, from_epoch, to_epoch

# Means within this relative distance of the best count as equal, so float noise in the prefix sums
# never makes the planner prefer a later start (or a later zone) for no real gain.
REL_TOLERANCE = 1e-9

REASON_FORECAST_WINDOW = "ForecastWindow"
REASON_START_WHEN_BELOW = "StartWhenBelow"
REASON_START_NOW = "StartNow"
REASON_DEADLINE_PASSED = "DeadlinePassed"


class NoForecast(ValueError):
    """None of the candidate zones has a forecast."""

    def __init__(self, zones: Sequence[str]) -> None:
        names = ", ".join(zones) if zones else "(none given)"
        super().__init__(f"no forecast for any candidate zone: {names}")
        self.zones = list(zones)


@dataclass(frozen=True)
class PlanRequest:
    now: datetime
    duration: timedelta  # estimated run time (> 0)
    latest_start: datetime  # deadline - duration, or creation + maxDelay
    zones: Sequence[str]  # candidate zones in the user's order; the first one is the baseline zone
    start_when_below: float | None = None  # gPerKWh: start at once where it is this clean

    def __post_init__(self) -> None:
        if self.duration <= timedelta(0):
            raise ValueError(f"duration must be positive, got {self.duration}")
        if not self.zones:
            raise ValueError("a plan request needs at least one candidate zone")


@dataclass(frozen=True)
class PlanResult:
    zone: str
    start: datetime
    expected_g_per_kwh: float  # mean forecast intensity over [start, start + duration) in `zone`
    baseline_g_per_kwh: float  # mean over [now, now + duration) in the baseline zone
    expected_savings_percent: float  # 100 * (baseline - expected) / baseline; 0 when baseline == 0
    reason: str  # ForecastWindow | StartWhenBelow | StartNow | DeadlinePassed


@dataclass(frozen=True)
class _Choice:
    zone_rank: int
    zone: str
    start: float  # epoch seconds
    mean: float


def plan(
    request: PlanRequest,
    forecasts: Mapping[str, IntensitySeries],
    current: Mapping[str, float] | None = None,
) -> PlanResult:
    """Choose the zone and start with the lowest mean forecast intensity over the run.

    `current` holds measured intensities per zone for the `start_when_below` test (the forecast at
    `now` is used for a zone missing from it). Zones without a forecast are skipped; the baseline is
    the first zone that has one. Raises NoForecast when no zone has one. Beyond its last point a
    forecast's last value holds (IntensitySeries semantics): callers should pass forecasts that
    cover [now, latest_start + duration].
    """
    zones = _usable_zones(request.zones, forecasts)
    now = to_epoch(request.now)
    latest = to_epoch(request.latest_start)
    d = request.duration.total_seconds()
    if latest <= now or request.start_when_below is not None:
        decided = _decide_at_once(request, zones, forecasts, current, now=now, latest=latest, d=d)
        if decided is not None:
            return decided

    # The search: every zone's candidate starts, then one selection over all of them. This is the hot
    # path (the operator and the benchmarks plan thousands of jobs), hence one numpy pass.
    per_zone = [_candidate_means(forecasts[zone], now=now, latest=latest, d=d) for zone in zones]
    baseline = float(per_zone[0][1][0])  # the first zone's candidate 0 is a start at `now`
    if len(per_zone) == 1:
        starts, means = per_zone[0]
    else:
        starts = np.concatenate([s for s, _ in per_zone])
        means = np.concatenate([m for _, m in per_zone])
    best = means.min()
    # Earliest start among those within tolerance of the best; argmin returns the first of equal starts,
    # and the zones are concatenated in the user's order, so that tie goes to the earlier zone.
    k = int(np.where(means <= best + REL_TOLERANCE * abs(best), starts, np.inf).argmin())
    rank = bisect_right(list(accumulate(len(s) for s, _ in per_zone)), k)
    choice = _Choice(rank, zones[rank], float(starts[k]), float(means[k]))
    return _result(choice, baseline, REASON_START_NOW if choice.start <= now else REASON_FORECAST_WINDOW)


def _decide_at_once(
    request: PlanRequest,
    zones: Sequence[str],
    forecasts: Mapping[str, IntensitySeries],
    current: Mapping[str, float] | None,
    *,
    now: float,
    latest: float,
    d: float,
) -> PlanResult | None:
    """The decisions that need no search: no slack left, or clean enough to start now."""
    baseline = _mean_at(forecasts[zones[0]], now, d)
    # Deadline always wins over forecasts: when there is no slack left, start at once in the zone
    # that is cleanest for [now, now + D).
    if latest < now:
        return _result(_best_now(zones, forecasts, now, d), baseline, REASON_DEADLINE_PASSED)

    if request.start_when_below is not None:
        clean = _cleanest_below(zones, forecasts, current or {}, request.now, request.start_when_below)
        if clean is not None:
            rank, zone = clean
            choice = _Choice(rank, zone, now, _mean_at(forecasts[zone], now, d))
            return _result(choice, baseline, REASON_START_WHEN_BELOW)

    if latest == now:
        return _result(_best_now(zones, forecasts, now, d), baseline, REASON_START_NOW)
    return None


def plan_bruteforce(
    request: PlanRequest,
    forecasts: Mapping[str, IntensitySeries],
    step: timedelta,
    current: Mapping[str, float] | None = None,
    include_candidates: bool = True,
) -> PlanResult:
    """Reference planner for tests and benchmark oracles: scan starts on a grid of `step` from `now`.

    With `include_candidates` the exact candidate set (found here by a plain scalar loop, independent of
    plan()'s vectorised code) is scanned too, so the result is the true optimum. Each start is evaluated
    with IntensitySeries.mean. Same tie rules and special cases as plan().
    """
    if step <= timedelta(0):
        raise ValueError("step must be positive")
    zones = _usable_zones(request.zones, forecasts)
    now = to_epoch(request.now)
    latest = to_epoch(request.latest_start)
    d = request.duration.total_seconds()
    baseline = forecasts[zones[0]].mean(request.now, request.duration)
    if latest < now or request.start_when_below is not None or latest == now:
        # The early decisions do no search; they are the same code as plan()'s.
        return plan(request, forecasts, current)

    grid: list[float] = []
    s, k = now, 0
    while s <= latest:
        grid.append(s)
        k += 1
        s = now + k * step.total_seconds()
    grid.append(latest)

    choices: list[_Choice] = []
    for rank, zone in enumerate(zones):
        series = forecasts[zone]
        starts = list(grid)
        if include_candidates:
            for t in series.times.tolist():
                for c in (t, t - d):
                    if now <= c <= latest:
                        starts.append(c)
        best: _Choice | None = None
        for start in sorted(set(starts)):
            mean = series.mean(from_epoch(start), request.duration)
            # Strictly better only: on equal means the earlier start (sorted first) stays.
            if best is None or mean < best.mean - REL_TOLERANCE * abs(best.mean):
                best = _Choice(rank, zone, start, mean)
        assert best is not None
        choices.append(best)
    chosen = _pick(choices)
    return _result(chosen, baseline, REASON_START_NOW if chosen.start <= now else REASON_FORECAST_WINDOW)


# ------------------------------------------------------------------ helpers


def _usable_zones(zones: Sequence[str], forecasts: Mapping[str, IntensitySeries]) -> list[str]:
    usable = [z for z in dict.fromkeys(zones) if z in forecasts]
    if not usable:
        raise NoForecast(list(zones))
    return usable


def _cumulative(series: IntensitySeries, x: FloatArray) -> FloatArray:
    """Integral of the series from its first point to each x (negative before it; flat extensions)."""
    i = np.searchsorted(series.times, x, side="right") - 1
    np.maximum(i, 0, out=i)
    result: FloatArray = series.prefix[i] + series.values[i] * (x - series.times[i])
    return result


def _mean_at(series: IntensitySeries, start: float, d: float) -> float:
    c = _cumulative(series, np.array([start, start + d]))
    return float(c[1] - c[0]) / d


def _candidate_means(series: IntensitySeries, *, now: float, latest: float, d: float) -> tuple[FloatArray, FloatArray]:
    """Candidate starts (the first is `now`) and the mean intensity over [start, start + D) of each."""
    times = series.times
    # Forecast points in [now, latest) are candidate starts, and so are those in [now + D, latest + D)
    # shifted back by D (the run then ends on a step boundary). `now` and `latest` come first.
    # (ndarray methods rather than np.* functions: this runs per zone per job, where call overhead counts.)
    lo, hi, lo_end, hi_end = times.searchsorted((now, latest, now + d, latest + d)).tolist()
    starts = np.concatenate(((now, latest), times[lo:hi], times[lo_end:hi_end] - d))
    x = np.concatenate((starts, starts + d))
    i = times.searchsorted(x, side="right")
    i -= 1
    np.maximum(i, 0, out=i)
    cumulative = series.prefix[i] + series.values[i] * (x - times[i])
    n = len(starts)
    means = cumulative[n:] - cumulative[:n]
    means /= d
    return starts, means


def _best_now(zones: Sequence[str], forecasts: Mapping[str, IntensitySeries], now: float, d: float) -> _Choice:
    return _pick([_Choice(rank, z, now, _mean_at(forecasts[z], now, d)) for rank, z in enumerate(zones)])


def _pick(choices: Sequence[_Choice]) -> _Choice:
    """Lowest mean; among near-equal ones the earliest start, then the earliest zone in user order."""
    best = min(c.mean for c in choices)
    near = [c for c in choices if c.mean <= best + REL_TOLERANCE * abs(best)]
    return min(near, key=lambda c: (c.start, c.zone_rank))


def _cleanest_below(
    zones: Sequence[str],
    forecasts: Mapping[str, IntensitySeries],
    current: Mapping[str, float],
    now: datetime,
    threshold: float,
) -> tuple[int, str] | None:
    below = []
    for rank, zone in enumerate(zones):
        intensity = current[zone] if zone in current else forecasts[zone].at(now)
        if intensity <= threshold:
            below.append((intensity, rank, zone))
    if not below:
        return None
    _, rank, zone = min(below)
    return rank, zone


def _result(choice: _Choice, baseline: float, reason: str) -> PlanResult:
    savings = 100.0 * (baseline - choice.mean) / baseline if baseline != 0 else 0.0
    return PlanResult(
        zone=choice.zone,
        start=from_epoch(choice.start),
        expected_g_per_kwh=choice.mean,
        baseline_g_per_kwh=baseline,
        expected_savings_percent=savings,
        reason=reason,
    )
