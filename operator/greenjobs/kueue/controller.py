"""The carbon AdmissionCheck controller: caches what kopf's watches deliver, plans each Workload
once, and carries out decisions.decide's actions. All Kubernetes writes are in this module.

It runs on the operator's runtime (greenjobs.runtime): kopf's event handlers only update the caches
and put keys on a work queue, which kopf never retries for us; worker threads reconcile one key at a
time, and any failure (a transient 500 on the Ready answer, an unreachable API server) is retried with
backoff instead of being lost while the Workload holds quota. ResourceFlavors are watched and cached
(no GET per ClusterQueue event). With leader election only the holder of the Lease writes; each write
re-checks it.
"""

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace as dc_replace
from datetime import datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from greenjobs.api.constants import GPU_RESOURCE
from greenjobs.api.durations import format_time, parse_time
from greenjobs.api.models import GreenTrainingJobSpec, Placement
from greenjobs.carbon.providers.base import ForecastProvider, ProviderError
from greenjobs.config import OperatorConfig
from greenjobs.planning.decisions import (
    START_SLACK,
    AskFleet,
    PlanOutcome,
    decide_plan,
    fleet_forecasts,
    fleet_job,
    grid_step,
)
from greenjobs.planning.fleet import FleetJob, FleetPlan
from greenjobs.planning.settings import FleetSettings
from greenjobs.planning.timing import window_of
from greenjobs.runtime.workqueue import WorkQueue, serve, stop_workers
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
from .quota import (
    cohort_of,
    flavor_zone,
    free_gpus_by_zone,
    joint_plan,
    placement_of,
    plannable_quota,
    queue_capacity,
    workload_gpus,
)

log = logging.getLogger("greenjobs.kueue")
_MERGE = "application/merge-patch+json"
_APPLY = "application/apply-patch+yaml"
Key = tuple[str, str]
# Keys of the work queue: a Workload (namespace, name), or an AdmissionCheck to mark Active.
CHECK_NS = "\x00admissioncheck"
BACKOFF = (1, 2, 5, 10, 30, 60)
NO_ROOM_RETRY = timedelta(seconds=10)
CLAIM_TTL = timedelta(seconds=30)


