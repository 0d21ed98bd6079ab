"""Capacity-aware planning in the operator: every job that has not started, planned jointly.

The pure fleet planner (greenjobs.planning.fleet) gets what the controller watches: each zone's GPUs
(Ready, schedulable nodes), the GPUs held by pods greenjobs does not manage, the running
GreenTrainingJobs until their expected end, a reserve per zone; and every pending job with its
window, zones, GPUs at full parallelism and present plan. The coordinator keeps one FleetPlan and
answers each job's planning call from it, so no zone is ever planned over capacity:

- the plan is made from scratch when something changed (a node, a foreign pod, a job ended) or every
  `replan` interval (new forecasts), and an arrival is folded in at once (`add_job`);
- a start is carried out only when the zone has the room now (`room_now`); otherwise the job is
  planned again and waits for capacity.
"""

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from greenjobs.api.constants import Phase
from greenjobs.api.durations import parse_time
from greenjobs.api.models import GreenTrainingJobSpec
from greenjobs.carbon.providers.base import ForecastProvider, ProviderError
from greenjobs.carbon.series import IntensitySeries, to_epoch
from greenjobs.planning.capacity import Capacity, ForeignPod, Node, RunningJob, gpu_count
from greenjobs.planning.decisions import (
    NOMINAL_DURATION,
    START_SLACK,
    FleetPlacement,
    fleet_forecasts,
    fleet_job,
    grid_step,
)
from greenjobs.planning.fleet import FleetJob, FleetPlan, Placement, add_job, plan_fleet
from greenjobs.planning.settings import FleetSettings
from greenjobs.planning.timing import window_of
from greenjobs.workloads.base import pod_gpus as pod_spec_gpus

from .jobs import adapter_of, workload_template

log = logging.getLogger(__name__)

# How long a start `room_now` allowed holds its GPUs without its Running status being seen.
CLAIM_TTL = timedelta(seconds=30)


@dataclass(frozen=True)
class PodGpus:
    """A pod that holds GPUs on a node (bound, not finished)."""

    node: str
    gpus: int
    job_uid: str | None  # the GreenTrainingJob it belongs to, None for pods greenjobs does not manage


@dataclass
class FleetState:
    """What the controller watches, as the coordinator needs it (filled from watch events)."""

    nodes: dict[str, Node] = field(default_factory=dict)  # node name -> its zone and GPUs
    pods: dict[str, PodGpus] = field(default_factory=dict)  # pod uid -> its GPUs
    # GTJs whose workload has its outcome while their status may still say Running (the operator has
    # not recorded it yet: a restart, a long queue): they hold no GPUs.
    ended: frozenset[str] = frozenset()


def node_of(body: Mapping[str, Any], zone: str, resources: Sequence[str]) -> Node:
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    try:
        gpus = gpu_count(status.get("allocatable") or {}, resources)
    except ValueError:
        gpus = 0
    return Node(meta.get("name", ""), zone, gpus, ready=ready, schedulable=not spec.get("unschedulable"))


