"""The kubelet PodResources client against a real gRPC server on a unix socket (whole GPUs, time-slicing
replicas, MIG UUIDs, DRA devices); device ids to GPUs; the simulated source."""

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from greenjobs_agent.devices import DeviceRef, NodeLayout, Slot, slot_of
from greenjobs_agent.gpu.base import GpuDevice, MigInstance
from greenjobs_agent.podresources import KubeletPodGpuSource, SimulatedPodGpuSource
from greenjobs_agent.podresources_pb import api_pb2, api_pb2_grpc
from greenjobs_agent.pods import PodInfo, PodKey

DEVICES = [GpuDevice(i, f"GPU-aaaa-{i}", "H100", minor=i + 10) for i in range(4)]
MIGS = {3: [MigInstance("MIG-3a", 4), MigInstance("MIG-3b", 3)]}
LAYOUT = NodeLayout.of(DEVICES, MIGS)
GPU = "nvidia.com/gpu"


class Lister(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, response: api_pb2.ListPodResourcesResponse) -> None:
        self.response = response
        self.calls = 0

    def List(self, request: api_pb2.ListPodResourcesRequest, context: Any) -> api_pb2.ListPodResourcesResponse:
        self.calls += 1
        return self.response


def _pod(
    namespace: str, name: str, *containers: list[tuple[str, list[str]]], dra: list[tuple[str, str]] | None = None
) -> api_pb2.PodResources:
    claims = [
        api_pb2.DynamicResource(
            claim_name=f"{name}-gpu",
            claim_namespace=namespace,
            claim_resources=[
                api_pb2.ClaimResource(
                    cdi_devices=[api_pb2.CDIDevice(name=f"k8s.gpu.nvidia.com/claim=uid-{device}")],
                    driver_name=driver,
                    pool_name="node-a",
                    device_name=device,
                )
                for driver, device in dra or []
            ],
        )
    ]
    return api_pb2.PodResources(
        namespace=namespace,
        name=name,
        containers=[
            api_pb2.ContainerResources(
                name=f"c{i}",
                devices=[api_pb2.ContainerDevices(resource_name=r, device_ids=ids) for r, ids in devs],
                dynamic_resources=claims if i == 0 and dra else [],
            )
            for i, devs in enumerate(containers or [[]])
        ],
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Lister]]:
    response = api_pb2.ListPodResourcesResponse(
        pod_resources=[
            _pod(
                "ml",
                "train-0",
                [("nvidia.com/gpu", ["GPU-aaaa-2", "GPU-aaaa-0"])],
                [("example.com/nic", ["x"])],
            ),
            _pod("ml", "train-1", [("nvidia.com/gpu", ["3"])]),  # an index, as some plugins report
            _pod("ml", "shared", [("nvidia.com/gpu", ["GPU-aaaa-1::0", "GPU-aaaa-1::1"])]),  # time-slicing
            _pod("ml", "shared-2", [("nvidia.com/gpu", ["GPU-aaaa-1::2"])]),  # another replica of GPU 1
            _pod("ml", "mig", [("nvidia.com/mig-3g.40gb", ["MIG-3a"])]),  # MIG, mixed strategy
            _pod("ml", "claim", dra=[("gpu.nvidia.com", "gpu-11"), ("gpu.nvidia.com", "gpu-13-mig-9-4-3")]),
            _pod("ml", "cpu-only", [("example.com/nic", ["y"])]),
            _pod("ml", "stranger", [("nvidia.com/gpu", ["GPU-not-here"])]),
        ]
    )
    lister = Lister(response)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(lister, grpc_server)  # type: ignore[no-untyped-call]
    socket = str(tmp_path / "kubelet.sock")
    grpc_server.add_insecure_port(f"unix://{socket}")
    grpc_server.start()
    yield socket, lister
    grpc_server.stop(None)


