"""Pydantic models of the GreenTrainingJob spec and status: the single source of truth of the CRD.

`crds/greentrainingjobs.yaml` is generated from these models (greenjobs.api.crd); cross-field rules
are CEL `x-kubernetes-validations` so that the API server refuses bad manifests at `kubectl apply`.
"""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, PlainSerializer, field_validator, model_validator
from pydantic.alias_generators import to_camel

from .durations import DURATION_PATTERN, MAX_DURATION_SECONDS, MAX_DURATION_TEXT, format_time, parse_duration

# Times in status are written as Kubernetes writes them: RFC 3339 UTC, to the second.
Time = Annotated[datetime, PlainSerializer(format_time, return_type=str, when_used="json")]

PowerPolicy = Literal["None", "Static", "CarbonAware", "DeadlinePaced"]
BudgetAction = Literal["Warn", "Suspend"]
PhaseName = Literal["Pending", "Deferred", "Running", "Succeeded", "Failed", "Suspended", "Paused"]

ZONE_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"


def _cel(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> Any:
    out: dict[str, str] = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel),
        populate_by_name=True,
        extra="ignore",
    )

    def dump(self) -> dict[str, Any]:
        """The JSON form as stored in the API server: camelCase, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _duration_field(description: str) -> Any:
    return Field(default=None, description=description, pattern=DURATION_PATTERN, max_length=32)


def _cel_seconds(field: str) -> str:
    """CEL: a duration string of ours (Go style or ISO 8601, already checked by DURATION_PATTERN) in
    seconds. Lower-cased, both grammars are numbers with a unit: ISO's M after T is minutes (the pattern
    allows no months), W weeks, D days. RE2's leftmost-first alternation reads `90ms` as milliseconds."""
    unit = "(t.endsWith('w') ? 604800.0 : t.endsWith('d') ? 86400.0 : t.endsWith('h') ? 3600.0"
    unit += " : t.endsWith('m') ? 60.0 : 1.0)"
    return (
        f"self.{field}.lowerAscii().findAll('[0-9.]+(ms|s|m|h|d|w)').map(t, t.endsWith('ms')"
        f" ? double(t.substring(0, t.size() - 2)) / 1000.0 : double(t.substring(0, t.size() - 1)) * {unit}).sum()"
    )


def _cel_at_most_max_duration(field: str) -> Any:
    return _cel(
        f"!has(self.{field}) || {_cel_seconds(field)} <= {MAX_DURATION_SECONDS}.0",
        f"{field} must be at most {MAX_DURATION_TEXT}",
        f".{field}",
        "FieldValueInvalid",
    )


# Deadlines outside these years are typos (and would overflow time arithmetic near year 1 or 9999).
DEADLINE_MIN = datetime(1970, 1, 1, tzinfo=UTC)
DEADLINE_MAX = datetime(9000, 1, 1, tzinfo=UTC)


