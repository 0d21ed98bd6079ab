"""GreenTrainingJobs wrapping other workload kinds, on the real JobSet controller and Kueue.

- A JobSet in spec.workload: created suspended with our labels on every pod template, deferred to the
  clean window, then started in its zone in one patch; its pods run there; the outcome is recorded.
- A Kueue-managed Job (queue-name label): greenjobs never unsuspends it. While deferred it has no
  queue label, so Kueue has no Workload for it and no quota is held; at the planned start the label
  comes back with the zone's nodeSelector and Kueue admits and starts it, once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.kube import Cluster, wait_until
from tests.kueue import ZONE_LABEL, condition, cq_usage, queues, workload_of
from tests.operator_proc import OperatorProcess, file_forecasts, gtj, phase, wait_phase

pytestmark = [pytest.mark.cluster, pytest.mark.kueue]

TIMING = {"estimatedDuration": "20s", "maxDelay": "3m"}


def _forecasts(directory: Path, now: datetime, clean_from: int) -> dict[str, Any]:
    """GB dirty; FR clean from step `clean_from` (of 10 s) on."""
    return file_forecasts(directory, now, {"GB": 300.0, "FR": lambda i: 40.0 if i >= clean_from else 250.0})


def _pod(gpus: int, run_for: str) -> dict[str, Any]:
    return {
        "metadata": {"annotations": {"kwok.greenjobs.dev/run-for": run_for}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": gpus}}}],
        },
    }


def _gtj(namespace: str, name: str, wrapped: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "greenjobs.dev/v1alpha1",
            "kind": "GreenTrainingJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {**wrapped, "timing": TIMING, "placement": {"zones": ["GB", "FR"]}},
        }
    )


def _pods(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-n", ns)["items"]
    return items


def test_gtj_wrapping_a_jobset_is_deferred_then_runs_in_its_zone(
    kueue: Cluster, namespace: str, tmp_path: Path, operator_factory: Callable[..., OperatorProcess]
) -> None:
    cluster = kueue
    now = datetime.now(UTC).replace(microsecond=0)
    operator_factory(_forecasts(tmp_path / "fc", now, 3))
    workload = {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"labels": {"team": "nlp"}},
        "spec": {
            "replicatedJobs": [
                {"name": "trainer", "replicas": 1, "template": {"spec": {"template": _pod(2, "5s")}}},
                {"name": "evaluator", "replicas": 1, "template": {"spec": {"template": _pod(1, "5s")}}},
            ]
        },
    }
    cluster.kubectl("apply", "-f", "-", input=_gtj(namespace, "js", {"workload": workload}))
    wait_phase(cluster, namespace, "js", "Deferred", timeout=30)
    obj = gtj(cluster, namespace, "js")
    assert obj["status"]["plan"]["zone"] == "FR"
    js = cluster.get_json("jobset", "js", "-n", namespace)
    assert js["spec"]["suspend"] is True
    assert js["metadata"]["finalizers"] == ["greenjobs.dev/outcome"]
    assert js["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    for rj in js["spec"]["replicatedJobs"]:
        labels = rj["template"]["spec"]["template"]["metadata"]["labels"]
        assert labels["greenjobs.dev/job-uid"] == obj["metadata"]["uid"]
    assert not _pods(cluster, namespace)  # nothing runs while deferred

    wait_until("Running", lambda: phase(cluster, namespace, "js") in ("Running", "Succeeded"), timeout=60)
    js = cluster.get_json("jobset", "js", "-n", namespace)
    for rj in js["spec"]["replicatedJobs"]:
        assert rj["template"]["spec"]["template"]["spec"]["nodeSelector"] == {ZONE_LABEL: "FR"}
    pods = wait_until("both replicated jobs' pods", lambda: (p := _pods(cluster, namespace)) and len(p) >= 2 and p)
    assert {p["spec"].get("nodeName") for p in pods if p["spec"].get("nodeName")} <= set(cluster.nodes["FR"])
    wait_phase(cluster, namespace, "js", "Succeeded", timeout=90)
    wait_until(
        "the finalizer let go",
        lambda: not cluster.get_json("jobset", "js", "-n", namespace)["metadata"].get("finalizers"),
        timeout=30,
    )


def test_kueue_managed_job_in_a_gtj_holds_no_quota_while_deferred_then_kueue_runs_it(
    kueue: Cluster, namespace: str, tmp_path: Path, operator_factory: Callable[..., OperatorProcess]
) -> None:
    cluster = kueue
    now = datetime.now(UTC).replace(microsecond=0)
    operator_factory(_forecasts(tmp_path / "fc", now, 3))
    cluster.kubectl("apply", "--server-side", "-f", "-", input=queues(namespace, gpus=8, check=False))
    cq = f"cq-{namespace}"
    wait_until("the ClusterQueue active", lambda: condition(cluster.get_json("clusterqueue", cq), "Active") == "True")
    template = {
        "jobTemplate": {
            "metadata": {"labels": {"kueue.x-k8s.io/queue-name": "lq"}},
            "spec": {"template": _pod(8, "5s")},
        }
    }
    cluster.kubectl("apply", "-f", "-", input=_gtj(namespace, "queued", template))
    wait_phase(cluster, namespace, "queued", "Deferred", timeout=30)
    job = cluster.get_json("job", "queued", "-n", namespace)
    assert job["spec"]["suspend"] is True
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"].get("labels", {})
    assert job["metadata"]["annotations"]["greenjobs.dev/queue-name"] == "lq"
    # Held outside Kueue: no Workload, no quota; an urgent job may use the whole quota meanwhile.
    assert workload_of(cluster, namespace, job["metadata"]["uid"]) is None
    assert cq_usage(cluster, cq) == (0, 0)

    def admitted() -> dict[str, Any] | None:
        wl = workload_of(cluster, namespace, job["metadata"]["uid"])
        return wl if wl and condition(wl, "Admitted") == "True" else None

    wl = wait_until("Kueue to admit it at the planned start", admitted, timeout=90)
    started = cluster.get_json("job", "queued", "-n", namespace)
    assert started["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "lq"
    assert started["spec"]["template"]["spec"]["nodeSelector"][ZONE_LABEL] == "FR"
    wait_phase(cluster, namespace, "queued", "Succeeded", timeout=90)
    pods = _pods(cluster, namespace)
    assert pods and {p["spec"]["nodeName"] for p in pods} <= set(cluster.nodes["FR"])
    assert "EvictedDueToAdmissionCheck" not in {
        e["reason"]
        for e in cluster.get_json("events", "-n", namespace)["items"]
        if e["involvedObject"]["name"] == wl["metadata"]["name"]
    }
