"""READ-ONLY check of NvmlBackend on a real GPU node: prints what the agent would see.

It calls only read functions (devices, constraints, default limit, current limit, power, energy
counter) and NEVER sets a power limit or any other NVML setting. The "busy period" is nothing more
than the GPUs' own activity over a few seconds (this script puts no load on them).

    .venv/bin/python bench/nvml_readonly_check.py [--seconds 5]
"""

import argparse
import time
from datetime import UTC, datetime

from greenjobs_agent.gpu.base import GpuError
from greenjobs_agent.gpu.nvml import NvmlBackend


def clock() -> datetime:
    return datetime.now(UTC)


def read(what: str, fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except GpuError as e:
        return f"error ({type(e).__name__}: {e})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="interval between the two energy readings")
    args = parser.parse_args()

    backend = NvmlBackend(clock)
    # Guard: this script must never change a GPU setting, even by mistake.
    backend.set_limit_mw = None  # type: ignore[assignment,method-assign]
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
        t0 = time.monotonic()
        time.sleep(args.seconds)
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