class Timing(_Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!(has(self.deadline) && has(self.maxDelay))",
                    "deadline and maxDelay are mutually exclusive: set one of them",
                    ".maxDelay",
                    "FieldValueForbidden",
                ),
                _cel(
                    "!(has(self.deadline) || has(self.maxDelay)) || has(self.estimatedDuration)",
                    "estimatedDuration is required when deadline or maxDelay lets the job be shifted",
                    ".estimatedDuration",
                    "FieldValueRequired",
                ),
                # A duration is zero exactly when it has no non-zero digit (0s, 0.0h, PT0S, P0D).
                _cel(
                    "!has(self.estimatedDuration) || self.estimatedDuration.matches('[1-9]')",
                    "estimatedDuration must be greater than zero",
                    ".estimatedDuration",
                    "FieldValueInvalid",
                ),
                _cel_at_most_max_duration("estimatedDuration"),
                _cel_at_most_max_duration("maxDelay"),
                _cel(
                    f"!has(self.deadline) || (self.deadline >= timestamp('{format_time(DEADLINE_MIN)}')"
                    f" && self.deadline < timestamp('{format_time(DEADLINE_MAX)}'))",
                    f"deadline must be between {DEADLINE_MIN.year} and {DEADLINE_MAX.year}",
                    ".deadline",
                    "FieldValueInvalid",
                ),
            ]
        }
    )

    estimated_duration: str | None = _duration_field(
        "Expected run time of the Job, e.g. 6h, 90m, 1h30m or PT6H. Required when the job may be shifted."
    )
    deadline: datetime | None = Field(
        default=None,
        description="Latest COMPLETION time (RFC 3339 UTC). Mutually exclusive with maxDelay.",
    )
    max_delay: str | None = _duration_field(
        "Latest START = creationTimestamp + maxDelay, e.g. 12h. Mutually exclusive with deadline."
    )
    start_when_below: float | None = Field(
        default=None,
        ge=0,
        alias="startWhenBelow",
        description="gCO2e/kWh: start at once when the chosen zone is at least this clean now.",
    )

    @field_validator("estimated_duration", "max_delay")
    @classmethod
    def _parses(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("deadline")
    @classmethod
    def _plausible(cls, v: datetime | None) -> datetime | None:
        # Compared as aware datetimes, never converted: converting year 1 +05:00 to UTC would overflow.
        if v is not None and not DEADLINE_MIN <= (v if v.tzinfo else v.replace(tzinfo=UTC)) < DEADLINE_MAX:
            raise ValueError(f"deadline must be between {DEADLINE_MIN.year} and {DEADLINE_MAX.year}")
        return v

    @field_validator("estimated_duration")
    @classmethod
    def _positive(cls, v: str | None) -> str | None:
        if v is not None and parse_duration(v) <= timedelta(0):
            raise ValueError("estimatedDuration must be greater than zero")
        return v

    def duration(self) -> timedelta | None:
        return parse_duration(self.estimated_duration) if self.estimated_duration else None


class Placement(_Model):
    zones: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Candidate grid zones (node label greenjobs.dev/grid-zone). Empty: any node, no spatial choice.",
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            "items": {"type": "string", "pattern": ZONE_PATTERN, "maxLength": 63},
        },
    )


class Power(_Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.policy != 'Static' || has(self.capWatts)",
                    "capWatts is required when policy is Static",
                    ".capWatts",
                    "FieldValueRequired",
                ),
                _cel(
                    "self.policy != 'CarbonAware' || (has(self.minCapWatts) && has(self.maxCapWatts))",
                    "minCapWatts and maxCapWatts are required when policy is CarbonAware",
                    ".minCapWatts",
                    "FieldValueRequired",
                ),
                _cel(
                    "self.policy != 'DeadlinePaced' || (has(self.minCapWatts) && has(self.maxCapWatts))",
                    "minCapWatts and maxCapWatts are required when policy is DeadlinePaced",
                    ".minCapWatts",
                    "FieldValueRequired",
                ),
                _cel(
                    "!has(self.minCapWatts) || !has(self.maxCapWatts) || self.minCapWatts <= self.maxCapWatts",
                    "minCapWatts must be less than or equal to maxCapWatts",
                    ".minCapWatts",
                    "FieldValueInvalid",
                ),
                _cel(
                    "self.lowGPerKWh < self.highGPerKWh",
                    "lowGPerKWh must be less than highGPerKWh",
                    ".lowGPerKWh",
                    "FieldValueInvalid",
                ),
            ]
        }
    )

    policy: PowerPolicy = Field(
        default="None",
        description="None: leave GPU limits alone. Static: cap every GPU at capWatts. "
        "CarbonAware: minCapWatts at or above highGPerKWh, maxCapWatts at or below lowGPerKWh, linear between. "
        "DeadlinePaced: a cap in [minCapWatts, maxCapWatts] per interval of the job's whole-run plan, lowest "
        "where the grid is dirtiest, so that the work still ends by the deadline (needs timing.deadline or "
        "maxDelay; estimatedDuration is the run time at maxCapWatts).",
    )
    cap_watts: int | None = Field(default=None, ge=1, le=5000, description="Static: per-GPU power cap in watts.")
    min_cap_watts: int | None = Field(
        default=None,
        ge=1,
        le=5000,
        description="CarbonAware: per-GPU cap when the grid is at or above highGPerKWh. DeadlinePaced: the lowest"
        " cap the plan may choose.",
    )
    max_cap_watts: int | None = Field(
        default=None,
        ge=1,
        le=5000,
        description="CarbonAware: per-GPU cap when the grid is at or below lowGPerKWh. DeadlinePaced: the highest"
        " cap, at which the job runs in estimatedDuration.",
    )
    low_g_per_k_wh: float = Field(
        default=100.0, ge=0, alias="lowGPerKWh", description="CarbonAware: clean threshold, gCO2e/kWh."
    )
    high_g_per_k_wh: float = Field(
        default=300.0, ge=0, alias="highGPerKWh", description="CarbonAware: dirty threshold, gCO2e/kWh."
    )


