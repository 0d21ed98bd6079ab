"""One tick of the node agent: meter, enforce, report. Pure of Kubernetes and threads, so tests and the
benchmark drive it with a fake clock, a static view and a recording patcher."""

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from greenjobs.api.durations import parse_time

from .devices import DeviceRef, NodeLayout, Slot, slot_of
from .enforcer import Desired, Enforcer
from .gpu.base import GpuBackend, GpuError, MigInstance
from .gpu.simulated import SimulatedBackend
from .meter import Meter
from .metrics import AgentMetrics
from .podresources import PodGpuSource
from .pods import ClusterView, JobInfo, JobKey, JobRef, NodeSeed, PodInfo, PodKey
from .processes import PidResolver
from .reporter import JobGone, NodeEnergyReport, StatusPatcher, build_patch
from .sharing import EXCLUSIVE, GpuPlan, Holding, plan_gpus
from .state import JobTotals, StateStore

log = logging.getLogger(__name__)

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


def read_boot_id(path: Path = BOOT_ID_FILE) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class Agent:
    def __init__(
        self,
        node: str,
        backend: GpuBackend,
        *,
        view: ClusterView,
        gpu_source: PodGpuSource,
        patcher: StatusPatcher,
        store: StateStore,
        clock: Callable[[], datetime],
        metrics: AgentMetrics | None = None,
        report_interval_s: float = 15.0,
        power_capping: bool = True,
        boot_id: Callable[[], str | None] = read_boot_id,
        forget_after_s: float = 60.0,
        pids: PidResolver | None = None,
    ) -> None:
        self.node = node
        self.backend = backend
        self.view = view
        self.gpu_source = gpu_source
        self.patcher = patcher
        self.store = store
        self.clock = clock
        self.metrics = metrics or AgentMetrics(node)
        self.report_interval_s = report_interval_s
        self.power_capping = power_capping  # False: meter and report only, never set a limit
        self.forget_after_s = forget_after_s  # a finished job's count is kept this long after its last report
        self.pids = pids or PidResolver()
        self.state = store.load()
        self._after_boot(boot_id())
        self.enforcer = Enforcer(backend, self.state, self.metrics.error, persist=lambda: self.store.save(self.state))
        self.meter = Meter(backend, self.state, self.metrics.error)
        self.started = False
        self.layout = self._read_layout()
        self.plans: dict[int, GpuPlan] = {}
        self._unknown_devices: set[str] = set()
        self._noted: set[JobKey] = set()  # jobs whose entry carries a capNotApplied note
        self._last_report_s: float | None = None
        self._simulate_load = isinstance(backend, SimulatedBackend)

    def tick(self) -> None:
        if not self.view.synced():
            return  # nothing is known yet; the persisted holders still own the GPUs meanwhile
        now = self.clock()
        pods = self.view.pods()
        jobs = self.view.jobs()
        self.view.track(self._wanted(pods))
        plans, busy, since = self._plan(pods, jobs)
        holders = {i: p.shares for i, p in plans.items() if p.shares}
        previous = {j for shares in self.state.holders.values() for j in shares}
        self._seed(holders, jobs)
        self.meter.sample(now, holders, frozenset(self.enforcer.lost), since, _released(pods))
        self.plans = plans
        self._note_split()
        if self.power_capping:
            desired: Desired = {i: p.want for i, p in plans.items() if p.want is not None}
            self.enforcer.reconcile(desired)
        if self._simulate_load:
            assert isinstance(self.backend, SimulatedBackend)
            for dev in self.backend.devices():
                self.backend.set_load(dev.index, 1.0 if dev.index in busy else 0.0)
        held = {j for shares in holders.values() for j in shares}
        ended = previous - held
        due = self._last_report_s is None or now.timestamp() - self._last_report_s >= self.report_interval_s
        if due:
            self.report(now, self._jobs_with_news() | held)
            self._last_report_s = now.timestamp()
        elif ended:
            self.report(now, ended)  # final flush when a job's last GPU here is released
        self._forget(now, jobs, held)
        self.store.save(self.state)
        self._update_metrics()
        if not self.started:
            self.started = True
            self.metrics.ready.set()
        self.metrics.ticked()

    def shutdown(self) -> None:
        """SIGTERM: restore the limits greenjobs replaced, final flush, persist."""
        now = self.clock()
        if self.view.synced():
            pods = self.view.pods()
            plans, _, since = self._plan(pods, self.view.jobs())
            holders = {i: p.shares for i, p in plans.items() if p.shares}
            self.meter.sample(now, holders, frozenset(self.enforcer.lost), since, _released(pods))
        if self.power_capping:
            self.enforcer.restore_all()
        self.report(now, self._jobs_with_news())
        self.store.save(self.state)
        log.info("limits restored and energy flushed")

    def report(self, now: datetime, jobs: set[JobKey]) -> None:
        for job in sorted(jobs):
            totals = self.state.jobs.get(job)
            if totals is None:
                continue
            gpus = sorted(i for i, p in self.plans.items() if job in p.shares)
            caps = [self.enforcer.cap_mw(i) for i in gpus]
            cap_mw = next((c for c in caps if c is not None), None)
            d_gpu_s = totals.gpu_seconds - totals.reported_gpu_seconds
            avg = (totals.joules - totals.reported_joules) / d_gpu_s if d_gpu_s > 0 else None
            note = next((self.plans[i].notes[job] for i in gpus if job in self.plans[i].notes), None)
            report = NodeEnergyReport(
                joules=totals.joules,
                gpus=len(gpus),
                gpu_seconds=totals.gpu_seconds,
                cap_watts=cap_mw // 1000 if cap_mw is not None else None,
                avg_power_watts=avg,
                split=tuple(sorted(totals.split)),
                cap_note=note,
                clear_cap_note=note is None and job in self._noted,
                usage=tuple(totals.points),
            )
            try:
                self.metrics.api_requests.labels(verb="patch", resource="greentrainingjobs/status").inc()
                self.patcher.patch_status(job, build_patch(self.node, report, now, job.uid))
            except JobGone:
                log.info("GreenTrainingJob gone or replaced; its energy is no longer reported", extra={"job": str(job)})
                self._drop(job)
                continue
            except Exception as e:  # the API server may be away: retry at the next report
                log.warning("energy report failed: %s", e, extra={"job": str(job)})
                self.metrics.error("report")
                continue
            totals.reported_joules, totals.reported_gpu_seconds = totals.joules, totals.gpu_seconds
            if note is None:
                self._noted.discard(job)
            else:
                self._noted.add(job)

    # ---------------------------------------------------------------- who holds what

    def _plan(
        self, pods: list[PodInfo], jobs: dict[JobRef, JobInfo | None]
    ) -> tuple[dict[int, GpuPlan], set[int], dict[int, float]]:
        """Each GPU's shares and wanted cap, the GPUs any running pod keeps busy, and since when the
        pods now on each GPU hold it (their latest start, where known)."""
        assignment = self.gpu_source.list()
        known = {j.ref: j for j in self.state.jobs}  # the UID counted under, for pods not resolvable yet
        holdings: list[Holding] = []
        busy: set[int] = set()
        since: dict[int, float] = {}
        for pod in pods:
            if not pod.running:
                continue
            slots = [s for s in (self._slot(r) for r in assignment.get(pod.key, [])) if s is not None]
            busy.update(s.gpu for s in slots)
            started = _epoch(pod.started)
            if started is not None:
                for gpu in {s.gpu for s in slots}:
                    since[gpu] = max(since.get(gpu, started), started)
            job = _job_of(pod, jobs, known)
            if job is ORPHAN:
                # A pod of a GTJ that was deleted (perhaps applied again under its name): nobody to
                # report to; it is a pod like any other until the garbage collector removes it.
                holdings.extend(Holding(pod.key, s, None, pod.uid) for s in slots)
                continue
            if job is not None and job not in self.state.jobs and job.ref not in jobs:
                # A job new to this agent whose GTJ is not listed yet: counting it now would start
                # from zero over the figure this node already wrote for it (a restart that lost its
                # state, a job forgotten and back). Wait for the list (one tick at most, usually).
                job = None
            pending = job is None and pod.job_ref is not None
            holdings.extend(Holding(pod.key, s, job, pod.uid, pending) for s in slots)
        targets = {
            JobKey(r.namespace, r.name, info.uid): info.target_cap_watts for r, info in jobs.items() if info is not None
        }
        for job in {h.job for h in holdings if h.job is not None and not h.job.uid}:
            info = jobs.get(job.ref)  # a key without UID (tests, tools): the object of that name
            if info is not None:
                targets[job] = info.target_cap_watts
        return plan_gpus(holdings, targets, self.layout.mig_slices, self._utilisation(holdings)), busy, since

    def _slot(self, ref: DeviceRef) -> Slot | None:
        slot = slot_of(ref, self.layout)
        if slot is None and ref.device_id.startswith("MIG-"):
            self.layout = self._read_layout()  # MIG reconfigured since the last look: look again
            slot = slot_of(ref, self.layout)
        if slot is None and ref.device_id not in self._unknown_devices:
            log.warning("device %r (%s) matches no GPU of this node", ref.device_id, ref.resource)
            self._unknown_devices.add(ref.device_id)
        return slot

    def _utilisation(self, holdings: list[Holding]) -> dict[int, dict[str, float]]:
        """Per-process SM utilisation of the whole GPUs that several pods share, by pod uid."""
        pods_on: dict[int, set[PodKey]] = {}
        for h in holdings:
            if h.slot.instance is None:
                pods_on.setdefault(h.slot.gpu, set()).add(h.pod)
        out: dict[int, dict[str, float]] = {}
        for gpu, pods in pods_on.items():
            if len(pods) < 2:
                continue
            try:
                util = self.backend.process_utilisation(gpu)
            except GpuError:
                util = None
            if util:
                out[gpu] = self.pids.by_pod(util)
        return out

    def _read_layout(self) -> NodeLayout:
        devices = self.backend.devices()
        migs: dict[int, list[MigInstance]] = {}
        for d in devices:
            try:
                migs[d.index] = self.backend.mig_instances(d.index)
            except GpuError as e:
                log.warning("MIG instances not read: %s", e, extra={"gpu": d.index})
        return NodeLayout.of(devices, migs)

    def _wanted(self, pods: list[PodInfo]) -> set[JobRef]:
        # The GTJs of pods that may still run here, and of counts not yet flushed or forgotten.
        refs = {p.job_ref for p in pods if p.job_ref is not None and not p.finished}
        return refs | {j.ref for j in self.state.jobs}

    # ---------------------------------------------------------------- counts

    def _after_boot(self, boot: str | None) -> None:
        st = self.state
        if boot is not None and st.boot_id is not None and st.boot_id != boot:
            # The node rebooted: the driver reset the counters and the limits, and no job held a GPU
            # while it was down. Start the readings afresh so the downtime counts for nothing.
            log.info("node rebooted since the last run; counting starts afresh", extra={"bootId": boot})
            st.counters_mj.clear()
            st.holders.clear()
            st.history.clear()
            st.read_s.clear()
            st.applied.clear()
            st.last_sample_s = None
        st.boot_id = boot

    def _seed(self, holders: dict[int, dict[JobKey, float]], jobs: dict[JobRef, JobInfo | None]) -> None:
        """A job new to this agent (or forgotten after its pods ended here) continues from the entry this
        node last wrote for that very object, so a retried or resumed pod adds to the same figure."""
        for shares in holders.values():
            for job in shares:
                if job in self.state.jobs:
                    continue
                info = jobs.get(job.ref)
                seed = info.seed if info is not None and info.uid == job.uid else None
                if seed is not None:
                    self.state.jobs[job] = JobTotals(seed.joules, seed.gpu_seconds, seed.joules, seed.gpu_seconds)

    def _note_split(self) -> None:
        for plan in self.plans.values():
            if plan.rule == EXCLUSIVE:
                continue
            for job, share in plan.shares.items():
                totals = self.state.jobs.get(job)
                if totals is not None and share < 0.999:
                    totals.split.add(plan.rule)

    def _jobs_with_news(self) -> set[JobKey]:
        # A job whose counted energy has not moved since its last report already has its final entry.
        return {j for j, t in self.state.jobs.items() if t.joules != t.reported_joules}

    def _forget(self, now: datetime, jobs: dict[JobRef, JobInfo | None], held: set[JobKey]) -> None:
        """Keep nothing of a job once its final entry is written and seen: per-job memory and watches
        end with the job's pods on this node (a later pod of it resumes from that entry)."""
        now_s = now.timestamp()
        for job, t in list(self.state.jobs.items()):
            if job in held:
                t.released_s = None
                continue
            if t.released_s is None:
                t.released_s = now_s
            if job.ref not in jobs:
                continue  # its GTJ is not listed yet
            info = jobs[job.ref]
            if info is None or (job.uid and info.uid != job.uid):
                self._drop(job)  # deleted, or replaced by another object of that name
            elif (
                t.joules == t.reported_joules
                and now_s - t.released_s >= self.forget_after_s
                and seed_matches(info.seed, t)
            ):
                self._drop(job)

    def _drop(self, job: JobKey) -> None:
        self.state.jobs.pop(job, None)
        self._noted.discard(job)
        self.patcher.forget(job)
        with contextlib.suppress(KeyError):  # KeyError: never exported
            self.metrics.job_energy.remove(job.namespace, job.name)

    def _update_metrics(self) -> None:
        m = self.metrics
        for dev in self.backend.devices():
            i = dev.index
            if i in self.enforcer.lost:
                continue
            label = str(i)
            try:
                m.gpu_power.labels(gpu=label).set(self.backend.power_mw(i) / 1000)
                m.gpu_cap.labels(gpu=label).set(self.backend.get_limit_mw(i) / 1000)
            except GpuError:
                m.error("metrics")
            counter = self.meter.last_counter_mj.get(i)
            if counter is not None:
                m.gpu_energy.set(counter / 1000, gpu=label)
        for job, totals in self.state.jobs.items():
            m.job_energy.set(totals.joules, namespace=job.namespace, job=job.name)


