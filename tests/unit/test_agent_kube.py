"""Reading pods and GreenTrainingJobs as the API server returns them (JSON), and the agent before sync."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from greenjobs_agent.agent import Agent
from greenjobs_agent.gpu.simulated import SimulatedBackend
from greenjobs_agent.kube import pod_info, target_cap
from greenjobs_agent.podresources import SimulatedPodGpuSource
from greenjobs_agent.pods import JobKey, PodKey, StaticView
from greenjobs_agent.reporter import RecordingPatcher
from greenjobs_agent.state import StateStore


def test_pod_info_sums_gpu_limits_and_reads_the_job_label() -> None:
    pod = {
        "metadata": {"namespace": "ml", "name": "llama-0-abc", "labels": {"greenjobs.dev/job": "llama"}},
        "spec": {
            "nodeName": "gpu-gb-0",
            "containers": [
                {"name": "train", "resources": {"limits": {"nvidia.com/gpu": "4", "cpu": "8"}}},
                {"name": "sidecar", "resources": {}},
                {"name": "eval", "resources": {"limits": {"nvidia.com/gpu": 2}}},
            ],
        },
        "status": {"phase": "Running"},
    }
    info = pod_info(pod)
    assert info.key == PodKey("ml", "llama-0-abc")
    assert info.gpu_limit == 6
    assert info.running
    assert info.job_key == JobKey("ml", "llama")


def test_pod_without_label_or_status_is_not_a_job_pod() -> None:
    info = pod_info({"metadata": {"namespace": "a", "name": "b"}, "spec": {"containers": []}})
    assert info.job_key is None and info.phase == "Pending" and not info.running


def test_target_cap_from_status_power() -> None:
    gtj = {"metadata": {"namespace": "ml", "name": "llama"}, "status": {"power": {"targetCapWatts": 210}}}
    assert target_cap(gtj) == (JobKey("ml", "llama"), 210)
    assert target_cap({"metadata": {"namespace": "ml", "name": "x"}}) == (JobKey("ml", "x"), None)


def test_agent_touches_nothing_before_the_first_list(tmp_path: Path) -> None:
    # After a restart, caps of running jobs must not be dropped just because the watch is not in yet.
    now = datetime(2026, 11, 23, tzinfo=UTC)
    backend = SimulatedBackend(lambda: now, n=2, state_dir=tmp_path)
    backend.set_limit_mw(0, 300_000)
    view = StaticView([], {}, is_synced=False)
    agent = Agent(
        "n",
        backend,
        view=view,
        gpu_source=SimulatedPodGpuSource(view.pods, 2),
        patcher=RecordingPatcher([]),
        store=StateStore(tmp_path),
        clock=lambda: now,
    )
    agent.tick()
    assert backend.limits_mw()[0] == 300_000
    assert not agent.metrics.ready.is_set()
    view.is_synced = True
    agent.tick()
    assert backend.limits_mw()[0] == 700_000
    assert agent.metrics.ready.is_set()


def test_namespace_filter_drops_pods_and_jobs_of_other_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client

    from greenjobs_agent.kube import KubeClusterView
    from greenjobs_agent.main import AgentSettings

    monkeypatch.setenv("NODE_NAME", "gpu-gb-0")
    monkeypatch.setenv("GREENJOBS_NAMESPACES", " ml, research ,")
    assert AgentSettings().namespace_list() == ["ml", "research"]

    def pod(ns: str, name: str) -> dict[str, object]:
        meta = {"namespace": ns, "name": name, "labels": {"greenjobs.dev/job": "j"}}
        return {"metadata": meta, "spec": {"containers": []}, "status": {"phase": "Running"}}

    def job(ns: str) -> dict[str, object]:
        return {"metadata": {"namespace": ns, "name": "j"}, "status": {"power": {"targetCapWatts": 250}}}

    view = KubeClusterView("gpu-gb-0", client.ApiClient(), ["ml"])
    view._replace_pods([pod("ml", "a"), pod("other", "b")])
    view._apply_pod("ADDED", pod("other", "c"))
    view._apply_pod("ADDED", pod("ml", "d"))
    view._replace_jobs([job("ml"), job("other")])
    view._apply_job("MODIFIED", job("other"))
    assert sorted(p.key for p in view.pods()) == [PodKey("ml", "a"), PodKey("ml", "d")]
    assert view.target_caps() == {JobKey("ml", "j"): 250}

    everything = KubeClusterView("gpu-gb-0", client.ApiClient())
    everything._replace_pods([pod("ml", "a"), pod("other", "b")])
    assert len(everything.pods()) == 2
