"""A stand-in world for the operator's executor and reconcile loop: a fixed clock, a forecast provider
with a clean FR window, and a recorder of every call the operator makes through its `Kube` wrapper
(the behaviour against a real API server is in tests/integration)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

from greenjobs.carbon.providers.base import Forecast, ProviderError
from greenjobs.carbon.series import IntensitySeries
from greenjobs.config import OperatorConfig
from greenjobs.controller.decide import Action, Pacing, Timers, decide
from greenjobs.controller.executor import Done, Executor
from greenjobs.controller.jobs import template_hash
from greenjobs.controller.observe import JobView, observe
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
        self.fail_patch: ApiException | None = None  # what a patch of the owned Job answers (None: OK)
        # What a GET of the owned Job answers: by default ours, suspended (as the executor left it).
        self.existing: dict[str, Any] | None = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"ownerReferences": [{"uid": "u1"}]},
            "spec": {"suspend": True, "template": {}},
        }

    gtj: dict[str, Any] | None = None  # what a GET of the GreenTrainingJob answers (the API server's copy)

    def get_gtj(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", name))
        return self.gtj

    def create_job(self, body: dict[str, Any], *, kind: Any = None) -> None:
        self.calls.append(("create", body))
        if self.fail_create is not None:
            raise self.fail_create

    def get_job(self, namespace: str, name: str, kind: Any = None) -> dict[str, Any] | None:
        self.calls.append(("get", name))
        return self.existing

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any], kind: Any = None) -> None:
        self.calls.append(("patch", patch))
        if self.fail_patch is not None:
            raise self.fail_patch

    def set_workload_active(self, namespace: str, job_uid: str, active: bool) -> bool:
        self.calls.append(("workload", {"job_uid": job_uid, "active": active}))
        return True

    def delete_job(self, namespace: str, name: str, kind: Any = None) -> None:
        self.calls.append(("delete", name))

    def release_job(self, namespace: str, name: str, finalizers: list[str], kind: Any = None) -> None:
        self.calls.append(("release", finalizers))

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any]:
        self.calls.append(("status", {"status": status, "rv": resource_version}))
        self.status = status
        return {"metadata": {"name": name, "namespace": namespace}, "status": status}

    def settle_gtj(self, namespace: str, name: str, resource_version: str) -> dict[str, Any] | None:
        self.calls.append(("settle", resource_version))
        return {"metadata": {"name": name, "namespace": namespace, "labels": {"greenjobs.dev/settled": "true"}}}

    def unsettle_gtj(self, namespace: str, name: str, resource_version: str) -> None:
        self.calls.append(("unsettle", resource_version))

    def statuses(self) -> list[dict[str, Any]]:
        return [c[1]["status"] for c in self.calls if c[0] == "status"]

    def writes(self) -> list[str]:
        return [c[0] for c in self.calls if c[0] != "get"]


def api_error(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps({"message": message})
    return exc


TIMERS = Timers(
    tick=timedelta(seconds=1), replan=timedelta(minutes=5), power=timedelta(minutes=1), account=timedelta(0)
)
TEMPLATE = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}


class Env:
    def __init__(self) -> None:
        self.clock, self.kube, self.events = Clock(), RecordingKube(), []
        config = OperatorConfig(tickSeconds=1, replanInterval="5m", powerInterval="1m", accountInterval="0s")
        self.ex = Executor(
            config, Provider(), self.kube, OperatorMetrics(), self.clock, lambda ref, e: self.events.append(e)
        )  # type: ignore[arg-type]

    def step(
        self, gtj: dict[str, Any], job: JobView | None = None, pacing: Pacing | None = None
    ) -> tuple[Action, Done]:
        obs = observe(gtj, job)
        decision = decide(obs, self.clock.now, pacing or Pacing(), TIMERS)
        return decision.action, self.ex.execute(obs, decision, pacing or Pacing(), {"GB", "FR"})


def body(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "jobTemplate": TEMPLATE,
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
            "resourceVersion": "42",
            "creationTimestamp": "2026-11-23T12:00:00Z",
        },
        "spec": base,
        "status": {"observedGeneration": 1, **(status or {})},
    }


def view(suspended: bool = True, outcome: str | None = None, **kw: Any) -> JobView:
    return JobView(
        "j1",
        ("u1",),
        suspended,
        outcome,
        finalizers=("greenjobs.dev/outcome",),
        template_hash=template_hash(TEMPLATE),
        **kw,
    )
