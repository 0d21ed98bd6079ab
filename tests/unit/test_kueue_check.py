"""KueueCheck on the operator's runtime: handlers only queue, failures are retried with backoff (kopf
would not retry them), only the Lease holder writes, ResourceFlavors come from the watch's cache."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from greenjobs.config import OperatorConfig
from greenjobs.kueue.controller import BACKOFF, CHECK_NS, KueueCheck
from greenjobs.kueue.decisions import recorded_plan, view
from greenjobs.kueue.names import ANN_HELD, ANN_PLANNED_START, ANN_PLANNED_ZONE
from greenjobs.kueue.quota import plannable_quota, queue_capacity
from greenjobs.planning.decisions import fleet_job
from greenjobs.planning.fleet import FleetJob
from greenjobs.planning.timing import Window
from greenjobs.runtime.workqueue import WorkQueue

NOW = datetime(2026, 3, 5, 12, tzinfo=UTC)


class FakeObjects:
    """CustomObjectsApi's calls the check makes: answers from a script, records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail_with: list[int] = []  # statuses to raise on the next writes, in order
        self.flavors: dict[str, dict[str, Any]] = {}

    def patch_cluster_custom_object_status(self, *args: Any, **_: Any) -> dict[str, Any]:
        self.calls.append(("patch_cluster_status", args))
        if self.fail_with:
            raise ApiException(status=self.fail_with.pop(0), reason="scripted")
        return {}

    def get_cluster_custom_object(self, *args: Any, **_: Any) -> dict[str, Any]:
        self.calls.append(("get_cluster", args))
        return self.flavors[args[-1]]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def check() -> tuple[KueueCheck, FakeObjects, Clock]:
    c = KueueCheck(client.ApiClient(), OperatorConfig(), provider=None, clock=lambda: NOW)  # type: ignore[arg-type]
    objects = FakeObjects()
    c.objects = objects  # type: ignore[assignment]
    clock = Clock()
    c.queue = WorkQueue(clock=clock)
    return c, objects, clock


def _admission_check(name: str = "carbon") -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"controllerName": "greenjobs.dev/carbon"}, "status": {}}


def test_watch_events_only_queue_keys(check: tuple[KueueCheck, FakeObjects, Clock]) -> None:
    c, objects, _ = check
    c.on_admission_check(_admission_check(), deleted=False)
    c.on_workload({"metadata": {"namespace": "ns", "name": "wl", "resourceVersion": "1"}}, deleted=False)
    assert objects.calls == []  # no I/O in a kopf handler: a failure there would be lost
    assert {c.queue.get(timeout=0), c.queue.get(timeout=0)} == {(CHECK_NS, "carbon"), ("ns", "wl")}


def test_a_transient_500_is_retried_with_backoff_until_it_succeeds(
    check: tuple[KueueCheck, FakeObjects, Clock],
) -> None:
    c, objects, clock = check
    objects.fail_with = [500, 500]
    key = (CHECK_NS, "carbon")
    for attempt in range(2):
        c.process(key)
        assert c.failures[key] == attempt + 1
        assert c.queue.get(timeout=0) is None  # not at once: after its backoff
        clock.t += BACKOFF[attempt]
        assert c.queue.get(timeout=0) == key
        c.queue.done(key)
    c.process(key)
    assert key not in c.failures and len(c.queue) == 0
    assert [name for name, _ in objects.calls] == ["patch_cluster_status"] * 3


def test_a_conflict_is_looked_at_again_soon_without_counting_as_a_failure(
    check: tuple[KueueCheck, FakeObjects, Clock],
) -> None:
    c, objects, clock = check
    objects.fail_with = [409]
    c.process((CHECK_NS, "carbon"))
    assert (CHECK_NS, "carbon") not in c.failures
    clock.t += 0.5
    assert c.queue.get(timeout=0) == (CHECK_NS, "carbon")


