"""What the operator does for one GreenTrainingJob, as plain methods over (body, status) -> patch.

Idempotent: every method may run twice or after a restart; all state that matters is in the API
server (status, the owned Job). Kubernetes writes go through `Kube`; forecasts through the provider.
"""

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from greenjobs.api import constants as c
from greenjobs.api.constants import Cond, Phase
from greenjobs.api.durations import format_time, parse_time
from greenjobs.api.models import Emissions, GreenTrainingJobSpec, NodeEnergy, Plan, PowerStatus
from greenjobs.carbon.accounting import account, check_budget, rounded
from greenjobs.carbon.providers.base import Forecast, ForecastProvider, ProviderError
from greenjobs.metrics import OperatorMetrics
from greenjobs.power import target_cap

from .conditions import CondUpdate, apply_conditions, condition_status
from .config import OperatorConfig
from .jobs import build_job, job_outcome, owned_by, start_patch
from .kube import Kube, api_error_message
from .planning import Event, PlanOutcome, decide_plan, same_plan

log = logging.getLogger(__name__)

EmitEvent = Callable[[dict[str, Any], Event], None]


@dataclass
class JobState:
    """What the operator needs of an owned Job, kept in a kopf index (no GET per tick)."""

    uid: str
    owner_uids: tuple[str, ...]
    suspended: bool
    outcome: str | None  # Succeeded | Failed | None


class Ref(NamedTuple):
    """Who a GreenTrainingJob is, read once from its body."""

    name: str
    namespace: str
    uid: str
    generation: int | None


def ref_of(body: Mapping[str, Any]) -> Ref:
    meta = body["metadata"]
    return Ref(meta["name"], meta["namespace"], meta["uid"], meta.get("generation"))


def created_of(body: Mapping[str, Any]) -> datetime:
    return parse_time(body["metadata"]["creationTimestamp"])


