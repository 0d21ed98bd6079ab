"""The few Kubernetes calls the operator makes, on plain dicts, counted for metrics.

The kubernetes client's typed APIs validate bodies against its own models (e.g. refusing an integer
GPU limit that the API server accepts), so Jobs go through the generic object paths instead: the
API server alone judges a user's Job template.
"""

import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from greenjobs.metrics import OperatorMetrics

_JOBS = ("batch", "v1")
_MERGE = "application/merge-patch+json"


class Kube:
    def __init__(self, api: client.ApiClient, metrics: OperatorMetrics) -> None:
        self.api = api
        self.objects = client.CustomObjectsApi(api)
        self.metrics = metrics

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            job: dict[str, Any] = self.objects.get_namespaced_custom_object(*_JOBS, namespace, "jobs", name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return job

    def create_job(self, body: dict[str, Any], *, dry_run: bool = False) -> None:
        self.metrics.api_writes.labels("create_job_dry_run" if dry_run else "create_job").inc()
        self.objects.create_namespaced_custom_object(
            *_JOBS, body["metadata"]["namespace"], "jobs", body, dry_run="All" if dry_run else None
        )

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.metrics.api_writes.labels("patch_job").inc()
        self.objects.patch_namespaced_custom_object(*_JOBS, namespace, "jobs", name, patch, _content_type=_MERGE)

    def delete_job(self, namespace: str, name: str) -> None:
        self.metrics.api_writes.labels("delete_job").inc()
        try:
            self.objects.delete_namespaced_custom_object(
                *_JOBS, namespace, "jobs", name, propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


def api_error_message(exc: ApiException) -> str:
    """The API server's own message (e.g. which Job field is invalid), not the HTTP dump."""
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (ValueError, TypeError):
        return str(exc.reason)
