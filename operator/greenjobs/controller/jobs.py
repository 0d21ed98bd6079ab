"""The batch/v1 Job that a GreenTrainingJob owns: thin wrappers over the batch workload adapter
(greenjobs.workloads.batch), kept with their old signatures for the reconciler."""

from typing import Any

from greenjobs.api import constants as c
from greenjobs.api.models import GreenTrainingJobSpec
from greenjobs.workloads import owned_by
from greenjobs.workloads.batch import BatchJobAdapter

BATCH = BatchJobAdapter()

__all__ = ["build_job", "job_outcome", "owned_by", "start_patch"]


def build_job(
    name: str,
    namespace: str,
    uid: str,
    spec: GreenTrainingJobSpec,
    *,
    zone: str | None,
    zone_selector: dict[str, str] | None,
    start_now: bool,
) -> dict[str, Any]:
    """The owned Job: our labels, an ownerReference (deletion cascades), suspended unless starting now.

    The zone's node selector is added only when the Job starts (the Kueue pattern), so a re-plan to
    another zone while deferred needs no template change.
    """
    labels = {c.LABEL_JOB: name, **({c.LABEL_ZONE: zone} if zone else {})}
    template = spec.job_template
    if template is None:
        raise ValueError("build_job needs spec.jobTemplate; other workloads go through greenjobs.workloads")
    return BATCH.build(
        {"metadata": template.metadata, "spec": template.spec},
        name=name,
        namespace=namespace,
        owner_uid=uid,
        labels=labels,
        suspended=not start_now,
        zone_selector=zone_selector if start_now else None,
    )


def start_patch(name: str, zone: str | None, zone_selector: dict[str, str] | None) -> dict[str, Any]:
    """Merge patch that starts a suspended Job in `zone` (node selector and label, then unsuspend)."""
    labels = {c.LABEL_JOB: name, **({c.LABEL_ZONE: zone} if zone else {})}
    (patch,) = BATCH.start_patches({}, zone_selector, labels)
    return patch


def job_outcome(job: dict[str, Any]) -> str | None:
    """'Succeeded' / 'Failed' when the Job has finished, else None."""
    return BATCH.outcome(job)
