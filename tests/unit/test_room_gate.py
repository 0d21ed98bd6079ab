"""The fleet coordinator's room gate and invalidation (controller/fleet.py) under concurrency, on the
shared test world: many workers asking at once, an invalidation while a plan is being computed, the
plan's order, resumes, pods that must fit on one node, claims of failed starts, debounced churn."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from greenjobs.carbon.providers.base import Forecast
from greenjobs.controller.fleet import FleetCoordinator
from greenjobs.controller.loop import Controller
from greenjobs.planning.settings import FleetSettings
from tests.fakes.operator_world import T0, Env, H, Provider, body

READY = [{"type": "Ready", "status": "True"}]


def template(gpus: int, parallelism: int = 1) -> dict[str, Any]:
    limits = {"nvidia.com/gpu": gpus}
    pod = {"containers": [{"name": "c", "image": "x", "resources": {"limits": limits}}]}
    return {"spec": {"parallelism": parallelism, "template": {"spec": pod}}}


def world(nodes: dict[str, int], provider: Any = None) -> tuple[Env, Controller, FleetCoordinator]:
    env = Env()
    env.clock.now = T0 + 2 * H
    ctl = Controller(env.ex, env.clock, "greenjobs.dev/grid-zone", {})
    fleet = FleetCoordinator(
        FleetSettings(), provider or Provider(), env.clock, timedelta(minutes=5), ctl.fleet_snapshot
    )
    ctl.fleet = env.ex.fleet = fleet
    for name, gpus in nodes.items():
        meta = {"name": name, "labels": {"greenjobs.dev/grid-zone": "FR"}}
        status = {"allocatable": {"nvidia.com/gpu": str(gpus)}, "conditions": READY}
        ctl.on_node("ADDED", {"metadata": meta, "spec": {}, "status": status})
    return env, ctl, fleet


def pending(ctl: Controller, uid: str, *, start: str = "2026-11-23T14:00:00Z", gpus: int = 1) -> None:
    status = {"phase": "Deferred", "plan": {"zone": "FR", "scheduledStart": start}}
    b = body(status, jobTemplate=template(gpus), placement={"zones": ["FR"]})
    b["metadata"].update(uid=uid, name=uid)
    ctl.on_gtj("ADDED", b)


def test_many_workers_asking_at_once_are_given_exactly_the_free_gpus() -> None:
    _, ctl, fleet = world({"fr-0": 1, "fr-1": 1, "fr-2": 1})
    uids = [f"u{i}" for i in range(8)]
    for uid in uids:
        pending(ctl, uid)
    granted: list[str] = []
    barrier = threading.Barrier(16)

    def ask(uid: str) -> None:
        barrier.wait()
        if fleet.room_now(uid, "FR"):
            granted.append(uid)

    threads = [threading.Thread(target=ask, args=(uids[i % 8],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(set(granted)) == 3  # three GPUs, three starts, whoever asked twice


class BlockingProvider(Provider):
    """A forecast that hangs until released: a slow provider in the middle of a plan."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.go = threading.Event(), threading.Event()
        self.calls = 0

    def forecast(self, zone: str, start: Any, end: Any) -> Forecast:
        self.calls += 1
        self.entered.set()
        self.go.wait(timeout=10)
        return super().forecast(zone, start, end)


def test_an_invalidation_during_a_plan_is_not_erased_and_no_forecast_is_fetched_under_the_lock() -> None:
    provider = BlockingProvider()
    _, ctl, fleet = world({"fr-0": 2}, provider)
    pending(ctl, "u1")
    pending(ctl, "u2", start="2026-11-23T15:00:00Z")
    planner = threading.Thread(target=fleet.assignment, args=("u1",))
    planner.start()
    assert provider.entered.wait(timeout=5)
    # While the forecast hangs, a due start is answered at once (no I/O under the state lock)...
    answered: list[bool] = []
    asker = threading.Thread(target=lambda: answered.append(fleet.room_now("u1", "FR")))
    asker.start()
    asker.join(timeout=2)
    assert answered == [True]
    # ...and a node goes away: the plan being computed no longer holds.
    fleet.invalidate()
    provider.go.set()
    planner.join(timeout=10)
    first = provider.calls
    fleet.assignment("u2")
    assert provider.calls > first  # the invalidation survived the plan that was in flight: re-planned


def test_room_goes_in_the_plans_order_not_to_the_first_worker_to_ask() -> None:
    _, ctl, fleet = world({"fr-0": 1})
    pending(ctl, "early", start="2026-11-23T13:50:00Z")
    pending(ctl, "late", start="2026-11-23T14:00:00Z")
    assert not fleet.room_now("late", "FR")  # asked first, but "early" is due before it
    assert fleet.room_now("early", "FR")
    assert not fleet.room_now("late", "FR")  # and now the GPU is early's


def test_a_failed_start_gives_its_gpus_back_at_once() -> None:
    _, ctl, fleet = world({"fr-0": 1})
    pending(ctl, "early", start="2026-11-23T13:50:00Z")
    pending(ctl, "late", start="2026-11-23T14:00:00Z")
    assert fleet.room_now("early", "FR")
    fleet.release("early")  # its start was refused (RBAC, quota, an admission policy)
    assert fleet.room_now("late", "FR")  # no 30 s wait, and early is not ahead of it meanwhile


def test_a_resume_asks_for_room_too() -> None:
    _, ctl, fleet = world({"fr-0": 1})
    running = {"phase": "Running", "startTime": "2026-11-23T13:30:00Z", "plan": {"zone": "FR"}}
    holder = body(running, jobTemplate=template(1), placement={"zones": ["FR"]})
    holder["metadata"].update(uid="holder", name="holder")
    ctl.on_gtj("ADDED", holder)
    suspended = {"phase": "Suspended", "startTime": "2026-11-23T13:00:00Z", "plan": {"zone": "FR"}}
    s = body(suspended, jobTemplate=template(1), placement={"zones": ["FR"]})
    ctl.on_gtj("ADDED", s)
    assert not fleet.room_now("u1", "FR")  # its GPU went to another job while it was suspended


def test_a_pod_must_fit_on_one_node_not_on_the_zones_sum() -> None:
    _, ctl, fleet = world({"fr-0": 4, "fr-1": 4})
    pending(ctl, "big", gpus=8)
    assert not fleet.room_now("big", "FR")  # 8 free in FR, but no node has 8
    _, ctl, fleet = world({"fr-0": 8})
    pending(ctl, "big", gpus=8)
    assert fleet.room_now("big", "FR")


def test_foreign_pod_churn_replans_at_most_once_per_debounce_interval() -> None:
    env, ctl, fleet = world({"fr-0": 4})
    pending(ctl, "u1")
    fleet.assignment("u1")
    generation = fleet.generation
    for i in range(50):
        pod = {
            "metadata": {"uid": f"p{i}", "labels": {}},
            "spec": {"nodeName": "fr-0", "containers": [{"resources": {"limits": {"nvidia.com/gpu": 1}}}]},
            "status": {"phase": "Running"},
        }
        ctl.on_pod("ADDED", pod)
        ctl.on_pod("DELETED", pod)
    assert fleet.generation == generation  # churn is not a full invalidation
    assert not fleet._needs_plan(env.clock.now)
    env.clock.now += fleet.debounce
    assert fleet._needs_plan(env.clock.now)  # once the burst had time to settle
