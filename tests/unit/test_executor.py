"""The executor carries out phase-table decisions: creation and adoption after a restart, invalid
templates, start at the planned time, completion, accounting, budgets, power clamping. Kubernetes writes
are recorded by a stand-in for our own `Kube` wrapper (the behaviour against a real API server is in
tests/integration); each test runs `decide` and then `execute`, as the reconcile loop does."""

from __future__ import annotations

from datetime import timedelta

import pytest

from greenjobs.controller.decide import Action, Pacing, Timers, decide
from greenjobs.controller.observe import observe
from tests.fakes.operator_world import T0, TIMERS, Env, H, api_error, body, view


@pytest.fixture
def env() -> Env:
    return Env()


def test_create_defers_to_the_clean_window_with_a_suspended_job(env: Env) -> None:
    action, _ = env.step(body({}))
    assert action == Action.PLAN
    [st] = env.kube.statuses()
    assert st["phase"] == "Deferred" and st["jobName"] == "llm"
    assert st["plan"]["zone"] == "FR" and st["plan"]["scheduledStart"] == "2026-11-23T14:00:00Z"
    (kind, job), status_write = env.kube.calls
    assert kind == "create" and job["spec"]["suspend"] is True
    assert job["metadata"]["finalizers"] == ["greenjobs.dev/outcome"]
    assert job["spec"]["template"]["metadata"]["labels"]["greenjobs.dev/job-uid"] == "u1"
    assert status_write[1]["rv"] == "42"  # a phase change is written only over what was read
    assert [e.reason for e in env.events] == ["Deferred"]


def test_a_deferred_job_with_its_job_waits_without_writing(env: Env) -> None:
    status = {"phase": "Deferred", "jobName": "llm", "plan": {"zone": "FR", "scheduledStart": "2026-11-23T14:00:00Z"}}
    action, done = env.step(body(status), view(), Pacing(last_replan=T0))
    assert action == Action.NOTHING and not env.kube.calls and not env.events
    assert done.requeue_after == timedelta(minutes=5)


def test_restart_between_job_create_and_status_adopts_instead_of_duplicating(env: Env) -> None:
    env.kube.fail_create = api_error(409, "already exists")
    env.kube.existing = {"metadata": {"ownerReferences": [{"uid": "u1"}]}, "spec": {"suspend": True}}
    env.step(body({}))
    assert [c[0] for c in env.kube.calls] == ["create", "get", "status"]
    assert env.kube.statuses()[0]["phase"] == "Deferred"


def test_a_job_started_before_a_restart_keeps_its_real_start_time(env: Env) -> None:
    """Killed between unsuspending the Job and writing Running: the next look finds the Job running
    and records when it was started (its annotation), not when it happened to look."""
    status = {"phase": "Deferred", "jobName": "llm", "plan": {"zone": "FR", "scheduledStart": "2026-11-23T14:00:00Z"}}
    env.clock.now = T0 + 2 * H + timedelta(minutes=7)
    action, _ = env.step(body(status), view(suspended=False, started_at="2026-11-23T14:00:01Z"))
    assert action == Action.ADOPT_RUNNING
    st = env.kube.statuses()[0]
    assert (st["phase"], st["startTime"]) == ("Running", "2026-11-23T14:00:01Z")


def test_a_running_job_without_our_start_annotation_is_recorded_as_started_now(env: Env) -> None:
    status = {"phase": "Deferred", "jobName": "llm", "plan": {"zone": "FR", "scheduledStart": "2026-11-23T14:00:00Z"}}
    env.clock.now = T0 + 2 * H
    env.step(body(status), view(suspended=False))
    assert env.kube.statuses()[0]["startTime"] == "2026-11-23T14:00:00Z"


def test_foreign_job_with_the_same_name_is_reported_not_taken(env: Env) -> None:
    env.kube.fail_create = api_error(409, "already exists")
    env.kube.existing = {"metadata": {"ownerReferences": [{"uid": "someone-else"}]}, "spec": {}}
    env.step(body({}))
    st = env.kube.statuses()[0]
    assert st["phase"] == "Pending"
    assert {c["type"]: c["reason"] for c in st["conditions"]}["InvalidTemplate"] == "JobNameTaken"
    assert env.events[-1].type == "Warning"


