"""Lifecycle correctness on the real control plane (issue 10): a finished job never runs again, an
outcome is never lost, nothing stays stuck in Running, and no update is lost between concurrent looks.

Each test watches every Job event of its namespace (`job_watch`): a second Job UID for one
GreenTrainingJob means the training was created twice. kwok runs the pods (`run-for` ends them).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from greenjobs.api.durations import parse_time
from tests.agent_proc import start_agent
from tests.conftest import JobWatch
from tests.kube import Cluster, wait_until
from tests.manifests import gtj_json
from tests.operator_proc import (
    OperatorProcess,
    clean_between,
    condition,
    file_forecasts,
    gtj,
    phase,
    wait_phase,
)

pytestmark = pytest.mark.cluster


def _forecasts(directory: Path, now: datetime, clean_from: int = 3, clean_to: int = 6) -> dict[str, Any]:
    """GB dirty; FR clean in steps [from, to) of 10 s: jobs with slack are deferred to it."""
    return file_forecasts(directory, now, {"GB": 300.0, "FR": clean_between(clean_from, clean_to)})


def _job(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    out = cluster.kubectl("get", "job", name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def _pods(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-n", ns)["items"]
    return items


def _settle(seconds: float) -> None:
    """Give a (wrong) operator the chance to act: several ticks (tickSeconds=1) with nothing expected to
    happen. A negative check, so a sleep; a few ticks suffice, since an operator is only started once it
    is ready (its lists in) and looks at every listed job at once."""
    time.sleep(seconds)


def test_ttl_zero_records_the_outcome_and_energy_and_a_restart_never_reruns(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorProcess],
    job_watch: JobWatch,
) -> None:
    config = _forecasts(tmp_path / "fc", datetime.now(UTC).replace(microsecond=0))
    op = operator_factory(config)
    agents = [start_agent(cluster, node, tmp_path / node, namespace) for node in cluster.nodes["GB"]]
    manifest = gtj_json(namespace, "ttl0", zones=["GB"], gpus=2, run_for="6s", job_spec={"ttlSecondsAfterFinished": 0})
    cluster.kubectl("apply", "-f", "-", input=manifest)
    obj = wait_phase(cluster, namespace, "ttl0", "Succeeded", timeout=90)
    assert condition(obj, "Complete")["reason"] == "JobSucceeded"  # type: ignore[index]
    # The Job's TTL removes it once our finalizer lets go, after the outcome was recorded.
    wait_until("the TTL to remove the Job", lambda: _job(cluster, namespace, "ttl0") is None, timeout=30)
    wait_until(
        "the agents' final energy accounted",
        lambda: (gtj(cluster, namespace, "ttl0")["status"].get("energy") or {}).get("kWh"),
        timeout=30,
    )
    for agent in agents:
        agent.stop()

    # A restart of the operator sees a Succeeded job without its Job: it must create nothing.
    op.stop()
    operator_factory(config)
    _settle(4)
    assert phase(cluster, namespace, "ttl0") == "Succeeded"
    assert _job(cluster, namespace, "ttl0") is None
    assert {n: len(u) for n, u in job_watch.uids().items()} == {"ttl0": 1}


def test_a_succeeded_jobs_job_deleted_by_hand_is_never_recreated(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorProcess],
    job_watch: JobWatch,
) -> None:
    config = _forecasts(tmp_path / "fc", datetime.now(UTC).replace(microsecond=0))
    op = operator_factory(config)
    cluster.kubectl("apply", "-f", "-", input=gtj_json(namespace, "done", zones=["GB"], gpus=1, run_for="3s"))
    wait_phase(cluster, namespace, "done", "Succeeded")
    wait_until(
        "the finalizer let go", lambda: not (_job(cluster, namespace, "done") or {})["metadata"].get("finalizers")
    )
    cluster.kubectl("delete", "job", "done", "-n", namespace, "--wait=true")
    op.stop()
    operator_factory(config)
    _settle(4)
    assert phase(cluster, namespace, "done") == "Succeeded"
    assert job_watch.uids() == {"done": job_watch.uids()["done"]} and len(job_watch.uids()["done"]) == 1


def test_job_deleted_while_deferred_is_recreated_because_it_never_ran(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorProcess],
    job_watch: JobWatch,
) -> None:
    config = _forecasts(tmp_path / "fc", datetime.now(UTC).replace(microsecond=0), clean_from=4, clean_to=7)
    operator_factory(config)
    timing = {"estimatedDuration": "20s", "maxDelay": "3m"}
    cluster.kubectl(
        "apply", "-f", "-", input=gtj_json(namespace, "waits", zones=["FR"], timing=timing, gpus=1, run_for="4s")
    )
    wait_phase(cluster, namespace, "waits", "Deferred")
    first = _job(cluster, namespace, "waits")
    assert first is not None and first["spec"]["suspend"] is True
    assert first["metadata"]["finalizers"] == ["greenjobs.dev/outcome"]
    cluster.kubectl("delete", "job", "waits", "-n", namespace, "--wait=false")
    recreated = wait_until(
        "a new Job",
        lambda: (j := _job(cluster, namespace, "waits")) and j["metadata"]["uid"] != first["metadata"]["uid"] and j,
        timeout=30,
    )
    assert recreated["spec"]["suspend"] is True and phase(cluster, namespace, "waits") == "Deferred"
    obj = wait_phase(cluster, namespace, "waits", "Succeeded", timeout=120)
    assert obj["status"]["plan"]["zone"] == "FR"
    uids = job_watch.uids()["waits"]
    assert len(uids) == 2  # the first never ran: no pod of it ever existed
    owners = {p["metadata"]["ownerReferences"][0]["uid"] for p in _pods(cluster, namespace)}
    assert owners <= {recreated["metadata"]["uid"]}


def test_job_deleted_while_running_fails_the_job_and_is_not_rerun_even_across_a_restart(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorProcess],
    job_watch: JobWatch,
) -> None:
    config = _forecasts(tmp_path / "fc", datetime.now(UTC).replace(microsecond=0))
    op = operator_factory(config)
    for name in ("cancel", "down"):
        cluster.kubectl("apply", "-f", "-", input=gtj_json(namespace, name, zones=["GB"], gpus=1, run_for="10m"))
    for name in ("cancel", "down"):
        wait_phase(cluster, namespace, name, "Running")

    # Deleted by hand while the operator runs: Failed (JobDeleted), the Job goes, nothing new.
    cluster.kubectl("delete", "job", "cancel", "-n", namespace, "--wait=false")
    obj = wait_phase(cluster, namespace, "cancel", "Failed")
    assert condition(obj, "Failed")["reason"] == "JobDeleted"  # type: ignore[index]
    wait_until("the Job to go", lambda: _job(cluster, namespace, "cancel") is None, timeout=30)

    # Deleted while the operator is down: our finalizer holds it until the operator sees it.
    op.stop()
    cluster.kubectl("delete", "job", "down", "-n", namespace, "--wait=false")
    held = _job(cluster, namespace, "down")
    assert held is not None and held["metadata"].get("deletionTimestamp")
    operator_factory(config)
    obj = wait_phase(cluster, namespace, "down", "Failed")
    assert condition(obj, "Failed")["reason"] == "JobDeleted"  # type: ignore[index]
    wait_until("the Job to go", lambda: _job(cluster, namespace, "down") is None, timeout=30)
    _settle(5)
    assert {n: len(u) for n, u in job_watch.uids().items()} == {"cancel": 1, "down": 1}


def test_job_gone_without_a_trace_while_the_operator_was_down_is_lost_not_rerun(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorProcess],
    job_watch: JobWatch,
) -> None:
    config = _forecasts(tmp_path / "fc", datetime.now(UTC).replace(microsecond=0))
    op = operator_factory(config)
    cluster.kubectl("apply", "-f", "-", input=gtj_json(namespace, "lost", zones=["GB"], gpus=1, run_for="10m"))
    wait_phase(cluster, namespace, "lost", "Running")
    op.stop()
    # Someone strips our finalizer and deletes the Job: its outcome is gone for good.
    cluster.kubectl("patch", "job", "lost", "-n", namespace, "--type=json", "-p",
                    '[{"op": "remove", "path": "/metadata/finalizers"}]')  # fmt: skip
    cluster.kubectl("delete", "job", "lost", "-n", namespace, "--wait=true")
    operator_factory(config)
    obj = wait_phase(cluster, namespace, "lost", "Failed")
    assert condition(obj, "Failed")["reason"] == "JobLost"  # type: ignore[index]
    _settle(5)
    assert _job(cluster, namespace, "lost") is None
    assert {n: len(u) for n, u in job_watch.uids().items()} == {"lost": 1}


def test_same_name_recreated_is_a_new_job_from_zero(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorProcess],
    job_watch: JobWatch,
) -> None:
    config = _forecasts(tmp_path / "fc", datetime.now(UTC).replace(microsecond=0))
    operator_factory(config)
    agents = [start_agent(cluster, node, tmp_path / node, namespace) for node in cluster.nodes["GB"]]
    manifest = gtj_json(namespace, "again", zones=["GB"], gpus=1, run_for="4s")
    cluster.kubectl("apply", "-f", "-", input=manifest)
    first = wait_phase(cluster, namespace, "again", "Succeeded")
    wait_until(
        "energy of the first run",
        lambda: (gtj(cluster, namespace, "again")["status"].get("energy") or {}).get("gpuKWh"),
        timeout=30,
    )
    first = gtj(cluster, namespace, "again")
    cluster.kubectl("delete", "gtj", "again", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_until("the old Job to go", lambda: _job(cluster, namespace, "again") is None, timeout=60)
    cluster.kubectl("apply", "-f", "-", input=manifest)
    second = wait_phase(cluster, namespace, "again", "Succeeded")
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    wait_until(
        "energy of the second run",
        lambda: (gtj(cluster, namespace, "again")["status"].get("energy") or {}).get("gpuKWh"),
        timeout=30,
    )
    second = gtj(cluster, namespace, "again")
    # The second run is charged for its own joules only: the same order as the first, not the sum.
    assert second["status"]["energy"]["gpuKWh"] < 1.6 * first["status"]["energy"]["gpuKWh"]
    assert len(job_watch.uids()["again"]) == 2
    for agent in agents:
        agent.stop()


def test_spec_edits_at_the_moment_of_the_start_lose_nothing(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorProcess],
    job_watch: JobWatch,
) -> None:
    """kopf used to run its timer and change handlers of one object concurrently: an edit while the
    planned start was being carried out could end Running without a Job, or with the Job uncapped."""
    now = datetime.now(UTC).replace(microsecond=0)
    config = _forecasts(tmp_path / "fc", now, clean_from=2, clean_to=5)
    operator_factory(config)
    timing = {"estimatedDuration": "20s", "maxDelay": "3m"}
    power = {"policy": "Static", "capWatts": 250}
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=gtj_json(namespace, "race", zones=["FR"], timing=timing, power=power, gpus=1, run_for="30s"),
    )
    obj = wait_phase(cluster, namespace, "race", "Deferred")
    start = parse_time(obj["status"]["plan"]["scheduledStart"])
    # Edit power (and budget) every 150 ms from 2 s before the planned start to 3 s after it.
    while datetime.now(UTC) < start - timedelta(seconds=2):
        time.sleep(0.1)
    stop = start + timedelta(seconds=3)
    edits = 0
    errors: list[str] = []

    def edit() -> None:
        nonlocal edits
        while datetime.now(UTC) < stop:
            cap = 200 + 10 * (edits % 10)
            patch = {"spec": {"power": {"policy": "Static", "capWatts": cap}, "budget": {"maxEnergyKWh": 100 + edits}}}
            out = cluster.kubectl(
                "patch", "gtj", "race", "-n", namespace, "--type=merge", "-p", json.dumps(patch), check=False
            )
            if out.returncode != 0:
                errors.append(out.stderr)
            edits += 1
            time.sleep(0.15)

    t = threading.Thread(target=edit)
    t.start()
    t.join()
    assert not errors and edits >= 10  # kubectl takes ~0.1-0.3 s a call here
    final = gtj(cluster, namespace, "race")
    final_cap = final["spec"]["power"]["capWatts"]

    def settled() -> dict[str, Any] | None:
        o = gtj(cluster, namespace, "race")
        st = o.get("status", {})
        ok = (
            st.get("phase") == "Running"
            and st.get("observedGeneration") == o["metadata"]["generation"]
            and (st.get("power") or {}).get("targetCapWatts") == final_cap
        )
        return o if ok else None

    obj = wait_until("Running with the last edit applied", settled, timeout=30)
    job = _job(cluster, namespace, "race")
    assert job is not None and job["spec"]["suspend"] is False, "Running must have its Job, started"
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"greenjobs.dev/grid-zone": "FR"}
    assert obj["status"]["startTime"]
    assert {n: len(u) for n, u in job_watch.uids().items()} == {"race": 1}


def test_a_finished_job_folds_in_late_energy_then_settles_out_of_the_watch(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Callable[..., OperatorProcess]
) -> None:
    config = {**_forecasts(tmp_path / "fc", datetime.now(UTC).replace(microsecond=0)), "settleAfter": "8s"}
    operator_factory(config)
    cluster.kubectl("apply", "-f", "-", input=gtj_json(namespace, "late", zones=["GB"], gpus=1, run_for="2s"))
    wait_phase(cluster, namespace, "late", "Succeeded")

    # An agent's report that comes after the outcome (as after a node's last sample) is still counted.
    node = cluster.nodes["GB"][0]
    late = {"status": {"energy": {"nodes": {node: {"joules": 3.6e6, "gpus": 1, "gpuSeconds": 2}}}}}
    cluster.kubectl(
        "patch", "gtj", "late", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(late)
    )
    wait_until(
        "the late report accounted",
        lambda: (
            ((gtj(cluster, namespace, "late")["status"].get("emissions") or {}).get("accountedJoules") or {}).get(node)
            == 3.6e6
        ),
        timeout=30,
    )
    wait_until(
        "the finished job settled",
        lambda: gtj(cluster, namespace, "late")["metadata"].get("labels", {}).get("greenjobs.dev/settled") == "true",
        timeout=30,
    )
    settled = gtj(cluster, namespace, "late")
    assert settled["status"]["phase"] == "Succeeded" and settled["status"]["energy"]["kWh"] > 0

    # Settled: out of the operator's watch. A spec edit there is not even seen (a watched finished job
    # would get its new generation acknowledged within a tick), while a job applied after it is planned.
    cluster.kubectl(
        "patch", "gtj", "late", "-n", namespace, "--type=merge", "-p", '{"spec":{"timing":{"estimatedDuration":"1h"}}}'
    )
    cluster.kubectl("apply", "-f", "-", input=gtj_json(namespace, "after", zones=["GB"], gpus=1))
    wait_until("the next job planned", lambda: phase(cluster, namespace, "after") is not None, timeout=30)
    _settle(3)
    edited = gtj(cluster, namespace, "late")
    assert edited["metadata"]["generation"] == settled["metadata"]["generation"] + 1
    assert edited["status"] == settled["status"]
