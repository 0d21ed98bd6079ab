"""Deciding a GreenTrainingJob's plan: zone and start, from its window and the forecasts.

Pure: forecasts come in through callables, so the operator, the tests and `greenjobs plan` share it.
"""

import contextlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from greenjobs.api.conditions import CondUpdate
from greenjobs.api.constants import Cond
from greenjobs.api.durations import format_duration, format_time
from greenjobs.api.models import GreenTrainingJobSpec, Plan
from greenjobs.carbon.providers.base import Forecast, ProviderError
from greenjobs.carbon.series import IntensitySeries
from greenjobs.planning.fleet import (
    WAITS_CAPACITY,
    WAITS_CLEAN_WINDOW,
    WAITS_START_NOW,
    Assignment,
    FleetJob,
    Placement,
)
from greenjobs.planning.job import REASON_BEYOND_HORIZON, PlanRequest, PlanResult, plan

from .timing import Window, window_of

FetchForecast = Callable[[str, datetime, datetime], Forecast]
CurrentIntensity = Callable[[str], float]
# The fleet planner's answer for this job: its assignment, why it has none (str), or None when the
# job is not planned with the fleet (then it is planned alone, as before).
AskFleet = Callable[[], "FleetPlacement | str | None"]

# A job without estimatedDuration that may not be shifted still gets the cleanest zone; judge the
# zones over this nominal span.
NOMINAL_DURATION = timedelta(hours=1)
START_SLACK = timedelta(seconds=1)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class PlanOutcome:
    plan: Plan | None  # None: cannot plan yet (e.g. no node in any allowed zone)
    window: Window
    conditions: list[CondUpdate] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def starts_now(self, now: datetime) -> bool:
        return (
            self.plan is not None
            and self.plan.scheduled_start is not None
            and (self.plan.scheduled_start <= now + START_SLACK)
        )


def decide_plan(
    spec: GreenTrainingJobSpec,
    created: datetime,
    now: datetime,
    zones_with_nodes: Collection[str] | None,
    fetch: FetchForecast,
    current: CurrentIntensity,
    default_zone: str | None = None,
    fleet: AskFleet | None = None,
) -> PlanOutcome:
    """Plan a job. `default_zone` is whose forecast times a job that names no zones (no node selector).

    With `fleet`, a job with zones takes the (zone, start) the capacity-aware fleet planner gave it,
    planned jointly with every other job that has not started (controller/fleet.py)."""
    window = window_of(spec.timing, created)
    zones, conds, events = _placeable_zones(list(spec.placement.zones), zones_with_nodes)
    if spec.placement.zones and not zones:
        conds.append(CondUpdate(Cond.PLANNED, "False", "NoNodesInZone", "waiting for nodes in an allowed zone"))
        return PlanOutcome(None, window, conds, events)
    _check_deadline(window, now, conds, events)
    latest = max(window.latest_start, now)
    base = Plan(latest_start=latest, deadline=window.deadline, decided_at=now)

    if not window.shiftable and len(zones) <= 1:
        p = base.model_copy(update={"zone": zones[0] if zones else None, "scheduled_start": now})
        conds.append(CondUpdate(Cond.PLANNED, "True", "StartNow", "no deadline or maxDelay: start at once"))
        return PlanOutcome(p, window, conds, events)
    forecast_zones = zones or ([default_zone] if default_zone else [])
    if not forecast_zones:
        p = base.model_copy(update={"scheduled_start": now})
        msg = "no placement.zones and no default zone configured: start at once"
        conds.append(CondUpdate(Cond.PLANNED, "True", "NoZone", msg))
        return PlanOutcome(p, window, conds, events)

    duration = window.duration or NOMINAL_DURATION
    series, sources = _fetch_forecasts(forecast_zones, fetch, now, latest + duration, conds, events)
    if not series:
        # No forecast from any provider: no information is no reason to wait. Waiting until the
        # latest start would only push the run towards its deadline (and past it when the estimate is
        # short); it starts now, in its first zone, and ForecastUnavailable says why.
        p = base.model_copy(
            update={"zone": zones[0] if zones else None, "scheduled_start": now, "forecast_source": "none"}
        )
        msg = "no forecast from any provider: starting now (waiting would only bring the deadline closer)"
        conds.append(CondUpdate(Cond.PLANNED, "True", "NoForecast", msg))
        return PlanOutcome(p, window, conds, events)

    request = PlanRequest(
        now=now,
        duration=duration,
        latest_start=latest,
        zones=[z for z in forecast_zones if z in series],
        start_when_below=spec.timing.start_when_below,
    )
    now_values = _current_values(series, current) if spec.timing.start_when_below is not None else {}
    result = plan(request, series, now_values)
    waits = None
    source = ",".join(sorted(set(sources.values())))
    # startWhenBelow asks for the intensity now, which the fleet's grid does not model: planned alone.
    if fleet is not None and zones and spec.timing.start_when_below is None:
        answer = fleet()
        if answer is not None:
            refined = _refine(answer, result, request, series)
            if refined is not None:
                return _from_fleet(refined, result, base, window, now, source, conds, events)
            # The per-job optimum is where the fleet put it: the exact plan stands.
            waits = WAITS_CLEAN_WINDOW if result.start > now else WAITS_START_NOW
    p = base.model_copy(
        update={
            "zone": result.zone if zones else None,
            "scheduled_start": result.start,
            "forecast_source": source,
            "expected_g_per_k_wh": _rounded(result.expected_g_per_kwh, 2),
            "baseline_g_per_k_wh": _rounded(result.baseline_g_per_kwh, 2),
            "expected_savings_percent": _rounded(result.expected_savings_percent, 1),
            "forecast_horizon": result.horizon,
            "waits_for": waits,
        }
    )
    conds.append(CondUpdate(Cond.PLANNED, "True", result.reason, _plan_message(result, now, bool(zones))))
    return PlanOutcome(p, window, conds, events)