def test_invalid_template_becomes_a_condition_and_an_event(env: Env) -> None:
    env.kube.fail_create = api_error(
        422, 'Job.batch "llm" is invalid: spec.template.spec.containers[0].image: Required value'
    )
    env.step(body({}))
    cond = {c["type"]: c for c in env.kube.statuses()[0]["conditions"]}["InvalidTemplate"]
    assert cond["status"] == "True" and "containers[0].image" in cond["message"]
    assert env.events[-1].reason == "InvalidJobTemplate"
    # The same generation is not tried again: no traceback loop, no repeated Event.
    refused = env.kube.statuses()[0]
    env.kube.calls.clear()
    action, _ = env.step(body(refused))
    assert action == Action.NOTHING and not env.kube.calls


@pytest.mark.parametrize(
    ("code", "message", "reason"),
    [
        (403, "jobs.batch is forbidden", "Forbidden"),
        (403, "exceeded quota: gpus, requested: nvidia.com/gpu=8", "QuotaExceeded"),
    ],
)
def test_forbidden_or_over_quota_is_a_condition_retried_later(env: Env, code: int, message: str, reason: str) -> None:
    env.kube.fail_create = api_error(code, message)
    _, done = env.step(body({}))
    st = env.kube.statuses()[0]
    cond = {c["type"]: c for c in st["conditions"]}["Planned"]
    assert (st["phase"], cond["status"], cond["reason"]) == ("Pending", "False", reason)
    assert message in cond["message"] and env.events[-1].reason == reason
    assert done.requeue_after is not None and done.requeue_after >= timedelta(seconds=30)


def test_the_job_starts_at_its_scheduled_start(env: Env) -> None:
    status = {"phase": "Deferred", "jobName": "llm", "plan": {"zone": "FR", "scheduledStart": "2026-11-23T14:00:00Z"}}
    env.clock.now = T0 + 2 * H
    action, _ = env.step(body(status), view())
    assert action == Action.START
    (kind, p), _ = [c for c in env.kube.calls if c[0] != "get"]
    assert kind == "patch" and p["spec"]["suspend"] is False
    assert p["spec"]["template"]["spec"]["nodeSelector"] == {"greenjobs.dev/grid-zone": "FR"}
    # The patch that lets it run says when, so a restart before the status write cannot move the start.
    assert p["metadata"]["annotations"]["greenjobs.dev/started-at"] == "2026-11-23T14:00:00Z"
    st = env.kube.statuses()[0]
    assert st["phase"] == "Running" and st["power"]["targetCapWatts"] == 250
    assert st["startTime"] == "2026-11-23T14:00:00Z"
    assert {c["type"]: c["reason"] for c in st["conditions"]}["PowerCapped"] == "Static"


class FullFleet:
    """A fleet with no GPUs free anywhere now, whose planner leaves this job to its own plan."""

    def assignment(self, uid: str) -> None:
        return None

    def room_now(self, uid: str, zone: str | None) -> bool:
        return False


def test_a_new_job_whose_plan_says_now_waits_while_its_zone_is_full(env: Env) -> None:
    env.ex.fleet = FullFleet()  # type: ignore[assignment]
    env.clock.now = T0 + 2 * H  # FR's clean window is now
    env.step(body({}))
    (kind, job), _ = env.kube.calls
    assert kind == "create" and job["spec"]["suspend"] is True  # not a pod left pending for GPUs
    assert env.kube.statuses()[0]["phase"] == "Deferred"


def test_a_replan_that_says_now_starts_only_when_its_zone_has_room(env: Env) -> None:
    env.ex.fleet = FullFleet()  # type: ignore[assignment]
    env.clock.now = T0 + 2 * H
    status = {"phase": "Deferred", "jobName": "llm", "plan": {"zone": "GB", "scheduledStart": "2026-11-23T15:00:00Z"}}
    action, _ = env.step(body(status), view(), Pacing(last_replan=T0))
    assert action == Action.REPLAN
    assert not [c for c in env.kube.calls if c[0] == "patch"]  # the Job stays suspended
    st = env.kube.statuses()[0]
    assert st.get("phase", "Deferred") == "Deferred" and st["plan"]["zone"] == "FR"


