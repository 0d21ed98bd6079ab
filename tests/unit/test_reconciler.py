"""Reconciler decisions with a bare kopf.Patch: idempotence, adoption after restart, invalid templates,
start at the planned time, completion, accounting and budgets. Kubernetes writes are recorded by a
stand-in for our own `Kube` wrapper; the behaviour against a real API server is in tests/integration."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from kubernetes.client.exceptions import ApiException

from greenjobs.carbon.providers.base import Forecast, ProviderError
from greenjobs.carbon.series import IntensitySeries
from greenjobs.controller.config import OperatorConfig
from greenjobs.controller.planning import Event
from greenjobs.controller.reconciler import JobState, Reconciler
from greenjobs.metrics import OperatorMetrics

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Provider:
    name = "test"

    def __init__(self) -> None:
        self.series = {
            "GB": IntensitySeries.from_points([(T0 + i * H, 300.0) for i in range(8)]),
            "FR": IntensitySeries.from_points([(T0 + i * H, v) for i, v in enumerate([200, 200, 50, 50, 200, 200])]),
        }

    def current(self, zone: str) -> float:
        return 150.0

    def forecast(self, zone: str, start: datetime, end: datetime) -> Forecast:
        if zone not in self.series:
            raise ProviderError(f"unknown zone {zone}")
        return Forecast(zone, self.series[zone], "test", T0)


class RecordingKube:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_create: ApiException | None = None
        self.existing: dict[str, Any] | None = None

    def create_job(self, body: dict[str, Any], *, dry_run: bool = False) -> None:
        self.calls.append(("create", body))
        if self.fail_create is not None:
            raise self.fail_create

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", name))
        return self.existing

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.calls.append(("patch", patch))

    def delete_job(self, namespace: str, name: str) -> None:
        self.calls.append(("delete", name))


def api_error(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps({"message": message})
    return exc


@pytest.fixture
def env() -> tuple[Reconciler, RecordingKube, Clock, list[Event]]:
    clock, kube, events = Clock(), RecordingKube(), []
    config = OperatorConfig(tickSeconds=1, replanInterval="5m", powerInterval="1m")
    rec = Reconciler(config, Provider(), kube, OperatorMetrics(), clock, lambda body, e: events.append(e))  # type: ignore[arg-type]
    return rec, kube, clock, events


def body(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}},
        "timing": {"estimatedDuration": "2h", "maxDelay": "4h"},
        "placement": {"zones": ["GB", "FR"]},
        "power": {"policy": "Static", "capWatts": 250},
    }
    base.update(spec)
    return {
        "apiVersion": "greenjobs.dev/v1alpha1",
        "kind": "GreenTrainingJob",
        "metadata": {
            "name": "llm",
            "namespace": "ml",
            "uid": "u1",
            "generation": 1,
            "creationTimestamp": "2026-11-23T12:00:00Z",
        },
        "spec": base,
    }


def status_of(patch: kopf.Patch) -> dict[str, Any]:
    return dict(patch.get("status") or {})


def test_create_defers_to_the_clean_window_with_a_suspended_job(env: Any) -> None:
    rec, kube, _, events = env
    patch = kopf.Patch()
    rec.ensure(body(), {}, patch, {"GB", "FR"}, None)
    st = status_of(patch)
    assert st["phase"] == "Deferred" and st["jobName"] == "llm"
    assert st["plan"]["zone"] == "FR" and st["plan"]["scheduledStart"] == "2026-11-23T14:00:00Z"
    [(kind, job)] = kube.calls
    assert kind == "create" and job["spec"]["suspend"] is True
    assert [e.reason for e in events] == ["Deferred"]


def test_resume_with_plan_and_job_writes_nothing(env: Any) -> None:
    rec, kube, _, events = env
    status = {"phase": "Deferred", "jobName": "llm", "plan": {"zone": "FR"}}
    patch = kopf.Patch()
    rec.ensure(body(), status, patch, {"GB", "FR"}, JobState("j1", ("u1",), True, None))
    assert not patch and not kube.calls and not events


def test_restart_between_job_create_and_status_adopts_instead_of_duplicating(env: Any) -> None:
    rec, kube, _, _ = env
    kube.fail_create = api_error(409, "already exists")
    kube.existing = {"metadata": {"ownerReferences": [{"uid": "u1"}]}, "spec": {"suspend": True}}
    patch = kopf.Patch()
    rec.ensure(body(), {}, patch, {"GB", "FR"}, None)
    assert [c[0] for c in kube.calls] == ["create", "get"]
    assert status_of(patch)["phase"] == "Deferred"


def test_foreign_job_with_the_same_name_is_reported_not_taken(env: Any) -> None:
    rec, kube, _, events = env
    kube.fail_create = api_error(409, "already exists")
    kube.existing = {"metadata": {"ownerReferences": [{"uid": "someone-else"}]}, "spec": {}}
    patch = kopf.Patch()
    rec.ensure(body(), {}, patch, {"GB", "FR"}, None)
    st = status_of(patch)
    assert st["phase"] == "Pending"
    assert {c["type"]: c["reason"] for c in st["conditions"]}["InvalidTemplate"] == "JobNameTaken"
    assert events[-1].type == "Warning"


def test_invalid_template_becomes_a_condition_and_an_event(env: Any) -> None:
    rec, kube, _, events = env
    kube.fail_create = api_error(
        422, 'Job.batch "llm" is invalid: spec.template.spec.containers[0].image: Required value'
    )
    patch = kopf.Patch()
    rec.ensure(body(), {}, patch, {"GB", "FR"}, None)
    cond = {c["type"]: c for c in status_of(patch)["conditions"]}["InvalidTemplate"]
    assert cond["status"] == "True" and "containers[0].image" in cond["message"]
    assert events[-1].reason == "InvalidJobTemplate"


def test_tick_starts_the_job_at_its_scheduled_start(env: Any) -> None:
    rec, kube, clock, _ = env
    first = kopf.Patch()
    rec.ensure(body(), {}, first, {"GB", "FR"}, None)
    status = status_of(first)
    kube.calls.clear()
    job = JobState("j1", ("u1",), True, None)
    clock.now = T0 + H  # before the start: nothing to do
    idle = kopf.Patch()
    rec.tick(body(), status, idle, {"GB", "FR"}, job)
    assert not kube.calls
    clock.now = T0 + 2 * H
    patch = kopf.Patch()
    rec.tick(body(), status, patch, {"GB", "FR"}, job)
    [(kind, p)] = kube.calls
    assert kind == "patch" and p["spec"]["suspend"] is False
    assert p["spec"]["template"]["spec"]["nodeSelector"] == {"greenjobs.dev/grid-zone": "FR"}
    st = status_of(patch)
    assert st["phase"] == "Running" and st["power"]["targetCapWatts"] == 250


def test_job_completion_and_accounting_of_agent_energy(env: Any) -> None:
    rec, _, clock, _ = env
    clock.now = T0 + 3 * H
    status = {
        "phase": "Running",
        "plan": {"zone": "FR"},
        "energy": {"nodes": {"gpu-fr-0": {"joules": 7.2e6, "gpus": 4, "gpuSeconds": 14400}}},
    }
    patch = kopf.Patch()
    rec.tick(body(), status, patch, {"GB", "FR"}, JobState("j1", ("u1",), False, "Succeeded"))
    st = status_of(patch)
    assert st["phase"] == "Succeeded" and st["completionTime"]
    assert st["energy"]["kWh"] == pytest.approx(2.0) and st["energy"]["gpuHours"] == pytest.approx(4.0)
    assert st["emissions"]["grams"] == pytest.approx(300.0)  # 2 kWh x 150 g/kWh (current intensity)
    # The same input again accounts nothing more: restart-safe, no double counting.
    again = kopf.Patch()
    rec.tick(body(), {**status, **st}, again, {"GB", "FR"}, JobState("j1", ("u1",), False, "Succeeded"))
    assert "emissions" not in (again.get("status") or {})


def test_energy_budget_with_suspend_action_suspends_the_job(env: Any) -> None:
    rec, kube, clock, events = env
    clock.now = T0 + 3 * H
    status = {
        "phase": "Running",
        "plan": {"zone": "FR"},
        "power": {"targetCapWatts": 250, "reason": "Static"},
        "energy": {"nodes": {"gpu-fr-0": {"joules": 7.2e6, "gpus": 4}}},
    }
    patch = kopf.Patch()
    b = body(budget={"maxEnergyKWh": 1.0, "action": "Suspend"})
    rec.tick(b, status, patch, {"GB", "FR"}, JobState("j1", ("u1",), False, None))
    st = status_of(patch)
    assert st["phase"] == "Suspended"
    assert ("patch", {"spec": {"suspend": True}}) in kube.calls
    assert {c["type"]: c["status"] for c in st["conditions"]}["BudgetExceeded"] == "True"
    assert events[-1].reason == "BudgetExceeded"


def test_several_condition_updates_in_one_pass_all_land(env: Any) -> None:
    rec, _, clock, events = env
    clock.now = T0 + 10 * H  # past the plan's deadline
    status = {
        "phase": "Running",
        "plan": {"zone": "FR", "deadline": "2026-11-23T18:00:00Z"},
        "power": {"targetCapWatts": 250, "reason": "Static"},
        "energy": {"nodes": {"gpu-fr-0": {"joules": 7.2e6, "gpus": 4}}},
    }
    patch = kopf.Patch()
    rec.tick(body(budget={"maxEnergyKWh": 1.0}), status, patch, {"GB", "FR"}, JobState("j", ("u1",), False, None))
    conds = {c["type"]: c for c in status_of(patch)["conditions"]}
    assert conds["DeadlineAtRisk"]["reason"] == "RunningPastDeadline"
    assert conds["BudgetExceeded"]["reason"] == "Warn"
    assert [e.reason for e in events] == ["DeadlineAtRisk", "BudgetExceeded"]


def test_resume_while_the_job_index_lags_confirms_the_job_instead_of_replanning(env: Any) -> None:
    rec, kube, _, events = env
    kube.existing = {"metadata": {"uid": "j1", "ownerReferences": [{"uid": "u1"}]}, "spec": {"suspend": True}}
    status = {"phase": "Deferred", "jobName": "llm", "plan": {"zone": "FR", "scheduledStart": "2026-11-23T14:00:00Z"}}
    patch = kopf.Patch()
    rec.ensure(body(), status, patch, {"GB", "FR"}, None)
    assert not patch and not events
    patch = kopf.Patch()
    rec.tick(body(), status, patch, {"GB", "FR"}, None)  # re-plans once after a restart: the same plan
    assert "plan" not in status_of(patch) and not events
    assert [c[0] for c in kube.calls] == ["get", "get"]  # looked, created nothing
