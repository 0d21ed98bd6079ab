"""KueueCheck on the operator's runtime: handlers only queue, failures are retried with backoff (kopf
would not retry them), only the Lease holder writes, ResourceFlavors come from the watch's cache."""

from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from greenjobs.config import OperatorConfig
from greenjobs.kueue.controller import BACKOFF, CHECK_NS, KueueCheck
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
