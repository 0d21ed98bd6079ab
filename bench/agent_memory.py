"""Memory an agent keeps per job, and that it keeps nothing once a job has ended (issue 14 item 3).

In one process, no cluster: an agent on a node of 64 simulated GPUs (the tick of production: meter,
enforcer, simulated PodResources, state file, metrics, reports to a recording patcher), first with
no job (the baseline: everything per GPU is allocated), then with N running jobs of one GPU each,
then after those jobs' pods have ended, their final entries are written and seen by the view (as
the GTJ watch shows them) and the forget delay has passed; new jobs then come and go for
--cycles cycles, and the heap left after each cycle shows whether anything accumulates. Python
heap measured with tracemalloc (what the agent's own objects hold; the per-job GTJ watch of the real
agent adds a thread and a connection, measured as RSS by bench/agent_fanout.py). The heap also holds
a little per-write I/O cache that flattens out (a loop of 9,000 state-file writes alone grows it by
about 0.6 KiB, then stops), which shows as a small, shrinking growth per cycle that is not per job.

    .venv/bin/python bench/agent_memory.py [--jobs 1,8,64] [--cycles 3]
"""

import argparse
import gc
import tempfile
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from greenjobs_agent.agent import Agent
from greenjobs_agent.gpu.simulated import SimulatedBackend
from greenjobs_agent.podresources import SimulatedPodGpuSource
from greenjobs_agent.pods import JobInfo, JobRef, NodeSeed, PodInfo, PodKey, StaticView
from greenjobs_agent.reporter import RecordingPatcher
from greenjobs_agent.state import StateStore

GPUS = 64


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def heap() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def measure(n: int, cycles: int) -> tuple[int, list[int], int]:
    """(bytes per running job, heap left per job after each cycle of n jobs, jobs still known)."""
    with tempfile.TemporaryDirectory() as tmp:
        clock = Clock()
        view = StaticView([], {})
        backend = SimulatedBackend(clock, n=GPUS, state_dir=Path(tmp))
        patcher = RecordingPatcher([])
        agent = Agent(
            "bench-node",
            backend,
            view=view,
            gpu_source=SimulatedPodGpuSource(view.pods, backend.devices(), Path(tmp)),
            patcher=patcher,
            store=StateStore(Path(tmp)),
            clock=clock,
            report_interval_s=5,
            boot_id=lambda: "boot",
            forget_after_s=10,
        )

        def run(seconds: int) -> None:
            for _ in range(seconds):
                clock.now += timedelta(seconds=1)
                agent.tick()
            patcher.patches.clear()  # the recorder is the benchmark's, not the agent's

        run(12)
        base = heap()
        running = 0
        left: list[int] = []
        for c in range(cycles):  # new jobs each cycle, as a node sees job after job
            names = [f"j{c}-{i}" for i in range(n)]
            view.pod_list = [PodInfo(PodKey("ml", f"p-{x}"), "Running", x, 1, f"uid-{x}") for x in names]
            view.infos = {JobRef("ml", x): JobInfo(f"uid-{x}", 300) for x in names}
            run(12)
            running = max(running, heap() - base)
            view.pod_list = [PodInfo(p.key, "Succeeded", p.job, 1, p.job_uid) for p in view.pod_list]
            run(2)
            # The GTJ watch now shows each job's final entry on this node.
            view.infos = {
                job.ref: JobInfo(job.uid, 300, NodeSeed(round(t.joules, 3), t.gpu_seconds))
                for job, t in agent.state.jobs.items()
            }
            run(12)
            view.pod_list, view.infos = [], {}  # pods and GTJs deleted later by their owners
            run(1)
            left.append((heap() - base) // n)
        return running // n, left, len(agent.state.jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", default="1,8,64", help="running jobs (one GPU each) to measure with")
    parser.add_argument("--cycles", type=int, default=3, help="jobs come and go this many times")
    args = parser.parse_args()
    tracemalloc.start()
    print(f"{GPUS} simulated GPUs; Python heap (tracemalloc) above the agent's own baseline with no job")
    print("| running jobs | bytes per running job | heap left per job after cycle 1, 2, ... | jobs still known |")
    print("|---|---|---|---|")
    for n in (int(x) for x in args.jobs.split(",")):
        per_job, left, known = measure(n, args.cycles)
        print(f"| {n} | {per_job:,} | {', '.join(f'{x:,}' for x in left)} | {known} |")


if __name__ == "__main__":
    main()
