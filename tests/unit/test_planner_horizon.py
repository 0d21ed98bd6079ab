"""The horizon rule: a plan counts only what the forecast covers, and says when it was limited."""

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

import greenjobs
from greenjobs.carbon.providers.base import NoData, clip
from greenjobs.carbon.series import IntensitySeries, from_epoch, to_epoch
from greenjobs.planning.job import (
    REASON_BEYOND_HORIZON,
    REASON_DEADLINE_PASSED,
    REASON_FORECAST_WINDOW,
    REASON_START_NOW,
    REASON_START_WHEN_BELOW,
    PlanRequest,
    plan,
    plan_bruteforce,
)

T0 = datetime(2020, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
DATA = Path(greenjobs.__file__).parent / "data"


def hourly(*values: float, start: datetime = T0, end: datetime | None = None) -> IntensitySeries:
    return IntensitySeries.from_points([(start + i * H, v) for i, v in enumerate(values)], end=end)


# ------------------------------------------------------------------ what a series covers


def test_a_series_covers_one_typical_step_past_its_last_point_unless_its_end_says_otherwise() -> None:
    assert hourly(1, 2, 3).horizon == T0 + 3 * H
    # The median step, so that one odd gap does not stretch the coverage.
    irregular = IntensitySeries.from_points([(T0, 1), (T0 + H, 1), (T0 + 2 * H, 1), (T0 + 10 * H, 1)])
    assert irregular.horizon == T0 + 11 * H
    assert hourly(1, 2, 3, end=T0 + 2 * H + timedelta(minutes=30)).horizon == T0 + 2 * H + timedelta(minutes=30)
    assert IntensitySeries.from_points([(T0, 5)]).horizon == T0  # one point covers no time
    assert hourly(1, 2).covers(T0, T0 + 2 * H) and not hourly(1, 2).covers(T0 - H, T0 + H)


def test_a_window_never_claims_coverage_past_the_data() -> None:
    # Asked until T0 + 10 h, a 3-hour series' window still ends at its horizon.
    assert hourly(1, 2, 3).window(T0 + H, T0 + 10 * H).horizon == T0 + 3 * H
    assert hourly(1, 2, 3).window(T0 + H, T0 + 2 * H).horizon == T0 + 2 * H
    with pytest.raises(NoData, match="data ends at 2020-03-01T03:00:00"):
        clip(hourly(1, 2, 3), T0 + 4 * H, T0 + 6 * H, "file GB")


# ------------------------------------------------------------------ the planner


def test_no_start_whose_run_ends_past_the_horizon() -> None:
    # Covered until 06:00; the last hour is very clean. Extending it flat would pick 05:00 for a mean of
    # 10; only runs that end by 06:00 count: 04:00-06:00 (300, then 10).
    forecasts = {"GB": hourly(300, 200, 300, 300, 300, 10)}
    got = plan(PlanRequest(T0, 2 * H, T0 + 10 * H, ["GB"]), forecasts)
    assert (got.start, got.reason) == (T0 + 4 * H, REASON_FORECAST_WINDOW)
    assert got.expected_g_per_kwh == pytest.approx(155)
    assert got.baseline_g_per_kwh == pytest.approx(250)
    assert (got.horizon, got.horizon_limited) == (T0 + 6 * H, True)


def test_a_window_inside_the_forecast_is_not_limited() -> None:
    got = plan(PlanRequest(T0, 2 * H, T0 + 4 * H, ["GB"]), {"GB": hourly(300, 200, 300, 300, 300, 10)})
    assert (got.horizon, got.horizon_limited) == (T0 + 6 * H, False)


def test_nothing_covered_keeps_the_job_deferred_to_its_latest_start_without_figures() -> None:
    # A 12-hour run and a 6-hour forecast: no start can be compared with another.
    forecasts = {"GB": hourly(300, 10, 10, 10, 10, 10), "FR": hourly(50, 50, 50)}
    got = plan(PlanRequest(T0, 12 * H, T0 + 8 * H, ["GB", "FR"]), forecasts)
    assert (got.start, got.reason) == (T0 + 8 * H, REASON_BEYOND_HORIZON)
    assert (got.expected_g_per_kwh, got.baseline_g_per_kwh, got.expected_savings_percent) == (None, None, None)
    assert (got.horizon, got.horizon_limited) == (T0 + 3 * H, True)


def test_at_the_latest_start_an_uncovered_run_starts_at_once_in_the_zone_best_on_the_covered_part() -> None:
    # No slack left and no forecast covers the whole 12 h: start now; the zone is chosen on what is
    # known (GB's covered 6 h average 58, FR's 3 h 80), and no figure is reported.
    forecasts = {"FR": hourly(80, 80, 80), "GB": hourly(300, 10, 10, 10, 10, 10)}
    got = plan(PlanRequest(T0, 12 * H, T0, ["FR", "GB"]), forecasts)
    assert (got.zone, got.start, got.reason) == ("GB", T0, REASON_START_NOW)
    assert got.expected_g_per_kwh is None and got.expected_savings_percent is None
    late = plan(PlanRequest(T0 + H, 12 * H, T0, ["FR", "GB"]), forecasts)
    assert (late.start, late.reason, late.expected_g_per_kwh) == (T0 + H, REASON_DEADLINE_PASSED, None)


def test_a_covered_zone_wins_the_no_slack_choice_over_an_uncovered_one() -> None:
    # FR's forecast stops after 1 h of a 3 h run: its figure would be invented, GB's is known.
    forecasts = {"GB": hourly(200, 200, 200), "FR": hourly(10)}
    got = plan(PlanRequest(T0, 3 * H, T0, ["FR", "GB"]), forecasts)
    assert (got.zone, got.expected_g_per_kwh, got.baseline_g_per_kwh) == ("GB", 200, None)
    assert got.expected_savings_percent is None


def test_an_uncovered_baseline_gives_no_savings_figure() -> None:
    # GB (the baseline zone) has data from 01:00 only, so "at once in GB" is not covered; FR is.
    forecasts = {"GB": hourly(90, 90, 90, start=T0 + H), "FR": hourly(100, 100, 100, 100)}
    got = plan(PlanRequest(T0, H, T0 + 3 * H, ["GB", "FR"]), forecasts)
    assert (got.zone, got.start, got.expected_g_per_kwh) == ("GB", T0 + H, 90)
    assert got.baseline_g_per_kwh is None and got.expected_savings_percent is None
    assert got.horizon_limited  # starts before GB's first point were left out


def test_start_when_below_needs_a_forecast_or_reading_for_now() -> None:
    # The forecast ended an hour ago: its last value (5) says nothing about now.
    forecasts = {"GB": hourly(5, 5, end=T0 + 2 * H)}
    request = PlanRequest(T0 + 3 * H, H, T0 + 6 * H, ["GB"], start_when_below=100)
    assert plan(request, forecasts).reason == REASON_BEYOND_HORIZON
    got = plan(request, forecasts, current={"GB": 50.0})
    assert (got.start, got.reason, got.expected_g_per_kwh) == (T0 + 3 * H, REASON_START_WHEN_BELOW, None)


def _truncated(series: IntensitySeries, rng: random.Random) -> IntensitySeries:
    """A forecast of the trace that stops at a random instant (as a provider says with `end`)."""
    cut = rng.uniform(float(series.times[0]) + 3600, float(series.times[-1]))
    keep = series.times < cut
    return IntensitySeries(series.times[keep].copy(), series.values[keep].copy(), cut)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_nothing_reported_rests_on_values_past_the_horizon_and_bruteforce_agrees(seed: int) -> None:
    rng = random.Random(seed)
    full = {
        z: IntensitySeries.from_csv((DATA / f"{z.lower()}_2020_excerpt.csv").read_text(encoding="utf-8"))
        for z in ("GB", "FR")
    }
    first = max(float(s.times[0]) for s in full.values())
    limited_seen = 0
    for _ in range(40):
        forecasts = {z: _truncated(s, rng) for z, s in full.items()}
        now = from_epoch(rng.uniform(first, min(s.horizon_s for s in forecasts.values()) - 1800))
        duration = timedelta(seconds=rng.randrange(1800, 24 * 3600))
        request = PlanRequest(now, duration, now + timedelta(seconds=rng.randrange(0, 48 * 3600)), ["GB", "FR"])
        got = plan(request, forecasts)
        assert request.now <= got.start <= request.latest_start
        if got.expected_g_per_kwh is not None:
            series = forecasts[got.zone]
            assert series.covers(got.start, got.start + duration)
            assert got.expected_g_per_kwh == pytest.approx(series.mean(got.start, duration), rel=1e-9)
        else:
            assert got.reason == REASON_BEYOND_HORIZON and got.start == request.latest_start
        if got.baseline_g_per_kwh is not None:
            assert forecasts["GB"].covers(request.now, request.now + duration)
        want_limited = any(s.horizon < request.latest_start + duration for s in forecasts.values())
        assert got.horizon_limited == want_limited
        limited_seen += got.horizon_limited
        exact = plan_bruteforce(request, forecasts, timedelta(hours=2))
        assert (exact.zone, exact.reason) == (got.zone, got.reason)
        assert abs((exact.start - got.start).total_seconds()) < 1e-3
        if got.expected_g_per_kwh is not None:
            assert exact.expected_g_per_kwh == pytest.approx(got.expected_g_per_kwh, rel=1e-9)
    assert limited_seen  # the random cuts do exercise the rule


def test_a_fully_covered_request_plans_as_before_on_the_whole_window() -> None:
    # The optimum over the whole window, reached exactly at the horizon's edge, is still found.
    values = [300.0] * 10 + [10.0, 10.0]
    forecasts = {"GB": hourly(*values)}
    got = plan(PlanRequest(T0, 2 * H, T0 + 10 * H, ["GB"]), forecasts)
    assert (got.start, got.expected_g_per_kwh, got.horizon_limited) == (T0 + 10 * H, 10, False)
    assert to_epoch(got.start) + 7200 == forecasts["GB"].horizon_s
    assert np.isclose(got.expected_savings_percent or 0, 100 * 290 / 300)
