"""Who owns how much of each GPU, and which cap (if any) it may get. Pure: no NVML, no Kubernetes.

Rules (docs/nvml.md, "Whole, shared, MIG and DRA GPUs"):
- A GPU held by one pod is that pod's job's, wholly; it gets the job's target cap.
- A GPU shared by several pods (time-slicing or MPS replicas, or one DRA device in several pods):
  its energy is split by the pods' per-process SM utilisation where the driver reports it and the
  processes can be traced to pods, otherwise in equal shares; an estimate. It is capped only when
  every pod on it is a greenjobs job, at the most generous of their targets (no cap if one has none).
- A MIG parent: each instance owns its share of the GPU's slices (slices / slices of all instances
  configured on it); an estimate. The parent is capped only when all its instances are held by
  greenjobs jobs with one and the same target.
A GPU that no greenjobs pod holds gets no decision at all: the agent never changes it.
"""

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from .devices import Slot
from .pods import JobKey, PodKey

EXCLUSIVE = "exclusive"
UTILISATION = "processUtilisation"
EQUAL = "equalShares"
MIG_SLICES = "migSlices"


@dataclass(frozen=True)
class Holding:
    """One pod's hold on one slot of a GPU."""

    pod: PodKey
    slot: Slot
    job: JobKey | None  # None: no greenjobs job (or, with pending, one not resolved yet)
    pod_uid: str = ""
    pending: bool = False  # a greenjobs pod whose GTJ is not known yet: change nothing on its GPU


@dataclass(frozen=True)
class Want:
    """What the enforcer should do with a GPU that greenjobs jobs hold."""

    cap_watts: int | None  # None: no cap now (restore the limit from before greenjobs capped it)
    keep: bool = False  # a target is not known yet: leave the limit as it is


KEEP = Want(None, keep=True)


@dataclass
class GpuPlan:
    shares: dict[JobKey, float] = field(default_factory=dict)  # each job's share of the GPU's energy
    rule: str = EXCLUSIVE
    want: Want | None = None  # None: no greenjobs job holds the GPU, leave it alone
    notes: dict[JobKey, str] = field(default_factory=dict)  # why a job's own cap is not what the GPU got


def plan_gpus(
    holdings: list[Holding],
    targets: Mapping[JobKey, int | None],
    mig_slices: Mapping[int, int],
    utilisation: Mapping[int, Mapping[str, float]] | None = None,
) -> dict[int, GpuPlan]:
    """`targets`: targetCapWatts of each known job (a job absent is not known yet). `mig_slices`:
    slices of all instances configured on each MIG parent. `utilisation`: per GPU, pod uid -> SM %."""
    by_gpu: dict[int, list[Holding]] = defaultdict(list)
    for h in holdings:
        by_gpu[h.slot.gpu].append(h)
    plans: dict[int, GpuPlan] = {}
    for gpu, hs in sorted(by_gpu.items()):
        if any(h.slot.instance is not None for h in hs):
            plan = _mig(gpu, hs, targets, mig_slices.get(gpu, 0))
        else:
            plan = _whole(gpu, hs, targets, (utilisation or {}).get(gpu))
        if plan.shares or plan.want is not None:
            plans[gpu] = plan
    return plans


def _whole(
    gpu: int, hs: list[Holding], targets: Mapping[JobKey, int | None], util: Mapping[str, float] | None
) -> GpuPlan:
    pods = {h.pod: h for h in hs}  # one pod holding several replicas of one GPU is still one holder
    ours = [h for h in pods.values() if h.job is not None or h.pending]
    if not ours:
        return GpuPlan()
    if len(pods) == 1:
        h = ours[0]
        if h.job is None:
            return GpuPlan(want=KEEP)
        return GpuPlan({h.job: 1.0}, EXCLUSIVE, _target(h.job, targets))
    shares, rule = _split(list(pods.values()), util)
    plan = GpuPlan({}, rule)
    for h in pods.values():
        if h.job is not None:
            plan.shares[h.job] = plan.shares.get(h.job, 0.0) + shares[h.pod]
    plan.want, reason = _shared_cap(gpu, list(pods.values()), targets)
    _note(plan, reason, targets)
    return plan