class Interruption(_Model):
    """Whether and how the job may be paused at a checkpoint and resumed (its whole-run plan)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.resumable || !(has(self.checkpointGracePeriod) || has(self.resumeOverhead)"
                    " || has(self.minRunDuration) || has(self.maxInterruptions))",
                    "checkpointGracePeriod, resumeOverhead, minRunDuration and maxInterruptions apply only when"
                    " resumable is true",
                    ".resumable",
                    "FieldValueInvalid",
                ),
                _cel_at_most_max_duration("checkpointGracePeriod"),
                _cel_at_most_max_duration("resumeOverhead"),
                _cel_at_most_max_duration("minRunDuration"),
            ]
        }
    )

    resumable: bool = Field(
        default=False,
        description="The workload resumes from its latest checkpoint when its pods are restarted: greenjobs may"
        " pause it (suspend it, which deletes its pods) in dirty hours and resume it later, before the deadline."
        " False (the default): never paused.",
    )
    checkpoint_grace_period: str | None = _duration_field(
        "How long the workload needs to save a checkpoint after SIGTERM, e.g. 2m: its pods'"
        " terminationGracePeriodSeconds is raised to at least this."
    )
    resume_overhead: str | None = _duration_field(
        "Run time lost at each resume (restart, checkpoint load, warm-up), e.g. 5m: planned as GPUs held at"
        " full power doing no work. Default 0s."
    )
    min_run_duration: str | None = _duration_field(
        "Shortest run worth a restart, e.g. 1h: a segment is paused only after it ran this long. Default 0s."
    )
    max_interruptions: int | None = Field(
        default=None, ge=0, le=1000, description="At most this many pauses over the job's life (default: no limit)."
    )

    @field_validator("checkpoint_grace_period", "resume_overhead", "min_run_duration")
    @classmethod
    def _parses(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @model_validator(mode="after")
    def _only_when_resumable(self) -> "Interruption":
        set_ = [
            self.checkpoint_grace_period,
            self.resume_overhead,
            self.min_run_duration,
            self.max_interruptions,
        ]
        if not self.resumable and any(v is not None for v in set_):
            raise ValueError(
                "checkpointGracePeriod, resumeOverhead, minRunDuration and maxInterruptions apply only when"
                " resumable is true"
            )
        return self

    def overhead(self) -> timedelta:
        return parse_duration(self.resume_overhead) if self.resume_overhead else timedelta(0)

    def min_run(self) -> timedelta:
        return parse_duration(self.min_run_duration) if self.min_run_duration else timedelta(0)

    def grace(self) -> timedelta | None:
        return parse_duration(self.checkpoint_grace_period) if self.checkpoint_grace_period else None


class Budget(_Model):
    max_energy_k_wh: float | None = Field(
        default=None,
        ge=0,
        alias="maxEnergyKWh",
        description="Energy budget of the whole job, kWh: compared with the TOTAL status.energy.kWh "
        "(GPU + host + facility overhead).",
    )
    max_c_o2e_kg: float | None = Field(
        default=None,
        ge=0,
        alias="maxCO2eKg",
        description="Emissions budget of the whole job, kg CO2e: compared with the TOTAL status.emissions.grams "
        "(operational + embodied).",
    )
    action: BudgetAction = Field(
        default="Warn", description="Warn: set BudgetExceeded and an Event. Suspend: also suspend the Job."
    )


class JobTemplate(_Model):
    """A batch/v1 JobTemplateSpec, exactly as in a CronJob; validated in full by a server dry-run."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Labels and annotations for the Job.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    spec: dict[str, Any] = Field(
        description="A batch/v1 JobSpec.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "required": ["template"]},
    )


