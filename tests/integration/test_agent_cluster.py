"""The node agent against the real control plane, with the real operator: one `greenjobs agent` process
per fake GPU node (simulated GPUs and PodResources, scoped to the test's namespace), GreenTrainingJobs
whose pods kwok runs for a few seconds.

What it shows: caps land on exactly the GPUs of the job's pod, follow status.power.targetCapWatts and
are restored when the pod ends; a kill -9 of the agent leaves nothing capped that should not be and
counts no joule twice; each agent writes only its own status.energy.nodes.<node> entry and the
operator's totals are the sum of those entries. And (issues 10, 14, 15): the API server refuses an
energy report for another object of the same name; a same-name re-create starts from zero; a reboot
adds no downtime; an administrator's limits stay and come back; two jobs on one time-sliced node
share its GPUs; the agent's view watches only the GTJs it tracks.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from greenjobs.accounting.energy import JOULES_PER_KWH
from greenjobs.api.durations import parse_time
from tests.agent_proc import AgentProcess, start_agent
from tests.kube import Cluster, wait_until
from tests.operator_proc import OperatorProcess, file_forecasts, gtj

pytestmark = pytest.mark.cluster

DEFAULT_W = 700.0  # the simulated H100's default power limit
IDLE_W = 70.0  # and its idle power (load 0)
INTENSITY = 200.0  # gCO2e/kWh: a flat forecast, so the job starts at once and grams = kWh x 200
N_GPUS = 8
DOWN_S = 5.0  # how long the killed agent stays down
MAX_END_LAG_S = 1.5  # from a pod's end to the agent's tick that sees it (sample interval 0.5 s, loaded CI)


@pytest.fixture
def agents(cluster: Cluster, namespace: str) -> Iterator[list[AgentProcess]]:
    """Agents started by the test (via start_agent), stopped with SIGTERM at teardown."""
    started: list[AgentProcess] = []
    yield started
    for a in started:
        a.stop()


@pytest.fixture
def operator(cluster: Cluster, tmp_path: Path, operator_factory: Callable[..., OperatorProcess]) -> OperatorProcess:
    now = datetime.now(UTC).replace(microsecond=0)
    zones = {"GB": INTENSITY, "FR": INTENSITY}
    return operator_factory(file_forecasts(tmp_path / "fc", now, zones, step=timedelta(minutes=1), steps=range(-5, 60)))


def _manifest(
    namespace: str,
    name: str,
    *,
    gpus: int,
    run_for: str,
    power: str,
    node: str | None = None,
    zones: str = "[GB, FR]",
    pods: int = 1,
) -> str:
    # Pinned to `node`: then `zones` must be that node's zone (the operator adds the zone's selector).
    selector = f"nodeSelector: {{kubernetes.io/hostname: {node}}}" if node else ""
    return f"""
apiVersion: greenjobs.dev/v1alpha1
kind: GreenTrainingJob
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  jobTemplate:
    spec:
      completions: {pods}
      parallelism: {pods}
      template:
        metadata: {{annotations: {{kwok.greenjobs.dev/run-for: {run_for}}}}}
        spec:
          restartPolicy: Never
          {selector}
          containers: [{{name: train, image: busybox, resources: {{limits: {{nvidia.com/gpu: {gpus}}}}}}}]
  placement: {{zones: {zones}}}
  power: {power}
