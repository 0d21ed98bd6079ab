"""Carries out one decision of the phase table: the only place where the operator writes.

Order of writes, so that a crash between any two leaves something the table resumes from: the Job
first (create / start / suspend), then the GTJ's status (conditional on the resourceVersion read when
the decision changes the phase), then Events, then the Job's finalizer is let go.
"""

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from greenjobs.accounting.energy import BudgetVerdict, check_budget
from greenjobs.accounting.footprint import FootprintFactors, account_footprint, job_ref
from greenjobs.accounting.host_energy import HostEnergySource
from greenjobs.accounting.past import intensity_of_use
from greenjobs.api.conditions import CondUpdate, apply_conditions
from greenjobs.api.constants import ANNOTATION_PAUSED_AT, Cond, Phase
from greenjobs.api.durations import format_time, parse_time
from greenjobs.api.models import Emissions, GreenTrainingJobSpec, NodeEnergy, Plan, PowerStatus, Progress
from greenjobs.carbon.providers.base import Forecast, ForecastProvider, ProviderError
from greenjobs.config import OperatorConfig
from greenjobs.metrics import OperatorMetrics
from greenjobs.planning import run_plan
from greenjobs.planning.decisions import Event, PlanOutcome, decide_plan, same_plan
from greenjobs.planning.whole_run import WholeRunPlan
from greenjobs.power import target_cap
from greenjobs.workloads import adapter_for

from .decide import Action, Decision, Effect, Pacing, suspended_by_budget
from .fleet import FleetCoordinator
from .jobs import adapter_of, build_job, kueue_managed, start_patches, template_hash, workload_template
from .kube import Kube, api_error_message
from .observe import Observed
from .pausing import RunPlanner, pause_message, plan_patch, progress_of, progress_patch

log = logging.getLogger(__name__)

EmitEvent = Callable[[dict[str, Any], Event], None]


@dataclass
class Draft:
    """The status patch one decision builds up, with its Events (posted only once it is written)."""

    obs: Observed
    now: datetime
    status: dict[str, Any] = field(default_factory=dict)
    updates: list[CondUpdate] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    conditional: bool = False  # write only if nobody wrote the GTJ since it was read
    retry: bool = False  # refused for now: look again with backoff (the loop counts the attempts)
    effects: frozenset[Effect] | None = None  # what the decision may do (None: anything, e.g. in a bench)
    after_write: list[Callable[[], None]] = field(default_factory=list)  # metrics, once the write landed

    def may(self, effect: Effect) -> None:
        """Before a write: the decision must list it. A write it does not list would be done on a read
        the decision did not ask to be fresh: refused as a bug, never carried out."""
        if self.effects is not None and effect not in self.effects:
            raise UndeclaredEffect(
                f"{effect.value} is not an effect of this decision ({sorted(e.value for e in self.effects)})"
            )

    def cond(self, type_: str, status: str, reason: str, message: str) -> None:
        self.updates.append(CondUpdate(type_, status, reason, message))  # type: ignore[arg-type]

    def warn(self, type_: str, status: str, reason: str, message: str) -> None:
        """A condition and its Warning Event: the Event only when the condition changes (once per
        change, not once per look)."""
        self.cond(type_, status, reason, message)
        seen = next((c_ for c_ in self.obs.conditions if c_.get("type") == type_), None)
        if seen is None or (seen.get("status"), seen.get("reason"), seen.get("message")) != (status, reason, message):
            self.event("Warning", reason, message)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def merged_conditions(self) -> list[dict[str, Any]] | None:
        """The condition list after the updates, or None when they change nothing visible."""
        current = self.obs.conditions
        merged = apply_conditions(current, self.updates, self.now, self.obs.generation)
        before = {c_.get("type"): (c_.get("status"), c_.get("reason"), c_.get("message")) for c_ in current}
        after = {c_["type"]: (c_["status"], c_["reason"], c_["message"]) for c_ in merged}
        return merged if before != after else None


@dataclass
class Step:
    """What one execution carries between its parts."""

    spec: GreenTrainingJobSpec | None
    pacing: Pacing
    requeue: timedelta | None
    zones: Collection[str] | None


@dataclass(frozen=True)
class Done:
    body: dict[str, Any] | None  # the GTJ as written (for the cache), None when nothing was written
    pacing: Pacing
    requeue_after: timedelta | None = None
    retry: bool = False  # refused for now (RBAC, quota, admission): the loop requeues with backoff


