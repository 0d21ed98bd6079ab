"""The fleet planner: capacity never exceeded, deadlines held, overflow to the next-best windows and zones."""

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from greenjobs.carbon.series import IntensitySeries
from greenjobs.planning.capacity import Capacity, Node, RunningJob
from greenjobs.planning.fleet import (
    WAITS_CAPACITY,
    WAITS_CLEAN_WINDOW,
    WAITS_START_NOW,
    FleetJob,
    Placement,
    add_job,
    plan_fleet,
    with_current,
)
from greenjobs.planning.gpu_model import throughput
from tests.unit.fleet_checks import assert_within_capacity

T0 = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
STEP = timedelta(minutes=15)


def series(*hourly: float, end_h: float | None = None) -> IntensitySeries:
    """One value per hour from T0; covered until end_h hours (default: the last value's hour + 1)."""
    end = T0 + (end_h if end_h is not None else len(hourly)) * H
    return IntensitySeries.from_points([(T0 + k * H, v) for k, v in enumerate(hourly)], end=end)


# GB: 300, except 100 from 02:00 to 04:00; 48 h covered.
GB = series(300, 300, 100, 100, *[300] * 44)
FR = series(*[200] * 48)


def job(
    id: str, gpus: int = 8, run_h: float = 2, latest_h: float = 10, zones: tuple[str, ...] = ("GB",), **kw: object
) -> FleetJob:
    return FleetJob(id=id, gpus=gpus, duration=run_h * H, latest_start=T0 + latest_h * H, zones=zones, arrival=T0, **kw)  # type: ignore[arg-type]


def test_overflow_of_a_full_clean_window_goes_to_the_next_best_window() -> None:
    jobs = [job(f"j{i}") for i in range(6)]
    cap = Capacity.constant({"GB": 16})
    plan = plan_fleet(jobs, cap, {"GB": GB}, T0)
    starts = sorted(a.start for a in plan.assignments.values())
    # Two fit the clean window; the others fill the remaining (equal) hours, earliest first.
    assert starts == [T0, T0, T0 + 2 * H, T0 + 2 * H, T0 + 4 * H, T0 + 4 * H]
    assert sorted(a.waits_for for a in plan.assignments.values()) == sorted(
        [WAITS_START_NOW] * 2 + [WAITS_CLEAN_WINDOW] * 2 + [WAITS_CAPACITY] * 2
    )
    assert all(a.late_by == timedelta(0) for a in plan.assignments.values())
    assert_within_capacity(plan, jobs, cap)


def test_overflow_goes_to_the_next_best_zone_before_dirty_hours() -> None:
    jobs = [job(f"j{i}", zones=("GB", "FR")) for i in range(4)]
    cap = Capacity.constant({"GB": 16, "FR": 8})
    plan = plan_fleet(jobs, cap, {"GB": GB, "FR": FR}, T0, zone_gap_percent=0)  # exact windows
    placed = sorted((a.zone, a.start, a.expected_g_per_kwh) for a in plan.assignments.values())
    assert placed[:2] == [("FR", T0, 200.0), ("FR", T0 + 2 * H, 200.0)]
    assert [p[:2] for p in placed[2:]] == [("GB", T0 + 2 * H)] * 2
    assert_within_capacity(plan, jobs, cap)


@pytest.mark.parametrize(("zone_gap_percent", "a_starts_h", "b_zone", "grams"), [(0, 1, "GB", 350), (5, 0, "FR", 110)])
def test_a_job_in_the_clean_zone_starts_early_for_a_small_share_of_the_zone_gap(
    zone_gap_percent: float, a_starts_h: int, b_zone: str, grams: float
) -> None:
    # FR: 60 now, 50 for two hours, then 60; GB: 300. A may wait 3 h; B arrives at 1 h and cannot wait.
    # Waiting an hour for FR's 50 saves A 10 g/kWh and sends B to GB: 250 more. Within 5 % of A's
    # zone gap (about 245), A starts now and B gets FR: what a plan knowing B would have done.
    fr = series(60, 50, 50, *[60] * 45)
    gb = series(*[300] * 48)
    fc = {"GB": gb, "FR": fr}
    cap = Capacity.constant({"GB": 16, "FR": 8})
    a = job("a", run_h=1, latest_h=3, zones=("GB", "FR"))
    plan = plan_fleet([a], cap, fc, T0, zone_gap_percent=zone_gap_percent)
    assert (plan.assignments["a"].zone, plan.assignments["a"].start) == ("FR", T0 + a_starts_h * H)
    b = replace(job("b", run_h=1, latest_h=1, zones=("GB", "FR")), arrival=T0 + H)
    plan = add_job(plan, b, T0 + H)
    assert (plan.assignments["b"].zone, plan.assignments["b"].start) == (b_zone, T0 + H)
    assert sum(x.expected_g_per_kwh for x in plan.assignments.values()) == pytest.approx(grams)
    assert_within_capacity(plan, [a, b], cap)


