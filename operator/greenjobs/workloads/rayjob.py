"""RayJob (KubeRay, ray.io/v1): `spec.suspend`; pod templates of the head group and of every worker
group in `spec.rayClusterSpec`."""

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from greenjobs.api import constants as c

from .base import Obj, Outcome, int_or, label_pod_template, pod_gpus, pod_template_patch
from .templated import TemplatedAdapter


class RayJobAdapter(TemplatedAdapter):
    kind = "RayJob"
    api_version = "ray.io/v1"
    group = "ray.io"
    plural = "rayjobs"

    def pod_templates(self, obj: Mapping[str, Any]) -> list[Obj]:
        spec = obj.get("spec")
        if not isinstance(spec, dict) or not isinstance(spec.get("rayClusterSpec"), dict):
            return []  # a RayJob on an existing cluster (clusterSelector) has no templates of its own
        cluster = spec["rayClusterSpec"]
        out: list[Obj] = [cluster.setdefault("headGroupSpec", {}).setdefault("template", {})]
        out += [wg.setdefault("template", {}) for wg in cluster.get("workerGroupSpecs") or []]
        return out

    def _spec_start_patch(
        self, obj: Mapping[str, Any], zone_selector: Mapping[str, str] | None, labels: Mapping[str, str] | None
    ) -> Obj:
        patch: Obj = {"suspend": False}
        cluster = (obj.get("spec") or {}).get("rayClusterSpec")
        if isinstance(cluster, dict):
            # workerGroupSpecs is a list (replaced whole by a merge patch); the head group is a map.
            workers = copy.deepcopy(cluster.get("workerGroupSpecs") or [])
            for wg in workers:
                label_pod_template(wg.setdefault("template", {}), labels or {}, zone_selector)
            ray: Obj = {"headGroupSpec": {"template": pod_template_patch(labels, zone_selector)}}
            if workers:
                ray["workerGroupSpecs"] = workers
            patch["rayClusterSpec"] = ray
        return patch

    def outcome(self, obj: Mapping[str, Any]) -> Outcome | None:
        status = obj.get("status") or {}
        deployment, job = status.get("jobDeploymentStatus"), status.get("jobStatus")
        if deployment == "Failed" or job in ("FAILED", "STOPPED"):
            return "Failed"
        if deployment == "Complete":
            return "Succeeded" if job in (None, "SUCCEEDED") else "Failed"
        return None

    def gpus(self, obj: Mapping[str, Any], resource_names: Iterable[str] = (c.GPU_RESOURCE,)) -> int:
        cluster = (obj.get("spec") or {}).get("rayClusterSpec") or {}
        names = tuple(resource_names)
        total = pod_gpus(((cluster.get("headGroupSpec") or {}).get("template") or {}).get("spec") or {}, names)
        autoscaling = bool(cluster.get("enableInTreeAutoscaling"))
        for wg in cluster.get("workerGroupSpecs") or []:
            # Full parallelism: the autoscaler may grow a group up to maxReplicas.
            replicas = int_or(wg.get("maxReplicas" if autoscaling else "replicas"), int_or(wg.get("minReplicas"), 1))
            hosts = int_or(wg.get("numOfHosts"), 1)
            total += replicas * hosts * pod_gpus((wg.get("template") or {}).get("spec") or {}, names)
        return total