def test_completion_is_recorded_and_accounted_before_the_job_is_let_go(env: Env) -> None:
    env.clock.now = T0 + 3 * H
    status = {
        "phase": "Running",
        "startTime": "2026-11-23T13:00:00Z",
        "plan": {"zone": "FR"},
        "energy": {"nodes": {"gpu-fr-0": {"joules": 7.2e6, "gpus": 4, "gpuSeconds": 14400}}},
    }
    action, _ = env.step(body(status), view(False, "Succeeded"))
    assert action == Action.FINISH
    assert env.kube.writes() == ["status", "release"]  # outcome first, then the finalizer goes
    st = env.kube.statuses()[0]
    assert st["phase"] == "Succeeded" and st["completionTime"]
    assert st["energy"]["gpuKWh"] == pytest.approx(2.0) and st["energy"]["gpuHours"] == pytest.approx(4.0)
    assert st["energy"]["kWh"] == pytest.approx(2.0 * 1.58)  # no host source here; facility at PUE 1.58
    assert st["emissions"]["gpuGrams"] == pytest.approx(300.0)  # 2 kWh x 150 g/kWh (current intensity)
    assert st["emissions"]["operationalGrams"] == pytest.approx(2.0 * 1.58 * 150.0)
    assert st["emissions"]["grams"] == pytest.approx(
        st["emissions"]["operationalGrams"] + st["emissions"]["embodiedGrams"]
    )
    # Finished, outcome recorded, Job let go: the same input accounts nothing more, creates nothing.
    env.kube.calls.clear()
    action, _ = env.step(body({**status, **st}), None)
    assert action == Action.NOTHING and not env.kube.calls


def test_an_end_seen_late_is_recorded_at_the_jobs_own_completion_time(env: Env) -> None:
    """The operator was down for two hours when the Job finished: completionTime is the Job's, not the
    moment the operator came back (durations and the settle timer run from the real end)."""
    env.clock.now = T0 + 5 * H
    status = {"phase": "Running", "startTime": "2026-11-23T13:00:00Z", "plan": {"zone": "FR"}}
    env.step(body(status), view(False, "Succeeded", finished_at="2026-11-23T15:00:00Z"))
    assert env.kube.statuses()[0]["completionTime"] == "2026-11-23T15:00:00Z"


def test_a_finished_job_is_settled_with_one_conditional_label_write(env: Env) -> None:
    env.clock.now = T0 + 5 * H
    done = body({"phase": "Succeeded", "startTime": "2026-11-23T13:00:00Z", "completionTime": "2026-11-23T15:00:00Z"})
    obs = observe(done, None)
    timers = Timers(TIMERS.tick, TIMERS.replan, TIMERS.power, TIMERS.account, settle=timedelta(minutes=10))
    decision = decide(obs, env.clock.now, Pacing(), timers)
    assert decision.action == Action.SETTLE
    out = env.ex.execute(obs, decision, Pacing(), {"GB", "FR"})
    # Only the label, conditional on the version read: a re-created GTJ of that name is never touched.
    assert env.kube.writes() == ["settle"] and env.kube.calls[0][1] == "42"
    assert out.body is not None and out.requeue_after is None and not env.events
    assert env.ex.metrics.settled._value.get() == 1


def test_energy_budget_with_suspend_action_suspends_the_job(env: Env) -> None:
    env.clock.now = T0 + 3 * H
    status = {
        "phase": "Running",
        "startTime": "2026-11-23T13:00:00Z",
        "plan": {"zone": "FR"},
        "power": {"targetCapWatts": 250, "reason": "Static"},
        "energy": {"nodes": {"gpu-fr-0": {"joules": 7.2e6, "gpus": 4}}},
    }
    env.step(body(status, budget={"maxEnergyKWh": 1.0, "action": "Suspend"}), view(False))
    st = env.kube.statuses()[0]
    assert st["phase"] == "Suspended"
    assert ("patch", {"spec": {"suspend": True}}) in env.kube.calls
    assert {c["type"]: c["status"] for c in st["conditions"]}["BudgetExceeded"] == "True"
    assert env.events[-1].reason == "BudgetExceeded"
    # Raising the budget resumes its own Job (and only then).
    env.kube.calls.clear()
    raised = body({**status, **st}, budget={"maxEnergyKWh": 5.0, "action": "Suspend"})
    raised["metadata"]["generation"] = 2
    action, _ = env.step(raised, view(True))
    assert action == Action.RESUME
    [resume] = [p for kind, p in env.kube.calls if kind == "patch"]
    assert resume["spec"]["suspend"] is False  # its own Job, in its zone
    assert resume["spec"]["template"]["spec"]["nodeSelector"] == {"greenjobs.dev/grid-zone": "FR"}
    assert env.kube.statuses()[0]["phase"] == "Running"