# Kinds a GreenTrainingJob may wrap in spec.workload (greenjobs.workloads has one adapter per kind).
WORKLOAD_KINDS: tuple[tuple[str, str], ...] = (
    ("batch/v1", "Job"),
    ("jobset.x-k8s.io/v1alpha2", "JobSet"),
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"),
    ("kubeflow.org/v1", "PyTorchJob"),
    ("ray.io/v1", "RayJob"),
)
_WORKLOAD_KINDS_TEXT = ", ".join(f"{k} ({v})" for v, k in WORKLOAD_KINDS)


class Workload(_Model):
    """Any supported suspendable workload: apiVersion, kind, metadata and spec, as in its own manifest."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    " || ".join(f"(self.apiVersion == '{v}' && self.kind == '{k}')" for v, k in WORKLOAD_KINDS),
                    f"workload.kind: unsupported apiVersion/kind; supported: {_WORKLOAD_KINDS_TEXT}",
                    ".kind",
                    "FieldValueInvalid",
                )
            ]
        }
    )

    api_version: str = Field(description="apiVersion of the workload, e.g. jobset.x-k8s.io/v1alpha2.", max_length=253)
    kind: str = Field(description=f"Kind of the workload: {_WORKLOAD_KINDS_TEXT}.", max_length=63)
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Labels and annotations for the workload (its name and namespace are the GreenTrainingJob's).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    spec: dict[str, Any] = Field(
        description="The workload's spec, exactly as in its own manifest.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    @model_validator(mode="after")
    def _supported(self) -> "Workload":
        if (self.api_version, self.kind) not in WORKLOAD_KINDS:
            raise ValueError(
                f"workload.kind: unsupported {self.kind} ({self.api_version}); supported: {_WORKLOAD_KINDS_TEXT}"
            )
        return self


_HAS_SLACK = " || (has(self.timing) && (has(self.timing.deadline) || has(self.timing.maxDelay)))"


class GreenTrainingJobSpec(_Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "has(self.jobTemplate) != has(self.workload)",
                    "exactly one of jobTemplate and workload must be set",
                    ".workload",
                    "FieldValueInvalid",
                ),
                _cel(
                    "!has(self.interruption) || !self.interruption.resumable" + _HAS_SLACK,
                    "interruption.resumable needs timing.deadline or timing.maxDelay: without slack there is no"
                    " time to pause in",
                    ".interruption.resumable",
                    "FieldValueInvalid",
                ),
                _cel(
                    "!has(self.power) || self.power.policy != 'DeadlinePaced'" + _HAS_SLACK,
                    "power.policy DeadlinePaced needs timing.deadline or timing.maxDelay to pace against",
                    ".power.policy",
                    "FieldValueInvalid",
                ),
            ]
        }
    )

    job_template: JobTemplate | None = Field(
        default=None,
        description="The batch/v1 Job to run, as in a CronJob's jobTemplate. Exactly one of jobTemplate and workload.",
    )
    workload: Workload | None = Field(
        default=None,
        description="Instead of jobTemplate: a JobSet, TrainJob, PyTorchJob, RayJob (or Job) to run, with its"
        " apiVersion, kind, metadata and spec.",
    )
    timing: Timing = Field(default_factory=Timing, description="When the job may run.")
    placement: Placement = Field(default_factory=Placement, description="Where the job may run.")
    power: Power = Field(default_factory=Power, description="Per-GPU power capping policy.")
    budget: Budget | None = Field(default=None, description="Optional energy and emissions budget.")
    interruption: Interruption | None = Field(
        default=None,
        description="Whether the job may be paused at a checkpoint around dirty hours and resumed before its"
        " deadline (its whole run planned as segments). Absent: never paused.",
    )

    @model_validator(mode="after")
    def _one_workload(self) -> "GreenTrainingJobSpec":
        if (self.job_template is None) == (self.workload is None):
            raise ValueError("exactly one of jobTemplate and workload must be set")
        slack = self.timing.deadline is not None or self.timing.max_delay is not None
        if self.resumable and not slack:
            raise ValueError("interruption.resumable needs timing.deadline or timing.maxDelay")
        if self.power.policy == "DeadlinePaced" and not slack:
            raise ValueError("power.policy DeadlinePaced needs timing.deadline or timing.maxDelay")
        return self

    @property
    def resumable(self) -> bool:
        return self.interruption is not None and self.interruption.resumable

    @property
    def whole_run(self) -> bool:
        """Planned as a whole run (segments with pauses and/or paced caps), not only a start."""
        return self.resumable or self.power.policy == "DeadlinePaced"


# ---------------------------------------------------------------- status


class PlannedSegment(_Model):
    start: Time = Field(description="When this segment starts (the job runs, or resumes).")
    end: Time = Field(description="When it ends: a pause, a cap change, or the end of the run.")
    cap_watts: int | None = Field(default=None, description="Per-GPU cap in this segment (DeadlinePaced).")


class Plan(_Model):
    zone: str | None = Field(default=None, description="Chosen grid zone; empty when no zones were given.")
    scheduled_start: Time | None = Field(default=None, description="When the Job will be unsuspended.")
    latest_start: Time | None = Field(default=None, description="Latest start that still meets the deadline.")
    deadline: Time | None = Field(default=None, description="Latest completion (latestStart + duration).")
    decided_at: Time | None = Field(default=None, description="When this plan was made.")
    forecast_source: str | None = Field(default=None, description="Provider whose forecast was used.")
    expected_g_per_k_wh: float | None = Field(
        default=None, alias="expectedGPerKWh", description="Mean forecast intensity over the planned run."
    )
    baseline_g_per_k_wh: float | None = Field(
        default=None,
        alias="baselineGPerKWh",
        description="Mean forecast intensity had the job started at once in its first zone.",
    )
    expected_savings_percent: float | None = Field(default=None, description="100 * (baseline - expected) / baseline.")
    waits_for: str | None = Field(
        default=None,
        description="Why the job waits, with capacity-aware fleet planning: CleanWindow (a cleaner window"
        " later), Capacity (no free GPUs in its zone before then) or StartNow.",
    )
    forecast_horizon: Time | None = Field(
        default=None,
        description="Where the forecasts used stop; nothing past it is counted (re-planned as it moves).",
    )
    segments: list[PlannedSegment] | None = Field(
        default=None,
        max_length=512,
        description="Whole-run plans (interruption.resumable or power DeadlinePaced): the rest of the run as"
        " segments; a gap between two is a pause. expectedSavingsPercent is then against running straight"
        " through from the plan's time at maxCapWatts.",
    )
    finishes_at: Time | None = Field(default=None, description="Whole-run plans: when the planned run ends.")

    def merge_patch(self) -> dict[str, Any]:
        """The JSON form with an explicit null for every unset field, so that a merge patch of status.plan
        clears a figure the previous plan had (e.g. savings a plan beyond the horizon cannot give)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=False)


