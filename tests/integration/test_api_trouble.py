"""API trouble: the API server goes away mid-run (every watch breaks, requests fail) and comes back.
The operator and a node agent must both recover by themselves and lose no update: the deferred job
still starts in its window and succeeds, the agent's energy entry keeps growing and the operator's
totals catch up. (Status writes are JSON merge patches without resourceVersion, so they cannot
conflict; the one create that can, the Job, is adopted on 409: see test_operator_restarts.)"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greenjobs.api.durations import parse_time
from tests.agent_proc import AgentProcess, start_agent
from tests.kube import CLUSTER_SH, Cluster, wait_until
from tests.manifests import gtj_json
from tests.operator_proc import OperatorProcess, file_forecasts, gtj

pytestmark = pytest.mark.cluster


@pytest.fixture(autouse=True)
def fresh_controller_manager_after(cluster: Cluster) -> Iterator[None]:
    """The API-server restarts leave kube-controller-manager's Job controller trailing for minutes
    (Jobs marked Complete late); the tests after this one get a fresh one."""
    yield
    subprocess.run([str(CLUSTER_SH), "restart-controller-manager"], check=True, capture_output=True, env=cluster.env())


@pytest.fixture
def agent(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[AgentProcess]:
    a = start_agent(cluster, cluster.nodes["GB"][0], tmp_path / "agent", [namespace])
    yield a
    a.stop()


def _joules(cluster: Cluster, namespace: str, node: str) -> float:
    entry = gtj(cluster, namespace, "outage").get("status", {}).get("energy", {}).get("nodes", {}).get(node)
    return float(entry["joules"]) if entry else 0.0


def test_operator_and_agent_recover_from_an_api_server_restart(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorProcess],
    agent: AgentProcess,
) -> None:
    node = cluster.nodes["GB"][0]
    now = datetime.now(UTC).replace(microsecond=0)
    # GB only, dirty for 20 s then clean: the job is deferred across the outage.
    config = file_forecasts(tmp_path / "fc", now, {"GB": lambda i: 300.0 if i < 2 else 50.0}, steps=range(-6, 120))
    op = operator_factory(config)
    manifest = gtj_json(
        namespace,
        "outage",
        zones=["GB"],
        timing={"estimatedDuration": "30s", "maxDelay": "2m"},
        power={"policy": "Static", "capWatts": 300},
        gpus=2,
        run_for="30s",
        node_selector={"kubernetes.io/hostname": node},
    )
    cluster.kubectl("apply", "-f", "-", input=manifest)
    plan = wait_until("a plan", lambda: gtj(cluster, namespace, "outage").get("status", {}).get("plan"))
    start = parse_time(plan["scheduledStart"])
    assert start >= now + timedelta(seconds=15)

    # Outage 1: while the job is deferred, across its planned start.
    subprocess.run([str(CLUSTER_SH), "restart-apiserver", "8"], check=True, capture_output=True, env=cluster.env())
    wait_until(
        "Running after the outage",
        lambda: gtj(cluster, namespace, "outage")["status"].get("phase") == "Running",
        timeout=60,
    )
    started = parse_time(gtj(cluster, namespace, "outage")["status"]["startTime"])
    assert started <= parse_time(plan["latestStart"])
    # The agent retries its watches every 5 s after the outage; on a loaded API server just back from a
    # restart its first report took over 30 s once (a clean-clone CI run).
    first = wait_until("energy from the agent", lambda: _joules(cluster, namespace, node), timeout=75)

    # Outage 2: while it runs and the agent reports.
    subprocess.run([str(CLUSTER_SH), "restart-apiserver", "5"], check=True, capture_output=True, env=cluster.env())
    later = wait_until(
        "energy to keep growing", lambda: (j := _joules(cluster, namespace, node)) > first and j, timeout=30
    )
    assert later > first

    # The Job controller, not greenjobs, is slow here: after two restarts its informers trail what it
    # wrote ("read version ... is not as new as written version") and its per-Job retry backs off up to
    # 60 s, so the Job's Complete can take minutes. Once it is there, the operator must record it within
    # one resync of a stalled watch (10 s in tests) plus a look, at the Job's own completion time.
    def job_completed() -> str | None:
        job = cluster.get_json("job", "outage", "-n", namespace)
        done = any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"].get("conditions", []))
        return job["status"].get("completionTime") if done else None

    completed = wait_until("the Job controller to mark the Job Complete", job_completed, timeout=240)
    wait_until("Succeeded", lambda: gtj(cluster, namespace, "outage")["status"].get("phase") == "Succeeded", timeout=30)
    assert gtj(cluster, namespace, "outage")["status"]["completionTime"] == completed

    # The final flush and the operator's totals catch up: GPU kWh is the node entry's joules.
    def settled() -> bool:
        st = gtj(cluster, namespace, "outage")["status"]
        entry = st["energy"]["nodes"][node]
        return entry.get("gpus") == 0 and abs(st["energy"].get("gpuKWh", -1) - entry["joules"] / 3.6e6) < 1e-4

    wait_until("totals to match the final node entry", settled, timeout=30)
    assert op.alive() and agent.alive()
    jobs = cluster.get_json("jobs", "-n", namespace)["items"]
    assert len(jobs) == 1
