"""Leader election (runtime/leader.py) with client-go's semantics, on a stand-in Lease API that
keeps one Lease and answers 409 to a stale resourceVersion, as the API server does. Time is two
injected clocks: the wall clock written into the Lease, and the local monotonic one expiry is
measured on."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from greenjobs.controller.kube import Kube, NotLeader
from greenjobs.controller.loop import Controller
from greenjobs.metrics import OperatorMetrics
from greenjobs.runtime.leader import LeaderElector
from tests.fakes.operator_world import T0, Clock, Env, body


class Leases:
    def __init__(self) -> None:
        self.lease: Any = None
        self.rv = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ApiException(status=503, reason="unavailable")

    def read(self, namespace: str, name: str) -> Any:
        self._check()
        if self.lease is None:
            raise ApiException(status=404, reason="NotFound")
        return self.lease

    def _store(self, body: dict[str, Any]) -> Any:
        self.rv += 1
        spec = body["spec"]
        self.lease = SimpleNamespace(
            metadata=SimpleNamespace(resource_version=str(self.rv)),
            spec=SimpleNamespace(
                holder_identity=spec.get("holderIdentity"),
                lease_duration_seconds=spec.get("leaseDurationSeconds"),
                acquire_time=spec.get("acquireTime"),
                renew_time=spec.get("renewTime"),
                lease_transitions=spec.get("leaseTransitions"),
            ),
        )
        return self.lease

    def create(self, namespace: str, body: dict[str, Any]) -> Any:
        self._check()
        if self.lease is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(body)

    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> Any:
        self._check()
        if body["metadata"]["resourceVersion"] != self.lease.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        return self._store(body)


class Mono:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def elector(leases: Leases, mono: Mono, who: str, changes: list[bool] | None = None) -> LeaderElector:
    return LeaderElector(
        None,
        "ns",
        "lease",
        who,
        timedelta(seconds=15),
        Clock(),
        (changes if changes is not None else []).append,
        renew_deadline=timedelta(seconds=10),
        retry_period=timedelta(seconds=2),
        monotonic=mono,
        leases=leases,
    )


def test_a_standby_judges_expiry_on_its_own_clock_not_the_holders_renew_time() -> None:
    """The holder's clock is an hour behind: its renewTime looks long expired. client-go's rule: a
    record is expired only once it has not CHANGED for leaseDuration as this replica watched it."""
    leases, mono = Leases(), Mono()
    leases._store(
        {
            "spec": {
                "holderIdentity": "a",
                "leaseDurationSeconds": 15,
                "acquireTime": "2026-11-23T11:00:00.000000Z",
                "renewTime": "2026-11-23T11:00:00.000000Z",  # T0 - 1 h on the standby's wall clock
                "leaseTransitions": 0,
            }
        }
    )
    b = elector(leases, mono, "b")
    assert not b.step()  # first sight of this record: its age starts now, here
    mono.t += 14
    assert not b.step()
    mono.t += 2  # unchanged for 16 s as b watched it: expired
    assert b.step() and leases.lease.spec.holder_identity == "b"
    assert leases.lease.spec.lease_transitions == 1


def test_a_holder_that_keeps_renewing_is_never_taken_over() -> None:
    leases, mono = Leases(), Mono()
    a, b = elector(leases, mono, "a"), elector(leases, mono, "b")
    assert a.step()
    for _ in range(20):
        mono.t += 2
        assert a.step() and not b.step()
    assert leases.lease.spec.holder_identity == "a"


def test_the_leader_steps_down_when_renewing_failed_for_the_renew_deadline() -> None:
    leases, mono, changes = Leases(), Mono(), list[bool]()
    a = elector(leases, mono, "a", changes)
    assert a.step() and a.leading and changes == [True]
    leases.down = True  # the API server is unreachable from here
    mono.t += 8
    assert a.step() and a.leading  # within renewDeadline (10 s): still leading
    mono.t += 2.5
    # Writes are fenced the moment the deadline passes, before the elector's next try.
    assert not a.leading
    assert not a.step() and changes == [True, False]
    # A standby may take over only after leaseDuration (15 s) > renewDeadline: never two leaders.
    leases.down = False
    b = elector(leases, mono, "b")
    assert not b.step()
    mono.t += 15.5
    assert b.step()


def test_a_clean_stop_gives_the_lease_up_at_once() -> None:
    leases, mono = Leases(), Mono()
    a, b = elector(leases, mono, "a"), elector(leases, mono, "b")
    assert a.step()
    a.stop()
    assert not a.leading
    assert b.step()  # holder cleared: no wait


def test_renew_deadline_must_be_below_the_lease_duration() -> None:
    with pytest.raises(ValueError, match="renewDeadline"):
        LeaderElector(
            None, "ns", "l", "a", timedelta(seconds=10), Clock(), print,
            renew_deadline=timedelta(seconds=10), leases=Leases(),
        )  # fmt: skip


def test_every_write_is_fenced_by_leadership() -> None:
    from kubernetes import client

    kube = Kube(client.ApiClient(), OperatorMetrics(), may_write=lambda: False)
    with pytest.raises(NotLeader):
        kube.patch_status("ml", "llm", {"phase": "Running"})
    with pytest.raises(NotLeader):
        kube.patch_job("ml", "llm", {"spec": {"suspend": False}})
    with pytest.raises(NotLeader):
        kube.create_job({"metadata": {"namespace": "ml", "name": "llm"}})
    assert T0  # the shared clock's epoch, unused here


def test_work_in_flight_when_the_lease_is_lost_stops_at_its_next_write() -> None:
    env = Env()
    ctl = Controller(env.ex, env.clock, "greenjobs.dev/grid-zone", {})
    node = {"metadata": {"name": "fr-0", "labels": {"greenjobs.dev/grid-zone": "FR"}}, "spec": {}, "status": {}}
    ctl.on_node("ADDED", node)
    ctl.on_gtj("ADDED", body({}))
    env.kube.gtj, env.kube.existing = body({}), None  # what the fresh read before a create finds

    def lost(*_: Any, **__: Any) -> None:
        raise NotLeader("not the leader: create_job not sent")

    env.kube.create_job = lost  # type: ignore[method-assign]
    delays: list[float] = []
    ctl.queue.add = lambda key, delay=0.0: delays.append(delay)  # type: ignore[method-assign]
    ctl.reconcile("u1")
    assert delays == [1.0] and "u1" not in ctl.failures  # kept for whoever leads; not a failure
    assert not env.kube.statuses()  # nothing after the refused write
