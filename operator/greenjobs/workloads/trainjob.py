"""TrainJob (Kubeflow Trainer v2, trainer.kubeflow.org/v1alpha1, checked against v2.2.0's API types).

A TrainJob has no pod templates of its own: they are in its (Cluster)TrainingRuntime. Labels and the
zone's nodeSelector therefore go in through `spec.runtimePatches` (an entry with our own manager),
keyed by the runtime's replicatedJob names. Trainer's webhook refuses a change of runtimePatches
unless the NEW object is still suspended, and refuses names the runtime lacks, so a start is two
patches (the runtime patch while suspended, then the unsuspend) and the names come from the
annotation `greenjobs.dev/replicated-jobs` (comma-separated), default `node` (the training step of
Trainer's built-in runtimes).
"""

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from greenjobs.api import constants as c

from .base import Obj, Outcome, condition_true, int_or, object_metadata, queue_name

MANAGER = "greenjobs.dev/manager"
REPLICATED_JOBS_ANNOTATION = "greenjobs.dev/replicated-jobs"
DEFAULT_REPLICATED_JOBS = ("node",)


class TrainJobAdapter:
    kind = "TrainJob"
    api_version = "trainer.kubeflow.org/v1alpha1"
    group = "trainer.kubeflow.org"
    plural = "trainjobs"

    def replicated_jobs(self, obj: Mapping[str, Any]) -> list[str]:
        raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(REPLICATED_JOBS_ANNOTATION)
        names = [n.strip() for n in str(raw).split(",") if n.strip()] if raw else []
        return names or list(DEFAULT_REPLICATED_JOBS)

    def runtime_patch(
        self, obj: Mapping[str, Any], labels: Mapping[str, str], zone_selector: Mapping[str, str] | None
    ) -> Obj:
        """Our runtimePatches entry: labels on the JobSet and on the pods of each replicatedJob, and
        the zone's nodeSelector on those pods when given."""
        pod: Obj = {"metadata": {"labels": dict(labels)}}
        if zone_selector:
            pod["spec"] = {"nodeSelector": dict(zone_selector)}
        jobs = [{"name": n, "template": {"spec": {"template": copy.deepcopy(pod)}}} for n in self.replicated_jobs(obj)]
        return {
            "manager": MANAGER,
            "trainingRuntimeSpec": {
                "template": {"metadata": {"labels": dict(labels)}, "spec": {"replicatedJobs": jobs}}
            },
        }

    def _ours(self, obj: Mapping[str, Any]) -> Obj | None:
        for p in (obj.get("spec") or {}).get("runtimePatches") or []:
            if p.get("manager") == MANAGER:
                return dict(p)
        return None

    def _pod_labels(self, obj: Mapping[str, Any]) -> dict[str, str]:
        ours = self._ours(obj) or {}
        meta = ((ours.get("trainingRuntimeSpec") or {}).get("template") or {}).get("metadata") or {}
        return dict(meta.get("labels") or {})

    def build(
        self,
        template: Mapping[str, Any],
        *,
        name: str,
        namespace: str,
        owner_uid: str,
        labels: Mapping[str, str],
        suspended: bool,
        zone_selector: Mapping[str, str] | None = None,
    ) -> Obj:
        spec = copy.deepcopy(dict(template.get("spec") or {}))
        meta = object_metadata(
            template.get("metadata") or {}, name=name, namespace=namespace, owner_uid=owner_uid, labels=labels
        )
        obj: Obj = {"apiVersion": self.api_version, "kind": self.kind, "metadata": meta, "spec": spec}
        others = [p for p in spec.get("runtimePatches") or [] if p.get("manager") != MANAGER]
        spec["runtimePatches"] = [*others, self.runtime_patch(obj, labels, zone_selector)]
        spec["suspend"] = suspended
        return obj

    def start_patches(
        self, obj: Mapping[str, Any], zone_selector: Mapping[str, str] | None, labels: Mapping[str, str] | None = None
    ) -> list[Obj]:
        # runtimePatches is a list map keyed by manager, but a merge patch replaces lists: resend the
        # other managers' entries (Kueue's, the user's) unchanged with ours replaced.
        all_labels = {**self._pod_labels(obj), **(labels or {})}
        others = [p for p in (obj.get("spec") or {}).get("runtimePatches") or [] if p.get("manager") != MANAGER]
        placed: Obj = {
            "spec": {"suspend": True, "runtimePatches": [*others, self.runtime_patch(obj, all_labels, zone_selector)]}
        }
        start: Obj = {"spec": {"suspend": False}}
        if labels:
            placed["metadata"] = {"labels": dict(labels)}
        return [placed, start]

    def suspend_patch(self, obj: Mapping[str, Any]) -> Obj:
        return {"spec": {"suspend": True}}

    def is_suspended(self, obj: Mapping[str, Any]) -> bool:
        return bool((obj.get("spec") or {}).get("suspend"))

    def outcome(self, obj: Mapping[str, Any]) -> Outcome | None:
        if condition_true(obj, "Complete"):
            return "Succeeded"
        if condition_true(obj, "Failed"):
            return "Failed"
        return None

    def gpus(self, obj: Mapping[str, Any], resource_names: Iterable[str] = (c.GPU_RESOURCE,)) -> int:
        """numNodes x resourcesPerNode (the runtime's own numbers are not known here: 1 node when unset)."""
        trainer = (obj.get("spec") or {}).get("trainer") or {}
        resources = trainer.get("resourcesPerNode") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        per_node = 0
        for r in resource_names:
            try:
                per_node += int(float(str(limits.get(r, requests.get(r, 0)))))
            except ValueError:
                continue
        return int_or(trainer.get("numNodes"), 1) * per_node

    def pod_templates(self, obj: Mapping[str, Any]) -> list[Obj]:
        return []  # they live in the TrainingRuntime; see runtime_patch

    def queue_name(self, obj: Mapping[str, Any]) -> str | None:
        return queue_name(obj)