@dataclass
class Reconciler:
    config: OperatorConfig
    provider: ForecastProvider
    kube: Kube
    metrics: OperatorMetrics
    clock: Callable[[], datetime]
    emit: EmitEvent
    # In-memory pacing only (a restart just re-plans / re-caps once more): uid -> last time.
    last_replan: dict[str, datetime] = field(default_factory=dict)
    last_power: dict[str, datetime] = field(default_factory=dict)

    # ------------------------------------------------------------------ helpers

    def _fetch(self, zone: str, start: datetime, end: datetime) -> Forecast:
        return self.provider.forecast(zone, start, end)

    def _current(self, zone: str) -> float:
        return self.provider.current(zone)

    def _decide(
        self, body: dict[str, Any], spec: GreenTrainingJobSpec, now: datetime, zones_with_nodes: Collection[str] | None
    ) -> PlanOutcome:
        return decide_plan(
            spec, created_of(body), now, zones_with_nodes, self._fetch, self._current, self.config.default_zone
        )

    def zone_selector(self, zone: str | None) -> dict[str, str] | None:
        if not zone:
            return None
        values = [label for label, z in self.config.zone_map.items() if z == zone]
        return {self.config.zone_label: values[0] if values else zone}

    def _conditions(
        self, status: Mapping[str, Any], updates: list[CondUpdate], gen: int | None
    ) -> list[dict[str, Any]]:
        return apply_conditions(list(status.get("conditions") or []), updates, self.clock(), gen)

    def _set_conditions(
        self, status: Mapping[str, Any], patch: dict[str, Any], updates: list[CondUpdate], gen: int | None
    ) -> None:
        """Merge `updates` on top of what this same pass already patched, so updates never clobber."""
        st = patch.setdefault("status", {})
        base = st.get("conditions") or list(status.get("conditions") or [])
        st["conditions"] = apply_conditions(base, updates, self.clock(), gen)

    def _tick_slack(self) -> timedelta:
        # A start is only late when it misses latestStart by more than the operator's own pacing.
        return timedelta(seconds=2 * self.config.tick_seconds + 5)

    def _events(self, body: dict[str, Any], events: list[Event]) -> None:
        for e in events:
            self.emit(body, e)

    # ------------------------------------------------------------------ planning + Job creation

    def ensure(
        self,
        body: dict[str, Any],
        status: Mapping[str, Any],
        patch: dict[str, Any],
        zones_with_nodes: Collection[str] | None,
        job: JobState | None,
    ) -> None:
        """Plan the job and create its Job if that has not happened yet (create, resume, retries)."""
        name, _, uid, gen = ref_of(body)
        now = self.clock()
        spec = self._spec(body, status, patch)
        if spec is None:
            return
        if status.get("plan") and status.get("jobName") and self._confirm_job(body, job) is not None:
            return  # planned and the Job exists: a resume after restart has nothing to do
        outcome = self._decide(body, spec, now, zones_with_nodes)
        conds = list(outcome.conditions)
        if outcome.plan is None:
            waiting = status.get("phase") == Phase.PENDING and status.get("observedGeneration") == gen
            if waiting and not _changes(list(status.get("conditions") or []), conds):
                return  # still waiting for the same reason: no status write, no repeated Event
            self._events(body, outcome.events)
            patch["status"] = {
                "phase": Phase.PENDING,
                "observedGeneration": gen,
                "conditions": self._conditions(status, conds, gen),
            }
            return
        self._events(body, outcome.events)
        plan = outcome.plan
        start_now = outcome.starts_now(now)
        if job is not None and not job.suspended:
            start_now = True  # adopted a Job that already runs (operator died after starting it)
        if not self._create_or_adopt(body, status, patch, spec, plan, job, start_now):
            return
        conds.append(CondUpdate(Cond.INVALID_TEMPLATE, "False", "Accepted", "the Job template was accepted"))
        new_status: dict[str, Any] = {
            "jobName": name,
            "observedGeneration": gen,
            "plan": plan.dump(),
            "phase": Phase.RUNNING if start_now else Phase.DEFERRED,
        }
        if start_now:
            new_status["startTime"] = format_time(now)
            conds.append(CondUpdate(Cond.STARTED, "True", "Started", f"Job started in {plan.zone or 'any zone'}"))
            new_status["power"] = self._power(spec, plan.zone).dump()
            self.last_power[uid] = now
        else:
            conds.append(
                CondUpdate(
                    Cond.STARTED,
                    "False",
                    "Deferred",
                    f"deferred to {format_time(plan.scheduled_start or now)}",
                )
            )
        new_status["conditions"] = self._conditions(status, conds, gen)
        patch["status"] = new_status
        self.last_replan[uid] = now
        self.metrics.plans.labels(condition_reason(conds, Cond.PLANNED)).inc()
        if plan.expected_savings_percent is not None:
            self.metrics.planned_savings.observe(plan.expected_savings_percent)
        reason = "Started" if start_now else "Deferred"
        msg = next((u.message for u in conds if u.type == Cond.PLANNED), "")
        self.emit(body, Event("Normal", reason, msg))

    def _confirm_job(self, body: dict[str, Any], job: JobState | None) -> JobState | None:
        """The owned Job, asking the API server when the Job index has none.

        After a restart or a peering takeover the Job watch can lag the GreenTrainingJob watch; without
        this check a planned job would look Job-less and be re-planned (a second plan and Event).
        """
        if job is not None:
            return job
        name, namespace, uid, _ = ref_of(body)
        existing = self.kube.get_job(namespace, name)
        return job_state(existing) if existing is not None and owned_by(existing, uid) else None

    def _create_or_adopt(
        self,
        body: dict[str, Any],
        status: Mapping[str, Any],
        patch: dict[str, Any],
        spec: GreenTrainingJobSpec,
        plan: Plan,
        job: JobState | None,
        start_now: bool,
    ) -> bool:
        """Create the owned Job, or adopt the one a previous run created; False if the user must act."""
        name, namespace, uid, gen = ref_of(body)
        selector = self.zone_selector(plan.zone)
        try:
            if job is None:
                self.kube.create_job(
                    build_job(name, namespace, uid, spec, zone=plan.zone, zone_selector=selector, start_now=start_now)
                )
            elif start_now and job.suspended:
                self.kube.patch_job(namespace, name, start_patch(name, plan.zone, selector))
        except ApiException as exc:
            if exc.status in (400, 422):
                self._invalid(body, status, patch, "InvalidJobTemplate", api_error_message(exc), gen)
                return False
            if exc.status != 409:
                raise
            existing = self.kube.get_job(namespace, name)
            if existing is None or not owned_by(existing, uid):
                msg = f"a Job named {name} exists and is not owned by this GreenTrainingJob"
                self._invalid(body, status, patch, "JobNameTaken", msg, gen)
                return False
            # Ours (created before a restart, or the index lags): adopt it.
            if start_now and existing.get("spec", {}).get("suspend"):
                self.kube.patch_job(namespace, name, start_patch(name, plan.zone, selector))
        return True

    def _spec(
        self, body: dict[str, Any], status: Mapping[str, Any], patch: dict[str, Any]
    ) -> GreenTrainingJobSpec | None:
        try:
            return GreenTrainingJobSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            # The schema refuses almost everything; what slips through (e.g. a zero duration) lands here.
            problems = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            self._invalid(body, status, patch, "InvalidSpec", problems, ref_of(body).generation)
            return None

    def _invalid(
        self,
        body: dict[str, Any],
        status: Mapping[str, Any],
        patch: dict[str, Any],
        reason: str,
        message: str,
        gen: int | None,
    ) -> None:
        conds = [
            CondUpdate(Cond.INVALID_TEMPLATE, "True", reason, message),
            CondUpdate(Cond.PLANNED, "False", reason, "fix the spec; the operator retries on every change"),
        ]
        patch["status"] = {
            "phase": Phase.PENDING,
            "observedGeneration": gen,
            "conditions": self._conditions(status, conds, gen),
        }
        self.emit(body, Event("Warning", reason, message))

    # ------------------------------------------------------------------ the periodic look at one job

    def tick(
        self,
        body: dict[str, Any],
        status: Mapping[str, Any],
        patch: dict[str, Any],
        zones_with_nodes: Collection[str] | None,
        job: JobState | None,
    ) -> None:
        phase = status.get("phase")
        uid = ref_of(body).uid
        self.metrics.observe_phase(uid, phase)
        if phase in (None, Phase.PENDING):
            if condition_status(list(status.get("conditions") or []), Cond.INVALID_TEMPLATE) != "True":
                self.ensure(body, status, patch, zones_with_nodes, job)
        elif phase == Phase.DEFERRED:
            self._deferred(body, status, patch, zones_with_nodes, job)
        elif phase in (Phase.RUNNING, Phase.SUSPENDED):
            self._running(body, status, patch, job)
        else:
            self._account(body, status, patch, final=True)

    def _deferred(
        self,
        body: dict[str, Any],
        status: Mapping[str, Any],
        patch: dict[str, Any],
        zones_with_nodes: Collection[str] | None,
        job: JobState | None,
    ) -> None:
        name, namespace, uid, gen = ref_of(body)
        now = self.clock()
        plan = Plan.model_validate(status.get("plan") or {})
        job = self._confirm_job(body, job)
        if job is None:
            self.ensure(body, {**status, "plan": None}, patch, zones_with_nodes, None)  # Job lost: recreate
            return
        if plan.scheduled_start is not None and now >= plan.scheduled_start:
            self.start(body, status, patch, plan)
            return
        last = self.last_replan.get(uid)
        if last is not None and now - last < self.config.replan_interval:
            return
        self.last_replan[uid] = now
        spec = self._spec(body, status, patch)
        if spec is None:
            return
        outcome = self._decide(body, spec, now, zones_with_nodes)
        if outcome.plan is None or same_plan(plan, outcome.plan):
            # Still refresh conditions that changed (e.g. forecasts came back).
            updates = [u for u in outcome.conditions if u.type != Cond.PLANNED]
            if any(condition_status(list(status.get("conditions") or []), u.type) != u.status for u in updates):
                patch["status"] = {"conditions": self._conditions(status, updates, gen)}
            return
        self._events(body, outcome.events)
        if outcome.starts_now(now):
            self.start(body, status, patch, outcome.plan, outcome.conditions)
            return
        patch["status"] = {
            "plan": outcome.plan.dump(),
            "conditions": self._conditions(status, outcome.conditions, gen),
        }
        self.emit(
            body,
            Event(
                "Normal",
                "Replanned",
                next((u.message for u in outcome.conditions if u.type == Cond.PLANNED), ""),
            ),
        )
        log.info("re-planned %s/%s", namespace, name)

    def start(
        self,
        body: dict[str, Any],
        status: Mapping[str, Any],
        patch: dict[str, Any],
        plan: Plan,
        extra: list[CondUpdate] | None = None,
    ) -> None:
        name, namespace, uid, gen = ref_of(body)
        now = self.clock()
        spec = self._spec(body, status, patch)
        if spec is None:
            return
        self.kube.patch_job(namespace, name, start_patch(name, plan.zone, self.zone_selector(plan.zone)))
        conds = [
            *(extra or []),
            CondUpdate(Cond.STARTED, "True", "Started", f"Job started in {plan.zone or 'any zone'}"),
        ]
        if plan.latest_start is not None and now > plan.latest_start + self._tick_slack():
            conds.append(
                CondUpdate(
                    Cond.DEADLINE_AT_RISK,
                    "True",
                    "StartedLate",
                    f"started after the latest start {format_time(plan.latest_start)}",
                )
            )
        patch["status"] = {
            "phase": Phase.RUNNING,
            "startTime": format_time(now),
            "plan": plan.dump(),
            "power": self._power(spec, plan.zone).dump(),
            "conditions": self._conditions(status, conds, gen),
        }
        self.last_power[uid] = now
        self.metrics.observe_phase(uid, Phase.RUNNING)
        self.emit(body, Event("Normal", "Started", f"Job {name} started in {plan.zone or 'any zone'}"))

    # ------------------------------------------------------------------ running: power, energy, end

    def _power(self, spec: GreenTrainingJobSpec, zone: str | None) -> PowerStatus:
        intensity: float | None = None
        if zone and spec.power.policy == "CarbonAware":
            try:
                intensity = self._current(zone)
            except ProviderError as exc:
                log.warning("no current intensity for %s: %s", zone, exc)
        decision = target_cap(spec.power, intensity, self.config.cap_step_watts)
        return PowerStatus(
            target_cap_watts=decision.cap_watts,
            reason=decision.reason,
            g_per_k_wh=round(intensity, 1) if intensity is not None else None,
        )

    def _running(
        self, body: dict[str, Any], status: Mapping[str, Any], patch: dict[str, Any], job: JobState | None
    ) -> None:
        _, _, uid, gen = ref_of(body)
        now = self.clock()
        if job is not None and job.outcome is not None:
            self.finish(body, status, patch, job.outcome)
            return
        spec = self._spec(body, status, patch)
        if spec is None:
            return
        plan = Plan.model_validate(status.get("plan") or {})
        self._check_overrun(body, status, patch, plan, now)
        last = self.last_power.get(uid)
        if last is None or now - last >= self.config.power_interval:
            self.last_power[uid] = now
            new = self._power(spec, plan.zone)
            old = PowerStatus.model_validate(status.get("power") or {})
            if (new.target_cap_watts, new.reason) != (old.target_cap_watts, old.reason):
                patch.setdefault("status", {})["power"] = new.dump()
                capped = new.target_cap_watts is not None
                self._set_conditions(
                    status,
                    patch,
                    [
                        CondUpdate(
                            Cond.POWER_CAPPED,
                            "True" if capped else "False",
                            new.reason or "None",
                            f"GPUs capped at {new.target_cap_watts} W" if capped else "GPUs at their default limit",
                        )
                    ],
                    gen,
                )
        self._account(body, status, patch, final=False, spec=spec)

    def _check_overrun(
        self, body: dict[str, Any], status: Mapping[str, Any], patch: dict[str, Any], plan: Plan, now: datetime
    ) -> None:
        """A job still running after its deadline (estimatedDuration was too short) is flagged once."""
        conditions = list(status.get("conditions") or [])
        if (
            plan.deadline is None
            or now <= plan.deadline
            or condition_status(conditions, Cond.DEADLINE_AT_RISK) == "True"
        ):
            return
        msg = f"still running after the deadline {format_time(plan.deadline)}: estimatedDuration may be too short"
        gen = ref_of(body).generation
        self._set_conditions(
            status, patch, [CondUpdate(Cond.DEADLINE_AT_RISK, "True", "RunningPastDeadline", msg)], gen
        )
        self.emit(body, Event("Warning", "DeadlineAtRisk", msg))

    def finish(self, body: dict[str, Any], status: Mapping[str, Any], patch: dict[str, Any], outcome: str) -> None:
        gen = ref_of(body).generation
        ok = outcome == Phase.SUCCEEDED
        conds = [
            CondUpdate(
                Cond.COMPLETE,
                "True" if ok else "False",
                "JobSucceeded" if ok else "JobFailed",
                "the Job completed" if ok else "the Job failed",
            )
        ]
        if not ok:
            conds.append(CondUpdate(Cond.FAILED, "True", "JobFailed", "the Job failed; see its pods"))
        self._account(body, status, patch, final=True)
        st = patch.setdefault("status", {})
        st.update(
            {
                "phase": outcome,
                "completionTime": format_time(self.clock()),
                "conditions": self._conditions({**status, **st}, conds, gen),
            }
        )
        self.metrics.observe_phase(ref_of(body).uid, outcome)
        self.emit(
            body,
            Event(
                "Normal" if ok else "Warning",
                "Completed" if ok else "Failed",
                f"Job {body['metadata']['name']} {'succeeded' if ok else 'failed'}",
            ),
        )

    def _account(
        self,
        body: dict[str, Any],
        status: Mapping[str, Any],
        patch: dict[str, Any],
        *,
        final: bool,
        spec: GreenTrainingJobSpec | None = None,
    ) -> None:
        energy = status.get("energy") or {}
        nodes = {n: NodeEnergy.model_validate(v) for n, v in (energy.get("nodes") or {}).items() if v}
        previous = Emissions.model_validate(status.get("emissions") or {})
        if not nodes or all(previous.accounted_joules.get(n, -1) >= e.joules for n, e in nodes.items()):
            return  # nothing new since the last accounting: no write
        plan = Plan.model_validate(status.get("plan") or {})
        intensity = self._intensity_now(plan)
        acc = rounded(account(nodes, previous, intensity))
        self.metrics.energy.inc(max(acc.k_wh - (energy.get("kWh") or 0.0), 0.0))
        self.metrics.co2e.inc(max(acc.grams - (previous.grams or 0.0), 0.0))
        st = patch.setdefault("status", {})
        st["energy"] = {"kWh": acc.k_wh, "gpuHours": acc.gpu_hours}
        st["emissions"] = acc.emissions().dump()
        if spec is None or final:
            return
        verdict = check_budget(spec.budget, acc.k_wh, acc.grams)
        gen = ref_of(body).generation
        was = condition_status(list(status.get("conditions") or []), Cond.BUDGET_EXCEEDED)
        if verdict.exceeded and was != "True":
            self._set_conditions(
                status,
                patch,
                [
                    CondUpdate(
                        Cond.BUDGET_EXCEEDED,
                        "True",
                        "Suspended" if verdict.suspend else "Warn",
                        verdict.message,
                    )
                ],
                gen,
            )
            self.emit(body, Event("Warning", "BudgetExceeded", verdict.message))
            if verdict.suspend:
                ref = ref_of(body)
                self.kube.patch_job(ref.namespace, ref.name, {"spec": {"suspend": True}})
                st["phase"] = Phase.SUSPENDED

    def _intensity_now(self, plan: Plan) -> float:
        if plan.zone:
            try:
                return self._current(plan.zone)
            except ProviderError as exc:
                log.warning("accounting with the planned intensity, no current value for %s: %s", plan.zone, exc)
        return plan.expected_g_per_k_wh or 0.0

    # ------------------------------------------------------------------ spec changes

    def respec(
        self,
        body: dict[str, Any],
        status: Mapping[str, Any],
        patch: dict[str, Any],
        diff: Any,
        zones_with_nodes: Collection[str] | None,
        job: JobState | None,
    ) -> None:
        """A spec change: re-plan a job that has not started; a new template replaces its Job."""
        phase = status.get("phase")
        ref = ref_of(body)
        if phase in (None, Phase.PENDING, Phase.DEFERRED):
            template_changed = any(tuple(d[1])[:1] == ("jobTemplate",) for d in diff or [])
            if template_changed and job is not None:
                self.kube.delete_job(ref.namespace, ref.name)
                job = None
            cleared = {
                **status,
                "plan": None,
                "conditions": [c_ for c_ in status.get("conditions") or [] if c_.get("type") != Cond.INVALID_TEMPLATE],
            }
            self.ensure(body, cleared, patch, zones_with_nodes, job)
        elif phase in (Phase.RUNNING, Phase.SUSPENDED):
            self.last_power.pop(ref.uid, None)  # re-evaluate the cap at the next tick
            spec = self._spec(body, status, patch)
            if phase == Phase.SUSPENDED and spec is not None:
                energy = status.get("energy") or {}
                grams = (status.get("emissions") or {}).get("grams") or 0.0
                if not check_budget(spec.budget, energy.get("kWh") or 0.0, grams).exceeded:
                    self.kube.patch_job(ref.namespace, ref.name, {"spec": {"suspend": False}})
                    patch["status"] = {
                        "phase": Phase.RUNNING,
                        "conditions": self._conditions(
                            status,
                            [CondUpdate(Cond.BUDGET_EXCEEDED, "False", "BudgetRaised", "within budget again")],
                            ref.generation,
                        ),
                    }
                    self.emit(body, Event("Normal", "Resumed", "budget raised: Job resumed"))
        patch.setdefault("status", {})["observedGeneration"] = ref.generation


def _changes(current: list[dict[str, Any]], updates: list[CondUpdate]) -> bool:
    """Whether `updates` would change any condition's status, reason or message."""
    by_type = {c_.get("type"): c_ for c_ in current}
    for u in updates:
        old = by_type.get(u.type)
        if old is None or (old.get("status"), old.get("reason"), old.get("message")) != (u.status, u.reason, u.message):
            return True
    return False


def condition_reason(updates: list[CondUpdate], type_: str) -> str:
    return next((u.reason for u in updates if u.type == type_), "Unknown")


def job_state(body: Mapping[str, Any]) -> JobState:
    meta = body.get("metadata", {})
    return JobState(
        uid=meta.get("uid", ""),
        owner_uids=tuple(r.get("uid", "") for r in meta.get("ownerReferences", []) or []),
        suspended=bool((body.get("spec") or {}).get("suspend")),
        outcome=job_outcome(dict(body)),
    )


__all__ = ["JobState", "Reconciler", "c", "job_state"]
