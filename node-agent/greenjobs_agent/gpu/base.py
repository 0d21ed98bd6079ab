"""The GPU backend protocol. Units are NVML's: milliwatts (mW) and millijoules (mJ)."""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class GpuDevice:
    index: int
    uuid: str
    name: str
    minor: int | None = None  # /dev/nvidiaN; NVIDIA's DRA driver names devices gpu-<minor>


@dataclass(frozen=True)
class MigInstance:
    """A MIG instance of a parent GPU: power limits and energy exist only on the parent."""

    uuid: str  # "MIG-...", as the device plugin lists it
    slices: int  # GPU-instance slices it occupies (of 7 on an A100/H100)


class GpuError(Exception):
    """A GPU call failed; `index` names the GPU (None for node-wide failures)."""

    def __init__(self, index: int | None, operation: str, detail: str) -> None:
        where = f"GPU {index}" if index is not None else "GPU backend"
        super().__init__(f"{where}: {operation}: {detail}")
        self.index = index
        self.operation = operation
        self.detail = detail


class NotSupported(GpuError):
    """The GPU or driver does not offer this feature (e.g. power capping on a consumer card)."""


class NoPermission(GpuError):
    """The process may not do this (setting power limits needs root / CAP_SYS_ADMIN)."""


class GpuLost(GpuError):
    """The GPU fell off the bus or needs a reset; skip it until the agent restarts."""


class GpuBackend(Protocol):
    def devices(self) -> list[GpuDevice]: ...

    def constraints(self, index: int) -> tuple[int, int]:
        """(min_mw, max_mw) that the power limit may be set to."""
        ...

    def default_limit_mw(self, index: int) -> int: ...

    def get_limit_mw(self, index: int) -> int: ...

    def set_limit_mw(self, index: int, mw: int) -> int:
        """Set the power limit, clamped into `constraints`; returns the limit actually set."""
        ...

    def total_energy_mj(self, index: int) -> int:
        """Energy since an arbitrary origin, mJ; monotonic except when the counter resets."""
        ...

    def power_mw(self, index: int) -> int: ...

    def mig_instances(self, index: int) -> list[MigInstance]:
        """The MIG instances configured on GPU `index`; empty when MIG mode is off or unsupported."""
        ...

    def process_utilisation(self, index: int) -> dict[int, float] | None:
        """pid -> SM utilisation (%) of each process on GPU `index` since the previous call; None when
        the driver gives no per-process figures (then shared GPUs are split in equal shares)."""
        ...

    def close(self) -> None: ...


def clamp(mw: int, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return max(low, min(high, mw))
