"""Chaos: the operator is SIGKILLed at random moments while it plans, defers, starts and finishes
dozens of jobs, and restarted each time; then two replicas with Lease leader election, where only one acts
and the other takes over when the active one dies.

State lives in the API server (status, the owned Job), so a restart must lose nothing and duplicate
nothing: exactly one Job per GreenTrainingJob for its whole life, every plan kept, every start by
the plan's latest start, every job Succeeded.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from greenjobs.api.durations import parse_time
from tests.conftest import JobWatch
from tests.kube import Cluster, wait_until
from tests.operator_proc import OperatorProcess, condition, file_forecasts

pytestmark = pytest.mark.cluster

SEED = 20261123
JOBS = 60
KILLS = 7
# A start may lag its latest start by one tick plus one restart (kill -> new process listing).
START_TOLERANCE = timedelta(seconds=15)


def _forecasts(directory: Path, now: datetime) -> dict[str, Any]:
    """GB flat and dirty (start at once); FR falls from 250 to 40 at now+50..60 s, then back up.

    Jobs bounded by maxDelay 20 s / 35 s start at their latest start; 3 min ones wait for +50 s.
    """
    fr = {1: 220.0, 2: 180.0, 3: 140.0, 4: 90.0, 5: 40.0}
    return file_forecasts(directory, now, {"GB": 300.0, "FR": lambda i: fr.get(i, 250.0)}, steps=range(-6, 60))


def _gtj(namespace: str, name: str, *, zones: list[str], timing: dict[str, str] | None, gpus: int, run_for: str) -> Any:
    spec: dict[str, Any] = {
        "jobTemplate": {
            "spec": {
                "template": {
                    "metadata": {"annotations": {"kwok.greenjobs.dev/run-for": run_for}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "train", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": gpus}}}
                        ],
                    },
                }
            }
        },
        "placement": {"zones": zones},
    }
    if timing:
        spec["timing"] = timing
    return {
        "apiVersion": "greenjobs.dev/v1alpha1",
        "kind": "GreenTrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _mixed_jobs(namespace: str, rng: random.Random) -> list[Any]:
    """A quarter start at once in GB; the rest are deferred ~20 s, ~35 s or ~50 s in FR."""
    kinds: list[tuple[list[str], dict[str, str] | None]] = [
        (["GB"], None),
        (["FR"], {"estimatedDuration": "10s", "maxDelay": "20s"}),
        (["FR"], {"estimatedDuration": "10s", "maxDelay": "35s"}),
        (["GB", "FR"], {"estimatedDuration": "10s", "maxDelay": "3m"}),
    ]
    # One GPU each: at most 15 run at once per zone, within its 16 GPUs, so that capacity never delays a
    # start and every late start here would be the restarts' fault (test_fleet.py covers capacity). Each
    # runs for less than its estimated 10 s, so the FR groups (planned for +20 s, +30 s and +50 s) never
    # overlap: a run longer than its estimate would hold GPUs the next group was planned on.
    items = []
    for i in range(JOBS):
        zones, timing = kinds[i % len(kinds)]
        run_for = f"{rng.randint(3, 7)}s"
        items.append(_gtj(namespace, f"chaos-{i:03d}", zones=zones, timing=timing, gpus=1, run_for=run_for))
    return items


def _apply(cluster: Cluster, items: list[Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def _items(cluster: Cluster, kind: str, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json(kind, "-n", namespace)["items"]
    return items


def _said_of(workdir: Path, name: str) -> str:
    """Every operator's log lines about one job, in order (an assertion's evidence)."""
    lines = []
    for log in sorted(workdir.glob("operator-*.log")):
        lines += [f"{log.stem} {line[:300]}" for line in log.read_text(errors="replace").splitlines() if name in line]
    return "\n".join(lines[-40:])


def _gtj_events(cluster: Cluster, namespace: str) -> dict[str, Counter[str]]:
    """reason counts per GreenTrainingJob (an Event's `count` included)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for e in _items(cluster, "events", namespace):
        if e["involvedObject"].get("kind") == "GreenTrainingJob":
            counts[e["involvedObject"]["name"]][e["reason"]] += int(e.get("count") or 1)
    return counts


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorProcess],
    job_watch: JobWatch,
) -> None:
    rng = random.Random(SEED)
    now = datetime.now(UTC).replace(microsecond=0)
    config = _forecasts(tmp_path / "fc", now)
    op = operator_factory(config)
    items = _mixed_jobs(namespace, rng)
    _apply(cluster, items)
    names = [i["metadata"]["name"] for i in items]

    kills: list[float] = []
    t0 = time.monotonic()
    for _ in range(KILLS):
        time.sleep(rng.uniform(2.0, 10.0))
        assert op.alive(), f"the operator died on its own:\n{op.logs()[-3000:]}"
        op.kill()
        kills.append(round(time.monotonic() - t0, 1))
        op = operator_factory(config)

    def converged() -> bool:
        phases = [(g.get("status") or {}).get("phase") for g in _items(cluster, "gtj", namespace)]
        return len(phases) == JOBS and all(p == "Succeeded" for p in phases)

    wait_until("every job to succeed", converged, timeout=180, interval=2)
    converged_s = round(time.monotonic() - t0, 1)
    assert op.alive()

    gtjs = {g["metadata"]["name"]: g for g in _items(cluster, "gtj", namespace)}
    jobs = {j["metadata"]["name"]: j for j in _items(cluster, "jobs", namespace)}
    assert sorted(gtjs) == sorted(names)
    assert sorted(jobs) == sorted(names), "exactly one Job per GreenTrainingJob"
    late: list[float] = []
    plan_lag: list[float] = []  # creation -> the plan in status (the last one, after any re-plan)
    deferred = 0
    for name, g in gtjs.items():
        st, job = g["status"], jobs[name]
        assert [r["uid"] for r in job["metadata"]["ownerReferences"]] == [g["metadata"]["uid"]]
        assert st.get("plan"), f"{name} lost its plan"
        assert st["phase"] == "Succeeded"
        assert st["jobName"] == name
        assert (condition(g, "Complete") or {}).get("status") == "True", name
        assert (condition(g, "Started") or {}).get("status") == "True", name
        assert st.get("completionTime"), name
        latest, started = parse_time(st["plan"]["latestStart"]), parse_time(st["startTime"])
        late.append((started - latest).total_seconds())
        assert started <= latest + START_TOLERANCE, (
            f"{name} started {started} after its latest start {latest}; Job created"
            f" {job['metadata']['creationTimestamp']}, started {job['status'].get('startTime')};"
            f" kills at {kills} s; what the operators said of it:\n{_said_of(tmp_path, name)}"
        )
        assert parse_time(job["status"]["startTime"]) <= latest + 2 * START_TOLERANCE, name
        decided = parse_time(st["plan"]["decidedAt"])
        # Deferred by the forecast: planned to start well after its creation. (Against the last plan's
        # decidedAt, a job re-planned by a restarted operator shortly before its start would not count.)
        created = parse_time(g["metadata"]["creationTimestamp"])
        deferred += parse_time(st["plan"]["scheduledStart"]) > created + timedelta(seconds=5)
        plan_lag.append((decided - created).total_seconds())
        assert any(c.get("type") == "Complete" and c.get("status") == "True" for c in job["status"]["conditions"])

    # Over the whole run: one Job UID per name, never deleted and re-created.
    wait_until("the Job watch to have seen every Job", lambda: set(job_watch.uids()) >= set(names), timeout=10)
    uids = job_watch.uids()
    assert {n: len(u) for n, u in uids.items() if len(u) != 1} == {}
    assert {n: {jobs[n]["metadata"]["uid"]} for n in names} == {n: uids[n] for n in names}
    assert job_watch.of_type("DELETED") == []
    assert Counter(name for _, name, _ in job_watch.of_type("ADDED")) == Counter(names)

    events = _gtj_events(cluster, namespace)
    repeats = sum(max(c["Deferred"] + (c["Started"] if c["Deferred"] == 0 else 0) - 1, 0) for c in events.values())
    print(
        f"\nchaos: {len(kills)} SIGKILLs at {kills} s, {JOBS} jobs ({deferred} deferred), 0 lost, 0 duplicate Jobs;"
        f" all Succeeded {converged_s} s after the first apply; start vs latestStart:"
        f" max {max(late):+.1f} s; creation to plan: median {sorted(plan_lag)[len(plan_lag) // 2]:.1f} s,"
        f" max {max(plan_lag):.1f} s; repeated Deferred/Started events after restarts: {repeats}"
    )
    assert JOBS // 2 <= deferred < JOBS, "the forecast should defer most jobs, not all"


