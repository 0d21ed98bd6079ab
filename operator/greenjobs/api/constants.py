"""Names shared by the operator, the node agent, the chart and the tests (API.md)."""

from typing import Final

GROUP: Final = "greenjobs.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "GreenTrainingJob"
PLURAL: Final = "greentrainingjobs"
SINGULAR: Final = "greentrainingjob"
SHORT_NAMES: Final = ("gtj", "gtjs")
CATEGORY: Final = "greenjobs"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

LABEL_JOB: Final = f"{GROUP}/job"
LABEL_ZONE: Final = f"{GROUP}/zone"
# On every pod template the operator creates: the GreenTrainingJob's UID. Agents key energy by it, so
# a deleted and re-applied GTJ of the same name starts from zero.
LABEL_JOB_UID: Final = f"{GROUP}/job-uid"
# On a finished GreenTrainingJob once nothing more can change it (outcome recorded, late energy folded
# in, Job let go): the operator's watch selects it out, so months of finished jobs cost it nothing.
LABEL_SETTLED: Final = f"{GROUP}/settled"
# On the Job a GTJ owns while its outcome is not yet recorded: the Job (and its status) cannot
# vanish (TTL, manual delete, GC) before the operator has read it.
JOB_FINALIZER: Final = f"{GROUP}/outcome"
# On the owned Job: digest of the template it was built from (a changed template replaces a Job that never ran).
ANNOTATION_TEMPLATE_HASH: Final = f"{GROUP}/template-hash"
# On the owned Job, written with the change that lets it run: when greenjobs started it. A restart
# that finds the Job running before its status says so records this, not the moment it looked.
ANNOTATION_STARTED_AT: Final = f"{GROUP}/started-at"
# On the owned workload, written with the patch that suspends it for a planned pause: when greenjobs
# paused it. A restart that finds it suspended while status says Running records the pause, not a
# suspension by someone else, and counts the work done up to this time.
ANNOTATION_PAUSED_AT: Final = f"{GROUP}/paused-at"
# On a GreenTrainingJob, set by the workload (or whoever watches it): the fraction of the whole run's
# work done, 0 to 1 (e.g. "0.42"). Where present it corrects the operator's own estimate of progress.
ANNOTATION_PROGRESS: Final = f"{GROUP}/progress"
NODE_ZONE_LABEL: Final = f"{GROUP}/grid-zone"
FINALIZER: Final = f"{GROUP}/cleanup"

GPU_RESOURCE: Final = "nvidia.com/gpu"


class Phase:
    PENDING: Final = "Pending"
    DEFERRED: Final = "Deferred"
    RUNNING: Final = "Running"
    SUCCEEDED: Final = "Succeeded"
    FAILED: Final = "Failed"
    SUSPENDED: Final = "Suspended"
    PAUSED: Final = "Paused"  # a planned pause at a checkpoint: resumes at the plan's next segment

    FINISHED: Final = frozenset({"Succeeded", "Failed"})
    ALL: Final = ("Pending", "Deferred", "Running", "Succeeded", "Failed", "Suspended", "Paused")


class Cond:
    """Condition types of status.conditions."""

    PLANNED: Final = "Planned"
    STARTED: Final = "Started"
    COMPLETE: Final = "Complete"
    FAILED: Final = "Failed"
    POWER_CAPPED: Final = "PowerCapped"
    FORECAST_UNAVAILABLE: Final = "ForecastUnavailable"
    DEADLINE_AT_RISK: Final = "DeadlineAtRisk"
    BUDGET_EXCEEDED: Final = "BudgetExceeded"
    INVALID_TEMPLATE: Final = "InvalidTemplate"
    ZONE_UNAVAILABLE: Final = "ZoneUnavailable"
    SPEC_APPLIED: Final = "SpecApplied"  # whether the last spec change could be applied
    PAUSED: Final = "Paused"  # paused by its whole-run plan (dirty hours): reason and planned resume
    PODS_READY: Final = "PodsReady"  # started, and its pods run (False: they wait for the scheduler)