class NotLeader(Exception):
    """This replica does not hold the Lease: the write is not sent."""


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
        self.fleet_settings = FleetSettings.parse(config.fleet)  # the same `fleet:` as the operator's
        self.provider = provider
        self.clock = clock
        self.controller_name = controller_name
        self.lock = threading.RLock()
        self.checks: set[str] = set()  # our AdmissionChecks
        self.cq_checks: dict[str, set[str]] = {}  # ClusterQueue -> its AdmissionCheck names
        self.lq_cq: dict[Key, str] = {}  # (namespace, LocalQueue) -> ClusterQueue
        self.workloads: dict[Key, dict[str, Any]] = {}
        self.wake: dict[Key, datetime] = {}
        self.flavors: dict[str, dict[str, str]] = {}  # ResourceFlavor -> its nodeLabels (watched)
        self.node_zones: dict[str, str] = {}  # node -> its zone, for nodes with the zone label (watched)
        self.cluster_queues: dict[str, dict[str, Any]] = {}  # name -> body (spec quota, status reservation)
        self.held: dict[Key, tuple[str, FleetJob]] = {}  # Workloads planned here: (ClusterQueue, as planned)
        self.replan_now: set[Key] = set()  # held Workloads a newer joint plan starts earlier: plan again now
        # Workloads a joint plan starts now, until their release shows in the cache: they hold their
        # quota in every later plan (two workers must not both fill the same free GPUs).
        self.claims: dict[Key, datetime] = {}
        self.plan_lock = threading.Lock()  # one joint plan at a time: each sees the claims before it
        self.queue: WorkQueue[Key] = WorkQueue()
        self.failures: dict[Key, int] = {}
        self.active = threading.Event()  # set while this replica may act (always without election)
        self.may_write: Callable[[], bool] | None = None  # leader election's fence (None: always)
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # ------------------------------------------------------------ watch events (kopf handlers)
    def on_admission_check(self, body: Mapping[str, Any], deleted: bool) -> None:
        name = body["metadata"]["name"]
        with self.lock:
            if deleted or (body.get("spec") or {}).get("controllerName") != self.controller_name:
                self.checks.discard(name)
                return
            self.checks.add(name)
        if active_condition_needed(body):
            self.queue.add((CHECK_NS, name))
        self.reconcile_all()

    def on_cluster_queue(self, body: Mapping[str, Any], deleted: bool) -> None:
        with self.lock:
            name = body["metadata"]["name"]
            if deleted:
                self.cq_checks.pop(name, None)
                self.cluster_queues.pop(name, None)
            else:
                self.cq_checks[name] = cluster_queue_checks(body)
                self.cluster_queues[name] = dict(body)
        self.reconcile_all()

    def on_local_queue(self, body: Mapping[str, Any], deleted: bool) -> None:
        meta = body["metadata"]
        with self.lock:
            if deleted:
                self.lq_cq.pop((meta["namespace"], meta["name"]), None)
            else:
                self.lq_cq[(meta["namespace"], meta["name"])] = (body.get("spec") or {}).get("clusterQueue", "")

    def on_resource_flavor(self, body: Mapping[str, Any], deleted: bool) -> None:
        name = body["metadata"]["name"]
        with self.lock:
            if deleted:
                self.flavors.pop(name, None)
            else:
                self.flavors[name] = dict((body.get("spec") or {}).get("nodeLabels") or {})
        self.reconcile_all()

    def on_node(self, body: Mapping[str, Any], deleted: bool) -> None:
        """Which zone each node is in (its zone label), for the zones that have nodes: from the watch,
        not a LIST of every node per plan."""
        meta = body["metadata"]
        value = (meta.get("labels") or {}).get(self.config.zone_label)
        with self.lock:
            if deleted or value is None:
                self.node_zones.pop(meta["name"], None)
            else:
                self.node_zones[meta["name"]] = self.config.zone_map.get(value, value)

    def on_workload(self, body: Mapping[str, Any], deleted: bool) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        with self.lock:
            if deleted:
                self.held.pop(key, None)
                self.replan_now.discard(key)
                self.workloads.pop(key, None)
                self.wake.pop(key, None)
                return
            if not _newer(body, self.workloads.get(key)):
                return  # older than what our own write returned: acting on it would repeat that write
            self.workloads[key] = dict(body)
        self.queue.add(key)

    def tick(self) -> None:
        """Look again at every Workload whose planned start has come (no watch event marks that)."""
        now = self.clock()
        with self.lock:
            due = [k for k, t in self.wake.items() if t <= now]
        for key in due:
            self.queue.add(key)

    def reconcile_all(self) -> None:
        with self.lock:
            keys = list(self.workloads)
        for key in keys:
            self.queue.add(key)

    # ------------------------------------------------------------ workers
    def start(self, workers: int = 2) -> None:
        for i in range(workers):
            t = threading.Thread(target=self._work, name=f"kueue-check-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        stop_workers(self.queue, self.active, self._stopping, self._threads)

    def _work(self) -> None:
        serve(self.queue, self.process, self.active, self._stopping)

    def process(self, key: Key) -> None:
        """One key from the queue; a failure is retried with backoff (kopf would not retry it)."""
        try:
            if key[0] == CHECK_NS:
                self._set_active(key[1])
            else:
                self.reconcile(key)
            self.failures.pop(key, None)
        except NotLeader:
            self.queue.add(key, 1.0)  # whoever leads now does it
        except ApiException as exc:
            if exc.status in (404, 409):
                # Changed under us: its watch event (or the next look) brings the new version.
                log.info("%s/%s changed under us (%s): looking again", *key, exc.status)
                self.queue.add(key, 0.5)
            else:
                self._retry(key, f"API error {exc.status} {exc.reason}")
        except Exception as exc:  # unreachable API server, a provider bug: retried, never lost
            log.warning("kueue check %s/%s: %r", *key, exc)
            self._retry(key, repr(exc))

    def _retry(self, key: Key, why: str) -> None:
        n = self.failures.get(key, 0)
        self.failures[key] = n + 1
        delay = BACKOFF[min(n, len(BACKOFF) - 1)]
        log.warning("kueue check %s/%s: %s; retrying in %ss", key[0], key[1], why, delay)
        self.queue.add(key, delay)

    # ------------------------------------------------------------ one Workload
    def checks_for(self, wl: WorkloadView) -> set[str]:
        cq = wl.cluster_queue or self.lq_cq.get((wl.namespace, wl.queue_name or ""))
        return self.cq_checks.get(cq or "", set()) & self.checks

    def reconcile(self, key: Key) -> None:
        """One Workload, on the latest cached body; the lock only guards the caches (no I/O under it:
        the queue already hands one key to one worker at a time). Errors go to `process`."""
        with self.lock:
            body = self.workloads.get(key)
            if body is None:
                return
            wl = view(body)
            checks = self.checks_for(wl)
            if wl.finished or not checks:
                self.wake.pop(key, None)
                self.held.pop(key, None)
                return
        self._reconcile(body, wl, checks)

    def _reconcile(self, body: dict[str, Any], wl: WorkloadView, checks: set[str]) -> None:
        key = (wl.namespace, wl.name)
        plan = recorded_plan(wl)
        if plan is None:
            plan = self._plan(body, wl)
            self._patch_workload(wl, {"metadata": {"annotations": plan_annotations(plan)}})
            self._event(body, "Normal", "Planned", plan.message or f"start {format_time(plan.start)}")
        elif self._replan_due(key, wl, plan):
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
        with self.lock:
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

    def _replan_due(self, key: Key, wl: WorkloadView, plan: Planned) -> bool:
        """Plan a held Workload again: on the re-plan interval, when a newer joint plan starts it
        earlier, and at its planned start (the queue's plan may have given its slot to another since:
        every release follows the latest joint plan, never a stale one)."""
        now = self.clock()
        with self.lock:
            moved = key in self.replan_now
            self.replan_now.discard(key)
        held = not wl.active and ANN_HELD in wl.annotations
        due = held and now + START_SLACK >= plan.start
        return moved or due or needs_replan(wl, plan, now, self.config.replan_interval)

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
        outcome = self._decide_plan(wl, spec, created, now, zones_with_nodes)
        no_room = next((c.message for c in outcome.conditions if c.reason == "NoCapacity"), None)
        if no_room is not None:
            # The queue's quota cannot take it in any plan now: held, and planned again shortly (an
            # admitted Workload's end, seen late, frees quota), never released to a FIFO pile-up.
            return Planned(None, now + NO_ROOM_RETRY, f"held: {no_room}", now)
        if outcome.plan is None or outcome.plan.scheduled_start is None:
            return Planned(None, now, "no zone with nodes among the allowed ones: left to Kueue", now)
        message = next((c.message for c in outcome.conditions if c.type == "Planned"), "")
        return Planned(outcome.plan.zone, outcome.plan.scheduled_start, message, now)

    def _decide_plan(
        self, wl: WorkloadView, spec: GreenTrainingJobSpec, created: datetime, now: datetime, zones: set[str]
    ) -> PlanOutcome:
        """The same planning call as the GreenTrainingJob operator's: with the ClusterQueue's free quota
        known, planned jointly with the other Workloads the queue holds (the fleet planner)."""
        return decide_plan(
            spec,
            created,
            now,
            zones,
            self.provider.forecast,
            self.provider.current,
            self.config.default_zone,
            fleet=self._fleet(wl, spec, created, now),
        )

    def _fleet(self, wl: WorkloadView, spec: GreenTrainingJobSpec, created: datetime, now: datetime) -> AskFleet | None:
        """How to ask for this Workload's place among its ClusterQueue's held Workloads (None: the
        queue is unknown or has no GPU quota in any zone; then it is planned alone)."""
        key = (wl.namespace, wl.name)
        with self.lock:
            cq_name = wl.cluster_queue or self.lq_cq.get((wl.namespace, wl.queue_name or ""))
            cq = self.cluster_queues.get(cq_name or "")
            if cq_name is None or cq is None:
                return None
            cohort = cohort_of(cq)
            peers = [b for n, b in self.cluster_queues.items() if n != cq_name and cohort and cohort_of(b) == cohort]
            flavor_zones = {
                name: flavor_zone(labels, self.config.zone_label, self.config.zone_map)
                for name, labels in self.flavors.items()
            }
            body = self.workloads.get(key) or {}
        free = free_gpus_by_zone(cq, peers, flavor_zones, (GPU_RESOURCE,))
        most = free_gpus_by_zone(cq, peers, flavor_zones, (GPU_RESOURCE,), less_reserved=False)
        zones = [z for z in spec.placement.zones if z in free]
        gpus = workload_gpus(body, (GPU_RESOURCE,))
        if not zones or gpus == 0:
            return None
        window = window_of(spec.timing, created)
        job_id = f"{wl.namespace}/{wl.name}"
        job = fleet_job(job_id, gpus, window, zones, created, now, start_latency=self.fleet_settings.start_latency)
        with self.lock:
            self.held[key] = (cq_name, job)

        def ask() -> Any:
            def warn(zone: str, exc: ProviderError) -> None:
                log.warning("joint Kueue planning without a forecast for %s: %s", zone, exc)

            with self.plan_lock:
                with self.lock:
                    others, started, pending = self._queue_state(key, cq_name, flavor_zones, now)
                unreserved = plannable_quota(free, pending, most, started)
                forecasts = fleet_forecasts(self.provider.forecast, unreserved, (job, *others), now, on_error=warn)
                step = self.fleet_settings.step or grid_step(forecasts.values())
                capacity = queue_capacity(unreserved, started, now, step)
                plan, step = joint_plan([job, *others], capacity, forecasts, now, step, self.fleet_settings)
                mine = plan.assignments.get(job.id)
                if mine is not None and mine.start <= now + START_SLACK:
                    with self.lock:
                        self.claims[key] = now
                self._wake_moved_earlier(plan, now, skip=key)
            return placement_of(plan, job.id, step)

        return ask

    def _queue_state(
        self, key: Key, cq_name: str, flavor_zones: Mapping[str, str | None], now: datetime
    ) -> tuple[list[FleetJob], list[tuple[str, int, datetime]], dict[str, int]]:
        """The Workloads planned here in `cq_name`, other than `key`, as the joint plan sees them:
        those still to plan; those started (answered Ready, or given a start a moment ago) as
        (zone, GPUs, expected end); and per zone, the quota Kueue reserved for the ones still waiting
        on this check (`key` included): Kueue reserves quota BEFORE it asks the checks."""
        waiting: list[FleetJob] = []
        started: list[tuple[str, int, datetime]] = []
        pending: dict[str, int] = {}
        for k, (q, job) in self.held.items():
            body = self.workloads.get(k)
            if q != cq_name or body is None:
                continue
            wl = view(body)
            if wl.finished:
                continue
            if _released(wl) or self._claimed(k, wl):
                if k == key:
                    continue
                recorded = recorded_plan(wl)
                zone = (recorded.zone if recorded else None) or (job.zones[0] if job.zones else None)
                if zone is not None:
                    since = (_reserved_at(body) if wl.quota_reserved else None) or self.clock()
                    started.append((zone, job.gpus, since + job.duration))
                continue
            if k != key:
                waiting.append(_from_now(job, now))
            if wl.quota_reserved:
                zones = {flavor_zones.get(f) for fs in wl.flavors.values() for f in fs}
                for zone in {z for z in zones if z}:
                    pending[zone] = pending.get(zone, 0) + job.gpus
        return waiting, started, pending

    def _wake_moved_earlier(self, plan: FleetPlan, now: datetime, skip: Key) -> None:
        """Held Workloads the new joint plan starts earlier than their recorded plan: planned again now
        (their recorded start would otherwise leave the quota idle while they wait for nothing)."""
        moved: list[Key] = []
        with self.lock:
            for job_id, a in plan.assignments.items():
                ns, _, name = job_id.partition("/")
                body = self.workloads.get((ns, name))
                if body is None or (ns, name) == skip:
                    continue
                wl = view(body)
                recorded = recorded_plan(wl)
                held = not wl.active and ANN_HELD in wl.annotations
                if held and recorded is not None and max(a.start, now) < recorded.start - START_SLACK:
                    self.replan_now.add((ns, name))
                    moved.append((ns, name))
        for key in moved:
            self.queue.add(key)

    def _claimed(self, key: Key, wl: WorkloadView) -> bool:
        """A start a joint plan gave it that the cache does not show yet (dropped once it shows, or
        after CLAIM_TTL: a start that never came)."""
        since = self.claims.get(key)
        if since is None:
            return False
        if wl.finished or wl.quota_reserved or _released(wl) or self.clock() - since > CLAIM_TTL:
            self.claims.pop(key, None)
            return False
        return True

    # ------------------------------------------------------------ API calls
    def _fence(self) -> None:
        """Before each write: only the holder of the Lease writes."""
        if self.may_write is not None and not self.may_write():
            raise NotLeader("not the leader")

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
        with self.lock:
            return set(self.node_zones.values())

    def _flavor_labels(self, flavors: set[str]) -> dict[str, dict[str, str]]:
        """The flavors' node labels from the watch's cache; one GET only for a flavor not listed yet."""
        out: dict[str, dict[str, str]] = {}
        for name in flavors:
            with self.lock:
                cached = self.flavors.get(name)
            if cached is not None:
                out[name] = cached
                continue
            try:
                rf = self.objects.get_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, "resourceflavors", name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                continue
            out[name] = dict((rf.get("spec") or {}).get("nodeLabels") or {})
            with self.lock:
                self.flavors.setdefault(name, out[name])
        return out

    def _patch_workload(self, wl: WorkloadView, patch: dict[str, Any]) -> None:
        self._fence()
        updated = self.objects.patch_namespaced_custom_object(
            KUEUE_GROUP, KUEUE_VERSION, wl.namespace, "workloads", wl.name, patch, _content_type=_MERGE
        )
        self._remember(updated)

    def _remember(self, updated: Any) -> None:
        """Cache what a write returned, so a tick before its watch event does not act twice."""
        if isinstance(updated, dict) and updated.get("metadata"):
            key = (updated["metadata"]["namespace"], updated["metadata"]["name"])
            with self.lock:
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
        self._fence()
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
        self._fence()
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


def _released(wl: WorkloadView) -> bool:
    """Answered Ready by us and queued in Kueue (active): it starts as soon as Kueue admits it."""
    return wl.active and "Ready" in wl.check_states.values()


def _reserved_at(body: Mapping[str, Any]) -> datetime | None:
    """When Kueue reserved the Workload's quota (its QuotaReserved condition's transition)."""
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "QuotaReserved" and cond.get("status") == "True" and cond.get("lastTransitionTime"):
            try:
                return parse_time(cond["lastTransitionTime"])
            except ValueError:
                return None
    return None


def _from_now(job: FleetJob, now: datetime) -> FleetJob:
    """A held job as planned at an earlier look, planned from now."""
    return dc_replace(job, earliest_start=max(job.earliest_start or now, now))


def _created(meta: Mapping[str, Any]) -> datetime | None:
    value = meta.get("creationTimestamp")
    return parse_time(value) if isinstance(value, str) else None