def test_never_over_capacity_on_random_fleets() -> None:
    rng = random.Random(7)
    values = [rng.uniform(50, 400) for _ in range(96)]
    forecasts = {"A": series(*values), "B": series(*reversed(values)), "C": series(*[v * 0.8 for v in values[:60]])}
    for trial in range(4):
        cap = Capacity.build(
            T0,
            [Node("a", "A", 16), Node("b", "B", 8), Node("c", "C", 12)],
            running=[RunningJob("r", "A", 8, T0 + rng.randint(1, 20) * H)],
            reserve={"B": 1},
        )
        jobs = [
            FleetJob(
                id=f"t{trial}-{i}",
                gpus=rng.choice([1, 2, 4, 8]),
                duration=timedelta(minutes=rng.randint(10, 600)),
                latest_start=T0 + timedelta(minutes=rng.randint(-60, 2000)),
                zones=rng.sample(["A", "B", "C"], rng.randint(1, 3)),
                arrival=T0 - timedelta(minutes=rng.randint(0, 100)),
                priority=rng.randint(0, 2),
                flexible=rng.random() > 0.1,
            )
            for i in range(60)
        ]
        plan = plan_fleet(jobs, cap, forecasts, T0 + timedelta(minutes=7))
        too_big = {j.id for j in jobs if all(j.gpus > cap.final(z) for z in j.zones)}
        assert set(plan.unplaced) == too_big
        assert set(plan.assignments) == {j.id for j in jobs} - too_big
        assert_within_capacity(plan, jobs, cap)
        more = add_job(plan, job(f"t{trial}-new", gpus=8, zones=("A", "B")))
        assert_within_capacity(more, [*jobs, job(f"t{trial}-new")], cap)


def test_deadlines_hold_when_the_tight_job_goes_first() -> None:
    # Capacity for one 8-GPU job at a time. The loose job arrived first and would like the clean window,
    # but the tight job must finish by 04:00: it takes 02:00 or earlier and the loose one moves.
    tight = FleetJob("tight", 8, 2 * H, T0 + 2 * H, ["GB"], arrival=T0 + H)
    loose = FleetJob("loose", 8, 2 * H, T0 + 20 * H, ["GB"], arrival=T0)
    cap = Capacity.constant({"GB": 8})
    plan = plan_fleet([loose, tight], cap, {"GB": GB}, T0)
    assert plan.assignments["tight"].start == T0 + 2 * H
    assert plan.assignments["tight"].late_by == timedelta(0)
    assert plan.assignments["loose"].late_by == timedelta(0)
    assert plan.assignments["loose"].start in (T0, T0 + 4 * H)
    assert_within_capacity(plan, [loose, tight], cap)


def test_when_no_start_meets_the_deadline_the_job_is_least_late() -> None:
    jobs = [job("a", latest_h=0), job("b", latest_h=0), job("c", latest_h=0.5)]
    plan = plan_fleet(jobs, Capacity.constant({"GB": 16}), {"GB": GB}, T0)
    c = plan.assignments["c"]
    assert c.start == T0 + 2 * H  # the first moment 8 GPUs are free
    assert c.late_by == timedelta(hours=1.5)
    assert c.waits_for == WAITS_CAPACITY
    assert "past its latest start" in c.message


def test_a_job_at_its_latest_start_is_never_displaced() -> None:
    due = job("due", latest_h=0, current=Placement("GB", T0))
    vip = job("vip", latest_h=20, priority=100)
    plan = plan_fleet([vip, due], Capacity.constant({"GB": 8}), {"GB": series(*[100] * 2, *[300] * 46)}, T0)
    assert plan.assignments["due"].start == T0
    assert plan.assignments["vip"].start >= T0 + 2 * H


def test_inflexible_jobs_go_first_and_start_as_early_as_possible() -> None:
    flexible = job("flex", latest_h=0.25, priority=10)
    rigid = FleetJob("rigid", 8, 3 * H, T0, ["GB"], arrival=T0 + H, flexible=False)
    plan = plan_fleet([flexible, rigid], Capacity.constant({"GB": 8}), {"GB": GB}, T0)
    assert plan.assignments["rigid"].start == T0
    assert plan.assignments["flex"].start == T0 + 3 * H


