"""What the carbon AdmissionCheck does with one Kueue Workload: pure, on plain dicts.

The way to wait without holding quota: a Workload held by an AdmissionCheck in Pending (or Retry)
keeps its quota reserved, so while a job waits for its clean window greenjobs DEACTIVATES its
Workload (`spec.active: false`, marked with the annotation greenjobs.dev/held-until). Kueue evicts
an inactive Workload and releases its quota, and never reserves quota for it. At the planned start
greenjobs reactivates it; Kueue queues it again, reserves quota, and waits for this check, which then
answers Ready with podSetUpdates carrying the planned zone's nodeSelector.

A podSetUpdate whose nodeSelector contradicts the assigned ResourceFlavor's nodeLabels makes Kueue
fail the Workload for good, so such a zone is never sent: the flavor's zone wins, and a Warning says so.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from greenjobs.api.durations import format_time, parse_time

from .names import ANN_DECIDED_AT, ANN_HELD, ANN_PLAN_MESSAGE, ANN_PLANNED_START, ANN_PLANNED_ZONE

START_SLACK = timedelta(seconds=1)
Obj = dict[str, Any]


@dataclass(frozen=True)
class Planned:
    zone: str | None
    start: datetime
    message: str = ""
    decided_at: datetime | None = None


@dataclass(frozen=True)
class WorkloadView:
    """The parts of a Workload that matter here."""

    namespace: str
    name: str
    active: bool
    queue_name: str | None
    cluster_queue: str | None  # from status.admission, once quota is reserved
    quota_reserved: bool
    finished: bool
    check_states: dict[str, str]  # admission check name -> Pending | Ready | Retry | Rejected
    pod_sets: list[str]
    flavors: dict[str, list[str]]  # pod set -> flavors assigned (one per covered resource)
    annotations: dict[str, str]
    owner: tuple[str, str, str] | None  # apiVersion, kind, name of the job Kueue made it for


def view(wl: Mapping[str, Any]) -> WorkloadView:
    meta, spec, status = wl.get("metadata") or {}, wl.get("spec") or {}, wl.get("status") or {}
    conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    admission = status.get("admission") or {}
    flavors = {
        psa.get("name", "main"): sorted(set((psa.get("flavors") or {}).values()))
        for psa in admission.get("podSetAssignments") or []
    }
    owner = next(
        ((r["apiVersion"], r["kind"], r["name"]) for r in meta.get("ownerReferences") or [] if r.get("controller")),
        None,
    )
    return WorkloadView(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        active=spec.get("active", True) is not False,
        queue_name=spec.get("queueName"),
        cluster_queue=admission.get("clusterQueue"),
        quota_reserved=conds.get("QuotaReserved") == "True",
        finished=conds.get("Finished") == "True",
        check_states={s["name"]: s.get("state", "Pending") for s in status.get("admissionChecks") or []},
        pod_sets=[ps.get("name", "main") for ps in spec.get("podSets") or []],
        flavors=flavors,
        annotations=dict(meta.get("annotations") or {}),
        owner=owner,
    )


def recorded_plan(wl: WorkloadView) -> Planned | None:
    start = wl.annotations.get(ANN_PLANNED_START)
    if not start:
        return None
    try:
        when = parse_time(start)
        decided = parse_time(wl.annotations[ANN_DECIDED_AT]) if wl.annotations.get(ANN_DECIDED_AT) else None
    except ValueError:
        return None
    zone = wl.annotations.get(ANN_PLANNED_ZONE) or None
    return Planned(zone, when, wl.annotations.get(ANN_PLAN_MESSAGE, ""), decided)


def plan_annotations(p: Planned) -> dict[str, str]:
    out = {ANN_PLANNED_ZONE: p.zone or "", ANN_PLANNED_START: format_time(p.start), ANN_PLAN_MESSAGE: p.message}
    if p.decided_at is not None:
        out[ANN_DECIDED_AT] = format_time(p.decided_at)
    return out


def needs_replan(wl: WorkloadView, plan: Planned, now: datetime, interval: timedelta) -> bool:
    """Forecasts move: a Workload that greenjobs holds is planned again every `interval` until its
    start (the window itself comes from the job's creation, so a re-plan never extends it)."""
    held = not wl.active and ANN_HELD in wl.annotations
    return held and now + START_SLACK < plan.start and (plan.decided_at is None or plan.decided_at + interval <= now)


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class Deactivate:
    """Wait without quota: spec.active false, marked as ours."""

    until: datetime


@dataclass(frozen=True)
class Activate:
    """The planned start has come: back into Kueue's queue."""


@dataclass(frozen=True)
class AnswerReady:
    check: str
    pod_set_updates: list[Obj]
    message: str


@dataclass(frozen=True)
class Warn:
    reason: str
    message: str


Action = Deactivate | Activate | AnswerReady | Warn


@dataclass(frozen=True)
class Decision:
    actions: list[Action] = field(default_factory=list)
    wake_at: datetime | None = None  # when to look again without any event


def decide(
    wl: WorkloadView,
    checks: set[str],
    plan: Planned,
    now: datetime,
    flavor_labels: Mapping[str, Mapping[str, str]],
    zone_label: str,
    zone_value: str | None,
) -> Decision:
    """`checks`: our AdmissionChecks that the Workload's ClusterQueue uses; `zone_value` is the node
    label value of the planned zone (None: no zone chosen)."""
    if wl.finished or not checks:
        return Decision()
    held_by_us = ANN_HELD in wl.annotations
    if now + START_SLACK < plan.start:
        if wl.active:
            return Decision([Deactivate(plan.start)], plan.start)
        return Decision([], plan.start)
    if not wl.active:
        # Ours: reactivate. The user's own deactivation is left alone.
        return Decision([Activate()] if held_by_us else [])
    pending = sorted(c for c in checks if wl.check_states.get(c) == "Pending")
    if not wl.quota_reserved or not pending:
        return Decision()
    updates, conflicts = pod_set_updates(wl, flavor_labels, zone_label, zone_value)
    actions: list[Action] = []
    if conflicts:
        actions.append(Warn("ZoneConflict", "; ".join(conflicts)))
    where = f"in {plan.zone}" if zone_value and not conflicts else "where its flavor is"
    message = f"greenjobs: start now {where}" + (f" ({plan.message})" if plan.message else "")
    actions += [AnswerReady(check, updates, message[:256]) for check in pending]
    return Decision(actions)


def pod_set_updates(
    wl: WorkloadView, flavor_labels: Mapping[str, Mapping[str, str]], zone_label: str, zone_value: str | None
) -> tuple[list[Obj], list[str]]:
    """One update per pod set with the zone's nodeSelector, except where an assigned flavor pins
    another zone (Kueue would fail the Workload for good): there the flavor's zone stands."""
    updates: list[Obj] = []
    conflicts: list[str] = []
    for ps in wl.pod_sets:
        pinned = {
            flavor: flavor_labels[flavor][zone_label]
            for flavor in wl.flavors.get(ps, [])
            if zone_label in flavor_labels.get(flavor, {})
        }
        other = {f: v for f, v in pinned.items() if v != zone_value}
        if zone_value is None or other:
            if zone_value is not None:
                pins = ", ".join(f"{f} ({zone_label}={v})" for f, v in sorted(other.items()))
                conflicts.append(
                    f"pod set {ps}: planned zone {zone_value} contradicts ResourceFlavor {pins}; the flavor's zone"
                    " is kept (use flavors without zone labels so that greenjobs picks the zone)"
                )
            updates.append({"name": ps})
        else:
            updates.append({"name": ps, "nodeSelector": {zone_label: zone_value}})
    return updates, conflicts


def cluster_queue_checks(cq: Mapping[str, Any]) -> set[str]:
    """The AdmissionChecks a ClusterQueue uses (the strategy form, or the older plain list)."""
    spec = cq.get("spec") or {}
    names = {c["name"] for c in (spec.get("admissionChecksStrategy") or {}).get("admissionChecks") or []}
    return names | set(spec.get("admissionChecks") or [])


def active_condition_needed(check: Mapping[str, Any]) -> bool:
    conds = (check.get("status") or {}).get("conditions") or []
    return not any(c.get("type") == "Active" and c.get("status") == "True" for c in conds)


def zone_selector_value(zone: str | None, zone_map: Mapping[str, str]) -> str | None:
    """The node label value of a zone (zoneMap maps label value -> zone; invert it)."""
    if zone is None:
        return None
    return next((label for label, z in zone_map.items() if z == zone), zone)