def test_a_budget_suspension_whose_status_write_was_lost_is_still_recorded_as_the_budgets(env: Env) -> None:
    # The Job was suspended for the budget, then the status write met a conflict (an agent's report):
    # the next look sees Running + a suspended Job, with the energy not yet accounted.
    env.clock.now = T0 + 3 * H
    status = {
        "phase": "Running",
        "startTime": "2026-11-23T13:00:00Z",
        "plan": {"zone": "FR"},
        "energy": {"nodes": {"gpu-fr-0": {"joules": 7.2e6, "gpus": 4}}},
    }
    action, _ = env.step(body(status, budget={"maxEnergyKWh": 1.0, "action": "Suspend"}), view(True))
    assert action == Action.RECORD_SUSPENDED
    st = env.kube.statuses()[0]
    assert st["phase"] == "Suspended" and st["energy"]["gpuKWh"] == pytest.approx(2.0)
    budget = {c["type"]: c for c in st["conditions"]}["BudgetExceeded"]
    assert (budget["status"], budget["reason"]) == ("True", "Suspended")
    assert [e.reason for e in env.events] == ["BudgetExceeded"]  # not "suspended outside greenjobs"
    # Energy its agents report after the suspension is still folded in.
    env.kube.calls.clear()
    late = {**status, **st, "energy": {**st["energy"], "nodes": {"gpu-fr-0": {"joules": 9.0e6, "gpus": 4}}}}
    action, _ = env.step(body(late, budget={"maxEnergyKWh": 1.0, "action": "Suspend"}), view(True))
    assert action == Action.ACCOUNT
    assert env.kube.statuses()[0]["energy"]["gpuKWh"] == pytest.approx(2.5)


def test_a_job_suspended_by_someone_else_is_recorded_as_such(env: Env) -> None:
    env.clock.now = T0 + 3 * H
    status = {"phase": "Running", "startTime": "2026-11-23T13:00:00Z", "plan": {"zone": "FR"}}
    action, _ = env.step(body(status), view(True))
    assert action == Action.RECORD_SUSPENDED
    assert env.kube.statuses()[0]["phase"] == "Suspended"
    assert [e.reason for e in env.events] == ["JobSuspended"]


def test_several_condition_updates_in_one_pass_all_land(env: Env) -> None:
    env.clock.now = T0 + 10 * H  # past the plan's deadline
    status = {
        "phase": "Running",
        "startTime": "2026-11-23T13:00:00Z",
        "plan": {"zone": "FR", "deadline": "2026-11-23T18:00:00Z"},
        "power": {"targetCapWatts": 250, "reason": "Static"},
        "energy": {"nodes": {"gpu-fr-0": {"joules": 7.2e6, "gpus": 4}}},
    }
    env.step(body(status, budget={"maxEnergyKWh": 1.0}), view(False))
    conds = {c["type"]: c for c in env.kube.statuses()[0]["conditions"]}
    assert conds["DeadlineAtRisk"]["reason"] == "RunningPastDeadline"
    assert conds["BudgetExceeded"]["reason"] == "Warn"
    assert [e.reason for e in env.events] == ["DeadlineAtRisk", "BudgetExceeded"]


def test_a_static_cap_the_gpus_clamp_is_reported_as_applied(env: Env) -> None:
    status = {
        "phase": "Running",
        "startTime": "2026-11-23T13:00:00Z",
        "plan": {"zone": "FR"},
        "power": {"targetCapWatts": 5, "reason": "Static"},
        "energy": {"nodes": {"gpu-fr-0": {"joules": 1.0, "gpus": 4, "capWatts": 200}}},
    }
    env.step(body(status, power={"policy": "Static", "capWatts": 5}), view(False))
    st = env.kube.statuses()[0]
    assert st["power"]["targetCapWatts"] == 5 and st["power"]["appliedCapWatts"] == 200
    cond = {c["type"]: c for c in st["conditions"]}["PowerCapped"]
    assert cond["reason"] == "Clamped" and "200 W" in cond["message"]


