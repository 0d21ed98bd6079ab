"""Provider configuration (the operator config's `providers:` list) and the chain built from it.

Each entry is one provider, discriminated on `type`; fields are camelCase in YAML. Credentials are
never inline: the spec names files (a Kubernetes Secret mounted by the chart) that are read on use.
"""

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.alias_generators import to_camel

from . import electricitymaps, nationalgrid, watttime
from .background import BackgroundProvider
from .base import Clock, ForecastProvider
from .breaker import GuardedProvider
from .cache import CachingProvider
from .carbonaware import CarbonAwareProvider
from .electricitymaps import ElectricityMapsProvider
from .failover import FailoverProvider, OnError, OnLatency
from .files import FileProvider
from .http import HttpFetcher
from .nationalgrid import NationalGridProvider
from .replay import ReplayProvider
from .secrets import SecretFile
from .watttime import WattTimeProvider


class _Spec(BaseModel):
    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel), populate_by_name=True, extra="forbid", frozen=True
    )

    name: str | None = Field(default=None, description="Name in status and metrics; default: the type.")
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    retries: int = Field(default=2, ge=0, le=10)
    zones: dict[str, str] = Field(default_factory=dict, description="Our zone -> the provider's name for it.")


class FileSpec(_Spec):
    type: Literal["file"]
    path: Path = Field(description="A directory of <ZONE>.csv|.json (e.g. a mounted ConfigMap), or one file.")
    zone: str | None = Field(default=None, description="The zone a single file serves; default: its stem.")


class ReplaySpec(_Spec):
    type: Literal["replay"]
    traces: dict[str, Path] = Field(min_length=1, description="Zone -> historical trace file.")
    anchor: datetime = Field(description="The trace instant that plays at `started`.")
    speedup: float = Field(default=1.0, gt=0)
    started: datetime | None = Field(default=None, description="Real start of the replay; default: now.")


class NationalGridSpec(_Spec):
    type: Literal["nationalgrid"]
    url: str = nationalgrid.DEFAULT_URL


class ElectricityMapsSpec(_Spec):
    type: Literal["electricitymaps"]
    api_key_file: Path
    url: str = electricitymaps.DEFAULT_URL


class WattTimeSpec(_Spec):
    type: Literal["watttime"]
    username_file: Path
    password_file: Path
    url: str = watttime.DEFAULT_URL
    signal_type: str = "co2_moer"


class CarbonAwareSpec(_Spec):
    type: Literal["carbonaware"]
    url: str = Field(description="The SDK WebAPI, e.g. http://carbon-aware-api:8080.")


class FetchSettings(BaseModel):
    """How forecasts are fetched (the operator config's `forecastFetch:`); the defaults are safe.

    docs/forecast-providers.md explains each one.
    """

    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel), populate_by_name=True, extra="forbid", frozen=True
    )

    wait_seconds: float = Field(default=3.0, ge=0, le=60, description="Longest a caller waits for a refresh.")
    workers: int = Field(default=2, ge=1, le=16, description="Threads that call providers (bounded pool).")
    fresh_seconds: float = Field(default=10.0, ge=0, le=3600, description="Answers this young are reused as is.")
    max_stale_seconds: float = Field(
        default=900.0, ge=0, le=86400, description="Older answers up to this age are served while refreshed."
    )
    breaker_failures: int = Field(default=3, ge=1, le=100, description="Failures in a row that open a circuit.")
    breaker_cooldown_seconds: float = Field(default=15.0, gt=0, le=3600, description="How long it stays open.")
    negative_cache_seconds: float = Field(default=10.0, ge=0, le=3600, description="A failure is reused this long.")


ProviderSpec = Annotated[
    FileSpec | ReplaySpec | NationalGridSpec | ElectricityMapsSpec | WattTimeSpec | CarbonAwareSpec,
    Field(discriminator="type"),
]
_SPECS: TypeAdapter[list[ProviderSpec]] = TypeAdapter(list[ProviderSpec])


