"""The agent's node-local state file: what caps it set (and the limits they replaced) and the energy
it has counted.

A restart reads it to know which limits to undo (back to what they were BEFORE greenjobs capped
them) and to continue the per-job energy totals from the last GPU counter readings, so that nothing
is counted twice, and who held each GPU since its counter was last read (so a delta spanning a gap is
split by time held). The boot id it was written under tells a restart after a reboot (counters and
limits reset by the driver, nothing held meanwhile) from a restart of the agent alone.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .pods import JobKey
from .statefile import atomic_write_json, read_json

STATE_FILE = "agent-state.json"
VERSION = 2


@dataclass
class Applied:
    mw: int  # the limit greenjobs set
    original_mw: int | None  # the limit before greenjobs first capped the GPU (None: unknown, use the default)


# A job's usage timeline (reported, so the operator charges late energy at the intensity of when it
# was used): a point at most every STEP_S, a new one after a gap, at most MAX_POINTS (the oldest
# intervals merge; the first point stays, so the timeline always reaches back to the job's start here).
STEP_S = 600.0
GAP_S = 60.0
MAX_POINTS = 24


@dataclass
class Held:
    """Who held a GPU over (start_s, end_s]: each job's share. Time in no Held is idle, no job's."""

    start_s: float
    end_s: float
    shares: dict[JobKey, float]


@dataclass
class JobTotals:
    joules: float = 0.0
    gpu_seconds: float = 0.0
    # totals at the last successful report: the next report's mean power is over the difference
    reported_joules: float = 0.0
    reported_gpu_seconds: float = 0.0
    split: set[str] = field(default_factory=set)  # split rules of shared GPUs used (empty: exact)
    released_s: float | None = None  # when the job last stopped holding any GPU here
    points: list[tuple[float, float]] = field(default_factory=list)  # (epoch s, cumulative joules)

    def add(self, joules: float, gpu_seconds: float, start_s: float, end_s: float) -> None:
        """Count what the job used over (start_s, end_s] and note it in its timeline."""
        if not self.points or start_s - self.points[-1][0] > GAP_S:
            self.points.append((start_s, self.joules))  # the start of a span after a gap
        self.joules += joules
        self.gpu_seconds += gpu_seconds
        self._note(end_s)

    def _note(self, at: float) -> None:
        pts = self.points
        if at <= pts[-1][0]:
            pts[-1] = (pts[-1][0], self.joules)  # a span ending earlier than the head: keep time monotone
        elif len(pts) >= 2 and at - pts[-2][0] < STEP_S and at - pts[-1][0] <= GAP_S:
            pts[-1] = (at, self.joules)  # still within the current step: move the head
        else:
            pts.append((at, self.joules))
            if len(pts) > MAX_POINTS:
                del pts[1]


@dataclass
class AgentState:
    applied: dict[int, Applied] = field(default_factory=dict)
    counters_mj: dict[int, int] = field(default_factory=dict)
    holders: dict[int, dict[JobKey, float]] = field(default_factory=dict)  # GPU -> job -> share
    jobs: dict[JobKey, JobTotals] = field(default_factory=dict)
    last_sample_s: float | None = None
    boot_id: str | None = None
    history: dict[int, list[Held]] = field(default_factory=dict)  # GPU -> holders since its last reading
    read_s: dict[int, float] = field(default_factory=dict)  # GPU -> when its counter was last read

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "bootId": self.boot_id,
            "applied": {str(i): {"mw": a.mw, "originalMw": a.original_mw} for i, a in self.applied.items()},
            "countersMj": {str(i): c for i, c in self.counters_mj.items()},
            "holders": {str(i): {str(j): s for j, s in h.items()} for i, h in self.holders.items()},
            "jobs": {
                str(j): {
                    "joules": t.joules,
                    "gpuSeconds": t.gpu_seconds,
                    "reportedJoules": t.reported_joules,
                    "reportedGpuSeconds": t.reported_gpu_seconds,
                    "split": sorted(t.split),
                    "releasedS": t.released_s,
                    "points": [list(p) for p in t.points],
                }
                for j, t in self.jobs.items()
            },
            "lastSampleS": self.last_sample_s,
            "history": {
                str(i): [[h.start_s, h.end_s, {str(j): v for j, v in h.shares.items()}] for h in hs]
                for i, hs in self.history.items()
            },
            "readS": {str(i): s for i, s in self.read_s.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "AgentState":
        if data.get("version", 1) == 1:
            return cls._from_v1(data)
        return cls(
            applied={
                int(i): Applied(int(a["mw"]), None if a.get("originalMw") is None else int(a["originalMw"]))
                for i, a in data["applied"].items()
            },
            counters_mj={int(i): int(c) for i, c in data["countersMj"].items()},
            holders={int(i): {JobKey.parse(j): float(s) for j, s in h.items()} for i, h in data["holders"].items()},
            jobs={
                JobKey.parse(j): JobTotals(
                    float(t["joules"]),
                    float(t["gpuSeconds"]),
                    float(t.get("reportedJoules", 0.0)),
                    float(t.get("reportedGpuSeconds", 0.0)),
                    set(t.get("split", [])),
                    None if t.get("releasedS") is None else float(t["releasedS"]),
                    [(float(a), float(b)) for a, b in t.get("points", [])],
                )
                for j, t in data["jobs"].items()
            },
            last_sample_s=data.get("lastSampleS"),
            boot_id=data.get("bootId"),
            # Absent in files from before the holder history: every GPU then reads from lastSampleS.
            history={
                int(i): [
                    Held(float(a), float(b), {JobKey.parse(j): float(v) for j, v in sh.items()}) for a, b, sh in hs
                ]
                for i, hs in data.get("history", {}).items()
            },
            read_s={int(i): float(v) for i, v in data.get("readS", {}).items()},
        )

    @classmethod
    def _from_v1(cls, data: dict[str, Any]) -> "AgentState":
        # Version 1 (before UIDs and original limits): keep the caps to undo (back to the default)
        # and the counters; its jobs, keyed by name only, cannot be matched to a UID and start anew.
        return cls(
            applied={int(i): Applied(int(a["mw"]), None) for i, a in data["applied"].items()},
            counters_mj={int(i): int(c) for i, c in data["countersMj"].items()},
            last_sample_s=data.get("lastSampleS"),
        )


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self._written: str | None = None

    def load(self) -> AgentState:
        data = read_json(self.path)
        if data is None:
            return AgentState()
        try:
            return AgentState.from_json(data)
        except (KeyError, TypeError, ValueError, AttributeError):
            # A file from an incompatible version: start afresh rather than crash-loop.
            return AgentState()

    def save(self, state: AgentState) -> None:
        data = state.to_json()
        text = json.dumps(data, sort_keys=True)
        if text != self._written:  # skip identical rewrites
            atomic_write_json(self.path, data)
            self._written = text
