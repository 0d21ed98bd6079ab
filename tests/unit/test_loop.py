"""The reconcile loop's own rules (controller/loop.py), on the stand-in world of tests/fakes: what it
reads afresh and when. The loop's behaviour with real watches is in tests/integration."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import kopf
import pytest

from greenjobs.controller.decide import Effect, Pacing, decide
from greenjobs.controller.executor import UndeclaredEffect
from greenjobs.controller.fleet import FleetCoordinator
from greenjobs.controller.handlers import watch_only_what_matters
from greenjobs.controller.jobs import template_hash
from greenjobs.controller.loop import Controller
from greenjobs.controller.observe import observe
from greenjobs.planning.settings import FleetSettings
from tests.fakes.operator_world import T0, TEMPLATE, TIMERS, Env, H, Provider, api_error, body, view

RUNNING = {"phase": "Running", "startTime": "2026-11-23T13:00:00Z", "plan": {"zone": "FR"}, "jobName": "llm"}


def raw_job(*, complete: bool) -> dict[str, Any]:
    conditions = [{"type": "Complete", "status": "True"}] if complete else []
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "llm", "namespace": "ml", "ownerReferences": [{"uid": "u1"}], "finalizers": []},
        "spec": {"suspend": False, "template": {}},
        "status": {"active": 0 if complete else 1, "ready": 0 if complete else 1, "conditions": conditions},
    }


def controller(env: Env) -> Controller:
    ctl = Controller(env.ex, env.clock, "greenjobs.dev/grid-zone", {})
    ctl.on_gtj("ADDED", body(RUNNING))
    ctl.on_job("ADDED", raw_job(complete=False))
    return ctl


def test_a_running_jobs_workload_is_read_afresh_once_no_watch_event_came_for_the_resync_interval() -> None:
    env = Env()
    env.clock.now = T0 + 2 * H
    ctl = controller(env)
    # The Job ended, but its watch stalled: the event never comes. The API server knows.
    env.kube.existing = raw_job(complete=True)

    env.clock.now += ctl.resync - timedelta(seconds=1)
    ctl.reconcile("u1")
    assert ("get", "llm") not in env.kube.calls  # still within the interval: the cache is trusted

    env.clock.now += timedelta(seconds=2)
    ctl.reconcile("u1")
    assert ("get", "llm") in env.kube.calls
    assert [s.get("phase") for s in env.kube.statuses()][-1] == "Succeeded"


def test_a_watch_event_restarts_the_interval() -> None:
    env = Env()
    env.clock.now = T0 + 2 * H
    ctl = controller(env)
    env.clock.now += ctl.resync - timedelta(seconds=1)
    ctl.on_job("MODIFIED", raw_job(complete=False))  # e.g. a pod became ready
    env.clock.now += timedelta(seconds=2)
    ctl.reconcile("u1")
    assert ("get", "llm") not in env.kube.calls
    assert "Succeeded" not in [s.get("phase") for s in env.kube.statuses()]


def test_an_unreachable_api_server_is_retried_at_most_ten_seconds_apart() -> None:
    env = Env()
    env.clock.now = T0 + 2 * H
    ctl = controller(env)
    env.kube.existing = raw_job(complete=True)

    def unreachable(*_: Any, **__: Any) -> None:
        raise OSError("connection refused")

    env.kube.get_job = unreachable  # type: ignore[method-assign]
    delays: list[float] = []
    ctl.queue.add = lambda key, delay=0.0: delays.append(delay)  # type: ignore[method-assign]
    env.clock.now += ctl.resync  # due for a fresh read, which fails every time
    for _ in range(6):
        ctl.reconcile("u1")
    assert delays == [1, 2, 5, 10, 10, 10]


GPU_TEMPLATE = {
    "spec": {
        "template": {
            "spec": {"containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}
        }
    }
}


def test_a_job_whose_workload_ended_frees_its_gpus_before_its_outcome_is_recorded() -> None:
    """After a restart (or behind a long queue) a finished job's status still says Running for a while:
    the GPUs its workload gave back must not hold up the next start meanwhile."""
    env = Env()
    env.clock.now = T0 + 2 * H
    ctl = Controller(env.ex, env.clock, "greenjobs.dev/grid-zone", {})
    fleet = FleetCoordinator(FleetSettings(), Provider(), env.clock, timedelta(minutes=5), ctl.fleet_snapshot)
    ctl.fleet = fleet
    ready = [{"type": "Ready", "status": "True"}]
    node = {"metadata": {"name": "fr-0", "labels": {"greenjobs.dev/grid-zone": "FR"}}, "spec": {}}
    ctl.on_node("ADDED", {**node, "status": {"allocatable": {"nvidia.com/gpu": "1"}, "conditions": ready}})
    ctl.on_gtj("ADDED", body(RUNNING, jobTemplate=GPU_TEMPLATE))
    ctl.on_job("ADDED", raw_job(complete=False))
    waiting = body({"phase": "Deferred", "plan": {"zone": "FR"}}, jobTemplate=GPU_TEMPLATE)
    waiting["metadata"].update(uid="u2", name="next")
    ctl.on_gtj("ADDED", waiting)

    assert not fleet.room_now("u2", "FR")  # FR's one GPU is the running job's
    ctl.on_job("MODIFIED", raw_job(complete=True))  # it ended; nobody has recorded it yet
    assert fleet.room_now("u2", "FR")


def test_two_starts_cannot_both_be_given_the_same_free_gpus() -> None:
    """Workers ask in parallel: the first start allowed holds the zone's GPUs until its Running status
    shows, so a second job asking a moment later is told to wait (a clean-clone run left its pod pending)."""
    env = Env()
    env.clock.now = T0 + 2 * H
    ctl = Controller(env.ex, env.clock, "greenjobs.dev/grid-zone", {})
    fleet = FleetCoordinator(FleetSettings(), Provider(), env.clock, timedelta(minutes=5), ctl.fleet_snapshot)
    ready = [{"type": "Ready", "status": "True"}]
    node = {"metadata": {"name": "fr-0", "labels": {"greenjobs.dev/grid-zone": "FR"}}, "spec": {}}
    ctl.on_node("ADDED", {**node, "status": {"allocatable": {"nvidia.com/gpu": "1"}, "conditions": ready}})
    for uid in ("u1", "u2"):
        waiting = body({"phase": "Deferred", "plan": {"zone": "FR"}}, jobTemplate=GPU_TEMPLATE)
        waiting["metadata"].update(uid=uid, name=uid)
        ctl.on_gtj("ADDED", waiting)

    assert fleet.room_now("u1", "FR")
    assert fleet.room_now("u1", "FR")  # asking again keeps its own claim, not a second one
    assert not fleet.room_now("u2", "FR")
    env.clock.now += timedelta(seconds=31)  # u1 never showed Running: its claim lapses
    assert fleet.room_now("u2", "FR")


def test_a_refused_start_is_requeued_with_backoff() -> None:
    """A start the API server refuses for now (RBAC, an admission policy) is looked at again, further
    apart each time, instead of waiting for a watch event that never comes."""
    env = Env()
    env.clock.now = T0 + 2 * H
    ctl = Controller(env.ex, env.clock, "greenjobs.dev/grid-zone", {})
    due = {"phase": "Deferred", "jobName": "llm", "plan": {"zone": "FR", "scheduledStart": "2026-11-23T14:00:00Z"}}
    ctl.on_gtj("ADDED", body(due))
    env.kube.gtj = body(due)
    suspended = raw_job(complete=False)
    suspended["spec"]["suspend"] = True
    ctl.on_job("ADDED", suspended)
    env.kube.existing = suspended
    env.kube.fail_patch = api_error(403, "forbidden")
    delays: list[float] = []
    ctl.queue.add = lambda key, delay=0.0: delays.append(delay)  # type: ignore[method-assign]
    for _ in range(4):
        ctl.reconcile("u1")
    assert delays == [1, 2, 5, 10]
    env.kube.fail_patch = None
    ctl.reconcile("u1")
    assert ctl.failures.get("u1") is None  # started: the backoff starts over


def _held_job() -> dict[str, Any]:
    job = raw_job(complete=True)
    job["metadata"]["finalizers"] = ["greenjobs.dev/outcome"]
    return job


def _settled(status: dict[str, Any]) -> dict[str, Any]:
    gtj = body(status)
    gtj["metadata"]["labels"] = {"greenjobs.dev/settled": "true"}
    return gtj


def test_a_settled_job_whose_workload_is_still_held_is_found_and_released() -> None:
    """Settled (by hand, before the admission policy) while its Job still had our finalizer: the GTJ
    is out of the watch, so only the sweep can find the Job; the phase table then lets it go."""
    env = Env()
    env.clock.now = T0 + 3 * H
    ctl = Controller(env.ex, env.clock, "greenjobs.dev/grid-zone", {})
    ctl.on_job("ADDED", _held_job())  # its GTJ never comes: the watch selects settled ones out
    env.kube.existing = _held_job()
    env.kube.gtj = _settled({**RUNNING, "phase": "Succeeded", "completionTime": "2026-11-23T14:00:00Z"})
    queued: list[str] = []
    ctl.queue.add = lambda key, delay=0.0: queued.append(key)  # type: ignore[method-assign]
    assert ctl.sweep_settled() == 1 and queued == ["u1"]
    ctl.reconcile("u1")
    assert ("release", ["greenjobs.dev/outcome"]) in env.kube.calls


def test_a_running_job_labelled_settled_gets_the_label_taken_off_not_forgotten() -> None:
    env = Env()
    env.clock.now = T0 + 2 * H
    ctl = Controller(env.ex, env.clock, "greenjobs.dev/grid-zone", {})
    held = raw_job(complete=False)
    held["metadata"]["finalizers"] = ["greenjobs.dev/outcome"]
    ctl.on_job("ADDED", held)
    env.kube.gtj = _settled(RUNNING)
    assert ctl.sweep_settled() == 1
    assert ("unsettle", "42") in env.kube.calls  # conditional on the version read
    # A job still in the watch is none of the sweep's business.
    env.kube.calls.clear()
    ctl.on_gtj("ADDED", body(RUNNING))
    assert ctl.sweep_settled() == 0 and not env.kube.calls


def test_the_watch_selects_settled_true_out_not_every_job_with_the_label() -> None:
    settings = kopf.OperatorSettings()
    watch_only_what_matters(settings)
    selector = settings.watching.label_selectors["greenjobs.dev", "greentrainingjobs"]
    assert selector == "greenjobs.dev/settled!=true"


def test_a_replan_that_would_start_reads_afresh_and_never_starts_an_old_template() -> None:
    """The cached body trails a spec edit: REPLAN may start the workload (its plan can say "now"), so
    by its effects it is carried out on a fresh read, which sees the new template and replaces the
    unstarted Job instead of starting the old one."""

    env = Env()
    env.clock.now = T0 + 2 * H  # FR's clean window: a re-plan says start now
    ctl = Controller(env.ex, env.clock, "greenjobs.dev/grid-zone", {})
    for zone in ("FR", "GB"):
        node = {"metadata": {"name": zone, "labels": {"greenjobs.dev/grid-zone": zone}}, "spec": {}, "status": {}}
        ctl.on_node("ADDED", node)
    deferred = {"phase": "Deferred", "jobName": "llm", "plan": {"zone": "GB", "scheduledStart": "2026-11-23T15:00:00Z"}}
    ctl.on_gtj("ADDED", body(deferred))  # the cache: the old template
    v2 = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}}
    edited = body(deferred, jobTemplate=v2)
    edited["metadata"].update(generation=2, resourceVersion="43")
    env.kube.gtj = edited  # the API server: edited a moment ago, its watch event not in yet
    job = raw_job(complete=False)
    job["spec"]["suspend"] = True
    job["metadata"]["annotations"] = {"greenjobs.dev/template-hash": template_hash(TEMPLATE)}
    env.kube.existing = job
    ctl.on_job("ADDED", job)
    ctl.reconcile("u1")
    started = [p for kind, p in env.kube.calls if kind == "patch" and p.get("spec", {}).get("suspend") is False]
    assert not started  # the old template never runs
    assert ("delete", "llm") in env.kube.calls  # replaced; the next look creates the new one


def test_a_write_the_decision_does_not_list_is_refused_as_a_bug() -> None:

    env = Env()
    env.clock.now = T0 + 2 * H
    due = {"phase": "Deferred", "jobName": "llm", "plan": {"zone": "FR", "scheduledStart": "2026-11-23T14:00:00Z"}}
    obs = observe(body(due), view())
    decision = decide(obs, env.clock.now, Pacing(), TIMERS)
    assert Effect.START in decision.effects and decision.risky
    with pytest.raises(UndeclaredEffect):
        env.ex.execute(obs, replace(decision, effects=frozenset({Effect.STATUS})), Pacing(), {"FR"})
    assert not [c for c in env.kube.calls if c[0] == "patch"]
