"""Replay: trace time = anchor + (now - started) * speedup, wrapped; forecasts in real time."""

from datetime import UTC, datetime, timedelta

import pytest

from greenjobs.carbon.providers import ZoneUnknown
from greenjobs.carbon.providers.replay import ReplayProvider
from greenjobs.carbon.series import IntensitySeries

ANCHOR = datetime(2020, 1, 1, tzinfo=UTC)
STARTED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
# 24 hourly values 0..23 (the trace's value tells which trace hour is playing).
TRACE = IntensitySeries.from_points([(ANCHOR + timedelta(hours=h), float(h)) for h in range(24)])


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_real_time_replay_maps_hours_one_to_one() -> None:
    clock = Clock(STARTED + timedelta(hours=5, minutes=10))
    p = ReplayProvider({"GB": TRACE}, ANCHOR, clock, started=STARTED)
    assert p.current("GB") == 5.0
    assert p.trace_time("GB", clock()) == ANCHOR + timedelta(hours=5, minutes=10)


def test_speedup_plays_one_trace_hour_per_real_minute() -> None:
    clock = Clock(STARTED + timedelta(minutes=7, seconds=30))
    p = ReplayProvider({"GB": TRACE}, ANCHOR, clock, speedup=60, started=STARTED)
    assert p.current("GB") == 7.0
    fc = p.forecast("GB", clock(), clock() + timedelta(minutes=5))
    # Real-time coordinates: trace hours 7.5 -> 12.5 compressed into 5 real minutes.
    assert fc.series.at(clock()) == 7.0
    assert fc.series.at(STARTED + timedelta(minutes=8)) == 8.0
    assert fc.series.at(STARTED + timedelta(minutes=12, seconds=1)) == 12.0
    assert fc.series.end == pytest.approx((clock() + timedelta(minutes=5)).timestamp())
    assert fc.source == "replay"


def test_wraps_around_the_trace_end() -> None:
    clock = Clock(STARTED + timedelta(hours=24 + 3))
    p = ReplayProvider({"GB": TRACE}, ANCHOR, clock, started=STARTED)
    assert p.current("GB") == 3.0
    # A forecast across the wrap: hour 22, 23, then 0, 1 again.
    start = STARTED + timedelta(hours=22)
    fc = p.forecast("GB", start, start + timedelta(hours=4))
    assert [v for _, v in fc.series.points()] == [22.0, 23.0, 0.0, 1.0]
    assert fc.series.mean(start, timedelta(hours=4)) == pytest.approx((22 + 23 + 0 + 1) / 4)


def test_anchor_inside_the_trace_and_long_window() -> None:
    clock = Clock(STARTED)
    p = ReplayProvider({"GB": TRACE}, ANCHOR + timedelta(hours=20), clock, started=STARTED)
    fc = p.forecast("GB", STARTED, STARTED + timedelta(hours=72))
    assert len(fc.series) == 72
    assert fc.series.mean(STARTED, timedelta(hours=72)) == pytest.approx(sum(range(24)) / 24)


def test_started_defaults_to_the_clock_and_unknown_zone() -> None:
    clock = Clock(STARTED)
    p = ReplayProvider({"GB": TRACE}, ANCHOR, clock)
    clock.now = STARTED + timedelta(hours=2)
    assert p.current("GB") == 2.0
    with pytest.raises(ZoneUnknown):
        p.current("FR")
