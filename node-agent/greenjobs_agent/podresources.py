"""Which GPUs each pod holds: the kubelet PodResources API v1, or a simulation fed from the pod list."""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import grpc

from greenjobs.api.constants import GPU_RESOURCE

from .gpu.base import GpuDevice
from .podresources_pb import api_pb2, api_pb2_grpc
from .pods import PodInfo, PodKey
from .statefile import atomic_write_json, read_json

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
SIM_STATE_FILE = "simulated-podresources.json"


class PodGpuSource(Protocol):
    def list(self) -> dict[PodKey, list[int]]: ...


def device_index(device_id: str, by_uuid: dict[str, int], count: int) -> int | None:
    """Backend index of a device id from the NVIDIA device plugin: a UUID ("GPU-..."), a UUID with a
    time-slicing replica suffix ("GPU-...::1"), or a plain index."""
    base = device_id.split("::", 1)[0]
    if base in by_uuid:
        return by_uuid[base]
    if base.isdigit() and int(base) < count:
        return int(base)
    return None


class KubeletPodGpuSource:
    def __init__(self, devices: list[GpuDevice], socket_path: str = DEFAULT_SOCKET, timeout_s: float = 5.0) -> None:
        self._by_uuid = {d.uuid: d.index for d in devices}
        self._count = len(devices)
        self._timeout_s = timeout_s
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")
        self._stub = api_pb2_grpc.PodResourcesListerStub(self._channel)  # type: ignore[no-untyped-call]
        self._unknown: set[str] = set()

    def list(self) -> dict[PodKey, list[int]]:
        response = self._stub.List(api_pb2.ListPodResourcesRequest(), timeout=self._timeout_s)
        out: dict[PodKey, list[int]] = {}
        for pod in response.pod_resources:
            indices: set[int] = set()
            for container in pod.containers:
                for dev in container.devices:
                    if dev.resource_name != GPU_RESOURCE:
                        continue
                    for device_id in dev.device_ids:
                        index = device_index(device_id, self._by_uuid, self._count)
                        if index is None:
                            if device_id not in self._unknown:
                                log.warning("device id %r matches no GPU of this node", device_id)
                                self._unknown.add(device_id)
                            continue
                        indices.add(index)
            if indices:
                out[PodKey(pod.namespace, pod.name)] = sorted(indices)
        return out

    def close(self) -> None:
        self._channel.close()


class SimulatedPodGpuSource:
    """Gives each pod that is bound to this node and not finished as many free GPUs as its
    nvidia.com/gpu limit (as the device plugin would), persisted so a restart keeps them."""

    def __init__(self, pods: Callable[[], list[PodInfo]], n_gpus: int, state_dir: Path | None = None) -> None:
        self._pods = pods
        self._n = n_gpus
        self._path = state_dir / SIM_STATE_FILE if state_dir is not None else None
        self._assigned: dict[PodKey, list[int]] = {}
        if self._path is not None:
            data = read_json(self._path) or {}
            for key, gpus in data.get("pods", {}).items():
                namespace, _, name = key.partition("/")
                self._assigned[PodKey(namespace, name)] = [int(g) for g in gpus]

    def list(self) -> dict[PodKey, list[int]]:
        live = {p.key: p for p in self._pods() if p.phase not in ("Succeeded", "Failed") and p.gpu_limit > 0}
        changed = False
        for key in [k for k in self._assigned if k not in live]:
            del self._assigned[key]
            changed = True
        used = {g for gpus in self._assigned.values() for g in gpus}
        for key in sorted(live):
            if key in self._assigned:
                continue
            free = [g for g in range(self._n) if g not in used][: live[key].gpu_limit]
            if len(free) < live[key].gpu_limit:
                continue  # the scheduler would not have placed it; wait for GPUs to free up
            self._assigned[key] = free
            used.update(free)
            changed = True
        if changed and self._path is not None:
            atomic_write_json(
                self._path,
                {"pods": {f"{k.namespace}/{k.name}": g for k, g in sorted(self._assigned.items())}},
            )
        return {k: list(g) for k, g in self._assigned.items()}