# ---------------------------------------------------------------------------------------------------
# Two replicas with Lease leader election


LEASE = "greenjobs-operator"
LEASE_S = 6


def _replica(operator_factory: Callable[..., OperatorProcess], config: dict[str, Any], ns: str) -> OperatorProcess:
    return operator_factory(
        config, args=["--leader-elect", LEASE, "--lease-namespace", ns, "--lease-duration", str(LEASE_S)]
    )


def _leading(op: OperatorProcess) -> bool:
    """Each replica logs only transitions: "acquired the lease" and "lost the lease"."""
    states = re.findall(r"(acquired|lost) the lease", op.logs())
    return bool(states) and states[-1] == "acquired"


def _handled(op: OperatorProcess) -> int:
    return len(re.findall(r": Plan \(", op.logs()))


def _looked_at(op: OperatorProcess, namespace: str) -> list[str]:
    """The reconciler's lines about this namespace's jobs (it logs every look that may change something)."""
    return [line for line in op.logs().splitlines() if "greenjobs.controller.loop" in line and f"{namespace}/" in line]


def test_two_replicas_one_leads_and_the_other_takes_over(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorProcess],
    job_watch: JobWatch,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    config = _forecasts(tmp_path / "fc", now)
    a = _replica(operator_factory, config, namespace)
    b = _replica(operator_factory, config, namespace)
    wait_until("one replica to lead", lambda: _leading(a) or _leading(b), timeout=30)
    active, standby = (a, b) if _leading(a) else (b, a)
    lease = cluster.get_json("lease", LEASE, "-n", namespace)

    def renewed_twice() -> bool:  # two retry periods: the standby (same period) has tried and still waits
        renewals.add(cluster.get_json("lease", LEASE, "-n", namespace)["spec"]["renewTime"])
        return len(renewals) >= 3

    renewals = {lease["spec"]["renewTime"]}
    wait_until("the leader to renew its Lease twice", renewed_twice, timeout=LEASE_S, interval=0.2)
    assert _leading(active) and not _leading(standby)
    assert (
        cluster.get_json("lease", LEASE, "-n", namespace)["spec"]["holderIdentity"] == lease["spec"]["holderIdentity"]
    )

    # 8 jobs deferred ~50 s (FR's clean window) while the active replica runs.
    rng = random.Random(SEED)
    first = [
        _gtj(namespace, f"peer-{i}", zones=["FR"], timing={"estimatedDuration": "10s", "maxDelay": "3m"}, gpus=1,
             run_for=f"{rng.randint(5, 10)}s")
        for i in range(8)
    ]  # fmt: skip
    _apply(cluster, first)
    wait_until(
        "every peer job planned",
        lambda: (
            all((g.get("status") or {}).get("plan") for g in _items(cluster, "gtj", namespace))
            and len(_items(cluster, "gtj", namespace)) == len(first)
        ),
        timeout=30,
    )
    assert _handled(active) >= len(first)
    assert _handled(standby) == 0, "the standby must not act"
    assert len(_items(cluster, "jobs", namespace)) == len(first)
    events = _gtj_events(cluster, namespace)
    assert {n: c["Deferred"] for n, c in events.items()} == {g["metadata"]["name"]: 1 for g in first}

    # The active replica dies without a goodbye: its Lease expires, the standby takes it, starts the
    # deferred jobs at their time and plans new ones.
    active.kill()
    killed = time.monotonic()
    wait_until("the standby to take the lease", lambda: _leading(standby), timeout=60)
    takeover_s = round(time.monotonic() - killed, 1)
    second = [
        _gtj(namespace, "peer-late", zones=["GB"], timing=None, gpus=1, run_for="5s"),
    ]
    _apply(cluster, second)

    def all_succeeded() -> bool:
        gs = _items(cluster, "gtj", namespace)
        return len(gs) == len(first) + 1 and all((g.get("status") or {}).get("phase") == "Succeeded" for g in gs)

    wait_until("every peer job to succeed under the standby", all_succeeded, timeout=150, interval=2)
    jobs = _items(cluster, "jobs", namespace)
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted(g["metadata"]["name"] for g in first + second)
    assert {n: len(u) for n, u in job_watch.uids().items() if len(u) != 1} == {}
    events = _gtj_events(cluster, namespace)
    assert {n: (c["Deferred"], c["Started"]) for n, c in events.items() if n != "peer-late"} == {
        g["metadata"]["name"]: (1, 1) for g in first
    }
    assert events["peer-late"]["Started"] == 1
    assert _handled(standby) >= 1
    print(f"\nleader election: standby took over {takeover_s} s after SIGKILL of the leader (lease {LEASE_S} s)")