def test_only_the_lease_holder_writes(check: tuple[KueueCheck, FakeObjects, Clock]) -> None:
    c, objects, clock = check
    c.may_write = lambda: False
    c.process((CHECK_NS, "carbon"))
    assert objects.calls == []  # fenced before the write
    clock.t += 1.0
    assert c.queue.get(timeout=0) == (CHECK_NS, "carbon")  # whoever leads then does it


def test_resource_flavors_come_from_the_watch_cache(check: tuple[KueueCheck, FakeObjects, Clock]) -> None:
    c, objects, _ = check
    c.on_resource_flavor({"metadata": {"name": "gb"}, "spec": {"nodeLabels": {"zone": "GB"}}}, deleted=False)
    objects.flavors["fr"] = {"spec": {"nodeLabels": {"zone": "FR"}}}
    for _ in range(3):
        assert c._flavor_labels({"gb", "fr"}) == {"gb": {"zone": "GB"}, "fr": {"zone": "FR"}}
    # One GET for the flavor the watch had not delivered yet, none for the cached one, none after.
    assert [args[-1] for name, args in objects.calls if name == "get_cluster"] == ["fr"]
    c.on_resource_flavor({"metadata": {"name": "gb"}}, deleted=True)
    assert "gb" not in c.flavors


# ---------------------------------------------------------------- the queue as the joint plan sees it

H20 = timedelta(seconds=20)