@dataclass(frozen=True)
class FleetPlacement:
    """The fleet planner's assignment for one job, and the grid step it was planned on."""

    assignment: Assignment
    step: timedelta


def fleet_job(
    job_id: str,
    gpus: int,
    window: Window,
    zones: Sequence[str],
    arrival: datetime,
    now: datetime,
    current: Placement | None = None,
    *,
    start_latency: timedelta = timedelta(0),
) -> FleetJob:
    """A job that has not started, as the fleet planner sees it (the operator's and the Kueue check's).

    `start_latency`: from a start the plan makes to the workload running (admission, pod start); see
    with_start_latency."""
    job = FleetJob(
        id=job_id,
        gpus=gpus,
        duration=window.duration or NOMINAL_DURATION,
        latest_start=window.latest_start,
        zones=zones,
        arrival=arrival,
        earliest_start=now,
        current=current,
        flexible=window.shiftable,
    )
    return with_start_latency(job, start_latency)


def with_start_latency(job: FleetJob, latency: timedelta) -> FleetJob:
    """`job` as a start the plan makes sees it: held `latency` longer, its run scored from `latency`
    after the start (a 5-minute forecast step is not much longer than a slow pod start), and started
    `latency` before its latest start (never before its arrival: a window shorter than the latency
    means at once)."""
    if latency <= timedelta(0):
        return job
    latest = max(job.latest_start - latency, min(job.latest_start, job.arrival)) if job.flexible else job.latest_start
    return replace(
        job,
        duration=job.duration + latency,
        start_latency=job.start_latency + latency,
        latest_start=latest,
    )


def grid_step(series: Iterable[IntensitySeries]) -> timedelta:
    """The finest of the forecasts' own steps (their median spacing), within [1 s, 1 h]: a grid
    coarser than the forecast would blur the very windows the plan is about."""
    steps = [float(np.median(np.diff(s.times))) for s in series if len(s.times) > 1]
    seconds = min(steps) if steps else 900.0
    return timedelta(seconds=min(max(seconds, 1.0), 3600.0))


def fleet_forecasts(
    fetch: FetchForecast,
    zones: Iterable[str],
    jobs: Iterable[FleetJob],
    now: datetime,
    horizon: timedelta | None = None,
    on_error: Callable[[str, ProviderError], None] | None = None,
) -> dict[str, IntensitySeries]:
    """The forecasts a fleet plan needs: each zone's, only as far as the latest job could run (capped
    at `horizon`); a zone whose providers all fail is left out (`on_error` is told) and planned without."""
    until = max((max(j.latest_start, now) + j.duration for j in jobs), default=now)
    if horizon is not None:
        until = min(until, now + horizon)
    forecasts: dict[str, IntensitySeries] = {}
    for zone in sorted(set(zones)):
        try:
            forecasts[zone] = fetch(zone, now, until + timedelta(minutes=1)).series
        except ProviderError as exc:
            if on_error is not None:
                on_error(zone, exc)
    return forecasts


