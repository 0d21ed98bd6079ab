"""Forecast providers: where carbon-intensity forecasts come from, with caching and failover.

chain = build_provider(parse_specs(config["providers"]), clock, cache_ttl=timedelta(minutes=10))
chain.forecast("GB", now, deadline)   # -> Forecast(zone, series, source, fetched_at); waits <= wait_seconds
chain.peek_current("GB")              # -> float | None, never waits
"""

from .background import BackgroundProvider, StillLoading
from .base import (
    AllProvidersFailed,
    AuthFailed,
    BadResponse,
    Forecast,
    ForecastProvider,
    NoData,
    ProviderError,
    RateLimited,
    TimedOut,
    Unavailable,
    ZoneUnknown,
)
from .breaker import CircuitOpen, GuardedProvider
from .cache import CachingProvider
from .config import FetchSettings, ProviderSpec, build_one, build_provider, parse_specs
from .failover import FailoverProvider

__all__ = [
    "AllProvidersFailed",
    "AuthFailed",
    "BackgroundProvider",
    "BadResponse",
    "CachingProvider",
    "CircuitOpen",
    "FailoverProvider",
    "FetchSettings",
    "Forecast",
    "ForecastProvider",
    "GuardedProvider",
    "NoData",
    "ProviderError",
    "ProviderSpec",
    "RateLimited",
    "StillLoading",
    "TimedOut",
    "Unavailable",
    "ZoneUnknown",
    "build_one",
    "build_provider",
    "parse_specs",
]
