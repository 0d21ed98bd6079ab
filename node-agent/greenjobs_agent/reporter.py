"""Writes a job's cumulative energy on this node into its GreenTrainingJob status.

A JSON merge patch of `status.energy.nodes.<node>` only: each agent owns its own key, so agents
never conflict and no read-modify-write is needed. Fields without a value are left out (a null in a
merge patch would delete the field the agent wrote before), except `capNotApplied`, which is sent once
as null to clear it when its reason has gone.

The patch carries `metadata.uid` of the GreenTrainingJob the energy was counted for: the API server
treats a UID in the body as a precondition and refuses the patch (409 Conflict) when the object of
that name is another one (deleted and re-applied), so old joules never land on a new object.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from greenjobs.api.constants import GROUP, PLURAL, VERSION

from .pods import JobKey

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class NodeEnergyReport:
    joules: float
    gpus: int
    gpu_seconds: float
    cap_watts: int | None = None
    avg_power_watts: float | None = None  # mean per-GPU power since the previous report
    split: tuple[str, ...] = ()  # how shared GPUs' energy was split (empty: every GPU its own)
    cap_note: str | None = None  # why the job's cap is not what some of its GPUs got
    clear_cap_note: bool = False  # an earlier note no longer holds: send a null to delete it


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_patch(node: str, report: NodeEnergyReport, now: datetime, uid: str = "") -> dict[str, Any]:
    entry: dict[str, Any] = {
        "joules": round(report.joules, 3),
        "gpus": report.gpus,
        "gpuSeconds": round(report.gpu_seconds, 3),
        "updatedAt": rfc3339(now),
    }
    if report.cap_watts is not None:
        entry["capWatts"] = report.cap_watts
    if report.avg_power_watts is not None:
        entry["avgPowerWatts"] = round(report.avg_power_watts, 2)
    if report.split:
        entry["estimated"] = True
        entry["splitRule"] = ",".join(report.split)
    if report.cap_note is not None or report.clear_cap_note:
        entry["capNotApplied"] = report.cap_note  # a null deletes the earlier reason
    body: dict[str, Any] = {"status": {"energy": {"nodes": {node: entry}}}}
    if uid:
        body["metadata"] = {"uid": uid}  # precondition: only the object the energy was counted for
    return body


class JobGone(Exception):
    """The GreenTrainingJob no longer exists (HTTP 404), or the object of that name is another one
    (409: UID precondition failed): stop reporting it."""


class StatusPatcher(Protocol):
    def patch_status(self, job: JobKey, body: dict[str, Any]) -> None: ...


class KubeStatusPatcher:
    """Merge-patches the status subresource with the Kubernetes client."""

    def __init__(self, api: Any) -> None:
        self._api = api  # kubernetes.client.CustomObjectsApi

    def patch_status(self, job: JobKey, body: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415 - keep imports light

        try:
            # The client would pick merge-patch for a dict today; say it explicitly all the same.
            self._api.patch_namespaced_custom_object_status(
                GROUP, VERSION, job.namespace, PLURAL, job.name, body, _content_type=MERGE_PATCH
            )
        except ApiException as e:
            if e.status == 404 or (e.status == 409 and "uid" in str(e.body or "").lower()):
                raise JobGone(str(job)) from e
            raise


@dataclass
class RecordingPatcher:
    """Keeps the patches instead of sending them (benchmark, tests)."""

    patches: list[tuple[JobKey, dict[str, Any]]]

    def patch_status(self, job: JobKey, body: dict[str, Any]) -> None:
        self.patches.append((job, body))
