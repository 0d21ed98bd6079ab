"""The carbon AdmissionCheck on the real Kueue v0.17 (+ JobSet v0.12) of the test control plane.

Plain Kueue users: a Job or JobSet submitted to a LocalQueue whose ClusterQueue uses the check is
held until its planned start WITHOUT holding quota (its Workload is deactivated meanwhile), then
admitted with the planned zone's nodeSelector and never suspended again; quotas still hold.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from greenjobs.api.durations import parse_time
from greenjobs.kueue.decisions import START_SLACK
from tests.fault_proxy import Fault, fault_proxy
from tests.kube import Cluster, ManagedProcess, wait_until
from tests.kueue import ZONE_LABEL, condition, cq_usage, queues, start_check, workload_of
from tests.operator_proc import clean_between, file_forecasts

pytestmark = [pytest.mark.cluster, pytest.mark.kueue]

HINTS = {
    "greenjobs.dev/estimated-duration": "20s",
    "greenjobs.dev/max-delay": "3m",
    "greenjobs.dev/zones": "GB,FR",
}


@pytest.fixture
def check(kueue: Cluster, tmp_path: Path) -> Iterator[Callable[[datetime, int], ManagedProcess]]:
    """Start `greenjobs kueue-check` with forecasts where FR is clean from step `clean_from` on."""
    started: list[ManagedProcess] = []

    def start(now: datetime, clean_from: int) -> ManagedProcess:
        zones = {"GB": 300.0, "FR": lambda i: 40.0 if i >= clean_from else 250.0}
        p = start_check(kueue, tmp_path, file_forecasts(tmp_path / "fc", now, zones))
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def _job(namespace: str, name: str, gpus: int, *, hints: dict[str, str] | None = None, run_for: str = "5s") -> str:
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"kueue.x-k8s.io/queue-name": "lq"},
                "annotations": hints or {},
            },
            "spec": {
                "template": {
                    "metadata": {"annotations": {"kwok.greenjobs.dev/run-for": run_for}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "train", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": gpus}}}
                        ],
                    },
                }
            },
        }
    )


def _jobset(namespace: str, name: str, hints: dict[str, str]) -> str:
    def rj(rname: str, gpus: int) -> dict[str, Any]:
        pod = {
            "metadata": {"annotations": {"kwok.greenjobs.dev/run-for": "5s"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": gpus}}}],
            },
        }
        return {"name": rname, "replicas": 1, "template": {"spec": {"template": pod}}}

    return json.dumps(
        {
            "apiVersion": "jobset.x-k8s.io/v1alpha2",
            "kind": "JobSet",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"kueue.x-k8s.io/queue-name": "lq"},
                "annotations": hints,
            },
            "spec": {"replicatedJobs": [rj("trainer", 2), rj("evaluator", 1)]},
        }
    )


def _uid(cluster: Cluster, kind: str, namespace: str, name: str) -> str:
    return str(cluster.get_json(kind, name, "-n", namespace)["metadata"]["uid"])


def _events(cluster: Cluster, namespace: str, name: str) -> set[str]:
    items = cluster.get_json("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
    return {e["reason"] for e in items}


def _held(cluster: Cluster, namespace: str, uid: str) -> dict[str, Any] | None:
    wl = workload_of(cluster, namespace, uid)
    return wl if wl and wl["spec"].get("active") is False else None


def _watch_until_complete(cluster: Cluster, namespace: str, name: str, timeout: float = 90) -> list[bool]:
    """Every `spec.suspend` seen on the Job until it completes (to catch a re-suspension)."""
    seen: list[bool] = []

    def done() -> bool:
        job = cluster.get_json("job", name, "-n", namespace)
        seen.append(bool(job["spec"].get("suspend")))
        return condition(job, "Complete") == "True"

    wait_until(f"Job {name} to complete", done, timeout=timeout)
    return seen


def test_plain_job_is_held_without_quota_then_admitted_in_the_planned_zone(
    kueue: Cluster, namespace: str, check: Callable[[datetime, int], ManagedProcess]
) -> None:
    cluster = kueue
    now = datetime.now(UTC).replace(microsecond=0)
    check(now, 4)  # FR clean from now + 40 s (time to observe the hold on a loaded machine)
    cluster.kubectl("apply", "--server-side", "-f", "-", input=queues(namespace, gpus=8))
    cq = f"cq-{namespace}"
    wait_until("the check Active and the ClusterQueue active", lambda: condition(
        cluster.get_json("clusterqueue", cq), "Active") == "True", timeout=30)  # fmt: skip

    cluster.kubectl("create", "-f", "-", input=_job(namespace, "deferred", 8, hints=HINTS))
    uid = _uid(cluster, "job", namespace, "deferred")
    wl = wait_until("the deferred Workload to be deactivated", lambda: _held(cluster, namespace, uid), timeout=30)
    ann = wl["metadata"]["annotations"]
    assert ann["greenjobs.dev/planned-zone"] == "FR"
    start = parse_time(ann["greenjobs.dev/planned-start"])
    assert now + timedelta(seconds=35) <= start <= now + timedelta(seconds=45)

    # While held: no quota reserved, so an urgent job using the WHOLE quota is admitted and runs.
    cluster.kubectl("create", "-f", "-", input=_job(namespace, "urgent", 8, run_for="3s"))
    urgent_uid = _uid(cluster, "job", namespace, "urgent")
    wait_until("the urgent job admitted", lambda: condition(workload_of(cluster, namespace, urgent_uid) or {},
                                                             "Admitted") == "True", timeout=30)  # fmt: skip
    # The ClusterQueue's status lags a little behind admissions: wait for it, still before the start.
    wait_until("the ClusterQueue to report the urgent job's 8 GPUs", lambda: cq_usage(cluster, cq) == (8, 1))
    assert datetime.now(UTC) < start, "too slow to observe the hold"
    # Held workloads are planned again every replanInterval (5 s here); the same forecasts give the same start.
    replanned = wait_until(
        "a re-plan while held",
        lambda: (
            (w := _held(cluster, namespace, uid))
            and w["metadata"]["annotations"]["greenjobs.dev/planned-at"] != ann["greenjobs.dev/planned-at"]
            and w
        ),
        timeout=15,
    )
    assert replanned["metadata"]["annotations"]["greenjobs.dev/planned-start"] == ann["greenjobs.dev/planned-start"]
    assert cluster.get_json("job", "deferred", "-n", namespace)["spec"]["suspend"] is True
    assert condition(workload_of(cluster, namespace, uid) or {}, "QuotaReserved") != "True"

    suspends = _watch_until_complete(cluster, namespace, "deferred", timeout=120)
    wl = workload_of(cluster, namespace, uid)
    assert wl is not None and wl["spec"].get("active") is not False
    (state,) = [s for s in wl["status"]["admissionChecks"] if s["name"] == "greenjobs-carbon"]
    assert state["state"] == "Ready"
    assert state["podSetUpdates"] == [{"name": "main", "nodeSelector": {ZONE_LABEL: "FR"}}]
    job = cluster.get_json("job", "deferred", "-n", namespace)
    # Released at the planned start: a start less than START_SLACK away counts as due (and the Job's
    # startTime is in whole seconds).
    assert parse_time(job["status"]["startTime"]) >= start - START_SLACK
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {ZONE_LABEL: "FR"}
    pods = cluster.get_json("pods", "-n", namespace, "-l", "job-name=deferred")["items"]
    assert pods and {p["spec"]["nodeName"] for p in pods} <= set(cluster.nodes["FR"])
    # Unsuspended once, never suspended again (no eviction because of greenjobs).
    first_run = suspends.index(False)
    assert all(not s for s in suspends[first_run:]), suspends
    assert "EvictedDueToAdmissionCheck" not in _events(cluster, namespace, wl["metadata"]["name"])
    assert {"Planned", "Deferred", "Released"} <= _events(cluster, namespace, wl["metadata"]["name"])


def test_jobset_is_held_then_every_replicated_job_runs_in_the_planned_zone(
    kueue: Cluster, namespace: str, check: Callable[[datetime, int], ManagedProcess]
) -> None:
    cluster = kueue
    now = datetime.now(UTC).replace(microsecond=0)
    check(now, 2)  # FR clean from now + 20 s
    cluster.kubectl("apply", "--server-side", "-f", "-", input=queues(namespace, gpus=8))
    cq = f"cq-{namespace}"
    wait_until("ClusterQueue active", lambda: condition(cluster.get_json("clusterqueue", cq), "Active") == "True")

    cluster.kubectl("create", "-f", "-", input=_jobset(namespace, "js", HINTS))
    uid = _uid(cluster, "jobset", namespace, "js")
    wl = wait_until("the JobSet's Workload to be deactivated", lambda: _held(cluster, namespace, uid), timeout=30)
    start = parse_time(wl["metadata"]["annotations"]["greenjobs.dev/planned-start"])
    assert wl["metadata"]["annotations"]["greenjobs.dev/planned-zone"] == "FR"
    held = workload_of(cluster, namespace, uid) or {}
    assert datetime.now(UTC) < start, "too slow to observe the hold"
    assert condition(held, "QuotaReserved") != "True"
    assert cluster.get_json("jobset", "js", "-n", namespace)["spec"]["suspend"] is True
    assert not cluster.get_json("pods", "-n", namespace)["items"]

    def completed() -> bool:
        js = cluster.get_json("jobset", "js", "-n", namespace)
        return condition(js, "Completed") == "True"

    wait_until("the JobSet to complete", completed, timeout=120)
    wl = workload_of(cluster, namespace, uid)
    assert wl is not None
    (state,) = [s for s in wl["status"]["admissionChecks"] if s["name"] == "greenjobs-carbon"]
    assert sorted(u["name"] for u in state["podSetUpdates"]) == ["evaluator", "trainer"]
    assert all(u["nodeSelector"] == {ZONE_LABEL: "FR"} for u in state["podSetUpdates"])
    pods = cluster.get_json("pods", "-n", namespace, "-l", "jobset.sigs.k8s.io/jobset-name=js")["items"]
    assert {p["metadata"]["labels"]["jobset.sigs.k8s.io/replicatedjob-name"] for p in pods} == {"trainer", "evaluator"}
    assert {p["spec"]["nodeName"] for p in pods} <= set(cluster.nodes["FR"])
    assert min(parse_time(p["metadata"]["creationTimestamp"]) for p in pods) >= start - START_SLACK


def test_quota_holds_with_more_demand_than_quota(
    kueue: Cluster, namespace: str, check: Callable[[datetime, int], ManagedProcess]
) -> None:
    """Three 8-GPU jobs that may start at once against an 8-GPU ClusterQueue: one at a time, each
    through the check, all in the cleanest zone, and never more than the quota reserved."""
    cluster = kueue
    now = datetime.now(UTC).replace(microsecond=0)
    check(now, -6)  # FR clean all along: no deferral, the check only places
    cluster.kubectl("apply", "--server-side", "-f", "-", input=queues(namespace, gpus=8))
    cq = f"cq-{namespace}"
    wait_until("ClusterQueue active", lambda: condition(cluster.get_json("clusterqueue", cq), "Active") == "True")
    names = ["q1", "q2", "q3"]
    for n in names:
        cluster.kubectl("create", "-f", "-", input=_job(namespace, n, 8, hints={"greenjobs.dev/zones": "GB,FR"}))
    peak = 0

    def all_done() -> bool:
        nonlocal peak
        used, reserving = cq_usage(cluster, cq)
        assert used <= 8 and reserving <= 1, (used, reserving)
        peak = max(peak, used)
        jobs = cluster.get_json("jobs", "-n", namespace)["items"]
        return len(jobs) == 3 and all(condition(j, "Complete") == "True" for j in jobs)

    wait_until("all three jobs to complete one after another", all_done, timeout=150)
    assert peak == 8
    for n in names:
        wl = workload_of(cluster, namespace, _uid(cluster, "job", namespace, n))
        assert wl is not None
        (state,) = [s for s in wl["status"]["admissionChecks"] if s["name"] == "greenjobs-carbon"]
        assert state["state"] == "Ready" and state["podSetUpdates"][0]["nodeSelector"] == {ZONE_LABEL: "FR"}


def test_the_plan_follows_the_queue_quota_when_the_only_flavor_pins_another_zone(
    kueue: Cluster, namespace: str, check: Callable[[datetime, int], ManagedProcess]
) -> None:
    """FR is cleaner, but the ClusterQueue's only GPU flavor pins GB: planned against the queue's quota
    (issue 22: one planner, every path), the Workload is planned in GB, where it can be admitted, not
    in FR (a podSetUpdate to FR would make Kueue fail it for good). No conflict, and it runs in GB."""
    cluster = kueue
    now = datetime.now(UTC).replace(microsecond=0)
    check(now, -6)  # FR clean all along: planned alone, the job would go to FR
    cluster.kubectl("apply", "--server-side", "-f", "-", input=queues(namespace, gpus=8, pinned_zone="GB"))
    cq = f"cq-{namespace}"
    wait_until("ClusterQueue active", lambda: condition(cluster.get_json("clusterqueue", cq), "Active") == "True")
    cluster.kubectl("create", "-f", "-", input=_job(namespace, "pinned", 4, hints={"greenjobs.dev/zones": "GB,FR"}))
    uid = _uid(cluster, "job", namespace, "pinned")
    _watch_until_complete(cluster, namespace, "pinned")
    wl = workload_of(cluster, namespace, uid)
    assert wl is not None and wl["metadata"]["annotations"]["greenjobs.dev/planned-zone"] == "GB"
    finished = next(c for c in wl["status"]["conditions"] if c["type"] == "Finished")
    assert finished["status"] == "True" and finished["reason"] == "Succeeded", finished  # not FailedToStart
    events = cluster.get_json(
        "events", "-n", namespace, "--field-selector", f"involvedObject.name={wl['metadata']['name']}"
    )
    assert not [e for e in events["items"] if e["reason"] == "ZoneConflict"]
    pods = cluster.get_json("pods", "-n", namespace, "-l", "job-name=pinned")["items"]
    assert pods and {p["spec"]["nodeName"] for p in pods} <= set(cluster.nodes["GB"])


def test_a_suspended_job_without_the_queue_label_holds_nothing_until_the_label_comes(
    kueue: Cluster, namespace: str, check: Callable[[datetime, int], ManagedProcess]
) -> None:
    """The other way to wait without quota, for jobs greenjobs creates itself (GreenTrainingJobs):
    create them suspended WITHOUT kueue.x-k8s.io/queue-name, so Kueue has no Workload for them at
    all, and add the label at the planned start; Kueue then queues the job and the check places it."""
    cluster = kueue
    check(datetime.now(UTC).replace(microsecond=0), -6)
    cluster.kubectl("apply", "--server-side", "-f", "-", input=queues(namespace, gpus=8))
    cq = f"cq-{namespace}"
    wait_until("ClusterQueue active", lambda: condition(cluster.get_json("clusterqueue", cq), "Active") == "True")
    job = json.loads(_job(namespace, "later", 8, hints={"greenjobs.dev/zones": "GB,FR"}))
    del job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"]
    job["spec"]["suspend"] = True
    cluster.kubectl("create", "-f", "-", input=json.dumps(job))
    uid = _uid(cluster, "job", namespace, "later")
    # An urgent job may take the whole quota meanwhile: nothing is reserved for the unlabelled one.
    cluster.kubectl("create", "-f", "-", input=_job(namespace, "urgent", 8, run_for="2s"))
    _watch_until_complete(cluster, namespace, "urgent")
    assert workload_of(cluster, namespace, uid) is None
    assert cluster.get_json("job", "later", "-n", namespace)["spec"]["suspend"] is True

    cluster.kubectl("label", "job", "later", "-n", namespace, "kueue.x-k8s.io/queue-name=lq")
    suspends = _watch_until_complete(cluster, namespace, "later")
    first_run = suspends.index(False)
    assert all(not s for s in suspends[first_run:]), suspends
    wl = workload_of(cluster, namespace, uid)
    assert wl is not None
    (state,) = [s for s in wl["status"]["admissionChecks"] if s["name"] == "greenjobs-carbon"]
    assert state["podSetUpdates"] == [{"name": "main", "nodeSelector": {ZONE_LABEL: "FR"}}]


def test_a_tight_cluster_queue_keeps_every_feasible_deadline_and_is_never_idle_while_jobs_wait(
    kueue: Cluster, namespace: str, tmp_path: Path
) -> None:
    """Issue 22's herd through Kueue: a ClusterQueue of 16 GPUs (its quota is the limit, pinned to GB),
    ten 8-GPU Jobs of 20 s with 130 s of slack, one clean 20 s window. Only two fit the window; the
    check plans the held Workloads jointly so that the others run before and after it, two at a time:
    every deadline holds and the quota is never idle while a Job waits, nor ever exceeded. Each round
    costs more than its 20 s (admission, pod start, the Job's completion seen): the check plans each
    start to hold its quota 5 s longer (fleet.startLatency), and the slack leaves room for it."""
    cluster = kueue
    now = datetime.now(UTC).replace(microsecond=0)
    forecasts = file_forecasts(tmp_path / "fc", now, {"GB": clean_between(6, 8, dirty=300.0)})
    started = start_check(kueue, tmp_path, {**forecasts, "fleet": {"startLatency": "5s"}})
    try:
        cluster.kubectl("apply", "--server-side", "-f", "-", input=queues(namespace, gpus=16, pinned_zone="GB"))
        cq = f"cq-{namespace}"
        wait_until("ClusterQueue active", lambda: condition(cluster.get_json("clusterqueue", cq), "Active") == "True")
        hints = {
            "greenjobs.dev/estimated-duration": "20s",
            "greenjobs.dev/max-delay": "130s",
            "greenjobs.dev/zones": "GB",
        }
        names = [f"herd-{i}" for i in range(10)]
        items = [json.loads(_job(namespace, n, 8, hints=hints, run_for="20s")) for n in names]
        cluster.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        peak = 0

        def all_done() -> bool:
            nonlocal peak
            used, _ = cq_usage(cluster, cq)
            assert used <= 16, used
            peak = max(peak, used)
            jobs = cluster.get_json("jobs", "-n", namespace)["items"]
            return len(jobs) == len(names) and all(condition(j, "Complete") == "True" for j in jobs)

        wait_until("every Job to complete", all_done, timeout=300, interval=2)
        jobs = {j["metadata"]["name"]: j for j in cluster.get_json("jobs", "-n", namespace)["items"]}
        slack = timedelta(seconds=15)  # Kueue's admission, kwok's pod start and the Job controller's lag
        late = {
            n: j["status"]["completionTime"]
            for n, j in jobs.items()
            if parse_time(j["status"]["completionTime"])
            > parse_time(j["metadata"]["creationTimestamp"]) + timedelta(seconds=130 + 20) + slack
        }
        assert not late, f"late although a schedule keeping every deadline exists: {late}"
        first = min(parse_time(j["status"]["startTime"]) for j in jobs.values())
        last = max(parse_time(j["status"]["completionTime"]) for j in jobs.values())
        assert last - first <= timedelta(seconds=5 * 20 + 5 * 10), (first, last)
        assert peak == 16
    finally:
        started.stop()


def test_a_transient_500_on_the_ready_answer_is_retried(kueue: Cluster, namespace: str, tmp_path: Path) -> None:
    """The check's write of its Ready state fails with a 500 (a fault proxy between the check and the API
    server answers it, tests/fault_proxy.py): the first write, and any other within 3 s, which Kueue's own
    follow-up writes to the Workload may prompt (once those are done, no event comes while the Workload
    holds quota and waits for the check). The write is retried with backoff from the check's work queue
    (kopf does not retry event handlers), so the job is admitted and runs, once, in the planned zone."""
    cluster = kueue
    now = datetime.now(UTC).replace(microsecond=0)
    forecasts = file_forecasts(tmp_path / "fc", now, {"GB": 300.0, "FR": 40.0})  # FR clean: no deferral
    status_write = rf"^/apis/kueue\.x-k8s\.io/[^/]+/namespaces/{namespace}/workloads/[^/]+/status$"
    fault = Fault(methods=("PATCH", "PUT"), path=status_write, status=500, for_seconds=3.0)
    with fault_proxy(cluster, tmp_path / "proxy", [fault]) as proxy:
        p = start_check(
            cluster,
            tmp_path,
            forecasts,
            env={"KUBECONFIG": str(proxy.kubeconfig(tmp_path))},
        )
        try:
            cluster.kubectl("apply", "--server-side", "-f", "-", input=queues(namespace, gpus=8))
            cq = f"cq-{namespace}"
            wait_until(
                "ClusterQueue active", lambda: condition(cluster.get_json("clusterqueue", cq), "Active") == "True"
            )
            cluster.kubectl(
                "create", "-f", "-", input=_job(namespace, "flaky", 4, hints={"greenjobs.dev/zones": "GB,FR"})
            )
            uid = _uid(cluster, "job", namespace, "flaky")
            suspends = _watch_until_complete(cluster, namespace, "flaky", timeout=90)
            assert fault.injected >= 1, proxy.seen
            answers = [s for m in ("PATCH", "PUT") for s in proxy.requests(m, status_write)]
            assert answers[: fault.injected] == [500] * fault.injected and set(answers[fault.injected :]) == {200}, (
                answers
            )
            assert "Ready" in p.logs() and "API error 500" in p.logs() and "retrying in" in p.logs()
            assert p.alive()
        finally:
            p.stop()
    wl = workload_of(cluster, namespace, uid)
    assert wl is not None
    (state,) = [s for s in wl["status"]["admissionChecks"] if s["name"] == "greenjobs-carbon"]
    assert state["state"] == "Ready"
    assert state["podSetUpdates"] == [{"name": "main", "nodeSelector": {ZONE_LABEL: "FR"}}]
    first_run = suspends.index(False)
    assert all(not s for s in suspends[first_run:]), suspends
    assert len(cluster.get_json("pods", "-n", namespace, "-l", "job-name=flaky")["items"]) == 1