def test_kubelet_client_lists_device_plugin_and_dra_gpus(server: tuple[str, Lister]) -> None:
    socket, lister = server
    source = KubeletPodGpuSource(socket)
    try:
        listed = source.list()
        assert lister.calls == 1
    finally:
        source.close()
    assert listed == {
        PodKey("ml", "train-0"): [DeviceRef(GPU, "GPU-aaaa-0"), DeviceRef(GPU, "GPU-aaaa-2")],
        PodKey("ml", "train-1"): [DeviceRef(GPU, "3")],
        PodKey("ml", "shared"): [DeviceRef(GPU, "GPU-aaaa-1::0"), DeviceRef(GPU, "GPU-aaaa-1::1")],
        PodKey("ml", "shared-2"): [DeviceRef(GPU, "GPU-aaaa-1::2")],
        PodKey("ml", "mig"): [DeviceRef("nvidia.com/mig-3g.40gb", "MIG-3a")],
        PodKey("ml", "claim"): [
            DeviceRef("dra:gpu.nvidia.com", "gpu-11"),
            DeviceRef("dra:gpu.nvidia.com", "gpu-13-mig-9-4-3"),
        ],
        PodKey("ml", "stranger"): [DeviceRef(GPU, "GPU-not-here")],  # mapped (and logged) by the agent
    }
    slots = {k: sorted({s for r in refs if (s := slot_of(r, LAYOUT)) is not None}) for k, refs in listed.items()}
    assert slots == {
        PodKey("ml", "train-0"): [Slot(0), Slot(2)],
        PodKey("ml", "train-1"): [Slot(3)],
        PodKey("ml", "shared"): [Slot(1)],  # two replicas of one GPU: one GPU
        PodKey("ml", "shared-2"): [Slot(1)],
        PodKey("ml", "mig"): [Slot(3, "MIG-3a", 4)],
        # DRA names GPUs by minor number (minor 11 is index 1), MIG instances by parent minor and size.
        PodKey("ml", "claim"): [Slot(1), Slot(3, "gpu-13-mig-9-4-3", 3)],
        PodKey("ml", "stranger"): [],
    }


def test_dra_devices_of_other_drivers_are_not_gpus() -> None:
    assert slot_of(DeviceRef("dra:example.com/nic", "gpu-0"), LAYOUT) is None
    assert slot_of(DeviceRef("dra:gpu.nvidia.com", "imex-channel-0"), LAYOUT) is None
    assert slot_of(DeviceRef("dra:gpu.nvidia.com", "gpu-99"), LAYOUT) is None


def test_wire_path_is_the_kubelet_service_name() -> None:
    # The kubelet serves /v1.PodResourcesLister/List; the re-typed proto must keep that package name.
    assert api_pb2.DESCRIPTOR.services_by_name["PodResourcesLister"].full_name == "v1.PodResourcesLister"


def _gpus(listed: dict[PodKey, list[DeviceRef]], layout: NodeLayout) -> dict[PodKey, list[int]]:
    return {k: [s.gpu for r in refs if (s := slot_of(r, layout)) is not None] for k, refs in listed.items()}


def test_simulated_source_assigns_free_gpus_and_persists(tmp_path: Path) -> None:
    devices = [GpuDevice(i, f"GPU-{i}", "sim") for i in range(8)]
    layout = NodeLayout.of(devices, {})
    pods = [
        PodInfo(PodKey("ml", "a"), "Running", "a", 3),
        PodInfo(PodKey("ml", "b"), "Pending", "b", 2),
        PodInfo(PodKey("ml", "c"), "Running", "c", 4),  # does not fit in the 3 left: waits
    ]
    source = SimulatedPodGpuSource(lambda: pods, devices, tmp_path)
    first = source.list()
    assert _gpus(first, layout) == {PodKey("ml", "a"): [0, 1, 2], PodKey("ml", "b"): [3, 4]}
    assert first[PodKey("ml", "a")][0] == DeviceRef(GPU, "GPU-0")  # whole GPUs: plain UUIDs
    pods[0] = PodInfo(PodKey("ml", "a"), "Succeeded", "a", 3)
    second = source.list()
    assert _gpus(second, layout) == {PodKey("ml", "b"): [3, 4], PodKey("ml", "c"): [0, 1, 2, 5]}
    restarted = SimulatedPodGpuSource(lambda: pods, devices, tmp_path)
    assert restarted.list() == second


def test_simulated_time_slicing_spreads_pods_over_replicas_of_the_same_gpus(tmp_path: Path) -> None:
    devices = [GpuDevice(i, f"GPU-{i}", "sim") for i in range(4)]
    layout = NodeLayout.of(devices, {})
    pods = [PodInfo(PodKey("ml", "a"), "Running", "a", 4), PodInfo(PodKey("ml", "b"), "Running", "b", 4)]
    listed = SimulatedPodGpuSource(lambda: pods, devices, tmp_path, replicas=2).list()
    assert _gpus(listed, layout) == {PodKey("ml", "a"): [0, 1, 2, 3], PodKey("ml", "b"): [0, 1, 2, 3]}
    assert [r.device_id for r in listed[PodKey("ml", "b")]] == ["GPU-0::1", "GPU-1::1", "GPU-2::1", "GPU-3::1"]
    pods.append(PodInfo(PodKey("ml", "c"), "Running", "c", 1))  # 8 replicas in use: c waits
    assert PodKey("ml", "c") not in SimulatedPodGpuSource(lambda: pods, devices, tmp_path, replicas=2).list()
