"""The carbon AdmissionCheck's decisions on Kueue Workloads, and the timing hints of plain jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from greenjobs.kueue.decisions import (
    Activate,
    AnswerReady,
    Deactivate,
    Planned,
    Warn,
    active_condition_needed,
    cluster_queue_checks,
    decide,
    needs_replan,
    plan_annotations,
    recorded_plan,
    view,
    zone_selector_value,
)
from greenjobs.kueue.hints import read_hints
from greenjobs.kueue.names import ANN_HELD

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
LABEL = "greenjobs.dev/grid-zone"
FLAVORS = {"gpu-any": {}, "gb": {LABEL: "GB"}, "fr": {LABEL: "FR"}}


def _wl(
    *,
    active: bool = True,
    reserved: bool = False,
    checks: dict[str, str] | None = None,
    flavor: str = "gpu-any",
    pod_sets: tuple[str, ...] = ("main",),
    annotations: dict[str, str] | None = None,
    finished: bool = False,
) -> dict[str, Any]:
    conds = [{"type": "QuotaReserved", "status": "True" if reserved else "False"}]
    if finished:
        conds.append({"type": "Finished", "status": "True"})
    status: dict[str, Any] = {"conditions": conds}
    if reserved:
        status["admission"] = {
            "clusterQueue": "cq",
            "podSetAssignments": [{"name": ps, "flavors": {"nvidia.com/gpu": flavor}} for ps in pod_sets],
        }
    if checks:
        status["admissionChecks"] = [{"name": n, "state": s} for n, s in checks.items()]
    return {
        "metadata": {
            "name": "job-a",
            "namespace": "team",
            "annotations": annotations or {},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "a", "controller": True}],
        },
        "spec": {"active": active, "queueName": "lq", "podSets": [{"name": ps} for ps in pod_sets]},
        "status": status,
    }


LATER = Planned("FR", NOW + timedelta(hours=3), "start in 3h in FR")
DUE = Planned("FR", NOW, "start now in FR")


def _decide(wl: dict[str, Any], plan: Planned, checks: set[str] | None = None) -> Any:
    return decide(view(wl), {"carbon"} if checks is None else checks, plan, NOW, FLAVORS, LABEL, plan.zone)


def test_a_deferred_workload_is_deactivated_so_it_holds_no_quota_and_wakes_at_the_start() -> None:
    d = _decide(_wl(), LATER)
    assert d.actions == [Deactivate(LATER.start)] and d.wake_at == LATER.start
    # quota already reserved (Kueue was quicker than us): deactivating releases it
    d = _decide(_wl(reserved=True, checks={"carbon": "Pending"}), LATER)
    assert d.actions == [Deactivate(LATER.start)]
    # already held: nothing to write, still wake at the start
    d = _decide(_wl(active=False, annotations={ANN_HELD: "x"}), LATER)
    assert d.actions == [] and d.wake_at == LATER.start


def test_at_the_planned_start_our_hold_is_lifted_but_a_users_deactivation_is_not() -> None:
    assert _decide(_wl(active=False, annotations={ANN_HELD: "x"}), DUE).actions == [Activate()]
    assert _decide(_wl(active=False), DUE).actions == []


def test_ready_with_the_zone_selector_on_every_pod_set_once_quota_is_reserved() -> None:
    assert _decide(_wl(), DUE).actions == []  # no quota yet: Kueue has not asked
    wl = _wl(reserved=True, checks={"carbon": "Pending", "other": "Pending"}, pod_sets=("trainer", "evaluator"))
    (ready,) = _decide(wl, DUE).actions
    assert isinstance(ready, AnswerReady) and ready.check == "carbon"
    assert ready.pod_set_updates == [
        {"name": "trainer", "nodeSelector": {LABEL: "FR"}},
        {"name": "evaluator", "nodeSelector": {LABEL: "FR"}},
    ]
    assert "in FR" in ready.message
    # answered already: nothing more
    assert _decide(_wl(reserved=True, checks={"carbon": "Ready"}), DUE).actions == []


def test_a_flavor_pinning_another_zone_is_never_contradicted_and_is_reported() -> None:
    wl = _wl(reserved=True, checks={"carbon": "Pending"}, flavor="gb")
    warn, ready = _decide(wl, DUE).actions
    assert isinstance(warn, Warn) and warn.reason == "ZoneConflict" and "gb" in warn.message and "FR" in warn.message
    assert isinstance(ready, AnswerReady) and ready.pod_set_updates == [{"name": "main"}]
    # the same zone as the flavor: no conflict
    (ready,) = _decide(_wl(reserved=True, checks={"carbon": "Pending"}, flavor="fr"), DUE).actions
    assert isinstance(ready, AnswerReady) and ready.pod_set_updates == [{"name": "main", "nodeSelector": {LABEL: "FR"}}]


def test_no_zone_planned_means_ready_without_a_selector() -> None:
    (ready,) = _decide(_wl(reserved=True, checks={"carbon": "Pending"}), Planned(None, NOW)).actions
    assert isinstance(ready, AnswerReady) and ready.pod_set_updates == [{"name": "main"}]


def test_workloads_of_other_queues_and_finished_ones_are_left_alone() -> None:
    assert _decide(_wl(), LATER, checks=set()).actions == []
    assert _decide(_wl(finished=True), LATER).actions == []


def test_plan_round_trips_through_annotations() -> None:
    wl = _wl(annotations=plan_annotations(LATER))
    assert recorded_plan(view(wl)) == LATER
    assert recorded_plan(view(_wl())) is None
    assert view(wl).owner == ("batch/v1", "Job", "a")


def test_cluster_queue_checks_and_active_condition() -> None:
    cq = {"spec": {"admissionChecksStrategy": {"admissionChecks": [{"name": "carbon"}]}, "admissionChecks": ["old"]}}
    assert cluster_queue_checks(cq) == {"carbon", "old"}
    assert active_condition_needed({"status": {}})
    assert not active_condition_needed({"status": {"conditions": [{"type": "Active", "status": "True"}]}})
    assert zone_selector_value("GB", {"eu-west-2": "GB"}) == "eu-west-2"
    assert zone_selector_value("FR", {}) == "FR" and zone_selector_value(None, {}) is None


def test_hints_default_to_no_shift_and_bad_hints_are_reported_not_guessed() -> None:
    none = read_hints({})
    assert none.timing.deadline is None and none.timing.max_delay is None and not none.errors
    ok = read_hints(
        {
            "greenjobs.dev/estimated-duration": "2h",
            "greenjobs.dev/max-delay": "12h",
            "greenjobs.dev/zones": "GB, FR",
        }
    )
    assert ok.timing.max_delay == "12h" and ok.timing.duration() == timedelta(hours=2) and ok.zones == ["GB", "FR"]
    bad = read_hints({"greenjobs.dev/max-delay": "12h"})
    assert bad.timing.max_delay is None and "greenjobs.dev/estimated-duration is required" in bad.errors[0]
    bad = read_hints({"greenjobs.dev/estimated-duration": "soon", "greenjobs.dev/max-delay": "1h"})
    assert bad.timing.max_delay is None and "greenjobs.dev/estimated-duration" in bad.errors[0]
    both = read_hints(
        {
            "greenjobs.dev/estimated-duration": "1h",
            "greenjobs.dev/max-delay": "1h",
            "greenjobs.dev/deadline": "2030-01-01T00:00:00Z",
        }
    )
    assert "mutually exclusive" in both.errors[0]


def test_a_held_workload_is_planned_again_every_interval_until_its_start() -> None:
    decided = Planned("FR", NOW + timedelta(hours=3), "m", NOW - timedelta(minutes=10))
    assert recorded_plan(view(_wl(annotations=plan_annotations(decided)))) == decided
    held = view(_wl(active=False, annotations={ANN_HELD: "x"}))
    assert needs_replan(held, decided, NOW, timedelta(minutes=5))
    assert not needs_replan(held, decided, NOW, timedelta(minutes=15))
    assert not needs_replan(view(_wl()), decided, NOW, timedelta(minutes=5))  # not held by us
    due = Planned("FR", NOW, "m", NOW - timedelta(hours=1))
    assert not needs_replan(held, due, NOW, timedelta(minutes=5))  # its start has come: release it instead