def test_a_running_job_whose_job_vanished_fails_as_lost_never_recreated(env: Env) -> None:
    status = {"phase": "Running", "startTime": "2026-11-23T13:00:00Z", "plan": {"zone": "FR"}}
    action, _ = env.step(body(status), None)
    assert action == Action.LOST
    assert "create" not in env.kube.writes()
    st = env.kube.statuses()[0]
    assert st["phase"] == "Failed"
    assert {c["type"]: c["reason"] for c in st["conditions"]}["Failed"] == "JobLost"


def test_template_change_after_the_start_is_explained(env: Env) -> None:
    status = {"phase": "Running", "startTime": "2026-11-23T13:00:00Z", "plan": {"zone": "FR"}}
    changed = body(status, jobTemplate={"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "y"}]}}}})
    changed["metadata"]["generation"] = 2
    env.step(changed, view(False))
    st = env.kube.statuses()[0]
    assert st["observedGeneration"] == 2
    assert {c["type"]: c["reason"] for c in st["conditions"]}["SpecApplied"] == "TemplateChangedAfterStart"
    assert env.events[-1].reason == "SpecNotApplied"


def test_a_cap_an_agent_could_not_apply_on_a_shared_gpu_is_a_condition(env: Env) -> None:
    status = {
        "phase": "Running",
        "startTime": "2026-11-23T13:00:00Z",
        "plan": {"zone": "FR"},
        "power": {"targetCapWatts": 250, "reason": "Static"},
        "energy": {
            "nodes": {
                "gpu-fr-0": {"joules": 1.0, "gpus": 1, "capNotApplied": "GPU 0 is shared with pods of other tenants"}
            }
        },
    }
    env.step(body(status), view(False))
    cond = {c["type"]: c for c in env.kube.statuses()[0]["conditions"]}["PowerCapped"]
    assert (cond["status"], cond["reason"]) == ("False", "CapNotApplied")
    assert "gpu-fr-0: GPU 0 is shared with pods of other tenants" in cond["message"]


# ---------------------------------------------------------------- retries that come (issue 21)

DEFERRED_DUE = {
    "phase": "Deferred",
    "jobName": "llm",
    "plan": {"zone": "FR", "scheduledStart": "2026-11-23T14:00:00Z", "latestStart": "2026-11-23T16:00:00Z"},
}


@pytest.mark.parametrize("code", [400, 403, 422])
def test_a_refused_start_is_a_condition_one_event_and_a_retry_with_backoff(env: Env, code: int) -> None:
    env.kube.fail_patch = api_error(code, "denied by policy no-unsuspend")
    env.clock.now = T0 + 2 * H
    action, done = env.step(body(DEFERRED_DUE), view())
    assert action == Action.START
    assert done.retry  # the loop requeues it with backoff: it is never left waiting for an event
    st = env.kube.statuses()[0]
    started = {c["type"]: c for c in st["conditions"]}["Started"]
    assert (started["status"], started["reason"]) == ("False", "StartFailed")
    assert "no-unsuspend" in started["message"]
    assert [e.reason for e in env.events] == ["StartFailed"]
    # The next look, refused the same way: the condition is unchanged, so no second Event and no write.
    env.kube.calls.clear()
    again = body({**DEFERRED_DUE, "conditions": st["conditions"]})
    _, done = env.step(again, view())
    assert done.retry and len(env.events) == 1
    assert "status" not in env.kube.writes()


def test_a_start_refused_past_its_latest_start_says_so(env: Env) -> None:
    env.kube.fail_patch = api_error(403, "jobs.batch is forbidden")
    env.clock.now = T0 + 4 * H + timedelta(minutes=1)  # past latestStart 16:00
    _, done = env.step(body(DEFERRED_DUE), view())
    st = env.kube.statuses()[0]
    risk = {c["type"]: c for c in st["conditions"]}["DeadlineAtRisk"]
    assert (risk["status"], risk["reason"]) == ("True", "StartRefused") and "forbidden" in risk["message"]
    assert sorted(e.reason for e in env.events) == ["StartFailed", "StartRefused"]
    assert done.retry


def test_a_refused_resume_is_a_condition_and_a_retry_not_a_traceback(env: Env) -> None:
    env.clock.now = T0 + 3 * H
    status = {
        "phase": "Suspended",
        "startTime": "2026-11-23T13:00:00Z",
        "plan": {"zone": "FR"},
        "energy": {"kWh": 2.0, "nodes": {"gpu-fr-0": {"joules": 7.2e6, "gpus": 4}}},
        "emissions": {"accountedJoules": {"gpu-fr-0": 7.2e6}},
        "conditions": [
            {"type": "BudgetExceeded", "status": "True", "reason": "Suspended", "message": "over"},
        ],
    }
    env.kube.fail_patch = api_error(422, "spec.suspend: immutable here")
    action, done = env.step(body(status, budget={"maxEnergyKWh": 5.0, "action": "Suspend"}), view(True))
    assert action == Action.RESUME
    assert done.retry
    st = env.kube.statuses()[0]
    started = {c["type"]: c for c in st["conditions"]}["Started"]
    assert (started["status"], started["reason"]) == ("False", "StartFailed")
    assert "phase" not in st  # still Suspended
    assert [e.reason for e in env.events] == ["StartFailed"]


def test_energy_reported_late_is_charged_at_the_intensity_of_when_it_was_used(env: Env) -> None:
    # Now 17:00. FR's series: 200 g/kWh 13:00-14:00, 50 g 14:00-16:00, 200 g from 16:00; 150 g current.
    env.clock.now = T0 + 5 * H
    usage = [("13:00:00", 0.0), ("14:00:00", 3.6e6), ("16:00:00", 10.8e6), ("16:59:30", 14.4e6)]
    status = {
        "phase": "Running",
        "startTime": "2026-11-23T13:00:00Z",
        "plan": {"zone": "FR"},
        "power": {"targetCapWatts": 250, "reason": "Static"},
        "energy": {
            "nodes": {
                "gpu-fr-0": {
                    "joules": 14.4e6,
                    "gpus": 1,
                    "usage": [{"at": f"2026-11-23T{t}Z", "joules": j} for t, j in usage],
                }
            }
        },
        # 13:00-14:00 was accounted in time (1 kWh at 200 g); an agent outage delayed the rest.
        "emissions": {"accountedJoules": {"gpu-fr-0": 3.6e6}, "gpuGrams": 200.0, "grams": 200.0},
    }
    env.step(body(status), view(False))
    written = env.kube.statuses()[-1]
    # 2 kWh used at 14:00-16:00 at that time's 50 g; the last, recent kWh at the current 150 g (not 3 x 150).
    assert written["emissions"]["gpuGrams"] == pytest.approx(200.0 + 2 * 50.0 + 150.0)
    assert written["emissions"]["accountedJoules"] == {"gpu-fr-0": 14.4e6}  # every joule once
    env.step(body({**status, **written}), view(False))  # the same entry again adds nothing
    assert env.kube.statuses()[-1]["emissions"]["gpuGrams"] == pytest.approx(450.0)


def test_a_measured_host_figure_that_comes_after_the_job_finished_replaces_the_estimate(env: Env) -> None:
    from dataclasses import replace as dc_replace

    from greenjobs.accounting.host_energy import HostEnergy

    class Kepler:
        name = "kepler"

        def job_energy(self, job: object) -> HostEnergy:
            return HostEnergy(method="kepler", cpu_joules=3.0e6, dram_joules=0.6e6)

    env.ex.host_source = Kepler()  # type: ignore[assignment]
    status = {
        "phase": "Succeeded",
        "startTime": "2026-11-23T11:00:00Z",
        "completionTime": "2026-11-23T11:55:00Z",
        "plan": {"zone": "FR"},
        "energy": {"kWh": 1.0, "nodes": {"n1": {"joules": 3.6e6, "gpus": 1}}, "methods": {"host": "watts-per-gpu"}},
        "emissions": {"grams": 150.0, "accountedJoules": {"n1": 3.6e6}, "accountedHostJoules": 0.0},
    }
    obs = observe(body(status), None)
    timers = dc_replace(TIMERS, settle=timedelta(minutes=10), host_retry=timedelta(seconds=30))
    decision = decide(obs, T0, Pacing(), timers)
    assert decision.action == Action.ACCOUNT
    env.ex.execute(obs, decision, Pacing(), {"GB", "FR"})
    st = env.kube.statuses()[-1]
    assert st["energy"]["methods"]["host"] == "kepler"
    assert st["energy"]["hostKWh"] == pytest.approx(1.0)  # 3.6 MJ, no longer the estimate
    assert st["emissions"]["accountedJoules"] == {"n1": 3.6e6}  # GPU joules not counted again
