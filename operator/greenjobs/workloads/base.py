"""What every workload adapter shares: the interface, and helpers on pod templates and metadata.

An adapter knows one suspendable kind (the way Kueue's jobframework has one integration per kind):
how to build it suspended with our labels on every pod template, the patch that places it in a zone
and starts it, whether it has finished, and how many GPUs it asks for. Pure functions on plain
dicts: no Kubernetes calls here.
"""

import copy
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol

from greenjobs.api import constants as c

Obj = dict[str, Any]
Outcome = Literal["Succeeded", "Failed"]
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


class WorkloadAdapter(Protocol):
    kind: str
    api_version: str
    group: str
    plural: str

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
        """The full object to create from `template` ({metadata, spec}): our labels on it and on every
        pod template, a controller ownerReference to the GreenTrainingJob `name`, suspended or not;
        `zone_selector` is set on every pod template when given (a start at once)."""
        ...

    def start_patches(
        self, obj: Mapping[str, Any], zone_selector: Mapping[str, str] | None, labels: Mapping[str, str] | None = None
    ) -> list[Obj]:
        """JSON merge patches, applied in order, that put the zone's nodeSelector (and `labels`) on
        every pod template and unsuspend. One patch for every kind but TrainJob (two: its runtime
        patches may change only while it stays suspended)."""
        ...

    def suspend_patch(self, obj: Mapping[str, Any]) -> Obj: ...

    def is_suspended(self, obj: Mapping[str, Any]) -> bool: ...

    def outcome(self, obj: Mapping[str, Any]) -> Outcome | None: ...

    def gpus(self, obj: Mapping[str, Any], resource_names: Iterable[str] = (c.GPU_RESOURCE,)) -> int:
        """GPUs at full parallelism: every pod of every replica running at once."""
        ...

    def pod_templates(self, obj: Mapping[str, Any]) -> list[Obj]:
        """The pod templates inside `obj` (the very dicts, so a caller may edit a copy in place)."""
        ...

    def queue_name(self, obj: Mapping[str, Any]) -> str | None: ...


def owner_reference(name: str, uid: str) -> Obj:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences", []) or [])


def object_metadata(
    template_meta: Mapping[str, Any], *, name: str, namespace: str, owner_uid: str, labels: Mapping[str, str]
) -> Obj:
    """Metadata of the created object: the template's labels and annotations plus ours (ours win),
    the name and namespace of the GreenTrainingJob, owned by it (deletion cascades)."""
    meta: Obj = {"name": name, "namespace": namespace}
    if template_meta.get("annotations"):
        meta["annotations"] = dict(template_meta["annotations"])
    meta["labels"] = {**(template_meta.get("labels") or {}), **labels}
    meta["ownerReferences"] = [owner_reference(name, owner_uid)]
    return meta


def label_pod_template(pod_template: Obj, labels: Mapping[str, str], zone_selector: Mapping[str, str] | None) -> None:
    """In place: our labels on the pod template, and the zone's nodeSelector when given."""
    pod_meta = pod_template.setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **labels}
    if zone_selector:
        pod_spec = pod_template.setdefault("spec", {})
        pod_spec["nodeSelector"] = {**(pod_spec.get("nodeSelector") or {}), **zone_selector}


def pod_template_patch(labels: Mapping[str, str] | None, zone_selector: Mapping[str, str] | None) -> Obj:
    """The merge-patch fragment for one pod template (maps merge key by key, so this is enough)."""
    patch: Obj = {}
    if labels:
        patch["metadata"] = {"labels": dict(labels)}
    if zone_selector:
        patch["spec"] = {"nodeSelector": dict(zone_selector)}
    return patch


def patched_pod_template(
    pod_template: Mapping[str, Any], labels: Mapping[str, str] | None, zone_selector: Mapping[str, str] | None
) -> Obj:
    """A copy of a whole pod template with labels and nodeSelector set: for templates inside lists,
    which a merge patch replaces whole."""
    out = copy.deepcopy(dict(pod_template))
    label_pod_template(out, labels or {}, zone_selector)
    return out


def _quantity(value: Any) -> int:
    """An extended resource's quantity (GPUs are whole numbers: "2", 2, "2.0")."""
    try:
        return int(float(str(value)))
    except ValueError:
        return 0


def container_gpus(container: Mapping[str, Any], resource_names: Iterable[str]) -> int:
    resources = container.get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    return sum(_quantity(limits.get(r, requests.get(r, 0))) for r in resource_names)


def pod_gpus(pod_spec: Mapping[str, Any], resource_names: Iterable[str]) -> int:
    """A pod's GPUs as the scheduler counts them: the sum over containers, or the largest init
    container if that is more."""
    names = tuple(resource_names)
    main = sum(container_gpus(ct, names) for ct in pod_spec.get("containers") or [])
    init = max((container_gpus(ct, names) for ct in pod_spec.get("initContainers") or []), default=0)
    return max(main, init)


def condition_true(obj: Mapping[str, Any], *types: str) -> bool:
    return any(
        cond.get("status") == "True" and cond.get("type") in types
        for cond in (obj.get("status") or {}).get("conditions") or []
    )


def queue_name(obj: Mapping[str, Any]) -> str | None:
    value = ((obj.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)
    return str(value) if value else None


def int_or(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else default
