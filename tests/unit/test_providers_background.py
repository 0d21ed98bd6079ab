"""BackgroundProvider: callers never sit through a slow provider; the pool and the calls stay bounded.

No sleeps: the fake provider blocks on events the test releases, and the clock is a manual one.
"""

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from greenjobs.carbon.providers import BackgroundProvider, Forecast, StillLoading, Unavailable
from greenjobs.carbon.series import IntensitySeries
from tests.fakes.operator_world import T0, Clock, H

S = timedelta(seconds=1)


class Slow:
    """A provider whose calls block until `release` is set; it counts calls and their concurrency."""

    name = "slow"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[str] = []
        self.running = 0
        self.most_running = 0
        self.value = 100.0
        self.error: Exception | None = None
        self._lock = threading.Condition()

    def wait_calls(self, n: int) -> list[str]:
        """Block (boundedly) until `n` calls have reached the provider (they run in pool threads)."""
        with self._lock:
            assert self._lock.wait_for(lambda: len(self.calls) >= n, timeout=10), self.calls
            return list(self.calls)

    def _enter(self, zone: str) -> None:
        with self._lock:
            self.calls.append(zone)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self._lock.notify_all()
        try:
            assert self.release.wait(10), "never released"
            if self.error is not None:
                raise self.error
        finally:
            with self._lock:
                self.running -= 1

    def current(self, zone: str) -> float:
        self._enter(zone)
        return self.value

    def forecast(self, zone: str, start: datetime, end: datetime) -> Forecast:
        self._enter(zone)
        series = IntensitySeries.from_points([(start + i * H, self.value) for i in range(48)])
        return Forecast(zone, series.window(start, end), self.name, start)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def slow() -> Iterator[Slow]:
    inner = Slow()
    yield inner
    inner.release.set()  # never leave a pool thread blocked


def background(inner: Slow, clock: Clock, wait: float = 0.05, workers: int = 2) -> BackgroundProvider[Slow]:
    return BackgroundProvider(
        inner, clock, max_workers=workers, wait_seconds=wait, fresh=10 * S, max_stale=timedelta(minutes=15)
    )


def settle(provider: BackgroundProvider[Slow], zone: str) -> float:
    """Let the refreshes in flight land, then read `zone`'s current value (a fetch if none is known)."""
    assert provider.drain(10)
    provider.wait_seconds = 10
    return provider.current(zone)


def test_a_slow_provider_makes_callers_wait_at_most_wait_seconds(slow: Slow, clock: Clock) -> None:
    provider = background(slow, clock, wait=0.05)
    began = time.monotonic()
    with pytest.raises(StillLoading, match=r"still loading after 0\.05s"):
        provider.forecast("GB", T0, T0 + 6 * H)
    with pytest.raises(StillLoading):
        provider.current("GB")
    assert time.monotonic() - began < 5  # two bounded waits, not the provider's (endless) call
    slow.release.set()
    assert settle(provider, "GB") == 100.0
    provider.wait_seconds = 10
    assert provider.forecast("GB", T0, T0 + 6 * H).source == "slow"
    # The refresh started by the first caller was the one that answered: no second call was made.
    assert sorted(slow.calls) == ["GB", "GB"]  # one forecast, one current


def test_concurrent_callers_share_one_refresh_and_the_pool_stays_bounded(slow: Slow, clock: Clock) -> None:
    provider = background(slow, clock, wait=0.05, workers=2)
    zones = ["GB", "FR", "DE", "NL", "ES", "IT"]
    errors: list[BaseException] = []

    def ask(zone: str) -> None:
        try:
            provider.forecast(zone, T0, T0 + 6 * H)
        except StillLoading as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(z,)) for z in zones * 5]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(errors) == len(threads)  # everybody got a bounded answer
    slow.release.set()
    for zone in zones:
        provider.wait_seconds = 10
        provider.forecast(zone, T0, T0 + 6 * H)
    # 30 questions over 6 zones: one call per zone, never more than 2 at a time.
    assert sorted(slow.calls) == sorted(zones)
    assert slow.most_running <= 2


