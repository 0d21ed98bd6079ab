"""Forecast providers: where carbon-intensity forecasts come from, with caching and failover.

chain = build_provider(parse_specs(config["providers"]), clock, cache_ttl=timedelta(minutes=10))
chain.forecast("GB", now, deadline)   # -> Forecast(zone, series, source, fetched_at)
"""

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
from .cache import CachingProvider
from .config import ProviderSpec, build_one, build_provider, parse_specs
from .failover import FailoverProvider

__all__ = [
    "AllProvidersFailed",
    "AuthFailed",
    "BadResponse",
    "CachingProvider",
    "FailoverProvider",
    "Forecast",
    "ForecastProvider",
    "NoData",
    "ProviderError",
    "ProviderSpec",
    "RateLimited",
    "TimedOut",
    "Unavailable",
    "ZoneUnknown",
    "build_one",
    "build_provider",
    "parse_specs",
]
