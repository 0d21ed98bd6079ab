"""Free GPUs per zone over time: what the fleet planner may fill.

Pure code, no Kubernetes: the operator fills these plain dataclasses from its node and pod indexes,
`greenjobs plan --capacity` and the benchmarks build them directly.

    free(zone, t) = GPUs of Ready, schedulable nodes in the zone
                  - GPUs of pods greenjobs does not manage (assumed to stay)
                  - GPUs of running GreenTrainingJobs until their expected end
                  - the zone's reserve (for work that cannot wait)

never below 0. A running job past its expected end still holds its GPUs for one more grid step: it
really ends when it ends, and the operator re-plans on completion.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from greenjobs.carbon.series import to_epoch

DEFAULT_GPU_RESOURCES: tuple[str, ...] = ("nvidia.com/gpu",)

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Node:
    name: str
    zone: str
    gpus: int  # allocatable GPUs (see gpu_count)
    ready: bool = True
    schedulable: bool = True  # False when cordoned (spec.unschedulable)


@dataclass(frozen=True)
class ForeignPod:
    """A pod greenjobs does not manage that holds GPUs on a node of `zone`."""

    zone: str
    gpus: int


@dataclass(frozen=True)
class RunningJob:
    """A started GreenTrainingJob: it holds `gpus` in `zone` until `expected_end`."""

    id: str
    zone: str
    gpus: int
    expected_end: datetime


def gpu_count(resources: Mapping[str, object], names: Sequence[str] = DEFAULT_GPU_RESOURCES) -> int:
    """GPUs in a resource list (a node's allocatable or a pod's requests), summed over `names`.

    GPU quantities are whole numbers ("8"); anything else is a clear error naming the resource.
    """
    total = 0
    for name in names:
        raw = resources.get(name)
        if raw is None:
            continue
        try:
            n = int(str(raw))
        except ValueError:
            raise ValueError(f"{name}: GPU quantity must be a whole number, got {raw!r}") from None
        if n < 0:
            raise ValueError(f"{name}: GPU quantity must not be negative, got {raw!r}")
        total += n
    return total


@dataclass(frozen=True)
class Capacity:
    """Free GPUs per zone as a step function of time: `base` now, plus `releases` as jobs end."""

    base: Mapping[str, int]  # zone -> free GPUs now (before releases)
    releases: Mapping[str, Sequence[tuple[float, int]]] = field(default_factory=dict)  # zone -> (epoch s, +GPUs)

    @classmethod
    def constant(cls, gpus: Mapping[str, int]) -> "Capacity":
        """A fixed number of free GPUs per zone (what `greenjobs plan --capacity` gives)."""
        for zone, n in gpus.items():
            if n < 0:
                raise ValueError(f"capacity of zone {zone!r} must not be negative, got {n}")
        return cls(base=dict(gpus))

    @classmethod
    def build(
        cls,
        now: datetime,
        nodes: Iterable[Node],
        foreign_pods: Iterable[ForeignPod] = (),
        running: Iterable[RunningJob] = (),
        reserve: Mapping[str, int] | int = 0,
        step: timedelta = timedelta(minutes=15),
    ) -> "Capacity":
        """The capacity model of the module docstring, from the operator's indexes."""
        total: dict[str, int] = {}
        for node in nodes:
            total.setdefault(node.zone, 0)
            if node.ready and node.schedulable:
                total[node.zone] += max(node.gpus, 0)
        held: dict[str, int] = dict.fromkeys(total, 0)
        for pod in foreign_pods:
            held[pod.zone] = held.get(pod.zone, 0) + max(pod.gpus, 0)
        releases: dict[str, list[tuple[float, int]]] = {}
        floor = to_epoch(now) + step.total_seconds()
        for job in running:
            held[job.zone] = held.get(job.zone, 0) + max(job.gpus, 0)
            releases.setdefault(job.zone, []).append((max(to_epoch(job.expected_end), floor), max(job.gpus, 0)))
        base = {}
        for zone in dict.fromkeys([*total, *held]):
            keep = reserve if isinstance(reserve, int) else reserve.get(zone, 0)
            base[zone] = total.get(zone, 0) - held.get(zone, 0) - keep
        return cls(base=base, releases={z: sorted(r) for z, r in releases.items()})

    def zones(self) -> list[str]:
        return list(self.base)

    def final(self, zone: str) -> int:
        """Free GPUs in `zone` once every running job has ended: the most it will ever have."""
        return max(self.base.get(zone, 0) + sum(g for _, g in self.releases.get(zone, ())), 0)

    def free_at(self, zone: str, t: datetime) -> int:
        """Free GPUs in `zone` at `t` (0 for an unknown zone)."""
        s = to_epoch(t)
        n = self.base.get(zone, 0) + sum(g for when, g in self.releases.get(zone, ()) if when <= s)
        return max(n, 0)

    def grid(self, zone: str, origin: float, step_s: float, n: int) -> IntArray:
        """Free GPUs in each of the n steps [origin + k step, origin + (k+1) step).

        A release inside a step counts from the next step on: a step is free only where it is free
        throughout.
        """
        free = np.full(n, self.base.get(zone, 0), dtype=np.int64)
        for when, gpus in self.releases.get(zone, ()):
            k = int(np.ceil((when - origin) / step_s))
            if k < n:
                free[max(k, 0) :] += gpus
        np.maximum(free, 0, out=free)
        return free
