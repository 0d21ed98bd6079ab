"""A job's count is keyed by its GTJ's UID, survives restarts but not reboots' downtime, and is dropped
once its final entry is written and seen (issue 10 item 9, issue 14 item 3)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greenjobs_agent.agent import Agent
from greenjobs_agent.gpu.simulated import H100_SXM, SimulatedBackend
from greenjobs_agent.podresources import SimulatedPodGpuSource
from greenjobs_agent.pods import JobInfo, JobKey, JobRef, NodeSeed, PodInfo, PodKey, StaticView
from greenjobs_agent.reporter import JobGone, RecordingPatcher
from greenjobs_agent.state import StateStore

NODE = "gpu-gb-0"
REF = JobRef("ml", "train")
OLD = JobKey("ml", "train", "uid-1")
NEW = JobKey("ml", "train", "uid-2")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class ApiLikePatcher(RecordingPatcher):
    """Records patches, and refuses them as the API server would: 404 for a missing GTJ, 409 when the
    UID precondition names another object than the one of that name."""

    def __init__(self, view: StaticView) -> None:
        super().__init__([])
        self.view = view

    def patch_status(self, job: JobKey, body: dict[str, object]) -> None:
        info = self.view.infos.get(job.ref)
        if info is None or body.get("metadata", {}) != {"uid": info.uid}:  # type: ignore[union-attr]
            raise JobGone(str(job))
        super().patch_status(job, body)


def pod(name: str, uid: str | None, phase: str = "Running", gpus: int = 2) -> PodInfo:
    return PodInfo(PodKey("ml", name), phase, "train", gpus, uid, uid=f"pod-{name}")


def make(tmp_path: Path, clock: Clock, view: StaticView, boot: list[str] | None = None, **kw: float) -> Agent:
    backend = SimulatedBackend(clock, n=4, state_dir=tmp_path)
    boots = boot if boot is not None else ["boot-1"]
    return Agent(
        NODE,
        backend,
        view=view,
        gpu_source=SimulatedPodGpuSource(view.pods, backend.devices(), tmp_path),
        patcher=ApiLikePatcher(view),
        store=StateStore(tmp_path),
        clock=clock,
        report_interval_s=5,
        boot_id=lambda: boots[0],
        **kw,  # type: ignore[arg-type]
    )


def entries(agent: Agent, job: JobKey) -> list[dict[str, object]]:
    assert isinstance(agent.patcher, RecordingPatcher)
    return [b["status"]["energy"]["nodes"][NODE] for j, b in agent.patcher.patches if j == job]  # type: ignore[index]


def run(agent: Agent, clock: Clock, seconds: int) -> None:
    for _ in range(seconds):
        clock.advance(1)
        agent.tick()


def test_same_name_recreated_starts_from_zero_and_old_joules_never_land_on_it(tmp_path: Path) -> None:
    clock = Clock()
    view = StaticView([pod("a", "uid-1")], {REF: JobInfo("uid-1", 300)})
    agent = make(tmp_path, clock, view)
    agent.tick()
    run(agent, clock, 20)
    old_j = agent.state.jobs[OLD].joules
    assert old_j == pytest.approx(2 * 20 * 300, rel=0.02)
    assert all(b.get("metadata") == {"uid": "uid-1"} for _, b in agent.patcher.patches)  # type: ignore[attr-defined]

    # kubectl delete + apply of the same name: the old pod is gone, a new pod of the new object runs.
    clock.advance(0.5)
    view.infos = {REF: JobInfo("uid-2", 250)}
    view.pod_list = [pod("b", "uid-2")]
    agent.tick()
    assert OLD not in agent.state.jobs  # its final patch was refused (409): nothing kept of it
    run(agent, clock, 10)
    new = agent.state.jobs[NEW]
    assert new.joules == pytest.approx(2 * 10 * 250, rel=0.02)  # from zero: none of the old 12 kJ
    assert max(e["joules"] for e in entries(agent, NEW)) < old_j  # type: ignore[type-var]
    assert [b["metadata"] for j, b in agent.patcher.patches if j == NEW] == [  # type: ignore[attr-defined]
        {"uid": "uid-2"}
    ] * len(entries(agent, NEW))


def test_pods_without_the_uid_label_take_the_uid_of_the_gtj_of_that_name(tmp_path: Path) -> None:
    clock = Clock()
    view = StaticView([pod("a", None)], {REF: JobInfo("uid-1", 300)})
    agent = make(tmp_path, clock, view)
    agent.tick()
    run(agent, clock, 5)
    assert set(agent.state.jobs) == {OLD}
    assert view.tracked == {REF}


def test_a_reboot_adds_no_downtime_to_gpu_hours_or_energy(tmp_path: Path) -> None:
    clock = Clock()
    boots = ["boot-1"]
    view = StaticView([pod("a", "uid-1")], {REF: JobInfo("uid-1", 300)})
    agent = make(tmp_path, clock, view, boots)
    agent.tick()
    run(agent, clock, 10)
    before = agent.state.jobs[OLD].gpu_seconds
    assert before == pytest.approx(20)
    # The node goes down for an hour and comes back: the GPUs were reset, nobody held them.
    clock.advance(3600)
    assert isinstance(agent.backend, SimulatedBackend)
    agent.backend.reboot()
    boots[0] = "boot-2"
    agent = make(tmp_path, clock, view, boots)
    agent.tick()
    run(agent, clock, 10)
    totals = agent.state.jobs[OLD]
    assert totals.gpu_seconds == pytest.approx(before + 20)
    assert totals.joules == pytest.approx(2 * 20 * 300, rel=0.02)
    assert agent.state.boot_id == "boot-2"


def test_a_restart_of_the_agent_alone_counts_the_time_it_was_down(tmp_path: Path) -> None:
    clock = Clock()
    view = StaticView([pod("a", "uid-1")], {REF: JobInfo("uid-1", 300)})
    agent = make(tmp_path, clock, view)
    agent.tick()
    run(agent, clock, 10)
    clock.advance(30)  # agent dead, the job ran on: same boot
    agent = make(tmp_path, clock, view)
    agent.tick()
    assert agent.state.jobs[OLD].gpu_seconds == pytest.approx(2 * 40)


def test_nothing_is_kept_of_a_job_once_its_final_entry_is_written_and_seen(tmp_path: Path) -> None:
    clock = Clock()
    view = StaticView([pod("a", "uid-1")], {REF: JobInfo("uid-1", 300)})
    agent = make(tmp_path, clock, view, forget_after_s=30)
    agent.tick()
    run(agent, clock, 10)
    view.pod_list = [pod("a", "uid-1", phase="Succeeded")]
    run(agent, clock, 5)
    final = entries(agent, OLD)[-1]
    assert final["gpus"] == 0
    assert OLD in agent.state.jobs  # kept until the GTJ as watched shows that final entry
    run(agent, clock, 40)
    assert OLD in agent.state.jobs  # the view never showed the entry: still kept
    view.infos = {REF: JobInfo("uid-1", 300, NodeSeed(float(final["joules"]), float(final["gpuSeconds"])))}  # type: ignore[arg-type]
    run(agent, clock, 1)
    assert agent.state.jobs == {}
    run(agent, clock, 1)
    assert view.tracked == set()  # no watch either (from the next tick): its only pod here has finished
    # A later pod of the same job here (a retry, a resume) continues from that entry.
    view.pod_list = [pod("a2", "uid-1")]
    run(agent, clock, 10)
    assert agent.state.jobs[OLD].joules == pytest.approx(
        float(final["joules"]) + 2 * 9 * 300, rel=0.02
    )  # first tick: baseline  # type: ignore[arg-type]


def test_a_deleted_gtj_is_forgotten_at_once(tmp_path: Path) -> None:
    clock = Clock()
    view = StaticView([pod("a", "uid-1")], {REF: JobInfo("uid-1", 300)})
    agent = make(tmp_path, clock, view)
    agent.tick()
    run(agent, clock, 6)
    view.pod_list = []
    view.infos = {}
    run(agent, clock, 1)
    assert agent.state.jobs == {}
    assert agent.backend.limits_mw() == dict.fromkeys(range(4), H100_SXM.default_mw)  # type: ignore[attr-defined]


def test_unresolved_pods_keep_their_gpus_as_they_are(tmp_path: Path) -> None:
    # A restart before the GTJ watch has listed: a capped GPU of a running job must stay capped.
    clock = Clock()
    view = StaticView([pod("a", None)], {REF: JobInfo("uid-1", 300)})
    agent = make(tmp_path, clock, view)
    agent.tick()
    assert agent.backend.limits_mw()[0] == 300_000  # type: ignore[attr-defined]

    class Unlisted(StaticView):
        def jobs(self) -> dict[JobRef, JobInfo | None]:
            return {}

    view2 = Unlisted(view.pod_list, view.infos)
    clock.advance(5)
    agent2 = make(tmp_path, clock, view2)
    agent2.tick()
    assert agent2.backend.limits_mw()[0] == 300_000  # type: ignore[attr-defined]
    assert agent2.state.jobs[OLD].gpu_seconds == pytest.approx(2 * 5)  # counted under the UID it knew


def test_a_job_new_to_the_agent_is_not_counted_before_its_gtj_is_listed(tmp_path: Path) -> None:
    # The agent lost its state (new disk, say) while the job ran: its first report must continue the
    # node's entry, never write a smaller figure over it.
    clock = Clock()

    class LateList(StaticView):
        listed = False

        def jobs(self) -> dict[JobRef, JobInfo | None]:
            return super().jobs() if self.listed else {}

    view = LateList([pod("a", "uid-1")], {REF: JobInfo("uid-1", 300, NodeSeed(5000.0, 20.0))})
    agent = make(tmp_path, clock, view)
    run(agent, clock, 3)
    assert agent.state.jobs == {} and entries(agent, OLD) == []
    view.listed = True
    run(agent, clock, 11)
    reported = [float(e["joules"]) for e in entries(agent, OLD)]  # type: ignore[arg-type]
    assert reported and min(reported) >= 5000.0
    assert agent.state.jobs[OLD].joules == pytest.approx(5000 + 2 * 10 * 300, rel=0.02)


def test_pods_of_a_deleted_gtj_are_nobodys_and_cost_no_reports(tmp_path: Path) -> None:
    # The old object's pod still runs (garbage collection takes a moment) next to the new object's.
    clock = Clock()
    view = StaticView([pod("old", "uid-1"), pod("new", "uid-2")], {REF: JobInfo("uid-2", 250)})
    agent = make(tmp_path, clock, view)
    run(agent, clock, 12)
    assert set(agent.state.jobs) == {NEW}
    assert {j for j, _ in agent.patcher.patches} == {NEW}  # type: ignore[attr-defined]
    limits = agent.backend.limits_mw()  # type: ignore[attr-defined]
    assert sorted(limits.values()) == [250_000, 250_000, 700_000, 700_000]  # the old pod's GPUs uncapped


def test_an_unlabelled_pod_older_than_the_gtj_of_its_name_is_not_that_gtjs(tmp_path: Path) -> None:
    # Pods made before the operator labelled UIDs: the fallback by name must not hand the old
    # object's pod to a new object of the same name.
    clock = Clock()
    old = PodInfo(PodKey("ml", "old"), "Running", "train", 2, None, "pod-old", created="2026-11-23T11:00:00Z")
    new = PodInfo(PodKey("ml", "new"), "Running", "train", 2, None, "pod-new", created="2026-11-23T11:59:30Z")
    view = StaticView([old, new], {REF: JobInfo("uid-2", 250, None, created="2026-11-23T11:59:00Z")})
    agent = make(tmp_path, clock, view)
    run(agent, clock, 10)
    assert set(agent.state.jobs) == {NEW}
    assert agent.state.jobs[NEW].gpu_seconds == pytest.approx(2 * 9)  # the new pod's 2 GPUs only
