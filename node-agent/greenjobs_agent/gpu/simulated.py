"""A simulated multi-GPU node for tests and the demo: power follows the cap and the load.

Power of GPU i at time t (mW):  idle + (min(cap, tdp) - idle) * load  +  a ripple of 2 % of the
dynamic part, a sine wave, so that energy (its integral) has a closed form and tests can check the
meter against the exact integral. The state (limits, loads, energy counters and the time they were
taken) is persisted in `<state_dir>/simulated-gpus.json` on every change, so that an agent restarted
after kill -9 sees the caps the dead one left, and the counters kept running meanwhile, as on a GPU.
"""

import math
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..statefile import atomic_write_json, read_json
from .base import GpuDevice, GpuLost, MigInstance, NoPermission, NotSupported, clamp

STATE_FILE = "simulated-gpus.json"
RIPPLE_FRACTION = 0.02
RIPPLE_PERIOD_S = 7.0


@dataclass(frozen=True)
class GpuModel:
    name: str
    min_mw: int
    max_mw: int
    default_mw: int
    idle_mw: int


H100_SXM = GpuModel("NVIDIA H100 80GB HBM3 (simulated)", 200_000, 700_000, 700_000, 70_000)
A100_SXM = GpuModel("NVIDIA A100-SXM4-80GB (simulated)", 100_000, 400_000, 400_000, 50_000)
MODELS = {"h100": H100_SXM, "a100": A100_SXM}


@dataclass
class _Gpu:
    limit_mw: int
    load: float
    energy_mj: float  # counter value at `at_s`
    at_s: float


