"""The operator's core scenario against the real control plane: plan, defer, start in the chosen
zone, follow the Job to the end; plus re-planning on spec change, urgent jobs, caps and cascade."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from greenjobs.api.durations import parse_time
from tests.kube import Cluster, wait_until
from tests.operator_proc import OperatorProcess, clean_between, condition, file_forecasts, gtj, wait_phase

pytestmark = pytest.mark.cluster


def _forecasts(directory: Path, now: datetime, fr_clean_from: int, fr_clean_to: int) -> dict[str, Any]:
    """GB dirty all along; FR dirty except steps [from, to) of 10 s each."""
    return file_forecasts(directory, now, {"GB": 300.0, "FR": clean_between(fr_clean_from, fr_clean_to)})


def _manifest(
    namespace: str,
    name: str,
    *,
    run_for: str = "6s",
    timing: str = "",
    power: str = "",
    zones: str = "[GB, FR]",
    gpus: int = 4,
) -> str:
    return f"""
apiVersion: greenjobs.dev/v1alpha1
kind: GreenTrainingJob
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  jobTemplate:
    metadata: {{labels: {{team: nlp}}}}
    spec:
      template:
        metadata: {{annotations: {{kwok.greenjobs.dev/run-for: {run_for}}}}}
        spec:
          restartPolicy: Never
          containers: [{{name: train, image: busybox, resources: {{limits: {{nvidia.com/gpu: {gpus}}}}}}}]
  {timing}
  placement: {{zones: {zones}}}
  {power}
"""


def test_deferred_to_the_clean_window_then_runs_in_that_zone_and_succeeds(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Callable[..., OperatorProcess]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    operator_factory(_forecasts(tmp_path / "fc", now, 3, 6))  # FR clean from now+30s to now+60s
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=_manifest(
            namespace,
            "llm",
            timing="timing: {estimatedDuration: 20s, maxDelay: 3m}",
            power="power: {policy: Static, capWatts: 250}",
        ),
    )

    obj = wait_until("a plan", lambda: (o := gtj(cluster, namespace, "llm")).get("status", {}).get("plan") and o)
    status = obj["status"]
    plan = status["plan"]
    assert status["phase"] == "Deferred"
    assert plan["zone"] == "FR"
    start = parse_time(plan["scheduledStart"])
    assert now + timedelta(seconds=25) <= start <= now + timedelta(seconds=35)
    assert plan["expectedGPerKWh"] == pytest.approx(40.0)
    assert plan["baselineGPerKWh"] == pytest.approx(300.0)
    assert plan["expectedSavingsPercent"] == pytest.approx(86.7, abs=0.1)
    assert condition(obj, "Planned")["status"] == "True"
    job = cluster.get_json("job", "llm", "-n", namespace)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert job["metadata"]["labels"]["greenjobs.dev/job"] == "llm"
    assert job["metadata"]["labels"]["team"] == "nlp"
    assert not cluster.get_json("pods", "-n", namespace)["items"]  # nothing runs while deferred

    table = cluster.kubectl("get", "gtj", "-n", namespace).stdout.splitlines()
    assert table[0].split()[:8] == ["NAME", "PHASE", "ZONE", "START", "CAP-W", "ENERGY-KWH", "CO2E-G", "SAVED-%"]
    assert table[1].split()[:4] == ["llm", "Deferred", "FR", plan["scheduledStart"]]

    obj = wait_phase(cluster, namespace, "llm", "Running", timeout=60)
    assert parse_time(obj["status"]["startTime"]) >= start
    assert obj["status"]["power"]["targetCapWatts"] == 250
    pods = wait_until(
        "a scheduled pod",
        lambda: [p for p in cluster.get_json("pods", "-n", namespace)["items"] if p["spec"].get("nodeName")],
    )
    assert {p["spec"]["nodeName"] for p in pods} <= set(cluster.nodes["FR"])
    assert pods[0]["spec"]["nodeSelector"] == {"greenjobs.dev/grid-zone": "FR"}

    obj = wait_phase(cluster, namespace, "llm", "Succeeded", timeout=60)
    assert condition(obj, "Complete")["status"] == "True"
    assert obj["status"]["completionTime"]
    reasons = {
        e["reason"]
        for e in cluster.get_json("events", "-n", namespace, "--field-selector", "involvedObject.name=llm")["items"]
        if e["involvedObject"]["kind"] == "GreenTrainingJob"
    }
    assert {"Deferred", "Started", "Completed"} <= reasons


def test_urgent_job_starts_at_once_in_the_cleanest_zone(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Callable[..., OperatorProcess]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    operator_factory(_forecasts(tmp_path / "fc", now, 0, 100))  # FR clean now
    cluster.kubectl("apply", "-f", "-", input=_manifest(namespace, "urgent"))
    obj = wait_phase(cluster, namespace, "urgent", "Running", timeout=30)
    assert obj["status"]["plan"]["zone"] == "FR"
    assert cluster.get_json("job", "urgent", "-n", namespace)["spec"]["suspend"] is False


def test_spec_change_while_deferred_replans_and_deletion_cascades(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Callable[..., OperatorProcess]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    operator_factory(_forecasts(tmp_path / "fc", now, 12, 15))  # FR clean 2 min from now
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=_manifest(namespace, "shift", timing="timing: {estimatedDuration: 20s, maxDelay: 10m}"),
    )
    first = wait_until("a plan", lambda: gtj(cluster, namespace, "shift").get("status", {}).get("plan"))
    assert first["zone"] == "FR"
    uid = cluster.get_json("job", "shift", "-n", namespace)["metadata"]["uid"]

    # Only GB allowed now: re-planned into GB (flat, so at once), and the same Job started (not a copy).
    patch: dict[str, Any] = {"spec": {"placement": {"zones": ["GB"]}}}
    cluster.kubectl("patch", "gtj", "shift", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    wait_until("re-plan into GB", lambda: gtj(cluster, namespace, "shift")["status"]["plan"]["zone"] == "GB")
    wait_phase(cluster, namespace, "shift", "Running", timeout=30)
    jobs = cluster.get_json("jobs", "-n", namespace)["items"]
    assert [j["metadata"]["uid"] for j in jobs] == [uid]
    cluster.kubectl("delete", "gtj", "shift", "-n", namespace, "--timeout=60s")
    wait_until(
        "the Job to be garbage-collected", lambda: not cluster.get_json("jobs", "-n", namespace)["items"], timeout=60
    )
