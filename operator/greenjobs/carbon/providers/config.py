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
from .base import Clock, ForecastProvider
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
) -> FailoverProvider:
    """A caching failover chain in the configured order. Pass `http` to share (or mock) the client."""
    client = http if http is not None else httpx.Client(follow_redirects=True)
    providers: list[ForecastProvider] = []
    for spec, name in zip(specs, _unique_names(specs), strict=True):
        provider = build_one(spec, name, clock, client, sleep=sleep)
        # Local sources are cheap, and a cache would only delay a ConfigMap update.
        local = isinstance(spec, FileSpec | ReplaySpec)
        providers.append(provider if local else CachingProvider(provider, cache_ttl, clock))
    return FailoverProvider(providers, on_error=on_error, on_latency=on_latency)
