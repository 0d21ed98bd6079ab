"""The carbon-aware planner: the best (zone, start) for a job before its latest start.

Pure functions, no Kubernetes and no I/O, so that the operator, `greenjobs plan` and the benchmarks run
the very same code.

Why the search is exact: a forecast is a step function, so its cumulative integral C is piecewise
linear with breakpoints at the forecast's points t_i. The mean over [s, s + D) is (C(s + D) - C(s)) / D,
piecewise linear in s with breakpoints where s or s + D meets a t_i. Its minimum over [now, latest] is
therefore reached at one of {now, latest} | {t_i} | {t_i - D} inside that interval; evaluating exactly
those candidates (with the series' prefix sums) gives the true optimum, and a start need not sit on a
forecast point.

Nothing beyond the forecast counts: a zone's candidate starts are only those whose whole run
[s, s + D) lies within its forecast's coverage [first point, horizon) (IntensitySeries.horizon). A
job whose window reaches past the horizon is planned on the covered starts and flagged
`horizon_limited` (the caller re-plans as the horizon moves). When no run at all is covered, the job
stays deferred to its latest start (reason BeyondHorizon, no figures), never later. A figure the
forecast does not cover (expected, baseline, savings) is None, never an extrapolation.
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
REASON_BEYOND_HORIZON = "BeyondHorizon"


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
    # Mean forecast intensity over [start, start + duration) in `zone`; None when the forecast does not
    # cover that run (then no figure below is given either).
    expected_g_per_kwh: float | None
    # Mean over [now, now + duration) in the baseline zone; None when its forecast does not cover it.
    baseline_g_per_kwh: float | None
    # 100 * (baseline - expected) / baseline; 0 when baseline == 0; None when either is None.
    expected_savings_percent: float | None
    reason: str  # ForecastWindow | StartWhenBelow | StartNow | DeadlinePassed | BeyondHorizon
    # The earliest horizon of the candidate zones' forecasts: what the plan could look at.
    horizon: datetime | None = None
    # True when a start the job allows (up to its latest start) was left out because its run would end
    # past a forecast's horizon (or begin before its first point): re-plan as the horizon moves.
    horizon_limited: bool = False


@dataclass(frozen=True)
class _Choice:
    zone_rank: int
    zone: str
    start: float  # epoch seconds
    mean: float | None  # None: the forecast does not cover the run


@dataclass(frozen=True)
class _Coverage:
    """What the candidate zones' forecasts cover, for one request."""

    horizon: float  # the earliest horizon among the zones (epoch seconds)
    limited: bool


def _coverage(zones: Sequence[str], forecasts: Mapping[str, IntensitySeries], now: float, need: float) -> _Coverage:
    """`need`: where the latest run the job allows ends (max(latest, now) + duration)."""
    series = [forecasts[z] for z in zones]
    horizon = min(s.horizon_s for s in series)
    limited = horizon < need or any(float(s.times[0]) > now for s in series)
    return _Coverage(horizon, limited)


def plan(
    request: PlanRequest,
    forecasts: Mapping[str, IntensitySeries],
    current: Mapping[str, float] | None = None,
) -> PlanResult:
    """Choose the zone and start with the lowest mean forecast intensity over the run.

    `current` holds measured intensities per zone for the `start_when_below` test (the forecast at
    `now` is used for a zone missing from it). Zones without a forecast are skipped; the baseline is
    the first zone that has one. Raises NoForecast when no zone has one. Only runs inside a forecast's
    coverage are counted (see the module docstring).
    """
    zones = _usable_zones(request.zones, forecasts)
    now = to_epoch(request.now)
    latest = to_epoch(request.latest_start)
    d = request.duration.total_seconds()
    cov = _coverage(zones, forecasts, now, max(latest, now) + d)
    if latest <= now or request.start_when_below is not None:
        decided = _decide_at_once(request, zones, forecasts, current, now=now, latest=latest, d=d)
        if decided is not None:
            return _result(decided[0], _covered_mean(forecasts[zones[0]], now, d), decided[1], cov)

    # The search: every zone's covered candidate starts, then one selection over all of them. This is
    # the hot path (the operator and the benchmarks plan thousands of jobs), hence one numpy pass.
    per_zone = [_candidate_means(forecasts[zone], now=now, latest=latest, d=d) for zone in zones]
    sizes = [len(s) for s, _ in per_zone]
    # The baseline is the first zone's candidate 0 when that is a covered start at `now`.
    first_starts, first_means = per_zone[0]
    if sizes[0] and first_starts[0] == now:
        baseline: float | None = float(first_means[0])
    else:
        baseline = _covered_mean(forecasts[zones[0]], now, d)
    if not any(sizes):
        # No run the job allows lies within any forecast: nothing can be compared without inventing
        # values. Stay deferred to the latest start (never later); the caller re-plans as the horizon
        # moves, and a plan at the latest start itself starts at once.
        return _result(_Choice(0, zones[0], latest, None), baseline, REASON_BEYOND_HORIZON, cov)
    if len(per_zone) == 1:
        starts, means = per_zone[0]
    else:
        starts = np.concatenate([s for s, _ in per_zone])
        means = np.concatenate([m for _, m in per_zone])
    best = means.min()
    # Earliest start among those within tolerance of the best; argmin returns the first of equal starts,
    # and the zones are concatenated in the user's order, so that tie goes to the earlier zone.
    k = int(np.where(means <= best + REL_TOLERANCE * abs(best), starts, np.inf).argmin())
    rank = bisect_right(list(accumulate(sizes)), k)
    choice = _Choice(rank, zones[rank], float(starts[k]), float(means[k]))
    return _result(choice, baseline, REASON_START_NOW if choice.start <= now else REASON_FORECAST_WINDOW, cov)