def test_priority_then_arrival_order_break_ties() -> None:
    cap = Capacity.constant({"GB": 8})
    first = FleetJob("first", 8, 2 * H, T0 + 10 * H, ["GB"], arrival=T0)
    second = FleetJob("second", 8, 2 * H, T0 + 10 * H, ["GB"], arrival=T0 + timedelta(minutes=1))
    plan = plan_fleet([second, first], cap, {"GB": GB}, T0)
    assert plan.assignments["first"].start == T0 + 2 * H
    boosted = FleetJob("second", 8, 2 * H, T0 + 10 * H, ["GB"], arrival=T0 + timedelta(minutes=1), priority=1)
    plan = plan_fleet([boosted, first], cap, {"GB": GB}, T0)
    assert plan.assignments["second"].start == T0 + 2 * H
    assert plan.assignments["first"].start != T0 + 2 * H


def test_a_planned_start_moves_only_for_a_meaningful_gain() -> None:
    jobs = [job("a", gpus=1, latest_h=20)]
    cap = Capacity.constant({"GB": 8})
    plan = plan_fleet(jobs, cap, {"GB": GB}, T0)
    assert plan.assignments["a"].start == T0 + 2 * H
    # A new forecast makes 05:00-07:00 1 % cleaner than the window it has: it stays.
    slightly = series(300, 300, 100, 100, 300, 99, 99, *[300] * 41)
    again = plan_fleet(with_current(jobs, plan), cap, {"GB": slightly}, T0)
    assert again.assignments["a"].start == T0 + 2 * H
    # Much cleaner: it moves.
    much = series(300, 300, 100, 100, 300, 50, 50, *[300] * 41)
    again = plan_fleet(with_current(jobs, plan), cap, {"GB": much}, T0)
    assert again.assignments["a"].start == T0 + 5 * H


def test_replanning_with_the_same_forecast_moves_nothing() -> None:
    rng = random.Random(3)
    forecasts = {"GB": series(*[rng.uniform(50, 300) for _ in range(72)])}
    jobs = [
        job(f"j{i}", gpus=rng.choice([1, 4, 8]), run_h=rng.uniform(0.5, 8), latest_h=rng.uniform(0, 40))
        for i in range(40)
    ]
    cap = Capacity.constant({"GB": 16})
    plan = plan_fleet(jobs, cap, forecasts, T0)
    again = plan_fleet(with_current(jobs, plan), cap, forecasts, T0)
    assert {k: (a.zone, a.start) for k, a in again.assignments.items()} == {
        k: (a.zone, a.start) for k, a in plan.assignments.items()
    }


def test_only_the_covered_part_of_the_window_is_used() -> None:
    # Covered until 12:00, its last hour very clean. A 2 h job may wait until 20:00 but must not start
    # after 10:00: its run would reach past what the forecast covers.
    short = series(*[300] * 11, 10, end_h=12)
    plan = plan_fleet([job("a", latest_h=20)], Capacity.constant({"GB": 8}), {"GB": short}, T0)
    a = plan.assignments["a"]
    assert a.start == T0 + 10 * H
    assert a.expected_g_per_kwh == pytest.approx(155.0)
    # A job longer than the covered part is not shifted for carbon at all.
    long = plan_fleet([job("b", run_h=14, latest_h=20)], Capacity.constant({"GB": 8}), {"GB": short}, T0)
    assert long.assignments["b"].start == T0
    assert long.assignments["b"].waits_for == WAITS_START_NOW


def test_a_capped_job_plans_its_slower_run() -> None:
    capped = job("c", gpus=8, run_h=2, power_cap_fraction=0.6)
    plan = plan_fleet([capped, job("next", gpus=8, latest_h=40)], Capacity.constant({"GB": 8}), {"GB": GB}, T0)
    a = plan.assignments["c"]
    assert a.run_time.total_seconds() == pytest.approx(7200 / throughput(0.6))
    assert a.run_time > 2 * H
    # The other job does not start before the capped one has really finished.
    nxt = plan.assignments["next"]
    assert nxt.start >= a.end or nxt.end <= a.start


def test_add_job_folds_an_arrival_in_without_moving_the_others() -> None:
    jobs = [job(f"j{i}") for i in range(3)]
    cap = Capacity.constant({"GB": 16})
    plan = plan_fleet(jobs, cap, {"GB": GB}, T0)
    new = job("new")
    more = add_job(plan, new)
    assert {k: more.assignments[k] for k in plan.assignments} == plan.assignments
    assert "new" not in plan.assignments  # the original plan is left as it was
    assert_within_capacity(more, [*jobs, new], cap)
    # Folding the same job in again replaces its assignment.
    again = add_job(more, new)
    assert len(again.assignments) == 4
    assert_within_capacity(again, [*jobs, new], cap)


def test_an_arrival_folded_in_later_starts_no_earlier_than_it_arrives() -> None:
    plan = plan_fleet([job("a", gpus=8, latest_h=0)], Capacity.constant({"GB": 16}), {"GB": GB}, T0)
    later = T0 + timedelta(minutes=40)
    more = add_job(plan, job("b", gpus=8, latest_h=0), later)
    assert more.assignments["b"].start == later
    assert more.now == later


