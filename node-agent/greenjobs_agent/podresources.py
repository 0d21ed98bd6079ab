"""Which GPU devices each pod holds: the kubelet PodResources API v1 (device plugin and DRA devices), or
a simulation fed from the pod list. Mapping devices to physical GPUs is devices.py's job."""

import builtins
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import grpc

from greenjobs.api.constants import GPU_RESOURCE

from .devices import DRA_PREFIX, DeviceRef, is_gpu_resource
from .gpu.base import GpuDevice
from .podresources_pb import api_pb2, api_pb2_grpc
from .pods import PodInfo, PodKey
from .statefile import atomic_write_json, read_json

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
SIM_STATE_FILE = "simulated-podresources.json"


class PodGpuSource(Protocol):
    def list(self) -> dict[PodKey, list[DeviceRef]]:
        """The GPU devices (device plugin or DRA) each pod on the node holds."""
        ...


class KubeletPodGpuSource:
    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout_s: float = 5.0) -> None:
        self._timeout_s = timeout_s
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")
        self._stub = api_pb2_grpc.PodResourcesListerStub(self._channel)  # type: ignore[no-untyped-call]

    def list(self) -> dict[PodKey, list[DeviceRef]]:
        response = self._stub.List(api_pb2.ListPodResourcesRequest(), timeout=self._timeout_s)
        out: dict[PodKey, list[DeviceRef]] = {}
        for pod in response.pod_resources:
            refs: set[DeviceRef] = set()
            for container in pod.containers:
                for dev in container.devices:
                    if is_gpu_resource(dev.resource_name):
                        refs.update(DeviceRef(dev.resource_name, i) for i in dev.device_ids)
                for claim in container.dynamic_resources:
                    for res in claim.claim_resources:
                        if res.driver_name and res.device_name:
                            refs.add(DeviceRef(DRA_PREFIX + res.driver_name, res.device_name))
            if refs:
                out[PodKey(pod.namespace, pod.name)] = sorted(refs)
        return out

    def close(self) -> None:
        self._channel.close()


class SimulatedPodGpuSource:
    """Gives each pod that is bound to this node and not finished as many GPU devices as its
    nvidia.com/gpu limit (as the device plugin would), persisted so a restart keeps them.

    `replicas` > 1 simulates time-slicing: each GPU is advertised that many times ("GPU-<uuid>::<n>")
    and a pod's devices are spread over the GPUs with the most free replicas, so pods share GPUs.
    """

    def __init__(
        self,
        pods: Callable[[], list[PodInfo]],
        devices: list[GpuDevice],
        state_dir: Path | None = None,
        replicas: int = 1,
    ) -> None:
        self._pods = pods
        self._devices = devices
        self._replicas = replicas
        self._path = state_dir / SIM_STATE_FILE if state_dir is not None else None
        self._assigned: dict[PodKey, list[tuple[int, int]]] = {}  # pod -> (GPU, replica)
        if self._path is not None:
            data = read_json(self._path) or {}
            replicas_of = data.get("replicas", {})
            for key, gpus in data.get("pods", {}).items():
                namespace, _, name = key.partition("/")
                reps = replicas_of.get(key) or [0] * len(gpus)
                self._assigned[PodKey(namespace, name)] = [(int(g), int(r)) for g, r in zip(gpus, reps, strict=False)]

    def list(self) -> dict[PodKey, list[DeviceRef]]:
        live = {p.key: p for p in self._pods() if not p.finished and p.gpu_limit > 0}
        changed = False
        for key in [k for k in self._assigned if k not in live]:
            del self._assigned[key]
            changed = True
        used = {slot for slots in self._assigned.values() for slot in slots}
        for key in sorted(live):
            if key in self._assigned:
                continue
            slots = self._pick(live[key].gpu_limit, used)
            if slots is None:
                continue  # the scheduler would not have placed it; wait for GPUs to free up
            self._assigned[key] = slots
            used.update(slots)
            changed = True
        if changed and self._path is not None:
            items = sorted(self._assigned.items())
            atomic_write_json(
                self._path,
                {
                    "pods": {f"{k.namespace}/{k.name}": [g for g, _ in s] for k, s in items},
                    "replicas": {f"{k.namespace}/{k.name}": [r for _, r in s] for k, s in items},
                },
            )
        return {k: [self._ref(g, r) for g, r in s] for k, s in self._assigned.items()}

    def _pick(self, n: int, used: set[tuple[int, int]]) -> "builtins.list[tuple[int, int]] | None":
        free = {d.index: [r for r in range(self._replicas) if (d.index, r) not in used] for d in self._devices}
        if sum(map(len, free.values())) < n:
            return None
        picked: list[tuple[int, int]] = []
        for _ in range(n):
            mine = {g for g, _ in picked}
            # Distinct GPUs first, those with the most free replicas first, then the lowest index.
            g = min((g for g in free if free[g]), key=lambda g: (g in mine, -len(free[g]), g))
            picked.append((g, free[g].pop(0)))
        return sorted(picked)

    def _ref(self, gpu: int, replica: int) -> DeviceRef:
        uuid = self._devices[gpu].uuid
        return DeviceRef(GPU_RESOURCE, f"{uuid}::{replica}" if self._replicas > 1 else uuid)