def _refine(
    answer: FleetPlacement | str,
    exact: PlanResult,
    request: PlanRequest,
    series: Mapping[str, IntensitySeries],
) -> Assignment | str | None:
    """None when the job's own exact optimum lies in the grid step the fleet gave it (same zone): capacity
    does not bind it, and the exact start keeps the precision the grid lacks. Else the fleet's
    assignment, its start refined exactly within that same step, never earlier (an earlier start could
    overlap the run the fleet placed before it; a start is still carried out only when the zone has the
    room then)."""
    if isinstance(answer, str):
        return answer
    a, step = answer.assignment, answer.step
    if exact.zone == a.zone and a.start <= exact.start < a.start + step:
        return None
    if a.late_by > timedelta(0) or a.zone not in series:
        return a
    earliest = max(request.now, a.start)
    latest = max(min(request.latest_start, a.start + step - timedelta(seconds=1)), earliest)
    try:
        local = plan(replace(request, now=earliest, latest_start=latest, zones=[a.zone]), series)
    except ValueError:
        return a
    if local.expected_g_per_kwh is None:
        return a
    return replace(a, start=local.start, expected_g_per_kwh=local.expected_g_per_kwh)


def _from_fleet(
    answer: Assignment | str,
    exact: PlanResult,
    base: Plan,
    window: Window,
    now: datetime,
    source: str,
    conds: list[CondUpdate],
    events: list[Event],
) -> PlanOutcome:
    """The fleet planner's assignment as this job's plan (or why it has none, as a condition)."""
    if isinstance(answer, str):
        conds.append(CondUpdate(Cond.PLANNED, "False", "NoCapacity", answer))
        events.append(Event("Warning", "NoCapacity", answer))
        return PlanOutcome(None, window, conds, events)
    baseline = exact.baseline_g_per_kwh
    saved = None
    if baseline:
        saved = 100.0 * (baseline - answer.expected_g_per_kwh) / baseline
    p = base.model_copy(
        update={
            "zone": answer.zone,
            "scheduled_start": answer.start,
            "forecast_source": source,
            "expected_g_per_k_wh": round(answer.expected_g_per_kwh, 2),
            "baseline_g_per_k_wh": _rounded(baseline, 2),
            "expected_savings_percent": _rounded(saved, 1),
            "forecast_horizon": exact.horizon,
            "waits_for": answer.waits_for,
        }
    )
    delay = max(answer.start - now, timedelta(0))
    msg = f"start {format_time(answer.start)} (in {format_duration(delay)}) in {answer.zone}: {answer.message}"
    conds.append(CondUpdate(Cond.PLANNED, "True", answer.waits_for, msg))
    # Late for want of room only when it starts after the latest start it could still keep: a latest
    # start already past is reported as LatestStartPassed by _check_deadline, not blamed on capacity.
    held_back = answer.start - max(window.latest_start, now)
    if answer.late_by > timedelta(0) and held_back > START_SLACK:
        late = (
            f"no room before the latest start: planned {format_duration(held_back)} late"
            f" ({'waiting for capacity' if answer.waits_for == WAITS_CAPACITY else answer.waits_for})"
        )
        conds.append(CondUpdate(Cond.DEADLINE_AT_RISK, "True", "NoCapacityInTime", late))
        events.append(Event("Warning", "DeadlineAtRisk", late))
    return PlanOutcome(p, window, conds, events)


def _placeable_zones(
    wanted: list[str], zones_with_nodes: Collection[str] | None
) -> tuple[list[str], list[CondUpdate], list[Event]]:
    """The wanted zones that have nodes, with the ZoneUnavailable condition (and event) to report."""
    if not wanted or zones_with_nodes is None:
        return wanted, [], []
    zones = [z for z in wanted if z in zones_with_nodes]
    missing = [z for z in wanted if z not in zones_with_nodes]
    if not missing:
        return zones, [CondUpdate(Cond.ZONE_UNAVAILABLE, "False", "NodesFound", "every allowed zone has nodes")], []
    msg = f"no node carries zone(s) {', '.join(missing)}"
    return (
        zones,
        [CondUpdate(Cond.ZONE_UNAVAILABLE, "True", "NoNodesInZone", msg)],
        [Event("Warning", "ZoneUnavailable", msg)],
    )