def pod_gpus(body: Mapping[str, Any], resources: Sequence[str], job_label: str) -> PodGpus | None:
    """The GPUs a pod holds, or None when it holds none (unbound, finished, no GPU requests)."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    node = spec.get("nodeName")
    if not node or status.get("phase") in ("Succeeded", "Failed"):
        return None
    gpus = 0
    for container in spec.get("containers") or []:
        res = container.get("resources") or {}
        try:
            gpus += gpu_count({**(res.get("requests") or {}), **(res.get("limits") or {})}, resources)
        except ValueError:
            continue
    if gpus <= 0:
        return None
    labels = (body.get("metadata") or {}).get("labels") or {}
    return PodGpus(node, gpus, labels.get(job_label))


@dataclass
class FleetCoordinator:
    """One fleet plan shared by the workers. Two locks: `_lock` guards the state every question reads
    (held only for in-memory work, never across I/O: a due start never waits on a forecast), and
    `_plan_lock` lets one worker at a time compute a new plan (forecasts fetched, the planner run)
    outside `_lock`. Invalidations are counted (`_generation`), so one that arrives while a plan is
    being computed is not erased when it is installed: the next question plans again."""

    settings: FleetSettings
    provider: ForecastProvider
    clock: Callable[[], datetime]
    replan: timedelta
    # The controller's view: pending jobs' bodies, running jobs' bodies, nodes and pods (under its lock).
    snapshot: Callable[[], tuple[list[Mapping[str, Any]], FleetState, set[str]]]
    # Foreign pods come and go in bursts: their changes re-plan at most once per this interval (room
    # for a start is always judged on the live state, so a slightly older plan loses nothing).
    debounce: timedelta = timedelta(seconds=5)
    _plan: FleetPlan | None = None
    _at: datetime | None = None
    _step: timedelta = timedelta(minutes=15)  # the grid of the last plan
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _plan_lock: threading.Lock = field(default_factory=threading.Lock)
    _generation: int = 1  # bumped by every invalidation
    _planned: int = 0  # the generation the present plan was computed from
    _churn: int = 0  # debounced invalidations (foreign pods)
    _churn_planned: int = 0
    # uid -> (resourceVersion, the job as the planner sees it): a body is parsed once, not per question.
    _seen: dict[str, tuple[str, FleetJob | None]] = field(default_factory=dict)
    # uid -> (zone, GPUs, when): starts `room_now` allowed whose Running status is not seen yet. Workers
    # ask in parallel; without these two could both be told the same free GPUs.
    _claims: dict[str, tuple[str, int, datetime]] = field(default_factory=dict)
    # uid -> when its start failed: it holds no place in the queue order for CLAIM_TTL.
    _failed: dict[str, datetime] = field(default_factory=dict)
    # Told which jobs a new plan moved earlier (capacity came free sooner than expected): the
    # controller looks at them at once instead of at their next re-plan interval.
    on_moved_earlier: Callable[[set[str]], None] | None = None

    def invalidate(self, *, debounced: bool = False) -> None:
        """Something the plan rests on changed (capacity, a job ended): plan from scratch next time;
        `debounced` (foreign pod churn): at most once per `debounce`."""
        with self._lock:
            if debounced:
                self._churn += 1
            else:
                self._generation += 1

    @property
    def generation(self) -> int:
        return self._generation

    def assignment(self, uid: str) -> FleetPlacement | str | None:
        """This job's assignment in the fleet plan (str: why it has none; None: not a fleet job)."""
        with self._plan_lock:
            with self._lock:
                now = self.clock()
                bodies, state, zones = self.snapshot()
                jobs = self._jobs(bodies, now, zones)
                if uid not in jobs:
                    return None
                if not self._needs_plan(now):
                    if self._plan is not None and uid not in self._plan.assignments and uid not in self._plan.unplaced:
                        # An arrival: the others stay put.
                        self._plan = add_job(self._plan, replace(jobs[uid], earliest_start=now), now)
                    return self._answer(uid)
                generation, churn = self._generation, self._churn
                pending = [replace(j, earliest_start=now) for j in jobs.values()]
            # Outside the state lock: forecasts (I/O) and the planner (CPU).
            forecasts = self._forecasts(pending, now)
            step = self.settings.step or grid_step(forecasts.values())
            with self._lock:
                self._step = step
                capacity = self._capacity(bodies, state, now)
            plan = plan_fleet(
                pending,
                capacity,
                forecasts,
                now,
                step=step,
                min_gain_percent=self.settings.min_gain_percent,
                zone_gap_percent=self.settings.zone_gap_percent,
                exact_time_limit_s=self.settings.exact_time_limit.total_seconds(),
            )
            log.info(
                "fleet plan: %d job(s), %d placed, %d unplaced; free GPUs now %s",
                len(pending),
                len(plan.assignments),
                len(plan.unplaced),
                {z: capacity.free_at(z, now) for z in capacity.zones()},
            )
            with self._lock:
                moved = _moved_earlier(self._plan, plan)
                self._plan, self._at = plan, now
                # What was invalidated while it was computed still counts: the next question re-plans.
                self._planned, self._churn_planned = generation, churn
                answer = self._answer(uid)
            if moved and self.on_moved_earlier is not None:
                self.on_moved_earlier(moved - {uid})
            return answer

    def _needs_plan(self, now: datetime) -> bool:
        if self._plan is None or self._at is None or self._planned != self._generation:
            return True
        if now - self._at >= self.replan:
            return True
        return self._churn != self._churn_planned and now - self._at >= self.debounce

    def _answer(self, uid: str) -> FleetPlacement | str | None:
        if self._plan is None:
            return None
        found = self._plan.assignments.get(uid)
        if found is not None:
            return FleetPlacement(found, self._step)
        return self._plan.unplaced.get(uid)

    def room_now(self, uid: str, zone: str | None) -> bool:
        """Whether `zone` has the GPUs for this job now (a start must never leave pods pending). Asked
        by every start path: a first start, a re-plan's, a resume. Room goes in the plan's order: jobs
        due before this one in the same zone are served first, whichever worker asks first; and a pod
        must fit on one node, not on the zone's sum."""
        with self._lock:
            now = self.clock()
            bodies, state, zones = self.snapshot()
            jobs = self._jobs(bodies, now, zones)
            body = next((b for b in bodies if (b.get("metadata") or {}).get("uid") == uid), None)
            need = jobs[uid].gpus if uid in jobs else _resuming_gpus(body, self.settings)
            if need is None or zone is None:
                return True
            capacity = self._capacity(bodies, state, now, exclude=uid)
            ahead = self._ahead(uid, zone, jobs, bodies, now)
            room = capacity.free_at(zone, now) - ahead >= need and _fits_a_node(body, zone, state, self.settings)
            if room:
                self._claims[uid] = (zone, need, now)
                self._failed.pop(uid, None)
            else:
                self._generation += 1
            return room

    def release(self, uid: str) -> None:
        """A start `room_now` allowed failed: its GPUs are free again at once (not after CLAIM_TTL),
        and it gives up its place in the queue order for a while."""
        with self._lock:
            self._failed[uid] = self.clock()
            if self._claims.pop(uid, None) is not None:
                self._generation += 1

    # ------------------------------------------------------------------ inputs

    def _ahead(
        self, uid: str, zone: str, jobs: Mapping[str, FleetJob], bodies: list[Mapping[str, Any]], now: datetime
    ) -> int:
        """GPUs of the jobs due now in `zone` that come before `uid` in the plan's order (its start,
        then latest start, then arrival) and have not been given room yet: they are served first."""
        due = _due(bodies, now)
        if uid in jobs and uid not in due:
            due[uid] = now
        mine = self._order(uid, due, jobs, now)
        gpus = 0
        for other in due:
            if other == uid or other not in jobs or other in self._claims:
                continue
            if other in self._failed and now - self._failed[other] < CLAIM_TTL:
                continue
            if jobs[other].zones and self._zone_of(other, bodies) != zone:
                continue
            if self._order(other, due, jobs, now) < mine:
                gpus += jobs[other].gpus
        return gpus

    def _order(
        self, uid: str, due: Mapping[str, datetime], jobs: Mapping[str, FleetJob], now: datetime
    ) -> tuple[datetime, datetime, datetime, str]:
        job = jobs.get(uid)
        found = self._plan.assignments.get(uid) if self._plan is not None else None
        start = found.start if found is not None else due.get(uid, now)
        return (start, job.latest_start if job else now, job.arrival if job else now, uid)

    @staticmethod
    def _zone_of(uid: str, bodies: list[Mapping[str, Any]]) -> str | None:
        for b in bodies:
            if (b.get("metadata") or {}).get("uid") == uid:
                zone: str | None = ((b.get("status") or {}).get("plan") or {}).get("zone")
                return zone
        return None

    def _forecasts(self, jobs: list[FleetJob], now: datetime) -> dict[str, IntensitySeries]:
        def warn(zone: str, exc: ProviderError) -> None:
            log.warning("fleet planning without a forecast for %s: %s", zone, exc)

        zones = [z for j in jobs for z in j.zones]
        return fleet_forecasts(self.provider.forecast, zones, jobs, now, self.settings.horizon, warn)

    def _capacity(
        self, bodies: list[Mapping[str, Any]], state: FleetState, now: datetime, exclude: str | None = None
    ) -> Capacity:
        zone_of_node = {n.name: n.zone for n in state.nodes.values()}
        running: dict[str, RunningJob] = {}
        for b in bodies:
            job = _running(b, now, self.settings)
            if job is not None and job.id != exclude and job.id not in state.ended:
                running[job.id] = job
        foreign = [
            ForeignPod(zone_of_node[p.node], p.gpus)
            for p in state.pods.values()
            if p.node in zone_of_node and (p.job_uid is None or (p.job_uid not in running and p.job_uid != exclude))
        ]
        # A start allowed moments ago holds its GPUs until its Running status shows (or the claim lapses).
        self._claims = {
            uid: claim
            for uid, claim in self._claims.items()
            if uid not in running and uid not in state.ended and now - claim[2] < CLAIM_TTL
        }
        foreign += [ForeignPod(zone, gpus) for uid, (zone, gpus, _) in self._claims.items() if uid != exclude]
        capacity = Capacity.build(
            now, state.nodes.values(), foreign, running.values(), self.settings.reserve, self._step
        )
        paused = [r for b in bodies if (r := _paused(b, self.settings)) is not None and r[0] != exclude]
        return _reserve(capacity, paused, self._step) if paused else capacity

    def _jobs(self, bodies: list[Mapping[str, Any]], now: datetime, zones: set[str]) -> dict[str, FleetJob]:
        """Every pending job with zones, parsed once per resourceVersion (and per set of zones); their
        earliest start is set by whoever plans them (a question about one job copies none)."""
        seen: dict[str, tuple[str, FleetJob | None]] = {}
        key = ",".join(sorted(zones))
        for b in bodies:
            meta = b.get("metadata") or {}
            version = f"{meta.get('resourceVersion')}/{key}"
            cached = self._seen.get(meta.get("uid", ""))
            job = cached[1] if cached and cached[0] == version else self._fleet_job(b, now, zones)
            seen[meta.get("uid", "")] = (version, job)
        self._seen = seen  # jobs gone from the cache are forgotten here
        return {job.id: job for _, job in seen.values() if job is not None}

    def _fleet_job(self, body: Mapping[str, Any], now: datetime, zones_with_nodes: set[str]) -> FleetJob | None:
        """A job that has not started and names zones, as the fleet planner sees it."""
        status = body.get("status") or {}
        if status.get("phase") not in (None, Phase.PENDING, Phase.DEFERRED) or status.get("startTime"):
            return None
        meta = body.get("metadata") or {}
        try:
            spec = GreenTrainingJobSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return None
        zones = [z for z in spec.placement.zones if z in zones_with_nodes]
        if not zones:
            return None
        window = window_of(spec.timing, parse_time(meta["creationTimestamp"]))
        plan = status.get("plan") or {}
        current = None
        if plan.get("zone") and plan.get("scheduledStart"):
            current = Placement(plan["zone"], parse_time(plan["scheduledStart"]))
        raw = body.get("spec") or {}
        gpus = adapter_of(raw).gpus(workload_template(raw), self.settings.gpu_resources)
        return fleet_job(
            meta["uid"],
            gpus,
            window,
            zones,
            parse_time(meta["creationTimestamp"]),
            now,
            current,
            start_latency=self.settings.start_latency,
        )


