"""Operator configuration: a YAML file (the chart's ConfigMap) with env overrides (GREENJOBS_*)."""

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from greenjobs.api.constants import NODE_ZONE_LABEL
from greenjobs.api.durations import parse_duration
from greenjobs.carbon.providers.config import FetchSettings, ProviderSpec


class OperatorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GREENJOBS_", populate_by_name=True, extra="forbid")

    zone_label: str = Field(NODE_ZONE_LABEL, alias="zoneLabel", description="Node label that names its zone.")
    zone_map: dict[str, str] = Field(
        default_factory=dict, alias="zoneMap", description="Label value -> zone, e.g. {eu-west-2: GB}."
    )
    default_zone: str | None = Field(
        None, alias="defaultZone", description="Forecast zone for jobs that list no zones."
    )
    providers: list[ProviderSpec] = Field(default_factory=list)
    forecast_cache_ttl: timedelta = Field(timedelta(minutes=5), alias="forecastCacheTTL")
    forecast_fetch: FetchSettings = Field(
        default_factory=FetchSettings,
        alias="forecastFetch",
        description="Pool, waits, negative cache and circuit breaker of forecast calls (docs/forecast-providers.md).",
    )
    replan_interval: timedelta = Field(timedelta(minutes=5), alias="replanInterval")
    power_interval: timedelta = Field(timedelta(minutes=1), alias="powerInterval")
    account_interval: timedelta = Field(
        timedelta(seconds=30), alias="accountInterval", description="How often a running job's energy is accounted."
    )
    resync_interval: timedelta = Field(
        timedelta(minutes=2),
        alias="resyncInterval",
        description=(
            "A running job's workload is read afresh when no watch event came for it this long: a watch"
            " that silently stalls (API server restarts) never leaves a finished job Running."
        ),
    )
    settle_after: timedelta = Field(
        timedelta(minutes=10),
        alias="settleAfter",
        description=(
            "How long a finished job stays watched for late energy reports before it is labelled"
            " greenjobs.dev/settled and leaves the operator's watch (and memory)."
        ),
    )
    workers: int = Field(
        4, ge=1, le=64, description="Jobs reconciled at once (one job is never reconciled twice at once)."
    )
    leader_election: bool = Field(
        False, alias="leaderElection", description="Replicas elect one active operator through a Lease."
    )
    lease_name: str = Field("greenjobs-operator", alias="leaseName")
    lease_namespace: str | None = Field(
        None, alias="leaseNamespace", description="Default: the pod's namespace (POD_NAMESPACE), else default."
    )
    lease_duration: timedelta = Field(timedelta(seconds=15), alias="leaseDuration")
    tick_seconds: float = Field(10.0, alias="tickSeconds", gt=0, description="How often each job is looked at.")
    cap_step_watts: int = Field(5, alias="capStepWatts", ge=1)
    metrics_port: int = Field(8080, alias="metricsPort")
    fleet: dict[str, Any] = Field(
        default_factory=dict,
        description="Capacity-aware fleet planning (greenjobs.planning.settings.FleetSettings); on by default.",
    )
    footprint: dict[str, Any] = Field(
        default_factory=dict,
        description="Host energy, PUE and embodied factors (greenjobs.accounting.footprint.FootprintFactors).",
    )

    @field_validator(
        "forecast_cache_ttl",
        "replan_interval",
        "power_interval",
        "account_interval",
        "lease_duration",
        "settle_after",
        "resync_interval",
        mode="before",
    )
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return parse_duration(v) if isinstance(v, str) else v


def load_config(path: str | os.PathLike[str] | None = None) -> OperatorConfig:
    """Read GREENJOBS_CONFIG (or `path`); environment variables override the file's scalar settings."""
    path = path or os.environ.get("GREENJOBS_CONFIG")
    data: dict[str, Any] = {}
    if path:
        text = Path(path).read_text()
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of settings")
    # pydantic-settings gives init kwargs priority over env; let env win for what it sets.
    env_keys = {name for name, f in OperatorConfig.model_fields.items() if f"GREENJOBS_{name.upper()}" in os.environ}
    for name in env_keys:
        alias = OperatorConfig.model_fields[name].alias or name
        data.pop(alias, None)
        data.pop(name, None)
    return OperatorConfig(**data)
