"""The workload a GreenTrainingJob owns (a batch/v1 Job, JobSet, TrainJob, PyTorchJob or RayJob),
through the adapter of its kind (greenjobs.workloads): built suspended with our labels, finalizer and
template digest; placed and started at its planned start.

Kueue-managed workloads (the template carries kueue.x-k8s.io/queue-name) are never unsuspended by
greenjobs: they are created suspended WITHOUT the queue label, so that Kueue ignores them and no quota
is held while they wait for their clean window; the start adds the label back with the zone's
nodeSelector, and Kueue admits and unsuspends them (docs/kueue.md).
"""

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from greenjobs.api import constants as c
from greenjobs.api.models import GreenTrainingJobSpec
from greenjobs.workloads import QUEUE_LABEL, WorkloadAdapter, adapter_for, owned_by
from greenjobs.workloads.batch import BatchJobAdapter

BATCH = BatchJobAdapter()
# Where a held-back queue name waits until the start (on the workload itself: restart-safe).
ANNOTATION_QUEUE = f"{c.GROUP}/queue-name"
ANNOTATION_ZONES = f"{c.GROUP}/zones"  # the Kueue check's zone hint (greenjobs.kueue.hints)

__all__ = [
    "ANNOTATION_QUEUE",
    "adapter_of",
    "adapter_of_object",
    "build_job",
    "kueue_managed",
    "owned_by",
    "start_patches",
    "template_hash",
    "workload_template",
]


def adapter_of(spec: Mapping[str, Any]) -> WorkloadAdapter:
    """The adapter of the workload a GTJ spec (raw) wraps: spec.workload's kind, else a batch Job."""
    workload = spec.get("workload")
    if workload:
        return adapter_for(str(workload.get("apiVersion", "")), str(workload.get("kind", "")))
    return BATCH


def adapter_of_object(obj: Mapping[str, Any]) -> WorkloadAdapter:
    return adapter_for(str(obj.get("apiVersion", "batch/v1")), str(obj.get("kind", "Job")))


def workload_template(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The user's workload template in a GTJ spec: {metadata, spec} (what its workload is built from)."""
    return dict(spec.get("jobTemplate") or spec.get("workload") or {})


def template_hash(template: Mapping[str, Any]) -> str:
    """A short, stable digest of the user's workload template: a changed template replaces a workload
    that never ran, and only such a change does (no diff base kept anywhere)."""
    raw = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def kueue_managed(spec: Mapping[str, Any]) -> bool:
    """The workload (raw GTJ spec) names a Kueue queue: Kueue admits and suspends it, not greenjobs."""
    meta = workload_template(spec).get("metadata") or {}
    return QUEUE_LABEL in (meta.get("labels") or {})


def our_labels(name: str, uid: str, zone: str | None) -> dict[str, str]:
    return {c.LABEL_JOB: name, c.LABEL_JOB_UID: uid, **({c.LABEL_ZONE: zone} if zone else {})}


def build_job(
    name: str,
    namespace: str,
    uid: str,
    spec: GreenTrainingJobSpec,
    *,
    zone: str | None,
    zone_selector: dict[str, str] | None,
    start_now: bool,
    digest: str | None = None,
    started_at: str | None = None,
) -> dict[str, Any]:
    """The owned workload: our labels on it and every pod template, an ownerReference (deletion
    cascades), our finalizer (an outcome is never lost), suspended unless starting now.

    The zone's node selector is added only when it starts (the Kueue pattern), so a re-plan to
    another zone while deferred needs no template change.
    """
    raw = spec.model_dump(by_alias=True, exclude_none=True)
    adapter = adapter_of(raw)
    template = workload_template(raw)
    template = {"metadata": template.get("metadata") or {}, "spec": template.get("spec") or {}}
    queue = (template["metadata"].get("labels") or {}).get(QUEUE_LABEL)
    held = queue is not None and not start_now
    if held:  # Kueue ignores it until the label comes back at the start: no quota held meanwhile
        labels = {k: v for k, v in template["metadata"]["labels"].items() if k != QUEUE_LABEL}
        template["metadata"] = {**template["metadata"], "labels": labels}
    obj = adapter.build(
        template,
        name=name,
        namespace=namespace,
        owner_uid=uid,
        labels=our_labels(name, uid, zone),
        # Kueue-managed: created suspended whatever the plan says; Kueue unsuspends at admission.
        suspended=not start_now or queue is not None,
        zone_selector=zone_selector if start_now else None,
    )
    grace = spec.interruption.grace() if spec.interruption is not None else None
    if grace is not None:  # a pause deletes the pods: they get the time to save their checkpoint
        for pod in adapter.pod_templates(obj):
            pod_spec = pod.setdefault("spec", {})
            default = 30  # the API server's default grace period
            current = int(pod_spec.get("terminationGracePeriodSeconds") or default)
            pod_spec["terminationGracePeriodSeconds"] = max(current, int(grace.total_seconds()))
    meta = obj["metadata"]
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        c.ANNOTATION_TEMPLATE_HASH: digest or template_hash(workload_template(raw)),
        **({ANNOTATION_QUEUE: queue} if held else {}),
        **({c.ANNOTATION_STARTED_AT: started_at} if start_now and started_at else {}),
    }
    # Ours until the outcome is recorded: TTL, a delete by hand or GC cannot lose it.
    meta["finalizers"] = [*(meta.get("finalizers") or []), c.JOB_FINALIZER]
    return obj


def start_patches(
    obj: Mapping[str, Any],
    name: str,
    uid: str,
    zone: str | None,
    zone_selector: dict[str, str] | None,
    started_at: str | None = None,
) -> list[dict[str, Any]]:
    """Merge patches, in order, that place the workload in `zone` and start it. A Kueue-managed one
    gets its queue label back and stays suspended: Kueue admits it and unsuspends it. The last patch,
    the one that lets it run, carries `started_at`."""
    adapter = adapter_of_object(obj)
    labels = our_labels(name, uid, zone)
    queue = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_QUEUE)
    patches = adapter.start_patches(obj, zone_selector, labels)
    last = patches[-1]
    if started_at:
        last.setdefault("metadata", {}).setdefault("annotations", {})[c.ANNOTATION_STARTED_AT] = started_at
    if queue is None and adapter.queue_name(obj) is None:
        return patches
    for p in patches:
        _keep_suspended(p)
    if queue is not None:
        meta = last.setdefault("metadata", {})
        meta.setdefault("labels", {})[QUEUE_LABEL] = queue
        annotations = meta.setdefault("annotations", {})
        annotations[ANNOTATION_QUEUE] = None
        if zone:  # a ClusterQueue with the carbon check then places it in the zone planned here, at once
            annotations[ANNOTATION_ZONES] = zone
    return patches


def _keep_suspended(patch: dict[str, Any]) -> None:
    """Drop every `suspend: false` a start patch carries (spec.suspend, runPolicy.suspend)."""
    for key, value in list(patch.items()):
        if key == "suspend" and value is False:
            del patch[key]
        elif isinstance(value, dict):
            _keep_suspended(value)
