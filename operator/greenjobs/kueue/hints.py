"""Timing hints of a plain Kueue job: annotations on the Job/JobSet, read into the GTJ's Timing.

Safe defaults: no hint means the job may not be shifted (it starts as soon as Kueue admits it, in
the cleanest zone at that moment), exactly what the team had before adding the check. A bad hint is
reported and ignored, never guessed at.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from greenjobs.api.models import Timing

from .names import HINT_DEADLINE, HINT_ESTIMATED_DURATION, HINT_MAX_DELAY, HINT_START_WHEN_BELOW, HINT_ZONES

_ANNOTATION = {
    "estimatedDuration": HINT_ESTIMATED_DURATION,
    "deadline": HINT_DEADLINE,
    "maxDelay": HINT_MAX_DELAY,
    "startWhenBelow": HINT_START_WHEN_BELOW,
}


@dataclass(frozen=True)
class Hints:
    timing: Timing = field(default_factory=Timing)
    zones: list[str] = field(default_factory=list)  # empty: every zone that has nodes
    errors: list[str] = field(default_factory=list)  # each one becomes a Warning Event


def read_hints(annotations: Mapping[str, str] | None) -> Hints:
    ann = annotations or {}
    given = {key: ann[name] for key, name in _ANNOTATION.items() if ann.get(name)}
    zones = [z.strip() for z in ann.get(HINT_ZONES, "").split(",") if z.strip()]
    problems: list[str] = []
    if "deadline" in given and "maxDelay" in given:
        problems.append(f"{HINT_DEADLINE} and {HINT_MAX_DELAY} are mutually exclusive: set one of them")
    if ("deadline" in given or "maxDelay" in given) and "estimatedDuration" not in given:
        problems.append(f"{HINT_ESTIMATED_DURATION} is required with {HINT_DEADLINE} or {HINT_MAX_DELAY}")
    timing = Timing()
    if not problems:
        try:
            timing = Timing.model_validate(given)
        except ValidationError as exc:
            for err in exc.errors():
                names = [_ANNOTATION.get(str(part), str(part)) for part in err["loc"]]
                problems.append(f"{', '.join(names) or 'annotations'}: {err['msg']}")
    if problems:
        return Hints(Timing(), zones, [f"timing hints ignored, starting without delay: {'; '.join(problems)}"])
    return Hints(timing, zones)