@dataclass
class Executor:
    config: OperatorConfig
    provider: ForecastProvider
    kube: Kube
    metrics: OperatorMetrics
    clock: Callable[[], datetime]
    emit: EmitEvent
    factors: FootprintFactors = field(default_factory=FootprintFactors)
    host_source: HostEnergySource | None = None  # host (CPU, DRAM) energy per job; None: GPU only
    fleet: FleetCoordinator | None = None  # capacity-aware joint planning; None: each job alone

    # ------------------------------------------------------------------ entry point

    def execute(
        self, obs: Observed, decision: Decision, pacing: Pacing, zones_with_nodes: Collection[str] | None
    ) -> Done:
        a = decision.action
        if a == Action.NOTHING:
            return Done(None, pacing, decision.requeue_after)
        if a == Action.SETTLE:
            settled = self.kube.settle_gtj(obs.namespace, obs.name, obs.resource_version or "")
            if settled is not None:
                self.metrics.settled.inc()
            return Done(settled, pacing)
        d = Draft(obs, self.clock(), effects=decision.effects or None)
        step = Step(self._spec(d), pacing, decision.requeue_after, zones_with_nodes)
        handler = self._handlers().get(a)
        if handler is not None:
            handler(d, step)
        if decision.ack_spec or a == Action.ACK_SPEC:
            self._ack_spec(d)
        body = self._write(d)
        if a in (Action.FINISH, Action.CANCELLED, Action.LOST, Action.RELEASE) and obs.job is not None:
            # The outcome is in status (or was before): now the Job may go.
            d.may(Effect.RELEASE)
            kind = adapter_for(obs.job.api_version, obs.job.kind)
            self.kube.release_job(obs.namespace, obs.name, list(obs.job.finalizers), kind)
        return Done(body, step.pacing, step.requeue, retry=d.retry)

    def _handlers(self) -> dict[Action, Callable[[Draft, "Step"], None]]:
        return {
            Action.PLAN: self._do_plan,
            Action.RECREATE: self._do_plan,
            Action.REPLACE: self._do_replace,
            Action.START: self._do_start,
            Action.REPLAN: self._do_replan,
            Action.ADOPT_RUNNING: self._do_adopt_running,
            Action.MONITOR: self._do_monitor,
            Action.RESUME: self._do_resume,
            Action.RECORD_SUSPENDED: self._do_record_suspended,
            Action.FINISH: self._do_finish,
            Action.CANCELLED: self._do_cancelled,
            Action.LOST: self._do_lost,
            Action.ACCOUNT: lambda d, _: self._account(d, spec=None),
            Action.PAUSE: self._do_pause,
            Action.UNPAUSE: self._do_unpause,
        }

    def _do_plan(self, d: Draft, step: "Step") -> None:
        if step.spec is None:
            return
        step.pacing = replace(step.pacing, last_replan=d.now)
        recreate = d.obs.phase == Phase.DEFERRED
        step.requeue = self._plan(d, step.spec, step.zones, recreate=recreate) or step.requeue

    def _do_replace(self, d: Draft, step: "Step") -> None:
        d.may(Effect.DELETE)
        self._replace(d.obs)
        step.requeue = timedelta(0)

    def _do_start(self, d: Draft, step: "Step") -> None:
        if step.spec is None:
            return
        plan = Plan.model_validate(d.obs.status.get("plan") or {})
        if not self._room_now(d, plan):
            # Someone else took the GPUs since the plan: starting would only leave pods pending.
            step.pacing = replace(step.pacing, last_replan=d.now)
            self._replan(d, step.spec, step.zones)
            step.requeue = timedelta(seconds=self.config.tick_seconds)
            return
        self._start(d, step.spec, plan)
        step.pacing = replace(step.pacing, last_power=d.now)

    def _do_replan(self, d: Draft, step: "Step") -> None:
        if step.spec is not None:
            step.pacing = replace(step.pacing, last_replan=d.now)
            self._replan(d, step.spec, step.zones)

    def _do_adopt_running(self, d: Draft, step: "Step") -> None:
        if step.spec is not None:
            self._adopt_running(d, step.spec)
            step.pacing = replace(step.pacing, last_power=d.now)

    def _do_monitor(self, d: Draft, step: "Step") -> None:
        if step.spec is not None:
            step.pacing = self._monitor(d, step.spec, step.pacing)

    def _do_resume(self, d: Draft, step: "Step") -> None:
        self._resume(d, step.spec)

    def _do_record_suspended(self, d: Draft, step: "Step") -> None:
        # Our own budget suspension whose status write was lost (a conflict with an agent's report)
        # looks the same: account first, and the budget says whose suspension it is.
        self._account(d, spec=step.spec)
        job = d.obs.job
        if step.spec is not None and step.spec.whole_run and job is not None and job.pause_in_force:
            # Our own pause, its status write lost: the workload's annotation says when.
            self._record_pause(d, step.spec, d.obs.plan, parse_time(job.paused_at or ""))
            return
        budgets = d.status.get("phase") == Phase.SUSPENDED or suspended_by_budget(d.obs)
        d.conditional = True
        d.status["phase"] = Phase.SUSPENDED
        if budgets:
            return
        msg = "the Job was suspended outside greenjobs; it resumes when it is unsuspended"
        d.cond(Cond.STARTED, "False", "JobSuspended", msg)
        d.event("Warning", "JobSuspended", msg)

    def _do_finish(self, d: Draft, step: "Step") -> None:
        job = d.obs.job
        outcome = job.outcome if job is not None and job.outcome else Phase.FAILED
        ok = outcome == Phase.SUCCEEDED
        reason = "JobSucceeded" if ok else "JobFailed"
        self._end(d, outcome, reason, "the Job completed" if ok else "the Job failed; see its pods")

    def _do_cancelled(self, d: Draft, step: "Step") -> None:
        self._end(d, Phase.FAILED, "JobDeleted", "the Job was deleted while it ran: the training is not run again")

    def _do_lost(self, d: Draft, step: "Step") -> None:
        msg = "the Job is gone and its outcome was never recorded: the training is not run again"
        self._end(d, Phase.FAILED, "JobLost", msg)

    # ------------------------------------------------------------------ writing

    def _write(self, d: Draft) -> dict[str, Any] | None:
        conditions = d.merged_conditions()
        if conditions is not None:
            d.status["conditions"] = conditions
        if not d.status:
            self._post(d)
            return None
        rv = d.obs.resource_version if d.conditional else None
        body = self.kube.patch_status(d.obs.namespace, d.obs.name, d.status, resource_version=rv)
        for counted in d.after_write:
            counted()
        self._post(d)
        phase = d.status.get("phase")
        if phase:
            self.metrics.observe_phase(d.obs.uid, phase)
        return body

    def _post(self, d: Draft) -> None:
        ref = {
            "apiVersion": "greenjobs.dev/v1alpha1",
            "kind": "GreenTrainingJob",
            "metadata": {"name": d.obs.name, "namespace": d.obs.namespace, "uid": d.obs.uid},
        }
        for e in d.events:
            self.emit(ref, e)

    # ------------------------------------------------------------------ spec

    def _spec(self, d: Draft) -> GreenTrainingJobSpec | None:
        try:
            return GreenTrainingJobSpec.model_validate(dict(d.obs.spec))
        except ValidationError as exc:
            # The schema refuses almost everything; what slips through (e.g. a zero duration) lands here.
            problems = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            if d.obs.phase in (None, Phase.PENDING, Phase.DEFERRED):
                self._refuse(d, "InvalidSpec", problems)
            else:
                d.cond(Cond.SPEC_APPLIED, "False", "InvalidSpec", problems)
                d.status["observedGeneration"] = d.obs.generation
            return None

    def _refuse(self, d: Draft, reason: str, message: str) -> None:
        d.conditional = True
        d.status.update({"phase": Phase.PENDING, "observedGeneration": d.obs.generation})
        d.cond(Cond.INVALID_TEMPLATE, "True", reason, message)
        d.cond(Cond.PLANNED, "False", reason, "fix the spec; the operator retries on every change")
        d.event("Warning", reason, message)

    def _ack_spec(self, d: Draft) -> None:
        if d.status.get("observedGeneration") == d.obs.generation or not d.obs.spec_changed:
            return
        d.status["observedGeneration"] = d.obs.generation
        phase = d.status.get("phase") or d.obs.phase
        if phase in Phase.FINISHED:
            msg = "the job has finished: spec changes have no effect (create a new GreenTrainingJob to run again)"
            d.cond(Cond.SPEC_APPLIED, "False", "Finished", msg)
            return
        job = d.obs.job
        if job is not None and job.template_hash not in (None, template_hash(workload_template(d.obs.spec))):
            msg = (
                "jobTemplate changed after the Job started: it is not applied to the running Job; power and"
                " budget changes are"
            )
            d.cond(Cond.SPEC_APPLIED, "False", "TemplateChangedAfterStart", msg)
            d.event("Warning", "SpecNotApplied", msg)
            return
        msg = "power and budget changes apply now; timing and placement apply only before the start"
        d.cond(Cond.SPEC_APPLIED, "True", "Applied", msg)

    # ------------------------------------------------------------------ planning and Job creation

    def _decide(self, d: Draft, spec: GreenTrainingJobSpec, zones_with_nodes: Collection[str] | None) -> PlanOutcome:
        fleet, uid = self.fleet, d.obs.uid
        return decide_plan(
            spec,
            _created(d.obs),
            d.now,
            zones_with_nodes,
            self._fetch,
            self._current,
            self.config.default_zone,
            fleet=(lambda: fleet.assignment(uid)) if fleet is not None else None,
        )

    def _whole_run(self, d: Draft, spec: GreenTrainingJobSpec, outcome: PlanOutcome) -> PlanOutcome:
        """A whole-run job's first plan: its segments (pauses, paced caps) from its planned start on.
        The start-only plan chose the zone; a start that waits for GPUs stays the earliest start."""
        plan = outcome.plan
        zone = (plan.zone if plan is not None else None) or self.config.default_zone
        if plan is None or not spec.whole_run or zone is None:
            return outcome
        origin = d.now
        if plan.waits_for == "Capacity" and plan.scheduled_start is not None:
            origin = max(plan.scheduled_start, d.now)
        whole = self._runs.plan(d.obs, spec, zone, origin, progress=Progress(), work_done_s=0.0, running=False)
        if whole is None:
            return outcome
        return replace(outcome, plan=plan_patch(plan, whole, spec))

    @property
    def _runs(self) -> RunPlanner:
        resources = tuple(self.fleet.settings.gpu_resources) if self.fleet is not None else ("nvidia.com/gpu",)
        embodied = self.factors.embodied.g_per_gpu_hour
        return RunPlanner(self._fetch, self.config.cap_step_watts, embodied, resources)

    def _fetch(self, zone: str, start: datetime, end: datetime) -> Forecast:
        return self.provider.forecast(zone, start, end)

    def _current(self, zone: str) -> float:
        return self.provider.current(zone)

    def zone_selector(self, zone: str | None) -> dict[str, str] | None:
        if not zone:
            return None
        values = [label for label, z in self.config.zone_map.items() if z == zone]
        return {self.config.zone_label: values[0] if values else zone}

    def _plan(
        self, d: Draft, spec: GreenTrainingJobSpec, zones_with_nodes: Collection[str] | None, *, recreate: bool
    ) -> timedelta | None:
        """Plan; create the Job (or adopt ours). Returns a requeue delay when the user must wait or act."""
        obs = d.obs
        outcome = self._decide(d, spec, zones_with_nodes)
        d.updates.extend(outcome.conditions)
        if outcome.plan is None:
            if obs.phase != Phase.PENDING or obs.spec_changed or d.merged_conditions() is not None:
                d.status.update({"phase": Phase.PENDING, "observedGeneration": obs.generation})
                d.events.extend(outcome.events)
            return None
        d.events.extend(outcome.events)
        outcome = self._whole_run(d, spec, outcome)
        plan = outcome.plan
        assert plan is not None
        start_now = (outcome.starts_now(d.now) and self._room_now(d, plan)) or (
            obs.job is not None and not obs.job.suspended
        )
        try:
            self._create_or_adopt(d, spec, plan, start_now)
        except _Retry as exc:
            d.conditional = True
            d.status.update({"phase": Phase.PENDING, "observedGeneration": obs.generation})
            d.cond(Cond.PLANNED, "False", exc.reason, exc.message)
            if obs.condition(Cond.PLANNED) != "False" or obs.spec_changed:
                d.event("Warning", exc.reason, exc.message)
            return timedelta(seconds=max(self.config.tick_seconds * 6, 30))
        except _Refused as exc:
            self._refuse(d, exc.reason, exc.message)
            return None
        d.cond(Cond.INVALID_TEMPLATE, "False", "Accepted", "the Job template was accepted")
        d.conditional = True
        d.status.update({"jobName": obs.name, "observedGeneration": obs.generation, "plan": plan.merge_patch()})
        self.metrics.plans.labels(_reason(outcome.conditions, Cond.PLANNED)).inc()
        if plan.expected_savings_percent is not None:
            self.metrics.planned_savings.observe(plan.expected_savings_percent)
        planned = next((u.message for u in outcome.conditions if u.type == Cond.PLANNED), "")
        if recreate:
            d.event("Normal", "Recreated", "the Job was deleted before it started: created again")
        if start_now:
            self._record_start(d, spec, plan)
            d.event("Normal", "Started", planned)
        else:
            d.status["phase"] = Phase.DEFERRED
            d.cond(Cond.STARTED, "False", "Deferred", f"deferred to {format_time(plan.scheduled_start or d.now)}")
            d.event("Normal", "Deferred", planned)
        return None

    def _create_or_adopt(self, d: Draft, spec: GreenTrainingJobSpec, plan: Plan, start_now: bool) -> None:
        obs = d.obs
        selector = self.zone_selector(plan.zone)
        if obs.job is not None:
            if start_now and obs.job.suspended:
                self._patch_start(d, plan)
            return
        job = build_job(
            obs.name,
            obs.namespace,
            obs.uid,
            spec,
            zone=plan.zone,
            zone_selector=selector,
            start_now=start_now,
            digest=template_hash(workload_template(obs.spec)),
            started_at=format_time(d.now),
        )
        kind = adapter_of(obs.spec)
        d.may(Effect.CREATE)
        try:
            self.kube.create_job(job, kind=kind)
        except ApiException as exc:
            if exc.status in (400, 422):
                raise _Refused("InvalidJobTemplate", api_error_message(exc)) from exc
            if exc.status == 403:
                msg = api_error_message(exc)
                reason = "QuotaExceeded" if "quota" in msg.lower() else "Forbidden"
                raise _Retry(reason, f"the Job could not be created: {msg}") from exc
            if exc.status != 409:
                raise
            existing = self.kube.get_job(obs.namespace, obs.name, kind)
            if existing is None or not any(
                r.get("uid") == obs.uid for r in existing.get("metadata", {}).get("ownerReferences") or []
            ):
                raise _Refused(
                    "JobNameTaken", f"a Job named {obs.name} exists and is not owned by this GreenTrainingJob"
                ) from exc
            # Ours (created before a restart, and the Job index lags): adopt it.
            if start_now and kind.is_suspended(existing):
                self._patch_start(d, plan)

    def _patch_start(self, d: Draft, plan: Plan) -> None:
        """Place the workload in the plan's zone and start it (a Kueue-managed one: hand it to Kueue)."""
        obs, kind = d.obs, adapter_of(d.obs.spec)
        d.may(Effect.START)
        try:
            obj = self.kube.get_job(obs.namespace, obs.name, kind)
            if obj is None:
                raise _Retry("StartFailed", f"the {kind.kind} {obs.name} is gone")
            selector = self.zone_selector(plan.zone)
            for patch in start_patches(obj, obs.name, obs.uid, plan.zone, selector, format_time(d.now)):
                self.kube.patch_job(obs.namespace, obs.name, patch, kind)
        except ApiException as exc:
            if exc.status in (403, 422, 400):
                raise _Retry("StartFailed", f"the Job could not be started: {api_error_message(exc)}") from exc
            raise

    def _replace(self, obs: Observed) -> None:
        """A template changed before the start: the unstarted Job goes; the next look creates the new one."""
        kind = adapter_of(obs.spec)
        self.kube.delete_job(obs.namespace, obs.name, kind)
        if obs.job is not None:
            self.kube.release_job(obs.namespace, obs.name, list(obs.job.finalizers), kind)

    def _replan(self, d: Draft, spec: GreenTrainingJobSpec, zones_with_nodes: Collection[str] | None) -> None:
        obs = d.obs
        old = Plan.model_validate(obs.status.get("plan") or {})
        outcome = self._whole_run(d, spec, self._decide(d, spec, zones_with_nodes))
        if obs.spec_changed:
            d.status["observedGeneration"] = obs.generation
        if outcome.plan is None or (same_plan(old, outcome.plan) and not obs.spec_changed):
            # Keep the plan; still refresh conditions that changed (e.g. forecasts came back).
            d.updates.extend(u for u in outcome.conditions if u.type != Cond.PLANNED)
            return
        d.events.extend(outcome.events)
        d.updates.extend(outcome.conditions)
        planned = next((u.message for u in outcome.conditions if u.type == Cond.PLANNED), "")
        if outcome.starts_now(d.now) and self._room_now(d, outcome.plan):
            self._start(d, spec, outcome.plan)
            return
        d.conditional = True
        d.status["plan"] = outcome.plan.merge_patch()
        d.cond(Cond.STARTED, "False", "Deferred", f"deferred to {format_time(outcome.plan.scheduled_start or d.now)}")
        d.event("Normal", "Replanned", planned)
        log.info("re-planned %s/%s", obs.namespace, obs.name)

    # ------------------------------------------------------------------ starting

    def _room_now(self, d: Draft, plan: Plan) -> bool:
        """Whether the plan's zone has the GPUs now. Every start path asks: a plan made earlier (or an
        exact start refined inside the fleet's grid step) may say "now" while a run it expected to
        be over still holds the GPUs, and a start then would only leave pods pending."""
        return self.fleet is None or self.fleet.room_now(d.obs.uid, plan.zone)

    def _start(self, d: Draft, spec: GreenTrainingJobSpec, plan: Plan) -> None:
        try:
            self._patch_start(d, plan)
        except _Retry as exc:
            self._start_refused(d, plan, exc)
            return
        self._record_start(d, spec, plan)
        d.event("Normal", "Started", f"Job {d.obs.name} started in {plan.zone or 'any zone'}")

    def _start_refused(self, d: Draft, plan: Plan | None, exc: "_Retry") -> None:
        """A start the API server refused for now (RBAC, quota, an admission policy): a condition and
        one Event per change, the fleet's claim dropped at once, and a retry with backoff. Past its
        latest start the job says so: it is never left Deferred past it silently."""
        if self.fleet is not None:
            self.fleet.release(d.obs.uid)
        d.retry = True
        d.warn(Cond.STARTED, "False", exc.reason, exc.message)
        latest = plan.latest_start if plan is not None else None
        if latest is not None and d.now > latest:
            msg = f"the start is refused past the latest start {format_time(latest)}: {exc.message}"
            d.warn(Cond.DEADLINE_AT_RISK, "True", "StartRefused", msg)

    def _record_start(self, d: Draft, spec: GreenTrainingJobSpec, plan: Plan) -> None:
        d.conditional = True
        d.status.update({"phase": Phase.RUNNING, "startTime": format_time(d.now), "plan": plan.merge_patch()})
        d.cond(Cond.STARTED, "True", "Started", f"Job started in {plan.zone or 'any zone'}")
        if spec.whole_run:
            progress = progress_of(d.obs)
            progress = progress.model_copy(update={"segments": progress.segments + 1, "running_since": d.now})
            d.status["progress"] = progress_patch(progress, spec, progress.work_done_seconds, "model")
        if plan.latest_start is not None and d.now > plan.latest_start + self._tick_slack():
            msg = f"started after the latest start {format_time(plan.latest_start)}"
            d.cond(Cond.DEADLINE_AT_RISK, "True", "StartedLate", msg)
        self._set_power(d, self._power(spec, plan.zone, blocking=False, plan=plan))

    def _adopt_running(self, d: Draft, spec: GreenTrainingJobSpec) -> None:
        plan = Plan.model_validate(d.obs.status.get("plan") or {})
        d.conditional = True
        d.status["phase"] = Phase.RUNNING
        if not d.obs.status.get("startTime"):
            # Started before a restart, its status write lost: the Job says when.
            started = d.obs.job.started_at if d.obs.job is not None else None
            d.status["startTime"] = started or format_time(d.now)
        d.cond(Cond.STARTED, "True", "Started", f"Job running in {plan.zone or 'any zone'}")
        if d.obs.phase == Phase.SUSPENDED:
            d.cond(Cond.BUDGET_EXCEEDED, "False", "Resumed", "the Job runs again")
        if spec.whole_run:
            progress = progress_of(d.obs)
            if d.obs.phase == Phase.PAUSED or progress.running_since is None:
                # Resumed (by us before a restart, or by hand): the run began when the Job says.
                job = d.obs.job
                since = parse_time(job.started_at) if job is not None and job.started_at else d.now
                progress = progress.model_copy(
                    update={"segments": progress.segments + 1, "running_since": since, "paused_at": None}
                )
                d.status["progress"] = progress_patch(progress, spec, progress.work_done_seconds, "model")
            if d.obs.phase == Phase.PAUSED:
                d.cond(Cond.PAUSED, "False", "Resumed", "the Job runs again")
        self._set_power(d, self._power(spec, plan.zone, blocking=False, plan=plan))

    def _tick_slack(self) -> timedelta:
        # A start is only late when it misses latestStart by more than the operator's own pacing.
        return timedelta(seconds=2 * self.config.tick_seconds + 5)

    # ------------------------------------------------------------------ running: power, energy, end

    def _power(
        self, spec: GreenTrainingJobSpec, zone: str | None, *, blocking: bool = True, plan: Plan | None = None
    ) -> PowerStatus:
        if spec.power.policy == "DeadlinePaced":
            # The plan's cap for now; the highest when the plan has none (no forecast, past its end).
            planned = run_plan.cap_at(plan, self.clock()) if plan is not None else None
            top = max(spec.power.max_cap_watts or 0, spec.power.min_cap_watts or 0) or None
            return PowerStatus(target_cap_watts=planned or top, reason="DeadlinePaced")
        intensity: float | None = None
        if zone and spec.power.policy == "CarbonAware":
            intensity = self._intensity(zone, blocking=blocking)
        decision = target_cap(spec.power, intensity, self.config.cap_step_watts)
        return PowerStatus(
            target_cap_watts=decision.cap_watts,
            reason=decision.reason,
            g_per_k_wh=round(intensity, 1) if intensity is not None else None,
        )

    def _intensity(self, zone: str, *, blocking: bool) -> float | None:
        peek = getattr(self.provider, "peek_current", None)
        if not blocking and peek is not None:
            value: float | None = peek(zone)  # a start is never delayed by a slow provider
            return value
        try:
            return self.provider.current(zone)
        except ProviderError as exc:
            log.warning("no current intensity for %s: %s", zone, exc)
            return None

    def _set_power(self, d: Draft, new: PowerStatus) -> None:
        """status.power and PowerCapped: what the agents are asked for, and what the GPUs really got."""
        applied = _applied_cap(d.obs)
        old = PowerStatus.model_validate(d.obs.status.get("power") or {})
        new = new.model_copy(update={"applied_cap_watts": applied})
        if (new.target_cap_watts, new.reason, new.applied_cap_watts) != (
            old.target_cap_watts,
            old.reason,
            old.applied_cap_watts,
        ):
            d.status["power"] = new.dump()
        target = new.target_cap_watts
        refused = _cap_not_applied(d.obs)
        if target is None:
            d.cond(Cond.POWER_CAPPED, "False", new.reason or "None", "GPUs at their default limit")
        elif refused:
            # Shared or MIG GPUs the agents may not cap (another tenant on them): say why, per node.
            d.cond(Cond.POWER_CAPPED, "False", "CapNotApplied", f"asked for {target} W per GPU; " + refused)
        elif applied is not None and applied != target:
            msg = f"asked for {target} W per GPU; the GPUs' limits allow {applied} W, which is applied"
            d.cond(Cond.POWER_CAPPED, "True", "Clamped", msg)
        else:
            d.cond(Cond.POWER_CAPPED, "True", new.reason or "Capped", f"GPUs capped at {target} W")

    def _monitor(self, d: Draft, spec: GreenTrainingJobSpec, pacing: Pacing) -> Pacing:
        plan = Plan.model_validate(d.obs.status.get("plan") or {})
        self._check_overrun(d, plan)
        # A paced cap is the plan's (no provider call): it changes exactly at the plan's boundaries.
        paced = spec.power.policy == "DeadlinePaced"
        due = pacing.last_power is None or d.now - pacing.last_power >= self.config.power_interval
        if paced or due or d.obs.spec_changed:
            pacing = replace(pacing, last_power=d.now)
            self._set_power(d, self._power(spec, plan.zone, plan=plan))
        else:
            self._set_power(d, PowerStatus.model_validate(d.obs.status.get("power") or {}))
        if pacing.last_account is None or d.now - pacing.last_account >= self.config.account_interval:
            pacing = replace(pacing, last_account=d.now)
            self._account(d, spec=spec)
        self._pods_pending(d)
        return pacing

    def _pods_pending(self, d: Draft) -> None:
        job = d.obs.job
        if job is None:
            return
        if job.active > 0 and job.ready == 0:
            d.cond(
                Cond.PODS_READY, "False", "PodsPending", "the Job started; its pods wait to be scheduled or to start"
            )
        elif job.ready > 0:
            d.cond(Cond.PODS_READY, "True", "PodsRunning", f"{job.ready} pod(s) running")

    def _check_overrun(self, d: Draft, plan: Plan) -> None:
        """A job still running after its deadline (estimatedDuration was too short) is flagged once."""
        if plan.deadline is None or d.now <= plan.deadline or d.obs.condition(Cond.DEADLINE_AT_RISK) == "True":
            return
        msg = f"still running after the deadline {format_time(plan.deadline)}: estimatedDuration may be too short"
        d.cond(Cond.DEADLINE_AT_RISK, "True", "RunningPastDeadline", msg)
        d.event("Warning", "DeadlineAtRisk", msg)

    def _resume(self, d: Draft, spec: GreenTrainingJobSpec | None) -> None:
        if spec is None:
            return
        if self._budget(d, spec).exceeded:
            return
        plan = Plan.model_validate(d.obs.status.get("plan") or {})
        if not self._room_now(d, plan):
            # Its GPUs went to others while it was suspended: it resumes when the zone has room.
            d.cond(Cond.STARTED, "False", "WaitingForRoom", f"within budget again; waiting for GPUs in {plan.zone}")
            d.retry = True
            return
        try:
            self._patch_start(d, plan)
        except _Retry as exc:
            self._start_refused(d, None, exc)
            return
        d.conditional = True
        d.status["phase"] = Phase.RUNNING
        if spec.whole_run:
            progress = progress_of(d.obs)
            if progress.running_since is None:
                progress = progress.model_copy(
                    update={"segments": progress.segments + 1, "running_since": d.now, "paused_at": None}
                )
                d.status["progress"] = progress_patch(progress, spec, progress.work_done_seconds, "model")
        d.cond(Cond.BUDGET_EXCEEDED, "False", "BudgetRaised", "within budget again")
        d.cond(Cond.STARTED, "True", "Resumed", "the Job runs again")
        d.event("Normal", "Resumed", "budget raised: Job resumed")

    # ------------------------------------------------------------------ whole-run: pause and resume

    def _do_pause(self, d: Draft, step: "Step") -> None:
        """The plan pauses the job now: plan the rest from here (work done so far, the forecast now);
        suspend it unless the new plan runs on."""
        spec, obs = step.spec, d.obs
        if spec is None:
            return
        plan, progress, (done, source), whole = self._plan_rest(d, spec, running=True)
        d.conditional = True
        if whole is None or run_plan.starts_now(whole, d.now):
            # Runs on: nothing left to plan (the estimate is used up), no forecast, or the rest now.
            new = plan.model_copy(update={"segments": None})
            if whole is not None:
                new = plan_patch(plan, whole, spec, keep_start=True)
            d.status["plan"] = new.merge_patch()
            d.status["progress"] = progress_patch(progress, spec, done, source)
            self._set_power(d, self._power(spec, new.zone, plan=new))
            return
        d.may(Effect.SUSPEND)
        kind = adapter_of(obs.spec)
        paused_at = {"metadata": {"annotations": {ANNOTATION_PAUSED_AT: format_time(d.now)}}}
        if kueue_managed(obs.spec) and obs.job is not None:
            # Kueue owns its suspension: deactivating its Workload releases the quota and stops it.
            self.kube.patch_job(obs.namespace, obs.name, paused_at, kind)
            self.kube.set_workload_active(obs.namespace, obs.job.uid, False)
        else:
            patch = kind.suspend_patch(self.kube.get_job(obs.namespace, obs.name, kind) or {})
            self.kube.patch_job(obs.namespace, obs.name, {**patch, **paused_at}, kind)
        self._record_pause(d, spec, plan_patch(plan, whole, spec), d.now, done=(done, source))

    def _plan_rest(
        self, d: Draft, spec: GreenTrainingJobSpec, *, running: bool
    ) -> tuple[Plan, Progress, tuple[float, str], WholeRunPlan | None]:
        """The job's plan and progress as recorded, the work done by now, and the rest planned from
        now (None: nothing left to plan, or no forecast)."""
        obs = d.obs
        plan, progress = obs.plan, progress_of(obs)
        done = run_plan.work_done(spec, plan, progress, d.now, run_plan.parse_reported(obs.reported_progress))
        zone = plan.zone or self.config.default_zone
        whole = None
        if zone is not None:
            whole = self._runs.plan(
                obs, spec, zone, d.now, progress=progress, work_done_s=done[0], running=running, previous=plan
            )
        return plan, progress, done, whole

    def _record_pause(
        self,
        d: Draft,
        spec: GreenTrainingJobSpec,
        plan: Plan,
        paused: datetime,
        done: tuple[float, str] | None = None,
    ) -> None:
        """Status of a paused job: Paused, the work done until `paused`, the planned resume."""
        progress = progress_of(d.obs)
        if done is None:
            done = run_plan.work_done(spec, plan, progress, paused, None)
        if plan.scheduled_start is None or plan.scheduled_start < paused:
            plan = plan.model_copy(update={"scheduled_start": run_plan.next_resume(plan, paused) or d.now})
        progress = progress.model_copy(
            update={
                "work_done_seconds": done[0],
                "running_since": None,
                "paused_at": paused,
                "interruptions": progress.interruptions + 1,
            }
        )
        patch = progress_patch(progress, spec, done[0], done[1])
        d.conditional = True
        d.status.update({"phase": Phase.PAUSED, "plan": plan.merge_patch(), "progress": patch})
        msg = pause_message(plan.scheduled_start, patch.get("percent"))
        d.cond(Cond.PAUSED, "True", "DirtyHours", msg)
        if d.obs.condition(Cond.PODS_READY):
            d.cond(Cond.PODS_READY, "False", "Paused", "its pods were stopped for the pause")
        d.event("Normal", "Paused", msg)

    def _do_unpause(self, d: Draft, step: "Step") -> None:
        """The plan's next segment is due: plan the rest again (the forecast may have moved), then
        resume it when the zone has room, in the plan's order."""
        spec, obs = step.spec, d.obs
        if spec is None:
            return
        verdict = self._budget(d, spec)
        if verdict.exceeded and verdict.suspend and not kueue_managed(obs.spec):
            # Over budget while paused (late energy): it stays suspended, now by its budget.
            d.conditional = True
            d.status["phase"] = Phase.SUSPENDED
            d.cond(Cond.BUDGET_EXCEEDED, "True", "Suspended", verdict.message)
            d.cond(Cond.PAUSED, "False", "BudgetExceeded", "over budget: not resumed until the budget allows")
            d.event("Warning", "BudgetExceeded", verdict.message)
            return
        plan, progress, (done, source), whole = self._plan_rest(d, spec, running=False)
        d.conditional = True
        if whole is not None and not run_plan.starts_now(whole, d.now):
            new = plan_patch(plan, whole, spec)
            d.status["plan"] = new.merge_patch()
            d.cond(Cond.PAUSED, "True", "DirtyHours", pause_message(new.scheduled_start, run_plan.percent(spec, done)))
            return
        new = plan_patch(plan, whole, spec) if whole else plan.model_copy(update={"segments": None})
        new = new.model_copy(update={"scheduled_start": d.now})
        if whole is not None and not whole.feasible:
            msg = f"the rest of the work cannot end by the deadline {format_time(whole.finishes_at)} any more"
            d.warn(Cond.DEADLINE_AT_RISK, "True", "PausedTooLong", msg)
        if not self._room_now(d, new):
            d.cond(Cond.PAUSED, "True", "WaitingForRoom", f"due to resume; waiting for GPUs in {new.zone}")
            d.retry = True
            return
        try:
            self._patch_start(d, new)
            if kueue_managed(obs.spec) and obs.job is not None:
                self.kube.set_workload_active(obs.namespace, obs.job.uid, True)  # queued again, same place
        except _Retry as exc:
            self._start_refused(d, new, exc)
            return
        progress = progress.model_copy(update={"segments": progress.segments + 1, "running_since": d.now})
        d.status.update(
            {
                "phase": Phase.RUNNING,
                "plan": new.merge_patch(),
                "progress": progress_patch(progress, spec, done, source),
            }
        )
        d.cond(Cond.PAUSED, "False", "Resumed", f"resumed in {new.zone or 'any zone'}")
        d.cond(Cond.STARTED, "True", "Resumed", "the Job runs again from its latest checkpoint")
        d.event("Normal", "Resumed", f"resumed in {new.zone or 'any zone'} from its latest checkpoint")
        self._set_power(d, self._power(spec, new.zone, plan=new))

    @staticmethod
    def _budget(d: Draft, spec: GreenTrainingJobSpec) -> BudgetVerdict:
        """The budget against the totals accounted so far (status)."""
        energy = d.obs.status.get("energy") or {}
        grams = (d.obs.status.get("emissions") or {}).get("grams") or 0.0
        return check_budget(spec.budget, energy.get("kWh") or 0.0, grams)

    def _end(self, d: Draft, phase: str, reason: str, message: str) -> None:
        d.may(Effect.END)
        self._account(d, spec=None)
        ok = phase == Phase.SUCCEEDED
        d.conditional = True
        d.status.update({"phase": phase, "completionTime": self._ended_at(d)})
        d.cond(Cond.COMPLETE, "True" if ok else "False", reason, message)
        if not ok:
            d.cond(Cond.FAILED, "True", reason, message)
        if d.obs.condition(Cond.PODS_READY):
            d.cond(Cond.PODS_READY, "False", reason, "the Job has ended")
        d.event("Normal" if ok else "Warning", "Completed" if ok else "Failed", f"{d.obs.name}: {message}")

    @staticmethod
    def _ended_at(d: Draft) -> str:
        """When the workload ended as its controller saw it (not when we looked: the operator may have
        been down); now for an end we decide ourselves (a Job deleted or lost)."""
        job = d.obs.job
        if job is None or job.finished_at is None:
            return format_time(d.now)
        try:
            ended = parse_time(job.finished_at)
        except ValueError:
            return format_time(d.now)
        started = d.obs.status.get("startTime")
        floor = parse_time(started) if started else ended
        return format_time(min(max(ended, floor), d.now))

    def _account(self, d: Draft, *, spec: GreenTrainingJobSpec | None) -> None:
        status = d.obs.status
        energy = status.get("energy") or {}
        nodes = {n: NodeEnergy.model_validate(v) for n, v in (energy.get("nodes") or {}).items() if _reported(v)}
        previous = Emissions.model_validate(status.get("emissions") or {})
        obs = d.obs
        host = None
        if self.host_source is not None and nodes:
            host = self.host_source.job_energy(job_ref(obs.namespace, obs.name, status))
        gpu_new = any(previous.accounted_joules.get(n, -1) < e.joules for n, e in nodes.items())
        # A measured host figure that came after the last GPU report (Prometheus back from an outage,
        # the job finished meanwhile) is news too: the fallback estimate it replaces is corrected.
        host_new = host is not None and (
            host.joules > (previous.accounted_host_joules or 0.0)
            or host.method != (energy.get("methods") or {}).get("host")
        )
        if not gpu_new and not host_new:
            return  # nothing new since the last accounting: no write
        plan = Plan.model_validate(status.get("plan") or {})
        try:
            intensity = self._intensity_now(plan)
        except ProviderError as exc:
            log.warning("%s/%s: %s", d.obs.namespace, d.obs.name, exc)
            return  # the joules stay unaccounted; charged later, at their time's intensity where known
        # Energy reported late is charged at the intensity of when it was used, not of now.
        then = intensity_of_use(nodes, previous.accounted_joules, plan.zone, d.now, self.provider.forecast)
        fp = account_footprint(
            nodes,
            previous,
            intensity,
            host,
            self.factors,
            zone=plan.zone,
            previous_host_method=(energy.get("methods") or {}).get("host"),
            intensity_of=then,
        )
        k_wh, grams = max(fp.k_wh - (energy.get("kWh") or 0.0), 0.0), max(fp.grams - (previous.grams or 0.0), 0.0)
        parts = fp.increments_since(energy, status.get("emissions"))

        def count() -> None:  # once the status write that records these joules succeeded
            self.metrics.energy.inc(k_wh)
            self.metrics.co2e.inc(grams)
            self.metrics.on_footprint(*parts)

        d.after_write.append(count)
        d.status.update(fp.status_patch())
        if spec is None:
            return
        verdict = check_budget(spec.budget, fp.k_wh, fp.grams)  # budgets apply to the totals
        if verdict.exceeded and d.obs.condition(Cond.BUDGET_EXCEEDED) != "True":
            d.cond(Cond.BUDGET_EXCEEDED, "True", "Suspended" if verdict.suspend else "Warn", verdict.message)
            d.event("Warning", "BudgetExceeded", verdict.message)
            if verdict.suspend and kueue_managed(d.obs.spec):
                msg = "the workload is Kueue-managed: Kueue owns its suspension, so the budget only warns"
                d.event("Warning", "BudgetNotEnforced", msg)
            elif verdict.suspend:
                d.may(Effect.SUSPEND)
                kind = adapter_of(d.obs.spec)
                obj = self.kube.get_job(d.obs.namespace, d.obs.name, kind) or {}
                self.kube.patch_job(d.obs.namespace, d.obs.name, kind.suspend_patch(obj), kind)
                d.conditional = True
                d.status["phase"] = Phase.SUSPENDED

    def _intensity_now(self, plan: Plan) -> float:
        if plan.zone:
            value = self._intensity(plan.zone, blocking=False)
            if value is None:
                value = self._intensity(plan.zone, blocking=True)
            if value is not None:
                return value
            log.warning("accounting with the planned intensity: no current value for %s", plan.zone)
        # The plan's figures, never zero: a plan beyond the forecast's horizon may have none, and a
        # zero would record these joules as free of emissions for good.
        for figure in (plan.expected_g_per_k_wh, plan.baseline_g_per_k_wh):
            if figure is not None:
                return figure
        raise ProviderError(f"no intensity known for zone {plan.zone or '(none)'}: accounting waits")


