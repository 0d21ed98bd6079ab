"""GreenTrainingJob manifests for tests: one builder instead of a hand-written dict per test file."""

from __future__ import annotations

import json
from typing import Any


def gtj_manifest(
    namespace: str,
    name: str,
    *,
    zones: list[str] | None = None,
    timing: dict[str, Any] | None = None,
    power: dict[str, Any] | None = None,
    budget: dict[str, Any] | None = None,
    gpus: int | None = None,
    run_for: str | None = None,
    node_selector: dict[str, str] | None = None,
    job_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A valid GreenTrainingJob; `run_for` is the kwok annotation that ends its pods after that long;
    `job_spec` adds JobSpec fields (e.g. ttlSecondsAfterFinished)."""
    container: dict[str, Any] = {"name": "train", "image": "busybox"}
    if gpus is not None:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    template: dict[str, Any] = {"spec": pod_spec}
    if run_for:
        template["metadata"] = {"annotations": {"kwok.greenjobs.dev/run-for": run_for}}
    spec: dict[str, Any] = {"jobTemplate": {"spec": {**(job_spec or {}), "template": template}}}
    for key, value in (("timing", timing), ("power", power), ("budget", budget)):
        if value is not None:
            spec[key] = value
    if zones is not None:
        spec["placement"] = {"zones": zones}
    return {
        "apiVersion": "greenjobs.dev/v1alpha1",
        "kind": "GreenTrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def gtj_json(namespace: str, name: str, **kwargs: Any) -> str:
    """The same, as text for `kubectl apply -f -`."""
    return json.dumps(gtj_manifest(namespace, name, **kwargs))
