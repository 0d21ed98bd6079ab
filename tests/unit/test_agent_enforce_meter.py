"""Enforcer, meter and the agent tick against the simulated GPUs, with an injected clock."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greenjobs_agent.agent import Agent
from greenjobs_agent.gpu.simulated import H100_SXM, SimulatedBackend, read_simulated_limits_watts
from greenjobs_agent.meter import Meter
from greenjobs_agent.podresources import SimulatedPodGpuSource
from greenjobs_agent.pods import JobInfo, JobKey, JobRef, PodInfo, PodKey, StaticView
from greenjobs_agent.reporter import RecordingPatcher
from greenjobs_agent.state import AgentState, StateStore

DEFAULT_W = H100_SXM.default_mw / 1000
A = JobKey("ml", "job-a", "uid-a")
B = JobKey("ml", "job-b", "uid-b")
UIDS = {"job-a": "uid-a", "job-b": "uid-b"}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def pod(name: str, job: str | None, gpus: int, phase: str = "Running") -> PodInfo:
    # As the operator labels them: the GTJ's name and UID.
    return PodInfo(PodKey("ml", name), phase, job, gpus, UIDS.get(job or ""))


def caps(targets: dict[JobKey, int | None]) -> dict[JobRef, JobInfo | None]:
    return {j.ref: JobInfo(j.uid, cap) for j, cap in targets.items()}


def make_agent(tmp_path: Path, clock: Clock, view: StaticView) -> tuple[Agent, SimulatedBackend, RecordingPatcher]:
    backend = SimulatedBackend(clock, n=8, state_dir=tmp_path)
    source = SimulatedPodGpuSource(view.pods, backend.devices(), tmp_path)
    patcher = RecordingPatcher([])
    agent = Agent(
        "gpu-gb-0",
        backend,
        view=view,
        gpu_source=source,
        patcher=patcher,
        store=StateStore(tmp_path),
        clock=clock,
        report_interval_s=15,
    )
    return agent, backend, patcher


def test_caps_only_the_gpus_of_gtj_pods_and_follow_changes(tmp_path: Path) -> None:
    clock = Clock()
    view = StaticView([pod("a-0", "job-a", 2), pod("plain", None, 1), pod("b-0", "job-b", 2)], caps({A: 250, B: None}))
    agent, backend, _ = make_agent(tmp_path, clock, view)
    agent.tick()
    # Simulated assignment is in pod-name order: a-0 -> 0,1; b-0 -> 2,3; plain -> 4.
    assert backend.limits_mw() == {
        0: 250_000,
        1: 250_000,
        2: 700_000,
        3: 700_000,
        4: 700_000,
        5: 700_000,
        6: 700_000,
        7: 700_000,
    }
    view.infos = caps({A: 180, B: 400})  # 180: below the H100 minimum, clamped to 200 W
    clock.advance(1)
    agent.tick()
    assert read_simulated_limits_watts(tmp_path) == {
        0: 200,
        1: 200,
        2: 400,
        3: 400,
        4: DEFAULT_W,
        5: DEFAULT_W,
        6: DEFAULT_W,
        7: DEFAULT_W,
    }
    # Pod a-0 ends: its GPUs go back to the default; job-b keeps its cap.
    view.pod_list[0] = pod("a-0", "job-a", 2, phase="Succeeded")
    clock.advance(1)
    agent.tick()
    assert backend.limits_mw()[0] == backend.limits_mw()[1] == H100_SXM.default_mw
    assert backend.limits_mw()[2] == 400_000


def test_restart_after_crash_restores_gpus_no_longer_owned(tmp_path: Path) -> None:
    clock = Clock()
    view = StaticView([pod("a-0", "job-a", 2), pod("b-0", "job-b", 1)], caps({A: 300, B: 250}))
    agent, _, _ = make_agent(tmp_path, clock, view)
    agent.tick()
    del agent  # kill -9: no shutdown, the caps stay on the (simulated) GPUs
    # While the agent was dead, a-0 finished.
    view.pod_list = [pod("b-0", "job-b", 1)]
    clock.advance(30)
    agent2, backend2, _ = make_agent(tmp_path, clock, view)
    assert backend2.limits_mw()[0] == 300_000  # the dead agent's cap is still on the GPU
    agent2.tick()
    limits = backend2.limits_mw()
    assert limits[0] == limits[1] == H100_SXM.default_mw
    assert limits[2] == 250_000


def test_gpus_greenjobs_never_capped_are_never_changed(tmp_path: Path) -> None:
    clock = Clock()
    SimulatedBackend(clock, n=8, state_dir=tmp_path).set_limit_mw(5, 300_000)  # an administrator's limit
    agent, backend, _ = make_agent(tmp_path, clock, StaticView([pod("plain", None, 1)], {}))
    agent.tick()
    agent.shutdown()
    assert backend.limits_mw()[5] == 300_000  # no state file records it: not greenjobs's to change


def test_sigterm_shutdown_restores_defaults_and_flushes(tmp_path: Path) -> None:
    clock = Clock()
    view = StaticView([pod("a-0", "job-a", 2)], caps({A: 300}))
    agent, backend, patcher = make_agent(tmp_path, clock, view)
    agent.tick()
    clock.advance(5)
    agent.tick()
    clock.advance(5)
    agent.shutdown()
    assert set(backend.limits_mw().values()) == {H100_SXM.default_mw}
    job, body = patcher.patches[-1]
    assert job == A
    entry = body["status"]["energy"]["nodes"]["gpu-gb-0"]
    assert entry["gpuSeconds"] == pytest.approx(2 * 10)


def test_no_permission_on_one_gpu_is_skipped_not_fatal(tmp_path: Path) -> None:
    clock = Clock()
    view = StaticView([pod("a-0", "job-a", 2)], caps({A: 300}))
    agent, backend, _ = make_agent(tmp_path, clock, view)
    backend.deny_set = {1}
    agent.tick()
    agent.tick()
    assert backend.limits_mw()[0] == 300_000
    assert 1 in agent.enforcer.skipped
    assert agent.metrics.errors.labels(kind="NoPermission")._value.get() == 1  # logged and counted once
    clock.advance(10)
    agent.tick()
    assert agent.state.jobs[A].gpu_seconds == 20  # the uncappable GPU is still metered


def test_energy_equals_the_integral_of_power(tmp_path: Path) -> None:
    clock = Clock()
    view = StaticView([pod("a-0", "job-a", 2)], caps({A: 300}))
    agent, backend, patcher = make_agent(tmp_path, clock, view)
    agent.tick()  # baseline readings; cap 300 W and load 1.0 apply from here
    t0 = clock().timestamp()
    for _ in range(40):
        clock.advance(1)
        agent.tick()
    t1 = clock().timestamp()
    expected_j = sum(backend.integral_mj(i, t0, t1) for i in (0, 1)) / 1000
    totals = agent.state.jobs[A]
    # Counters are read as whole mJ: at most 1 mJ of truncation per GPU.
    assert totals.joules == pytest.approx(expected_j, abs=0.002)
    assert expected_j == pytest.approx(2 * 40 * 300, rel=0.01)  # capped H100 at full load: ~300 W each
    assert totals.gpu_seconds == pytest.approx(80)
    reported = [b["status"]["energy"]["nodes"]["gpu-gb-0"] for j, b in patcher.patches if j == A]
    assert reported[-1]["capWatts"] == 300 and reported[-1]["gpus"] == 2
    assert reported[-1]["avgPowerWatts"] == pytest.approx(300, rel=0.02)


def test_counter_reset_counts_from_zero() -> None:
    clock = Clock()
    backend = SimulatedBackend(clock, n=1)
    backend.set_load(0, 1.0)
    state = AgentState()
    meter = Meter(backend, state)
    meter.sample(clock(), {0: {A: 1.0}})
    clock.advance(10)
    meter.sample(clock(), {0: {A: 1.0}})
    before = state.jobs[A].joules
    backend.reset_energy_counter(0)
    clock.advance(10)
    t = clock().timestamp()
    meter.sample(clock(), {0: {A: 1.0}})
    after_reset_j = backend.integral_mj(0, t - 10, t) / 1000
    assert state.jobs[A].joules == pytest.approx(before + after_reset_j, abs=0.002)


def test_gpu_handed_from_job_a_to_job_b() -> None:
    clock = Clock()
    backend = SimulatedBackend(clock, n=1)
    backend.set_load(0, 1.0)
    state = AgentState()
    meter = Meter(backend, state)
    t0 = clock().timestamp()
    for s in range(21):
        meter.sample(clock(), {0: {A if s < 10 else B: 1.0}})
        if s < 20:
            clock.advance(1)
    # Samples at s=0..9 say A holds the GPU, so A owns (0, 10]; B owns (10, 20].
    assert state.jobs[A].joules == pytest.approx(backend.integral_mj(0, t0, t0 + 10) / 1000, abs=0.002)
    assert state.jobs[B].joules == pytest.approx(backend.integral_mj(0, t0 + 10, t0 + 20) / 1000, abs=0.002)
    assert state.jobs[A].gpu_seconds == pytest.approx(10)


def test_restart_continues_totals_without_double_counting(tmp_path: Path) -> None:
    clock = Clock()
    view = StaticView([pod("a-0", "job-a", 1)], caps({A: 400}))
    agent, _, _ = make_agent(tmp_path, clock, view)
    agent.tick()
    t0 = clock().timestamp()
    for _ in range(10):
        clock.advance(1)
        agent.tick()
    del agent  # crash; the GPU keeps running at 400 W for 20 s
    clock.advance(20)
    agent2, backend2, _ = make_agent(tmp_path, clock, view)
    agent2.tick()
    t1 = clock().timestamp()
    # No loads changed since t0+... ; the exact energy from t0 to t1 is the counter difference.
    expected = (backend2.energy_at_mj(0, t1) - backend2.energy_at_mj(0, t0)) / 1000
    assert agent2.state.jobs[A].joules == pytest.approx(expected, abs=0.003)
    assert expected == pytest.approx(30 * 400, rel=0.01)


def test_metering_only_mode_never_sets_a_limit(tmp_path: Path) -> None:
    clock = Clock()
    SimulatedBackend(clock, n=8, state_dir=tmp_path).set_limit_mw(7, 300_000)  # someone else's cap
    view = StaticView([pod("a-0", "job-a", 1)], caps({A: 250}))
    agent, backend, _ = make_agent(tmp_path, clock, view)
    agent.power_capping = False
    agent.tick()
    clock.advance(10)
    agent.tick()
    agent.shutdown()
    assert backend.limits_mw()[0] == H100_SXM.default_mw
    assert backend.limits_mw()[7] == 300_000
    assert agent.state.jobs[A].gpu_seconds == pytest.approx(10)
