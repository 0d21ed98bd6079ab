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
from greenjobs_agent.sharing import Want
from greenjobs_agent.state import AgentState, Applied


def _load_fake() -> ModuleType:
    path = Path(__file__).parents[1] / "fakes" / "fake_pynvml.py"
    spec = importlib.util.spec_from_file_location("fake_pynvml", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fake = _load_fake()


def cap(watts: int | None) -> Want:
    return Want(watts)


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


def test_enforcer_restores_the_limit_from_before_its_cap_not_the_default() -> None:
    backend, nvml, _ = make()
    nvml.gpus[0].limit_mw = 650_000  # an administrator's limit, below the 700 W default
    state = AgentState()
    saved: list[dict[int, Applied]] = []
    enforcer = Enforcer(backend, state, persist=lambda: saved.append(dict(state.applied)))
    enforcer.reconcile({0: cap(300)})
    assert nvml.gpus[0].limit_mw == 300_000
    # Write-ahead: the old limit was on disk before the cap was set.
    assert saved[0] == {0: Applied(300_000, 650_000)}
    enforcer.reconcile({})
    assert nvml.gpus[0].limit_mw == 650_000
    assert state.applied == {}
    assert nvml.gpus[1].limit_mw == 700_000 and not [c for c in nvml.setter_calls() if c[1][0].index == 1]


def test_an_administrators_lower_limit_stays() -> None:
    backend, nvml, _ = make()
    nvml.gpus[0].limit_mw = 250_000
    enforcer = Enforcer(backend, AgentState())
    enforcer.reconcile({0: cap(400)})  # the job allows more than the administrator: their 250 W stays
    assert nvml.gpus[0].limit_mw == 250_000
    enforcer.reconcile({0: cap(200)})
    assert nvml.gpus[0].limit_mw == 200_000
    # The administrator lowers it further while the job runs: that becomes the limit to go back to.
    nvml.gpus[0].limit_mw = 220_000
    enforcer.reconcile({0: cap(300)})
    assert nvml.gpus[0].limit_mw == 220_000
    enforcer.reconcile({0: cap(None)})  # the job's policy drops its cap: back to the administrator's
    assert nvml.gpus[0].limit_mw == 220_000


def test_a_crash_between_recording_and_setting_a_cap_loses_nothing() -> None:
    backend, nvml, _ = make()
    nvml.gpus[0].limit_mw = 600_000
    # The state file says 300 W was being set over a 600 W limit, but the agent died before the set.
    state = AgentState(applied={0: Applied(300_000, 600_000)})
    Enforcer(backend, state).reconcile({})
    assert nvml.gpus[0].limit_mw == 600_000 and state.applied == {}
    # Same, and the job still runs: the limit found is kept as the one to restore.
    state = AgentState(applied={0: Applied(300_000, 600_000)})
    enforcer = Enforcer(backend, state)
    enforcer.reconcile({0: cap(300)})
    assert nvml.gpus[0].limit_mw == 300_000 and state.applied[0] == Applied(300_000, 600_000)


def test_a_limit_changed_by_someone_else_after_release_of_our_cap_is_left_alone() -> None:
    backend, nvml, _ = make()
    state = AgentState()
    enforcer = Enforcer(backend, state)
    enforcer.reconcile({0: cap(300)})
    nvml.gpus[0].limit_mw = 350_000  # nvidia-smi -pl by an administrator while capped
    enforcer.reconcile({})  # the pod ends: the administrator's value is not ours to undo
    assert nvml.gpus[0].limit_mw == 350_000 and state.applied == {}


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
    enforcer.reconcile({0: cap(300), 1: cap(300)})
    enforcer.reconcile({0: cap(250), 1: cap(250)})
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
    enforcer.reconcile({0: cap(300), 1: cap(300)})
    assert nvml.gpus[0].limit_mw == 300_000
    assert "lost" in enforcer.skipped[1]


# ---------------------------------------------------------------- MIG and per-process utilisation


def make_mig() -> tuple[NvmlBackend, Any]:
    gpus = [
        fake.FakeGpu(
            uuid="GPU-0000",
            minor=3,
            mig_mode=fake.NVML_DEVICE_MIG_ENABLE,
            migs=[fake.FakeMig("MIG-aaaa", 3, slot=0), fake.FakeMig("MIG-bbbb", 2, slot=2)],
        ),
        fake.FakeGpu(uuid="GPU-0001", mig_capable=False),
        fake.FakeGpu(uuid="GPU-0002"),  # MIG-capable, MIG off
    ]
    nvml = fake.FakeNvml(gpus=gpus)
    return NvmlBackend(Clock(), nvml=nvml), nvml


def test_mig_instances_are_enumerated_on_the_parent_only() -> None:
    backend, nvml = make_mig()
    assert [(d.index, d.uuid, d.minor) for d in backend.devices()] == [
        (0, "GPU-0000", 3),
        (1, "GPU-0001", 1),
        (2, "GPU-0002", 2),
    ]
    from greenjobs_agent.gpu.base import MigInstance

    assert backend.mig_instances(0) == [MigInstance("MIG-aaaa", 3), MigInstance("MIG-bbbb", 2)]
    assert backend.mig_instances(1) == []  # NOT_SUPPORTED: no MIG on this GPU
    assert backend.mig_instances(2) == []  # MIG mode off
    # Power and energy of a MIG parent are read on the parent; on an instance NVML says NOT_SUPPORTED.
    nvml.gpus[0].energy_mj = 5_000
    assert backend.total_energy_mj(0) == 5_000
    mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(nvml.nvmlDeviceGetHandleByIndex(0), 0)
    for fn in (nvml.nvmlDeviceGetPowerUsage, nvml.nvmlDeviceGetTotalEnergyConsumption):
        with pytest.raises(fake.NVMLError_NotSupported):
            fn(mig)
    with pytest.raises(fake.NVMLError_NotFound):
        nvml.nvmlDeviceGetMigDeviceHandleByIndex(nvml.nvmlDeviceGetHandleByIndex(0), 1)  # empty slot
    assert nvml.setter_calls() == []


def test_process_utilisation_means_per_pid_and_reads_only_new_samples() -> None:
    backend, nvml = make_mig()
    gpu = nvml.gpus[2]
    gpu.samples = [
        fake.ProcessSample(pid=10, timeStamp=100, smUtil=60),
        fake.ProcessSample(pid=10, timeStamp=200, smUtil=80),
        fake.ProcessSample(pid=11, timeStamp=200, smUtil=20),
    ]
    assert backend.process_utilisation(2) == {10: 70.0, 11: 20.0}
    assert backend.process_utilisation(2) == {}  # NOT_FOUND: nothing newer than time stamp 200
    gpu.samples.append(fake.ProcessSample(pid=11, timeStamp=300, smUtil=50))
    assert backend.process_utilisation(2) == {11: 50.0}
    gpu.process_util_supported = False
    assert backend.process_utilisation(2) is None


def test_readonly_check_reads_mig_and_utilisation_and_never_sets_anything(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location(
        "nvml_readonly_check", Path(__file__).parents[2] / "bench" / "nvml_readonly_check.py"
    )
    assert spec is not None and spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    backend, nvml = make_mig()
    nvml.gpus[2].samples = [fake.ProcessSample(pid=7, timeStamp=1, smUtil=90)]
    check.check(backend, 0.0, 0.05)
    out = capsys.readouterr().out
    assert "MIG-aaaa  3 slice(s) = 0.600 of the parent's energy" in out
    assert "{7: 90.0}" in out
    assert "energy counter resolution: no change" in out  # the fake's counters stand still
    assert nvml.setter_calls() == []
    with pytest.raises(RuntimeError, match="read-only"):
        backend._nvml.nvmlDeviceSetPowerManagementLimit(nvml.nvmlDeviceGetHandleByIndex(0), 300_000)
