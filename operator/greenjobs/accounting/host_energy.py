"""Host energy of a job: what its pods' CPUs, memory and the rest of the node use besides the GPUs.

Every source answers the same question, "how many joules has this job's host side used so far"
(cumulative, like the agents' GPU counters), and tags its answer with the method, so the status can
say what was measured and what was estimated. Sources, best first:

- `kepler` (greenjobs.accounting.kepler): Kepler's per-pod counters, read from Prometheus. Measured
  (RAPL) and attributed to pods by Kepler; we do not re-implement that.
- `rapl-cpu-share` (`RaplCpuShare` here): where Kepler is not deployed but node_exporter's RAPL
  collector and cAdvisor are scraped, the node's RAPL joules over the job's run are attributed to it by
  its pods' share of the node's busy CPU time. Coarser than Kepler (no idle/active split, one window).
- `watts-per-gpu` (`WattsPerGpu`): an estimate, a configured host power per GPU in use times the
  job's GPU-seconds. The default figure and its source are in docs/savings.md.

`HostEnergyChain` tries them in that order and returns the first answer.
"""

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from greenjobs.carbon.providers.base import ProviderError
from greenjobs.carbon.providers.breaker import CircuitBreaker

log = logging.getLogger(__name__)

KEPLER = "kepler"
KEPLER_LEGACY = "kepler-legacy"
RAPL_CPU_SHARE = "rapl-cpu-share"
WATTS_PER_GPU = "watts-per-gpu"
NONE = "none"


@dataclass(frozen=True)
class HostEnergy:
    """Cumulative host joules of one job, split where the source knows the parts."""

    method: str  # one of the constants above
    cpu_joules: float = 0.0  # CPU package (cores, uncore) or, for estimates, everything
    dram_joules: float = 0.0
    other_joules: float = 0.0  # platform beyond CPU and DRAM, where a source reports it
    detail: str = ""  # e.g. "kepler_pod_cpu_joules_total zones package+dram, 2 pods"

    def __post_init__(self) -> None:
        for name in ("cpu_joules", "dram_joules", "other_joules"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"host energy {name} must be a finite, non-negative number of joules, not {value!r}")

    @property
    def joules(self) -> float:
        return self.cpu_joules + self.dram_joules + self.other_joules


@dataclass(frozen=True)
class JobRef:
    """Which job, where its pods are and since when: what a source needs to find the job's host energy."""

    namespace: str
    name: str  # the GreenTrainingJob's (and its batch/v1 Job's) name
    pods: tuple[str, ...] = ()  # pod names when the caller knows them; else the Job's pod-name pattern
    start: datetime | None = None  # status.startTime: the window of window-based sources
    end: datetime | None = None  # completion, or None while running (then: now)
    gpu_seconds: float = 0.0  # sum of the agents' gpuSeconds

    def pod_regex(self) -> str:
        """A PromQL regex for the job's pods: the given names, or what the Job controller names them.

        A batch/v1 Job's pods are `<job>-<5 chars>`, or `<job>-<index>-<5 chars>` when Indexed. A job
        named like another plus `-<digits>` could match the other's pattern: pass `pods` to be exact.
        """
        if self.pods:
            return "|".join(re.escape(p) for p in self.pods)
        return re.escape(self.name) + "-([0-9]+-)?[a-z0-9]{5}"


class HostEnergySource(Protocol):
    name: str

    def job_energy(self, job: JobRef) -> HostEnergy | None:
        """Cumulative host joules of the job, or None when this source knows nothing about it.

        Raises ProviderError when the source is configured but cannot be read (the chain moves on).
        """
        ...


@dataclass
class WattsPerGpu:
    """Estimate: host watts per GPU in use x GPU-seconds. Zero watts disables it."""

    watts: float
    name: str = WATTS_PER_GPU

    def __post_init__(self) -> None:
        if not math.isfinite(self.watts) or self.watts < 0:
            raise ValueError(f"host.wattsPerGpu must be a finite, non-negative number of watts, not {self.watts!r}")

    def job_energy(self, job: JobRef) -> HostEnergy | None:
        if self.watts <= 0:
            return None
        return HostEnergy(
            method=WATTS_PER_GPU,
            cpu_joules=self.watts * max(job.gpu_seconds, 0.0),
            detail=f"{self.watts:g} W per GPU x {job.gpu_seconds / 3600.0:.4g} GPU-hours (estimate)",
        )


def cpu_share_joules(node_joules: float, job_cpu_seconds: float, node_busy_cpu_seconds: float) -> float:
    """The job's part of a node's RAPL joules, by its share of the node's busy CPU time (same window).

    All CPU energy of the window goes to busy time, idle power included: a node running only this job
    charges it everything, which is what the job cost. A share above 1 (counters scraped at different
    moments) is clamped to 1.
    """
    for name, value in (
        ("node_joules", node_joules),
        ("job_cpu_seconds", job_cpu_seconds),
        ("node_busy_cpu_seconds", node_busy_cpu_seconds),
    ):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite, non-negative number, not {value!r}")
    if node_busy_cpu_seconds <= 0:
        return 0.0
    return node_joules * min(job_cpu_seconds / node_busy_cpu_seconds, 1.0)


