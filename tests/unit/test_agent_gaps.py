"""Downtime and missed readings (issue 21): a GPU's counter delta over a gap is split by who held the GPU
when (idle time is no job's), the holders survive a restart in the state file, and each report says
when its energy was used."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greenjobs.api.durations import format_time
from greenjobs_agent.agent import Agent
from greenjobs_agent.gpu.simulated import SimulatedBackend
from greenjobs_agent.meter import Meter
from greenjobs_agent.podresources import SimulatedPodGpuSource
from greenjobs_agent.pods import JobInfo, JobKey, PodInfo, PodKey, StaticView
from greenjobs_agent.reporter import RecordingPatcher
from greenjobs_agent.state import StateStore

A = JobKey("ml", "job-a", "uid-a")
B = JobKey("ml", "job-b", "uid-b")
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def pod(name: str, job: JobKey, start: float, end: float | None = None) -> PodInfo:
    def at(s: float) -> str:
        return format_time(T0 + timedelta(seconds=s))

    phase = "Running" if end is None else "Succeeded"
    return PodInfo(
        PodKey("ml", name), phase, job.name, 1, job.uid, started=at(start), ended="" if end is None else at(end)
    )


def agent_on(tmp_path: Path, clock: Clock, view: StaticView) -> tuple[Agent, SimulatedBackend, RecordingPatcher]:
    backend = SimulatedBackend(clock, n=2, state_dir=tmp_path)
    patcher = RecordingPatcher([])
    agent = Agent(
        "n",
        backend,
        view=view,
        gpu_source=SimulatedPodGpuSource(view.pods, backend.devices(), tmp_path),
        patcher=patcher,
        store=StateStore(tmp_path),
        clock=clock,
    )
    return agent, backend, patcher


def test_an_agent_downtime_is_split_by_who_held_the_gpu_when_and_idle_time_is_nobodys(tmp_path: Path) -> None:
    clock = Clock()
    view = StaticView([pod("a-0", A, 0)], {j.ref: JobInfo(j.uid, None) for j in (A, B)})
    agent, _, _ = agent_on(tmp_path, clock, view)
    agent.tick()
    clock.advance(10)
    agent.tick()
    a_before = agent.state.jobs[A].joules
    del agent  # kill -9 at t=10; GPU 0 keeps its load
    # While the agent is down: a-0 ends at t=20, GPU 0 idles, b-0 gets it at t=30; back at t=40.
    view.pod_list = [pod("a-0", A, 0, end=20), pod("b-0", B, 30)]
    clock.advance(30)
    agent2, backend, patcher = agent_on(tmp_path, clock, view)
    agent2.tick()
    t = T0.timestamp()
    third = (backend.energy_at_mj(0, t + 40) - backend.energy_at_mj(0, t + 10)) / 1000 / 3
    assert third > 1000  # the GPU ran throughout: the idle third is real energy, charged to nobody
    a, b = agent2.state.jobs[A], agent2.state.jobs[B]
    assert a.joules - a_before == pytest.approx(third, rel=0.01)  # (10, 20], not the whole 30 s
    assert b.joules == pytest.approx(third, rel=0.01)  # (30, 40]
    assert (a.gpu_seconds, b.gpu_seconds) == (pytest.approx(20), pytest.approx(10))
    # Each report says when: A's energy of the gap ends at t=20, B's starts at t=30.
    usage = {j: body["status"]["energy"]["nodes"]["n"]["usage"] for j, body in patcher.patches}
    assert usage[A][-1] == {"at": format_time(T0 + timedelta(seconds=20)), "joules": round(a.joules, 3)}
    assert usage[B] == [
        {"at": format_time(T0 + timedelta(seconds=30)), "joules": 0.0},
        {"at": format_time(T0 + timedelta(seconds=40)), "joules": round(b.joules, 3)},
    ]


def test_missed_readings_are_split_by_the_holders_seen_meanwhile_even_across_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    backend = SimulatedBackend(clock, n=1)
    backend.set_load(0, 1.0)
    store = StateStore(tmp_path)
    state = store.load()
    meter = Meter(backend, state)
    meter.sample(clock(), {0: {A: 1.0}})
    clock.advance(10)
    meter.sample(clock(), {0: {B: 1.0}}, skip=frozenset({0}))  # no reading (a lost GPU): A held (0, 10]
    clock.advance(10)
    meter.sample(clock(), {}, skip=frozenset({0}))  # B held (10, 20]; nobody from then on
    store.save(state)  # the agent restarts: the holders since the last reading come back from the file
    meter = Meter(backend, StateStore(tmp_path).load())
    clock.advance(10)
    meter.sample(clock(), {})
    t = T0.timestamp()
    third = (backend.energy_at_mj(0, t + 30) - backend.energy_at_mj(0, t)) / 1000 / 3
    a, b = meter.totals(A), meter.totals(B)
    assert a is not None and b is not None
    assert a.joules == pytest.approx(third, rel=0.01)
    assert b.joules == pytest.approx(third, rel=0.01)  # before: all 30 s went to the last holders, nobody
    assert (a.gpu_seconds, b.gpu_seconds) == (pytest.approx(10), pytest.approx(10))
