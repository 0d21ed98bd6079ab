"""The operator config's `fleet:` section: how every path plans jobs jointly against capacity.

Both the GreenTrainingJob operator and the Kueue check read it, so it lives with the planner."""

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from greenjobs.api.durations import parse_duration

from .capacity import DEFAULT_GPU_RESOURCES
from .fleet import DEFAULT_EXACT_TIME_LIMIT_S, DEFAULT_ZONE_GAP_PERCENT, EXACT_MAX_JOBS

# Admission, scheduling and pod start (images cached): a start the plan makes holds its GPUs this much
# longer than the run, and must be made this much before the job's latest start.
DEFAULT_START_LATENCY = timedelta(seconds=10)


class FleetSettings(BaseModel):
    """The operator config's `fleet:` (capacity-aware planning), defaults safe for any cluster."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    enabled: bool = Field(True, description="Plan jobs with zones jointly against GPU capacity.")
    step: timedelta | None = Field(
        None, description="The planner's time grid; default: the forecasts' own step (at least 1 s, at most 1 h)."
    )
    horizon: timedelta = Field(timedelta(days=2), description="How far ahead forecasts are fetched at most.")
    reserve: dict[str, int] = Field(default_factory=dict, description="GPUs per zone kept for work that cannot wait.")
    gpu_resources: list[str] = Field(
        default_factory=lambda: list(DEFAULT_GPU_RESOURCES), alias="gpuResources", description="GPU resource names."
    )
    min_gain_percent: float = Field(2.0, alias="minGainPercent", description="A planned start moves only for more.")
    zone_gap_percent: float = Field(
        DEFAULT_ZONE_GAP_PERCENT,
        alias="zoneGapPercent",
        ge=0,
        le=100,
        description="A job starts earlier in its cleanest zone for up to this share of that zone's advantage "
        "(keeps the clean zone's GPUs for later arrivals; 0: the cleanest start).",
    )
    start_latency: timedelta = Field(
        DEFAULT_START_LATENCY,
        alias="startLatency",
        description="From a planned start to the workload running (admission, scheduling, pod start): each "
        "start is planned this much before the job's latest start and holds its GPUs this much longer.",
    )

    exact_time_limit: timedelta = Field(
        timedelta(seconds=DEFAULT_EXACT_TIME_LIMIT_S),
        alias="exactTimeLimit",
        description=f"Where the fast plan leaves a job late, a batch of up to {EXACT_MAX_JOBS} jobs is solved "
        "exactly (HiGHS) for at most this long per re-plan; 0s: off.",
    )

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None) -> "FleetSettings":
        raw = dict(data or {})
        for key in ("step", "horizon", "startLatency", "start_latency", "exactTimeLimit", "exact_time_limit"):
            if isinstance(raw.get(key), str):
                try:
                    raw[key] = parse_duration(raw[key])
                except ValueError as e:
                    raise ValueError(f"fleet.{key}: {e}") from None
        settings = cls.model_validate(raw)
        if settings.start_latency < timedelta(0):
            raise ValueError("fleet.startLatency must not be negative")
        if settings.exact_time_limit < timedelta(0):
            raise ValueError("fleet.exactTimeLimit must not be negative")
        return settings
