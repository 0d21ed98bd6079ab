"""The agent's node-local state file: what caps it set (and the limits they replaced) and the energy
it has counted.

A restart reads it to know which limits to undo (back to what they were BEFORE greenjobs capped
them) and to continue the per-job energy totals from the last GPU counter readings, so that nothing
is counted twice. The boot id it was written under tells a restart after a reboot (counters and
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


@dataclass
class JobTotals:
    joules: float = 0.0
    gpu_seconds: float = 0.0
    # totals at the last successful report: the next report's mean power is over the difference
    reported_joules: float = 0.0
    reported_gpu_seconds: float = 0.0
    split: set[str] = field(default_factory=set)  # split rules of shared GPUs used (empty: exact)
    released_s: float | None = None  # when the job last stopped holding any GPU here


@dataclass
class AgentState:
    applied: dict[int, Applied] = field(default_factory=dict)
    counters_mj: dict[int, int] = field(default_factory=dict)
    holders: dict[int, dict[JobKey, float]] = field(default_factory=dict)  # GPU -> job -> share
    jobs: dict[JobKey, JobTotals] = field(default_factory=dict)
    last_sample_s: float | None = None
    boot_id: str | None = None

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
                }
                for j, t in self.jobs.items()
            },
            "lastSampleS": self.last_sample_s,
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
                )
                for j, t in data["jobs"].items()
            },
            last_sample_s=data.get("lastSampleS"),
            boot_id=data.get("bootId"),
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
