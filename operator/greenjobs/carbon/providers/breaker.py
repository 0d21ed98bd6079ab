"""Negative caching and a circuit breaker per provider, so that an outage does not multiply requests.

`GuardedProvider` wraps one provider:

- **Negative cache**: a failure for a zone is answered again, without a call, for `negative_ttl`
  (the same error and message, so conditions keep saying what really failed).
- **Circuit breaker**: after `failures` provider-wide failures in a row (outages, timeouts, auth or
  malformed answers; not "no data for this zone"), the circuit opens: no call at all for `cooldown`.
  Then one caller probes (half-open) while the others are still refused; a success closes the circuit,
  a failure opens it for another `cooldown`.

Everything runs on the injected clock; the state is guarded by a lock held only around bookkeeping,
never across a call to the provider.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import TypeVar

from greenjobs.api.durations import format_time

from .base import Clock, Forecast, ForecastProvider, NoData, ProviderError, Unavailable, ZoneUnknown, copied

T = TypeVar("T")

# Answers about one zone: the provider itself works, so they never open its circuit.
_ZONE_ERRORS = (ZoneUnknown, NoData)


class CircuitOpen(Unavailable):
    kind = "circuit_open"


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"  # one probe in flight


@dataclass(frozen=True)
class _Failure:
    at: datetime
    error: ProviderError


class CircuitBreaker:
    """The state machine alone (thread-safe): ask `admit()` before a call, then report its outcome."""

    def __init__(self, clock: Clock, *, failures: int = 3, cooldown: timedelta = timedelta(seconds=15)) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        self.clock = clock
        self.failures = failures
        self.cooldown = cooldown
        self.state = State.CLOSED
        self.in_a_row = 0
        self.opened_at: datetime | None = None
        self._lock = threading.Lock()

    def admit(self) -> bool:
        """Whether a call may go out now (in HALF_OPEN, only the one probe that this call becomes)."""
        with self._lock:
            if self.state is State.CLOSED:
                return True
            if self.state is State.OPEN and self.opened_at is not None and self.clock() >= self.reopens_at():
                self.state = State.HALF_OPEN
                return True
            return False

    def reopens_at(self) -> datetime:
        assert self.opened_at is not None
        return self.opened_at + self.cooldown

    def succeeded(self) -> None:
        with self._lock:
            self.state, self.in_a_row, self.opened_at = State.CLOSED, 0, None

    def failed(self) -> None:
        with self._lock:
            self.in_a_row += 1
            if self.state is State.HALF_OPEN or self.in_a_row >= self.failures:
                self.state, self.opened_at = State.OPEN, self.clock()

    def released(self) -> None:
        """A probe ended without a verdict on the provider's health (e.g. "no data for this zone")."""
        with self._lock:
            if self.state is State.HALF_OPEN:
                self.state, self.in_a_row, self.opened_at = State.CLOSED, 0, None


class GuardedProvider:
    """One provider behind a negative cache per (call, zone) and a circuit breaker."""

    def __init__(
        self,
        inner: ForecastProvider,
        clock: Clock,
        *,
        failures: int = 3,
        cooldown: timedelta = timedelta(seconds=15),
        negative_ttl: timedelta = timedelta(seconds=10),
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.clock = clock
        self.negative_ttl = negative_ttl
        self.breaker = CircuitBreaker(clock, failures=failures, cooldown=cooldown)
        self._failed: dict[tuple[str, str], _Failure] = {}  # (call, zone) -> last failure
        self._lock = threading.Lock()

    def current(self, zone: str) -> float:
        return self._call("current", zone, lambda: self.inner.current(zone))

    def forecast(self, zone: str, start: datetime, end: datetime) -> Forecast:
        return self._call("forecast", zone, lambda: self.inner.forecast(zone, start, end))

    def _call(self, call: str, zone: str, fn: Callable[[], T]) -> T:
        key = (call, zone)
        with self._lock:
            last = self._failed.get(key)
        if last is not None and self.clock() - last.at < self.negative_ttl:
            raise copied(last.error)
        if not self.breaker.admit():
            raise self._open_error(last)
        try:
            result = fn()
        except _ZONE_ERRORS as exc:
            self.breaker.released()
            self._remember(key, exc)
            raise
        except ProviderError as exc:
            self.breaker.failed()
            self._remember(key, exc)
            raise
        except Exception:
            self.breaker.failed()  # a provider bug is a failure too (the failover chain logs it)
            raise
        self.breaker.succeeded()
        with self._lock:
            self._failed.pop(key, None)
        return result

    def _remember(self, key: tuple[str, str], error: ProviderError) -> None:
        with self._lock:
            self._failed[key] = _Failure(self.clock(), error)

    def _open_error(self, last: _Failure | None) -> CircuitOpen:
        # The zone's own last error says best what is wrong; keep its text whole (conditions show it).
        when = self.breaker.opened_at + self.breaker.cooldown if self.breaker.opened_at else self.clock()
        why = f"; last error: {last.error}" if last is not None else ""
        error = CircuitOpen(
            f"{self.name}: not asked until {format_time(when)} after {self.breaker.in_a_row} failures in a row{why}"
        )
        error.repeated = True  # no request failed just now
        return error
