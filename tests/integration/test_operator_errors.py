"""What only the operator can detect becomes a condition with a reason AND an Event, never a crash
or a silent stall: an invalid pod template, zones without nodes, a deadline already impossible, a zone
the forecast provider does not know. Each case also shows the way out (fix the spec, a node appears,
the forecast file appears) and that the operator process never logs a traceback."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube import Cluster, wait_until
from tests.operator_proc import OperatorProcess, clean_between, condition, file_forecasts, gtj

pytestmark = pytest.mark.cluster

STEPS = range(-6, 400)  # forecasts of 10 s steps over an hour
CONTAINER = {"name": "train", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": 1}}}


def _manifest(
    namespace: str,
    name: str,
    *,
    zones: list[str],
    timing: dict[str, Any] | None = None,
    pod_spec: dict[str, Any] | None = None,
) -> str:
    spec: dict[str, Any] = {
        "jobTemplate": {
            "spec": {
                "template": {
                    "metadata": {"annotations": {"kwok.greenjobs.dev/run-for": "60s"}},
                    "spec": pod_spec or {"restartPolicy": "Never", "containers": [CONTAINER]},
                }
            }
        },
        "placement": {"zones": zones},
    }
    if timing:
        spec["timing"] = timing
    return json.dumps(
        {
            "apiVersion": "greenjobs.dev/v1alpha1",
            "kind": "GreenTrainingJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def _flat(directory: Path, now: datetime, zones: dict[str, float]) -> dict[str, Any]:
    return file_forecasts(directory, now, zones, steps=STEPS)


def _events(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items = cluster.get_json("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
    return [e for e in items if e["involvedObject"]["kind"] == "GreenTrainingJob"]


def _event(cluster: Cluster, namespace: str, name: str, reason: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        return next((e for e in _events(cluster, namespace, name) if e["reason"] == reason), None)

    return wait_until(f"a {reason} event", probe, timeout=20)


def _cond(cluster: Cluster, namespace: str, name: str, type_: str, status: str) -> dict[str, Any]:
    def probe() -> tuple[dict[str, Any], dict[str, Any]] | None:
        obj = gtj(cluster, namespace, name)
        c = condition(obj, type_)
        return (obj, c) if c and c["status"] == status else None

    _, cond = wait_until(f"{type_}={status}", probe, timeout=30)
    return cond


def _no_traceback(op: OperatorProcess) -> None:
    assert op.alive()
    assert "Traceback" not in op.logs(), op.logs()[-4000:]


@pytest.fixture
def operator(
    tmp_path: Path, operator_factory: Callable[..., OperatorProcess]
) -> Iterator[tuple[OperatorProcess, datetime]]:
    """An operator with flat forecasts: GB 300, FR 250 (so GB-only jobs start at once)."""
    now = datetime.now(UTC).replace(microsecond=0)
    yield operator_factory(_flat(tmp_path / "fc", now, {"GB": 300.0, "FR": 250.0})), now


INVALID_POD_SPECS = {
    "container-without-image": (
        {"restartPolicy": "Never", "containers": [{"name": "train"}]},
        "spec.template.spec.containers[0].image",
    ),
    "restartPolicy-Always": (
        {"restartPolicy": "Always", "containers": [CONTAINER]},
        "spec.template.spec.restartPolicy",
    ),
    # A typo is refused by strict field validation, not silently dropped.
    "typo-in-a-field-name": (
        {"restartPolicy": "Never", "containers": [{**CONTAINER, "imagePullPolcy": "Always"}]},
        'unknown field "spec.template.spec.containers[0].imagePullPolcy"',
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID_POD_SPECS))
def test_invalid_pod_template_is_a_condition_and_event_and_fixing_it_recovers(
    cluster: Cluster, namespace: str, operator: tuple[OperatorProcess, datetime], case: str
) -> None:
    op, _ = operator
    pod_spec, field = INVALID_POD_SPECS[case]
    # The CRD keeps jobTemplate open (it is a whole JobSpec), so the API server accepts the GTJ...
    cluster.kubectl("apply", "-f", "-", input=_manifest(namespace, "bad", zones=["GB"], pod_spec=pod_spec))
    # ...and the operator learns from the Job creation that the template is invalid.
    cond = _cond(cluster, namespace, "bad", "InvalidTemplate", "True")
    assert cond["reason"] == "InvalidJobTemplate"
    assert field in cond["message"]
    obj = gtj(cluster, namespace, "bad")
    assert obj["status"]["phase"] == "Pending"
    assert condition(obj, "Planned")["status"] == "False"  # type: ignore[index]
    event = _event(cluster, namespace, "bad", "InvalidJobTemplate")
    assert event["type"] == "Warning"
    assert field in event["message"]
    assert not cluster.get_json("jobs", "-n", namespace)["items"]

    # It stays put (no retry loop of failing creates, no flood of events) until the spec changes.
    events_before = len(_events(cluster, namespace, "bad"))
    time.sleep(4)  # four ticks at tickSeconds=1
    assert gtj(cluster, namespace, "bad")["status"]["phase"] == "Pending"
    assert len(_events(cluster, namespace, "bad")) == events_before

    # Fixing the template recovers: planned, Job created and started, InvalidTemplate False.
    fixed = _manifest(namespace, "bad", zones=["GB"])
    cluster.kubectl("apply", "-f", "-", input=fixed)
    wait_until("Running", lambda: gtj(cluster, namespace, "bad").get("status", {}).get("phase") == "Running")
    obj = gtj(cluster, namespace, "bad")
    assert condition(obj, "InvalidTemplate")["status"] == "False"  # type: ignore[index]
    assert obj["status"]["plan"]["zone"] == "GB"
    job = cluster.get_json("job", "bad", "-n", namespace)
    assert job["spec"]["suspend"] is False
    _no_traceback(op)


def test_zone_without_nodes_is_reported_not_silently_pending(
    cluster: Cluster, namespace: str, operator: tuple[OperatorProcess, datetime]
) -> None:
    op, _ = operator
    cluster.kubectl("apply", "-f", "-", input=_manifest(namespace, "nowhere", zones=["XX"]))
    cond = _cond(cluster, namespace, "nowhere", "ZoneUnavailable", "True")
    assert cond["reason"] == "NoNodesInZone"
    assert "XX" in cond["message"]
    obj = gtj(cluster, namespace, "nowhere")
    assert obj["status"]["phase"] == "Pending"
    planned = condition(obj, "Planned")
    assert planned is not None and planned["status"] == "False" and planned["reason"] == "NoNodesInZone"
    event = _event(cluster, namespace, "nowhere", "ZoneUnavailable")
    assert event["type"] == "Warning" and "XX" in event["message"]
    assert not cluster.get_json("jobs", "-n", namespace)["items"]
    # Said once, not once per tick (tickSeconds=1): no flood of Events or status writes.
    rv = obj["metadata"]["resourceVersion"]
    time.sleep(5)  # five ticks: a negative check (a write or Event per tick would show), so a sleep
    zone_events = [e for e in _events(cluster, namespace, "nowhere") if e["reason"] == "ZoneUnavailable"]
    assert sum(e.get("count", 1) for e in zone_events) == 1
    assert gtj(cluster, namespace, "nowhere")["metadata"]["resourceVersion"] == rv
    _no_traceback(op)


def test_some_zones_without_nodes_plans_in_the_others(
    cluster: Cluster, namespace: str, operator: tuple[OperatorProcess, datetime]
) -> None:
    op, _ = operator
    cluster.kubectl("apply", "-f", "-", input=_manifest(namespace, "half", zones=["GB", "XX"]))
    wait_until("a plan", lambda: gtj(cluster, namespace, "half").get("status", {}).get("plan"))
    obj = gtj(cluster, namespace, "half")
    assert obj["status"]["plan"]["zone"] == "GB"
    cond = condition(obj, "ZoneUnavailable")
    assert cond is not None and cond["status"] == "True"
    assert "XX" in cond["message"] and "GB" not in cond["message"]
    wait_until("Running", lambda: gtj(cluster, namespace, "half")["status"]["phase"] == "Running")
    pods = wait_until("a pod", lambda: cluster.get_json("pods", "-n", namespace)["items"])
    assert pods[0]["spec"]["nodeSelector"] == {"greenjobs.dev/grid-zone": "GB"}
    assert _event(cluster, namespace, "half", "ZoneUnavailable")["type"] == "Warning"
    _no_traceback(op)


def _zone_node(cluster: Cluster, name: str, zone: str) -> None:
    """A kwok node in `zone` (no GPU-present label, so no DaemonSet lands on it)."""
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": name, "type": "kwok", "greenjobs.dev/grid-zone": zone},
        },
        "status": {
            "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "8"},
            "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "8"},
        },
    }
    cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(node))


def test_zone_gets_planned_once_a_node_appears(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Callable[..., OperatorProcess]
) -> None:
    zone = "Z" + namespace.removeprefix("t-").upper()  # unique: no other test's node carries it
    now = datetime.now(UTC).replace(microsecond=0)
    op = operator_factory(_flat(tmp_path / "fc", now, {zone: 100.0}))
    cluster.kubectl("apply", "-f", "-", input=_manifest(namespace, "later", zones=[zone]))
    _cond(cluster, namespace, "later", "ZoneUnavailable", "True")
    node = f"zone-{namespace}"
    _zone_node(cluster, node, zone)
    try:
        wait_until("Running", lambda: gtj(cluster, namespace, "later")["status"].get("phase") == "Running")
        obj = gtj(cluster, namespace, "later")
        assert obj["status"]["plan"]["zone"] == zone
        assert condition(obj, "ZoneUnavailable")["status"] == "False"  # type: ignore[index]
        assert condition(obj, "Planned")["status"] == "True"  # type: ignore[index]
        pods = wait_until(
            "a pod bound",
            lambda: [p for p in cluster.get_json("pods", "-n", namespace)["items"] if p["spec"].get("nodeName")],
        )
        assert pods[0]["spec"]["nodeName"] == node
        # While it waited, the operator said so once, not once per tick.
        zone_events = [e for e in _events(cluster, namespace, "later") if e["reason"] == "ZoneUnavailable"]
        assert sum(e.get("count", 1) for e in zone_events) <= 2
    finally:
        cluster.kubectl("delete", "node", node, "--wait=false", check=False)
    _no_traceback(op)


def test_deadline_already_impossible_starts_at_once_with_deadline_at_risk(
    cluster: Cluster, namespace: str, operator: tuple[OperatorProcess, datetime]
) -> None:
    op, _ = operator
    deadline = (datetime.now(UTC) + timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    timing = {"estimatedDuration": "1h", "deadline": deadline}
    cluster.kubectl("apply", "-f", "-", input=_manifest(namespace, "late", zones=["GB", "FR"], timing=timing))
    wait_until("Running", lambda: gtj(cluster, namespace, "late").get("status", {}).get("phase") == "Running")
    obj = gtj(cluster, namespace, "late")
    cond = condition(obj, "DeadlineAtRisk")
    assert cond is not None and cond["status"] == "True"
    assert cond["reason"] == "LatestStartPassed"
    assert deadline in cond["message"]
    assert obj["status"]["plan"]["zone"] == "FR"  # still the cleaner zone, just no waiting
    assert cluster.get_json("job", "late", "-n", namespace)["spec"]["suspend"] is False
    event = _event(cluster, namespace, "late", "DeadlineAtRisk")
    assert event["type"] == "Warning"
    _no_traceback(op)


def test_zone_unknown_to_the_forecast_provider(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Callable[..., OperatorProcess]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    fc = tmp_path / "fc"
    # GB only (no FR file): GB is cleaner from +60 s, so the job waits in GB.
    op = operator_factory(file_forecasts(fc, now, {"GB": clean_between(6, 30, 100.0, 300.0)}, steps=STEPS))
    timing = {"estimatedDuration": "30s", "maxDelay": "10m"}
    cluster.kubectl("apply", "-f", "-", input=_manifest(namespace, "nofc", zones=["GB", "FR"], timing=timing))
    cond = _cond(cluster, namespace, "nofc", "ForecastUnavailable", "True")
    assert cond["reason"] == "ProvidersFailed"
    assert "FR" in cond["message"] and "no FR.csv or FR.json" in cond["message"]
    obj = gtj(cluster, namespace, "nofc")
    assert obj["status"]["phase"] == "Deferred"
    assert obj["status"]["plan"]["zone"] == "GB"
    assert obj["status"]["plan"]["forecastSource"] == "file"
    event = _event(cluster, namespace, "nofc", "ForecastUnavailable")
    assert event["type"] == "Warning" and "FR" in event["message"]

    # The FR forecast appears (a ConfigMap update): at the next re-plan FR, clean now, wins.
    file_forecasts(fc, now, {"FR": 40.0}, steps=STEPS)
    wait_until("re-plan into FR", lambda: gtj(cluster, namespace, "nofc")["status"]["plan"]["zone"] == "FR", timeout=30)
    obj = wait_until(
        "Running", lambda: (o := gtj(cluster, namespace, "nofc"))["status"]["phase"] == "Running" and o, timeout=30
    )
    assert condition(obj, "ForecastUnavailable")["status"] == "False"  # type: ignore[index]
    _no_traceback(op)


def test_job_refused_by_a_quota_is_a_condition_and_planned_once_the_quota_allows(
    cluster: Cluster, namespace: str, operator: tuple[OperatorProcess, datetime]
) -> None:
    op, _ = operator
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-jobs", "namespace": namespace},
        "spec": {"hard": {"count/jobs.batch": "0"}},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(quota))
    wait_until(
        "the quota to be counted",
        lambda: cluster.get_json("resourcequota", "no-jobs", "-n", namespace).get("status", {}).get("hard"),
    )
    cluster.kubectl("apply", "-f", "-", input=_manifest(namespace, "quota", zones=["GB"]))
    cond = _cond(cluster, namespace, "quota", "Planned", "False")
    assert cond["reason"] == "QuotaExceeded" and "exceeded quota" in cond["message"]
    assert gtj(cluster, namespace, "quota")["status"]["phase"] == "Pending"
    assert _event(cluster, namespace, "quota", "QuotaExceeded")["type"] == "Warning"
    cluster.kubectl("delete", "resourcequota", "no-jobs", "-n", namespace)
    wait_until(
        "Running once the quota allows",
        lambda: gtj(cluster, namespace, "quota")["status"].get("phase") == "Running",
        timeout=90,
    )
    _no_traceback(op)


def test_a_large_spec_is_planned_like_any_other(
    cluster: Cluster, namespace: str, operator: tuple[OperatorProcess, datetime]
) -> None:
    """kopf used to copy the whole spec into an annotation (256 KiB limit for all of them)."""
    op, _ = operator
    env = [{"name": f"HYPERPARAM_{i:05d}", "value": "x" * 200} for i in range(1500)]  # ~330 KB of spec
    pod_spec = {"restartPolicy": "Never", "containers": [{**CONTAINER, "env": env}]}
    body = _manifest(namespace, "large", zones=["GB"], pod_spec=pod_spec)
    assert len(body) > 300_000
    cluster.kubectl("create", "-f", "-", input=body)
    wait_until("Running", lambda: gtj(cluster, namespace, "large").get("status", {}).get("phase") == "Running")
    assert [e["reason"] for e in _events(cluster, namespace, "large")] == ["Started"]
    _no_traceback(op)