class Progress(_Model):
    """Work done across a whole-run job's segments (interruption.resumable or power DeadlinePaced)."""

    work_done_seconds: float = Field(
        default=0.0,
        ge=0,
        description="Work done before the present run, in seconds of run time at maxCapWatts (estimatedDuration"
        " is the whole): run time at each cap through the GPU model, minus resume overheads.",
    )
    percent: int | None = Field(default=None, ge=0, le=100, description="Share of the whole run's work done.")
    segments: int = Field(default=0, ge=0, description="Runs started: the first start and every resume.")
    interruptions: int = Field(default=0, ge=0, description="Planned pauses so far.")
    running_since: Time | None = Field(default=None, description="Start of the present run; unset while paused.")
    paused_at: Time | None = Field(default=None, description="When the last pause began.")
    source: str | None = Field(
        default=None,
        description="model (the GPU model's run time at each cap) or reported (the greenjobs.dev/progress"
        " annotation, which corrects the model).",
    )


class PowerStatus(_Model):
    target_cap_watts: int | None = Field(default=None, description="Per-GPU cap the policy asks the node agents for.")
    applied_cap_watts: int | None = Field(
        default=None,
        description="Per-GPU cap the GPUs really have, as the agents report it (lowest over nodes); differs from"
        " targetCapWatts when the GPUs' limits clamp it (PowerCapped says so).",
    )
    reason: str | None = Field(default=None, description="Why this cap (policy or budget).")
    g_per_k_wh: float | None = Field(
        default=None, alias="gPerKWh", description="Zone intensity the cap was computed from."
    )


