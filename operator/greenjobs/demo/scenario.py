"""What the demo plays: which traces from which moment, how fast, which jobs, which settings."""

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import greenjobs

NAMESPACE = "greenjobs-demo"
DATA = Path(greenjobs.__file__).resolve().parent / "data"
TRACES = {"GB": DATA / "gb_2020_excerpt.csv", "FR": DATA / "fr_2020_excerpt.csv"}

# Monday 9 March 2020, 20:00 UTC: the British grid is at ~196 gCO2e/kWh and falls to ~110 by midnight
# as the evening peak ends and the wind picks up; France sits at 60-65, then drops to ~43 after 23:00.
ANCHOR = datetime(2020, 3, 9, 20, 0, tzinfo=UTC)
DEFAULT_SPEEDUP = 120.0  # one trace hour every 30 s

# The jobs the demo applies (examples/<file>), in the order they are applied. Every examples/*.yaml is
# also checked with a server-side dry run.
EXAMPLES = ("urgent.yaml", "deferred.yaml", "budget.yaml", "carbon-aware.yaml")

# Phases after which the demo stops waiting for a job.
FINAL_PHASES = frozenset({"Succeeded", "Failed", "Suspended"})

# The operator looks at each job every second, re-plans deferred ones every 10 s and re-evaluates
# carbon-aware caps every 2 s (the chart's defaults are 10 s, 5 min and 1 min).
OPERATOR_SETTINGS: dict[str, Any] = {
    "tickSeconds": 1,
    "replanInterval": "10s",
    "powerInterval": "2s",
    "metricsPort": 0,
}
AGENT_REPORT_INTERVAL_S = 2


@dataclass(frozen=True)
class Replay:
    anchor: datetime
    speedup: float
    started: datetime  # real time at which `anchor` plays

    def provider_spec(self) -> dict[str, Any]:
        return {
            "type": "replay",
            "traces": {zone: str(path) for zone, path in TRACES.items()},
            "anchor": self.anchor.isoformat(),
            "speedup": self.speedup,
            "started": self.started.isoformat(),
        }

    def trace_time(self, real: datetime) -> datetime:
        return self.anchor + (real - self.started) * self.speedup


def operator_config(replay: Replay) -> dict[str, Any]:
    return {**OPERATOR_SETTINGS, "providers": [replay.provider_spec()]}


def agent_env(node: str, state_dir: Path, gpus: int) -> dict[str, str]:
    return {
        "NODE_NAME": node,
        "GREENJOBS_GPU_BACKEND": "simulated",
        "GREENJOBS_SIM_GPUS": str(gpus),
        "GREENJOBS_PODRESOURCES": "simulated",
        "GREENJOBS_STATE_DIR": str(state_dir),
        "GREENJOBS_REPORT_INTERVAL": str(AGENT_REPORT_INTERVAL_S),
        "GREENJOBS_SAMPLE_INTERVAL": "1",
        "GREENJOBS_METRICS_PORT": "0",
        "GREENJOBS_NAMESPACES": NAMESPACE,  # leave other namespaces' pods alone on a shared cluster
    }
