"""From what PodResources says a pod holds to the physical GPU (and MIG instance) it is on. Pure.

Device ids as the kubelet reports them:
- device plugin, whole GPU: "GPU-<uuid>", or a plain index with some plugins;
- device plugin, time-slicing or MPS replica: "GPU-<uuid>::<n>" (several pods on one GPU);
- device plugin, MIG ("nvidia.com/gpu" with the single strategy or "nvidia.com/mig-<profile>" with
  the mixed one): "MIG-<uuid>";
- Dynamic Resource Allocation (NVIDIA's DRA driver, driver "gpu.nvidia.com"): device "gpu-<minor>"
  for a whole GPU, "gpu-<minor>-mig-<profile>-<start>-<size>" for a MIG instance (size = slices).
"""

import re
from dataclasses import dataclass

from greenjobs.api.constants import GPU_RESOURCE

from .gpu.base import GpuDevice, MigInstance

MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
DRA_PREFIX = "dra:"  # DeviceRef.resource of a DRA device: "dra:<driver>"
NVIDIA_DRA_DRIVER = "gpu.nvidia.com"
_DRA_GPU = re.compile(r"^gpu-(\d+)$")
_DRA_MIG = re.compile(r"^gpu-(\d+)-mig-(\d+)-(\d+)-(\d+)$")


@dataclass(frozen=True, order=True)
class DeviceRef:
    """One device a pod holds, as PodResources lists it."""

    resource: str  # "nvidia.com/gpu", "nvidia.com/mig-1g.10gb", or "dra:<driver>"
    device_id: str  # device plugin id, or the DRA device name


@dataclass(frozen=True, order=True)
class Slot:
    """Where a device lives: the physical GPU, and the MIG instance on it (None: the whole GPU)."""

    gpu: int
    instance: str | None = None
    slices: int = 0


@dataclass(frozen=True)
class NodeLayout:
    """The node's GPUs as NVML enumerates them, indexed for the look-ups below."""

    by_uuid: dict[str, int]
    by_minor: dict[int, int]
    mig: dict[str, tuple[int, int]]  # MIG uuid -> (parent index, slices)
    mig_slices: dict[int, int]  # parent index -> slices of all instances configured on it
    count: int

    @classmethod
    def of(cls, devices: list[GpuDevice], migs: dict[int, list[MigInstance]]) -> "NodeLayout":
        return cls(
            by_uuid={d.uuid: d.index for d in devices},
            by_minor={(d.minor if d.minor is not None else d.index): d.index for d in devices},
            mig={m.uuid: (parent, m.slices) for parent, ms in migs.items() for m in ms},
            mig_slices={parent: sum(m.slices for m in ms) for parent, ms in migs.items() if ms},
            count=len(devices),
        )


def is_gpu_resource(resource: str) -> bool:
    return resource == GPU_RESOURCE or resource.startswith(MIG_RESOURCE_PREFIX) or resource.startswith(DRA_PREFIX)


def slot_of(ref: DeviceRef, layout: NodeLayout) -> Slot | None:
    """The slot of one device, or None when it is no GPU of this node (logged by the caller)."""
    if ref.resource.startswith(DRA_PREFIX):
        return _dra_slot(ref.resource.removeprefix(DRA_PREFIX), ref.device_id, layout)
    base = ref.device_id.split("::", 1)[0]  # drop a time-slicing/MPS replica suffix
    if base.startswith("MIG-"):
        found = layout.mig.get(base)
        return Slot(found[0], base, found[1]) if found is not None else None
    if base in layout.by_uuid:
        return Slot(layout.by_uuid[base])
    if base.isdigit() and int(base) < layout.count:
        return Slot(int(base))
    return None


def _dra_slot(driver: str, device: str, layout: NodeLayout) -> Slot | None:
    if driver != NVIDIA_DRA_DRIVER:
        return None
    if m := _DRA_GPU.match(device):
        index = layout.by_minor.get(int(m.group(1)))
        return Slot(index) if index is not None else None
    if m := _DRA_MIG.match(device):
        index = layout.by_minor.get(int(m.group(1)))
        return Slot(index, device, int(m.group(4))) if index is not None else None
    return None
