"""Try providers in the configured order; the first answer wins, every failure is recorded."""

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from .base import AllProvidersFailed, Forecast, ForecastProvider, ProviderError

log = logging.getLogger(__name__)

OnError = Callable[[str, str, str], None]  # (provider, zone, kind), e.g. to count errors in metrics
OnLatency = Callable[[str, float], None]  # (provider, seconds)
T = TypeVar("T")


class FailoverProvider:
    name = "failover"

    def __init__(
        self,
        providers: Sequence[ForecastProvider],
        *,
        on_error: OnError | None = None,
        on_latency: OnLatency | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.providers = list(providers)
        self.on_error = on_error
        self.on_latency = on_latency
        self.timer = timer

    def _first(self, zone: str, call: Callable[[ForecastProvider], T]) -> T:
        errors: dict[str, str] = {}
        for provider in self.providers:
            began = self.timer()
            try:
                result = call(provider)
            except ProviderError as exc:
                errors[provider.name] = str(exc)
                kind = exc.kind
                repeated = exc.repeated
            except Exception as exc:  # a provider bug must not hide the next provider's answer
                log.exception("%s: unexpected failure for zone %s", provider.name, zone)
                errors[provider.name] = f"internal error ({type(exc).__name__})"
                kind, repeated = "internal", False
            else:
                if self.on_latency:
                    self.on_latency(provider.name, self.timer() - began)
                return result
            if self.on_latency:
                self.on_latency(provider.name, self.timer() - began)
            if self.on_error:
                self.on_error(provider.name, zone, kind)
            # A failure answered from memory (negative cache, open circuit) was logged when it happened.
            level = logging.DEBUG if repeated else logging.WARNING
            log.log(level, "forecast provider %s failed for zone %s: %s", provider.name, zone, errors[provider.name])
        raise AllProvidersFailed(zone, errors)

    def current(self, zone: str) -> float:
        return self._first(zone, lambda p: p.current(zone))

    def forecast(self, zone: str, start: datetime, end: datetime) -> Forecast:
        return self._first(zone, lambda p: p.forecast(zone, start, end))