def _split(pods: list[Holding], util: Mapping[str, float] | None) -> tuple[dict[PodKey, float], str]:
    if util:
        total = sum(util.values())
        traced = {h.pod: util.get(h.pod_uid, 0.0) for h in pods}
        if total > 0 and any(v > 0 for v in traced.values()):
            return {p: v / total for p, v in traced.items()}, UTILISATION
    return {h.pod: 1.0 / len(pods) for h in pods}, EQUAL


def _shared_cap(gpu: int, pods: list[Holding], targets: Mapping[JobKey, int | None]) -> tuple[Want, str | None]:
    if any(h.pending for h in pods):
        return KEEP, None
    if any(h.job is None for h in pods):
        return Want(None), f"GPU {gpu} is shared with pods that are not greenjobs jobs: not capped"
    jobs = {h.job for h in pods if h.job is not None}
    if any(j not in targets for j in jobs):
        return KEEP, None
    wanted = [targets[j] for j in jobs]
    if any(t is None for t in wanted):
        return Want(None), f"GPU {gpu} is shared with a job that sets no cap: not capped"
    most = max(t for t in wanted if t is not None)
    return Want(most), f"GPU {gpu} is shared: capped at the most generous target of its jobs, {most} W"


def _mig(gpu: int, hs: list[Holding], targets: Mapping[JobKey, int | None], total_slices: int) -> GpuPlan:
    instances: dict[str, list[Holding]] = defaultdict(list)
    for h in hs:
        if h.slot.instance is not None and h not in instances[h.slot.instance]:
            instances[h.slot.instance].append(h)
    slices = {i: hs_[0].slot.slices for i, hs_ in instances.items()}
    total = max(total_slices, sum(slices.values()))
    plan = GpuPlan({}, MIG_SLICES)
    if total <= 0:
        return plan
    for inst, holders in instances.items():
        pods = {h.pod: h for h in holders}
        for h in pods.values():  # an instance shared by several pods: equal parts of its share
            if h.job is not None:
                plan.shares[h.job] = plan.shares.get(h.job, 0.0) + slices[inst] / total / len(pods)
    everyone = [h for holders in instances.values() for h in holders]
    if not any(h.job is not None or h.pending for h in everyone):
        return GpuPlan()
    plan.want, reason = _mig_cap(gpu, everyone, sum(slices.values()), total, targets)
    _note(plan, reason, targets)
    return plan


def _mig_cap(
    gpu: int, holders: list[Holding], held: int, total: int, targets: Mapping[JobKey, int | None]
) -> tuple[Want, str | None]:
    if any(h.pending for h in holders):
        return KEEP, None
    if any(h.job is None for h in holders):
        return Want(None), f"MIG instances of GPU {gpu} are used by pods that are not greenjobs jobs: not capped"
    if held < total:
        return Want(None), f"not every MIG instance of GPU {gpu} is held by a greenjobs job: not capped"
    jobs = {h.job for h in holders if h.job is not None}
    if any(j not in targets for j in jobs):
        return KEEP, None
    wanted = {targets[j] for j in jobs}
    if len(wanted) != 1:
        return Want(None), f"MIG instances of GPU {gpu} belong to jobs with different targets: not capped"
    return Want(wanted.pop()), None


def _target(job: JobKey, targets: Mapping[JobKey, int | None]) -> Want:
    return Want(targets[job]) if job in targets else KEEP


def _note(plan: GpuPlan, reason: str | None, targets: Mapping[JobKey, int | None]) -> None:
    if reason is None or plan.want is None:
        return
    for job in plan.shares:
        if targets.get(job) != plan.want.cap_watts:
            plan.notes[job] = reason