class UsagePoint(_Model):
    at: Time = Field(description="A time the agent sampled the job's energy on this node.")
    joules: float = Field(ge=0, description="The entry's cumulative joules at that time.")


class NodeEnergy(_Model):
    joules: float = Field(default=0, ge=0, description="Cumulative GPU energy of this job on the node, J.")
    gpus: int = Field(default=0, ge=0, description="GPUs of this job on the node.")
    cap_watts: int | None = Field(default=None, description="Cap in force on those GPUs, W.")
    avg_power_watts: float | None = Field(default=None, description="Mean power over the last interval, W.")
    gpu_seconds: float | None = Field(default=None, ge=0, description="GPU-seconds used on this node.")
    updated_at: Time | None = Field(default=None, description="When the agent wrote this entry.")
    estimated: bool | None = Field(
        default=None,
        description="True when part of this energy is the job's estimated share of a GPU it shared with other "
        "pods (time-slicing, MPS, MIG instances of one GPU).",
    )
    split_rule: str | None = Field(
        default=None,
        max_length=256,
        description="How shared GPUs' energy was split: processUtilisation, equalShares or migSlices "
        "(comma-separated when several).",
    )
    cap_not_applied: str | None = Field(
        default=None,
        max_length=1024,
        description="Why the job's own cap is not the limit some of its GPUs on this node got (shared GPUs).",
    )
    usage: list[UsagePoint] | None = Field(
        default=None,
        max_length=64,
        description="When the energy was used, oldest first: the joules between two points were used between "
        "their times, so energy accounted late is charged at the intensity of then.",
    )


class EnergyMethods(_Model):
    gpu: str | None = Field(default=None, description="How gpuKWh was measured (nvml: the node agents' counters).")
    host: str | None = Field(
        default=None,
        description="How hostKWh was obtained: kepler, kepler-legacy, rapl-cpu-share, watts-per-gpu, or none.",
    )
    facility: str | None = Field(default=None, description="The PUE applied to facilityKWh, and its source.")


