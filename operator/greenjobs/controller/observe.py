"""What the operator observes of one GreenTrainingJob and the workload it owns, as plain values.

`decide` reads only these: an observation is made from the API objects once, then everything after it
is pure.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydantic import ValidationError

from greenjobs.api import constants as c
from greenjobs.api.conditions import condition_status
from greenjobs.api.constants import Cond
from greenjobs.api.durations import parse_time
from greenjobs.api.models import Plan

from .jobs import adapter_of_object, template_hash, workload_template


class JobState(Enum):
    """The owned workload as the phase table sees it."""

    MISSING = "Missing"  # no owned Job exists
    SUSPENDED = "Suspended"  # exists, suspended (never started, or suspended since)
    RUNNING = "Running"  # exists, not suspended, no outcome yet
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DELETING = "Deleting"  # being deleted (TTL, by hand, GC) after it ran, no outcome: held by our finalizer
    DELETING_UNSTARTED = "DeletingUnstarted"  # being deleted while still suspended: it never ran


@dataclass(frozen=True)
class JobView:
    """What the operator needs of an owned Job (kept in a kopf index: no GET per look)."""

    uid: str
    owner_uids: tuple[str, ...]
    suspended: bool
    outcome: str | None  # Succeeded | Failed | None
    deleting: bool = False
    finalizers: tuple[str, ...] = ()
    template_hash: str | None = None
    active: int = 0  # pods running or pending, as the Job controller counts them
    ready: int = 0  # pods Ready
    api_version: str = "batch/v1"
    kind: str = "Job"
    started_at: str | None = None  # when greenjobs let it run (its annotation): the true start on adoption
    paused_at: str | None = None  # when greenjobs last paused it for its plan (its annotation)
    finished_at: str | None = None  # when it reached its outcome, as its controller recorded it

    @property
    def pause_in_force(self) -> bool:
        """greenjobs paused it last (its paused-at annotation is not older than its started-at)."""
        if not self.paused_at:
            return False
        return not self.started_at or parse_time(self.paused_at) >= parse_time(self.started_at)

    @property
    def finalizer(self) -> bool:
        """Ours is on it: the Job cannot vanish before we let it go."""
        return c.JOB_FINALIZER in self.finalizers

    @property
    def state(self) -> JobState:
        if self.outcome == "Succeeded":
            return JobState.SUCCEEDED
        if self.outcome == "Failed":
            return JobState.FAILED
        if self.deleting:
            return JobState.DELETING_UNSTARTED if self.suspended else JobState.DELETING
        return JobState.SUSPENDED if self.suspended else JobState.RUNNING


def job_view(body: Mapping[str, Any]) -> JobView:
    """The view of an owned workload of any supported kind (its adapter reads suspend and outcome)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    annotations = meta.get("annotations") or {}
    adapter = adapter_of_object(body)
    outcome = adapter.outcome(body)
    return JobView(
        uid=meta.get("uid", ""),
        owner_uids=tuple(r.get("uid", "") for r in meta.get("ownerReferences") or []),
        suspended=adapter.is_suspended(body),
        outcome=outcome,
        deleting=meta.get("deletionTimestamp") is not None,
        finalizers=tuple(meta.get("finalizers") or ()),
        template_hash=annotations.get(c.ANNOTATION_TEMPLATE_HASH),
        started_at=annotations.get(c.ANNOTATION_STARTED_AT),
        paused_at=annotations.get(c.ANNOTATION_PAUSED_AT),
        finished_at=_finished_at(status) if outcome else None,
        active=int(status.get("active") or 0),
        ready=int(status.get("ready") or 0),
        api_version=str(body.get("apiVersion") or "batch/v1"),
        kind=str(body.get("kind") or "Job"),
    )


def _finished_at(status: Mapping[str, Any]) -> str | None:
    """The end time a finished workload's controller wrote: completionTime (Job, PyTorchJob), endTime
    (RayJob), else the latest transition of a true condition (a failed Job, a JobSet)."""
    explicit = status.get("completionTime") or status.get("endTime")
    if explicit:
        return str(explicit)
    times = [
        str(cond["lastTransitionTime"])
        for cond in status.get("conditions") or []
        if cond.get("status") == "True" and cond.get("lastTransitionTime")
    ]
    return max(times) if times else None  # RFC 3339 UTC from one API server: ordered as text


@dataclass(frozen=True)
class Observed:
    """One look at a GreenTrainingJob: the object and the state of its workload."""

    name: str
    namespace: str
    uid: str
    generation: int | None
    created: str
    resource_version: str | None
    deleting: bool
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    job: JobView | None  # None: no Job owned by this GTJ exists
    settled: bool = False  # labelled greenjobs.dev/settled: finished and out of the operator's watch
    reported_progress: str | None = None  # the greenjobs.dev/progress annotation, as written

    @property
    def phase(self) -> str | None:
        return self.status.get("phase")

    @property
    def plan(self) -> Plan:
        """status.plan as the model (an empty plan where it does not parse)."""
        try:
            return Plan.model_validate(self.status.get("plan") or {})
        except ValidationError:
            return Plan()

    @property
    def job_state(self) -> JobState:
        return JobState.MISSING if self.job is None else self.job.state

    @property
    def spec_changed(self) -> bool:
        return self.status.get("observedGeneration") != self.generation

    @property
    def conditions(self) -> list[dict[str, Any]]:
        return list(self.status.get("conditions") or [])

    def condition(self, type_: str) -> str | None:
        return condition_status(self.conditions, type_)

    @property
    def invalid(self) -> bool:
        """Refused (bad template, name taken, ...) at this generation: wait for a spec change."""
        return self.condition(Cond.INVALID_TEMPLATE) == "True" and not self.spec_changed

    @property
    def ever_started(self) -> bool:
        """Whether greenjobs ever let this job's workload run (then it must never be created again)."""
        return bool(self.status.get("startTime"))


def observe(body: Mapping[str, Any], job: JobView | None) -> Observed:
    meta = body.get("metadata") or {}
    owned = job if job is not None and meta.get("uid") in job.owner_uids else None
    return Observed(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        uid=meta.get("uid", ""),
        generation=meta.get("generation"),
        created=meta.get("creationTimestamp", ""),
        resource_version=meta.get("resourceVersion"),
        deleting=meta.get("deletionTimestamp") is not None,
        spec=body.get("spec") or {},
        status=body.get("status") or {},
        job=owned,
        settled=(meta.get("labels") or {}).get(c.LABEL_SETTLED) == "true",
        reported_progress=(meta.get("annotations") or {}).get(c.ANNOTATION_PROGRESS),
    )


__all__ = ["JobState", "JobView", "Observed", "job_view", "observe", "template_hash", "workload_template"]
