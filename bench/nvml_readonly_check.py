"""READ-ONLY check of NvmlBackend on a real GPU node: prints what the agent would see.

It calls only read functions (devices and minor numbers, constraints, default limit, current limit,
power, energy counter, MIG mode and instances with their slices, per-process utilisation) and NEVER
sets a power limit or any other NVML setting: every setter of the backend is replaced by None before
anything runs. The "busy period" is nothing more than the GPUs' own activity over a few seconds (this
script puts no load on them).

The energy counter's resolution is measured by reading it back to back for --resolution-seconds
and printing the smallest non-zero step and how often the value changes (NVML documents mJ units;
how often the driver refreshes it is what this shows).

    .venv/bin/python bench/nvml_readonly_check.py [--seconds 5] [--resolution-seconds 2]
"""

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from greenjobs_agent.gpu.base import GpuError
from greenjobs_agent.gpu.nvml import NvmlBackend


def clock() -> datetime:
    return datetime.now(UTC)


def read(what: str, fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except GpuError as e:
        return f"error ({type(e).__name__}: {e})"


def resolution(backend: NvmlBackend, index: int, seconds: float) -> str:
    """Smallest non-zero step of the energy counter and the mean time between changes."""
    if backend.uses_power_integration(index):
        return "no hardware counter"
    steps: list[int] = []
    changes = 0
    last = backend.total_energy_mj(index)
    end = time.monotonic() + seconds
    reads = 0
    while time.monotonic() < end:
        value = backend.total_energy_mj(index)
        reads += 1
        if value != last:
            steps.append(value - last)
            changes += 1
            last = value
    if not steps:
        return f"no change in {reads} reads over {seconds:.1f} s"
    return (
        f"smallest step {min(s for s in steps if s > 0)} mJ, {changes} changes in {reads} reads over "
        f"{seconds:.1f} s (one every {1000 * seconds / changes:.1f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="interval between the two energy readings")
    parser.add_argument("--resolution-seconds", type=float, default=2.0, help="back-to-back counter reads")
    args = parser.parse_args()

    check(NvmlBackend(clock), args.seconds, args.resolution_seconds)


class ReadOnlyNvml:
    """Wraps the pynvml module: any setter (nvml*Set*, MIG create/destroy) raises instead of running."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml

    def __getattr__(self, name: str) -> Any:
        if "Set" in name or "Create" in name or "Destroy" in name or "Reset" in name:
            raise RuntimeError(f"{name} refused: this check is read-only")
        return getattr(self._nvml, name)


def check(backend: NvmlBackend, seconds: float, resolution_seconds: float) -> None:
    # Guard: this script must never change a GPU setting, even by mistake.
    backend.set_limit_mw = None  # type: ignore[assignment,method-assign]
    backend._nvml = ReadOnlyNvml(backend._nvml)
    try:
        devices = backend.devices()
        print(f"{len(devices)} GPU(s)")
        before: dict[int, object] = {}
        for d in devices:
            i = d.index
            cons = read("constraints", backend.constraints, i)
            print(f"GPU {i}  {d.name}  {d.uuid}")
            print(f"  constraints (mW)   {cons}")
            print(f"  default limit (mW) {read('default', backend.default_limit_mw, i)}")
            print(f"  current limit (mW) {read('limit', backend.get_limit_mw, i)}")
            print(f"  power (mW)         {read('power', backend.power_mw, i)}")
            before[i] = read("energy", backend.total_energy_mj, i)
            note = "  [integrated from power: no hardware counter]" if backend.uses_power_integration(i) else ""
            print(f"  energy counter (mJ) {before[i]}{note}")
            print(f"  minor number       {d.minor}")
            migs = read("MIG", backend.mig_instances, i)
            if isinstance(migs, list) and migs:
                total = sum(m.slices for m in migs)
                print(f"  MIG instances      {len(migs)}, {total} slices configured:")
                for m in migs:
                    print(f"    {m.uuid}  {m.slices} slice(s) = {m.slices / total:.3f} of the parent's energy")
            else:
                print(f"  MIG instances      {migs or 'none (MIG off or not supported)'}")
            util = read("process utilisation", backend.process_utilisation, i)
            print(f"  per-process SM %   {util if util is not None else 'not supported (equal shares)'}")
        for d in devices:
            print(f"GPU {d.index} energy counter resolution: {resolution(backend, d.index, resolution_seconds)}")
        t0 = time.monotonic()
        time.sleep(seconds)
        dt = time.monotonic() - t0
        print(f"after {dt:.2f} s:")
        for d in devices:
            i = d.index
            after = read("energy", backend.total_energy_mj, i)
            if isinstance(after, int) and isinstance(before[i], int):
                delta = after - before[i]  # type: ignore[operator]
                print(
                    f"  GPU {i}: +{delta} mJ = {delta / 1000:.1f} J, mean {delta / 1000 / dt:.1f} W; "
                    f"power now {read('power', backend.power_mw, i)} mW"
                )
            else:
                print(f"  GPU {i}: {after}")
    finally:
        backend.close()


if __name__ == "__main__":
    main()
