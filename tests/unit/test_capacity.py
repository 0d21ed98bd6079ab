"""The capacity model: free GPUs per zone over time, from nodes, foreign pods, running jobs and a reserve."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from greenjobs.planning.capacity import Capacity, ForeignPod, Node, RunningJob, gpu_count

T0 = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
STEP = 900.0


def test_only_ready_schedulable_nodes_count_and_everything_held_is_subtracted() -> None:
    nodes = [
        Node("a", "GB", 8),
        Node("b", "GB", 8),
        Node("not-ready", "GB", 8, ready=False),
        Node("cordoned", "GB", 8, schedulable=False),
        Node("fr", "FR", 4),
    ]
    cap = Capacity.build(
        T0,
        nodes,
        foreign_pods=[ForeignPod("GB", 2), ForeignPod("FR", 1)],
        running=[RunningJob("r1", "GB", 4, T0 + 2 * H), RunningJob("r2", "FR", 2, T0 + 5 * H)],
        reserve={"GB": 1},
    )
    assert cap.free_at("GB", T0) == 16 - 2 - 4 - 1
    assert cap.free_at("GB", T0 + 2 * H) == 16 - 2 - 1
    assert cap.free_at("FR", T0) == 4 - 1 - 2
    assert cap.free_at("FR", T0 + 5 * H) == 3
    assert cap.final("GB") == 13
    assert cap.free_at("DE", T0) == 0


def test_grid_releases_a_job_from_the_first_step_after_its_end() -> None:
    cap = Capacity.build(T0, [Node("a", "GB", 8)], running=[RunningJob("r", "GB", 8, T0 + H + timedelta(minutes=5))])
    free = cap.grid("GB", T0.timestamp(), STEP, 8)
    # The job ends at 01:05: step 01:00-01:15 is still taken, 01:15 on is free.
    assert free.tolist() == [0, 0, 0, 0, 0, 8, 8, 8]


def test_an_overdue_job_still_holds_its_gpus_for_a_step() -> None:
    cap = Capacity.build(T0, [Node("a", "GB", 8)], running=[RunningJob("r", "GB", 8, T0 - H)])
    assert cap.grid("GB", T0.timestamp(), STEP, 3).tolist() == [0, 8, 8]


def test_free_capacity_is_never_negative() -> None:
    cap = Capacity.build(T0, [Node("a", "GB", 2)], foreign_pods=[ForeignPod("GB", 5)], reserve=1)
    assert cap.free_at("GB", T0) == 0
    assert np.all(cap.grid("GB", T0.timestamp(), STEP, 4) == 0)


def test_gpu_count_sums_the_configured_resource_names() -> None:
    resources = {"nvidia.com/gpu": "8", "amd.com/gpu": 2, "cpu": "64"}
    assert gpu_count(resources) == 8
    assert gpu_count(resources, ["nvidia.com/gpu", "amd.com/gpu"]) == 10
    with pytest.raises(ValueError, match=r"nvidia\.com/gpu"):
        gpu_count({"nvidia.com/gpu": "1.5"})


def test_constant_capacity_refuses_a_negative_zone() -> None:
    with pytest.raises(ValueError, match="FR"):
        Capacity.constant({"GB": 1, "FR": -1})
