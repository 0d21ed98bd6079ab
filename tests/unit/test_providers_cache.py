"""Cache per (provider, zone) with a TTL on the injected clock; rate-limit back-off."""

from datetime import UTC, datetime, timedelta

import pytest

from greenjobs.carbon.providers import CachingProvider, Forecast, RateLimited
from greenjobs.carbon.series import IntensitySeries

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Counting:
    name = "counting"

    def __init__(self, clock: Clock, coverage: timedelta | None = None) -> None:
        self.clock = clock
        self.coverage = coverage
        self.calls: list[tuple[str, datetime, datetime]] = []
        self.fail: RateLimited | None = None

    def current(self, zone: str) -> float:
        self.calls.append((zone, self.clock(), self.clock()))
        if self.fail:
            raise self.fail
        return float(len(self.calls))

    def forecast(self, zone: str, start: datetime, end: datetime) -> Forecast:
        self.calls.append((zone, start, end))
        if self.fail:
            raise self.fail
        stop = min(end, start + self.coverage) if self.coverage else end
        points = [(start + timedelta(hours=h), float(h)) for h in range(int((stop - start) / timedelta(hours=1)))]
        return Forecast(zone, IntensitySeries.from_points(points, end=stop), self.name, self.clock())


def test_current_is_cached_per_zone_until_the_ttl() -> None:
    clock = Clock()
    inner = Counting(clock)
    cache = CachingProvider(inner, timedelta(minutes=10), clock)
    assert cache.current("GB") == cache.current("GB") == 1.0
    assert cache.current("FR") == 2.0
    clock.now += timedelta(minutes=10)
    assert cache.current("GB") == 3.0


def test_forecast_hit_for_a_later_window_within_the_horizon() -> None:
    clock = Clock()
    inner = Counting(clock)
    cache = CachingProvider(inner, timedelta(minutes=15), clock, horizon=timedelta(hours=48))
    first = cache.forecast("GB", T0, T0 + timedelta(hours=6))
    assert inner.calls == [("GB", T0, T0 + timedelta(hours=48))]  # fetched for the whole horizon
    assert first.series.end == (T0 + timedelta(hours=6)).timestamp()  # but answered for the window
    clock.now += timedelta(minutes=5)
    later = cache.forecast("GB", clock.now, clock.now + timedelta(hours=24))
    assert len(inner.calls) == 1
    assert later.series.start == clock.now and later.fetched_at == T0
    clock.now += timedelta(minutes=11)  # past the TTL
    cache.forecast("GB", clock.now, clock.now + timedelta(hours=1))
    assert len(inner.calls) == 2


def test_window_beyond_the_cached_one_refetches_unless_the_provider_stopped_short() -> None:
    clock = Clock()
    inner = Counting(clock)
    cache = CachingProvider(inner, timedelta(minutes=15), clock, horizon=timedelta(hours=1))
    cache.forecast("GB", T0, T0 + timedelta(hours=2))
    cache.forecast("GB", T0, T0 + timedelta(hours=30))
    assert len(inner.calls) == 2
    short = Counting(clock, coverage=timedelta(hours=48))
    cache = CachingProvider(short, timedelta(minutes=15), clock)
    cache.forecast("GB", T0, T0 + timedelta(days=4))
    fc = cache.forecast("GB", T0, T0 + timedelta(days=5))  # the provider can't give more anyway
    assert len(short.calls) == 1
    assert fc.series.end == (T0 + timedelta(hours=48)).timestamp()


def test_rate_limited_provider_is_not_called_until_retry_after() -> None:
    clock = Clock()
    inner = Counting(clock)
    inner.fail = RateLimited("counting: rate limited (HTTP 429)", retry_after=120)
    cache = CachingProvider(inner, timedelta(minutes=15), clock)
    for _ in range(3):
        with pytest.raises(RateLimited):
            cache.forecast("GB", T0, T0 + timedelta(hours=1))
    assert len(inner.calls) == 1
    inner.fail = None
    clock.now += timedelta(seconds=121)
    cache.forecast("GB", clock.now, clock.now + timedelta(hours=1))
    assert len(inner.calls) == 2
