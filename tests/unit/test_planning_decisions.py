"""The operator's plan decision (pure): windows, zones without nodes, outages, deadlines."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from greenjobs.api.models import GreenTrainingJobSpec
from greenjobs.carbon.providers.base import Forecast, ProviderError
from greenjobs.carbon.series import IntensitySeries
from greenjobs.planning.capacity import Capacity
from greenjobs.planning.decisions import FetchForecast, FleetPlacement, decide_plan, fleet_job, same_plan
from greenjobs.planning.fleet import (
    DEFAULT_EXACT_TIME_LIMIT_S,
    WAITS_CAPACITY,
    WAITS_CLEAN_WINDOW,
    WAITS_START_NOW,
    Assignment,
    plan_fleet,
)
from greenjobs.planning.settings import FleetSettings
from greenjobs.planning.timing import window_of

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def spec(**timing: object) -> GreenTrainingJobSpec:
    return GreenTrainingJobSpec.model_validate(
        {
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}},
            "timing": timing,
            "placement": {"zones": ["GB", "FR"]},
        }
    )


def series(values: list[float]) -> IntensitySeries:
    return IntensitySeries.from_points([(NOW + i * H, v) for i, v in enumerate(values)])


FORECASTS = {"GB": series([300, 300, 300, 300, 300, 300]), "FR": series([200, 200, 50, 50, 200, 200])}


def fetch(zone: str, start: datetime, end: datetime) -> Forecast:
    if zone not in FORECASTS:
        raise ProviderError(f"zone {zone} unknown")
    return Forecast(zone, FORECASTS[zone], "file", NOW)


def failing(zone: str, start: datetime, end: datetime) -> Forecast:
    raise ProviderError("503 from upstream")


def no_current(zone: str) -> float:
    raise ProviderError("no current")


def test_window_from_deadline_and_from_max_delay() -> None:
    w = window_of(spec(estimatedDuration="2h", deadline="2026-11-23T20:00:00Z").timing, NOW)
    assert (w.latest_start, w.deadline, w.shiftable) == (NOW + 6 * H, NOW + 8 * H, True)
    w = window_of(spec(estimatedDuration="2h", maxDelay="3h").timing, NOW)
    assert (w.latest_start, w.deadline) == (NOW + 3 * H, NOW + 5 * H)
    assert not window_of(spec().timing, NOW).shiftable


def test_plans_the_clean_window_in_the_clean_zone() -> None:
    out = decide_plan(spec(estimatedDuration="2h", maxDelay="4h"), NOW, NOW, {"GB", "FR"}, fetch, no_current)
    assert out.plan is not None
    assert (out.plan.zone, out.plan.scheduled_start) == ("FR", NOW + 2 * H)
    assert out.plan.expected_g_per_k_wh == 50.0 and out.plan.baseline_g_per_k_wh == 300.0
    assert out.plan.expected_savings_percent == pytest.approx(83.3)
    assert not out.starts_now(NOW)
    assert {c.type: c.status for c in out.conditions}["Planned"] == "True"


def test_zone_without_nodes_is_skipped_and_reported() -> None:
    out = decide_plan(spec(estimatedDuration="2h", maxDelay="4h"), NOW, NOW, {"GB"}, fetch, no_current)
    assert out.plan is not None and out.plan.zone == "GB"
    cond = {c.type: c for c in out.conditions}["ZoneUnavailable"]
    assert cond.status == "True" and "FR" in cond.message
    assert [e.reason for e in out.events] == ["ZoneUnavailable"]


def test_no_node_in_any_zone_means_no_plan_yet() -> None:
    out = decide_plan(spec(estimatedDuration="2h", maxDelay="4h"), NOW, NOW, set(), fetch, no_current)
    assert out.plan is None
    assert {c.type: c.status for c in out.conditions}["Planned"] == "False"


def test_all_forecasts_failing_starts_now_and_says_why() -> None:
    """No information is no reason to wait: waiting until the latest start would only bring the
    deadline closer (and miss it when estimatedDuration is short)."""
    out = decide_plan(spec(estimatedDuration="2h", maxDelay="4h"), NOW, NOW, {"GB", "FR"}, failing, no_current)
    assert out.plan is not None
    assert out.plan.scheduled_start == NOW and out.plan.forecast_source == "none"
    assert out.plan.zone == "GB"  # the first allowed zone
    planned = {c.type: c for c in out.conditions}["Planned"]
    assert planned.reason == "NoForecast" and "starting now" in planned.message
    cond = {c.type: c for c in out.conditions}["ForecastUnavailable"]
    assert cond.status == "True" and "503" in cond.message


def test_impossible_deadline_starts_now_and_says_so() -> None:
    out = decide_plan(
        spec(estimatedDuration="2h", deadline="2026-11-23T13:00:00Z"), NOW, NOW, {"GB", "FR"}, fetch, no_current
    )
    assert out.plan is not None and out.starts_now(NOW)
    assert {c.type: c.status for c in out.conditions}["DeadlineAtRisk"] == "True"


def test_urgent_job_starts_now_in_its_only_zone_without_asking_forecasts() -> None:
    s = GreenTrainingJobSpec.model_validate({"jobTemplate": {"spec": {"template": {}}}, "placement": {"zones": ["GB"]}})
    out = decide_plan(s, NOW, NOW, {"GB"}, failing, no_current)
    assert out.plan is not None and out.plan.zone == "GB" and out.starts_now(NOW)


def test_same_plan_ignores_jitter_but_not_a_new_zone_or_start() -> None:
    a = decide_plan(spec(estimatedDuration="2h", maxDelay="4h"), NOW, NOW, {"GB", "FR"}, fetch, no_current).plan
    assert a is not None
    assert same_plan(a, a.model_copy(update={"scheduled_start": a.scheduled_start + timedelta(seconds=30)}))
    assert not same_plan(a, a.model_copy(update={"zone": "GB"}))
    assert not same_plan(a, a.model_copy(update={"scheduled_start": a.scheduled_start + H}))


def test_an_earlier_start_or_a_new_reason_to_wait_is_never_jitter() -> None:
    # GPUs came free sooner: 30 s earlier is a change (kept, the zone would idle while the job waits).
    a = decide_plan(spec(estimatedDuration="2h", maxDelay="4h"), NOW, NOW, {"GB", "FR"}, fetch, no_current).plan
    assert a is not None and a.scheduled_start is not None
    assert not same_plan(a, a.model_copy(update={"scheduled_start": a.scheduled_start - timedelta(seconds=30)}))
    assert same_plan(a, a.model_copy(update={"scheduled_start": a.scheduled_start - timedelta(milliseconds=500)}))
    assert not same_plan(a, a.model_copy(update={"waits_for": "Capacity"}))


# ------------------------------------------------------------------ the forecast horizon


def _fetch_from(forecasts: dict[str, IntensitySeries]) -> FetchForecast:
    def fetch_(zone: str, start: datetime, end: datetime) -> Forecast:
        return Forecast(zone, forecasts[zone], "file", NOW)

    return fetch_


def test_a_window_past_the_horizon_is_planned_on_the_covered_part_and_says_so() -> None:
    # Both forecasts stop at +6 h; the job could start until +10 h. Only runs ending by +6 h count.
    out = decide_plan(spec(estimatedDuration="2h", maxDelay="10h"), NOW, NOW, {"GB", "FR"}, fetch, no_current)
    assert out.plan is not None
    assert (out.plan.zone, out.plan.scheduled_start, out.plan.forecast_horizon) == ("FR", NOW + 2 * H, NOW + 6 * H)
    planned = {c.type: c for c in out.conditions}["Planned"]
    assert planned.reason == "ForecastWindow"
    assert planned.message.endswith("; forecast covers until 2026-11-23T18:00:00Z: re-planned as it moves")
    assert "Z" in out.plan.dump()["forecastHorizon"]


def test_a_window_inside_the_horizon_says_nothing_about_it() -> None:
    out = decide_plan(spec(estimatedDuration="2h", maxDelay="4h"), NOW, NOW, {"GB", "FR"}, fetch, no_current)
    assert out.plan is not None and out.plan.forecast_horizon == NOW + 6 * H
    assert "forecast covers" not in {c.type: c for c in out.conditions}["Planned"].message


def test_no_covered_run_stays_deferred_to_the_latest_start_without_figures() -> None:
    out = decide_plan(spec(estimatedDuration="8h", maxDelay="3h"), NOW, NOW, {"GB", "FR"}, fetch, no_current)
    assert out.plan is not None
    assert out.plan.scheduled_start == NOW + 3 * H and not out.starts_now(NOW)
    assert out.plan.expected_g_per_k_wh is None and out.plan.expected_savings_percent is None
    planned = {c.type: c for c in out.conditions}["Planned"]
    assert (planned.status, planned.reason) == ("True", "BeyondHorizon")
    assert "forecast covers until 2026-11-23T18:00:00Z" in planned.message
    assert "re-planned as the horizon moves" in planned.message
    # A merge patch of this plan clears the figures an earlier plan may have written.
    assert out.plan.merge_patch()["expectedSavingsPercent"] is None


def test_an_uncovered_start_at_once_gives_no_savings_figure() -> None:
    # GB's forecast begins in an hour: "at once in GB" (the baseline) is not covered.
    late_gb = IntensitySeries.from_points([(NOW + (i + 1) * H, 300.0) for i in range(6)])
    fetch_ = _fetch_from({"GB": late_gb, "FR": FORECASTS["FR"]})
    out = decide_plan(spec(estimatedDuration="2h", maxDelay="4h"), NOW, NOW, {"GB", "FR"}, fetch_, no_current)
    assert out.plan is not None and out.plan.zone == "FR" and out.plan.expected_g_per_k_wh == 50.0
    assert out.plan.baseline_g_per_k_wh is None and out.plan.expected_savings_percent is None
    assert "no savings figure" in {c.type: c for c in out.conditions}["Planned"].message


def _fleet(zone: str, start: datetime, late_by: timedelta, waits_for: str) -> FleetPlacement:
    a = Assignment(zone, start, 300.0, 300.0, late_by, waits_for, "placed by the fleet", 2 * H)
    return FleetPlacement(a, H)


def test_a_fleet_plan_names_the_forecasts_it_was_built_on() -> None:
    # The fleet holds the job back an hour past its clean window (capacity): the plan is the fleet's,
    # but the forecasts still came from the file provider.
    answer = _fleet("GB", NOW + 3 * H, timedelta(0), WAITS_CAPACITY)
    out = decide_plan(
        spec(estimatedDuration="2h", maxDelay="4h"), NOW, NOW, {"GB", "FR"}, fetch, no_current, fleet=lambda: answer
    )
    assert out.plan is not None and out.plan.waits_for == WAITS_CAPACITY
    assert (out.plan.zone, out.plan.forecast_source) == ("GB", "file")


def test_a_latest_start_already_past_is_not_blamed_on_capacity() -> None:
    created = NOW - 3 * H  # deadline 13:00 for a 2 h run: the latest start was 11:00, an hour ago
    late = _fleet("GB", NOW, H, WAITS_START_NOW)
    out = decide_plan(
        spec(estimatedDuration="2h", deadline="2026-11-23T13:00:00Z"),
        created,
        NOW,
        {"GB", "FR"},
        fetch,
        no_current,
        fleet=lambda: late,
    )
    risk = {c.type: c for c in out.conditions if c.type == "DeadlineAtRisk"}["DeadlineAtRisk"]
    assert (risk.status, risk.reason) == ("True", "LatestStartPassed")
    assert [e.reason for e in out.events] == ["DeadlineAtRisk"]


def test_held_past_the_latest_start_for_room_says_no_capacity_in_time() -> None:
    answer = _fleet("GB", NOW + 6 * H, 2 * H, WAITS_CAPACITY)
    out = decide_plan(
        spec(estimatedDuration="2h", maxDelay="4h"), NOW, NOW, {"GB", "FR"}, fetch, no_current, fleet=lambda: answer
    )
    risks = [c for c in out.conditions if c.type == "DeadlineAtRisk"]
    assert (risks[-1].status, risks[-1].reason) == ("True", "NoCapacityInTime")
    assert "2h" in risks[-1].message or "2 h" in risks[-1].message


def test_a_start_latency_holds_the_gpus_longer_and_moves_the_latest_start_earlier() -> None:
    window = window_of(spec(maxDelay="100s", estimatedDuration="20s").timing, NOW)
    job = fleet_job("j", 8, window, ["GB"], NOW, NOW, start_latency=timedelta(seconds=5))
    assert job.duration == timedelta(seconds=25)
    assert job.latest_start == NOW + timedelta(seconds=95)
    # A window shorter than the latency means at once, not late; a job that cannot wait is unchanged.
    short = window_of(spec(maxDelay="2s", estimatedDuration="20s").timing, NOW)
    assert fleet_job("j", 8, short, ["GB"], NOW, NOW, start_latency=timedelta(seconds=5)).latest_start == NOW
    fixed = window_of(spec(estimatedDuration="20s").timing, NOW)
    assert fleet_job("j", 8, fixed, ["GB"], NOW, NOW, start_latency=timedelta(seconds=5)).latest_start == NOW


def test_with_a_start_latency_rounds_that_share_the_gpus_never_overlap_and_the_last_starts_in_time() -> None:
    """Four rounds of two 8-GPU jobs on 16 GPUs: each round gives its GPUs back only after the latency
    and the run, and the fourth still starts by its latest start less the latency."""
    window = window_of(spec(maxDelay="100s", estimatedDuration="20s").timing, NOW)
    latency = timedelta(seconds=5)
    jobs = [fleet_job(f"j{i}", 8, window, ["GB"], NOW, NOW, start_latency=latency) for i in range(8)]
    clean = IntensitySeries.from_points(
        [(NOW + i * timedelta(seconds=10), 40.0 if i in (5, 6) else 300.0) for i in range(-6, 30)]
    )
    plan = plan_fleet(jobs, Capacity(base={"GB": 16}), {"GB": clean}, NOW)
    assert not plan.unplaced and all(a.late_by == timedelta(0) for a in plan.assignments.values())
    starts = sorted(a.start for a in plan.assignments.values())
    for earlier, later in zip(starts, starts[2:], strict=False):
        assert later - earlier >= timedelta(seconds=25)
    assert starts[-1] <= NOW + timedelta(seconds=95)


def test_a_start_latency_is_not_scored_the_run_after_it_is() -> None:
    """A 20 s job started with 10 s of latency, a clean window of 30 s (10 s forecast steps): it is
    started 10 s before the window, so that its run (not the pod start) falls in it, and is told the
    window's intensity. Scoring the whole hold would start it at the window and run 10 s past it."""
    window = window_of(spec(maxDelay="5m", estimatedDuration="20s").timing, NOW)
    job = fleet_job("j", 8, window, ["GB"], NOW, NOW, start_latency=timedelta(seconds=10))
    assert job.start_latency == timedelta(seconds=10) and job.run_time == timedelta(seconds=30)
    series = IntensitySeries.from_points(
        [(NOW + i * timedelta(seconds=10), 40.0 if i in (3, 4, 5) else 300.0) for i in range(-6, 60)]
    )
    a = plan_fleet([job], Capacity(base={"GB": 8}), {"GB": series}, NOW).assignments["j"]
    assert a.start == NOW + timedelta(seconds=20)
    assert a.expected_g_per_kwh == pytest.approx(40.0)
    assert a.waits_for == WAITS_CLEAN_WINDOW
    assert a.end == NOW + timedelta(seconds=50)  # the GPUs are held from the start
    # A cap stretches the run, not the pod start.
    capped = replace(job, power_cap_fraction=0.5)
    assert timedelta(seconds=30) < capped.run_time < timedelta(seconds=10) + 2 * timedelta(seconds=20)


def test_the_fleet_settings_read_the_start_latency_and_refuse_a_negative_one() -> None:
    assert FleetSettings().start_latency == timedelta(seconds=10)
    assert FleetSettings.parse({"startLatency": "45s"}).start_latency == timedelta(seconds=45)
    with pytest.raises(ValueError, match="startLatency"):
        FleetSettings.parse({"startLatency": timedelta(seconds=-1)})


def test_the_fleet_settings_read_the_exact_stages_time_limit_and_refuse_a_negative_one() -> None:
    assert FleetSettings().exact_time_limit == timedelta(seconds=DEFAULT_EXACT_TIME_LIMIT_S)
    assert FleetSettings.parse({"exactTimeLimit": "0s"}).exact_time_limit == timedelta(0)
    assert FleetSettings.parse({"exactTimeLimit": "2.5s"}).exact_time_limit == timedelta(seconds=2.5)
    with pytest.raises(ValueError, match="exactTimeLimit"):
        FleetSettings.parse({"exactTimeLimit": "-1s"})