ORPHAN = JobKey("", "", "orphan")  # marks a pod of a GTJ object that no longer exists


def _job_of(pod: PodInfo, jobs: dict[JobRef, JobInfo | None], known: dict[JobRef, JobKey]) -> JobKey | None:
    """The GTJ a pod belongs to; ORPHAN when that object is gone; None when no GTJ (or not known yet)."""
    ref = pod.job_ref
    if ref is None:
        return None
    if ref not in jobs:  # not listed yet: the UID counted under, if any (a restarted agent)
        return pod.job_key(jobs) or known.get(ref)
    info = jobs[ref]
    if info is None:
        return ORPHAN  # no GTJ of that name any more
    if pod.job_uid:
        return ORPHAN if pod.job_uid != info.uid else JobKey(ref.namespace, ref.name, info.uid)
    # Unlabelled (made before the operator labelled UIDs): the object of its name, unless the pod is
    # older than that object, i.e. an earlier object's pod.
    return ORPHAN if pod.predates(info) else JobKey(ref.namespace, ref.name, info.uid)


def _epoch(text: str) -> float | None:
    try:
        return parse_time(text).timestamp() if text else None
    except ValueError:
        return None


def _released(pods: list[PodInfo]) -> dict[JobKey, float]:
    """When each job (by its pods' job-uid label) with no running pod here ended: its pods' last end."""
    running = {(p.key.namespace, p.job, p.job_uid) for p in pods if p.running}
    out: dict[JobKey, float] = {}
    for p in pods:
        ended = _epoch(p.ended) if p.finished and p.job and p.job_uid else None
        if ended is None or (p.key.namespace, p.job, p.job_uid) in running:
            continue
        job = JobKey(p.key.namespace, p.job or "", p.job_uid or "")
        out[job] = max(out.get(job, ended), ended)
    return out


def seed_matches(seen: NodeSeed | None, totals: JobTotals) -> bool:
    """True when the GTJ as last seen already carries this node's final entry (the watch caught up)."""
    return seen is not None and abs(seen.joules - round(totals.joules, 3)) < 0.01
