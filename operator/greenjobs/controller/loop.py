"""The reconcile loop: watch events in, one decision per look, requeue when the decision says.

kopf feeds watch events of GreenTrainingJobs, their Jobs and nodes (handlers.py); this keeps what the
decisions need (the latest body of each ACTIVE job, each owned Job's view, the zones with nodes) and
runs `decide` + `Executor.execute` on worker threads through a WorkQueue, so one job is never
reconciled twice at once. Finished jobs are neither cached nor requeued, and once settled (labelled
greenjobs.dev/settled, `settleAfter` after they finished) they leave the watch itself (handlers.py):
months of finished GreenTrainingJobs cost no API call and no memory.
"""

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from greenjobs.api import constants as c
from greenjobs.api.constants import Phase
from greenjobs.runtime.workqueue import WorkQueue, serve, stop_workers
from greenjobs.workloads import adapter_for

from .decide import Action, Pacing, Timers, decide
from .executor import Executor
from .fleet import FleetCoordinator, FleetState, node_of, pod_gpus
from .jobs import BATCH, adapter_of
from .kube import Conflict, NotLeader
from .observe import JobView, Observed, job_view, observe

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
BACKOFF = (1, 2, 5, 10, 30, 60)
# An unreachable API server is retried at most this far apart: the jobs go on as soon as it is back.
UNREACHABLE_BACKOFF = (1, 2, 5, 10)