def test_jobs_that_cannot_be_placed_say_why() -> None:
    plan = plan_fleet(
        [job("big", gpus=32), job("nowhere", zones=("DE",))], Capacity.constant({"GB": 16}), {"GB": GB}, T0
    )
    assert "32 GPUs" in plan.unplaced["big"]
    assert "DE" in plan.unplaced["nowhere"]
    assert plan.assignments == {}


def test_bad_jobs_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="duration"):
        job("x", run_h=0)
    with pytest.raises(ValueError, match="gpus"):
        job("x", gpus=-1)
    with pytest.raises(ValueError, match="duplicate"):
        plan_fleet([job("x"), job("x")], Capacity.constant({"GB": 8}), {"GB": GB}, T0)
    with pytest.raises(ValueError, match="start latency"):
        replace(job("x", run_h=1), start_latency=timedelta(hours=1))
    with pytest.raises(ValueError, match="start latency"):
        replace(job("x"), start_latency=timedelta(seconds=-1))


def test_wait_gain_percent_starts_earlier_unless_waiting_gains_enough() -> None:
    # 300 now, 280 from 02:00 (a 20 g gain, 6.7 % of the 300 g baseline), 100 from 06:00 (67 %).
    forecast = series(300, 300, 280, 280, 280, 280, 100, 100, *[300] * 40)
    cap = Capacity.constant({"GB": 8})
    default = plan_fleet([job("a", latest_h=3)], cap, {"GB": forecast}, T0)
    assert default.assignments["a"].start == T0 + 2 * H
    patient = plan_fleet([job("a", latest_h=3)], cap, {"GB": forecast}, T0, wait_gain_percent=10)
    assert patient.assignments["a"].start == T0
    worth_it = plan_fleet([job("a", latest_h=8)], cap, {"GB": forecast}, T0, wait_gain_percent=10)
    # The earliest start within 10 % of the baseline (30 g) of the best 100 g: 05:40, where the run's
    # mean falls through 130 g (continuous time: not the next grid step).
    assert worth_it.assignments["a"].start == T0 + timedelta(hours=5, minutes=40)
    assert worth_it.assignments["a"].expected_g_per_kwh == pytest.approx(130.0, abs=0.01)


def test_when_not_all_due_jobs_fit_the_fewest_deadlines_are_missed() -> None:
    big = FleetJob("big", 8, 2 * H, T0, ["GB"], arrival=T0 - 2 * H)
    small = [FleetJob(f"small{i}", 4, 2 * H, T0, ["GB"], arrival=T0 - H) for i in range(2)]
    plan = plan_fleet([big, *small], Capacity.constant({"GB": 8}), {"GB": GB}, T0)
    late = sorted(k for k, a in plan.assignments.items() if a.late_by > timedelta(0))
    assert late == ["big"]
    assert plan.assignments["big"].start == T0 + 2 * H


def test_the_job_with_the_most_co2e_at_stake_claims_the_clean_zone() -> None:
    # FR holds one 8-GPU job at a time. The small early-deadline job would take it first in
    # earliest-deadline order; the 16x bigger job has far more to lose in GB, so it goes first.
    small = FleetJob("small", 8, 3 * H, T0 + 2 * H, ["GB", "FR"], arrival=T0)
    big = FleetJob("big", 8, 16 * H, T0 + 2 * H + timedelta(minutes=15), ["GB", "FR"], arrival=T0 + H)
    cap = Capacity.constant({"GB": 8, "FR": 8})
    plan = plan_fleet([small, big], cap, {"GB": series(*[300] * 48), "FR": FR}, T0)
    assert plan.assignments["big"].zone == "FR"
    assert plan.assignments["small"].zone == "GB"
    assert_within_capacity(plan, [small, big], cap)


def test_the_grid_follows_forecasts_whose_points_are_off_the_epoch_grid() -> None:
    # A 10 s forecast whose points sit 3 s past multiples of 10 s: clean from +30 s to +60 s. The clean
    # interval must be one whole step, so a 20 s job starts right when it begins, not 7 s later.
    now = datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC)
    s = timedelta(seconds=10)
    fr = IntensitySeries.from_points([(now + k * s, 40.0 if 3 <= k < 6 else 250.0) for k in range(-3, 30)])
    j = FleetJob(id="j", gpus=1, duration=2 * s, latest_start=now + 18 * s, zones=["FR"], arrival=now)
    plan = plan_fleet([j], Capacity({"FR": 8}), {"FR": fr}, now, step=s)
    a = plan.assignments["j"]
    assert a.start == now + 3 * s and a.expected_g_per_kwh == pytest.approx(40.0)
