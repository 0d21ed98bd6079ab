"""status.conditions as Kubernetes API conventions want them."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from greenjobs.api.durations import format_time

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class CondUpdate:
    type: str
    status: Status
    reason: str
    message: str


def apply_conditions(
    current: list[dict[str, Any]], updates: list[CondUpdate], now: datetime, generation: int | None
) -> list[dict[str, Any]]:
    """Merge `updates` into the condition list; lastTransitionTime moves only when status changes."""
    by_type = {c["type"]: dict(c) for c in current}
    for u in updates:
        old = by_type.get(u.type)
        changed = old is None or old.get("status") != u.status
        by_type[u.type] = {
            "type": u.type,
            "status": u.status,
            "reason": u.reason,
            "message": u.message,
            "lastTransitionTime": format_time(now)
            if changed or old is None
            else old.get("lastTransitionTime", format_time(now)),
            "observedGeneration": generation,
        }
    return list(by_type.values())


def condition_status(conditions: list[dict[str, Any]], type_: str) -> str | None:
    return next((c.get("status") for c in conditions if c.get("type") == type_), None)
