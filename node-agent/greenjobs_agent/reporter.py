"""Writes a job's cumulative energy on this node into its GreenTrainingJob status.

Only `status.energy.nodes.<node>`: each agent owns its own key, so agents never conflict and no
read-modify-write is needed. `build_patch` says what to write as a merge-patch-shaped body (fields
without a value are left out: the entry keeps what was written before; `capNotApplied` is sent as
null once to delete it when its reason has gone) and `metadata.uid`, the GTJ the energy was counted
for.

On the wire it is a JSON patch (RFC 6902) of the status subresource: a `test` of /metadata/uid first,
then an `add` per field of the entry. The test makes the UID a real precondition: the API server
refuses the whole patch (422) when the object of that name is another one (deleted and re-applied),
so old joules never land on a new object. (A uid in a MERGE patch of the status subresource is
silently ignored: the status strategy keeps the stored metadata; checked on a real API server by
tests/integration/test_agent_cluster.py.) The first report of a job creates the entry's parents with
a merge patch holding only an empty entry, `{"status":{"energy":{"nodes":{"<node>":{}}}}}`, which
adds nothing to an object that has them and no energy to any object.
"""

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from greenjobs.api.constants import GROUP, PLURAL, VERSION

from .pods import JobKey

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


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
    # (epoch s, cumulative joules), oldest first: when the energy was used, so the operator charges
    # energy it accounts late at the intensity of that time
    usage: tuple[tuple[float, float], ...] = ()


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
    if report.usage:
        entry["usage"] = [
            {"at": rfc3339(datetime.fromtimestamp(t, UTC)), "joules": round(j, 3)} for t, j in report.usage
        ]
    if report.cap_note is not None or report.clear_cap_note:
        entry["capNotApplied"] = report.cap_note  # a null deletes the earlier reason
    body: dict[str, Any] = {"status": {"energy": {"nodes": {node: entry}}}}
    if uid:
        body["metadata"] = {"uid": uid}  # precondition: only the object the energy was counted for
    return body


class JobGone(Exception):
    """The GreenTrainingJob no longer exists (HTTP 404), or the object of that name is another one
    (the UID test failed): stop reporting it."""


class StatusPatcher(Protocol):
    def patch_status(self, job: JobKey, body: dict[str, Any]) -> None: ...

    def forget(self, job: JobKey) -> None:
        """Nothing of `job` is to be kept (its count was dropped)."""
        ...


def _patch_not_applicable(e: Any) -> bool:
    """A 422 for a JSON patch op that did not apply (a failed test, a missing path), as opposed to a
    schema violation, which names its fields in details.causes."""
    if e.status != 422:
        return False
    try:
        details = json.loads(e.body or "{}").get("details") or {}
    except ValueError:
        return False
    return not details.get("causes")


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def json_patch(body: dict[str, Any], removals: bool = True) -> list[dict[str, Any]]:
    """The JSON patch of a `build_patch` body: the UID test, then one op per field of each entry."""
    ops: list[dict[str, Any]] = []
    uid = (body.get("metadata") or {}).get("uid")
    if uid:
        ops.append({"op": "test", "path": "/metadata/uid", "value": uid})
    for node, entry in body["status"]["energy"]["nodes"].items():
        for key, value in entry.items():
            path = _pointer("status", "energy", "nodes", node, key)
            if value is not None:
                ops.append({"op": "add", "path": path, "value": value})
            elif removals:
                ops.append({"op": "remove", "path": path})
    return ops


class KubeStatusPatcher:
    """Patches the status subresource with the Kubernetes client (see the module docstring)."""

    def __init__(self, api: Any) -> None:
        self._api = api  # kubernetes.client.CustomObjectsApi
        self._ready: set[tuple[JobKey, str]] = set()  # entries known to exist (parents created)

    def patch_status(self, job: JobKey, body: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415 - keep imports light

        nodes = list(body["status"]["energy"]["nodes"])
        try:
            if any((job, n) not in self._ready for n in nodes):
                self._ensure(job, nodes)
            try:
                self._send(job, json_patch(body))
            except ApiException as e:
                if not _patch_not_applicable(e):
                    raise
                # The API server says only that an op did not apply: the UID test, or a path that is
                # missing (the entry was removed, a field to delete was not there). Create the
                # parents again and write what has a value: if that fails too, the test failed.
                self._ensure(job, nodes)
                try:
                    self._send(job, json_patch(body, removals=False))
                except ApiException as again:
                    if _patch_not_applicable(again):
                        raise JobGone(f"{job}: the object of that name has another UID") from again
                    raise
        except ApiException as e:
            if e.status == 404:
                raise JobGone(str(job)) from e
            raise
        except JobGone:
            self.forget(job)
            raise

    def forget(self, job: JobKey) -> None:
        self._ready = {k for k in self._ready if k[0] != job}

    def _ensure(self, job: JobKey, nodes: list[str]) -> None:
        empty: dict[str, Any] = {"status": {"energy": {"nodes": {n: {} for n in nodes}}}}
        self._api.patch_namespaced_custom_object_status(
            GROUP, VERSION, job.namespace, PLURAL, job.name, empty, _content_type=MERGE_PATCH
        )
        self._ready.update((job, n) for n in nodes)

    def _send(self, job: JobKey, ops: list[dict[str, Any]]) -> None:
        self._api.patch_namespaced_custom_object_status(
            GROUP, VERSION, job.namespace, PLURAL, job.name, ops, _content_type=JSON_PATCH
        )


@dataclass
class RecordingPatcher:
    """Keeps the patches instead of sending them (benchmark, tests)."""

    patches: list[tuple[JobKey, dict[str, Any]]]

    def patch_status(self, job: JobKey, body: dict[str, Any]) -> None:
        self.patches.append((job, body))

    def forget(self, job: JobKey) -> None:
        pass
