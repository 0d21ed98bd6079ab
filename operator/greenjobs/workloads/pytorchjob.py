"""PyTorchJob (Training Operator v1, kubeflow.org/v1): `spec.runPolicy.suspend`; one pod template
per replica type in the `spec.pytorchReplicaSpecs` map (Master, Worker)."""

from collections.abc import Iterable, Mapping
from typing import Any

from greenjobs.api import constants as c

from .base import Obj, Outcome, condition_true, int_or, pod_gpus, pod_template_patch
from .templated import TemplatedAdapter


class PyTorchJobAdapter(TemplatedAdapter):
    kind = "PyTorchJob"
    api_version = "kubeflow.org/v1"
    group = "kubeflow.org"
    plural = "pytorchjobs"

    def _replica_specs(self, obj: Mapping[str, Any]) -> dict[str, Obj]:
        specs = (obj.get("spec") or {}).get("pytorchReplicaSpecs") or {}
        return {k: v for k, v in sorted(specs.items()) if isinstance(v, dict)}

    def pod_templates(self, obj: Mapping[str, Any]) -> list[Obj]:
        return [rs.setdefault("template", {}) for rs in self._replica_specs(obj).values()]

    def _set_suspend(self, spec: Obj, suspended: bool) -> None:
        spec.setdefault("runPolicy", {})["suspend"] = suspended

    def _suspend_fragment(self, suspended: bool) -> Obj:
        return {"runPolicy": {"suspend": suspended}}

    def is_suspended(self, obj: Mapping[str, Any]) -> bool:
        return bool(((obj.get("spec") or {}).get("runPolicy") or {}).get("suspend"))

    def _spec_start_patch(
        self, obj: Mapping[str, Any], zone_selector: Mapping[str, str] | None, labels: Mapping[str, str] | None
    ) -> Obj:
        # pytorchReplicaSpecs is a map: merge patches reach each template without resending it.
        replicas = {name: {"template": pod_template_patch(labels, zone_selector)} for name in self._replica_specs(obj)}
        return {**self._suspend_fragment(False), "pytorchReplicaSpecs": replicas}

    def outcome(self, obj: Mapping[str, Any]) -> Outcome | None:
        if condition_true(obj, "Succeeded"):
            return "Succeeded"
        if condition_true(obj, "Failed"):
            return "Failed"
        return None

    def gpus(self, obj: Mapping[str, Any], resource_names: Iterable[str] = (c.GPU_RESOURCE,)) -> int:
        return sum(
            int_or(rs.get("replicas"), 1) * pod_gpus((rs.get("template") or {}).get("spec") or {}, resource_names)
            for rs in self._replica_specs(obj).values()
        )
