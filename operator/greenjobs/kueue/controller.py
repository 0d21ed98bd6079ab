"""The carbon AdmissionCheck controller: caches what kopf's watches deliver, plans each Workload
once, and carries out decisions.decide's actions. All Kubernetes writes are in this module."""

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from greenjobs.api.durations import format_time, parse_time
from greenjobs.api.models import GreenTrainingJobSpec, Placement
from greenjobs.carbon.providers.base import ForecastProvider
from greenjobs.config import OperatorConfig
from greenjobs.planning.decisions import decide_plan
from greenjobs.workloads import SUPPORTED, adapter_for

from .decisions import (
    Activate,
    AnswerReady,
    Deactivate,
    Planned,
    Warn,
    WorkloadView,
    active_condition_needed,
    cluster_queue_checks,
    decide,
    needs_replan,
    plan_annotations,
    recorded_plan,
    view,
    zone_selector_value,
)
from .hints import read_hints
from .names import ANN_HELD, CONTROLLER_NAME, FIELD_MANAGER, KUEUE_API, KUEUE_GROUP, KUEUE_VERSION

log = logging.getLogger("greenjobs.kueue")
_MERGE = "application/merge-patch+json"
_APPLY = "application/apply-patch+yaml"
Key = tuple[str, str]


class KueueCheck:
    def __init__(
        self,
        api: client.ApiClient,
        config: OperatorConfig,
        provider: ForecastProvider,
        clock: Callable[[], datetime],
        controller_name: str = CONTROLLER_NAME,
    ) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.config = config
        self.provider = provider
        self.clock = clock
        self.controller_name = controller_name
        self.lock = threading.RLock()
        self.checks: set[str] = set()  # our AdmissionChecks
        self.cq_checks: dict[str, set[str]] = {}  # ClusterQueue -> its AdmissionCheck names
        self.lq_cq: dict[Key, str] = {}  # (namespace, LocalQueue) -> ClusterQueue
        self.workloads: dict[Key, dict[str, Any]] = {}
        self.wake: dict[Key, datetime] = {}

    # ------------------------------------------------------------ watch events (kopf handlers)
    def on_admission_check(self, body: Mapping[str, Any], deleted: bool) -> None:
        name = body["metadata"]["name"]
        with self.lock:
            if deleted or (body.get("spec") or {}).get("controllerName") != self.controller_name:
                self.checks.discard(name)
                return
            self.checks.add(name)
        if active_condition_needed(body):
            self._set_active(name)
        self.reconcile_all()

    def on_cluster_queue(self, body: Mapping[str, Any], deleted: bool) -> None:
        with self.lock:
            name = body["metadata"]["name"]
            if deleted:
                self.cq_checks.pop(name, None)
            else:
                self.cq_checks[name] = cluster_queue_checks(body)
        self.reconcile_all()

    def on_local_queue(self, body: Mapping[str, Any], deleted: bool) -> None:
        meta = body["metadata"]
        with self.lock:
            if deleted:
                self.lq_cq.pop((meta["namespace"], meta["name"]), None)
            else:
                self.lq_cq[(meta["namespace"], meta["name"])] = (body.get("spec") or {}).get("clusterQueue", "")

    def on_workload(self, body: Mapping[str, Any], deleted: bool) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        with self.lock:
            if deleted:
                self.workloads.pop(key, None)
                self.wake.pop(key, None)
                return
            if not _newer(body, self.workloads.get(key)):
                return  # older than what our own write returned: acting on it would repeat that write
            self.workloads[key] = dict(body)
        self.reconcile(key)

    def tick(self) -> None:
        """Look again at every Workload whose planned start has come (no watch event marks that)."""
        now = self.clock()
        with self.lock:
            due = [k for k, t in self.wake.items() if t <= now]
        for key in due:
            self.reconcile(key)

    def reconcile_all(self) -> None:
        with self.lock:
            keys = list(self.workloads)
        for key in keys:
            self.reconcile(key)

    # ------------------------------------------------------------ one Workload
    def checks_for(self, wl: WorkloadView) -> set[str]:
        cq = wl.cluster_queue or self.lq_cq.get((wl.namespace, wl.queue_name or ""))
        return self.cq_checks.get(cq or "", set()) & self.checks

    def reconcile(self, key: Key) -> None:
        with self.lock:
            body = self.workloads.get(key)
            if body is None:
                return
            wl = view(body)
            checks = self.checks_for(wl)
            if wl.finished or not checks:
                self.wake.pop(key, None)
                return
            try:
                self._reconcile(body, wl, checks)
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise
                log.info("workload %s/%s changed under us (%s): next event retries", *key, exc.status)

    def _reconcile(self, body: dict[str, Any], wl: WorkloadView, checks: set[str]) -> None:
        key = (wl.namespace, wl.name)
        plan = recorded_plan(wl)
        if plan is None:
            plan = self._plan(body, wl)
            self._patch_workload(wl, {"metadata": {"annotations": plan_annotations(plan)}})
            self._event(body, "Normal", "Planned", plan.message or f"start {format_time(plan.start)}")
        elif needs_replan(wl, plan, self.clock(), self.config.replan_interval):
            new = self._plan(body, wl)
            held = {ANN_HELD: format_time(new.start)}
            self._patch_workload(wl, {"metadata": {"annotations": {**plan_annotations(new), **held}}})
            if (new.zone, new.start) != (plan.zone, plan.start):
                self._event(body, "Normal", "Replanned", new.message or f"start {format_time(new.start)}")
            plan = new
        flavors = {f for fs in wl.flavors.values() for f in fs}
        zone_value = zone_selector_value(plan.zone, self.config.zone_map)
        decision = decide(
            wl, checks, plan, self.clock(), self._flavor_labels(flavors), self.config.zone_label, zone_value
        )
        if decision.wake_at is not None:
            # While held, also wake for the next re-plan (no watch event would come).
            replan_at = (plan.decided_at or self.clock()) + self.config.replan_interval
            self.wake[key] = min(decision.wake_at, replan_at)
        else:
            self.wake.pop(key, None)
        for action in decision.actions:
            if isinstance(action, Deactivate):
                until = format_time(action.until)
                self._patch_workload(wl, {"metadata": {"annotations": {ANN_HELD: until}}, "spec": {"active": False}})
                self._event(body, "Normal", "Deferred", f"held without quota until {until} ({plan.message})")
            elif isinstance(action, Activate):
                self._patch_workload(wl, {"metadata": {"annotations": {ANN_HELD: None}}, "spec": {"active": True}})
                self._event(body, "Normal", "Released", f"planned start reached: queued again ({plan.message})")
            elif isinstance(action, AnswerReady):
                self._answer(wl, action)
            elif isinstance(action, Warn):
                self._event(body, "Warning", action.reason, action.message)

    def _plan(self, body: Mapping[str, Any], wl: WorkloadView) -> Planned:
        owner = self._owner(wl)
        meta = (owner or body).get("metadata") or {}
        hints = read_hints(meta.get("annotations"))
        for problem in hints.errors:
            self._event(body, "Warning", "InvalidHints", problem)
        zones_with_nodes = self._zones_with_nodes()
        zones = hints.zones or sorted(zones_with_nodes)
        spec = GreenTrainingJobSpec.model_construct(timing=hints.timing, placement=Placement(zones=zones))
        created = _created(meta) or _created(body.get("metadata") or {}) or self.clock()
        now = self.clock()
        outcome = decide_plan(
            spec,
            created,
            now,
            zones_with_nodes,
            self.provider.forecast,
            self.provider.current,
            self.config.default_zone,
        )
        if outcome.plan is None or outcome.plan.scheduled_start is None:
            return Planned(None, now, "no zone with nodes among the allowed ones: left to Kueue", now)
        message = next((c.message for c in outcome.conditions if c.type == "Planned"), "")
        return Planned(outcome.plan.zone, outcome.plan.scheduled_start, message, now)

    # ------------------------------------------------------------ API calls
    def _owner(self, wl: WorkloadView) -> dict[str, Any] | None:
        if wl.owner is None or (wl.owner[0], wl.owner[1]) not in SUPPORTED:
            return None
        adapter = adapter_for(wl.owner[0], wl.owner[1])
        version = wl.owner[0].rpartition("/")[2]
        try:
            obj: dict[str, Any] = self.objects.get_namespaced_custom_object(
                adapter.group, version, wl.namespace, adapter.plural, wl.owner[2]
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def _zones_with_nodes(self) -> set[str]:
        nodes = self.core.list_node(label_selector=self.config.zone_label).items
        values = {n.metadata.labels[self.config.zone_label] for n in nodes}
        return {self.config.zone_map.get(v, v) for v in values}

    def _flavor_labels(self, flavors: set[str]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for name in flavors:
            try:
                rf = self.objects.get_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, "resourceflavors", name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                continue
            out[name] = dict((rf.get("spec") or {}).get("nodeLabels") or {})
        return out

    def _patch_workload(self, wl: WorkloadView, patch: dict[str, Any]) -> None:
        updated = self.objects.patch_namespaced_custom_object(
            KUEUE_GROUP, KUEUE_VERSION, wl.namespace, "workloads", wl.name, patch, _content_type=_MERGE
        )
        self._remember(updated)

    def _remember(self, updated: Any) -> None:
        """Cache what a write returned, so a tick before its watch event does not act twice."""
        if isinstance(updated, dict) and updated.get("metadata"):
            key = (updated["metadata"]["namespace"], updated["metadata"]["name"])
            if _newer(updated, self.workloads.get(key)):
                self.workloads[key] = updated

    def _answer(self, wl: WorkloadView, action: AnswerReady) -> None:
        # Server-side apply with our own manager, forced: Kueue force-owns these fields when it
        # writes the Pending entry, so a plain apply conflicts.
        state: dict[str, Any] = {
            "name": action.check,
            "state": "Ready",
            "message": action.message,
            "lastTransitionTime": format_time(self.clock()),
            "podSetUpdates": action.pod_set_updates,
        }
        body = {
            "apiVersion": KUEUE_API,
            "kind": "Workload",
            "metadata": {"name": wl.name, "namespace": wl.namespace},
            "status": {"admissionChecks": [state]},
        }
        updated = self.objects.patch_namespaced_custom_object_status(
            KUEUE_GROUP, KUEUE_VERSION, wl.namespace, "workloads", wl.name, body,
            field_manager=FIELD_MANAGER, force=True, _content_type=_APPLY,
        )  # fmt: skip
        self._remember(updated)
        log.info("workload %s/%s: %s Ready (%s)", wl.namespace, wl.name, action.check, action.message)

    def _set_active(self, name: str) -> None:
        body = {
            "apiVersion": KUEUE_API,
            "kind": "AdmissionCheck",
            "metadata": {"name": name},
            "status": {
                "conditions": [
                    {
                        "type": "Active",
                        "status": "True",
                        "reason": "Active",
                        "message": "the greenjobs carbon check controller is running",
                        "lastTransitionTime": format_time(self.clock()),
                    }
                ]
            },
        }
        self.objects.patch_cluster_custom_object_status(
            KUEUE_GROUP, KUEUE_VERSION, "admissionchecks", name, body,
            field_manager=FIELD_MANAGER, force=True, _content_type=_APPLY,
        )  # fmt: skip
        log.info("admission check %s marked Active", name)

    def _event(self, wl: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        meta = wl["metadata"]
        now = self.clock()
        event = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": KUEUE_API,
                "kind": "Workload",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "greenjobs-carbon-check"},
            "firstTimestamp": format_time(now),
            "lastTimestamp": format_time(now),
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], event)
        except ApiException as exc:  # an Event is news, not state: never fail the decision for it
            log.warning("could not post event %s on %s: %s", reason, meta["name"], exc.reason)


def _newer(body: Mapping[str, Any], cached: Mapping[str, Any] | None) -> bool:
    """Whether `body` is not older than `cached` (resourceVersions compared as numbers when they are;
    they are opaque to clients, so anything else counts as newer)."""
    if cached is None:
        return True
    new, old = body["metadata"].get("resourceVersion", ""), cached["metadata"].get("resourceVersion", "")
    if str(new).isdigit() and str(old).isdigit():
        return int(new) >= int(old)
    return True


def _created(meta: Mapping[str, Any]) -> datetime | None:
    value = meta.get("creationTimestamp")
    return parse_time(value) if isinstance(value, str) else None
