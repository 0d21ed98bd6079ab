"""The phase table: every (phase, state of the owned Job) pair, and the rules on top of it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from greenjobs.api import constants as c
from greenjobs.controller.decide import RISKY, TABLE, Action, Pacing, Timers, decide, phase_row
from greenjobs.controller.jobs import template_hash
from greenjobs.controller.observe import JobState, JobView, observe

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TIMERS = Timers(
    tick=timedelta(seconds=10),
    replan=timedelta(minutes=5),
    power=timedelta(minutes=1),
    account=timedelta(seconds=30),
)
UID = "u-1"
TEMPLATE: dict[str, Any] = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}
PHASES = [None, "Pending", "Deferred", "Running", "Suspended", "Paused", "Succeeded", "Failed"]
CREATE = {Action.PLAN, Action.RECREATE}


def gtj(phase: str | None, *, gen: int = 1, observed: int | None = 1, **status: Any) -> dict[str, Any]:
    st: dict[str, Any] = {"observedGeneration": observed, **status}
    if phase is not None:
        st["phase"] = phase
    if phase in ("Running", "Suspended", "Succeeded", "Failed"):
        st.setdefault("startTime", "2026-11-23T11:00:00Z")
    if phase == "Deferred":
        st.setdefault("plan", {"scheduledStart": "2026-11-23T14:00:00Z"})
    return {
        "metadata": {
            "name": "j",
            "namespace": "ns",
            "uid": UID,
            "generation": gen,
            "resourceVersion": "7",
            "creationTimestamp": "2026-11-23T11:00:00Z",
        },
        "spec": {"jobTemplate": TEMPLATE},
        "status": st,
    }


def job(state: JobState, **kw: Any) -> JobView | None:
    if state == JobState.MISSING:
        return None
    base: dict[str, Any] = {
        "uid": "job-uid",
        "owner_uids": (UID,),
        "suspended": state in (JobState.SUSPENDED, JobState.DELETING_UNSTARTED),
        "outcome": {JobState.SUCCEEDED: "Succeeded", JobState.FAILED: "Failed"}.get(state),
        "deleting": state in (JobState.DELETING, JobState.DELETING_UNSTARTED),
        "finalizers": (c.JOB_FINALIZER,),
        "template_hash": template_hash(TEMPLATE),
    }
    base.update(kw)
    return JobView(**base)


def run(body: dict[str, Any], view: JobView | None, now: datetime = T0, pacing: Pacing | None = None) -> Action:
    return decide(observe(body, view), now, pacing or Pacing(), TIMERS).action


def test_the_table_covers_every_phase_and_job_state() -> None:
    rows = {phase_row(p) for p in PHASES}
    assert {(r, s) for r in rows for s in JobState} == set(TABLE)


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("state", list(JobState))
def test_every_pair_decides_and_only_unstarted_phases_create(phase: str | None, state: JobState) -> None:
    action = run(gtj(phase), job(state))
    assert isinstance(action, Action)
    if action in CREATE:
        assert phase in (None, "Pending", "Deferred"), f"{phase} must never create a workload"
        assert state == JobState.MISSING or phase in (None, "Pending")
    if phase in ("Succeeded", "Failed"):
        # Terminal is terminal: nothing is created, started or resumed, whatever the Job does.
        assert action in (Action.RELEASE, Action.ACCOUNT, Action.NOTHING, Action.ACK_SPEC)


@pytest.mark.parametrize("phase", ["Running", "Suspended"])
def test_a_job_gone_after_it_ran_is_lost_not_rerun(phase: str) -> None:
    assert run(gtj(phase), None) == Action.LOST


@pytest.mark.parametrize("state", [JobState.DELETING, JobState.DELETING_UNSTARTED])
@pytest.mark.parametrize("phase", ["Running", "Suspended"])
def test_a_job_deleted_while_it_ran_is_cancelled(phase: str, state: JobState) -> None:
    assert run(gtj(phase), job(state)) == Action.CANCELLED


def test_succeeded_with_its_job_deleted_never_runs_again() -> None:
    assert run(gtj("Succeeded"), None) == Action.NOTHING
    assert run(gtj("Succeeded", energy={"nodes": {"n1": {"joules": 5}}}), None) == Action.ACCOUNT


@pytest.mark.parametrize("phase", [None, "Pending", "Deferred"])
def test_a_status_with_start_time_never_creates_again(phase: str | None) -> None:
    body = gtj(phase, startTime="2026-11-23T11:30:00Z")
    assert run(body, None) == Action.LOST


def test_deferred_job_deleted_before_it_ran_is_recreated() -> None:
    assert run(gtj("Deferred"), None) == Action.RECREATE
    assert run(gtj("Deferred"), job(JobState.DELETING_UNSTARTED)) == Action.RELEASE


@pytest.mark.parametrize("state", [JobState.SUCCEEDED, JobState.FAILED])
@pytest.mark.parametrize("phase", [None, "Deferred", "Running", "Suspended"])
def test_an_outcome_is_recorded_from_any_live_phase(phase: str | None, state: JobState) -> None:
    assert run(gtj(phase), job(state)) == Action.FINISH


def test_finished_releases_our_finalizer_once() -> None:
    assert run(gtj("Succeeded"), job(JobState.SUCCEEDED)) == Action.RELEASE
    assert run(gtj("Succeeded"), job(JobState.SUCCEEDED, finalizers=())) == Action.NOTHING


def test_a_finished_job_settles_once_late_energy_had_time_to_come() -> None:
    timers = Timers(TIMERS.tick, TIMERS.replan, TIMERS.power, TIMERS.account, settle=timedelta(minutes=10))
    done = gtj("Succeeded", completionTime="2026-11-23T11:55:00Z")

    def decided(body: dict[str, Any], view: JobView | None, now: datetime = T0) -> tuple[Action, timedelta | None]:
        d = decide(observe(body, view), now, Pacing(), timers)
        return d.action, d.requeue_after

    # Still inside the window: nothing now, one look when it is due (5 minutes on).
    assert decided(done, None) == (Action.NOTHING, timedelta(minutes=5))
    assert decided(done, None, T0 + timedelta(minutes=5))[0] == Action.SETTLE
    # Settling waits for what is still owed: the Job let go, late energy folded in, a spec change acked.
    later = T0 + timedelta(hours=1)
    assert decided(done, job(JobState.SUCCEEDED), later)[0] == Action.RELEASE
    late = {**done["status"], "energy": {"nodes": {"n1": {"joules": 10}}}}
    assert decided({**done, "status": late}, None, later)[0] == Action.ACCOUNT
    assert decided(gtj("Failed", gen=2, observed=1), None, later)[0] == Action.ACK_SPEC
    # Settled is final: never labelled twice, never looked at again.
    settled = {**done, "metadata": {**done["metadata"], "labels": {c.LABEL_SETTLED: "true"}}}
    assert decided(settled, None, later) == (Action.NOTHING, None)
    # Without a completion time (refused before any start) the last condition change counts.
    refused = gtj(
        "Failed", conditions=[{"type": "Ready", "status": "False", "lastTransitionTime": "2026-11-23T11:58:00Z"}]
    )
    refused["status"].pop("startTime")
    assert decided(refused, None) == (Action.NOTHING, timedelta(minutes=8))


def test_deferred_starts_when_due_and_replans_when_the_interval_passed() -> None:
    body = gtj("Deferred")
    susp = job(JobState.SUSPENDED)
    assert run(body, susp, now=datetime(2026, 11, 23, 14, 0, tzinfo=UTC)) == Action.START
    assert run(body, susp, pacing=Pacing(last_replan=T0 - timedelta(minutes=1))) == Action.NOTHING
    assert run(body, susp, pacing=Pacing(last_replan=T0 - timedelta(minutes=6))) == Action.REPLAN
    d = decide(observe(body, susp), T0, Pacing(last_replan=T0 - timedelta(minutes=1)), TIMERS)
    assert d.requeue_after == timedelta(minutes=4)  # the next re-plan, before the start at 14:00


def test_spec_changes_before_the_start_replan_or_replace() -> None:
    changed = gtj("Deferred", gen=2, observed=1)
    assert run(changed, job(JobState.SUSPENDED)) == Action.REPLAN
    assert run(changed, job(JobState.SUSPENDED, template_hash="other")) == Action.REPLACE
    assert run(gtj("Pending", gen=2, observed=1), job(JobState.SUSPENDED, template_hash="other")) == Action.REPLACE


def test_spec_changes_after_the_start_are_acknowledged() -> None:
    d = decide(observe(gtj("Running", gen=2, observed=1), job(JobState.RUNNING)), T0, Pacing(), TIMERS)
    assert (d.action, d.ack_spec) == (Action.MONITOR, True)
    assert run(gtj("Succeeded", gen=2, observed=1), job(JobState.SUCCEEDED, finalizers=())) == Action.ACK_SPEC


def test_budget_suspended_job_is_checked_for_resume_others_wait() -> None:
    by_budget = gtj(
        "Suspended", conditions=[{"type": "BudgetExceeded", "status": "True", "reason": "Suspended", "message": ""}]
    )
    assert run(by_budget, job(JobState.SUSPENDED)) == Action.RESUME
    assert run(gtj("Suspended"), job(JobState.SUSPENDED)) == Action.NOTHING
    assert run(gtj("Running"), job(JobState.SUSPENDED)) == Action.RECORD_SUSPENDED


def test_refused_spec_waits_for_a_change() -> None:
    refused = gtj("Pending", conditions=[{"type": "InvalidTemplate", "status": "True", "reason": "x", "message": ""}])
    assert run(refused, None) == Action.NOTHING
    changed = gtj(
        "Pending",
        gen=2,
        observed=1,
        conditions=[{"type": "InvalidTemplate", "status": "True", "reason": "x", "message": ""}],
    )
    assert run(changed, None) == Action.PLAN


def test_deleting_gtj_only_releases_its_job() -> None:
    body = gtj("Running")
    body["metadata"]["deletionTimestamp"] = "2026-11-23T12:00:00Z"
    assert run(body, job(JobState.RUNNING)) == Action.RELEASE
    assert run(body, None) == Action.NOTHING


def test_a_job_owned_by_another_uid_counts_as_missing() -> None:
    other = job(JobState.RUNNING, owner_uids=("someone-else",))
    assert run(gtj("Running"), other) == Action.LOST


def test_actions_that_touch_workloads_are_risky() -> None:
    assert {Action.PLAN, Action.RECREATE, Action.START, Action.RESUME, Action.REPLACE} <= RISKY
    assert Action.MONITOR not in RISKY and Action.NOTHING not in RISKY


def test_a_finished_job_whose_host_energy_is_an_estimate_looks_for_the_measured_figure_until_it_settles() -> None:
    """Prometheus down while the job ran: its host energy is the watts-per-GPU estimate. With a measured
    source configured, the finished job is accounted again (the executor folds in Kepler's figure when
    it comes) every host_retry, and only until it settles."""
    timers = Timers(
        TIMERS.tick,
        TIMERS.replan,
        TIMERS.power,
        TIMERS.account,
        settle=timedelta(minutes=10),
        host_retry=timedelta(seconds=30),
    )
    energy = {"nodes": {"n1": {"joules": 10}}, "methods": {"host": "watts-per-gpu"}}
    emissions = {"accountedJoules": {"n1": 10}}
    done = gtj("Succeeded", completionTime="2026-11-23T11:55:00Z", energy=energy, emissions=emissions)
    d = decide(observe(done, None), T0, Pacing(), timers)
    assert (d.action, d.requeue_after) == (Action.ACCOUNT, timedelta(seconds=30))
    # Measured already, or no measured source configured: nothing to look for.
    measured = {**energy, "methods": {"host": "kepler"}}
    body = gtj("Succeeded", completionTime="2026-11-23T11:55:00Z", energy=measured, emissions=emissions)
    assert decide(observe(body, None), T0, Pacing(), timers).action == Action.NOTHING
    assert decide(observe(done, None), T0, Pacing(), replace(timers, host_retry=None)).action == Action.NOTHING
    # Bounded: once due to settle, it settles with the estimate.
    assert decide(observe(done, None), T0 + timedelta(minutes=6), Pacing(), timers).action == Action.SETTLE