def _wl(name: str, *, active: bool = True, reserved_at: str | None = None, check: str | None = None,
        finished: bool = False, annotations: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    conditions = []
    if reserved_at:
        conditions.append({"type": "QuotaReserved", "status": "True", "lastTransitionTime": reserved_at})
    if finished:
        conditions.append({"type": "Finished", "status": "True"})
    status: dict[str, Any] = {
        "conditions": conditions,
        "admission": {
            "clusterQueue": "cq",
            "podSetAssignments": [{"name": "main", "flavors": {"nvidia.com/gpu": "gb"}}],
        },
    }
    if check:
        status["admissionChecks"] = [{"name": "carbon", "state": check}]
    meta = {"namespace": "ns", "name": name, "resourceVersion": "1", "annotations": annotations or {}}
    return {"metadata": meta, "spec": {"active": active}, "status": status}


def _job(name: str) -> FleetJob:
    window = Window(H20, NOW + timedelta(minutes=2), NOW + timedelta(minutes=2) + H20, True)
    return fleet_job(f"ns/{name}", 8, window, ["GB"], NOW, NOW)


def test_the_joint_plan_counts_started_workloads_until_their_end_and_plans_the_ones_kueue_holds_quota_for(
    check: tuple[KueueCheck, FakeObjects, Clock],
) -> None:
    c, _, _ = check
    bodies = {
        "me": _wl("me", reserved_at="2026-03-05T11:59:59Z", check="Pending"),
        # Kueue reserves quota BEFORE it asks the checks: that quota is still the plan's to place.
        "waiting": _wl("waiting", reserved_at="2026-03-05T11:59:58Z", check="Pending"),
        "running": _wl("running", reserved_at="2026-03-05T11:59:50Z", check="Ready"),
        "released": _wl("released", check="Ready"),  # answered Ready, Kueue admits it next
        "given": _wl("given", check="Pending"),  # a plan gave it a start a moment ago
        "done": _wl("done", reserved_at="2026-03-05T11:50:00Z", check="Ready", finished=True),
    }
    for name, body in bodies.items():
        c.workloads[("ns", name)] = body
        c.held[("ns", name)] = ("cq", _job(name))
    c.claims[("ns", "given")] = NOW
    waiting, started, pending = c._queue_state(("ns", "me"), "cq", {"gb": "GB"}, NOW)
    assert [j.id for j in waiting] == ["ns/waiting"]
    assert sorted(started) == sorted(
        [("GB", 8, NOW - timedelta(seconds=10) + H20), ("GB", 8, NOW + H20), ("GB", 8, NOW + H20)]
    )
    assert pending == {"GB": 16}  # "me" and "waiting"
    # Each started one gives its GPUs back at its end (one grid step on at the earliest).
    cap = queue_capacity({"GB": 0}, started, NOW, timedelta(seconds=10))
    assert cap.free_at("GB", NOW + timedelta(seconds=10)) == 8 and cap.free_at("GB", NOW + H20) == 24


def test_a_held_workload_a_newer_plan_starts_earlier_is_planned_again_at_once(
    check: tuple[KueueCheck, FakeObjects, Clock],
) -> None:
    c, _, _ = check
    later = {ANN_PLANNED_START: "2026-03-05T12:05:00Z", ANN_PLANNED_ZONE: "GB", ANN_HELD: "2026-03-05T12:05:00Z"}
    c.workloads[("ns", "held")] = _wl("held", active=False, annotations=later)
    c.workloads[("ns", "me")] = _wl("me", active=False, annotations=later)
    # Only the assignments' starts matter here.
    plan = SimpleNamespace(assignments={"ns/held": SimpleNamespace(start=NOW), "ns/me": SimpleNamespace(start=NOW)})
    c._wake_moved_earlier(plan, NOW, skip=("ns", "me"))  # type: ignore[arg-type]
    assert c.replan_now == {("ns", "held")}  # not the one being planned: its own answer follows
    assert c.queue.get(timeout=0) == ("ns", "held")
    at_start = recorded_plan(view(c.workloads[("ns", "held")]))
    assert at_start is not None and c._replan_due(("ns", "held"), view(c.workloads[("ns", "held")]), at_start)
    assert c.replan_now == set()


def test_workloads_answered_ready_hold_their_quota_even_where_the_queues_status_lags() -> None:
    # 16 GPUs of quota; two 8-GPU Workloads just answered Ready, but the ClusterQueue's status does not
    # show their reservations yet (free 16): nothing is free for a third until one of them ends.
    started = [("GB", 8, NOW + H20), ("GB", 8, NOW + H20)]
    assert plannable_quota({"GB": 16}, {}, {"GB": 16}, started) == {"GB": 0}
    # Status caught up: the same answer.
    assert plannable_quota({"GB": 0}, {}, {"GB": 16}, started) == {"GB": 0}
    # One started, one waiting on the check with quota reserved for it: that quota is the plan's.
    assert plannable_quota({"GB": 0}, {"GB": 8}, {"GB": 16}, started[:1]) == {"GB": 8}


def test_the_check_plans_with_the_operators_fleet_settings() -> None:
    """The same `fleet:` config as the operator's: here a start latency, which every held Workload's
    joint-plan job carries (it holds its quota that much longer, starts that much earlier)."""
    config = OperatorConfig(fleet={"startLatency": "7s", "zoneGapPercent": 0})
    c = KueueCheck(client.ApiClient(), config, provider=None, clock=lambda: NOW)  # type: ignore[arg-type]
    assert c.fleet_settings.start_latency == timedelta(seconds=7)
    assert c.fleet_settings.zone_gap_percent == 0
    with pytest.raises(ValueError, match="startLatency"):
        KueueCheck(client.ApiClient(), OperatorConfig(fleet={"startLatency": "-1s"}), None, lambda: NOW)  # type: ignore[arg-type]


def test_zones_with_nodes_come_from_the_node_watch(check: tuple[KueueCheck, FakeObjects, Clock]) -> None:
    c, objects, _ = check
    c.config = OperatorConfig(zoneMap={"eu-west-2": "GB"})
    label = c.config.zone_label

    def node(name: str, zone: str | None) -> dict[str, Any]:
        return {"metadata": {"name": name, "labels": {label: zone} if zone else {}}}

    c.on_node(node("a", "eu-west-2"), deleted=False)
    c.on_node(node("b", "FR"), deleted=False)
    c.on_node(node("c", None), deleted=False)  # no zone label: no zone
    assert c._zones_with_nodes() == {"GB", "FR"}
    c.on_node(node("b", None), deleted=False)  # label removed
    c.on_node(node("a", "eu-west-2"), deleted=True)
    assert c._zones_with_nodes() == set()
    assert objects.calls == []  # no LIST of the nodes per plan
