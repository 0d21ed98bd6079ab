"""Reading pods and GreenTrainingJobs as the API server returns them (JSON), and the agent before sync."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from greenjobs_agent.agent import Agent
from greenjobs_agent.gpu.simulated import SimulatedBackend
from greenjobs_agent.kube import job_info, pod_info
from greenjobs_agent.podresources import SimulatedPodGpuSource
from greenjobs_agent.pods import JobInfo, JobKey, JobRef, NodeSeed, PodKey, StaticView
from greenjobs_agent.reporter import RecordingPatcher
from greenjobs_agent.state import StateStore


def test_pod_info_sums_gpu_limits_and_reads_the_job_labels() -> None:
    pod = {
        "metadata": {
            "namespace": "ml",
            "name": "llama-0-abc",
            "uid": "pod-uid",
            "labels": {"greenjobs.dev/job": "llama", "greenjobs.dev/job-uid": "gtj-uid"},
        },
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
    assert info.uid == "pod-uid"
    # The label's UID wins over whatever object of that name is known.
    assert info.job_key({JobRef("ml", "llama"): JobInfo("other-uid", 300)}) == JobKey("ml", "llama", "gtj-uid")


def test_pod_info_reads_when_the_pod_started_and_when_it_ended() -> None:
    done = {"state": {"terminated": {"finishedAt": "2026-11-23T12:05:00Z"}}}
    status = {"phase": "Succeeded", "startTime": "2026-11-23T12:00:00Z", "containerStatuses": [done, {}]}
    info = pod_info({"metadata": {"namespace": "ml", "name": "p"}, "spec": {}, "status": status})
    assert (info.started, info.ended) == ("2026-11-23T12:00:00Z", "2026-11-23T12:05:00Z")


def test_pod_without_uid_label_takes_the_uid_of_the_gtj_of_that_name() -> None:
    pod = {"metadata": {"namespace": "ml", "name": "p", "labels": {"greenjobs.dev/job": "llama"}}, "spec": {}}
    info = pod_info(pod)
    assert info.job_key({}) is None  # not resolvable until the GTJ is listed
    assert info.job_key({JobRef("ml", "llama"): JobInfo("u1", None)}) == JobKey("ml", "llama", "u1")
    assert info.job_key({JobRef("ml", "llama"): None}) is None  # no such GTJ


def test_pod_without_label_or_status_is_not_a_job_pod() -> None:
    info = pod_info({"metadata": {"namespace": "a", "name": "b"}, "spec": {"containers": []}})
    assert info.job_ref is None and info.phase == "Pending" and not info.running


def test_job_info_keeps_uid_cap_and_only_this_nodes_entry() -> None:
    gtj = {
        "metadata": {"namespace": "ml", "name": "llama", "uid": "u1"},
        "status": {
            "power": {"targetCapWatts": 210},
            "energy": {"nodes": {"n1": {"joules": 12.5, "gpuSeconds": 4}, "n2": {"joules": 99}}},
        },
    }
    assert job_info(gtj, "n1") == JobInfo("u1", 210, NodeSeed(12.5, 4.0))
    assert job_info(gtj, "n3") == JobInfo("u1", 210, None)
    assert job_info({"metadata": {"uid": "u2"}}, "n1") == JobInfo("u2", None, None)


def test_agent_touches_nothing_before_the_first_list(tmp_path: Path) -> None:
    # After a restart, caps of running jobs must not be dropped just because the watch is not in yet.
    now = datetime(2026, 11, 23, tzinfo=UTC)
    backend = SimulatedBackend(lambda: now, n=2, state_dir=tmp_path)
    view = StaticView([], {}, is_synced=False)
    agent = Agent(
        "n",
        backend,
        view=view,
        gpu_source=SimulatedPodGpuSource(view.pods, backend.devices()),
        patcher=RecordingPatcher([]),
        store=StateStore(tmp_path),
        clock=lambda: now,
    )
    agent.tick()
    assert not agent.metrics.ready.is_set()
    view.is_synced = True
    agent.tick()
    assert agent.metrics.ready.is_set()


def test_namespace_filter_drops_pods_of_other_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client

    from greenjobs_agent.kube import KubeClusterView
    from greenjobs_agent.main import AgentSettings

    monkeypatch.setenv("NODE_NAME", "gpu-gb-0")
    monkeypatch.setenv("GREENJOBS_NAMESPACES", " ml, research ,")
    assert AgentSettings().namespace_list() == ["ml", "research"]

    def pod(ns: str, name: str) -> dict[str, object]:
        meta = {"namespace": ns, "name": name, "labels": {"greenjobs.dev/job": "j"}}
        return {"metadata": meta, "spec": {"containers": []}, "status": {"phase": "Running"}}

    view = KubeClusterView("gpu-gb-0", client.ApiClient(), ["ml"])
    view._replace_pods([pod("ml", "a"), pod("other", "b")])
    view._apply_pod("ADDED", pod("other", "c"))
    view._apply_pod("ADDED", pod("ml", "d"))
    assert sorted(p.key for p in view.pods()) == [PodKey("ml", "a"), PodKey("ml", "d")]

    everything = KubeClusterView("gpu-gb-0", client.ApiClient())
    everything._replace_pods([pod("ml", "a"), pod("other", "b")])
    assert len(everything.pods()) == 2


def test_jobs_no_longer_tracked_are_forgotten_and_events_of_untracked_ones_dropped() -> None:
    from kubernetes import client

    from greenjobs_agent.kube import KubeClusterView

    view = KubeClusterView("n1", client.ApiClient())
    ref = JobRef("ml", "a")
    with view._lock:  # as track() does, without starting a watch thread against no server
        view._watches[ref] = view._job_stream(ref)
    view._replace_job(ref, [{"metadata": {"uid": "u1"}, "status": {"power": {"targetCapWatts": 300}}}])
    assert view.jobs() == {ref: JobInfo("u1", 300)}
    view._apply_job(ref, "DELETED", {"metadata": {"uid": "u1"}})
    assert view.jobs() == {ref: None}
    view.track([])  # closes the watch (none open here) and forgets what it knew
    assert view.jobs() == {} and view.tracked() == set()
    view._apply_job(ref, "MODIFIED", {"metadata": {"uid": "u1"}})  # a late event of a closed watch
    assert view.jobs() == {}
