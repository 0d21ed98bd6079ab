"""The kubelet PodResources client against a real gRPC server on a unix socket; the simulated source."""

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from greenjobs_agent.gpu.base import GpuDevice
from greenjobs_agent.podresources import KubeletPodGpuSource, SimulatedPodGpuSource
from greenjobs_agent.podresources_pb import api_pb2, api_pb2_grpc
from greenjobs_agent.pods import PodInfo, PodKey

DEVICES = [GpuDevice(i, f"GPU-aaaa-{i}", "H100") for i in range(4)]


class Lister(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, response: api_pb2.ListPodResourcesResponse) -> None:
        self.response = response
        self.calls = 0

    def List(self, request: api_pb2.ListPodResourcesRequest, context: Any) -> api_pb2.ListPodResourcesResponse:
        self.calls += 1
        return self.response


def _pod(namespace: str, name: str, *containers: list[tuple[str, list[str]]]) -> api_pb2.PodResources:
    return api_pb2.PodResources(
        namespace=namespace,
        name=name,
        containers=[
            api_pb2.ContainerResources(
                name=f"c{i}",
                devices=[api_pb2.ContainerDevices(resource_name=r, device_ids=ids) for r, ids in devs],
            )
            for i, devs in enumerate(containers)
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


def test_kubelet_client_maps_gpu_device_ids_to_indices(server: tuple[str, Lister]) -> None:
    socket, lister = server
    source = KubeletPodGpuSource(DEVICES, socket)
    try:
        assert source.list() == {
            PodKey("ml", "train-0"): [0, 2],
            PodKey("ml", "train-1"): [3],
            PodKey("ml", "shared"): [1],
        }
        assert lister.calls == 1
    finally:
        source.close()


def test_wire_path_is_the_kubelet_service_name() -> None:
    # The kubelet serves /v1.PodResourcesLister/List; the re-typed proto must keep that package name.
    assert api_pb2.DESCRIPTOR.services_by_name["PodResourcesLister"].full_name == "v1.PodResourcesLister"


def test_simulated_source_assigns_free_gpus_and_persists(tmp_path: Path) -> None:
    pods = [
        PodInfo(PodKey("ml", "a"), "Running", "a", 3),
        PodInfo(PodKey("ml", "b"), "Pending", "b", 2),
        PodInfo(PodKey("ml", "c"), "Running", "c", 4),  # does not fit in the 3 left: waits
    ]
    source = SimulatedPodGpuSource(lambda: pods, 8, tmp_path)
    first = source.list()
    assert first == {PodKey("ml", "a"): [0, 1, 2], PodKey("ml", "b"): [3, 4]}
    pods[0] = PodInfo(PodKey("ml", "a"), "Succeeded", "a", 3)
    second = source.list()
    assert second == {PodKey("ml", "b"): [3, 4], PodKey("ml", "c"): [0, 1, 2, 5]}
    restarted = SimulatedPodGpuSource(lambda: pods, 8, tmp_path)
    assert restarted.list() == second
