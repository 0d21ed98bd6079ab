"""When a GreenTrainingJob may run: its window from spec.timing and creation time."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from greenjobs.api.durations import parse_duration
from greenjobs.api.models import Timing


@dataclass(frozen=True)
class Window:
    duration: timedelta | None  # estimatedDuration
    latest_start: datetime  # equals creation time for a job that may not be shifted
    deadline: datetime | None  # latest completion
    shiftable: bool


def window_of(timing: Timing, created: datetime) -> Window:
    duration = timing.duration()
    if timing.deadline is not None and duration is not None:
        return Window(duration, timing.deadline - duration, timing.deadline, True)
    if timing.max_delay is not None and duration is not None:
        latest = created + parse_duration(timing.max_delay)
        return Window(duration, latest, latest + duration, True)
    return Window(duration, created, created + duration if duration else None, False)