def test_fresh_answers_come_from_memory_even_while_the_pool_is_busy(slow: Slow, clock: Clock) -> None:
    provider = background(slow, clock, wait=0.05, workers=1)
    slow.release.set()
    assert settle(provider, "GB") == 100.0
    provider.wait_seconds = 10
    fc = provider.forecast("GB", T0, T0 + 6 * H)
    slow.release.clear()  # from now on the provider hangs
    provider.wait_seconds = 0.05
    with pytest.raises(StillLoading):
        provider.current("FR")  # occupies the only worker
    slow.wait_calls(3)
    began = time.monotonic()
    assert provider.current("GB") == 100.0
    assert provider.forecast("GB", T0 + S, T0 + 6 * H).series.values.tolist() == fc.series.values.tolist()
    assert time.monotonic() - began < 1
    assert slow.calls == ["GB", "GB", "FR"]


def test_an_aging_answer_is_served_at_once_while_one_refresh_runs(slow: Slow, clock: Clock) -> None:
    provider = background(slow, clock)
    slow.release.set()
    assert settle(provider, "GB") == 100.0
    slow.release.clear()
    slow.value = 80.0
    clock.now += 11 * S  # no longer fresh, still within max_stale
    provider.wait_seconds = 0.05
    assert provider.current("GB") == 100.0  # at once, though the provider hangs
    assert provider.current("GB") == 100.0  # and the refresh in flight is not duplicated
    assert slow.wait_calls(2) == ["GB", "GB"]
    slow.release.set()
    assert settle(provider, "GB") == 80.0
    clock.now += 16 * timedelta(minutes=1)  # beyond max_stale: nothing old is served any more
    slow.release.clear()
    provider.wait_seconds = 0.05
    with pytest.raises(StillLoading):
        provider.current("GB")


def test_peek_current_never_waits_and_fills_in_the_background(slow: Slow, clock: Clock) -> None:
    provider = background(slow, clock, wait=10)
    began = time.monotonic()
    assert provider.peek_current("GB") is None  # the provider hangs: no value, no wait
    assert provider.peek_current("GB") is None
    assert time.monotonic() - began < 1
    slow.release.set()
    assert settle(provider, "GB") == 100.0
    assert provider.peek_current("GB") == 100.0
    assert slow.calls == ["GB"]
    clock.now += 16 * timedelta(minutes=1)
    slow.release.clear()
    assert provider.peek_current("GB") is None  # too old to act on


def test_a_failure_reaches_every_waiter_with_its_type_and_message(slow: Slow, clock: Clock) -> None:
    provider = background(slow, clock, wait=10)
    slow.error = Unavailable("slow: HTTP 503: down")
    slow.release.set()
    with pytest.raises(Unavailable, match="HTTP 503: down"):
        provider.forecast("GB", T0, T0 + H)
    # Failures are not remembered here (the guarded providers below do that): the next call asks again.
    slow.error = None
    assert provider.forecast("GB", T0, T0 + H).source == "slow"
    assert slow.calls == ["GB", "GB"]


def test_the_forecast_window_is_clipped_to_what_was_asked(slow: Slow, clock: Clock) -> None:
    provider = background(slow, clock, wait=10)
    slow.release.set()
    fc = provider.forecast("GB", T0, T0 + 6 * H)
    assert (fc.series.start, fc.series.horizon) == (T0, T0 + 6 * H)
    # A later, shorter question is answered from the same (48 h) fetch.
    later = provider.forecast("GB", T0 + H, T0 + 30 * H)
    assert (later.series.start, later.series.horizon) == (T0 + H, T0 + 30 * H)
    assert slow.calls == ["GB"]


def test_a_hanging_provider_never_holds_the_process_up_at_exit() -> None:
    script = textwrap.dedent(
        """
        import threading
        from datetime import UTC, datetime, timedelta
        from greenjobs.carbon.providers import BackgroundProvider, StillLoading

        class Hangs:
            name = "hangs"
            def current(self, zone):
                threading.Event().wait()  # forever
            def forecast(self, zone, start, end):
                threading.Event().wait()

        now = datetime(2026, 1, 1, tzinfo=UTC)
        provider = BackgroundProvider(Hangs(), lambda: now, wait_seconds=0.01)
        try:
            provider.forecast("GB", now, now + timedelta(hours=1))
        except StillLoading:
            print("still loading")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout.strip()) == (0, "still loading"), proc.stderr
