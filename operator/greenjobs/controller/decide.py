"""The phase table: one pure decision per look at a GreenTrainingJob.

(phase, state of the owned Job) -> the one thing to do, then a few rules on top (spec changes, due
times). Which phase may create, start, suspend, account or finish a workload is readable here and
nowhere else; the executor only carries decisions out. docs/architecture.md shows the same table.

The rules that make the lifecycle correct by construction:
- Only phases that never ran (no phase yet, Pending, Deferred) may create a workload, and only while
  status has no startTime: a finished, running or suspended job never gets a new Job, whatever
  happened to the old one.
- A Job that vanishes (or is being deleted) before it ever ran is re-created; one that vanishes after
  it ran ends the job (Failed: JobDeleted / JobLost), never a re-run.
- An outcome is recorded before our finalizer lets the Job go (TTL 0, deletion by hand, GC).
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum

from greenjobs.api.constants import Cond, Phase
from greenjobs.api.durations import format_duration, parse_time
from greenjobs.planning import run_plan

from .jobs import kueue_managed
from .observe import JobState, Observed, template_hash, workload_template


class Action(Enum):
    NOTHING = "Nothing"
    PLAN = "Plan"  # plan, then create the Job (suspended, or started when due) or adopt ours
    RECREATE = "Recreate"  # the Job of a job that never ran is gone: plan and create it again
    REPLACE = "Replace"  # the template changed before the start: delete the unstarted Job
    START = "Start"  # the planned start is due: place and unsuspend the Job
    REPLAN = "Replan"  # deferred: plan again with fresh forecasts
    ADOPT_RUNNING = "AdoptRunning"  # the Job runs while status says otherwise: record Running
    MONITOR = "Monitor"  # running: power target, energy accounting, budget, overrun
    RESUME = "Resume"  # suspended by its budget, which now allows it: unsuspend its own Job
    RECORD_SUSPENDED = "RecordSuspended"  # running phase, suspended Job: record Suspended
    FINISH = "Finish"  # the Job has an outcome: account, record it, then release the Job
    CANCELLED = "Cancelled"  # the Job is being deleted after it ran: Failed (JobDeleted), no re-run
    LOST = "Lost"  # the Job is gone after it ran, outcome unknown: Failed (JobLost), no re-run
    RELEASE = "Release"  # remove our finalizer from the Job: nothing more to read from it
    ACCOUNT = "Account"  # finished: fold in energy the agents reported late
    ACK_SPEC = "AckSpec"  # a spec change that cannot apply now: observedGeneration + condition
    SETTLE = "Settle"  # finished and quiet for settleAfter: label it out of the operator's watch
    PAUSE = "Pause"  # its whole-run plan pauses it now: re-plan the rest; suspend it unless that runs on
    UNPAUSE = "Unpause"  # paused, and its plan's next segment is due: re-plan the rest, resume it


class Effect(Enum):
    """What carrying out a decision may do. The executor checks each write against these (a write a
    decision does not list is refused as a bug), and the fresh read is derived from them."""

    CREATE = "Create"  # create the workload
    START = "Start"  # place and unsuspend it (a start, a re-plan's start, a resume)
    SUSPEND = "Suspend"  # suspend it (a budget)
    DELETE = "Delete"  # delete the unstarted workload (its template changed)
    END = "End"  # record the outcome (Succeeded / Failed)
    RELEASE = "Release"  # let our finalizer go
    PLAN = "Plan"  # write status.plan and the planning conditions
    STATUS = "Status"  # power, energy, conditions: fields no other writer's decision rests on
    SETTLE = "Settle"  # label it out of the watch


# Effects on the workload itself (or its outcome): a decision that may have one is carried out only on
# what the API server says now (a fresh read of the GTJ and its workload), so a stale cache can never
# start an old template, re-run a job, or lose one.
WORKLOAD = frozenset({Effect.CREATE, Effect.START, Effect.SUSPEND, Effect.DELETE, Effect.END, Effect.RELEASE})
_E = Effect
EFFECTS: dict[Action, frozenset[Effect]] = {
    Action.NOTHING: frozenset(),
    Action.PLAN: frozenset({_E.CREATE, _E.START, _E.PLAN, _E.STATUS}),
    Action.RECREATE: frozenset({_E.CREATE, _E.START, _E.PLAN, _E.STATUS}),
    Action.REPLACE: frozenset({_E.DELETE, _E.RELEASE}),
    Action.START: frozenset({_E.START, _E.PLAN, _E.STATUS}),  # no room: planned again instead
    Action.REPLAN: frozenset({_E.START, _E.PLAN, _E.STATUS}),  # a plan that says "now" starts it
    Action.ADOPT_RUNNING: frozenset({_E.STATUS}),
    Action.MONITOR: frozenset({_E.STATUS}),  # + SUSPEND when its budget may suspend it (effects_of)
    Action.RESUME: frozenset({_E.START, _E.STATUS}),
    Action.RECORD_SUSPENDED: frozenset({_E.STATUS}),
    Action.FINISH: frozenset({_E.END, _E.RELEASE, _E.STATUS}),
    Action.CANCELLED: frozenset({_E.END, _E.RELEASE, _E.STATUS}),
    Action.LOST: frozenset({_E.END, _E.RELEASE, _E.STATUS}),
    Action.RELEASE: frozenset({_E.RELEASE}),
    Action.ACCOUNT: frozenset({_E.STATUS}),
    Action.ACK_SPEC: frozenset({_E.STATUS}),
    Action.SETTLE: frozenset({_E.SETTLE}),
    Action.PAUSE: frozenset({_E.SUSPEND, _E.PLAN, _E.STATUS}),
    Action.UNPAUSE: frozenset({_E.START, _E.PLAN, _E.STATUS}),
}


def effects_of(action: Action, obs: Observed) -> frozenset[Effect]:
    """What this action may do to this job: the table's effects, plus a budget's suspension where the
    job's budget says Suspend (accounting then may suspend it, so it is read afresh first)."""
    effects = EFFECTS[action]
    if action in (Action.MONITOR, Action.RECORD_SUSPENDED) and _may_suspend(obs):
        effects |= {Effect.SUSPEND}
    return effects


