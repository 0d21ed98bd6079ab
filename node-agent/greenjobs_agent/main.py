"""`greenjobs agent`: the node agent process. Configuration comes from the environment."""

import argparse
import logging
import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from greenjobs.logs import configure_logging

from .agent import BOOT_ID_FILE, Agent, read_boot_id
from .gpu.base import GpuBackend
from .metrics import AgentMetrics, serve
from .podresources import DEFAULT_SOCKET, KubeletPodGpuSource, PodGpuSource, SimulatedPodGpuSource
from .processes import PidResolver
from .state import StateStore

log = logging.getLogger("greenjobs_agent")


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GREENJOBS_", populate_by_name=True)

    node_name: str = Field(validation_alias="NODE_NAME", min_length=1)
    gpu_backend: Literal["nvml", "simulated"] = "nvml"
    sim_gpus: int = Field(default=8, ge=1, le=64)
    sim_gpu_model: Literal["h100", "a100"] = "h100"
    podresources: Literal["kubelet", "simulated"] = "kubelet"
    podresources_socket: str = DEFAULT_SOCKET
    sim_gpu_replicas: int = Field(default=1, ge=1, le=64)  # simulated time-slicing: replicas per GPU
    boot_id_file: Path = BOOT_ID_FILE  # changes at each boot: a reboot's downtime is not counted
    proc_root: Path = Path("/proc")  # the host's /proc: traces GPU processes to pods (hostPID)
    forget_after: float = Field(default=60.0, ge=0)  # s a finished job's count is kept after its final report
    state_dir: Path = Path("/var/lib/greenjobs")
    sample_interval: float = Field(default=1.0, gt=0)
    report_interval: float = Field(default=15.0, gt=0)
    power_capping: bool = True  # false: metering only (no CAP_SYS_ADMIN needed)
    metrics_port: int = Field(default=9102, ge=0, le=65535)
    log_level: str = "INFO"
    # Comma-separated namespaces whose pods and GreenTrainingJobs this agent manages; empty: all.
    namespaces: str = ""

    def namespace_list(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Configured from the environment: NODE_NAME (required), GREENJOBS_GPU_BACKEND=nvml|simulated, "
        "GREENJOBS_SIM_GPUS, GREENJOBS_POWER_CAPPING=true|false, "
        "GREENJOBS_PODRESOURCES=kubelet|simulated, GREENJOBS_PODRESOURCES_SOCKET, GREENJOBS_SIM_GPU_REPLICAS, "
        "GREENJOBS_BOOT_ID_FILE, GREENJOBS_PROC_ROOT, GREENJOBS_FORGET_AFTER, "
        "GREENJOBS_STATE_DIR, GREENJOBS_SAMPLE_INTERVAL, GREENJOBS_REPORT_INTERVAL, GREENJOBS_METRICS_PORT, "
        "GREENJOBS_NAMESPACES=a,b (manage only these namespaces' pods; default all), "
        "KUBECONFIG (else in-cluster config)."
    )


def _clock() -> datetime:
    return datetime.now(UTC)


def _backend(s: AgentSettings) -> GpuBackend:
    if s.gpu_backend == "simulated":
        from .gpu.simulated import MODELS, SimulatedBackend  # noqa: PLC0415

        return SimulatedBackend(_clock, n=s.sim_gpus, model=MODELS[s.sim_gpu_model], state_dir=s.state_dir)
    from .gpu.nvml import NvmlBackend  # noqa: PLC0415 - needs the NVIDIA driver

    return NvmlBackend(_clock)


def _api_client() -> object:
    from greenjobs.kubeclient import api_client  # noqa: PLC0415 - only the real agent needs the client

    return api_client(in_cluster_first=not os.environ.get("KUBECONFIG"))


def run(args: argparse.Namespace) -> int:
    settings = AgentSettings()  # fields come from the environment
    configure_logging(settings.log_level)
    from kubernetes import client  # noqa: PLC0415

    from .kube import KubeClusterView  # noqa: PLC0415
    from .reporter import KubeStatusPatcher  # noqa: PLC0415

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    backend = _backend(settings)
    api = _api_client()
    metrics = AgentMetrics(settings.node_name, stale_after_s=max(30.0, 10 * settings.sample_interval))
    view = KubeClusterView(settings.node_name, api, settings.namespace_list(), metrics)
    source: PodGpuSource
    if settings.podresources == "simulated":
        source = SimulatedPodGpuSource(view.pods, backend.devices(), settings.state_dir, settings.sim_gpu_replicas)
    else:
        source = KubeletPodGpuSource(settings.podresources_socket)
    agent = Agent(
        settings.node_name,
        backend,
        view=view,
        gpu_source=source,
        patcher=KubeStatusPatcher(client.CustomObjectsApi(api)),
        store=StateStore(settings.state_dir),
        clock=_clock,
        metrics=metrics,
        report_interval_s=settings.report_interval,
        power_capping=settings.power_capping,
        boot_id=lambda: read_boot_id(settings.boot_id_file),
        forget_after_s=settings.forget_after,
        pids=PidResolver(settings.proc_root),
    )
    server = serve(metrics, settings.metrics_port)
    stop = threading.Event()
    wake = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    view.start(on_change=wake.set)
    log.info(
        "agent started",
        extra={
            "node": settings.node_name,
            "gpus": len(backend.devices()),
            "backend": settings.gpu_backend,
            "metricsPort": server.server_address[1],  # the bound one when GREENJOBS_METRICS_PORT=0
            "namespaces": settings.namespace_list() or "all",
        },
    )
    while not stop.is_set():
        try:
            agent.tick()
        except Exception:  # one bad tick must not kill the agent; the next one retries
            log.exception("tick failed")
            metrics.error("tick")
        # A watch event (new pod, new cap) wakes the loop early so changes apply within a second.
        wake.wait(settings.sample_interval)
        wake.clear()
    log.info("SIGTERM: restoring default power limits and flushing energy")
    try:
        agent.shutdown()
    finally:
        view.stop()
        server.shutdown()
        backend.close()
    return 0
