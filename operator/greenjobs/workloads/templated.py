"""Shared shape of the kinds whose pod templates sit inside the object (all but TrainJob)."""

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from greenjobs.api import constants as c

from .base import Obj, Outcome, label_pod_template, object_metadata, queue_name


class TemplatedAdapter:
    """Build, suspend and read the kinds that carry their pod templates; subclasses say where."""

    kind: str = ""
    api_version: str = ""
    group: str = ""
    plural: str = ""

    # --- where things live (per kind)
    def pod_templates(self, obj: Mapping[str, Any]) -> list[Obj]:
        raise NotImplementedError

    def _set_suspend(self, spec: Obj, suspended: bool) -> None:
        spec["suspend"] = suspended

    def _suspend_fragment(self, suspended: bool) -> Obj:
        return {"suspend": suspended}

    def _spec_start_patch(
        self, obj: Mapping[str, Any], zone_selector: Mapping[str, str] | None, labels: Mapping[str, str] | None
    ) -> Obj:
        raise NotImplementedError

    def is_suspended(self, obj: Mapping[str, Any]) -> bool:
        return bool((obj.get("spec") or {}).get("suspend"))

    def outcome(self, obj: Mapping[str, Any]) -> Outcome | None:
        raise NotImplementedError

    def gpus(self, obj: Mapping[str, Any], resource_names: Iterable[str] = (c.GPU_RESOURCE,)) -> int:
        raise NotImplementedError

    # --- the same for every kind
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
        obj: Obj = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": object_metadata(
                template.get("metadata") or {}, name=name, namespace=namespace, owner_uid=owner_uid, labels=labels
            ),
            "spec": spec,
        }
        for pod_template in self.pod_templates(obj):
            label_pod_template(pod_template, labels, zone_selector)
        self._set_suspend(spec, suspended)
        return obj

    def start_patches(
        self, obj: Mapping[str, Any], zone_selector: Mapping[str, str] | None, labels: Mapping[str, str] | None = None
    ) -> list[Obj]:
        patch: Obj = {"spec": self._spec_start_patch(obj, zone_selector, labels)}
        if labels:
            patch["metadata"] = {"labels": dict(labels)}
        return [patch]

    def suspend_patch(self, obj: Mapping[str, Any]) -> Obj:
        return {"spec": self._suspend_fragment(True)}

    def queue_name(self, obj: Mapping[str, Any]) -> str | None:
        return queue_name(obj)