"""


def _freest_node(cluster: Cluster) -> str:
    """The fake GPU node with the fewest GPUs requested by unfinished pods (other tests share them)."""
    used = {n: 0 for zone in cluster.nodes.values() for n in zone}
    for p in cluster.get_json("pods", "-A")["items"]:
        node = p["spec"].get("nodeName")
        if node in used and p["status"].get("phase") not in ("Succeeded", "Failed"):
            for c in p["spec"]["containers"]:
                used[node] += int((c.get("resources", {}).get("limits") or {}).get("nvidia.com/gpu", 0))
    return min(sorted(used), key=lambda n: used[n])


def _zone(cluster: Cluster, node: str) -> str:
    return next(z for z, names in cluster.nodes.items() if node in names)


def _pods(cluster: Cluster, namespace: str, job: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-n", namespace, "-l", f"greenjobs.dev/job={job}")["items"]
    return items


def _running_pod(cluster: Cluster, namespace: str, job: str) -> dict[str, Any] | None:
    return next((p for p in _pods(cluster, namespace, job) if p["status"].get("phase") == "Running"), None)


def _gpus_of(agent: AgentProcess, namespace: str, pod: dict[str, Any]) -> list[int]:
    return agent.gpus_of_pods().get(f"{namespace}/{pod['metadata']['name']}", [])


def _await_end_and_restore(
    cluster: Cluster, agent: AgentProcess, namespace: str, job: str, node: str, *, timeout: float
) -> dict[str, Any]:
    """Wait for the job's pods to succeed, every GPU to be back at its default limit, and the agent's
    final entry (no GPU held); return that entry."""
    wait_until(
        f"{job}'s pods to succeed",
        lambda: all(p["status"].get("phase") == "Succeeded" for p in _pods(cluster, namespace, job)),
        timeout=timeout,
    )
    wait_until(
        "all GPUs at default",
        lambda: agent.limits_watts() == dict.fromkeys(range(N_GPUS), DEFAULT_W),
        timeout=10,
    )
    entry: dict[str, Any] = wait_until(
        f"{job}'s final entry", lambda: (e := _node_entry(cluster, namespace, job, node)) and e["gpus"] == 0 and e
    )
    return entry


def _node_entry(cluster: Cluster, namespace: str, name: str, node: str) -> dict[str, Any] | None:
    entry: dict[str, Any] | None = (
        gtj(cluster, namespace, name).get("status", {}).get("energy", {}).get("nodes", {}).get(node)
    )
    return entry


def _run_seconds(pod: dict[str, Any]) -> float:
    """How long the pod ran: status.startTime to its container's finishedAt (second resolution; kwok
    writes the same time into the terminated state's startedAt and finishedAt)."""
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    return (parse_time(term["finishedAt"]) - parse_time(pod["status"]["startTime"])).total_seconds()


class JoulesRecorder:
    """Samples status.energy.nodes.<node>.joules of one job in a thread, to check it never goes down."""

    def __init__(self, cluster: Cluster, namespace: str, name: str, node: str) -> None:
        self.values: list[float] = []
        self._stop = threading.Event()
        self._args = (cluster, namespace, name, node)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                entry = _node_entry(*self._args)
            except (AssertionError, json.JSONDecodeError):
                entry = None
            if entry is not None:
                self.values.append(float(entry["joules"]))
            self._stop.wait(0.5)

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(10)
        return self.values


