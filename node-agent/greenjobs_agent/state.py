"""The agent's node-local state file: what caps it set and the energy it has counted.

A restart reads it to know which limits to undo and to continue the per-job energy totals from the
last GPU counter readings, so that nothing is counted twice.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .pods import JobKey
from .statefile import atomic_write_json, read_json

STATE_FILE = "agent-state.json"


@dataclass
class Applied:
    job: JobKey
    mw: int


@dataclass
class JobTotals:
    joules: float = 0.0
    gpu_seconds: float = 0.0
    # totals at the last successful report: the next report's mean power is over the difference
    reported_joules: float = 0.0
    reported_gpu_seconds: float = 0.0


@dataclass
class AgentState:
    applied: dict[int, Applied] = field(default_factory=dict)
    counters_mj: dict[int, int] = field(default_factory=dict)
    holders: dict[int, JobKey] = field(default_factory=dict)
    jobs: dict[JobKey, JobTotals] = field(default_factory=dict)
    last_sample_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "applied": {str(i): {"job": str(a.job), "mw": a.mw} for i, a in self.applied.items()},
            "countersMj": {str(i): c for i, c in self.counters_mj.items()},
            "holders": {str(i): str(j) for i, j in self.holders.items()},
            "jobs": {
                str(j): {
                    "joules": t.joules,
                    "gpuSeconds": t.gpu_seconds,
                    "reportedJoules": t.reported_joules,
                    "reportedGpuSeconds": t.reported_gpu_seconds,
                }
                for j, t in self.jobs.items()
            },
            "lastSampleS": self.last_sample_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "AgentState":
        return cls(
            applied={int(i): Applied(JobKey.parse(a["job"]), int(a["mw"])) for i, a in data["applied"].items()},
            counters_mj={int(i): int(c) for i, c in data["countersMj"].items()},
            holders={int(i): JobKey.parse(j) for i, j in data["holders"].items()},
            jobs={
                JobKey.parse(j): JobTotals(
                    float(t["joules"]),
                    float(t["gpuSeconds"]),
                    float(t.get("reportedJoules", 0.0)),
                    float(t.get("reportedGpuSeconds", 0.0)),
                )
                for j, t in data["jobs"].items()
            },
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
        except (KeyError, TypeError, ValueError):
            # A file from an incompatible version: start afresh rather than crash-loop.
            return AgentState()

    def save(self, state: AgentState) -> None:
        data = state.to_json()
        text = json.dumps(data, sort_keys=True)
        if text != self._written:  # skip identical rewrites
            atomic_write_json(self.path, data)
            self._written = text
