"""Whole-run jobs through the phase table and the executor: a resumable job is started, paused at the
end of its planned segment (its Job suspended, the work done recorded), resumed at its next segment
(the same Job unsuspended, never a new one), and every restart in between is recognised from the Job's
own annotations. Real planner, real GPU model, the shared stand-in world (tests/fakes)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from greenjobs.api.models import GreenTrainingJobSpec, Plan, PlannedSegment, Progress
from greenjobs.carbon.series import IntensitySeries
from greenjobs.controller.decide import Action, Pacing
from greenjobs.planning import run_plan
from tests.fakes.operator_world import T0, Env, H, body, view

CLEAN, DIRTY = 50.0, 400.0
RESUMABLE = {"resumable": True, "resumeOverhead": "0s", "minRunDuration": "0s"}
# Two hours of work, done by 16:00; clean 12-13 and 15-16 only: the best plan pauses through 13-15.
TIMING = {"estimatedDuration": "2h", "deadline": "2026-11-23T16:00:00Z"}


@pytest.fixture
def env() -> Env:
    e = Env()
    hourly = [CLEAN, DIRTY, DIRTY, CLEAN, CLEAN, CLEAN, CLEAN]
    e.ex.provider.series["FR"] = IntensitySeries.from_points([(T0 + i * H, v) for i, v in enumerate(hourly)])  # type: ignore[attr-defined]
    return e


def job(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"timing": TIMING, "placement": {"zones": ["FR"]}, "interruption": RESUMABLE}
    fields.update(spec)
    return body(status, **fields)


def conds(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in st.get("conditions") or []}


def test_plan_runs_the_clean_hours_and_pauses_through_the_dirty_ones(env: Env) -> None:
    action, _ = env.step(job())
    assert action == Action.PLAN
    st = env.kube.statuses()[-1]
    assert st["phase"] == "Running"  # the first clean hour is now
    segs = [(s["start"], s["end"]) for s in st["plan"]["segments"]]
    assert segs == [("2026-11-23T12:00:00Z", "2026-11-23T13:00:00Z"), ("2026-11-23T15:00:00Z", "2026-11-23T16:00:00Z")]
    assert st["plan"]["expectedSavingsPercent"] > 50  # vs straight through 12-14 (half of it dirty)
    assert (st["progress"]["segments"], st["progress"]["runningSince"]) == (1, "2026-11-23T12:00:00Z")


def _running(env: Env) -> dict[str, Any]:
    env.step(job())
    return env.kube.statuses()[-1]


def test_at_the_end_of_its_segment_the_job_is_suspended_and_its_work_recorded(env: Env) -> None:
    st = _running(env)
    env.kube.calls.clear()
    env.clock.now = T0 + H
    action, _ = env.step(job(st), view(suspended=False), Pacing(last_power=T0 + H, last_account=T0 + H))
    assert action == Action.PAUSE
    [patch] = [c[1] for c in env.kube.calls if c[0] == "patch"]
    assert patch["spec"]["suspend"] is True
    assert patch["metadata"]["annotations"]["greenjobs.dev/paused-at"] == "2026-11-23T13:00:00Z"
    paused = env.kube.statuses()[-1]
    assert paused["phase"] == "Paused" and paused["plan"]["scheduledStart"] == "2026-11-23T15:00:00Z"
    p = paused["progress"]
    assert (p["workDoneSeconds"], p["percent"], p["interruptions"], p["runningSince"]) == (3600.0, 50, 1, None)
    c = conds(paused)["Paused"]
    assert c["status"] == "True" and "2026-11-23T15:00:00Z" in c["message"]
    assert "create" not in env.kube.writes() and [e.reason for e in env.events][-1] == "Paused"


def _paused(env: Env) -> dict[str, Any]:
    st = _running(env)
    env.clock.now = T0 + H
    env.step(job(st), view(suspended=False), Pacing(last_power=T0 + H, last_account=T0 + H))
    merged = {**st, **env.kube.statuses()[-1]}
    env.kube.calls.clear()
    return merged


def test_a_paused_job_waits_then_resumes_its_own_job_at_the_next_segment(env: Env) -> None:
    st = _paused(env)
    env.clock.now = T0 + 2 * H
    action, done = env.step(job(st), view())
    assert action == Action.NOTHING and not env.kube.writes() and done.requeue_after == H
    env.clock.now = T0 + 3 * H
    action, _ = env.step(job(st), view())
    assert action == Action.UNPAUSE
    [patch] = [c[1] for c in env.kube.calls if c[0] == "patch"]
    assert patch["spec"]["suspend"] is False and "create" not in env.kube.writes()
    resumed = env.kube.statuses()[-1]
    assert resumed["phase"] == "Running"
    assert (resumed["progress"]["segments"], resumed["progress"]["runningSince"]) == (2, "2026-11-23T15:00:00Z")
    assert conds(resumed)["Paused"]["status"] == "False"
    assert "startTime" not in resumed  # the first start stays the start: the job is never run anew


def test_a_pause_whose_status_write_was_lost_is_recorded_from_the_jobs_annotation(env: Env) -> None:
    st = _running(env)
    env.clock.now = T0 + H + timedelta(minutes=3)  # restarted after suspending, before writing Paused
    paused_job = view(suspended=True, started_at="2026-11-23T12:00:00Z", paused_at="2026-11-23T13:00:00Z")
    action, _ = env.step(job(st), paused_job)
    assert action == Action.RECORD_SUSPENDED
    rec = env.kube.statuses()[-1]
    assert rec["phase"] == "Paused" and rec["progress"]["workDoneSeconds"] == pytest.approx(3600.0)
    assert rec["plan"]["scheduledStart"] == "2026-11-23T15:00:00Z"
    assert "JobSuspended" not in {e.reason for e in env.events}  # not taken for someone else's


def test_a_resume_whose_status_write_was_lost_is_adopted_with_its_real_start(env: Env) -> None:
    st = _paused(env)
    env.clock.now = T0 + 3 * H + timedelta(minutes=2)
    action, _ = env.step(job(st), view(suspended=False, started_at="2026-11-23T15:00:00Z"))
    assert action == Action.ADOPT_RUNNING
    rec = env.kube.statuses()[-1]
    assert rec["phase"] == "Running" and rec["progress"]["runningSince"] == "2026-11-23T15:00:00Z"
    assert rec["progress"]["segments"] == 2 and "startTime" not in rec


def test_a_job_made_non_resumable_while_running_is_never_paused(env: Env) -> None:
    st = _running(env)
    env.clock.now = T0 + H
    gtj = job(st)
    del gtj["spec"]["interruption"]
    gtj["metadata"]["generation"] = 2
    action, _ = env.step(gtj, view(suspended=False))
    assert action == Action.MONITOR
    assert not [c for c in env.kube.calls if c[0] == "patch"]


KUEUE_TEMPLATE = {
    "metadata": {"labels": {"kueue.x-k8s.io/queue-name": "q"}},
    "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}},
}


def test_a_kueue_managed_job_is_paused_and_resumed_through_its_workload(env: Env) -> None:
    """Kueue owns its suspension: the pause deactivates its Workload (quota released, the same
    Workload keeps its place in the queue) and the resume activates it again."""
    env.step(job(jobTemplate=KUEUE_TEMPLATE))
    st = env.kube.statuses()[-1]
    assert len(st["plan"]["segments"]) == 2
    env.kube.calls.clear()
    env.clock.now = T0 + H
    action, _ = env.step(job(st, jobTemplate=KUEUE_TEMPLATE), view(suspended=False, started_at="2026-11-23T12:00:00Z"))
    assert action == Action.PAUSE
    patches = [c[1] for c in env.kube.calls if c[0] == "patch"]
    assert all("suspend" not in (p.get("spec") or {}) for p in patches)  # never suspended by greenjobs
    assert patches[0]["metadata"]["annotations"]["greenjobs.dev/paused-at"] == "2026-11-23T13:00:00Z"
    assert ("workload", {"job_uid": "j1", "active": False}) in env.kube.calls
    paused = {**st, **env.kube.statuses()[-1]}
    assert paused["phase"] == "Paused"
    # Kueue has not stopped it yet: no adoption as Running, no second pause.
    still = view(suspended=False, started_at="2026-11-23T12:00:00Z", paused_at="2026-11-23T13:00:00Z")
    action, _ = env.step(job(paused, jobTemplate=KUEUE_TEMPLATE), still)
    assert action == Action.NOTHING
    env.kube.calls.clear()
    env.clock.now = T0 + 3 * H
    stopped = view(suspended=True, started_at="2026-11-23T12:00:00Z", paused_at="2026-11-23T13:00:00Z")
    action, _ = env.step(job(paused, jobTemplate=KUEUE_TEMPLATE), stopped)
    assert action == Action.UNPAUSE
    assert ("workload", {"job_uid": "j1", "active": True}) in env.kube.calls
    resumed = {**paused, **env.kube.statuses()[-1]}
    assert resumed["phase"] == "Running"
    # Queued in Kueue until it is admitted again: neither "suspended outside greenjobs" nor paused.
    env.kube.calls.clear()
    queued = view(suspended=True, started_at="2026-11-23T15:00:00Z", paused_at="2026-11-23T13:00:00Z")
    action, _ = env.step(job(resumed, jobTemplate=KUEUE_TEMPLATE), queued)
    assert action == Action.NOTHING and not env.kube.writes()


def test_deadline_paced_caps_follow_the_plan_lowest_where_dirtiest(env: Env) -> None:
    power = {"policy": "DeadlinePaced", "minCapWatts": 200, "maxCapWatts": 400}
    timing = {"estimatedDuration": "2h", "deadline": "2026-11-23T15:00:00Z"}
    env.step(job(power=power, timing=timing, interruption=None))
    st = env.kube.statuses()[-1]
    segs = st["plan"]["segments"]

    def cap(t: str) -> int:
        return next(s["capWatts"] for s in segs if s["start"] <= t < s["end"])

    clean, dirty = cap("2026-11-23T12:30:00Z"), cap("2026-11-23T13:30:00Z")
    assert 200 <= dirty < clean <= 400  # slowed most where dirtiest, yet done by the deadline
    assert segs[0]["start"] == "2026-11-23T12:00:00Z" and segs[-1]["end"] <= "2026-11-23T15:00:00Z"
    # The agents are asked for the plan's cap of the moment.
    assert st["power"]["targetCapWatts"] == clean and st["power"]["reason"] == "DeadlinePaced"


def test_reported_progress_corrects_the_model() -> None:
    spec = GreenTrainingJobSpec.model_validate(
        {"jobTemplate": {"spec": {"template": {}}}, "timing": TIMING, "interruption": RESUMABLE}
    )
    progress = Progress(work_done_seconds=600.0, segments=1, running_since=T0)
    done, source = run_plan.work_done(spec, Plan(), progress, T0 + H, None)
    assert (done, source) == (600.0 + 3600.0, "model")
    done, source = run_plan.work_done(spec, Plan(), progress, T0 + H, 0.25)
    assert (done, source) == (1800.0, "reported")
    assert run_plan.parse_reported("42%") == pytest.approx(0.42) and run_plan.parse_reported("x") is None
    assert run_plan.parse_reported("1.5") is None


def test_a_resume_pays_its_overhead_before_any_work_counts() -> None:
    seg = [PlannedSegment(start=T0, end=T0 + H, cap_watts=None)]
    assert run_plan.run_work(seg, T0, T0 + H, 400.0, timedelta(minutes=10)) == pytest.approx(3000.0)
    capped = [PlannedSegment(start=T0, end=T0 + H, cap_watts=200)]
    assert run_plan.run_work(capped, T0, T0 + H, 400.0, timedelta(0)) < 3600.0


def test_a_long_paced_plan_is_kept_within_the_status_limit_and_planned_again_at_its_end(env: Env) -> None:
    # A week paced in 15-minute slots against an alternating forecast: more segments than status holds.
    week = [(T0 + i * timedelta(minutes=15), 50.0 if i % 2 else 400.0) for i in range(4 * 24 * 9)]
    env.ex.provider.series["FR"] = IntensitySeries.from_points(week)  # type: ignore[attr-defined]
    power = {"policy": "DeadlinePaced", "minCapWatts": 200, "maxCapWatts": 400}
    timing = {"estimatedDuration": "150h", "deadline": "2026-11-30T12:00:00Z"}
    env.step(job(power=power, timing=timing, interruption=None))
    st = env.kube.statuses()[-1]
    segs = st["plan"]["segments"]
    assert len(segs) == run_plan.MAX_STATUS_SEGMENTS < 512
    assert st["plan"]["finishesAt"] > segs[-1]["end"]
    plan = Plan.model_validate(st["plan"])
    end = plan.segments[-1].end  # type: ignore[index]
    assert not run_plan.listed_end_reached(plan, end - timedelta(seconds=1))
    assert run_plan.listed_end_reached(plan, end)
    # There it is planned again (never paused: it is not resumable) and runs on with the next segments.
    env.clock.now = end
    running = {**st, "phase": "Running", "startTime": segs[0]["start"]}
    gtj = job(running, power=power, timing=timing, interruption=None)
    action, _ = env.step(gtj, view(suspended=False), Pacing(last_power=end, last_account=end))
    assert action == Action.PAUSE
    assert not [c for c in env.kube.calls if c[0] == "patch" and c[1].get("spec", {}).get("suspend")]
    replanned = env.kube.statuses()[-1]
    assert replanned["plan"]["segments"][0]["start"] >= segs[-1]["end"] and "phase" not in replanned


def test_a_job_over_budget_while_paused_is_not_resumed_but_suspended_by_its_budget(env: Env) -> None:
    st = _paused(env)
    budget = {"maxEnergyKWh": 0.5, "action": "Suspend"}
    over = {**st, "energy": {"kWh": 0.8}, "emissions": {"grams": 10.0}}
    env.clock.now = T0 + 3 * H
    action, _ = env.step(job(over, budget=budget), view())
    assert action == Action.UNPAUSE
    assert not [c for c in env.kube.calls if c[0] == "patch"]  # not resumed
    rec = env.kube.statuses()[-1]
    assert rec["phase"] == "Suspended" and conds(rec)["BudgetExceeded"]["reason"] == "Suspended"
    # Raised: the budget's resume runs it again and counts the run.
    env.kube.calls.clear()
    action, _ = env.step(job({**over, **rec}, budget={"maxEnergyKWh": 5, "action": "Suspend"}), view())
    assert action == Action.RESUME
    resumed = env.kube.statuses()[-1]
    assert resumed["phase"] == "Running" and resumed["progress"]["segments"] == 2


def test_a_workload_deleted_while_paused_ends_the_job_and_is_never_created_again(env: Env) -> None:
    st = _paused(env)
    env.clock.now = T0 + 2 * H
    action, _ = env.step(job(st), view(suspended=True, deleting=True))
    assert action == Action.CANCELLED
    rec = env.kube.statuses()[-1]
    assert rec["phase"] == "Failed" and conds(rec)["Failed"]["reason"] == "JobDeleted"
    assert "create" not in env.kube.writes()


def test_a_template_edit_while_paused_is_acknowledged_not_applied(env: Env) -> None:
    st = _paused(env)
    env.clock.now = T0 + 2 * H
    edited = job(st, jobTemplate={"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "y"}]}}}})
    edited["metadata"]["generation"] = 2
    action, _ = env.step(edited, view())
    assert action == Action.ACK_SPEC
    rec = env.kube.statuses()[-1]
    assert conds(rec)["SpecApplied"]["reason"] == "TemplateChangedAfterStart"
    assert set(env.kube.writes()) == {"status"}  # no delete, no create: the paused Job stays the Job


def test_a_paced_cap_changes_at_the_plans_boundary_not_a_power_interval_later(env: Env) -> None:
    power = {"policy": "DeadlinePaced", "minCapWatts": 200, "maxCapWatts": 400}
    timing = {"estimatedDuration": "2h", "deadline": "2026-11-23T15:00:00Z"}
    env.step(job(power=power, timing=timing, interruption=None))
    st = env.kube.statuses()[-1]
    segs = st["plan"]["segments"]
    boundary = next(s for s in segs if s["capWatts"] != segs[0]["capWatts"])
    at = Plan.model_validate(st["plan"]).segments[segs.index(boundary)].start  # type: ignore[index]
    # The monitor's look is requeued to the boundary...
    env.clock.now = at - timedelta(minutes=10)
    gtj = job(st, power=power, timing=timing, interruption=None)
    _, done = env.step(gtj, view(suspended=False), Pacing(last_power=env.clock.now, last_account=env.clock.now))
    assert done.requeue_after is not None and done.requeue_after <= timedelta(minutes=10)
    # ...and there the agents are asked for the next cap, though the power interval has not passed.
    env.clock.now = at
    env.step(gtj, view(suspended=False), Pacing(last_power=at - timedelta(seconds=30), last_account=at))
    assert env.kube.statuses()[-1]["power"]["targetCapWatts"] == boundary["capWatts"]
