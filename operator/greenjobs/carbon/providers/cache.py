"""A per-(provider, zone) cache with a TTL on the injected clock.

Forecasts are fetched for at least `horizon` ahead, so that the next request of a similar window (a
later `start`, another job's deadline) is answered from memory. A provider that said "rate limited,
retry after N s" is not called again for that zone until then: the failover chain moves on at once.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from .base import Clock, Forecast, ForecastProvider, RateLimited, clip, coverage_end


@dataclass(frozen=True)
class _Entry:
    forecast: Forecast
    start: datetime  # the window that was asked of the provider
    end: datetime


class CachingProvider:
    def __init__(
        self,
        inner: ForecastProvider,
        ttl: timedelta,
        clock: Clock,
        *,
        horizon: timedelta = timedelta(hours=48),
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.ttl = ttl
        self.clock = clock
        self.horizon = horizon
        self._forecasts: dict[str, _Entry] = {}
        self._currents: dict[str, tuple[datetime, float]] = {}
        self._blocked: dict[str, tuple[datetime, RateLimited]] = {}

    def _fresh(self, fetched_at: datetime) -> bool:
        return self.clock() - fetched_at < self.ttl

    def _check_blocked(self, zone: str) -> None:
        blocked = self._blocked.get(zone)
        if blocked is not None:
            until, error = blocked
            if self.clock() < until:
                raise error
            del self._blocked[zone]

    def _note_rate_limit(self, zone: str, error: RateLimited) -> None:
        if error.retry_after:
            self._blocked[zone] = (self.clock() + timedelta(seconds=error.retry_after), error)

    def current(self, zone: str) -> float:
        hit = self._currents.get(zone)
        if hit is not None and self._fresh(hit[0]):
            return hit[1]
        self._check_blocked(zone)
        try:
            value = self.inner.current(zone)
        except RateLimited as exc:
            self._note_rate_limit(zone, exc)
            raise
        self._currents[zone] = (self.clock(), value)
        return value

    def _covers(self, entry: _Entry, start: datetime, end: datetime) -> bool:
        if not self._fresh(entry.forecast.fetched_at) or start < entry.start:
            return False
        if end <= entry.end:
            return True
        # Asked for more than last time; if the provider stopped short then, it will now too.
        return coverage_end(entry.forecast.series) < entry.end

    def forecast(self, zone: str, start: datetime, end: datetime) -> Forecast:
        entry = self._forecasts.get(zone)
        if entry is None or not self._covers(entry, start, end):
            self._check_blocked(zone)
            ask_end = max(end, start + self.horizon)
            try:
                fetched = self.inner.forecast(zone, start, ask_end)
            except RateLimited as exc:
                self._note_rate_limit(zone, exc)
                raise
            entry = _Entry(fetched, start, ask_end)
            self._forecasts[zone] = entry
        cached = entry.forecast
        series = clip(cached.series, start, end, f"{self.name} {zone}")
        return Forecast(cached.zone, series, cached.source, cached.fetched_at)