class UndeclaredEffect(Exception):
    """A write the decision did not list among its effects (a bug in the phase table): not sent."""


class _Refused(Exception):
    """The API server refused the user's template: only a spec change can fix it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


class _Retry(_Refused):
    """Refused for now (RBAC, quota): the user or an administrator can fix it; retried with backoff."""


def _reported(entry: Any) -> bool:
    """A node entry with joules in it (an agent may leave an empty one: nothing to account)."""
    return isinstance(entry, dict) and entry.get("joules") is not None


def _created(obs: Observed) -> datetime:
    return parse_time(obs.created)


def _applied_cap(obs: Observed) -> int | None:
    """The cap the GPUs really have, as the agents report it (the lowest over nodes)."""
    nodes = (obs.status.get("energy") or {}).get("nodes") or {}
    caps = [int(v["capWatts"]) for v in nodes.values() if v and v.get("capWatts") is not None]
    return min(caps) if caps else None


def _cap_not_applied(obs: Observed) -> str:
    """Why agents left some of the job's GPUs uncapped (shared or MIG GPUs), node by node, or ''."""
    nodes = (obs.status.get("energy") or {}).get("nodes") or {}
    why = [f"{n}: {v['capNotApplied']}" for n, v in sorted(nodes.items()) if v and v.get("capNotApplied")]
    return "not applied on " + "; ".join(why) if why else ""


def _reason(updates: list[CondUpdate], type_: str) -> str:
    return next((u.reason for u in updates if u.type == type_), "Unknown")
