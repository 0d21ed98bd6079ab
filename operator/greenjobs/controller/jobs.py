"""The batch/v1 Job that a GreenTrainingJob owns: built suspended, unsuspended at scheduledStart."""

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from greenjobs.api import constants as c
from greenjobs.api.models import GreenTrainingJobSpec


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
) -> dict[str, Any]:
    """The owned Job: our labels, an ownerReference (deletion cascades), suspended unless starting now.

    The zone's node selector is added only when the Job starts (the Kueue pattern), so a re-plan to
    another zone while deferred needs no template change.
    """
    template = spec.job_template
    meta = copy.deepcopy(template.metadata)
    job_spec = copy.deepcopy(template.spec)
    labels = {**meta.get("labels", {}), c.LABEL_JOB: name, c.LABEL_JOB_UID: uid}
    if zone:
        labels[c.LABEL_ZONE] = zone
    pod_template = job_spec.setdefault("template", {})
    pod_meta = pod_template.setdefault("metadata", {})
    pod_meta["labels"] = {**pod_meta.get("labels", {}), **labels}
    if start_now and zone_selector:
        pod_spec = pod_template.setdefault("spec", {})
        pod_spec["nodeSelector"] = {**pod_spec.get("nodeSelector", {}), **zone_selector}
    job_spec["suspend"] = not start_now
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "annotations": {
                **meta.get("annotations", {}),
                c.ANNOTATION_TEMPLATE_HASH: digest
                or template_hash(spec.job_template.model_dump(by_alias=True, exclude_none=True)),
            },
            # Ours until the outcome is recorded: TTL, a delete by hand or GC cannot lose it.
            "finalizers": [c.JOB_FINALIZER],
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": c.API_VERSION,
                    "kind": c.KIND,
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": job_spec,
    }


def template_hash(template: Mapping[str, Any]) -> str:
    """A short, stable digest of the user's workload template: a changed template replaces a Job that
    never ran, and only such a change does (no diff base kept anywhere)."""
    raw = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def workload_template(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The user's workload template in a GTJ spec (what its Job is built from)."""
    return dict(spec.get("jobTemplate") or spec.get("workload") or {})


def start_patch(name: str, zone: str | None, zone_selector: dict[str, str] | None) -> dict[str, Any]:
    """Merge patch that starts a suspended Job in `zone` (node selector and label, then unsuspend)."""
    labels = {c.LABEL_JOB: name, **({c.LABEL_ZONE: zone} if zone else {})}
    pod_spec: dict[str, Any] = {"nodeSelector": zone_selector} if zone_selector else {}
    return {
        "metadata": {"labels": labels},
        "spec": {"suspend": False, "template": {"metadata": {"labels": labels}, "spec": pod_spec}},
    }


def owned_by(job: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in job.get("metadata", {}).get("ownerReferences", []))


def job_outcome(job: dict[str, Any]) -> str | None:
    """'Succeeded' / 'Failed' when the Job has finished, else None."""
    for cond in job.get("status", {}).get("conditions", []) or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "Succeeded"
        if cond.get("status") == "True" and cond.get("type") in ("Failed", "FailureTarget"):
            return "Failed"
    return None