def _moved_earlier(old: FleetPlan | None, new: FleetPlan) -> set[str]:
    """Jobs the new plan starts earlier than the old one did (beyond the start slack)."""
    if old is None:
        return set()
    return {
        uid
        for uid, a in new.assignments.items()
        if (b := old.assignments.get(uid)) is not None and a.start < b.start - START_SLACK
    }


def _running(body: Mapping[str, Any], now: datetime, settings: FleetSettings) -> RunningJob | None:
    """A started job that holds GPUs in its zone until its expected end."""
    status = body.get("status") or {}
    if status.get("phase") not in (Phase.RUNNING, Phase.SUSPENDED) or not status.get("startTime"):
        return None
    zone = (status.get("plan") or {}).get("zone")
    if not zone or status.get("phase") == Phase.SUSPENDED:
        return None
    raw = body.get("spec") or {}
    try:
        spec = GreenTrainingJobSpec.model_validate(raw)
    except ValidationError:
        return None
    duration = spec.timing.duration() or NOMINAL_DURATION
    end = max(parse_time(status["startTime"]) + duration, now)
    finishes = (status.get("plan") or {}).get("finishesAt")
    if spec.whole_run and finishes:
        # A whole-run job keeps its GPUs through its pauses in the plan: its resumes must find them.
        end = max(parse_time(finishes), now)
    gpus = adapter_of(raw).gpus(workload_template(raw), settings.gpu_resources)
    return RunningJob(body["metadata"]["uid"], zone, gpus, end)