class SimulatedBackend:
    def __init__(
        self,
        clock: Callable[[], datetime],
        n: int = 8,
        model: GpuModel = H100_SXM,
        state_dir: Path | None = None,
        mig: dict[int, list[int]] | None = None,
    ) -> None:
        """`mig`: GPU index -> slices of each MIG instance configured on it (MIG mode on)."""
        self._clock = clock
        self._model = model
        self._path = state_dir / STATE_FILE if state_dir is not None else None
        self._devices = [
            GpuDevice(i, f"GPU-{uuid.uuid5(uuid.NAMESPACE_URL, f'greenjobs-sim-gpu-{i}')}", model.name)
            for i in range(n)
        ]
        now = self._now()
        self._gpus = [_Gpu(model.default_mw, 0.0, 0.0, now) for _ in range(n)]
        # Faults a test may inject.
        self.lost: set[int] = set()
        self.deny_set: set[int] = set()
        self.no_energy_counter: set[int] = set()
        # MIG layout, and per-process SM utilisation (pid -> %) a test may set per GPU.
        self.mig = dict(mig or {})
        self.utilisation: dict[int, dict[int, float]] = {}
        self._load_state()

    # ---------------------------------------------------------------- GpuBackend

    def devices(self) -> list[GpuDevice]:
        return list(self._devices)

    def constraints(self, index: int) -> tuple[int, int]:
        self._check(index, "constraints")
        return (self._model.min_mw, self._model.max_mw)

    def default_limit_mw(self, index: int) -> int:
        self._check(index, "default limit")
        return self._model.default_mw

    def get_limit_mw(self, index: int) -> int:
        self._check(index, "get limit")
        return self._gpus[index].limit_mw

    def set_limit_mw(self, index: int, mw: int) -> int:
        self._check(index, "set limit")
        if index in self.deny_set:
            raise NoPermission(index, "set power limit", "Insufficient Permissions (simulated)")
        applied = clamp(mw, (self._model.min_mw, self._model.max_mw))
        self._rebase(index)
        self._gpus[index].limit_mw = applied
        self._save()
        return applied

    def total_energy_mj(self, index: int) -> int:
        self._check(index, "total energy")
        if index in self.no_energy_counter:
            raise NotSupported(index, "total energy", "Not Supported (simulated)")
        return int(self.energy_at_mj(index, self._now()))

    def power_mw(self, index: int) -> int:
        self._check(index, "power usage")
        return int(self._power_mw(index, self._now()))

    def mig_instances(self, index: int) -> list[MigInstance]:
        self._check(index, "MIG instances")
        return [
            MigInstance(f"MIG-{uuid.uuid5(uuid.NAMESPACE_URL, f'greenjobs-sim-mig-{index}-{k}')}", slices)
            for k, slices in enumerate(self.mig.get(index, []))
        ]

    def process_utilisation(self, index: int) -> dict[int, float] | None:
        self._check(index, "process utilisation")
        return dict(self.utilisation[index]) if index in self.utilisation else None

    def close(self) -> None:
        self._save()

    # ---------------------------------------------------------------- simulation controls

    def reboot(self) -> None:
        """As a node reboot: limits back to the default, counters from 0, nothing running."""
        now = self._now()
        self._gpus = [_Gpu(self._model.default_mw, 0.0, 0.0, now) for _ in self._gpus]
        self._save()

    def set_load(self, index: int, fraction: float) -> None:
        fraction = max(0.0, min(1.0, fraction))
        if self._gpus[index].load == fraction:
            return
        self._rebase(index)
        self._gpus[index].load = fraction
        self._save()

    def reset_energy_counter(self, index: int) -> None:
        """As after a driver reload: the counter starts again from 0."""
        self._gpus[index].energy_mj = 0.0
        self._gpus[index].at_s = self._now()
        self._save()

    def energy_at_mj(self, index: int, t_s: float) -> float:
        """Exact counter value at epoch second `t_s` (no earlier than the last change)."""
        g = self._gpus[index]
        return g.energy_mj + self.integral_mj(index, g.at_s, max(t_s, g.at_s))

    def integral_mj(self, index: int, a_s: float, b_s: float) -> float:
        """Exact integral of power over [a_s, b_s] with the current limit and load."""
        base, amp = self._base_and_ripple(index)
        w = 2 * math.pi / RIPPLE_PERIOD_S
        phase = self._phase(index)
        ripple = amp / w * (math.cos(w * a_s + phase) - math.cos(w * b_s + phase))
        return base * (b_s - a_s) + ripple

    def limits_mw(self) -> dict[int, int]:
        return {d.index: self._gpus[d.index].limit_mw for d in self._devices}

    # ---------------------------------------------------------------- internals

    def _now(self) -> float:
        return self._clock().timestamp()

    def _check(self, index: int, operation: str) -> None:
        if index in self.lost:
            raise GpuLost(index, operation, "GPU is lost (simulated)")
        if not 0 <= index < len(self._gpus):
            raise GpuLost(index, operation, "no such GPU")

    def _base_and_ripple(self, index: int) -> tuple[float, float]:
        g = self._gpus[index]
        dynamic = (min(g.limit_mw, self._model.max_mw) - self._model.idle_mw) * g.load
        return self._model.idle_mw + dynamic, RIPPLE_FRACTION * dynamic

    def _phase(self, index: int) -> float:
        return index * 0.9  # distinct but deterministic per GPU

    def _power_mw(self, index: int, t_s: float) -> float:
        base, amp = self._base_and_ripple(index)
        return base + amp * math.sin(2 * math.pi / RIPPLE_PERIOD_S * t_s + self._phase(index))

    def _rebase(self, index: int) -> None:
        # Fold the energy used so far into the counter before the power law changes.
        now = self._now()
        g = self._gpus[index]
        g.energy_mj = self.energy_at_mj(index, now)
        g.at_s = max(now, g.at_s)

    def _save(self) -> None:
        if self._path is None:
            return
        atomic_write_json(self._path, self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        return {
            "model": self._model.name,
            "gpus": [
                {
                    "index": d.index,
                    "uuid": d.uuid,
                    "limitMw": g.limit_mw,
                    "limitWatts": g.limit_mw / 1000,
                    "defaultLimitMw": self._model.default_mw,
                    "load": g.load,
                    "energyMj": g.energy_mj,
                    "atEpochS": g.at_s,
                }
                for d, g in zip(self._devices, self._gpus, strict=True)
            ],
        }

    def _load_state(self) -> None:
        if self._path is None:
            return
        data = read_json(self._path)
        if data is None or data.get("model") != self._model.name:
            self._save()
            return
        for item in _gpu_items(data.get("gpus", [])):
            i = int(item["index"])
            if 0 <= i < len(self._gpus):
                self._gpus[i] = _Gpu(
                    int(item["limitMw"]),
                    float(item["load"]),
                    float(item["energyMj"]),
                    float(item["atEpochS"]),
                )


def _gpu_items(items: Iterable[Any]) -> list[dict[str, Any]]:
    return [
        x for x in items if isinstance(x, dict) and {"index", "limitMw", "load", "energyMj", "atEpochS"} <= x.keys()
    ]


def read_simulated_limits_watts(state_dir: Path) -> dict[int, float]:
    """The simulated GPUs' current limits, W, read from outside the agent process (tests, demo)."""
    data = read_json(state_dir / STATE_FILE) or {}
    return {int(x["index"]): int(x["limitMw"]) / 1000 for x in _gpu_items(data.get("gpus", []))}