def _may_suspend(obs: Observed) -> bool:
    budget = obs.spec.get("budget") if isinstance(obs.spec, Mapping) else None
    return isinstance(budget, Mapping) and budget.get("action") == "Suspend"


# The actions that may touch a workload, derived from their effects (not listed by hand).
RISKY = frozenset(a for a, e in EFFECTS.items() if e & WORKLOAD)

_NEW, _DEFERRED, _RUNNING, _SUSPENDED, _PAUSED, _DONE = "New", "Deferred", "Running", "Suspended", "Paused", "Done"
S = JobState

# The table. Rows: phase; columns: the owned Job. Refinements (spec changes, due times, budgets) below.
TABLE: dict[tuple[str, JobState], Action] = {
    (_NEW, S.MISSING): Action.PLAN,
    (_NEW, S.SUSPENDED): Action.PLAN,  # ours from before a restart: adopt it
    (_NEW, S.RUNNING): Action.PLAN,  # we started it and died before writing status: adopt, Running
    (_NEW, S.SUCCEEDED): Action.FINISH,
    (_NEW, S.FAILED): Action.FINISH,
    (_NEW, S.DELETING_UNSTARTED): Action.RELEASE,  # never ran: let it go, re-create when gone
    (_NEW, S.DELETING): Action.CANCELLED,
    (_DEFERRED, S.MISSING): Action.RECREATE,
    (_DEFERRED, S.SUSPENDED): Action.NOTHING,  # START / REPLAN when due (below)
    (_DEFERRED, S.RUNNING): Action.ADOPT_RUNNING,
    (_DEFERRED, S.SUCCEEDED): Action.FINISH,
    (_DEFERRED, S.FAILED): Action.FINISH,
    (_DEFERRED, S.DELETING_UNSTARTED): Action.RELEASE,
    (_DEFERRED, S.DELETING): Action.CANCELLED,
    (_RUNNING, S.MISSING): Action.LOST,
    (_RUNNING, S.SUSPENDED): Action.RECORD_SUSPENDED,
    (_RUNNING, S.RUNNING): Action.MONITOR,
    (_RUNNING, S.SUCCEEDED): Action.FINISH,
    (_RUNNING, S.FAILED): Action.FINISH,
    (_RUNNING, S.DELETING_UNSTARTED): Action.CANCELLED,
    (_RUNNING, S.DELETING): Action.CANCELLED,
    (_SUSPENDED, S.MISSING): Action.LOST,
    (_SUSPENDED, S.SUSPENDED): Action.NOTHING,  # RESUME when the budget allows (below)
    (_SUSPENDED, S.RUNNING): Action.ADOPT_RUNNING,
    (_SUSPENDED, S.SUCCEEDED): Action.FINISH,
    (_SUSPENDED, S.FAILED): Action.FINISH,
    (_SUSPENDED, S.DELETING_UNSTARTED): Action.CANCELLED,
    (_SUSPENDED, S.DELETING): Action.CANCELLED,
    # Paused by its plan: pods gone, progress kept; resumed at its next segment (UNPAUSE, below).
    (_PAUSED, S.MISSING): Action.LOST,
    (_PAUSED, S.SUSPENDED): Action.NOTHING,
    (_PAUSED, S.RUNNING): Action.ADOPT_RUNNING,  # our resume whose status write was lost, or a user's
    (_PAUSED, S.SUCCEEDED): Action.FINISH,
    (_PAUSED, S.FAILED): Action.FINISH,
    (_PAUSED, S.DELETING_UNSTARTED): Action.CANCELLED,
    (_PAUSED, S.DELETING): Action.CANCELLED,
    # Finished is final: nothing is ever created or started; the Job is only let go.
    (_DONE, S.MISSING): Action.ACCOUNT,
    (_DONE, S.SUSPENDED): Action.RELEASE,
    (_DONE, S.RUNNING): Action.RELEASE,
    (_DONE, S.SUCCEEDED): Action.RELEASE,
    (_DONE, S.FAILED): Action.RELEASE,
    (_DONE, S.DELETING_UNSTARTED): Action.RELEASE,
    (_DONE, S.DELETING): Action.RELEASE,
}