@dataclass(frozen=True)
class NodeWindow:
    """One node's figures over the job's run: RAPL joules by domain and CPU seconds."""

    package_joules: float
    dram_joules: float
    job_cpu_seconds: float
    busy_cpu_seconds: float


# What a RAPL reader returns: per node over the job's window. Built on Prometheus in
# greenjobs.accounting.kepler.rapl_reader; a function so tests feed figures directly.
RaplReader = Callable[[JobRef], Mapping[str, NodeWindow]]


@dataclass
class RaplCpuShare:
    """Node RAPL counters attributed to the job by its pods' share of the node's busy CPU time."""

    reader: RaplReader
    name: str = RAPL_CPU_SHARE

    def job_energy(self, job: JobRef) -> HostEnergy | None:
        if job.start is None:
            return None
        windows = self.reader(job)
        if not windows:
            return None
        cpu = sum(cpu_share_joules(w.package_joules, w.job_cpu_seconds, w.busy_cpu_seconds) for w in windows.values())
        dram = sum(cpu_share_joules(w.dram_joules, w.job_cpu_seconds, w.busy_cpu_seconds) for w in windows.values())
        return HostEnergy(
            method=RAPL_CPU_SHARE,
            cpu_joules=cpu,
            dram_joules=dram,
            detail=f"node RAPL package+dram x CPU-time share on {len(windows)} node(s)",
        )


@dataclass
class HostEnergyChain:
    """The first source that knows the job wins; a failing source is logged and skipped."""

    sources: Sequence[HostEnergySource] = field(default_factory=list)
    name: str = "chain"

    def job_energy(self, job: JobRef) -> HostEnergy | None:
        for source in self.sources:
            try:
                found = source.job_energy(job)
            except ProviderError as exc:
                log.warning("host energy of %s/%s: %s unavailable: %s", job.namespace, job.name, source.name, exc)
                continue
            if found is not None:
                return found
        return None


class BackgroundHostEnergy:
    """Slow sources (Prometheus queries) off the caller's thread, behind a circuit breaker like the
    forecasts'. `job_energy` answers at once with the last figure read for that job (None before the
    first: the chain then falls back, and the accounting keeps its mark until a figure comes) and
    asks for a fresh one, which one thread of its own fetches. An outage of Prometheus never holds the
    operator's workers (a due start waits on none of this); after `failures` failures in a row no query
    goes out for `cooldown`, then one probe."""

    def __init__(
        self,
        inner: HostEnergySource,
        clock: Callable[[], datetime],
        *,
        failures: int = 3,
        cooldown: timedelta = timedelta(seconds=30),
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.breaker = CircuitBreaker(clock, failures=failures, cooldown=cooldown)
        self._latest: dict[tuple[str, str, str], HostEnergy | None] = {}
        self._wanted: dict[tuple[str, str, str], JobRef] = {}  # latest request per job, fetched in turn
        self._fetching = False  # a request taken off _wanted and not yet answered
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def job_energy(self, job: JobRef) -> HostEnergy | None:
        key = (job.namespace, job.name, str(job.start))
        with self._lock:
            self._wanted[key] = job
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="host-energy", daemon=True)
                self._thread.start()
            self._lock.notify()
            return self._latest.get(key)

    def forget(self, job: JobRef) -> None:
        with self._lock:
            key = (job.namespace, job.name, str(job.start))
            self._latest.pop(key, None)
            self._wanted.pop(key, None)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every request so far was answered (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while (self._wanted or self._fetching) and time.monotonic() < deadline:
                self._lock.wait(timeout=0.05)
            return not (self._wanted or self._fetching)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._wanted and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                key, job = next(iter(self._wanted.items()))
                del self._wanted[key]
                self._fetching = True
            if not self.breaker.admit():
                with self._lock:
                    self._fetching = False
                    self._lock.notify_all()
                continue  # open: the last figure stands; asked again at the next accounting
            try:
                found = self.inner.job_energy(job)
            except ProviderError as exc:
                self.breaker.failed()
                log.warning("host energy of %s/%s: %s", job.namespace, job.name, exc)
            except Exception as exc:  # a bug or an HTTP library error: counted, never a dead thread
                self.breaker.failed()
                log.warning("host energy of %s/%s: %r", job.namespace, job.name, exc)
            else:
                self.breaker.succeeded()
                with self._lock:
                    if found is not None or key not in self._latest:
                        self._latest[key] = found
            with self._lock:
                self._fetching = False
                self._lock.notify_all()