def _check_deadline(window: Window, now: datetime, conds: list[CondUpdate], events: list[Event]) -> None:
    if not window.shiftable:
        return
    if window.latest_start < now:
        deadline = format_time(window.deadline) if window.deadline else "the deadline"
        msg = f"latest start {format_time(window.latest_start)} has passed: starting now; {deadline} may be missed"
        conds.append(CondUpdate(Cond.DEADLINE_AT_RISK, "True", "LatestStartPassed", msg))
        events.append(Event("Warning", "DeadlineAtRisk", msg))
    else:
        conds.append(CondUpdate(Cond.DEADLINE_AT_RISK, "False", "OnTime", "the deadline can be met"))


def _fetch_forecasts(
    zones: list[str],
    fetch: FetchForecast,
    start: datetime,
    end: datetime,
    conds: list[CondUpdate],
    events: list[Event],
) -> tuple[dict[str, IntensitySeries], dict[str, str]]:
    series: dict[str, IntensitySeries] = {}
    sources: dict[str, str] = {}
    errors: dict[str, str] = {}
    for zone in zones:
        try:
            fc = fetch(zone, start, end)
            series[zone], sources[zone] = fc.series, fc.source
        except ProviderError as exc:
            errors[zone] = str(exc)
    if errors:
        msg = "; ".join(f"{z}: {e}" for z, e in errors.items())
        conds.append(CondUpdate(Cond.FORECAST_UNAVAILABLE, "True", "ProvidersFailed", msg))
        events.append(Event("Warning", "ForecastUnavailable", msg))
    else:
        conds.append(CondUpdate(Cond.FORECAST_UNAVAILABLE, "False", "ForecastsFound", "forecasts available"))
    return series, sources


def _current_values(series: Mapping[str, IntensitySeries], current: CurrentIntensity) -> dict[str, float]:
    values: dict[str, float] = {}
    for zone in series:
        with contextlib.suppress(ProviderError):  # the planner falls back to the forecast at `now`
            values[zone] = current(zone)
    return values


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _plan_message(result: PlanResult, now: datetime, with_zone: bool) -> str:
    delay = max(result.start - now, timedelta(0))
    where = f" in {result.zone}" if with_zone else ""
    horizon = format_time(result.horizon) if result.horizon else "?"
    if result.reason == REASON_BEYOND_HORIZON:
        return (
            f"forecast covers until {horizon}, not one whole run: deferred to the latest start"
            f" {format_time(result.start)}{where} (in {format_duration(delay)}), re-planned as the horizon moves"
        )
    msg = f"start {format_time(result.start)} (in {format_duration(delay)}){where}: " + _figures(result)
    if result.horizon_limited:
        msg += f"; forecast covers until {horizon}: re-planned as it moves"
    return msg


def _figures(result: PlanResult) -> str:
    """Expected vs at-once figures, only those the forecast covers."""
    expected, baseline = result.expected_g_per_kwh, result.baseline_g_per_kwh
    if expected is None:
        return "the forecast does not cover the whole run: no expected figure"
    text = f"expected {expected:.1f} gCO2e/kWh"
    if baseline is None or result.expected_savings_percent is None:
        return text + " (a start at once is not covered by the forecast: no savings figure)"
    return text + f" vs {baseline:.1f} at once ({result.expected_savings_percent:.1f}% less)"


def same_plan(a: Plan | None, b: Plan | None, tolerance: timedelta = timedelta(minutes=1)) -> bool:
    """Whether a re-plan `b` of plan `a` changes anything that matters: the zone, what it waits for, the
    start moved later by more than `tolerance` (so forecast noise does not churn the status), or moved
    EARLIER at all (beyond a second): an earlier start is room that came free, and a job that kept its
    later start would leave GPUs idle while it waits (short jobs in a tight zone end past deadlines)."""
    if a is None or b is None:
        return a is b
    if a.zone != b.zone or (a.scheduled_start is None) != (b.scheduled_start is None):
        return False
    if a.scheduled_start is None or b.scheduled_start is None:
        return True
    if a.waits_for != b.waits_for:
        return False  # e.g. its clean window was given to another job: it now waits for capacity
    if b.scheduled_start < a.scheduled_start - START_SLACK:
        return False
    return b.scheduled_start - a.scheduled_start <= tolerance