def test_a_rolling_upgrade_hands_over_and_every_job_starts_once(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorProcess],
    job_watch: JobWatch,
) -> None:
    """`helm upgrade` with the chart's defaults (leader election on, RollingUpdate): the new pod starts
    while the old one still runs and leads, and the old one is then stopped with SIGTERM. Two operators
    run at once, but only the old acts until it lets the Lease go on its way out; the new one takes over
    at once (well within a Lease duration) and starts the deferred jobs at their time: each job is
    started once, by one of them (one Job, one Started Event)."""
    now = datetime.now(UTC).replace(microsecond=0)
    config = _forecasts(tmp_path / "fc", now)
    old = _replica(operator_factory, config, namespace)
    wait_until("the old pod to lead", lambda: _leading(old), timeout=30)
    # Four start at once in GB (due now), six wait for FR's falling intensity (latest start ~20-35 s).
    items = [_gtj(namespace, f"now-{i}", zones=["GB"], timing=None, gpus=1, run_for="4s") for i in range(4)]
    items += [
        _gtj(namespace, f"later-{i}", zones=["FR"], timing={"estimatedDuration": "10s", "maxDelay": f"{20 + 3 * i}s"},
             gpus=1, run_for="4s")
        for i in range(6)
    ]  # fmt: skip
    names = sorted(i["metadata"]["name"] for i in items)
    _apply(cluster, items)
    new = _replica(operator_factory, config, namespace)  # the rollout's new pod: a standby
    wait_until(
        "every job planned by the old pod",
        lambda: sum(bool((g.get("status") or {}).get("plan")) for g in _items(cluster, "gtj", namespace)) == len(items),
        timeout=30,
    )
    # Both run while the first deferred job comes due: the old pod starts it, the new one does nothing
    # at all (an unfenced second operator would look at every job it lists at once: plan, re-plan, start).
    wait_until("the old pod to start a deferred job", lambda: "/later-0: Start (" in old.logs(), timeout=60)
    assert _leading(old) and not _leading(new)
    assert _looked_at(new, namespace) == [], "the new pod must not act while the old one leads"
    # Those due well after the handover (not those the old pod may be starting right now).
    soon = datetime.now(UTC) + timedelta(seconds=3)
    deferred = [
        g["metadata"]["name"]
        for g in _items(cluster, "gtj", namespace)
        if (g.get("status") or {}).get("phase") == "Deferred"
        and parse_time(g["status"]["plan"]["scheduledStart"]) > soon
    ]
    assert deferred, "some jobs must still wait when the old pod goes"

    stopped = time.monotonic()
    old.stop()  # SIGTERM, as the Deployment stops the old pod once the new one is ready
    assert "released the lease" in old.logs()
    wait_until("the new pod to lead", lambda: _leading(new), timeout=LEASE_S / 2)  # no Lease expiry awaited
    takeover_s = round(time.monotonic() - stopped, 1)

    def all_succeeded() -> bool:
        gs = _items(cluster, "gtj", namespace)
        return len(gs) == len(items) and all((g.get("status") or {}).get("phase") == "Succeeded" for g in gs)

    wait_until("every job to succeed", all_succeeded, timeout=120, interval=2)
    gtjs = {g["metadata"]["name"]: g for g in _items(cluster, "gtj", namespace)}
    for name in deferred:  # started by the new pod, by their latest start
        st = gtjs[name]["status"]
        started, latest = parse_time(st["startTime"]), parse_time(st["plan"]["latestStart"])
        assert started <= latest + START_TOLERANCE, (name, started, latest, _said_of(tmp_path, name))
        assert f"{name}: Start (" in new.logs() and f"{name}: Start (" not in old.logs(), _said_of(tmp_path, name)
    assert sorted(j["metadata"]["name"] for j in _items(cluster, "jobs", namespace)) == names
    wait_until("the watch to see every Job", lambda: sorted(job_watch.uids()) == names, timeout=10)
    assert {n: len(u) for n, u in job_watch.uids().items() if len(u) != 1} == {}
    assert job_watch.of_type("DELETED") == []
    events = _gtj_events(cluster, namespace)
    assert {n: events[n]["Started"] for n in names} == dict.fromkeys(names, 1), events
    print(f"\nrolling upgrade: the new pod led {takeover_s} s after SIGTERM of the old (lease {LEASE_S} s)")
