"""NvmlBackend against the fake pynvml module in tests/fakes (argument and unit checks, NVML errors)."""

import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from greenjobs_agent.enforcer import Enforcer
from greenjobs_agent.gpu.base import GpuError, GpuLost, NoPermission, NotSupported
from greenjobs_agent.gpu.nvml import NvmlBackend
from greenjobs_agent.pods import JobKey
from greenjobs_agent.state import AgentState


def _load_fake() -> ModuleType:
    path = Path(__file__).parents[1] / "fakes" / "fake_pynvml.py"
    spec = importlib.util.spec_from_file_location("fake_pynvml", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fake = _load_fake()
JOB = JobKey("ml", "j")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def make(n: int = 2) -> tuple[NvmlBackend, Any, Clock]:
    nvml = fake.FakeNvml(gpus=[fake.FakeGpu(uuid=f"GPU-{i:04d}") for i in range(n)])
    clock = Clock()
    return NvmlBackend(clock, nvml=nvml), nvml, clock


def test_devices_and_read_calls_use_nvml_units() -> None:
    backend, nvml, _ = make()
    assert [(d.index, d.uuid, d.name) for d in backend.devices()] == [
        (0, "GPU-0000", "NVIDIA H100 80GB HBM3"),
        (1, "GPU-0001", "NVIDIA H100 80GB HBM3"),
    ]
    nvml.gpus[1].energy_mj = 123_456
    assert backend.constraints(1) == (200_000, 700_000)
    assert backend.default_limit_mw(1) == 700_000
    assert backend.total_energy_mj(1) == 123_456
    assert nvml.setter_calls() == []


def test_set_limit_clamps_into_constraints_and_sends_milliwatts() -> None:
    backend, nvml, _ = make()
    assert backend.set_limit_mw(0, 150_000) == 200_000
    assert backend.set_limit_mw(0, 900_000) == 700_000
    assert backend.set_limit_mw(1, 333_000) == 333_000
    assert nvml.gpus[0].limit_mw == 700_000 and nvml.gpus[1].limit_mw == 333_000
    assert [args[1] for _, args in nvml.setter_calls()] == [200_000, 700_000, 333_000]
    assert backend.get_limit_mw(1) == 333_000


def test_enforcer_restores_nvml_default_limit() -> None:
    backend, nvml, _ = make()
    nvml.gpus[0].default_mw = 650_000
    state = AgentState()
    enforcer = Enforcer(backend, state)
    enforcer.reconcile({0: (JOB, 300)})
    assert nvml.gpus[0].limit_mw == 300_000
    enforcer.reconcile({})
    assert nvml.gpus[0].limit_mw == 650_000
    assert state.applied == {}


def test_energy_falls_back_to_integrating_power_when_not_supported() -> None:
    backend, nvml, clock = make(1)
    nvml.fail("nvmlDeviceGetTotalEnergyConsumption", fake.NVMLError_NotSupported)
    nvml.gpus[0].power_mw = 200_000
    assert backend.total_energy_mj(0) == 0
    assert backend.uses_power_integration(0)
    clock.now += timedelta(seconds=10)
    nvml.gpus[0].power_mw = 400_000
    # trapezoid: (200 W + 400 W) / 2 * 10 s = 3000 J
    assert backend.total_energy_mj(0) == 3_000_000
    clock.now += timedelta(seconds=5)
    assert backend.total_energy_mj(0) == 3_000_000 + 2_000_000


def test_no_permission_on_set_is_a_clear_error_and_the_gpu_is_skipped() -> None:
    backend, nvml, _ = make()
    nvml.fail("nvmlDeviceSetPowerManagementLimit", fake.NVMLError_NoPermission, index=0)
    with pytest.raises(NoPermission, match=r"GPU 0: set power limit: .*CAP_SYS_ADMIN"):
        backend.set_limit_mw(0, 300_000)
    enforcer = Enforcer(backend, AgentState())
    enforcer.reconcile({0: (JOB, 300), 1: (JOB, 300)})
    enforcer.reconcile({0: (JOB, 250), 1: (JOB, 250)})
    assert nvml.gpus[1].limit_mw == 250_000
    assert set(enforcer.skipped) == {0}
    attempts_on_0 = [c for c in nvml.setter_calls() if c[1][0].index == 0]
    assert len(attempts_on_0) == 2  # the direct call above + one by the enforcer, then skipped


def test_gpu_lost_and_not_supported_map_to_gpu_errors() -> None:
    backend, nvml, _ = make()
    nvml.fail("nvmlDeviceGetPowerUsage", fake.NVMLError_GpuIsLost, index=1)
    with pytest.raises(GpuLost):
        backend.power_mw(1)
    assert backend.power_mw(0) == 100_000
    nvml.fail("nvmlDeviceGetPowerManagementLimitConstraints", fake.NVMLError_NotSupported, index=0)
    with pytest.raises(NotSupported):
        backend.set_limit_mw(0, 300_000)
    nvml.fail("nvmlDeviceGetPowerManagementLimit", fake.NVMLError_Unknown)
    with pytest.raises(GpuError):
        backend.get_limit_mw(1)


def test_lost_gpu_is_skipped_by_the_enforcer() -> None:
    backend, nvml, _ = make()
    nvml.fail("nvmlDeviceSetPowerManagementLimit", fake.NVMLError_GpuIsLost, index=1)
    enforcer = Enforcer(backend, AgentState())
    enforcer.reconcile({0: (JOB, 300), 1: (JOB, 300)})
    assert nvml.gpus[0].limit_mw == 300_000
    assert "lost" in enforcer.skipped[1]
