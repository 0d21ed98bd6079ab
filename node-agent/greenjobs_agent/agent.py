"""One tick of the node agent: meter, enforce, report. Pure of Kubernetes and threads, so tests and the
benchmark drive it with a fake clock, a static view and a recording patcher."""

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from .enforcer import Desired, Enforcer
from .gpu.base import GpuBackend, GpuError
from .gpu.simulated import SimulatedBackend
from .meter import Meter
from .metrics import AgentMetrics
from .podresources import PodGpuSource
from .pods import ClusterView, JobKey
from .reporter import JobGone, NodeEnergyReport, StatusPatcher, build_patch
from .state import StateStore

log = logging.getLogger(__name__)


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
        self.state = store.load()
        self.enforcer = Enforcer(backend, self.state, self.metrics.error)
        self.meter = Meter(backend, self.state, self.metrics.error)
        self.started = False
        self._last_report_s: float | None = None
        self._simulate_load = isinstance(backend, SimulatedBackend)

    def tick(self) -> None:
        if not self.view.synced():
            return  # nothing is known yet; the persisted holders still own the GPUs meanwhile
        now = self.clock()
        desired, holders, busy = self._ownership()
        previous = set(self.state.holders.values())
        self.meter.sample(now, holders, frozenset(self.enforcer.lost))
        # At start, every GPU not held by a running GTJ pod goes back to default (crash recovery).
        if self.power_capping:
            self.enforcer.reconcile(desired, full=not self.started)
        if self._simulate_load:
            assert isinstance(self.backend, SimulatedBackend)
            for dev in self.backend.devices():
                self.backend.set_load(dev.index, 1.0 if dev.index in busy else 0.0)
        ended = previous - set(holders.values())
        due = self._last_report_s is None or now.timestamp() - self._last_report_s >= self.report_interval_s
        if due:
            self.report(now, self._jobs_with_news() | set(holders.values()))
            self._last_report_s = now.timestamp()
        elif ended:
            self.report(now, ended)  # final flush when a job's last pod here ends
        self._forget_deleted_jobs()
        self.store.save(self.state)
        self._update_metrics()
        if not self.started:
            self.started = True
            self.metrics.ready.set()
        self.metrics.ticked()

    def shutdown(self) -> None:
        """SIGTERM: restore default limits, final flush, persist."""
        now = self.clock()
        if self.view.synced():
            _, holders, _ = self._ownership()
            self.meter.sample(now, holders, frozenset(self.enforcer.lost))
        if self.power_capping:
            self.enforcer.restore_all()
        self.report(now, self._jobs_with_news())
        self.store.save(self.state)
        log.info("defaults restored and energy flushed")

    def report(self, now: datetime, jobs: set[JobKey]) -> None:
        for job in sorted(jobs):
            totals = self.state.jobs.get(job)
            if totals is None:
                continue
            gpus = [i for i, j in self.state.holders.items() if j == job]
            caps = [self.enforcer.cap_mw(i) for i in gpus]
            cap_mw = next((c for c in caps if c is not None), None)
            d_gpu_s = totals.gpu_seconds - totals.reported_gpu_seconds
            avg = (totals.joules - totals.reported_joules) / d_gpu_s if d_gpu_s > 0 else None
            report = NodeEnergyReport(
                joules=totals.joules,
                gpus=len(gpus),
                gpu_seconds=totals.gpu_seconds,
                cap_watts=cap_mw // 1000 if cap_mw is not None else None,
                avg_power_watts=avg,
            )
            try:
                self.patcher.patch_status(job, build_patch(self.node, report, now))
            except JobGone:
                log.info("GreenTrainingJob gone; its energy is no longer reported", extra={"job": str(job)})
                self._drop(job)
                continue
            except Exception as e:  # the API server may be away: retry at the next report
                log.warning("energy report failed: %s", e, extra={"job": str(job)})
                self.metrics.error("report")
                continue
            totals.reported_joules, totals.reported_gpu_seconds = totals.joules, totals.gpu_seconds

    def _jobs_with_news(self) -> set[JobKey]:
        # A job whose counted energy has not moved since its last report already has its final entry.
        return {j for j, t in self.state.jobs.items() if t.joules != t.reported_joules}

    def _ownership(self) -> tuple[Desired, dict[int, JobKey], set[int]]:
        caps = self.view.target_caps()
        assignment = self.gpu_source.list()
        desired: Desired = {}
        holders: dict[int, JobKey] = {}
        busy: set[int] = set()
        for pod in self.view.pods():
            if not pod.running:
                continue
            gpus = assignment.get(pod.key, [])
            busy.update(gpus)
            job = pod.job_key
            if job is None:
                continue
            for i in gpus:
                holders[i] = job
                desired[i] = (job, caps.get(job))
        return desired, holders, busy

    def _forget_deleted_jobs(self) -> None:
        known = self.view.target_caps()
        held = set(self.state.holders.values())
        for job in [j for j in self.state.jobs if j not in known and j not in held]:
            self._drop(job)

    def _drop(self, job: JobKey) -> None:
        self.state.jobs.pop(job, None)
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
