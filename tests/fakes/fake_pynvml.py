"""A fake of the pynvml module for NvmlBackend tests: same function names, NVML units, strict checks.

Each call checks its arguments as NVML would (initialised library, a handle it issued, integer
milliwatts inside the constraints) and raises the pynvml-style NVMLError subclasses, either
because an argument is wrong or because a test asked for a fault with `fail(function, error)`.

Modelled on NVML's documented behaviour (nvml.h, NVML API reference):
- MIG: nvmlDeviceGetHandleByIndex returns physical GPUs only; their instances come from
  nvmlDeviceGetMigDeviceHandleByIndex (NOT_FOUND for an empty slot, INVALID_ARGUMENT past
  nvmlDeviceGetMaxMigDeviceCount). On a MIG device handle the UUID ("MIG-...") and
  nvmlDeviceGetAttributes (gpuInstanceSliceCount, ...) work, while power, power limits and the energy
  counter answer NOT_SUPPORTED: they exist only on the parent. nvmlDeviceGetMigMode answers
  NOT_SUPPORTED on a GPU without MIG.
- nvmlDeviceGetProcessUtilization(handle, lastSeenTimeStamp): the samples newer than the time stamp
  (pid, timeStamp in us, smUtil, memUtil, ...); NOT_FOUND when there is none; NOT_SUPPORTED on GPUs
  without it and on MIG device handles.
"""

from dataclasses import dataclass, field
from typing import Any

NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1
MAX_MIG_DEVICES = 7  # A100/H100/H200: at most 7 GPU instances


class NVMLError(Exception):
    value = NVML_ERROR_UNKNOWN
    message = "Unknown Error"

    def __str__(self) -> str:
        return self.message  # as pynvml's NVMLError.__str__


class NVMLError_InvalidArgument(NVMLError):
    value = NVML_ERROR_INVALID_ARGUMENT
    message = "Invalid Argument"


class NVMLError_NotSupported(NVMLError):
    value = NVML_ERROR_NOT_SUPPORTED
    message = "Not Supported"


class NVMLError_NoPermission(NVMLError):
    value = NVML_ERROR_NO_PERMISSION
    message = "Insufficient Permissions"


class NVMLError_Uninitialized(NVMLError):
    value = NVML_ERROR_UNINITIALIZED
    message = "Uninitialized"


class NVMLError_NotFound(NVMLError):
    value = NVML_ERROR_NOT_FOUND
    message = "Not Found"


class NVMLError_GpuIsLost(NVMLError):
    value = NVML_ERROR_GPU_IS_LOST
    message = "GPU is lost"


class NVMLError_Unknown(NVMLError):
    value = NVML_ERROR_UNKNOWN


@dataclass
class FakeMig:
    uuid: str  # "MIG-..."
    slices: int  # gpuInstanceSliceCount
    slot: int  # index for nvmlDeviceGetMigDeviceHandleByIndex


@dataclass
class ProcessSample:
    pid: int
    timeStamp: int  # NVML field names
    smUtil: int
    memUtil: int = 0
    encUtil: int = 0
    decUtil: int = 0


@dataclass
class DeviceAttributes:
    gpuInstanceSliceCount: int
    computeInstanceSliceCount: int
    multiprocessorCount: int
    memorySizeMB: int


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    min_mw: int = 200_000
    max_mw: int = 700_000
    default_mw: int = 700_000
    limit_mw: int = 700_000
    power_mw: int = 100_000
    energy_mj: int = 0
    minor: int | None = None  # /dev/nvidiaN; the index when None
    mig_capable: bool = True
    mig_mode: int = NVML_DEVICE_MIG_DISABLE
    migs: list[FakeMig] = field(default_factory=list)
    process_util_supported: bool = True
    samples: list[ProcessSample] = field(default_factory=list)


@dataclass(frozen=True)
class _Handle:
    index: int
    mig_slot: int | None = None  # a MIG device handle: the instance's slot on GPU `index`


_Error = NVMLError  # the class attribute below shadows the name inside FakeNvml


