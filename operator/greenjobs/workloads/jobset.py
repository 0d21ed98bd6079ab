"""JobSet (jobset.x-k8s.io/v1alpha2): `spec.suspend`; a pod template in every replicatedJob."""

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from greenjobs.api import constants as c

from .base import Obj, Outcome, condition_true, int_or, label_pod_template, pod_gpus
from .templated import TemplatedAdapter


class JobSetAdapter(TemplatedAdapter):
    kind = "JobSet"
    api_version = "jobset.x-k8s.io/v1alpha2"
    group = "jobset.x-k8s.io"
    plural = "jobsets"

    def pod_templates(self, obj: Mapping[str, Any]) -> list[Obj]:
        out: list[Obj] = []
        for rj in (obj.get("spec") or {}).get("replicatedJobs") or []:
            job_spec = rj.setdefault("template", {}).setdefault("spec", {})
            out.append(job_spec.setdefault("template", {}))
        return out

    def _spec_start_patch(
        self, obj: Mapping[str, Any], zone_selector: Mapping[str, str] | None, labels: Mapping[str, str] | None
    ) -> Obj:
        # replicatedJobs is a list, which a merge patch replaces whole: send every entry, changed.
        replicated = copy.deepcopy((obj.get("spec") or {}).get("replicatedJobs") or [])
        for rj in replicated:
            pod_template = rj.setdefault("template", {}).setdefault("spec", {}).setdefault("template", {})
            label_pod_template(pod_template, labels or {}, zone_selector)
        return {"suspend": False, "replicatedJobs": replicated}

    def outcome(self, obj: Mapping[str, Any]) -> Outcome | None:
        if condition_true(obj, "Completed"):
            return "Succeeded"
        if condition_true(obj, "Failed"):
            return "Failed"
        return None

    def gpus(self, obj: Mapping[str, Any], resource_names: Iterable[str] = (c.GPU_RESOURCE,)) -> int:
        total = 0
        for rj in (obj.get("spec") or {}).get("replicatedJobs") or []:
            job_spec = (rj.get("template") or {}).get("spec") or {}
            pods = int_or(job_spec.get("parallelism"), 1)
            if isinstance(job_spec.get("completions"), int):
                pods = min(pods, job_spec["completions"])
            per_pod = pod_gpus((job_spec.get("template") or {}).get("spec") or {}, resource_names)
            total += int_or(rj.get("replicas"), 1) * pods * per_pod
        return total
