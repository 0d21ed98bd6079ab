"""GPU backends: the `GpuBackend` protocol, NVML (real GPUs) and a simulation (tests, demo)."""

from .base import GpuBackend, GpuDevice, GpuError, GpuLost, NoPermission, NotSupported

__all__ = ["GpuBackend", "GpuDevice", "GpuError", "GpuLost", "NoPermission", "NotSupported"]
