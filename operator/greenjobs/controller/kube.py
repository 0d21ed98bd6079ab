"""The few Kubernetes calls the operator makes, on plain dicts, counted for metrics.

The kubernetes client's typed APIs validate bodies against its own models (e.g. refusing an integer
GPU limit that the API server accepts), so Jobs go through the generic object paths instead: the
API server alone judges a user's Job template.
"""

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from greenjobs.api import constants as c
from greenjobs.metrics import OperatorMetrics
from greenjobs.workloads import WorkloadAdapter
from greenjobs.workloads.batch import BatchJobAdapter

BATCH = BatchJobAdapter()
_GTJ = (c.GROUP, c.VERSION)
_MERGE = "application/merge-patch+json"
_JSON_PATCH = "application/json-patch+json"


class Conflict(Exception):
    """A conditional write found the object changed since it was read: read again and re-decide."""


class NotLeader(Exception):
    """This replica no longer holds the Lease: the write is not sent (the leader will do it)."""


class Kube:
    def __init__(
        self, api: client.ApiClient, metrics: OperatorMetrics, may_write: Callable[[], bool] | None = None
    ) -> None:
        self.api = api
        self.objects = client.CustomObjectsApi(api)
        self.metrics = metrics
        self.may_write = may_write  # leader election: checked before every write (None: always)

    def _write(self, kind: str) -> None:
        """Before each write: fenced by leadership (work in flight when the Lease is lost stops here)."""
        if self.may_write is not None and not self.may_write():
            raise NotLeader(f"not the leader: {kind} not sent")
        self.metrics.api_writes.labels(kind).inc()

    def get_job(self, namespace: str, name: str, kind: WorkloadAdapter = BATCH) -> dict[str, Any] | None:
        try:
            job: dict[str, Any] = self.objects.get_namespaced_custom_object(*_at(kind, namespace), name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return job

    def create_job(self, body: dict[str, Any], *, kind: WorkloadAdapter = BATCH) -> None:
        """Create with strict field validation: a typo in the user's template is refused, not dropped."""
        self._write("create_job")
        group, version, plural = _res(kind)
        self.objects.create_namespaced_custom_object(
            group,
            version,
            body["metadata"]["namespace"],
            plural,
            body,
            field_validation="Strict",
        )

    def release_job(self, namespace: str, name: str, finalizers: list[str], kind: WorkloadAdapter = BATCH) -> None:
        """Remove our finalizer; the `test` op makes it a no-op failure if the list moved meanwhile."""
        if c.JOB_FINALIZER not in finalizers:
            return
        i = finalizers.index(c.JOB_FINALIZER)
        ops = [
            {"op": "test", "path": f"/metadata/finalizers/{i}", "value": c.JOB_FINALIZER},
            {"op": "remove", "path": f"/metadata/finalizers/{i}"},
        ]
        self._write("release_job")
        try:
            self.objects.patch_namespaced_custom_object(*_at(kind, namespace), name, ops, _content_type=_JSON_PATCH)
        except ApiException as exc:
            if exc.status == 404:
                return
            if exc.status in (409, 422):  # the test op failed: the list changed; look again
                raise Conflict(f"finalizers of Job {namespace}/{name} changed") from exc
            raise

    def get_gtj(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            gtj: dict[str, Any] = self.objects.get_namespaced_custom_object(*_GTJ, namespace, c.PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return gtj

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch status; with `resource_version` only if nobody wrote the object since (409 else)."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        self._write("patch_status")
        with _conflict(namespace, name):
            out: dict[str, Any] = self.objects.patch_namespaced_custom_object_status(
                *_GTJ, namespace, c.PLURAL, name, body, _content_type=_MERGE
            )
        return out

    def settle_gtj(self, namespace: str, name: str, resource_version: str) -> dict[str, Any] | None:
        """Label a finished GTJ settled, only as it was read (the resourceVersion is a precondition, so a
        GTJ re-created under the same name is never touched); None when it is gone."""
        body = {"metadata": {"resourceVersion": resource_version, "labels": {c.LABEL_SETTLED: "true"}}}
        self._write("settle")
        try:
            with _conflict(namespace, name):
                out: dict[str, Any] = self.objects.patch_namespaced_custom_object(
                    *_GTJ, namespace, c.PLURAL, name, body, _content_type=_MERGE
                )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return out

    def unsettle_gtj(self, namespace: str, name: str, resource_version: str) -> None:
        """Take the settled label off a GTJ that has not finished (set by hand, before the admission
        policy guarded it), as it was read: it comes back into the operator's watch."""
        body = {"metadata": {"resourceVersion": resource_version, "labels": {c.LABEL_SETTLED: None}}}
        self._write("unsettle")
        with _conflict(namespace, name):
            self.objects.patch_namespaced_custom_object(*_GTJ, namespace, c.PLURAL, name, body, _content_type=_MERGE)

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any], kind: WorkloadAdapter = BATCH) -> None:
        self._write("patch_job")
        self.objects.patch_namespaced_custom_object(*_at(kind, namespace), name, patch, _content_type=_MERGE)

    def set_workload_active(self, namespace: str, job_uid: str, active: bool) -> bool:
        """Deactivate (a pause) or activate (its resume) the Kueue Workload of a Kueue-managed workload.
        Deactivated, Kueue evicts it, releases its quota and suspends the workload; activated, the SAME
        Workload is queued again, so its place in the queue (its creation time) is kept. False when it
        has no Workload (Kueue has not seen it yet)."""
        listed = self.objects.list_namespaced_custom_object(
            *_WORKLOADS[:2], namespace, _WORKLOADS[2], label_selector=f"{_KUEUE_JOB_UID}={job_uid}"
        )
        items = listed.get("items") or []
        for wl in items:
            if (wl.get("spec") or {}).get("active", True) != active:
                self._write("workload")
                body = {"spec": {"active": active}}
                name = wl["metadata"]["name"]
                self.objects.patch_namespaced_custom_object(
                    *_WORKLOADS[:2], namespace, _WORKLOADS[2], name, body, _content_type=_MERGE
                )
        return bool(items)

    def delete_job(self, namespace: str, name: str, kind: WorkloadAdapter = BATCH) -> None:
        self._write("delete_job")
        try:
            self.objects.delete_namespaced_custom_object(*_at(kind, namespace), name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise


# Kueue's Workloads (the version greenjobs.kueue serves), found by the job-uid label Kueue puts on them.
_WORKLOADS = ("kueue.x-k8s.io", "v1beta2", "workloads")
_KUEUE_JOB_UID = "kueue.x-k8s.io/job-uid"


@contextmanager
def _conflict(namespace: str, name: str) -> Iterator[None]:
    """A 409 on a write conditional on the resourceVersion read: Conflict (read again, decide again)."""
    try:
        yield
    except ApiException as exc:
        if exc.status == 409:
            raise Conflict(f"GreenTrainingJob {namespace}/{name} changed since it was read") from exc
        raise


def _res(kind: WorkloadAdapter) -> tuple[str, str, str]:
    """(group, version, plural) of a workload kind."""
    return kind.group, kind.api_version.rsplit("/", 1)[-1], kind.plural


def _at(kind: WorkloadAdapter, namespace: str) -> tuple[str, str, str, str]:
    """(group, version, namespace, plural): the leading arguments of the generic object calls."""
    group, version, plural = _res(kind)
    return group, version, namespace, plural


def api_error_message(exc: ApiException) -> str:
    """The API server's own message (e.g. which Job field is invalid), not the HTTP dump."""
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (ValueError, TypeError):
        return str(exc.reason)
