"""A non-blocking front for a provider chain: kopf's workers never sit through retries and backoff.

Provider calls (HTTP with retries, backoff, timeouts) run in a small, BOUNDED thread pool. A caller:

- gets a fresh answer (younger than `fresh`) at once, from memory;
- gets an older one that still covers its request (younger than `max_stale`) at once too, while one
  refresh runs in the pool (stale-while-revalidate: a forecast minutes old is still a good forecast);
- otherwise waits for the refresh at most `wait_seconds`, then gets ProviderError("... still
  loading"): the operator falls back to its latest-start rule and re-plans later, by when the refresh
  has landed.

At most one refresh per (call, zone) is in flight: concurrent callers share it, so the pool's queue is
bounded by the number of zones. `peek_current` never waits at all (the operator uses it when a job
starts, so that a slow provider never delays a start).
"""

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from .base import Clock, Forecast, ForecastProvider, ProviderError, clip, copied

log = logging.getLogger(__name__)

P = TypeVar("P", bound=ForecastProvider)
T = TypeVar("T")


class StillLoading(ProviderError):
    kind = "still_loading"


class _DaemonPool:
    """A fixed pool of daemon threads: a provider call hanging at exit never holds the process up
    (ThreadPoolExecutor joins its threads at interpreter exit)."""

    def __init__(self, workers: int, name: str) -> None:
        self._tasks: queue.SimpleQueue[tuple[Future[object], Callable[[], object]] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[[], object]) -> Future[object]:
        future: Future[object] = Future()
        self._tasks.put((future, fn))
        return future

    def shutdown(self) -> None:
        for _ in self._threads:
            self._tasks.put(None)

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            future, fn = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)


@dataclass(frozen=True)
class _Forecast:
    forecast: Forecast
    start: datetime  # the window asked of the provider
    end: datetime
    stored_at: datetime


class BackgroundProvider(Generic[P]):
    """The ForecastProvider protocol over `inner`, plus `peek_current`; `close()` stops the pool."""

    def __init__(
        self,
        inner: P,
        clock: Clock,
        *,
        max_workers: int = 2,
        wait_seconds: float = 3.0,
        fresh: timedelta = timedelta(seconds=10),
        max_stale: timedelta = timedelta(minutes=15),
        horizon: timedelta = timedelta(hours=48),
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.inner = inner
        self.name = inner.name
        self.clock = clock
        self.wait_seconds = wait_seconds
        self.fresh = fresh
        self.max_stale = max(max_stale, fresh)
        self.horizon = horizon
        self._pool = _DaemonPool(max_workers, "greenjobs-forecast")
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, str], Future[object]] = {}
        self._forecasts: dict[str, _Forecast] = {}
        self._currents: dict[str, tuple[datetime, float]] = {}

    # ------------------------------------------------------------ the protocol

    def forecast(self, zone: str, start: datetime, end: datetime) -> Forecast:
        entry = self._forecasts.get(zone)
        if entry is not None and self._covers(entry, start, end):
            age = self.clock() - entry.stored_at
            if age < self.fresh:
                return self._clipped(entry, zone, start, end)
            if age < self.max_stale:
                self._refresh_forecast(zone, start, end)
                return self._clipped(entry, zone, start, end)
        got = self._wait(self._refresh_forecast(zone, start, end), f"forecast for zone {zone}")
        assert isinstance(got, _Forecast)
        return self._clipped(got, zone, start, end)

    def current(self, zone: str) -> float:
        hit = self._currents.get(zone)
        if hit is not None:
            age = self.clock() - hit[0]
            if age < self.fresh:
                return hit[1]
            if age < self.max_stale:
                self._refresh_current(zone)
                return hit[1]
        got = self._wait(self._refresh_current(zone), f"current intensity for zone {zone}")
        assert isinstance(got, float)
        return got

    def peek_current(self, zone: str) -> float | None:
        """The latest known intensity of `zone` (at most `max_stale` old), or None; never waits.

        A missing or aging value is refreshed in the background for the next call.
        """
        hit = self._currents.get(zone)
        age = None if hit is None else self.clock() - hit[0]
        if age is None or age >= self.fresh:
            self._refresh_current(zone)
        return hit[1] if hit is not None and age is not None and age < self.max_stale else None

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the refreshes in flight; whether they all ended (tests, shutdown)."""
        with self._lock:
            running = list(self._inflight.values())
        _, pending = wait(running, timeout=timeout)
        return not pending

    def close(self) -> None:
        """Stop the pool's threads once the refreshes already queued are done (never waits)."""
        self._pool.shutdown()

    # ------------------------------------------------------------ refreshes

    def _refresh_forecast(self, zone: str, start: datetime, end: datetime) -> Future[object]:
        ask_end = max(end, start + self.horizon)

        def fetch() -> _Forecast:
            fetched = self.inner.forecast(zone, start, ask_end)
            entry = _Forecast(fetched, start, ask_end, self.clock())
            self._forecasts[zone] = entry
            return entry

        return self._submit(("forecast", zone), fetch)

    def _refresh_current(self, zone: str) -> Future[object]:
        def fetch() -> float:
            value = float(self.inner.current(zone))
            self._currents[zone] = (self.clock(), value)
            return value

        return self._submit(("current", zone), fetch)

    def _submit(self, key: tuple[str, str], fn: Callable[[], object]) -> Future[object]:
        """The refresh in flight for `key`, or a new one (one per key, so the queue stays bounded)."""
        with self._lock:
            running = self._inflight.get(key)
            if running is not None and not running.done():
                return running

            def run() -> object:
                try:
                    return fn()
                finally:
                    with self._lock:
                        if self._inflight.get(key) is future:
                            del self._inflight[key]

            future: Future[object] = self._pool.submit(run)
            self._inflight[key] = future
            return future

    def _wait(self, future: Future[object], what: str) -> object:
        try:
            return future.result(timeout=self.wait_seconds)
        except FutureTimeout:
            raise StillLoading(
                f"{what} still loading after {self.wait_seconds:g}s (slow providers); it goes on in the background"
            ) from None
        except ProviderError as exc:
            raise copied(exc) from None  # every waiter raises its own copy of the shared failure
        except Exception as exc:
            log.exception("forecast refresh for %s failed unexpectedly", what)
            raise ProviderError(f"{what}: internal error ({type(exc).__name__})") from None

    # ------------------------------------------------------------ helpers

    def _covers(self, entry: _Forecast, start: datetime, end: datetime) -> bool:
        if start < entry.start:
            return False
        # Asked for more than last time: only when the provider stopped short then (it will again).
        return end <= entry.end or entry.forecast.series.horizon < entry.end

    def _clipped(self, entry: _Forecast, zone: str, start: datetime, end: datetime) -> Forecast:
        cached = entry.forecast
        series = clip(cached.series, start, end, f"{cached.source} {zone}")
        return Forecast(cached.zone, series, cached.source, cached.fetched_at)
