"""Negative caching and the circuit breaker: an outage costs a bounded number of requests."""

import logging
import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from greenjobs.carbon.providers import (
    AllProvidersFailed,
    BadResponse,
    CircuitOpen,
    Forecast,
    GuardedProvider,
    NoData,
    ProviderError,
    RateLimited,
    Unavailable,
    ZoneUnknown,
    build_provider,
    parse_specs,
)
from greenjobs.carbon.providers.base import copied
from greenjobs.carbon.series import IntensitySeries

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Flaky:
    """A provider that fails with `error` (None: answers) and counts its calls per zone."""

    name = "flaky"

    def __init__(self, error: ProviderError | None = None) -> None:
        self.error = error
        self.calls: list[str] = []
        self.entered = threading.Event()
        self.release: threading.Event | None = None  # when set, calls block until released

    def current(self, zone: str) -> float:
        self.calls.append(zone)
        self.entered.set()
        if self.release is not None:
            assert self.release.wait(10)
        if self.error is not None:
            raise self.error
        return 42.0

    def forecast(self, zone: str, start: datetime, end: datetime) -> Forecast:
        value = self.current(zone)
        return Forecast(zone, IntensitySeries.from_points([(start, value)], end=end), self.name, start)


def guarded(inner: Flaky, clock: Clock) -> GuardedProvider:
    return GuardedProvider(inner, clock, failures=3, cooldown=15 * S, negative_ttl=10 * S)


def test_an_outage_costs_a_bounded_number_of_calls_and_keeps_saying_why() -> None:
    clock, inner = Clock(), Flaky(Unavailable("flaky: HTTP 503: down"))
    provider = guarded(inner, clock)
    messages: set[str] = set()
    # Ten minutes of an operator asking for two zones every second: 1,200 questions.
    for _ in range(600):
        for zone in ("GB", "FR"):
            with pytest.raises(Unavailable) as err:
                provider.forecast(zone, clock.now, clock.now + timedelta(hours=6))
            messages.add(str(err.value))
        clock.now += S
    # 3 failures open the circuit (the negative cache spaces them out), then one probe per cool-down.
    assert len(inner.calls) <= 3 + 600 // 15 + 1
    assert len(inner.calls) >= 600 // 15  # and it does keep probing
    # Whatever answered (the provider, the negative cache, the open circuit), the cause is in the message.
    assert all("flaky: HTTP 503: down" in m for m in messages)
    assert any("not asked until" in m and "failures in a row" in m for m in messages)


def test_the_negative_cache_answers_a_failed_zone_again_without_a_call() -> None:
    clock, inner = Clock(), Flaky(BadResponse("flaky: malformed JSON"))
    provider = guarded(inner, clock)
    for _ in range(5):
        with pytest.raises(BadResponse, match="malformed JSON"):
            provider.current("GB")
    assert inner.calls == ["GB"]
    clock.now += 10 * S
    with pytest.raises(BadResponse):
        provider.current("GB")
    assert inner.calls == ["GB", "GB"]


@pytest.mark.parametrize("error", [ZoneUnknown("flaky: no zone XX"), NoData("flaky XX: data ends")])
def test_zone_answers_never_open_the_circuit(error: ProviderError) -> None:
    clock, inner = Clock(), Flaky()
    provider = guarded(inner, clock)
    inner.error = error
    for zone in ("XX", "YY", "ZZ", "WW"):
        with pytest.raises(type(error)):
            provider.current(zone)
    inner.error = None
    assert provider.current("GB") == 42.0  # the provider itself is fine: no circuit opened
    assert inner.calls == ["XX", "YY", "ZZ", "WW", "GB"]


def test_after_the_cooldown_one_probe_goes_out_and_a_success_closes_the_circuit() -> None:
    clock, inner = Clock(), Flaky(Unavailable("flaky: down"))
    provider = guarded(inner, clock)
    for zone in ("A", "B", "C"):
        with pytest.raises(Unavailable):
            provider.current(zone)
    with pytest.raises(CircuitOpen):
        provider.current("D")
    assert inner.calls == ["A", "B", "C"]

    # The provider is back; the cool-down passes; one caller probes while another is still refused.
    clock.now += 15 * S
    inner.error, inner.release = None, threading.Event()
    inner.entered.clear()
    probe_result: list[float] = []
    probe = threading.Thread(target=lambda: probe_result.append(provider.current("D")))
    probe.start()
    assert inner.entered.wait(10)
    with pytest.raises(CircuitOpen):
        provider.current("E")
    inner.release.set()
    probe.join(10)
    assert probe_result == [42.0]
    assert provider.current("E") == 42.0
    assert inner.calls == ["A", "B", "C", "D", "E"]


def test_a_failed_probe_opens_the_circuit_for_another_cooldown() -> None:
    clock, inner = Clock(), Flaky(Unavailable("flaky: down"))
    provider = guarded(inner, clock)
    for zone in ("A", "B", "C"):
        with pytest.raises(Unavailable):
            provider.current(zone)
    clock.now += 15 * S
    with pytest.raises(Unavailable):
        provider.current("D")  # the probe, failing
    clock.now += 14 * S
    with pytest.raises(CircuitOpen):
        provider.current("E")
    assert inner.calls == ["A", "B", "C", "D"]


def test_copied_errors_keep_their_type_message_and_fields() -> None:
    limited = RateLimited("flaky: rate limited", retry_after=30)
    again = copied(limited)
    assert isinstance(again, RateLimited) and again is not limited
    assert (str(again), again.retry_after) == ("flaky: rate limited", 30)
    failed = AllProvidersFailed("GB", {"a": "down"})
    again_all = copied(failed)
    assert isinstance(again_all, AllProvidersFailed) and again_all.errors == {"a": "down"}
    assert str(again_all) == str(failed)


def test_the_built_chain_makes_a_bounded_number_of_http_requests_during_an_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """build_provider's chain, end to end over (mocked) HTTP: ten minutes of an outage asked every second."""
    caplog.set_level(logging.WARNING, logger="greenjobs.carbon.providers.failover")
    requests: list[str] = []

    def down(request: httpx.Request) -> httpx.Response:
        requests.append(request.url.path)
        return httpx.Response(503, json={"error": {"message": "maintenance"}})

    clock = Clock()
    specs = parse_specs([{"type": "nationalgrid", "retries": 1}])
    chain = build_provider(
        specs, clock, timedelta(minutes=5), httpx.Client(transport=httpx.MockTransport(down)), sleep=lambda s: None
    )
    chain.wait_seconds = 10  # the pool answers fast here (no real network): wait for each answer
    try:
        for _ in range(600):
            with pytest.raises(ProviderError, match="HTTP 503: maintenance"):
                chain.forecast("GB", clock.now, clock.now + timedelta(hours=6))
            clock.now += S
    finally:
        chain.close()
    # Without the guard: 600 calls x 2 attempts. With it: 3 calls to open, then a probe per 15 s cool-down.
    assert len(requests) <= 2 * (3 + 600 // 15 + 1)
    # Failures answered from memory are not logged again as warnings: one per real failed call.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "failed for zone GB" in r.message]
    assert len(warnings) == len(requests) // 2