def phase_row(phase: str | None) -> str:
    if phase in (None, "", Phase.PENDING):
        return _NEW
    if phase in Phase.FINISHED:
        return _DONE
    return {
        Phase.DEFERRED: _DEFERRED,
        Phase.RUNNING: _RUNNING,
        Phase.SUSPENDED: _SUSPENDED,
        Phase.PAUSED: _PAUSED,
    }[phase]


@dataclass(frozen=True)
class Pacing:
    """In-memory pacing of one job (a restart only re-plans or re-caps once more, early)."""

    last_replan: datetime | None = None
    last_power: datetime | None = None
    last_account: datetime | None = None


@dataclass(frozen=True)
class Timers:
    tick: timedelta
    replan: timedelta
    power: timedelta
    account: timedelta
    settle: timedelta | None = None  # how long a finished job stays watched; None: for ever
    # With a measured host-energy source (Kepler, RAPL): how often a finished job whose host energy is
    # still a fallback estimate looks for the measured figure, until it settles. None: no such source.
    host_retry: timedelta | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    why: str
    requeue_after: timedelta | None = None  # look again after this long (None: only on a change)
    ack_spec: bool = False  # also record the new generation (a spec change that needs no new plan)
    effects: frozenset[Effect] = frozenset()  # what carrying it out may do (set by decide)

    @property
    def risky(self) -> bool:
        """It may touch the workload: carried out only on a fresh read."""
        return bool(self.effects & WORKLOAD)


def decide(obs: Observed, now: datetime, pacing: Pacing, timers: Timers) -> Decision:
    """The one thing to do now for this GreenTrainingJob, when to look again, and what doing it may
    do (its effects)."""
    d = _decide(obs, now, pacing, timers)
    effects = effects_of(d.action, obs)
    if d.ack_spec:
        effects |= {Effect.STATUS}
    return replace(d, effects=effects)