@dataclass
class FakeNvml:
    """Pass an instance where NvmlBackend expects the pynvml module."""

    gpus: list[FakeGpu]
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    initialised: bool = False
    _faults: dict[tuple[str, int | None], type[_Error]] = field(default_factory=dict)

    NVMLError = NVMLError
    NVMLError_InvalidArgument = NVMLError_InvalidArgument
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NoPermission = NVMLError_NoPermission
    NVMLError_Uninitialized = NVMLError_Uninitialized
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLError_NotFound = NVMLError_NotFound
    NVMLError_Unknown = NVMLError_Unknown
    NVML_DEVICE_MIG_ENABLE = NVML_DEVICE_MIG_ENABLE
    NVML_DEVICE_MIG_DISABLE = NVML_DEVICE_MIG_DISABLE

    def fail(self, function: str, error: type[_Error], index: int | None = None) -> None:
        """Make `function` (on GPU `index`, or on every GPU) raise `error` from now on."""
        self._faults[(function, index)] = error

    def setter_calls(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [c for c in self.calls if "Set" in c[0]]

    # ---------------------------------------------------------------- pynvml functions

    def nvmlInit(self) -> None:
        self._enter("nvmlInit", None)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown", None)
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount", None)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._enter("nvmlDeviceGetHandleByIndex", index, index)
        if not isinstance(index, int) or not 0 <= index < len(self.gpus):
            raise NVMLError_InvalidArgument()
        return _Handle(index)

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        gpu = self._gpu("nvmlDeviceGetUUID", handle, mig_ok=True)
        return self._mig(gpu, handle).uuid if handle.mig_slot is not None else gpu.uuid

    def nvmlDeviceGetMinorNumber(self, handle: _Handle) -> int:
        gpu = self._gpu("nvmlDeviceGetMinorNumber", handle)
        return gpu.minor if gpu.minor is not None else handle.index

    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        gpu = self._gpu("nvmlDeviceGetMigMode", handle)
        if not gpu.mig_capable:
            raise NVMLError_NotSupported()
        return [gpu.mig_mode, gpu.mig_mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        gpu = self._gpu("nvmlDeviceGetMaxMigDeviceCount", handle)
        return MAX_MIG_DEVICES if gpu.mig_capable else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, index: int) -> _Handle:
        gpu = self._gpu("nvmlDeviceGetMigDeviceHandleByIndex", handle, index)
        if not gpu.mig_capable or not isinstance(index, int) or not 0 <= index < MAX_MIG_DEVICES:
            raise NVMLError_InvalidArgument()
        if gpu.mig_mode != NVML_DEVICE_MIG_ENABLE or not any(m.slot == index for m in gpu.migs):
            raise NVMLError_NotFound()
        return _Handle(handle.index, index)

    def nvmlDeviceGetAttributes(self, handle: _Handle) -> DeviceAttributes:
        gpu = self._gpu("nvmlDeviceGetAttributes", handle, mig_ok=True)
        slices = self._mig(gpu, handle).slices if handle.mig_slot is not None else 7
        return DeviceAttributes(slices, slices, 132 * slices // 7, 80_000 * slices // 8)

    def nvmlDeviceGetProcessUtilization(self, handle: _Handle, timeStamp: int) -> list[ProcessSample]:
        gpu = self._gpu("nvmlDeviceGetProcessUtilization", handle, timeStamp)
        if not gpu.process_util_supported:
            raise NVMLError_NotSupported()
        samples = [x for x in gpu.samples if x.timeStamp > timeStamp]
        if not samples:
            raise NVMLError_NotFound()
        return samples

    def nvmlDeviceGetName(self, handle: _Handle) -> bytes:
        # Older pynvml versions return bytes: the backend must accept both.
        return self._gpu("nvmlDeviceGetName", handle).name.encode()

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: _Handle) -> list[int]:
        gpu = self._gpu("nvmlDeviceGetPowerManagementLimitConstraints", handle)
        return [gpu.min_mw, gpu.max_mw]

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: _Handle) -> int:
        return self._gpu("nvmlDeviceGetPowerManagementDefaultLimit", handle).default_mw

    def nvmlDeviceGetPowerManagementLimit(self, handle: _Handle) -> int:
        return self._gpu("nvmlDeviceGetPowerManagementLimit", handle).limit_mw

    def nvmlDeviceSetPowerManagementLimit(self, handle: _Handle, limit: int) -> None:
        gpu = self._gpu("nvmlDeviceSetPowerManagementLimit", handle, limit)
        # NVML takes an unsigned int of milliwatts inside the constraints; anything else is refused.
        if not isinstance(limit, int) or isinstance(limit, bool) or not gpu.min_mw <= limit <= gpu.max_mw:
            raise NVMLError_InvalidArgument()
        gpu.limit_mw = limit

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return self._gpu("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        return self._gpu("nvmlDeviceGetTotalEnergyConsumption", handle).energy_mj

    # ---------------------------------------------------------------- checks

    def _enter(self, function: str, index: int | None, *args: Any) -> None:
        self.calls.append((function, args))
        if function != "nvmlInit" and not self.initialised:
            raise NVMLError_Uninitialized()
        error = self._faults.get((function, index)) or self._faults.get((function, None))
        if error is not None:
            raise error()

    def _gpu(self, function: str, handle: _Handle, *args: Any, mig_ok: bool = False) -> FakeGpu:
        if not isinstance(handle, _Handle) or not 0 <= handle.index < len(self.gpus):
            self.calls.append((function, (handle, *args)))
            raise NVMLError_InvalidArgument()
        self._enter(function, handle.index, handle, *args)
        if handle.mig_slot is not None and not mig_ok:
            raise NVMLError_NotSupported()  # power, limits, energy: on the parent GPU only
        return self.gpus[handle.index]

    def _mig(self, gpu: FakeGpu, handle: _Handle) -> FakeMig:
        found = next((m for m in gpu.migs if m.slot == handle.mig_slot), None)
        if found is None:
            raise NVMLError_InvalidArgument()  # the instance was destroyed: the handle is stale
        return found