@dataclass
class Controller:
    executor: Executor
    clock: Callable[[], datetime]
    zone_label: str
    zone_map: Mapping[str, str]
    workers: int = 4
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> latest body, active jobs only
    keys: dict[str, Key] = field(default_factory=dict)  # uid -> (namespace, name), every GTJ seen
    jobs: dict[Key, JobView] = field(default_factory=dict)  # (namespace, name) -> the Job of that name
    job_seen: dict[Key, datetime] = field(default_factory=dict)  # when each Job was last seen (watch or read)
    node_zones: dict[str, str] = field(default_factory=dict)  # node -> zone
    pacing: dict[str, Pacing] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    fleet_state: FleetState = field(default_factory=FleetState)  # nodes' GPUs, pods holding GPUs

    def __post_init__(self) -> None:
        self.fleet: FleetCoordinator | None = self.executor.fleet
        self.queue: WorkQueue[str] = WorkQueue()
        self.active = threading.Event()  # set while this replica may act (always, without leader election)
        self._lock = threading.Lock()  # guards the dicts between kopf's threads and the workers
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        cfg = self.executor.config
        self.timers = Timers(
            tick=timedelta(seconds=cfg.tick_seconds),
            replan=cfg.replan_interval,
            power=cfg.power_interval,
            account=cfg.account_interval,
            settle=cfg.settle_after,
            host_retry=cfg.account_interval if self.executor.factors.host.measured else None,
        )
        self.resync = cfg.resync_interval

    # ------------------------------------------------------------------ events in (kopf's threads)

    def on_gtj(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return
        with self._lock:
            if event_type == "DELETED":
                self.keys.pop(uid, None)
                if self.bodies.pop(uid, None) is not None:
                    self._invalidate_fleet()
                self.pacing.pop(uid, None)
                self.failures.pop(uid, None)
                self.queue.forget(uid)
                self.executor.metrics.observe_phase(uid, None)
                return
            self.keys[uid] = (meta.get("namespace", ""), meta.get("name", ""))
            phase = (body.get("status") or {}).get("phase")
            self.executor.metrics.observe_phase(uid, phase)
            if phase in Phase.FINISHED and not meta.get("deletionTimestamp"):
                if self.bodies.pop(uid, None) is not None:
                    self._invalidate_fleet()  # a job ended: its GPUs are free
                self.pacing.pop(uid, None)
                job = self._job_of(uid)
                decision = decide(observe(body, job), self.clock(), Pacing(), self.timers)
                if decision.action == Action.NOTHING:
                    # Finished: nothing kept; at most one look when it is due to settle (read afresh).
                    if decision.requeue_after is not None:
                        self.queue.add(uid, decision.requeue_after.total_seconds())
                    return
                self.bodies[uid] = dict(body)
            else:
                self._remember(uid, dict(body))
        self.queue.add(uid)

    def on_job(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        view = job_view(body)
        owner = next(iter(view.owner_uids), None) or (meta.get("labels") or {}).get(c.LABEL_JOB_UID)
        with self._lock:
            if event_type == "DELETED":
                old = self.jobs.pop(key, None)
                self.job_seen.pop(key, None)
            else:
                old = self.jobs.get(key)
                self.jobs[key] = view
                self.job_seen[key] = self.clock()
            if view.outcome and (old is None or not old.outcome) and owner in self.bodies:
                self._invalidate_fleet()  # an unfinished job's GPUs are free before its end is recorded
            if owner and owner not in self.keys and view.finalizer and view.deleting:
                # Its GreenTrainingJob is gone (GC deletes the Job): only our finalizer holds it.
                self.keys[owner] = (key[0], (meta.get("labels") or {}).get(c.LABEL_JOB, key[1]))
        if owner:
            self.queue.add(owner)

    def on_node(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        name = meta.get("name", "")
        value = (meta.get("labels") or {}).get(self.zone_label)
        with self._lock:
            nodes = self.fleet_state.nodes
            if event_type == "DELETED" or value is None:
                self.node_zones.pop(name, None)
                changed = nodes.pop(name, None) is not None
            else:
                zone = self.node_zones[name] = self.zone_map.get(value, value)
                node = node_of(body, zone, self._gpu_resources())
                changed = nodes.get(name) != node
                nodes[name] = node
            if changed:
                self._invalidate_fleet()

    def on_pod(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Pods holding GPUs: those greenjobs does not manage take capacity from the fleet plan."""
        uid = (body.get("metadata") or {}).get("uid", "")
        held = None if event_type == "DELETED" else pod_gpus(body, self._gpu_resources(), c.LABEL_JOB_UID)
        with self._lock:
            pods = self.fleet_state.pods
            old = pods.pop(uid, None) if held is None else pods.get(uid)
            if held is not None:
                pods[uid] = held
            if old != held and (held is None or held.job_uid is None or old is None) and self.fleet is not None:
                # Pods come and go in bursts: at most one re-plan per debounce interval (room for a
                # start is judged on the live state regardless).
                self.fleet.invalidate(debounced=True)

    def _gpu_resources(self) -> list[str]:
        return self.fleet.settings.gpu_resources if self.fleet else ["nvidia.com/gpu"]

    def _invalidate_fleet(self) -> None:
        if self.fleet is not None:
            self.fleet.invalidate()

    def wake_moved_earlier(self, uids: set[str]) -> None:
        """The fleet plan moved these jobs earlier (GPUs came free sooner): plan them again now rather
        than at their next re-plan interval, so the zone is not left idle while they wait."""
        with self._lock:
            for uid in uids:
                self.pacing[uid] = replace(self.pacing.get(uid, Pacing()), last_replan=None)
        for uid in uids:
            self.queue.add(uid)

    def fleet_snapshot(self) -> tuple[list[Mapping[str, Any]], FleetState, set[str]]:
        """What the fleet planner needs, copied under the lock."""
        with self._lock:
            # Only unfinished GTJs can hold GPUs in the plan: their bodies are the ones to look at.
            ended = frozenset(uid for uid in self.bodies if (job := self._job_of(uid)) is not None and job.outcome)
            state = FleetState(dict(self.fleet_state.nodes), dict(self.fleet_state.pods), ended)
            return list(self.bodies.values()), state, set(self.node_zones.values())

    def _remember(self, uid: str, body: dict[str, Any]) -> None:
        """Keep the newer of the cached body and `body` (a watch event can trail our own write)."""
        old = self.bodies.get(uid)
        if old is not None and _rv(old) > _rv(body):
            return
        self.bodies[uid] = body

    def _job_of(self, uid: str) -> JobView | None:
        key = self.keys.get(uid)
        job = self.jobs.get(key) if key else None
        return job if job is not None and uid in job.owner_uids else None

    def zones(self) -> set[str]:
        with self._lock:
            return set(self.node_zones.values())

    # ------------------------------------------------------------------ workers

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._sweep_loop, name="settled-sweep", daemon=True)
        t.start()
        self._threads.append(t)

    # ------------------------------------------------------------------ settled jobs still held

    def _sweep_loop(self) -> None:
        # First once the initial lists are in (a Job listed before its GTJ would cost a needless GET).
        wait = min(self.resync.total_seconds(), 30.0)
        while not self._stopping.wait(wait):
            wait = self.resync.total_seconds()
            if not self.active.is_set():
                continue
            try:
                self.sweep_settled()
            except Exception as exc:  # retried next period; never a dead thread
                log.warning("settled sweep: %r", exc)

    def sweep_settled(self) -> int:
        """Workloads our finalizer holds whose GreenTrainingJob left the watch settled (labelled by hand,
        or before the admission policy guarded the label): found here, and released. A finished one is
        handed to the phase table, which lets its Job go; one that has not finished gets the label
        taken off, so it comes back into the watch and is accounted and finished like any other.
        Returns how many it handled."""
        with self._lock:
            held = [
                (key, view)
                for key, view in self.jobs.items()
                if view.finalizer and not any(u in self.keys for u in view.owner_uids)
            ]
        handled = 0
        for key, view in held:
            body = self.executor.kube.get_gtj(*key)
            meta = (body or {}).get("metadata") or {}
            uid = meta.get("uid")
            if body is None or uid not in view.owner_uids:
                continue  # gone: GC deletes the Job and its DELETE event releases it (on_job)
            if (meta.get("labels") or {}).get(c.LABEL_SETTLED) != "true":
                continue  # not listed yet, or already back in the watch
            handled += 1
            if (body.get("status") or {}).get("phase") in Phase.FINISHED:
                log.info("%s/%s: settled while its Job is still held: releasing it", *key)
                with self._lock:
                    self.keys[uid] = key
                self.queue.add(uid)
            else:
                log.warning("%s/%s: labelled settled before it finished: taking the label off", *key)
                self.executor.kube.unsettle_gtj(key[0], key[1], meta.get("resourceVersion") or "")
        return handled

    def stop(self) -> None:
        stop_workers(self.queue, self.active, self._stopping, self._threads)

    def _work(self) -> None:
        serve(self.queue, self.reconcile, self.active, self._stopping)

    def reconcile(self, uid: str) -> None:
        with self._lock:
            key = self.keys.get(uid)
            body = self.bodies.get(uid)
            job = self._job_of(uid)
            pacing = self.pacing.get(uid, Pacing())
        if key is None:
            return
        try:
            refused = self._reconcile(uid, key, body, job, pacing)
            if refused is not None:
                self._retry(uid, key, refused)
            else:
                self.failures.pop(uid, None)
        except NotLeader as exc:
            # The Lease was lost mid-look: nothing more is written; whoever leads now looks again.
            log.info("%s/%s: %s", *key, exc)
            with self._lock:
                self.bodies.pop(uid, None)
            self.queue.add(uid, 1.0)
        except Conflict as exc:
            log.debug("conflict, looking again: %s", exc)
            with self._lock:
                self.bodies.pop(uid, None)  # read afresh next time
            self.queue.add(uid, 0.2)
        except ApiException as exc:
            self._retry(uid, key, f"API error {exc.status} {exc.reason}")
        except (HTTPError, OSError) as exc:  # the API server is unreachable: retried, not a bug
            self._retry(uid, key, f"API server unreachable: {type(exc).__name__}", UNREACHABLE_BACKOFF)
        except Exception as exc:
            log.exception("reconciling %s/%s failed", *key)
            self._retry(uid, key, repr(exc))

    def _retry(self, uid: str, key: Key, why: str, backoff: tuple[int, ...] = BACKOFF) -> None:
        n = self.failures.get(uid, 0)
        self.failures[uid] = n + 1
        delay = backoff[min(n, len(backoff) - 1)]
        log.warning("reconciling %s/%s: %s; retrying in %ss", key[0], key[1], why, delay)
        self.queue.add(uid, delay)

    def _reconcile(
        self, uid: str, key: Key, body: dict[str, Any] | None, job: JobView | None, pacing: Pacing
    ) -> str | None:
        """One look; returns why it must be retried with backoff (a write refused for now), else None."""
        now = self.clock()
        fresh = body is None
        if body is None:
            body = self._read(uid, key)
            if body is None:
                self._release_orphan(key)
                return None
        obs = observe(body, job)
        decision = decide(obs, now, pacing, self.timers)
        if decision.risky and not fresh and not _brand_new(obs):
            # Create, start, delete or end a workload only on what the API server says now.
            body = self._read(uid, key)
            if body is None:
                self._release_orphan(key)
                return None
            obs = self._fresh(body, key)
            decision = decide(obs, now, pacing, self.timers)
        elif decision.risky and fresh:
            obs = self._fresh(body, key)
            decision = decide(obs, now, pacing, self.timers)
        elif decision.action == Action.MONITOR and self._unseen_for(key, now) >= self.resync:
            # Running, and no word of its workload for a while: a stalled watch must not hide its end.
            obs = self._fresh(body, key)
            decision = decide(obs, now, pacing, self.timers)
        quiet = decision.action in (Action.NOTHING, Action.MONITOR, Action.ACCOUNT)
        log.log(logging.DEBUG if quiet else logging.INFO, "%s/%s: %s (%s)", *key, decision.action.value, decision.why)
        done = self.executor.execute(obs, decision, pacing, self.zones())
        with self._lock:
            self.pacing[uid] = done.pacing
            if done.body is not None and uid in self.keys:
                phase = (done.body.get("status") or {}).get("phase")
                if phase in Phase.FINISHED:
                    self.bodies.pop(uid, None)
                else:
                    self._remember(uid, done.body)
        if done.retry:
            return f"{decision.action.value} refused for now"
        if done.requeue_after is not None:
            self.queue.add(uid, done.requeue_after.total_seconds())
        return None

    def _read(self, uid: str, key: Key) -> dict[str, Any] | None:
        body = self.executor.kube.get_gtj(*key)
        if body is None or (body.get("metadata") or {}).get("uid") != uid:
            return None
        return body

    def _fresh(self, body: dict[str, Any], key: Key) -> Observed:
        raw = self.executor.kube.get_job(*key, adapter_of(body.get("spec") or {}))
        view = job_view(raw) if raw is not None else None
        with self._lock:
            self.job_seen[key] = self.clock()
            if view is None:
                self.jobs.pop(key, None)
            else:
                self.jobs[key] = view
        return observe(body, view)

    def _unseen_for(self, key: Key, now: datetime) -> timedelta:
        with self._lock:
            seen = self.job_seen.get(key)
        return now - seen if seen is not None else timedelta.max

    def _release_orphan(self, key: Key) -> None:
        """The GTJ is gone: a workload of ours that it owned must not be held by our finalizer."""
        with self._lock:
            known = self.jobs.get(key)
        kind = adapter_for(known.api_version, known.kind) if known else BATCH
        raw = self.executor.kube.get_job(*key, kind)
        if raw is None:
            return
        view = job_view(raw)
        if view.finalizer and view.deleting:
            self.executor.kube.release_job(key[0], key[1], list(view.finalizers), kind)


def _brand_new(obs: Observed) -> bool:
    """Never looked at: no status at all. A stale copy of such a body can only make a create answer
    409 (the Job is adopted) and the conditional status write answer 409 (read again), so it is
    planned without reading it again: three writes for a new job, and no reads."""
    return not obs.status and obs.job is None


def _rv(body: Mapping[str, Any]) -> int:
    """resourceVersion as a number to order two copies of one object (etcd's revisions; 0 if opaque)."""
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0