def _due(bodies: list[Mapping[str, Any]], now: datetime) -> dict[str, datetime]:
    """Pending jobs whose recorded plan says start now: they are about to ask for room."""
    due: dict[str, datetime] = {}
    for b in bodies:
        status = b.get("status") or {}
        if status.get("phase") not in (None, Phase.PENDING, Phase.DEFERRED) or status.get("startTime"):
            continue
        raw = (status.get("plan") or {}).get("scheduledStart")
        try:
            start = parse_time(raw) if raw else None
        except ValueError:
            start = None
        if start is not None and start <= now:
            due[(b.get("metadata") or {}).get("uid", "")] = start
    return due


def _paused(body: Mapping[str, Any], settings: FleetSettings) -> tuple[str, str, int, datetime, datetime] | None:
    """A job paused by its plan: (uid, zone, GPUs, planned resume, planned end). Its GPUs are free
    now and reserved again from its resume on."""
    status = body.get("status") or {}
    plan = status.get("plan") or {}
    if status.get("phase") != Phase.PAUSED or not plan.get("zone") or not plan.get("scheduledStart"):
        return None
    gpus = _resuming_gpus(body, settings)
    try:
        resume = parse_time(plan["scheduledStart"])
        end = parse_time(plan.get("finishesAt") or plan["scheduledStart"])
    except ValueError:
        return None
    if not gpus:
        return None
    return (body.get("metadata") or {}).get("uid", ""), plan["zone"], gpus, resume, max(end, resume)