class Energy(_Model):
    k_wh: float | None = Field(
        default=None,
        alias="kWh",
        description="TOTAL energy of the job, kWh: gpuKWh + hostKWh + facilityKWh (GPU only before the "
        "footprint split was accounted). Budgets apply to this total.",
    )
    gpu_hours: float | None = Field(default=None, description="Total GPU-hours over all nodes.")
    gpu_k_wh: float | None = Field(
        default=None, alias="gpuKWh", description="GPU energy over all nodes (node agents' counters), kWh."
    )
    host_k_wh: float | None = Field(
        default=None, alias="hostKWh", description="Host energy of the job's pods (CPU, DRAM, ...), kWh."
    )
    facility_k_wh: float | None = Field(
        default=None,
        alias="facilityKWh",
        description="Data-centre overhead (cooling, power losses): (PUE - 1) x (gpuKWh + hostKWh), kWh.",
    )
    pue: float | None = Field(default=None, description="Power usage effectiveness applied for the job's zone.")
    methods: EnergyMethods | None = Field(default=None, description="Where each part of the energy comes from.")
    nodes: dict[str, NodeEnergy] = Field(
        default_factory=dict, description="One entry per node, written by its node agent (JSON merge patch)."
    )


class EmissionsMethods(_Model):
    operational: str | None = Field(default=None, description="How operationalGrams were computed.")
    embodied: str | None = Field(default=None, description="The life-cycle factors behind embodiedGrams.")


class Emissions(_Model):
    grams: float | None = Field(
        default=None,
        description="TOTAL gCO2e of the job: operationalGrams + embodiedGrams (GPU operational only before the "
        "footprint split was accounted). Budgets apply to this total.",
    )
    avg_g_per_k_wh: float | None = Field(
        default=None,
        alias="avgGPerKWh",
        description="operationalGrams / energy.kWh: the mean grid intensity the job ran at, gCO2e/kWh.",
    )
    operational_grams: float | None = Field(
        default=None, description="gCO2e of the electricity: GPU, host and facility energy x zone intensity."
    )
    embodied_grams: float | None = Field(
        default=None, description="gCO2e of manufacturing the hardware, amortised per GPU-hour and server-hour."
    )
    gpu_grams: float | None = Field(
        default=None, description="Operational gCO2e of the GPU energy (state of the incremental accounting)."
    )
    host_grams: float | None = Field(
        default=None, description="Operational gCO2e of the host energy (state of the incremental accounting)."
    )
    facility_grams: float | None = Field(
        default=None, description="Operational gCO2e of the facility overhead: (PUE - 1) x (gpuGrams + hostGrams)."
    )
    methods: EmissionsMethods | None = Field(default=None, description="How each part of the emissions was computed.")
    accounted_joules: dict[str, float] = Field(
        default_factory=dict,
        description="Per node, the joules already turned into grams (so restarts never count twice).",
    )
    accounted_host_joules: float | None = Field(
        default=None, description="Host joules already turned into grams (high-water mark, as accountedJoules)."
    )


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(default="", max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: Time | None = None
    observed_generation: int | None = None


class GreenTrainingJobStatus(_Model):
    phase: PhaseName | None = Field(
        default=None, description="Pending, Deferred, Running, Paused, Succeeded, Failed, Suspended."
    )
    observed_generation: int | None = Field(default=None, description="Generation of the spec last acted on.")
    job_name: str | None = Field(default=None, description="The batch/v1 Job owned by this resource.")
    plan: Plan | None = None
    start_time: Time | None = Field(
        default=None, description="When greenjobs let the workload run (set once: it is never started again)."
    )
    completion_time: Time | None = Field(
        default=None, description="When the workload ended, as its controller recorded it."
    )
    power: PowerStatus | None = None
    progress: Progress | None = None
    energy: Energy | None = None
    emissions: Emissions | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class GreenTrainingJob(_Model):
    """The whole resource, for tests and the CLI; handlers read spec and status separately."""

    api_version: str = "greenjobs.dev/v1alpha1"
    kind: str = "GreenTrainingJob"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: GreenTrainingJobSpec
    status: GreenTrainingJobStatus | None = None
