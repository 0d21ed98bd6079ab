"""`GpuBackend` on NVML through pynvml (package nvidia-ml-py). Units are NVML's own: mW and mJ.

Where a GPU has no total-energy counter (nvmlDeviceGetTotalEnergyConsumption needs Volta or newer),
the backend integrates sampled power (trapezoid rule) into a synthetic counter: its accuracy then
depends on how often the agent samples. Errors are mapped to the GpuError classes of base.py.

MIG: the devices are the physical GPUs (nvmlDeviceGetHandleByIndex never returns a MIG instance);
power, limits and energy are read and set on them only (NVML answers NOT_SUPPORTED for those on a
MIG device handle). Their instances are enumerated for the device ids PodResources lists.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from .base import GpuDevice, GpuError, GpuLost, MigInstance, NoPermission, NotSupported, clamp

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class _Integrator:
    total_mj: float = 0.0
    last_s: float | None = None
    last_mw: float = 0.0


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlBackend:
    def __init__(self, clock: Callable[[], datetime], nvml: Any = None) -> None:
        if nvml is None:
            import pynvml  # noqa: PLC0415 - only where a real GPU node runs the agent

            nvml = pynvml
        self._nvml = nvml
        self._clock = clock
        self._call(None, "init", nvml.nvmlInit)
        self._handles: list[Any] = []
        self._devices: list[GpuDevice] = []
        count: int = self._call(None, "device count", nvml.nvmlDeviceGetCount)
        for i in range(count):
            handle = self._call(i, "handle", nvml.nvmlDeviceGetHandleByIndex, i)
            uuid = _text(self._call(i, "uuid", nvml.nvmlDeviceGetUUID, handle))
            name = _text(self._call(i, "name", nvml.nvmlDeviceGetName, handle))
            try:
                minor: int | None = int(self._call(i, "minor number", nvml.nvmlDeviceGetMinorNumber, handle))
            except GpuError:
                minor = None
            self._handles.append(handle)
            self._devices.append(GpuDevice(i, uuid, name, minor))
        self._constraints: dict[int, tuple[int, int]] = {}
        self._defaults: dict[int, int] = {}
        self._integrated: dict[int, _Integrator] = {}
        self._util_seen_us: dict[int, int] = {}  # last process-utilisation sample read, per GPU

    def devices(self) -> list[GpuDevice]:
        return list(self._devices)

    def constraints(self, index: int) -> tuple[int, int]:
        if index not in self._constraints:
            low, high = self._call(
                index,
                "power limit constraints",
                self._nvml.nvmlDeviceGetPowerManagementLimitConstraints,
                self._handle(index),
            )
            self._constraints[index] = (int(low), int(high))
        return self._constraints[index]

    def default_limit_mw(self, index: int) -> int:
        if index not in self._defaults:
            self._defaults[index] = int(
                self._call(
                    index,
                    "default power limit",
                    self._nvml.nvmlDeviceGetPowerManagementDefaultLimit,
                    self._handle(index),
                )
            )
        return self._defaults[index]

    def get_limit_mw(self, index: int) -> int:
        return int(self._call(index, "power limit", self._nvml.nvmlDeviceGetPowerManagementLimit, self._handle(index)))

    def set_limit_mw(self, index: int, mw: int) -> int:
        # NVML refuses values outside the constraints (Invalid Argument): clamp first.
        applied = clamp(int(mw), self.constraints(index))
        self._call(
            index,
            "set power limit",
            self._nvml.nvmlDeviceSetPowerManagementLimit,
            self._handle(index),
            applied,
        )
        return applied

    def total_energy_mj(self, index: int) -> int:
        if index not in self._integrated:
            try:
                return int(
                    self._call(
                        index,
                        "total energy",
                        self._nvml.nvmlDeviceGetTotalEnergyConsumption,
                        self._handle(index),
                    )
                )
            except NotSupported:
                log.warning(
                    "GPU %d has no total-energy counter; integrating sampled power instead",
                    index,
                    extra={"gpu": index},
                )
                self._integrated[index] = _Integrator()
        return int(self._integrate(index))

    def power_mw(self, index: int) -> int:
        return int(self._call(index, "power usage", self._nvml.nvmlDeviceGetPowerUsage, self._handle(index)))

    def mig_instances(self, index: int) -> list[MigInstance]:
        nvml, handle = self._nvml, self._handle(index)
        try:
            current, _pending = self._call(index, "MIG mode", nvml.nvmlDeviceGetMigMode, handle)
        except NotSupported:
            return []  # no MIG on this GPU
        if current != nvml.NVML_DEVICE_MIG_ENABLE:
            return []
        out: list[MigInstance] = []
        for k in range(int(self._call(index, "MIG device count", nvml.nvmlDeviceGetMaxMigDeviceCount, handle))):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, k)
            except nvml.NVMLError_NotFound:
                continue  # no instance in this slot
            except nvml.NVMLError as e:
                raise self._map_error(index, "MIG device handle", e) from e
            uuid = _text(self._call(index, "MIG uuid", nvml.nvmlDeviceGetUUID, mig))
            attrs = self._call(index, "MIG attributes", nvml.nvmlDeviceGetAttributes, mig)
            out.append(MigInstance(uuid, int(attrs.gpuInstanceSliceCount)))
        return out

    def process_utilisation(self, index: int) -> dict[int, float] | None:
        nvml = self._nvml
        since = self._util_seen_us.get(index, 0)
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(self._handle(index), since)
        except nvml.NVMLError_NotFound:
            return {}  # no sample since the last call: nothing ran
        except nvml.NVMLError_NotSupported:
            return None
        except nvml.NVMLError as e:
            raise self._map_error(index, "process utilisation", e) from e
        sums: dict[int, list[float]] = {}
        for sample in samples:
            sums.setdefault(int(sample.pid), []).append(float(sample.smUtil))
            self._util_seen_us[index] = max(self._util_seen_us.get(index, 0), int(sample.timeStamp))
        return {pid: sum(v) / len(v) for pid, v in sums.items()}

    def close(self) -> None:
        try:
            self._call(None, "shutdown", self._nvml.nvmlShutdown)
        except GpuError as e:
            log.warning("NVML shutdown failed: %s", e)

    def uses_power_integration(self, index: int) -> bool:
        return index in self._integrated

    # ---------------------------------------------------------------- internals

    def _integrate(self, index: int) -> float:
        acc = self._integrated[index]
        now = self._clock().timestamp()
        mw = float(self.power_mw(index))
        if acc.last_s is not None and now > acc.last_s:
            acc.total_mj += (mw + acc.last_mw) / 2 * (now - acc.last_s)
        acc.last_s, acc.last_mw = now, mw
        return acc.total_mj

    def _handle(self, index: int) -> Any:
        if not 0 <= index < len(self._handles):
            raise GpuLost(index, "handle", "no such GPU")
        return self._handles[index]

    def _call(self, index: int | None, operation: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except self._nvml.NVMLError as e:
            raise self._map_error(index, operation, e) from e

    def _map_error(self, index: int | None, operation: str, e: Exception) -> GpuError:
        nvml = self._nvml
        if isinstance(e, nvml.NVMLError_NotSupported):
            return NotSupported(index, operation, str(e))
        if isinstance(e, nvml.NVMLError_NoPermission):
            return NoPermission(index, operation, f"{e} (setting power limits needs root or CAP_SYS_ADMIN on the node)")
        if isinstance(e, nvml.NVMLError_GpuIsLost):
            return GpuLost(index, operation, str(e))
        return GpuError(index, operation, str(e))
