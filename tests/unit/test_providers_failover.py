"""Failover order, per-provider error/latency callbacks, AllProvidersFailed with every reason."""

from datetime import UTC, datetime, timedelta

import pytest

from greenjobs.carbon.providers import (
    AllProvidersFailed,
    FailoverProvider,
    Forecast,
    TimedOut,
    ZoneUnknown,
)
from greenjobs.carbon.series import IntensitySeries

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


class Stub:
    def __init__(self, name: str, value: float | None = None, error: Exception | None = None) -> None:
        self.name = name
        self.value = value
        self.error = error
        self.calls = 0

    def current(self, zone: str) -> float:
        self.calls += 1
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value

    def forecast(self, zone: str, start: datetime, end: datetime) -> Forecast:
        value = self.current(zone)
        return Forecast(zone, IntensitySeries.from_points([(start, value)], end=end), self.name, NOW)


def test_first_fails_second_answers_third_untouched() -> None:
    errors: list[tuple[str, str, str]] = []
    latencies: list[str] = []
    first = Stub("electricitymaps", error=ZoneUnknown("electricitymaps: zone XX not available"))
    second, third = Stub("nationalgrid", 120.0), Stub("file", 999.0)
    chain = FailoverProvider(
        [first, second, third],
        on_error=lambda p, z, k: errors.append((p, z, k)),
        on_latency=lambda p, s: latencies.append(p),
    )
    fc = chain.forecast("GB", NOW, NOW + timedelta(hours=1))
    assert fc.source == "nationalgrid" and fc.series.at(NOW) == 120.0
    assert chain.current("GB") == 120.0
    assert errors == [("electricitymaps", "GB", "zone_unknown")] * 2
    assert latencies == ["electricitymaps", "nationalgrid"] * 2
    assert third.calls == 0


def test_all_fail_lists_each_reason_in_order() -> None:
    chain = FailoverProvider(
        [
            Stub("watttime", error=TimedOut("watttime: request timed out after 10s")),
            Stub("file", error=ZoneUnknown("file: no FR.csv or FR.json in /etc/greenjobs/forecasts")),
            Stub("buggy", error=KeyError("oops")),
        ]
    )
    with pytest.raises(AllProvidersFailed) as err:
        chain.forecast("FR", NOW, NOW + timedelta(hours=1))
    assert list(err.value.errors) == ["watttime", "file", "buggy"]
    assert err.value.errors["watttime"] == "watttime: request timed out after 10s"
    assert err.value.errors["buggy"] == "internal error (KeyError)"
    assert str(err.value).startswith("no forecast for zone FR: watttime: request timed out")
    assert "file: no FR.csv" in str(err.value)


def test_latency_is_measured_with_the_injected_timer() -> None:
    ticks = iter([10.0, 10.25, 20.0, 20.5])
    seen: list[tuple[str, float]] = []
    chain = FailoverProvider(
        [Stub("a", error=TimedOut("a: timed out")), Stub("b", 1.0)],
        on_latency=lambda p, s: seen.append((p, s)),
        timer=lambda: next(ticks),
    )
    chain.current("GB")
    assert seen == [("a", 0.25), ("b", 0.5)]