def _decide(obs: Observed, now: datetime, pacing: Pacing, timers: Timers) -> Decision:
    row = phase_row(obs.phase)
    job = obs.job_state
    if obs.deleting:
        # The GTJ is going: garbage collection deletes its Job; only our finalizer could hold it.
        held = obs.job is not None and obs.job.finalizer
        return Decision(Action.RELEASE if held else Action.NOTHING, "the GreenTrainingJob is being deleted")
    action = TABLE[(row, job)]
    why = f"{row} phase, Job {job.value}"

    if action in (Action.PLAN, Action.RECREATE) and obs.ever_started:
        # Status says it ran: whatever the phase claims, never create it again.
        return Decision(Action.LOST, f"{why}, and it ran before (status.startTime): never re-run")
    if row == _NEW:
        if action == Action.PLAN and obs.invalid:
            return Decision(Action.NOTHING, "refused at this generation: waiting for a spec change")
        if action == Action.PLAN and job == S.SUSPENDED and _replaced(obs):
            return Decision(Action.REPLACE, "template changed before the start: replace the unstarted Job")
        return Decision(action, why, timers.tick if action == Action.PLAN else None)
    if row == _DEFERRED:
        return _deferred(obs, action, why, now, pacing, timers)
    if row == _RUNNING and action == Action.RECORD_SUSPENDED and _queued_in_kueue(obs):
        # Started (or resumed) and handed to Kueue, which unsuspends it when it admits it.
        return Decision(Action.NOTHING, "started: queued in Kueue until it is admitted", timers.replan)
    if row == _PAUSED and action == Action.ADOPT_RUNNING and obs.job is not None and obs.job.pause_in_force:
        # Our pause of a Kueue-managed workload: Kueue stops it once its Workload is deactivated.
        return Decision(Action.NOTHING, "pausing: waiting for Kueue to stop the workload", timers.tick)
    if row == _RUNNING and action == Action.MONITOR:
        plan = obs.plan
        if _resumable(obs) and run_plan.pause_due(plan, now):
            return Decision(Action.PAUSE, "its whole-run plan pauses it now", timers.tick)
        if run_plan.listed_end_reached(plan, now):  # PAUSE plans the rest; it runs on unless that pauses
            return Decision(Action.PAUSE, "the segments in status end here: plan the rest", timers.tick)
        requeue = min(_monitor_requeue(now, pacing, timers), _until(now, run_plan.next_boundary(plan, now)))
        return Decision(action, why, max(requeue, timedelta(seconds=1)), ack_spec=obs.spec_changed)
    if row == _PAUSED and action == Action.NOTHING:
        if _unaccounted(obs):
            return Decision(Action.ACCOUNT, "paused: fold in the energy its agents reported for the last run")
        resume = _scheduled_start(obs)
        if resume is None or now >= resume:
            return Decision(Action.UNPAUSE, "its whole-run plan resumes it now", timers.tick)
        return Decision(Action.ACK_SPEC if obs.spec_changed else Action.NOTHING, why, _until(now, resume))
    if row == _SUSPENDED and action == Action.NOTHING:
        if _unaccounted(obs):
            return Decision(Action.ACCOUNT, "suspended: fold in the energy its agents reported last")
        if suspended_by_budget(obs):
            # Re-checked against the budget by the executor: a raised budget resumes the job.
            return Decision(Action.RESUME, "suspended by its budget: resume if the budget now allows")
        return Decision(Action.ACK_SPEC if obs.spec_changed else Action.NOTHING, why)
    if row == _DONE:
        if action == Action.RELEASE and not (obs.job is not None and obs.job.finalizer):
            action = Action.ACCOUNT if _unaccounted(obs) else Action.NOTHING
        elif action == Action.ACCOUNT and not _unaccounted(obs):
            action = Action.NOTHING
        if action == Action.NOTHING and obs.spec_changed:
            action = Action.ACK_SPEC
        if action == Action.NOTHING:
            settle = _settle(obs, now, timers)
            if timers.host_retry is not None and settle.action == Action.NOTHING and _host_estimated(obs):
                # Its host energy is still the fallback estimate: look for the measured one (a
                # Prometheus outage may have outlasted the job) until it settles.
                wait = min(timers.host_retry, settle.requeue_after or timers.host_retry)
                if not obs.settled:
                    return Decision(Action.ACCOUNT, "finished: its host energy is still an estimate", wait)
            return settle
        return Decision(action, why)
    if action in (Action.ADOPT_RUNNING, Action.RECORD_SUSPENDED) or obs.spec_changed:
        return Decision(action, why, timers.tick, ack_spec=obs.spec_changed)
    return Decision(action, why, timers.tick if row in (_RUNNING, _SUSPENDED) else None)


