"""Names of the Kueue API and of greenjobs' own markers on Kueue objects."""

from typing import Final

from greenjobs.api.constants import GROUP

KUEUE_GROUP: Final = "kueue.x-k8s.io"
KUEUE_VERSION: Final = "v1beta2"
KUEUE_API: Final = f"{KUEUE_GROUP}/{KUEUE_VERSION}"
CONTROLLER_NAME: Final = f"{GROUP}/carbon"
FIELD_MANAGER: Final = "greenjobs-carbon-check"

# On a Workload: the plan, and that greenjobs (not the user) deactivated it to wait without quota.
ANN_PLANNED_ZONE: Final = f"{GROUP}/planned-zone"
ANN_PLANNED_START: Final = f"{GROUP}/planned-start"
ANN_PLAN_MESSAGE: Final = f"{GROUP}/plan"
ANN_DECIDED_AT: Final = f"{GROUP}/planned-at"
ANN_HELD: Final = f"{GROUP}/held-until"

# Timing hints on the job (Job, JobSet, ...) that Kueue made the Workload for.
HINT_ESTIMATED_DURATION: Final = f"{GROUP}/estimated-duration"
HINT_DEADLINE: Final = f"{GROUP}/deadline"
HINT_MAX_DELAY: Final = f"{GROUP}/max-delay"
HINT_ZONES: Final = f"{GROUP}/zones"
HINT_START_WHEN_BELOW: Final = f"{GROUP}/start-when-below"
