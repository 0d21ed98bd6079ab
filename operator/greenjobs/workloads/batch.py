"""batch/v1 Job: `spec.suspend`, one pod template at `spec.template`."""

from collections.abc import Iterable, Mapping
from typing import Any

from greenjobs.api import constants as c

from .base import Obj, Outcome, condition_true, int_or, pod_gpus, pod_template_patch
from .templated import TemplatedAdapter


class BatchJobAdapter(TemplatedAdapter):
    kind = "Job"
    api_version = "batch/v1"
    group = "batch"
    plural = "jobs"

    def pod_templates(self, obj: Mapping[str, Any]) -> list[Obj]:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return []
        template: Obj = spec.setdefault("template", {})
        return [template]

    def _spec_start_patch(
        self, obj: Mapping[str, Any], zone_selector: Mapping[str, str] | None, labels: Mapping[str, str] | None
    ) -> Obj:
        # spec.template is a map: a merge patch adds the selector without resending the template.
        return {"suspend": False, "template": pod_template_patch(labels, zone_selector)}

    def outcome(self, obj: Mapping[str, Any]) -> Outcome | None:
        # The terminal conditions, and the ones the Job controller sets before pods are gone (1.31+).
        if condition_true(obj, "Complete", "SuccessCriteriaMet"):
            return "Succeeded"
        if condition_true(obj, "Failed", "FailureTarget"):
            return "Failed"
        return None

    def gpus(self, obj: Mapping[str, Any], resource_names: Iterable[str] = (c.GPU_RESOURCE,)) -> int:
        spec = obj.get("spec") or {}
        pods = int_or(spec.get("parallelism"), 1)
        if isinstance(spec.get("completions"), int):
            pods = min(pods, spec["completions"])
        return pods * pod_gpus((spec.get("template") or {}).get("spec") or {}, resource_names)
