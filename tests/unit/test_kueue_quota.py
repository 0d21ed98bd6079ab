"""A ClusterQueue's free GPUs per zone (nominal + borrowable - reserved) and the joint plan of the
Workloads it holds: the same fleet planner as the GreenTrainingJob operator's."""

from datetime import UTC, datetime, timedelta
from typing import Any

from greenjobs.carbon.series import IntensitySeries
from greenjobs.kueue.quota import free_gpus_by_zone, plan_jointly, workload_gpus
from greenjobs.planning.decisions import FleetPlacement
from greenjobs.planning.fleet import FleetJob

GPU = "nvidia.com/gpu"
T0 = datetime(2026, 3, 5, 12, tzinfo=UTC)
M = timedelta(minutes=1)


def cq(cohort: str | None, quotas: dict[str, tuple[int, int | None]], reserved: dict[str, int]) -> dict[str, Any]:
    flavors = []
    for name, (nominal, limit) in quotas.items():
        res: dict[str, Any] = {"name": GPU, "nominalQuota": str(nominal)}
        if limit is not None:
            res["borrowingLimit"] = str(limit)
        flavors.append({"name": name, "resources": [res, {"name": "cpu", "nominalQuota": "100"}]})
    return {
        "spec": {"cohortName": cohort, "resourceGroups": [{"coveredResources": [GPU, "cpu"], "flavors": flavors}]},
        "status": {
            "flavorsReservation": [
                {"name": n, "resources": [{"name": GPU, "total": str(v)}]} for n, v in reserved.items()
            ]
        },
    }


ZONES = {"gb-gpu": "GB", "fr-gpu": "FR", "cpu-only": None}


def test_free_is_nominal_minus_reserved_per_zone() -> None:
    queue = cq(None, {"gb-gpu": (16, None), "fr-gpu": (8, None)}, {"gb-gpu": 10})
    assert free_gpus_by_zone(queue, [], ZONES, [GPU]) == {"GB": 6, "FR": 8}


def test_borrowing_counts_what_the_cohort_leaves_unused_within_the_limit() -> None:
    queue = cq("team", {"gb-gpu": (8, 4), "fr-gpu": (8, None)}, {"gb-gpu": 8, "fr-gpu": 2})
    peer = cq("team", {"gb-gpu": (16, None), "fr-gpu": (8, None)}, {"gb-gpu": 6, "fr-gpu": 8})
    # GB: 8 + min(4, 16 - 6) - 8 = 4; FR: 8 + (8 - 8) - 2 = 6.
    assert free_gpus_by_zone(queue, [peer], ZONES, [GPU]) == {"GB": 4, "FR": 6}


def test_workload_gpus_counts_every_pod_of_every_pod_set() -> None:
    wl = {
        "spec": {
            "podSets": [
                {"count": 4, "template": {"spec": {"containers": [{"resources": {"requests": {GPU: "2"}}}]}}},
                {"count": 1, "template": {"spec": {"containers": [{"resources": {"limits": {GPU: 8}}}]}}},
                {"count": 3, "template": {"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}}},
            ]
        }
    }
    assert workload_gpus(wl, [GPU]) == 16


def test_held_workloads_are_planned_jointly_against_the_queue_quota() -> None:
    # 16 free GPUs, one clean minute, ten 8-GPU one-minute Workloads with 6 minutes of slack (issue 22's
    # herd): only two fit the clean minute, and every one keeps its deadline.
    series = IntensitySeries.from_points([(T0 + k * M, 50.0 if k == 3 else 300.0) for k in range(60)], end=T0 + 60 * M)
    jobs = [FleetJob(f"ns/w{i}", 8, M, T0 + 5 * M, ["GB"], arrival=T0, earliest_start=T0) for i in range(10)]
    placements = [plan_jointly(job, jobs, {"GB": 16}, {"GB": series}, T0) for job in jobs]
    assert all(isinstance(p, FleetPlacement) for p in placements)
    starts = [p.assignment.start for p in placements if isinstance(p, FleetPlacement)]
    assert all(s <= T0 + 5 * M for s in starts)
    assert starts.count(T0 + 3 * M) == 2
    assert max(starts.count(s) for s in set(starts)) <= 2  # never over the quota


def test_a_workload_bigger_than_the_quota_gets_a_reason() -> None:
    series = IntensitySeries.from_points([(T0, 100.0)], end=T0 + 60 * M)
    big = FleetJob("ns/big", 32, M, T0 + 5 * M, ["GB"], arrival=T0, earliest_start=T0)
    answer = plan_jointly(big, [], {"GB": 16}, {"GB": series}, T0)
    assert isinstance(answer, str) and "32" in answer