def _reserve(capacity: Capacity, paused: list[tuple[str, str, int, datetime, datetime]], step: timedelta) -> Capacity:
    """`capacity` less the GPUs paused jobs take back from their resume to their planned end. A take
    is moved one grid step earlier: the grid counts a change inside a step from the next step on,
    which is right for a release and would overbook for a take."""
    releases = {z: list(r) for z, r in capacity.releases.items()}
    for _, zone, gpus, resume, end in paused:
        releases.setdefault(zone, []).append((to_epoch(resume) - step.total_seconds(), -gpus))
        releases[zone].append((to_epoch(end) + step.total_seconds(), gpus))
    return Capacity(base=dict(capacity.base), releases={z: sorted(r) for z, r in releases.items()})


def _resuming_gpus(body: Mapping[str, Any] | None, settings: FleetSettings) -> int | None:
    """The GPUs of a job that asks to resume: suspended by its budget, or paused by its plan (None:
    not such a job)."""
    if body is None or (body.get("status") or {}).get("phase") not in (Phase.SUSPENDED, Phase.PAUSED):
        return None
    raw = body.get("spec") or {}
    try:
        return adapter_of(raw).gpus(workload_template(raw), settings.gpu_resources)
    except (ValueError, KeyError, TypeError):
        return None


def _fits_a_node(body: Mapping[str, Any] | None, zone: str, state: FleetState, settings: FleetSettings) -> bool:
    """Whether the job's largest pod fits on one Ready, schedulable node of `zone` now: a zone with
    4 free GPUs on each of two nodes has no room for an 8-GPU pod. (The fleet plan itself counts per
    zone; this gate keeps a start from leaving such a pod pending.)"""
    if body is None:
        return True
    raw = body.get("spec") or {}
    try:
        templates = adapter_of(raw).pod_templates(workload_template(raw))
        largest = max((pod_spec_gpus(t.get("spec") or {}, settings.gpu_resources) for t in templates), default=0)
    except (ValueError, KeyError, TypeError):
        return True
    if largest <= 0:
        return True
    used: dict[str, int] = {}
    for p in state.pods.values():
        used[p.node] = used.get(p.node, 0) + p.gpus
    nodes = [n for n in state.nodes.values() if n.zone == zone and n.ready and n.schedulable]
    if not nodes:
        return True  # no node view (tests, or nodes not listed yet): the zone's count decides
    return any(n.gpus - used.get(n.name, 0) >= largest for n in nodes)