def _deferred(obs: Observed, action: Action, why: str, now: datetime, pacing: Pacing, timers: Timers) -> Decision:
    if action != Action.NOTHING:
        return Decision(action, why, timers.tick)
    if obs.spec_changed:
        if _replaced(obs):
            return Decision(Action.REPLACE, "template changed before the start: replace the unstarted Job")
        return Decision(Action.REPLAN, "spec changed while deferred: plan again", timers.tick)
    start = _scheduled_start(obs)
    if start is not None and now >= start:
        return Decision(Action.START, "the planned start is due")
    next_replan = (pacing.last_replan + timers.replan) if pacing.last_replan else now
    if now >= next_replan:
        return Decision(Action.REPLAN, "re-plan interval passed", min(timers.replan, _until(now, start)))
    return Decision(Action.NOTHING, "waiting for the planned start", min(_until(now, next_replan), _until(now, start)))


def _monitor_requeue(now: datetime, pacing: Pacing, timers: Timers) -> timedelta:
    due = [timers.tick]
    for last, every in ((pacing.last_power, timers.power), (pacing.last_account, timers.account)):
        if last is not None:
            due.append(_until(now, last + every))
    return max(min(due), timedelta(seconds=1))


def _until(now: datetime, t: datetime | None) -> timedelta:
    if t is None:
        return timedelta.max
    return max(t - now, timedelta(0))


def suspended_by_budget(obs: Observed) -> bool:
    return any(
        c_.get("type") == Cond.BUDGET_EXCEEDED and c_.get("status") == "True" and c_.get("reason") == "Suspended"
        for c_ in obs.conditions
    )


def _resumable(obs: Observed) -> bool:
    """The spec (as it is now) lets greenjobs pause it."""
    interruption = obs.spec.get("interruption") if isinstance(obs.spec, Mapping) else None
    return isinstance(interruption, Mapping) and interruption.get("resumable") is True


def _queued_in_kueue(obs: Observed) -> bool:
    """A Kueue-managed workload greenjobs started (or resumed) that Kueue has not admitted (yet)."""
    return kueue_managed(obs.spec) and obs.job is not None and not obs.job.pause_in_force


def _scheduled_start(obs: Observed) -> datetime | None:
    raw = (obs.status.get("plan") or {}).get("scheduledStart")
    return parse_time(raw) if raw else None


def _replaced(obs: Observed) -> bool:
    if obs.job is None or obs.job.template_hash is None:
        return False
    return obs.job.template_hash != template_hash(workload_template(obs.spec))


def _settle(obs: Observed, now: datetime, timers: Timers) -> Decision:
    """A finished job with nothing left to do leaves the watch once late energy reports had time to come."""
    if obs.settled or timers.settle is None:
        return Decision(Action.NOTHING, "finished and settled")
    finished = _finished_at(obs)
    due = finished + timers.settle if finished else now
    if now >= due:
        return Decision(Action.SETTLE, f"finished {format_duration(timers.settle)} ago or more: nothing left to watch")
    return Decision(Action.NOTHING, "finished: watching for late energy reports", _until(now, due))


def _finished_at(obs: Observed) -> datetime | None:
    """When the job finished: status.completionTime, else its last condition change."""
    if obs.status.get("completionTime"):
        return parse_time(obs.status["completionTime"])
    times = [parse_time(c_["lastTransitionTime"]) for c_ in obs.conditions if c_.get("lastTransitionTime")]
    return max(times, default=None)


def _host_estimated(obs: Observed) -> bool:
    """GPU energy was accounted but its host part is the fallback estimate (or none), not measured."""
    energy = obs.status.get("energy") or {}
    method = (energy.get("methods") or {}).get("host")
    return bool(energy.get("nodes")) and method in (None, "none", "watts-per-gpu")


def _unaccounted(obs: Observed) -> bool:
    """Energy reported by an agent that is not yet in the totals (agents report after the pods end)."""
    nodes = (obs.status.get("energy") or {}).get("nodes") or {}
    accounted = (obs.status.get("emissions") or {}).get("accountedJoules") or {}
    # An empty entry (no joules: an agent's placeholder, or one cleared) has nothing to account: it
    # must not keep a finished job from ever settling.
    return any(
        isinstance(v, Mapping) and v.get("joules") is not None and v["joules"] > accounted.get(n, -1)
        for n, v in nodes.items()
    )