def _decide_at_once(
    request: PlanRequest,
    zones: Sequence[str],
    forecasts: Mapping[str, IntensitySeries],
    current: Mapping[str, float] | None,
    *,
    now: float,
    latest: float,
    d: float,
) -> tuple[_Choice, str] | None:
    """The decisions that need no search: no slack left, or clean enough to start now."""
    # Deadline always wins over forecasts: when there is no slack left, start at once in the zone
    # that is cleanest for [now, now + D).
    if latest < now:
        return _best_now(zones, forecasts, now, d), REASON_DEADLINE_PASSED

    if request.start_when_below is not None:
        clean = _cleanest_below(zones, forecasts, current or {}, now, request.start_when_below)
        if clean is not None:
            rank, zone = clean
            return _Choice(rank, zone, now, _covered_mean(forecasts[zone], now, d)), REASON_START_WHEN_BELOW

    if latest == now:
        return _best_now(zones, forecasts, now, d), REASON_START_NOW
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
    with IntensitySeries.mean. Same coverage rule, tie rules and special cases as plan().
    """
    if step <= timedelta(0):
        raise ValueError("step must be positive")
    zones = _usable_zones(request.zones, forecasts)
    now = to_epoch(request.now)
    latest = to_epoch(request.latest_start)
    d = request.duration.total_seconds()
    if latest < now or request.start_when_below is not None or latest == now:
        # The early decisions do no search; they are the same code as plan()'s.
        return plan(request, forecasts, current)
    first = forecasts[zones[0]]
    covered = first.covers(request.now, request.now + request.duration)
    baseline = first.mean(request.now, request.duration) if covered else None

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
        # Only runs inside the coverage [first point, horizon) count, as in plan().
        lo, hi = max(now, float(series.times[0])), min(latest, series.horizon_s - d)
        if lo > hi:
            continue
        starts = [g for g in grid if lo <= g <= hi] + [lo, hi]
        if include_candidates:
            for t in series.times.tolist():
                for c in (t, t - d):
                    if lo <= c <= hi:
                        starts.append(c)
        best: _Choice | None = None
        for start in sorted(set(starts)):
            mean = series.mean(from_epoch(start), request.duration)
            # Strictly better only: on equal means the earlier start (sorted first) stays.
            if best is None or best.mean is None or mean < best.mean - REL_TOLERANCE * abs(best.mean):
                best = _Choice(rank, zone, start, mean)
        assert best is not None
        choices.append(best)
    if not choices:
        return plan(request, forecasts, current)  # BeyondHorizon: no search either
    chosen = _pick(choices)
    cov = _coverage(zones, forecasts, now, latest + d)
    return _result(chosen, baseline, REASON_START_NOW if chosen.start <= now else REASON_FORECAST_WINDOW, cov)


# ------------------------------------------------------------------ helpers


def _usable_zones(zones: Sequence[str], forecasts: Mapping[str, IntensitySeries]) -> list[str]:
    usable = [z for z in dict.fromkeys(zones) if z in forecasts]
    if not usable:
        raise NoForecast(list(zones))
    return usable


def _cumulative(series: IntensitySeries, x: FloatArray) -> FloatArray:
    """Integral of the series from its first point to each x (flat extensions; callers stay covered)."""
    i = np.searchsorted(series.times, x, side="right") - 1
    np.maximum(i, 0, out=i)
    result: FloatArray = series.prefix[i] + series.values[i] * (x - series.times[i])
    return result


def _mean_at(series: IntensitySeries, start: float, d: float) -> float:
    c = _cumulative(series, np.array([start, start + d]))
    return float(c[1] - c[0]) / d


def _covered_mean(series: IntensitySeries, start: float, d: float) -> float | None:
    """The mean over [start, start + d) when the forecast covers it, else None (never extrapolated)."""
    if start < float(series.times[0]) or start + d > series.horizon_s:
        return None
    return _mean_at(series, start, d)


def _known_mean(series: IntensitySeries, start: float, d: float) -> float | None:
    """The mean over the covered part of [start, start + d) when `start` itself is covered."""
    stop = min(start + d, series.horizon_s)
    if start < float(series.times[0]) or stop <= start:
        return None
    return _mean_at(series, start, stop - start)


_EMPTY: FloatArray = np.empty(0, dtype=np.float64)


def _candidate_means(series: IntensitySeries, *, now: float, latest: float, d: float) -> tuple[FloatArray, FloatArray]:
    """Covered candidate starts (the first is the earliest covered one) and the mean over each run.

    Empty when no run [s, s + D) with now <= s <= latest lies within the series' coverage.
    """
    times = series.times
    lo = max(now, float(times[0]))
    hi = min(latest, series.horizon_s - d)
    if lo > hi:
        return _EMPTY, _EMPTY
    # Forecast points in [lo, hi) are candidate starts, and so are those in [lo + D, hi + D) shifted
    # back by D (the run then ends on a step boundary). `lo` and `hi` come first.
    # (ndarray methods rather than np.* functions: this runs per zone per job, where call overhead counts.)
    a, b, a_end, b_end = times.searchsorted((lo, hi, lo + d, hi + d)).tolist()
    starts = np.concatenate(((lo, hi), times[a:b], times[a_end:b_end] - d))
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
    """Start at once in the zone cleanest for [now, now + D).

    Zones whose forecast covers the whole run are compared; when none does, the zone is chosen on the
    covered part of the run (the figure is then None: it would rest on values nobody forecast), and
    when no forecast even covers `now`, the first zone.
    """
    covered = [_Choice(rank, z, now, _covered_mean(forecasts[z], now, d)) for rank, z in enumerate(zones)]
    if any(c.mean is not None for c in covered):
        return _pick([c for c in covered if c.mean is not None])
    known = [(m, rank, z) for rank, z in enumerate(zones) if (m := _known_mean(forecasts[z], now, d)) is not None]
    _, rank, zone = min(known) if known else (0.0, 0, zones[0])
    return _Choice(rank, zone, now, None)


def _pick(choices: Sequence[_Choice]) -> _Choice:
    """Lowest mean; among near-equal ones the earliest start, then the earliest zone in user order."""
    means = [c.mean for c in choices if c.mean is not None]
    best = min(means)
    near = [c for c in choices if c.mean is not None and c.mean <= best + REL_TOLERANCE * abs(best)]
    return min(near, key=lambda c: (c.start, c.zone_rank))


def _cleanest_below(
    zones: Sequence[str],
    forecasts: Mapping[str, IntensitySeries],
    current: Mapping[str, float],
    now: float,
    threshold: float,
) -> tuple[int, str] | None:
    below = []
    for rank, zone in enumerate(zones):
        series = forecasts[zone]
        if zone in current:
            intensity = current[zone]
        elif float(series.times[0]) <= now < series.horizon_s:
            intensity = series.at(from_epoch(now))
        else:
            continue  # neither measured nor forecast now: no reason to start here at once
        if intensity <= threshold:
            below.append((intensity, rank, zone))
    if not below:
        return None
    _, rank, zone = min(below)
    return rank, zone


def _result(choice: _Choice, baseline: float | None, reason: str, cov: _Coverage) -> PlanResult:
    savings: float | None = None
    if baseline is not None and choice.mean is not None:
        savings = 100.0 * (baseline - choice.mean) / baseline if baseline != 0 else 0.0
    return PlanResult(
        zone=choice.zone,
        start=from_epoch(choice.start),
        expected_g_per_kwh=choice.mean,
        baseline_g_per_kwh=baseline,
        expected_savings_percent=savings,
        reason=reason,
        horizon=from_epoch(cov.horizon),
        horizon_limited=cov.limited,
    )
