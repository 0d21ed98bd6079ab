"""Whole-run plans on the real control plane: a resumable job runs through the clean window, is paused
(its workload suspended: the Job controller deletes the pods) through the dirty one, and resumed (new
pods of the SAME workload) in the next clean one. The Job is counted once (one success, no failure),
never created twice, its energy is metered across both segments by a real node agent, and an
operator killed while it is paused resumes it on time. The same for a JobSet, and for a Kueue-managed
Job, paused by deactivating its Workload (quota released) and resumed by activating the same one."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.agent_proc import AgentProcess, start_agent
from tests.kube import Cluster, wait_until
from tests.kueue import condition as kueue_condition
from tests.kueue import cq_usage, queues, workload_of
from tests.operator_proc import OperatorProcess, condition, file_forecasts, gtj

pytestmark = pytest.mark.cluster

STEP = timedelta(seconds=5)
CLEAN_UNTIL, DIRTY_UNTIL = 10, 16  # steps: clean until +50 s, dirty +50..+80 s, clean after
INTERRUPTION = {"resumable": True, "resumeOverhead": "0s", "minRunDuration": "5s", "checkpointGracePeriod": "10s"}


def _forecast(directory: Path, now: datetime) -> dict[str, Any]:
    def g(i: int) -> float:
        return 400.0 if CLEAN_UNTIL <= i < DIRTY_UNTIL else 40.0

    return file_forecasts(directory, now, {"FR": g, "GB": 500.0}, step=STEP, steps=range(-6, 120))


def _run_until(now: datetime) -> str:
    """When the training's pods end: 10 s into the second clean window, whenever they started. kwok
    reads an RFC 3339 time in `run-for` as "until then" (e2e/kwok), so the first run is still going at
    the pause and the resumed one runs only the rest of the work, not the whole 55 s again."""
    return (now + DIRTY_UNTIL * STEP + timedelta(seconds=10)).isoformat()


def _pod(now: datetime, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [{"name": "train", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": 2}}}],
    }
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {"metadata": {"annotations": {"kwok.greenjobs.dev/run-for": _run_until(now)}}, "spec": spec}


def _gtj(namespace: str, name: str, now: datetime, workload: dict[str, Any]) -> str:
    # 55 s of work by +115 s: 47 s or so in the first clean window, the rest after the dirty one.
    timing = {"estimatedDuration": "55s", "deadline": (now + timedelta(seconds=115)).isoformat()}
    spec = {**workload, "timing": timing, "placement": {"zones": ["FR"]}, "interruption": INTERRUPTION}
    return json.dumps(
        {
            "apiVersion": "greenjobs.dev/v1alpha1",
            "kind": "GreenTrainingJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def _status(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = gtj(cluster, ns, name).get("status", {})
    return status


def _pod_uids(cluster: Cluster, ns: str) -> set[str]:
    return {
        p["metadata"]["uid"]
        for p in cluster.get_json("pods", "-n", ns)["items"]
        if not p["metadata"].get("deletionTimestamp")
    }


def _events(cluster: Cluster, ns: str, name: str) -> list[str]:
    items = cluster.get_json("events", "-n", ns, "--field-selector", f"involvedObject.name={name}")["items"]
    return [
        e["reason"]
        for e in sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        if e["involvedObject"]["kind"] == "GreenTrainingJob"
    ]


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for a in started:
        a.stop()


def test_a_resumable_job_is_paused_through_the_dirty_hours_and_resumed_counted_once(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorProcess],
    agents: list[AgentProcess],
) -> None:
    node = cluster.nodes["FR"][0]
    agents.append(start_agent(cluster, node, tmp_path / "agent", namespace))
    now = datetime.now(UTC).replace(microsecond=0)
    config = _forecast(tmp_path / "fc", now)
    operator = operator_factory(config)
    workload = {"jobTemplate": {"spec": {"template": _pod(now, node)}}}
    cluster.kubectl("apply", "-f", "-", input=_gtj(namespace, "long", now, workload))

    st = wait_until("Running", lambda: (s := _status(cluster, namespace, "long")).get("phase") == "Running" and s)
    segments = st["plan"]["segments"]
    assert len(segments) == 2 and segments[0]["end"] < segments[1]["start"]  # a pause is planned
    job_uid = cluster.get_json("job", "long", "-n", namespace)["metadata"]["uid"]
    first = wait_until("the first run's pod", lambda: _pod_uids(cluster, namespace))
    joules_before_pause = wait_until(
        "energy of the first run",
        lambda: (_status(cluster, namespace, "long").get("energy", {}).get("nodes", {}).get(node) or {}).get("joules"),
        timeout=45,
    )
    assert joules_before_pause > 0

    st = wait_until(
        "Paused", lambda: (s := _status(cluster, namespace, "long")).get("phase") == "Paused" and s, timeout=70
    )
    pause = condition({"status": st}, "Paused")
    assert pause is not None and pause["status"] == "True" and st["plan"]["scheduledStart"] in pause["message"]
    assert st["progress"]["interruptions"] == 1 and 50 <= st["progress"]["percent"] <= 100
    job = cluster.get_json("job", "long", "-n", namespace)
    assert job["spec"]["suspend"] is True and job["metadata"]["uid"] == job_uid
    wait_until("the first run's pods deleted", lambda: not _pod_uids(cluster, namespace), timeout=30)

    # Killed while paused: the next operator resumes the same Job at the planned time.
    operator.kill()
    operator_factory(config)
    st = wait_until(
        "Running again", lambda: (s := _status(cluster, namespace, "long")).get("phase") == "Running" and s, timeout=60
    )
    resumed_at = datetime.now(UTC)
    assert resumed_at >= datetime.fromisoformat(segments[1]["start"].replace("Z", "+00:00")) - timedelta(seconds=1)
    assert st["progress"]["segments"] == 2
    second = wait_until("the second run's pod", lambda: _pod_uids(cluster, namespace))
    assert not second & first  # new pods, of the same Job
    assert cluster.get_json("job", "long", "-n", namespace)["metadata"]["uid"] == job_uid

    st = wait_until(
        "Succeeded", lambda: (s := _status(cluster, namespace, "long")).get("phase") == "Succeeded" and s, timeout=90
    )
    job = cluster.get_json("job", "long", "-n", namespace)
    # The pods deleted by the pause count as neither failures nor a second success.
    assert job["status"].get("succeeded") == 1 and not job["status"].get("failed")
    joules = wait_until(
        "energy of both runs",
        lambda: (
            (j := (_status(cluster, namespace, "long")["energy"]["nodes"].get(node) or {}).get("joules") or 0)
            > joules_before_pause
            and j
        ),
        timeout=30,
    )
    assert joules > joules_before_pause
    assert _status(cluster, namespace, "long")["emissions"]["grams"] > 0
    reasons = _events(cluster, namespace, "long")
    assert reasons.count("Paused") == 1 and reasons.count("Resumed") == 1 and reasons.count("Completed") == 1


def test_a_resumable_jobset_is_paused_and_resumed_as_the_same_jobset(
    kueue: Cluster, namespace: str, tmp_path: Path, operator_factory: Callable[..., OperatorProcess]
) -> None:
    cluster = kueue
    now = datetime.now(UTC).replace(microsecond=0)
    operator_factory(_forecast(tmp_path / "fc", now))
    workload = {
        "workload": {
            "apiVersion": "jobset.x-k8s.io/v1alpha2",
            "kind": "JobSet",
            "spec": {
                "replicatedJobs": [{"name": "trainer", "replicas": 1, "template": {"spec": {"template": _pod(now)}}}]
            },
        }
    }
    cluster.kubectl("apply", "-f", "-", input=_gtj(namespace, "js", now, workload))
    wait_until("Running", lambda: _status(cluster, namespace, "js").get("phase") == "Running", timeout=30)
    uid = cluster.get_json("jobset", "js", "-n", namespace)["metadata"]["uid"]
    first = wait_until("the first run's pod", lambda: _pod_uids(cluster, namespace), timeout=30)
    wait_until("Paused", lambda: _status(cluster, namespace, "js").get("phase") == "Paused", timeout=70)
    assert cluster.get_json("jobset", "js", "-n", namespace)["spec"]["suspend"] is True
    wait_until("pods deleted", lambda: not _pod_uids(cluster, namespace), timeout=30)
    wait_until("Running again", lambda: _status(cluster, namespace, "js").get("phase") == "Running", timeout=60)
    second = wait_until("the second run's pod", lambda: _pod_uids(cluster, namespace), timeout=30)
    assert not second & first
    wait_until("Succeeded", lambda: _status(cluster, namespace, "js").get("phase") == "Succeeded", timeout=90)
    js = cluster.get_json("jobset", "js", "-n", namespace)
    assert js["metadata"]["uid"] == uid and _status(cluster, namespace, "js")["progress"]["segments"] == 2


def test_a_resumable_kueue_managed_job_releases_its_quota_while_paused_and_keeps_its_workload(
    kueue: Cluster, namespace: str, tmp_path: Path, operator_factory: Callable[..., OperatorProcess]
) -> None:
    cluster = kueue
    cluster.kubectl("apply", "--server-side", "-f", "-", input=queues(namespace, gpus=8, check=False))
    cq = f"cq-{namespace}"
    wait_until(
        "the ClusterQueue active", lambda: kueue_condition(cluster.get_json("clusterqueue", cq), "Active") == "True"
    )
    now = datetime.now(UTC).replace(microsecond=0)
    operator_factory(_forecast(tmp_path / "fc", now))
    template = {"metadata": {"labels": {"kueue.x-k8s.io/queue-name": "lq"}}, "spec": {"template": _pod(now)}}
    cluster.kubectl("apply", "-f", "-", input=_gtj(namespace, "queued", now, {"jobTemplate": template}))
    job_uid = wait_until(
        "its Job",
        lambda: (cluster.get_json("jobs", "-n", namespace)["items"] or [{}])[0].get("metadata", {}).get("uid"),
    )

    def admitted() -> dict[str, Any] | None:
        wl = workload_of(cluster, namespace, job_uid)
        return wl if wl and kueue_condition(wl, "Admitted") == "True" else None

    wl = wait_until("Kueue to admit it", admitted, timeout=30)
    first = wait_until("the first run's pod", lambda: _pod_uids(cluster, namespace), timeout=30)
    wait_until("its quota in use", lambda: cq_usage(cluster, cq)[0] == 2, timeout=30)
    wait_until("Paused", lambda: _status(cluster, namespace, "queued").get("phase") == "Paused", timeout=70)
    # Deactivated: Kueue evicts it, suspends the Job (its pods go) and releases the quota.
    wait_until("the quota released", lambda: cq_usage(cluster, cq) == (0, 0), timeout=30)
    wait_until("pods deleted", lambda: not _pod_uids(cluster, namespace), timeout=30)
    assert workload_of(cluster, namespace, job_uid)["spec"]["active"] is False
    assert cluster.get_json("job", "queued", "-n", namespace)["spec"]["suspend"] is True
    # Resumed: the SAME Workload (its creation time is its place in the queue) is admitted again.
    again = wait_until("admitted again", lambda: (w := admitted()) and w["spec"].get("active", True) and w, timeout=60)
    assert again["metadata"]["uid"] == wl["metadata"]["uid"]
    second = wait_until("the second run's pod", lambda: _pod_uids(cluster, namespace), timeout=30)
    assert not second & first
    wait_until("Succeeded", lambda: _status(cluster, namespace, "queued").get("phase") == "Succeeded", timeout=90)
    job = cluster.get_json("job", "queued", "-n", namespace)
    assert job["metadata"]["uid"] == job_uid and job["status"].get("succeeded") == 1 and not job["status"].get("failed")
    assert _status(cluster, namespace, "queued")["progress"]["segments"] == 2


def test_an_operator_killed_while_pausing_records_the_pause_and_resumes_once(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """Killed between the suspension of the workload and the status write: the next operator finds the
    Job suspended with our paused-at annotation while status says Running. It records the pause (not
    a suspension by someone else), resumes the same Job at the plan's next segment, and it succeeds once."""
    now = datetime.now(UTC).replace(microsecond=0)
    config = _forecast(tmp_path / "fc", now)
    operator = operator_factory(config)
    workload = {"jobTemplate": {"spec": {"template": _pod(now)}}}
    cluster.kubectl("apply", "-f", "-", input=_gtj(namespace, "cut", now, workload))
    st = wait_until("Running", lambda: (s := _status(cluster, namespace, "cut")).get("phase") == "Running" and s)
    resume = st["plan"]["segments"][1]["start"]
    first = wait_until("the first run's pod", lambda: _pod_uids(cluster, namespace), timeout=30)
    end = datetime.fromisoformat(st["plan"]["segments"][0]["end"].replace("Z", "+00:00"))
    wait_until("just before the planned pause", lambda: datetime.now(UTC) >= end - timedelta(seconds=4), timeout=60)
    operator.kill()
    wait_until("the planned pause", lambda: datetime.now(UTC) >= end, timeout=10)
    # What the killed operator's pause had written to the Job, and nothing to the GreenTrainingJob.
    paused_at = st["plan"]["segments"][0]["end"]
    patch = {"spec": {"suspend": True}, "metadata": {"annotations": {"greenjobs.dev/paused-at": paused_at}}}
    cluster.kubectl("patch", "job", "cut", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    wait_until("the first run's pods deleted", lambda: not _pod_uids(cluster, namespace), timeout=30)
    operator_factory(config)
    st = wait_until(
        "Paused", lambda: (s := _status(cluster, namespace, "cut")).get("phase") == "Paused" and s, timeout=30
    )
    assert st["plan"]["scheduledStart"] == resume and st["progress"]["interruptions"] == 1
    assert "JobSuspended" not in _events(cluster, namespace, "cut")  # not taken for someone else's
    wait_until("Running again", lambda: _status(cluster, namespace, "cut").get("phase") == "Running", timeout=70)
    second = wait_until("the second run's pod", lambda: _pod_uids(cluster, namespace), timeout=30)
    assert not second & first
    wait_until("Succeeded", lambda: _status(cluster, namespace, "cut").get("phase") == "Succeeded", timeout=90)
    job = cluster.get_json("job", "cut", "-n", namespace)
    assert job["status"].get("succeeded") == 1 and not job["status"].get("failed")
