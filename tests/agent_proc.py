"""Run the real node agent (`greenjobs agent`) as a process for one fake node of the test control plane.

Simulated GPUs and simulated PodResources, its own state dir, and (by default) only the pods and
GreenTrainingJobs of the given namespaces, so that agents of other tests on the same fake node never
disturb each other. The simulated GPUs' limits and energy counters are read from outside the process
through the state dir (`limits_watts()`, `counters_mj()`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from greenjobs_agent.gpu.simulated import SimulatedBackend, read_simulated_limits_watts
from greenjobs_agent.podresources import SIM_STATE_FILE
from tests.kube import Cluster, ManagedProcess, wait_until

FAST_AGENT_ENV: dict[str, str] = {
    "GREENJOBS_GPU_BACKEND": "simulated",
    "GREENJOBS_PODRESOURCES": "simulated",
    "GREENJOBS_SAMPLE_INTERVAL": "0.5",
    "GREENJOBS_REPORT_INTERVAL": "1",
    "GREENJOBS_METRICS_PORT": "0",
}


@dataclass
class AgentProcess(ManagedProcess):
    node: str
    state_dir: Path

    def metrics_port(self) -> int | None:
        for line in self.logs().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") == "agent started":
                return int(rec["metricsPort"])
        return None

    def ready(self) -> bool:
        """/readyz: the first tick after the first list of pods and GreenTrainingJobs is done."""
        port = self.metrics_port()
        if port is None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    # ------------------------------------------------------------ the simulated node, seen from outside

    def limits_watts(self) -> dict[int, float]:
        return read_simulated_limits_watts(self.state_dir)

    def counters_mj(self, at: datetime | None = None) -> dict[int, float]:
        """Every simulated GPU's energy counter at `at` (default now), from the persisted simulation."""
        t = at or datetime.now(UTC)
        sim = SimulatedBackend(lambda: t, state_dir=self.state_dir)
        return {d.index: sim.energy_at_mj(d.index, t.timestamp()) for d in sim.devices()}

    def gpus_of_pods(self) -> dict[str, list[int]]:
        """'namespace/pod' -> GPU indices, as the simulated PodResources assigned them."""
        path = self.state_dir / SIM_STATE_FILE
        data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        pods: dict[str, list[int]] = data.get("pods", {})
        return pods


def start_agent(
    cluster: Cluster,
    node: str,
    state_dir: Path,
    namespaces: str | Iterable[str] | None,
    env: dict[str, str] | None = None,
    *,
    wait_ready: bool = True,
) -> AgentProcess:
    """Start `greenjobs agent` for `node` with simulated GPUs whose state lives in `state_dir`.

    `namespaces`: those whose pods it manages (GREENJOBS_NAMESPACES); None for all. Restarting with
    the same `state_dir` continues with the same simulated GPUs and the agent's persisted state.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    if namespaces is None:
        ns = ""
    elif isinstance(namespaces, str):
        ns = namespaces
    else:
        ns = ",".join(namespaces)
    full_env = {
        **FAST_AGENT_ENV,
        "NODE_NAME": node,
        "GREENJOBS_STATE_DIR": str(state_dir),
        "GREENJOBS_NAMESPACES": ns,
        **(env or {}),
    }
    log_path = state_dir.parent / f"agent-{node}.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    cmd = [sys.executable, "-m", "greenjobs.cli", "agent"]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=cluster.env(full_env), start_new_session=True
        )
    agent = AgentProcess(proc, log_path, node, state_dir, log_offset=offset)
    if wait_ready:
        wait_until(f"the agent of {node} to be ready", lambda: not agent.alive() or agent.ready(), timeout=30)
        if not agent.alive():
            raise AssertionError(f"agent of {node} exited at start:\n{agent.logs()}")
    return agent