def parse_specs(data: Any) -> list[ProviderSpec]:
    """Validate the `providers:` list (pydantic ValidationError names the bad entry and field)."""
    return _SPECS.validate_python(data)


def _unique_names(specs: Sequence[ProviderSpec]) -> list[str]:
    names: list[str] = []
    for spec in specs:
        base = spec.name or spec.type
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def build_one(
    spec: ProviderSpec,
    name: str,
    clock: Clock,
    http: httpx.Client,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> ForecastProvider:
    """One provider (no cache) from its spec."""

    def fetcher() -> HttpFetcher:
        return HttpFetcher(http, name, timeout_s=spec.timeout_seconds, retries=spec.retries, sleep=sleep, clock=clock)

    match spec:
        case FileSpec():
            return FileProvider(spec.path, clock, zone=spec.zone, zones=spec.zones, name=name)
        case ReplaySpec():
            return ReplayProvider(
                spec.traces, spec.anchor, clock, speedup=spec.speedup, started=spec.started, name=name
            )
        case NationalGridSpec():
            return NationalGridProvider(fetcher(), clock, url=spec.url, zones=spec.zones, name=name)
        case ElectricityMapsSpec():
            key = SecretFile(spec.api_key_file, f"{name} API key")
            return ElectricityMapsProvider(fetcher(), clock, key, url=spec.url, zones=spec.zones, name=name)
        case WattTimeSpec():
            user = SecretFile(spec.username_file, f"{name} username")
            password = SecretFile(spec.password_file, f"{name} password")
            return WattTimeProvider(
                fetcher(), clock, user, password,
                url=spec.url, zones=spec.zones, signal_type=spec.signal_type, name=name,
            )  # fmt: skip
        case CarbonAwareSpec():
            return CarbonAwareProvider(fetcher(), clock, url=spec.url, zones=spec.zones, name=name)
    raise TypeError(f"unknown provider spec {type(spec).__name__}")


def build_provider(
    specs: Sequence[ProviderSpec],
    clock: Callable[[], datetime],
    cache_ttl: timedelta,
    http: httpx.Client | None = None,
    *,
    on_error: OnError | None = None,
    on_latency: OnLatency | None = None,
    sleep: Callable[[float], None] = time.sleep,
    fetch: FetchSettings | None = None,
) -> BackgroundProvider[FailoverProvider]:
    """The chain in the configured order, behind a non-blocking front. Pass `http` to share (or mock)
    the client.

    Remote providers are each guarded (negative cache, circuit breaker) and cached; local sources (file,
    replay) are neither: they are cheap, and a cache would only delay a ConfigMap update. The failover
    chain then runs in BackgroundProvider's bounded pool, so callers wait at most `wait_seconds`.
    """
    settings = fetch or FetchSettings()
    client = http if http is not None else httpx.Client(follow_redirects=True)
    providers: list[ForecastProvider] = []
    for spec, name in zip(specs, _unique_names(specs), strict=True):
        provider = build_one(spec, name, clock, client, sleep=sleep)
        if not isinstance(spec, FileSpec | ReplaySpec):
            guarded = GuardedProvider(
                provider,
                clock,
                failures=settings.breaker_failures,
                cooldown=timedelta(seconds=settings.breaker_cooldown_seconds),
                negative_ttl=timedelta(seconds=settings.negative_cache_seconds),
            )
            provider = CachingProvider(guarded, cache_ttl, clock)
        providers.append(provider)
    chain = FailoverProvider(providers, on_error=on_error, on_latency=on_latency)
    return BackgroundProvider(
        chain,
        clock,
        max_workers=settings.workers,
        wait_seconds=settings.wait_seconds,
        fresh=timedelta(seconds=settings.fresh_seconds),
        max_stale=timedelta(seconds=settings.max_stale_seconds),
    )
