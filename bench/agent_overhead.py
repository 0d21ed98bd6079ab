"""CPU and memory overhead of the node agent's sampling loop (no cluster needed).

8 simulated H100s, 8 running GreenTrainingJob pods of one GPU each, a tick per second as in
production (meter, enforcer, simulated PodResources, state file, Prometheus gauges) and a report
every 15 s. What is NOT exercised: the Kubernetes watches and the HTTP PATCH; the view is a static
pod list and the status patcher only records the patches (so the figure is the loop's own cost).

    .venv/bin/python bench/agent_overhead.py --seconds 60
"""

import argparse
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from greenjobs_agent.agent import Agent
from greenjobs_agent.gpu.simulated import SimulatedBackend
from greenjobs_agent.podresources import SimulatedPodGpuSource
from greenjobs_agent.pods import JobInfo, JobRef, PodInfo, PodKey, StaticView
from greenjobs_agent.reporter import RecordingPatcher
from greenjobs_agent.state import StateStore


def clock() -> datetime:
    return datetime.now(UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=1.0, help="sample interval, s")
    parser.add_argument("--gpus", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp)
        pods = [PodInfo(PodKey("ml", f"train-{i}"), "Running", f"job-{i}", 1, f"uid-{i}") for i in range(args.gpus)]
        view = StaticView(
            pods, {JobRef("ml", f"job-{i}"): JobInfo(f"uid-{i}", 200 + 50 * (i % 4)) for i in range(args.gpus)}
        )
        backend = SimulatedBackend(clock, n=args.gpus, state_dir=state_dir)
        patcher = RecordingPatcher([])
        agent = Agent(
            "bench-node",
            backend,
            view=view,
            gpu_source=SimulatedPodGpuSource(view.pods, backend.devices(), state_dir),
            patcher=patcher,
            store=StateStore(state_dir),
            clock=clock,
            report_interval_s=15.0,
        )
        agent.tick()  # first tick: full restore pass, caps set
        cpu0, wall0 = time.process_time(), time.monotonic()
        ticks = 0
        tick_cpu: list[float] = []
        deadline = wall0 + args.seconds
        next_tick = wall0
        while True:
            next_tick += args.interval
            if next_tick > deadline:
                break
            time.sleep(max(0.0, next_tick - time.monotonic()))
            t = time.process_time()
            agent.tick()
            tick_cpu.append(time.process_time() - t)
            ticks += 1
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

    tick_cpu.sort()
    print(f"gpus={args.gpus} jobs={args.gpus} interval={args.interval}s ticks={ticks} wall={wall:.1f}s")
    print(f"process CPU time      {cpu:.3f} s")
    print(f"CPU share of one core {100 * cpu / wall:.3f} %   (target < 2 %)")
    print(
        f"CPU per tick          median {1000 * tick_cpu[len(tick_cpu) // 2]:.2f} ms, max {1000 * tick_cpu[-1]:.2f} ms"
    )
    print(f"peak RSS              {peak_rss_mib:.1f} MiB (whole process, imports included)")
    print(f"reports recorded      {len(patcher.patches)}")


if __name__ == "__main__":
    main()
