"""Shared GPUs (time-slicing/MPS), MIG parents and DRA devices: who gets which share of the energy and
which GPU may be capped (issue 15). The rules are pure (sharing.py); the agent-level tests drive the
whole tick on simulated GPUs."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greenjobs_agent.agent import Agent
from greenjobs_agent.devices import DeviceRef, Slot
from greenjobs_agent.gpu.simulated import H100_SXM, SimulatedBackend
from greenjobs_agent.pods import JobInfo, JobKey, PodInfo, PodKey, StaticView
from greenjobs_agent.processes import PidResolver, pod_uid_of_cgroup
from greenjobs_agent.reporter import RecordingPatcher
from greenjobs_agent.sharing import EQUAL, EXCLUSIVE, KEEP, MIG_SLICES, UTILISATION, Holding, Want, plan_gpus
from greenjobs_agent.state import StateStore

A = JobKey("ml", "a", "ua")
B = JobKey("ml", "b", "ub")
DEFAULT_MW = H100_SXM.default_mw


def hold(pod: str, gpu: int, job: JobKey | None, instance: str | None = None, slices: int = 0) -> Holding:
    return Holding(PodKey("ml", pod), Slot(gpu, instance, slices), job, f"uid-{pod}")


# ---------------------------------------------------------------- the rules


def test_a_gpu_of_one_pod_is_its_jobs_wholly() -> None:
    [plan] = plan_gpus([hold("a-0", 0, A)], {A: 300}, {}).values()
    assert plan.shares == {A: 1.0} and plan.rule == EXCLUSIVE and plan.want == Want(300)


def test_gpus_of_no_greenjobs_pod_get_no_decision() -> None:
    assert plan_gpus([hold("x", 0, None)], {}, {}) == {}


def test_time_sliced_gpu_is_split_equally_and_capped_at_the_most_generous_target() -> None:
    plans = plan_gpus([hold("a-0", 0, A), hold("b-0", 0, B)], {A: 250, B: 400}, {})
    p = plans[0]
    assert p.shares == {A: 0.5, B: 0.5} and p.rule == EQUAL
    assert p.want == Want(400)
    assert "most generous" in p.notes[A] and B not in p.notes  # B got its own target


def test_time_sliced_gpu_is_split_by_process_utilisation_where_known() -> None:
    util = {0: {"uid-a-0": 60.0, "uid-b-0": 20.0, "": 20.0}}  # "": a process of no pod
    p = plan_gpus([hold("a-0", 0, A), hold("b-0", 0, B)], {A: 300, B: 300}, {}, util)[0]
    assert p.rule == UTILISATION
    assert p.shares == {A: pytest.approx(0.6), B: pytest.approx(0.2)}
    assert p.want == Want(300) and p.notes == {}


def test_shared_with_a_pod_that_is_no_greenjobs_job_is_never_capped() -> None:
    p = plan_gpus([hold("a-0", 0, A), hold("other", 0, None)], {A: 250}, {})[0]
    assert p.shares == {A: 0.5}  # the other half is somebody else's energy
    assert p.want == Want(None)
    assert "not greenjobs jobs" in p.notes[A]


def test_shared_with_a_job_without_cap_is_not_capped() -> None:
    p = plan_gpus([hold("a-0", 0, A), hold("b-0", 0, B)], {A: 250, B: None}, {})[0]
    assert p.want == Want(None) and "sets no cap" in p.notes[A]


def test_shared_gpu_with_a_target_not_known_yet_is_left_as_it_is() -> None:
    assert plan_gpus([hold("a-0", 0, A), hold("b-0", 0, B)], {A: 250}, {})[0].want == KEEP


def test_mig_energy_is_split_by_slices_and_the_parent_capped_only_when_all_instances_agree() -> None:
    # GPU 0 has instances of 4 and 3 slices (7 configured).
    holdings = [hold("a-0", 0, A, "MIG-x", 4), hold("b-0", 0, B, "MIG-y", 3)]
    p = plan_gpus(holdings, {A: 300, B: 250}, {0: 7})[0]
    assert p.rule == MIG_SLICES
    assert p.shares == {A: pytest.approx(4 / 7), B: pytest.approx(3 / 7)}
    assert p.want == Want(None) and "different targets" in p.notes[A]
    assert plan_gpus(holdings, {A: 300, B: 300}, {0: 7})[0].want == Want(300)  # same target: capped


def test_mig_parent_with_a_free_or_foreign_instance_is_not_capped() -> None:
    p = plan_gpus([hold("a-0", 0, A, "MIG-x", 4)], {A: 300}, {0: 7})[0]
    assert p.shares == {A: pytest.approx(4 / 7)} and p.want == Want(None)
    assert "not every MIG instance" in p.notes[A]
    p = plan_gpus([hold("a-0", 0, A, "MIG-x", 4), hold("o", 0, None, "MIG-y", 3)], {A: 300}, {0: 7})[0]
    assert p.want == Want(None) and "not greenjobs jobs" in p.notes[A]
    # Every instance of one job: the parent gets its cap, and its energy is exactly the job's.
    p = plan_gpus([hold("a-0", 0, A, "MIG-x", 4), hold("a-1", 0, A, "MIG-y", 3)], {A: 300}, {0: 7})[0]
    assert p.shares == {A: pytest.approx(1.0)} and p.want == Want(300)


def test_pod_uid_from_cgroup_paths_of_both_drivers(tmp_path: Path) -> None:
    uid = "0f5e7a3c-1b2d-4c8e-9f00-123456789abc"
    cgroupfs = f"0::/kubepods/burstable/pod{uid}/0123abcd"
    systemd = f"0::/kubepods.slice/kubepods-pod{uid.replace('-', '_')}.slice/cri-containerd-0123.scope"
    assert pod_uid_of_cgroup(cgroupfs) == uid == pod_uid_of_cgroup(systemd)
    assert pod_uid_of_cgroup("0::/system.slice/sshd.service") is None
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text(systemd + "\n")
    assert PidResolver(tmp_path).by_pod({42: 70.0, 43: 30.0}) == {uid: 70.0, "": 30.0}


# ---------------------------------------------------------------- the agent on shared and MIG GPUs


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class FixedSource:
    def __init__(self, assignment: dict[PodKey, list[DeviceRef]]) -> None:
        self.assignment = assignment

    def list(self) -> dict[PodKey, list[DeviceRef]]:
        return self.assignment


def make(
    tmp_path: Path, pods: list[PodInfo], assignment: dict[PodKey, list[DeviceRef]], **sim: object
) -> tuple[Agent, SimulatedBackend, Clock, RecordingPatcher]:
    clock = Clock()
    backend = SimulatedBackend(clock, n=2, state_dir=tmp_path, **sim)  # type: ignore[arg-type]
    view = StaticView(pods, {A.ref: JobInfo("ua", 250), B.ref: JobInfo("ub", 400)})
    patcher = RecordingPatcher([])
    agent = Agent(
        "n1",
        backend,
        view=view,
        gpu_source=FixedSource(assignment),
        patcher=patcher,
        store=StateStore(tmp_path),
        clock=clock,
        report_interval_s=5,
        boot_id=lambda: "b",
    )
    return agent, backend, clock, patcher


def pod(name: str, job: JobKey | None) -> PodInfo:
    return PodInfo(PodKey("ml", name), "Running", job.name if job else None, 1, job.uid if job else None)


def run(agent: Agent, clock: Clock, n: int) -> None:
    agent.tick()
    for _ in range(n):
        clock.now += timedelta(seconds=1)
        agent.tick()


def test_two_jobs_on_one_time_sliced_gpu_split_it_and_it_gets_the_most_generous_cap(tmp_path: Path) -> None:
    uuid0 = "GPU-" + "0"  # replaced below by the simulated UUID
    pods = [pod("a-0", A), pod("b-0", B)]
    agent, backend, clock, patcher = make(tmp_path, pods, {})
    uuid0 = backend.devices()[0].uuid
    agent.gpu_source = FixedSource(
        {
            PodKey("ml", "a-0"): [DeviceRef("nvidia.com/gpu", f"{uuid0}::0")],
            pods[1].key: [DeviceRef("nvidia.com/gpu", f"{uuid0}::1")],
        }
    )
    run(agent, clock, 20)
    assert backend.limits_mw() == {0: 400_000, 1: DEFAULT_MW}  # GPU 1 is no greenjobs pod's: untouched
    a, b = agent.state.jobs[A], agent.state.jobs[B]
    assert a.joules == pytest.approx(b.joules) and a.gpu_seconds == pytest.approx(10)
    assert a.joules + b.joules == pytest.approx(20 * 400, rel=0.02)  # the GPU's energy, split in two
    last_a = [body for j, body in patcher.patches if j == A][-1]["status"]["energy"]["nodes"]["n1"]
    assert last_a["estimated"] is True and last_a["splitRule"] == EQUAL
    assert "most generous" in last_a["capNotApplied"]


def test_time_sliced_gpu_with_a_foreign_pod_is_not_capped_and_the_job_says_why(tmp_path: Path) -> None:
    pods = [pod("a-0", A), pod("other", None)]
    agent, backend, clock, patcher = make(tmp_path, pods, {})
    u = backend.devices()[1].uuid
    agent.gpu_source = FixedSource(
        {pods[0].key: [DeviceRef("nvidia.com/gpu", f"{u}::0")], pods[1].key: [DeviceRef("nvidia.com/gpu", f"{u}::1")]}
    )
    run(agent, clock, 6)
    assert backend.limits_mw() == {0: DEFAULT_MW, 1: DEFAULT_MW}
    entry = [body for j, body in patcher.patches if j == A][-1]["status"]["energy"]["nodes"]["n1"]
    assert "not greenjobs jobs" in entry["capNotApplied"] and entry["estimated"] is True
    assert agent.state.jobs[A].joules == pytest.approx(6 * 700 / 2, rel=0.02)  # half of an uncapped GPU


def test_mig_instances_of_one_job_cap_the_parent_and_dra_devices_count_like_plugin_ones(tmp_path: Path) -> None:
    pods = [pod("a-0", A), pod("a-1", A), pod("b-0", B)]
    agent, backend, clock, _ = make(tmp_path, pods, {}, mig={0: [4, 3]})
    m0, m1 = (m.uuid for m in backend.mig_instances(0))
    agent.layout = agent._read_layout()
    agent.gpu_source = FixedSource(
        {
            pods[0].key: [DeviceRef("nvidia.com/mig-4g.40gb", m0)],
            pods[1].key: [DeviceRef("nvidia.com/mig-3g.40gb", m1)],
            pods[2].key: [DeviceRef("dra:gpu.nvidia.com", "gpu-1")],  # a whole GPU through a ResourceClaim
        }
    )
    run(agent, clock, 10)
    assert backend.limits_mw() == {0: 250_000, 1: 400_000}
    assert agent.state.jobs[A].joules == pytest.approx(10 * 250, rel=0.02)  # all 7 slices: the whole parent
    assert agent.state.jobs[B].joules == pytest.approx(10 * 400, rel=0.02)
    assert agent.state.jobs[A].split == set()  # all slices its own: exact, no estimate