def test_caps_only_the_pods_gpus_follow_the_target_and_are_restored_at_pod_end(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    node = _freest_node(cluster)
    agent = start_agent(cluster, node, tmp_path / "agent", namespace)
    agents.append(agent)
    assert agent.limits_watts() == dict.fromkeys(range(N_GPUS), DEFAULT_W)

    # A GPU pod of another namespace on the same node: this agent must neither see nor count it.
    other = f"{namespace}-other"
    cluster.kubectl("create", "namespace", other)
    try:
        cluster.kubectl(
            "run",
            "foreign",
            "-n",
            other,
            "--image=busybox",
            "--restart=Never",
            "--labels=greenjobs.dev/job=foreign",
            "--annotations=kwok.greenjobs.dev/run-for=60s",
            "--overrides",
            json.dumps(
                {
                    "spec": {
                        "nodeName": node,
                        "containers": [
                            {"name": "foreign", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": 1}}}
                        ],
                    }
                }
            ),
        )
        manifest = _manifest(
            namespace,
            "capped",
            gpus=4,
            run_for="20s",
            power="{policy: Static, capWatts: 250}",
            node=node,
            zones=f"[{_zone(cluster, node)}]",
        )
        cluster.kubectl("apply", "-f", "-", input=manifest)

        pod = wait_until("the job's pod to run", lambda: _running_pod(cluster, namespace, "capped"), timeout=45)
        mine = wait_until("GPUs assigned to the pod", lambda: _gpus_of(agent, namespace, pod), timeout=10)
        assert len(mine) == 4
        assert list(agent.gpus_of_pods()) == [f"{namespace}/{pod['metadata']['name']}"]  # not the foreign pod
        expected = {i: 250.0 if i in mine else DEFAULT_W for i in range(N_GPUS)}
        wait_until("4 GPUs capped at 250 W, the rest at default", lambda: agent.limits_watts() == expected, timeout=10)

        # Static 250 -> 300: the operator re-computes targetCapWatts, the agent follows on the same GPUs.
        patch = {"spec": {"power": {"capWatts": 300}}}
        cluster.kubectl("patch", "gtj", "capped", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
        expected = {i: 300.0 if i in mine else DEFAULT_W for i in range(N_GPUS)}
        wait_until("the new cap on the same 4 GPUs", lambda: agent.limits_watts() == expected, timeout=10)
        assert gtj(cluster, namespace, "capped")["status"]["power"]["targetCapWatts"] == 300
        entry = wait_until(
            "an energy entry with the new cap",
            lambda: (e := _node_entry(cluster, namespace, "capped", node)) and e.get("capWatts") == 300 and e,
            timeout=10,
        )
        assert entry["gpus"] == 4

        # Pod ends: every GPU back at its default limit, and the final entry says no GPU is held.
        final = _await_end_and_restore(cluster, agent, namespace, "capped", node, timeout=40)
        assert final["joules"] > 0
        assert agent.alive()
        assert '"foreign"' not in agent.logs()
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_kill_9_restart_restores_freed_gpus_keeps_caps_and_counts_no_joule_twice(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    node = _freest_node(cluster)
    state = tmp_path / "agent"
    agent = start_agent(cluster, node, state, namespace)
    agents.append(agent)
    t0 = datetime.now(UTC)
    counters0 = agent.counters_mj(t0)

    for name, run_for, cap in (("short", "10s", 300), ("long", "30s", 250)):
        manifest = _manifest(
            namespace,
            name,
            gpus=4,
            run_for=run_for,
            power=f"{{policy: Static, capWatts: {cap}}}",
            node=node,
            zones=f"[{_zone(cluster, node)}]",
        )
        cluster.kubectl("apply", "-f", "-", input=manifest)
    short_pod = wait_until("short to run", lambda: _running_pod(cluster, namespace, "short"), timeout=45)
    long_pod = wait_until("long to run", lambda: _running_pod(cluster, namespace, "long"), timeout=45)
    short_gpus = wait_until("short's GPUs", lambda: _gpus_of(agent, namespace, short_pod), timeout=10)
    long_gpus = wait_until("long's GPUs", lambda: _gpus_of(agent, namespace, long_pod), timeout=10)
    assert not set(short_gpus) & set(long_gpus)
    capped = {**dict.fromkeys(short_gpus, 300.0), **dict.fromkeys(long_gpus, 250.0)}
    wait_until("both jobs capped", lambda: agent.limits_watts() == capped, timeout=10)
    recorder = JoulesRecorder(cluster, namespace, "long", node)
    wait_until("a first report of long", lambda: recorder.values and recorder.values[-1] > 0, timeout=10)

    agent.kill()  # no SIGTERM handler runs: the caps stay, nothing is flushed
    at_kill = recorder.values[-1]
    killed_at = time.monotonic()
    wait_until(
        "short's pod to end while the agent is dead",
        lambda: all(p["status"].get("phase") == "Succeeded" for p in _pods(cluster, namespace, "short")),
        timeout=30,
    )
    assert agent.limits_watts() == capped  # the dead agent restored nothing: short's GPUs still capped
    time.sleep(max(0.0, DOWN_S - (time.monotonic() - killed_at)))  # down for several report intervals

    agent = start_agent(cluster, node, state, namespace)
    agents.append(agent)
    assert _running_pod(cluster, namespace, "long") is not None, "long must still run after the restart"
    back = {i: 250.0 if i in long_gpus else DEFAULT_W for i in range(N_GPUS)}
    wait_until("freed GPUs at default, long's still capped", lambda: agent.limits_watts() == back, timeout=5)

    entry = _await_end_and_restore(cluster, agent, namespace, "long", node, timeout=45)
    t1 = datetime.now(UTC)
    counters1 = agent.counters_mj(t1)
    wait_until(
        "the recorder to sample the final entry",
        lambda: bool(recorder.values) and recorder.values[-1] == pytest.approx(entry["joules"]),
        timeout=10,
    )
    values = recorder.stop()

    # Reported joules never go down, and the restart did not start over from a lower value.
    assert values == sorted(values), values
    assert values[-1] == pytest.approx(entry["joules"])
    assert entry["joules"] > 1.5 * at_kill  # reporting went on after the restart
    joules, gpu_s = float(entry["joules"]), float(entry["gpuSeconds"])
    # The GPUs were held for the pod's whole run (4 GPUs x ~30 s), the dead seconds counted once.
    run_s = _run_seconds(_pods(cluster, namespace, "long")[0])
    assert gpu_s == pytest.approx(4 * run_s, rel=0.12), (gpu_s, run_s)
    # Under a 250 W cap at full load the mean power is 250 W (the 2 % ripple averages out).
    assert joules / gpu_s == pytest.approx(250.0, rel=0.02)
    # The simulated counters of long's GPUs moved by its joules plus idle power for the rest of the time:
    # nothing charged twice, nothing lost across the kill. One thing is not the job's: the simulation
    # drops a GPU's load at the agent's first tick after the pod ended (a sample interval plus the pod
    # watch's latency), and that lag's full power is rightly charged to nobody. A joule lost or counted
    # twice across the kill is DOWN_S of the job's power, far outside that.
    moved = sum(counters1[i] - counters0[i] for i in long_gpus) / 1000
    idle = IDLE_W * (len(long_gpus) * (t1 - t0).total_seconds() - gpu_s)
    lag_w = len(long_gpus) * (250.0 - IDLE_W)
    ripple = 0.005 * joules
    assert -ripple <= (moved - idle) - joules <= lag_w * MAX_END_LAG_S + ripple, (joules, moved, idle)


def test_two_nodes_write_their_own_entries_and_the_operator_sums_them(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    nodes = cluster.nodes["GB"]
    for node in nodes:
        agents.append(start_agent(cluster, node, tmp_path / f"agent-{node}", namespace))
    # Two pods of 6 GPUs cannot share an 8-GPU node: one pod on each GB node.
    manifest = _manifest(
        namespace, "wide", gpus=6, run_for="15s", power="{policy: Static, capWatts: 400}", zones="[GB]", pods=2
    )
    cluster.kubectl("apply", "-f", "-", input=manifest)
    wait_until(
        "entries from both nodes",
        lambda: set(gtj(cluster, namespace, "wide").get("status", {}).get("energy", {}).get("nodes", {})) == set(nodes),
        timeout=60,
    )
    wait_until("Succeeded", lambda: gtj(cluster, namespace, "wide")["status"].get("phase") == "Succeeded", timeout=60)

    def settled() -> dict[str, Any] | None:
        # Final entries (no GPU held any more) from both nodes, and totals accounted from them.
        status: dict[str, Any] = gtj(cluster, namespace, "wide")["status"]
        entries = status["energy"]["nodes"]
        if any(e["gpus"] != 0 for e in entries.values()):
            return None
        total = sum(e["joules"] for e in entries.values()) / JOULES_PER_KWH
        return status if status["energy"].get("gpuKWh") == round(total, 4) else None

    status = wait_until("totals over the final entries", settled, timeout=15)
    entries = status["energy"]["nodes"]
    assert {p["spec"]["nodeName"] for p in _pods(cluster, namespace, "wide")} == set(nodes)
    for node, e in entries.items():
        assert e["capWatts"] == 400 or "capWatts" not in e  # the last entry holds no GPU
        # 6 GPUs x ~15 s at 400 W each, give or take the watch latencies at start and end.
        assert e["joules"] == pytest.approx(400.0 * e["gpuSeconds"], rel=0.02), node
        assert e["gpuSeconds"] == pytest.approx(6 * 15, rel=0.2), node
    k_wh = sum(e["joules"] for e in entries.values()) / JOULES_PER_KWH
    assert status["energy"]["gpuKWh"] == pytest.approx(k_wh, abs=1e-4)  # kWh adds host and facility
    assert status["energy"]["gpuHours"] == pytest.approx(
        sum(e["gpuSeconds"] for e in entries.values()) / 3600, abs=1e-4
    )
    assert status["emissions"]["gpuGrams"] == pytest.approx(k_wh * INTENSITY, abs=0.01)
    assert status["emissions"]["avgGPerKWh"] == pytest.approx(INTENSITY, abs=0.5)
    for a in agents:
        assert a.alive()
        assert "energy report failed" not in a.logs()


def test_energy_reports_are_refused_by_the_real_api_server_for_another_object_of_the_name(
    cluster: Cluster, namespace: str
) -> None:
    """What the agent's reports rely on. A uid in a MERGE patch of the status subresource is ignored
    (the status strategy keeps the stored metadata): shown here, and why the agent sends a JSON patch
    whose first op tests /metadata/uid, which the API server refuses for another object."""
    from kubernetes.client.exceptions import ApiException

    from greenjobs_agent.pods import JobKey
    from greenjobs_agent.reporter import JobGone, KubeStatusPatcher, NodeEnergyReport, build_patch, json_patch
    from tests.manifests import gtj_json

    cluster.kubectl("apply", "-f", "-", input=gtj_json(namespace, "pre", gpus=1))
    uid = gtj(cluster, namespace, "pre")["metadata"]["uid"]
    other = "00000000-0000-0000-0000-000000000000"
    api = kubernetes.client.CustomObjectsApi(cluster.api_client())
    args = ("greenjobs.dev", "v1alpha1", namespace, "greentrainingjobs", "pre")
    report = NodeEnergyReport(joules=12.0, gpus=1, gpu_seconds=3.0)

    merge = build_patch("n0", report, datetime.now(UTC), other)
    api.patch_namespaced_custom_object_status(*args, merge, _content_type="application/merge-patch+json")
    assert gtj(cluster, namespace, "pre")["status"]["energy"]["nodes"]["n0"]["joules"] == 12.0  # not refused!

    body = build_patch("n1", report, datetime.now(UTC), other)
    with pytest.raises(ApiException) as refused:
        api.patch_namespaced_custom_object_status(*args, json_patch(body), _content_type="application/json-patch+json")
    assert refused.value.status == 422  # the test op failed (the API server does not say which op)
    patcher = KubeStatusPatcher(api)
    with pytest.raises(JobGone):
        patcher.patch_status(JobKey(namespace, "pre", other), body)
    # No joule landed (the parents the first report creates are an empty entry, all zero by default).
    assert gtj(cluster, namespace, "pre")["status"]["energy"]["nodes"]["n1"] == {"gpus": 0, "joules": 0}

    # The right UID: the first report creates the entry, later ones update it field by field.
    patcher.patch_status(JobKey(namespace, "pre", uid), build_patch("n1", report, datetime.now(UTC), uid))
    later = NodeEnergyReport(joules=20.0, gpus=0, gpu_seconds=5.0, cap_note="GPU 0 is shared")
    patcher.patch_status(JobKey(namespace, "pre", uid), build_patch("n1", later, datetime.now(UTC), uid))
    entry = gtj(cluster, namespace, "pre")["status"]["energy"]["nodes"]["n1"]
    assert (entry["joules"], entry["gpus"], entry["gpuSeconds"], entry["capNotApplied"]) == (
        20.0,
        0,
        5.0,
        "GPU 0 is shared",
    )
    cleared = NodeEnergyReport(joules=21.0, gpus=0, gpu_seconds=5.0, clear_cap_note=True)
    patcher.patch_status(JobKey(namespace, "pre", uid), build_patch("n1", cleared, datetime.now(UTC), uid))
    assert "capNotApplied" not in gtj(cluster, namespace, "pre")["status"]["energy"]["nodes"]["n1"]


def test_same_name_recreated_starts_from_zero(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    node = _freest_node(cluster)
    agent = start_agent(cluster, node, tmp_path / "agent", namespace)
    agents.append(agent)
    manifest = _manifest(
        namespace,
        "again",
        gpus=4,
        run_for="60s",
        power="{policy: Static, capWatts: 300}",
        node=node,
        zones=f"[{_zone(cluster, node)}]",
    )
    cluster.kubectl("apply", "-f", "-", input=manifest)
    first_uid = gtj(cluster, namespace, "again")["metadata"]["uid"]
    wait_until(
        "the first object to have 20 s of energy",
        lambda: (e := _node_entry(cluster, namespace, "again", node)) and e["gpuSeconds"] >= 4 * 20,
        timeout=60,
    )
    old = _node_entry(cluster, namespace, "again", node)
    assert old is not None

    # Delete and re-apply while the agent counts: the new object must start from zero.
    cluster.kubectl("delete", "gtj", "again", "-n", namespace, "--timeout=60s")
    cluster.kubectl("apply", "-f", "-", input=manifest)
    second_uid = gtj(cluster, namespace, "again")["metadata"]["uid"]
    assert second_uid != first_uid
    recorder = JoulesRecorder(cluster, namespace, "again", node)
    entry = wait_until(
        "a first entry on the new object",
        lambda: (e := _node_entry(cluster, namespace, "again", node)) and e["gpus"] == 4 and e,
        timeout=60,
    )
    values = recorder.stop()
    # Never the old object's joules: each value is what the new pod used since it started.
    assert values and max(values) <= entry["joules"] + 4 * 300 * 5
    assert values[0] < old["joules"], (values, old)
    assert entry["gpuSeconds"] < old["gpuSeconds"]
    pod = _running_pod(cluster, namespace, "again")
    assert pod is not None
    ran = (datetime.now(UTC) - parse_time(pod["status"]["startTime"])).total_seconds()
    assert entry["gpuSeconds"] <= 4 * (ran + 2), (entry, ran)
    assert "energy report failed" not in agent.logs()


def test_two_jobs_on_one_time_sliced_node_share_its_gpus(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    """4 simulated GPUs advertised twice each (8 replicas, as the node's 8 nvidia.com/gpu): two 4-GPU
    jobs land on the same 4 GPUs. Their energy is split in equal shares (an estimate, said so in the
    entries) and the GPUs get the more generous of their two caps, with the reason in the other's entry."""
    node = _freest_node(cluster)
    env = {"GREENJOBS_SIM_GPUS": "4", "GREENJOBS_SIM_GPU_REPLICAS": "2"}
    agent = start_agent(cluster, node, tmp_path / "agent", namespace, env)
    agents.append(agent)
    for name, cap in (("low", 250), ("high", 400)):
        manifest = _manifest(
            namespace,
            name,
            gpus=4,
            run_for="25s",
            power=f"{{policy: Static, capWatts: {cap}}}",
            node=node,
            zones=f"[{_zone(cluster, node)}]",
        )
        cluster.kubectl("apply", "-f", "-", input=manifest)
    low = wait_until("low to run", lambda: _running_pod(cluster, namespace, "low"), timeout=45)
    high = wait_until("high to run", lambda: _running_pod(cluster, namespace, "high"), timeout=45)
    assert low["spec"]["nodeName"] == high["spec"]["nodeName"] == node
    gpus = wait_until("both pods' devices", lambda: (g := agent.gpus_of_pods()) and len(g) == 2 and g, timeout=10)
    assert sorted(gpus.values()) == [[0, 1, 2, 3], [0, 1, 2, 3]]  # the same four GPUs, shared
    wait_until(
        "the shared GPUs at the more generous cap",
        lambda: agent.limits_watts() == dict.fromkeys(range(4), 400.0),
        timeout=15,
    )

    entries = wait_until(
        "estimated entries for both",
        lambda: (
            (a := _node_entry(cluster, namespace, "low", node))
            and (b := _node_entry(cluster, namespace, "high", node))
            and a.get("estimated")
            and b.get("estimated")
            and a["gpus"] == 4
            and b["gpus"] == 4
            and (a, b)
        ),
        timeout=20,
    )
    a, b = entries
    assert a["splitRule"] == b["splitRule"] == "equalShares"
    assert "most generous" in a["capNotApplied"] and "capNotApplied" not in b
    assert a["capWatts"] == b["capWatts"] == 400  # what the GPUs really got

    def final(name: str) -> dict[str, Any] | None:
        e = _node_entry(cluster, namespace, name, node)
        return e if e and e["gpus"] == 0 else None

    a = wait_until("low's final entry", lambda: final("low"), timeout=60)
    b = wait_until("high's final entry", lambda: final("high"), timeout=60)
    wait_until("GPUs back at default", lambda: agent.limits_watts() == dict.fromkeys(range(4), DEFAULT_W), timeout=10)
    # While both ran, each had half of each GPU: equal joules per GPU-second, at most 400 W a GPU.
    assert a["joules"] / a["gpuSeconds"] == pytest.approx(b["joules"] / b["gpuSeconds"], rel=0.1)
    assert a["joules"] / a["gpuSeconds"] <= 400 * 1.02
    assert a["gpuSeconds"] == pytest.approx(4 * 25 / 2, rel=0.3)  # half of each of 4 GPUs for ~25 s
    assert "energy report failed" not in agent.logs()


def test_the_agents_view_watches_only_the_gtjs_it_tracks_and_closes_what_it_drops(
    cluster: Cluster, namespace: str
) -> None:
    import threading

    from greenjobs_agent.kube import KubeClusterView
    from greenjobs_agent.metrics import AgentMetrics
    from greenjobs_agent.pods import JobRef
    from tests.manifests import gtj_json

    for name in ("mine", "other"):
        cluster.kubectl("apply", "-f", "-", input=gtj_json(namespace, name, gpus=1))
    metrics = AgentMetrics("n1")
    view = KubeClusterView("n1", cluster.api_client(), [namespace], metrics)
    mine, missing = JobRef(namespace, "mine"), JobRef(namespace, "missing")
    try:
        view.track([mine, missing])
        jobs = wait_until("both listed", lambda: (j := view.jobs()) and len(j) == 2 and j, timeout=10)
        assert jobs[missing] is None
        assert jobs[mine] is not None and jobs[mine].uid == gtj(cluster, namespace, "mine")["metadata"]["uid"]
        # A change to another GTJ never reaches this view; one to a tracked GTJ does.
        events = metrics.watch_events.labels(resource="greentrainingjobs", type="MODIFIED")
        patch = json.dumps({"status": {"power": {"targetCapWatts": 321}}})
        for name in ("other", "mine"):
            cluster.kubectl("patch", "gtj", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch)
        wait_until("the tracked GTJ's new cap", lambda: (i := view.jobs().get(mine)) and i.target_cap_watts == 321)
        assert events._value.get() == 1
        cluster.kubectl("delete", "gtj", "mine", "-n", namespace)
        wait_until("the deletion seen", lambda: mine in view.jobs() and view.jobs()[mine] is None, timeout=10)
        view.track([])
        wait_until(
            "its watch threads gone",
            lambda: not [t for t in threading.enumerate() if t.name.startswith(f"watch-gtj-{namespace}/")],
            timeout=5,
        )
        assert view.jobs() == {}
    finally:
        view.stop()


def test_a_node_reboot_adds_no_downtime_to_gpu_hours(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    """The agent dies with the node; the node comes back with a new boot id and reset GPUs. The time
    it was down is in no one's GPU-seconds (the pod kept running on kwok, which knows no reboot)."""
    from greenjobs_agent.gpu.simulated import SimulatedBackend

    node = _freest_node(cluster)
    state = tmp_path / "agent"
    boot = tmp_path / "boot_id"
    boot.write_text("boot-1\n")
    env = {"GREENJOBS_BOOT_ID_FILE": str(boot)}
    agent = start_agent(cluster, node, state, namespace, env)
    agents.append(agent)
    manifest = _manifest(
        namespace, "reboot", gpus=4, run_for="40s", power="{policy: Static, capWatts: 300}", node=node,
        zones=f"[{_zone(cluster, node)}]",
    )  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=manifest)
    wait_until("a first report", lambda: (e := _node_entry(cluster, namespace, "reboot", node)) and e["gpus"] == 4)
    agent.kill()
    down_at = time.monotonic()
    boot.write_text("boot-2\n")
    SimulatedBackend(lambda: datetime.now(UTC), state_dir=state).reboot()  # limits back to default, counters 0
    time.sleep(12)
    down_s = time.monotonic() - down_at
    agent = start_agent(cluster, node, state, namespace, env)
    agents.append(agent)
    entry = _await_end_and_restore(cluster, agent, namespace, "reboot", node, timeout=60)
    run_s = _run_seconds(_pods(cluster, namespace, "reboot")[0])
    up_s = run_s - down_s
    # The GPUs were counted only while the node was up: 4 GPUs x (run - downtime), give or take the
    # restart's few seconds (watch, first tick) and the pod times' one-second resolution.
    assert 4 * (up_s - 8) <= entry["gpuSeconds"] <= 4 * (up_s + 2), (entry, run_s, down_s)
    assert entry["joules"] == pytest.approx(300 * entry["gpuSeconds"], rel=0.03)


def test_an_administrators_limits_stay_and_come_back_after_the_job(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    """Limits set before greenjobs capped a GPU: a lower one is never raised by a job's cap, and each
    GPU gets its own back when the job ends (not the driver's default); GPUs no job holds are never
    touched."""
    from greenjobs_agent.gpu.simulated import SimulatedBackend

    node = _freest_node(cluster)
    state = tmp_path / "agent"
    state.mkdir()
    admin = {0: 600_000, 1: 650_000, 2: 600_000, 3: 600_000, 4: 450_000, 5: 500_000, 6: 500_000, 7: 500_000}
    sim = SimulatedBackend(lambda: datetime.now(UTC), state_dir=state)
    for i, mw in admin.items():
        sim.set_limit_mw(i, mw)  # as nvidia-smi -pl by an administrator before the agent ran
    agent = start_agent(cluster, node, state, namespace)
    agents.append(agent)
    before = {i: mw / 1000 for i, mw in admin.items()}
    assert agent.limits_watts() == before
    manifest = _manifest(
        namespace, "admin", gpus=4, run_for="15s", power="{policy: Static, capWatts: 620}", node=node,
        zones=f"[{_zone(cluster, node)}]",
    )  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=manifest)
    pod = wait_until("the job's pod to run", lambda: _running_pod(cluster, namespace, "admin"), timeout=45)
    mine = wait_until("its GPUs", lambda: _gpus_of(agent, namespace, pod), timeout=10)
    assert mine == [0, 1, 2, 3]
    # 620 W where the administrator allowed more (GPU 1: 650), their 600 W where they allowed less.
    capped = {**before, 0: 600.0, 1: 620.0, 2: 600.0, 3: 600.0}
    wait_until("the caps, never above the administrator's", lambda: agent.limits_watts() == capped, timeout=15)
    wait_until(
        "admin's pods to succeed",
        lambda: all(p["status"].get("phase") == "Succeeded" for p in _pods(cluster, namespace, "admin")),
        timeout=45,
    )
    wait_until("every GPU back at the administrator's limit", lambda: agent.limits_watts() == before, timeout=10)
    agent.stop()
    assert agent.limits_watts() == before  # SIGTERM gives back nothing it did not take
