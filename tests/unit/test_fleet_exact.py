"""The fleet planner against exact answers: brute force (least lateness) and a MILP (least CO2e).

Small instances in whole minutes (tests/unit/fleet_oracle.py): herds that overflow a clean window,
jobs shorter and longer than a forecast step, ties, due jobs among running jobs' reservations; and
hypothesis properties: never over capacity, never late where a schedule that keeps every deadline
exists, and no job waits for nothing.
"""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenjobs.carbon.series import IntensitySeries, to_epoch
from greenjobs.planning import fleet
from greenjobs.planning.capacity import Capacity
from greenjobs.planning.decisions import with_start_latency
from greenjobs.planning.fleet import FleetJob, FleetPlan, plan_fleet
from greenjobs.planning.profile import Scorer
from tests.unit.fleet_checks import assert_within_capacity
from tests.unit.fleet_oracle import Run, fifo_co2, least_lateness, milp_fewest_late, milp_least_co2

T0 = datetime(2026, 3, 5, 12, tzinfo=UTC)
M = timedelta(minutes=1)


def forecast(per_minute: Sequence[float]) -> IntensitySeries:
    return IntensitySeries.from_points(
        [(T0 + k * M, v) for k, v in enumerate(per_minute)], end=T0 + len(per_minute) * M
    )


def capacity(rows: Mapping[str, Sequence[int]]) -> Capacity:
    """Per-minute free GPUs (non-decreasing: running jobs end) as the planner's Capacity."""
    releases = {
        z: [(T0.timestamp() + m * 60, row[m] - row[m - 1]) for m in range(1, len(row)) if row[m] != row[m - 1]]
        for z, row in rows.items()
    }
    return Capacity(base={z: row[0] for z, row in rows.items()}, releases=releases)


def fleet_jobs(runs: Sequence[Run]) -> list[FleetJob]:
    return [
        FleetJob(
            r.id, r.gpus, r.minutes * M, T0 + r.latest * M, r.zones, arrival=T0, earliest_start=T0 + r.earliest * M
        )
        for r in runs
    ]


def plan(runs: Sequence[Run], rows: Mapping[str, Sequence[int]], intensity: Mapping[str, Sequence[float]]) -> FleetPlan:
    jobs = fleet_jobs(runs)
    cap = capacity(rows)
    result = plan_fleet(jobs, cap, {z: forecast(v) for z, v in intensity.items()}, T0)
    assert not result.unplaced
    assert_within_capacity(result, jobs, cap)
    return result


def co2(result: FleetPlan, runs: Sequence[Run]) -> float:
    """What the plan expects: GPUs x minutes x mean intensity, summed (the MILP's units)."""
    return sum(r.gpus * r.minutes * result.assignments[r.id].expected_g_per_kwh for r in runs)


def share_of_best_saving(
    result: FleetPlan, runs: Sequence[Run], rows: Mapping[str, Sequence[int]], intensity: Mapping[str, Sequence[float]]
) -> float:
    """The plan's CO2e saving against FIFO as a share of the MILP optimum's (1.0 when FIFO is optimal)."""
    best = milp_least_co2(runs, rows, intensity)
    assert best is not None
    fifo = fifo_co2(runs, rows, intensity)
    return 1.0 if fifo - best < 1e-6 else (fifo - co2(result, runs)) / (fifo - best)


def late(result: FleetPlan) -> tuple[int, int]:
    lateness = [a.late_by for a in result.assignments.values()]
    return sum(1 for x in lateness if x > timedelta(0)), round(sum(lateness, timedelta(0)) / M)


def assert_nothing_waits_for_nothing(
    result: FleetPlan, runs: Sequence[Run], rows: Mapping[str, Sequence[int]], intensity: Mapping[str, Sequence[float]]
) -> None:
    """No job could start a minute or more earlier, the others where they are, in a run no dirtier."""
    for r in runs:
        a = result.assignments[r.id]
        start = round((a.start - T0) / M)
        for z in r.zones:
            for s in range(r.earliest, start):
                fits = all(
                    sum(
                        q.gpus
                        for q in runs
                        if q.id != r.id
                        and result.assignments[q.id].zone == z
                        and 0 <= m - (result.assignments[q.id].start - T0) / M < q.minutes
                    )
                    + r.gpus
                    <= rows[z][min(m, len(rows[z]) - 1)]
                    for m in range(s, s + r.minutes)
                )
                mean = sum(intensity[z][s : s + r.minutes]) / r.minutes
                assert not (fits and mean <= a.expected_g_per_kwh + 1e-6), (
                    f"{r.id} waits until minute {start} though it fits at {s} in {z} ({mean:.1f} g/kWh"
                    f" vs {a.expected_g_per_kwh:.1f})"
                )


def test_a_herd_that_overflows_the_clean_minute_keeps_every_deadline_and_the_optimum() -> None:
    # The case: 16 GPUs, ten 8-GPU one-minute jobs, 6 minutes of slack, one clean minute.
    intensity = {"GB": [300] * 3 + [100] + [300] * 56}
    rows = {"GB": [16]}
    runs = [Run(f"j{i}", 8, 1, 0, 6, ("GB",)) for i in range(10)]
    result = plan(runs, rows, intensity)
    assert late(result) == (0, 0)
    assert co2(result, runs) == pytest.approx(milp_least_co2(runs, rows, intensity))
    assert_nothing_waits_for_nothing(result, runs, rows, intensity)
    assert sorted(round((a.start - T0) / M) for a in result.assignments.values()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_jobs_shorter_than_a_forecast_step_share_the_clean_hour() -> None:
    # Hourly forecast, the second hour clean; 8 GPUs; six 8-GPU 10-minute jobs and a 45-minute one.
    intensity = {"GB": [300] * 60 + [100] * 60 + [300] * 60}
    rows = {"GB": [8]}
    runs = [Run(f"s{i}", 8, 10, 0, 110, ("GB",)) for i in range(6)] + [Run("long", 8, 45, 0, 100, ("GB",))]
    result = plan(runs, rows, intensity)
    assert late(result) == (0, 0)
    # The optimum packs the clean hour exactly (the long job at 01:05, a short one straddling 01:00);
    # one job at a time, the planner leaves 5 of its 60 minutes to dirtier starts: 92 % of the saving.
    assert share_of_best_saving(result, runs, rows, intensity) >= 0.9


def test_jobs_longer_than_a_forecast_step_and_tight_deadlines() -> None:
    # Two clean 20-minute steps; 90-minute jobs whose deadlines force two of them before the clean steps.
    intensity = {"GB": [300] * 40 + [100] * 20 + [250] * 20 + [100] * 20 + [300] * 200}
    rows = {"GB": [8]}
    runs = [
        Run("a", 8, 90, 0, 0, ("GB",)),
        Run("b", 4, 90, 0, 120, ("GB",)),
        Run("c", 4, 90, 0, 100, ("GB",)),
        Run("d", 4, 30, 0, 200, ("GB",)),
    ]
    result = plan(runs, rows, intensity)
    assert late(result) == least_lateness(runs, rows) == (0, 0)
    assert co2(result, runs) == pytest.approx(milp_least_co2(runs, rows, intensity))


def test_at_equal_intensity_every_job_starts_as_early_as_it_can() -> None:
    intensity = {"GB": [200] * 300, "FR": [200] * 300}
    rows = {"GB": [8], "FR": [4]}
    runs = [
        Run(f"j{i}", g, d, 0, 200, ("GB", "FR")) for i, (g, d) in enumerate([(4, 30), (8, 20), (4, 50), (2, 5), (4, 7)])
    ]
    result = plan(runs, rows, intensity)
    assert late(result) == (0, 0)
    assert_nothing_waits_for_nothing(result, runs, rows, intensity)


def test_due_jobs_among_reservations_all_start_on_time() -> None:
    # Running jobs free 4 GPUs at minute 10 and 8 more at minute 30; two due jobs must take the first
    # free GPUs, the flexible ones go around them (and to the clean stretch where they fit).
    intensity = {"GB": [300] * 30 + [80] * 30 + [300] * 200}
    rows = {"GB": [4] * 10 + [8] * 20 + [16]}
    runs = [
        Run("due-a", 4, 20, 0, 0, ("GB",)),
        Run("due-b", 4, 15, 0, 10, ("GB",)),
        Run("flex-a", 8, 30, 0, 60, ("GB",)),
        Run("flex-b", 8, 30, 0, 40, ("GB",)),
        Run("flex-c", 4, 10, 0, 90, ("GB",)),
    ]
    result = plan(runs, rows, intensity)
    assert late(result) == least_lateness(runs, rows) == (0, 0)
    assert co2(result, runs) == pytest.approx(milp_least_co2(runs, rows, intensity))


@st.composite
def instances(draw: st.DrawFn) -> tuple[list[Run], dict[str, list[int]], dict[str, list[float]]]:
    zones = draw(st.sampled_from([("GB",), ("GB", "FR")]))
    rows = {}
    for z in zones:
        now_free = draw(st.integers(2, 12))
        extra = draw(st.integers(0, 8))
        at = draw(st.integers(1, 40))
        rows[z] = [now_free] * at + [now_free + extra]
    n = draw(st.integers(1, 5))
    runs = []
    for i in range(n):
        job_zones = draw(st.sampled_from([z for z in [zones, zones[:1], zones[-1:]] if z]))
        top = max(rows[z][-1] for z in job_zones)
        earliest = draw(st.integers(0, 20))
        runs.append(
            Run(
                f"j{i}",
                draw(st.integers(1, top)),
                draw(st.integers(1, 40)),
                earliest,
                earliest + draw(st.integers(0, 60)),
                job_zones,
            )
        )
    intensity = {z: [float(draw(st.sampled_from([100, 200, 300]))) for _ in range(24)] for z in zones}
    # 24 five-minute steps, then flat: enough to cover every run
    minutes = {z: [v for v in values for _ in range(5)] + [values[-1]] * 200 for z, values in intensity.items()}
    return runs, rows, minutes


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
def test_never_over_capacity_and_never_late_where_every_deadline_can_hold(
    case: tuple[list[Run], dict[str, list[int]], dict[str, list[float]]],
) -> None:
    runs, rows, intensity = case
    result = plan(runs, rows, intensity)  # asserts capacity
    got = late(result)
    if got != (0, 0):
        # The MILP over every (zone, start) that keeps each deadline is infeasible exactly when no
        # schedule keeps them all (faster than the brute force on five jobs in two zones).
        assert milp_least_co2(runs, rows, intensity) is None, "late although a schedule keeping every deadline exists"
    assert_nothing_waits_for_nothing(result, runs, rows, intensity)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(1, 12), st.integers(0, 40)), min_size=7, max_size=10))
def test_an_overloaded_zone_misses_the_fewest_deadlines(jobs: list[tuple[int, int]]) -> None:
    # Every job needs the whole zone (one machine), all ready now: past brute force (7-10 jobs), where
    # Moore-Hodgson's rule is exact; the MILP says how few deadlines can be missed.
    runs = [Run(f"j{i}", 8, minutes, 0, latest, ("GB",)) for i, (minutes, latest) in enumerate(jobs)]
    rows = {"GB": [8]}
    result = plan(runs, rows, {"GB": [100.0] * 400})
    assert late(result)[0] == milp_fewest_late(runs, rows, horizon=sum(m for m, _ in jobs))


def test_an_overloaded_batch_is_searched_within_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # 40 jobs of 8 GPUs, one minute of slack each, on 16 GPUs: nearly all late, where the local search
    # would try O(n^2) lists per move; the placements it makes are bounded, and it still finds a
    # list with fewer late jobs than earliest deadline first.
    runs = [Run(f"j{i}", 8, 5 + (7 * i) % 23, 0, 1 + i % 5, ("GB",)) for i in range(40)]
    monkeypatch.setattr(fleet, "EXACT_MAX_JOBS", 0)  # the greedy's search is what is measured here
    placements = 0
    take = fleet._State.take

    def counted(self: fleet._State, *args: object, **kwargs: bool) -> None:
        nonlocal placements
        placements += 1
        take(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fleet._State, "take", counted)
    result = plan(runs, {"GB": [16]}, {"GB": [100.0] * 2000})
    # the deadline-first search within its budget, plus the carbon-first builds, improvement and compaction
    assert placements <= fleet.SEARCH_BUDGET_PLACEMENTS + 20 * len(runs)
    monkeypatch.setattr(fleet, "OTHER_LISTS_MAX_JOBS", 0)
    monkeypatch.setattr(fleet, "LOCAL_SEARCH_MAX_JOBS", 0)
    edf = plan(runs, {"GB": [16]}, {"GB": [100.0] * 2000})
    assert late(result) < late(edf)


def test_without_reservations_a_big_job_listed_first_does_not_hold_back_one_released_before_it() -> None:
    """Per zone: 8 GPUs, 4 of them held until minute 10. B (8 GPUs, 10 min, released at minute 1,
    latest start 3) is listed first but cannot start before minute 10; D (4 GPUs, 20 min, released now,
    latest start 5) fits from now. Listed B then D, the serial schedule reserves B's minutes 10-20 and D,
    overlapping them, waits until 20: both late. Without reservations D starts now and only B is late,
    as it must be. 21 such zones make a batch past the local search (42 jobs): the plan keeps 21 late."""
    m = timedelta(minutes=1)
    zones = [f"Z{i}" for i in range(21)]
    capacity = Capacity(base=dict.fromkeys(zones, 4), releases={z: [(to_epoch(T0 + 10 * m), 4)] for z in zones})
    flat = IntensitySeries.from_points([(T0 + i * 15 * m, 100.0) for i in range(-1, 12)])
    forecasts = dict.fromkeys(zones, flat)
    jobs = []
    for z in zones:
        jobs.append(FleetJob(f"B{z}", 8, 10 * m, T0 + 3 * m, [z], T0, earliest_start=T0 + m))
        jobs.append(FleetJob(f"D{z}", 4, 20 * m, T0 + 5 * m, [z], T0, earliest_start=T0))
    base = fleet._State(capacity, Scorer(forecasts), to_epoch(T0))
    one_zone = [p for p in (fleet._prepare(base, j) for j in jobs[:2]) if not isinstance(p, str)]
    assert fleet._lateness(fleet._serial(base, one_zone), one_zone)[0] == 2
    parallel = fleet._parallel(base, one_zone)
    assert fleet._lateness(parallel, one_zone)[0] == 1
    assert parallel.placed["DZ0"][0].start == to_epoch(T0)
    plan = plan_fleet(jobs, capacity, forecasts, T0)
    assert sum(a.late_by > timedelta(0) for a in plan.assignments.values()) == 21
    assert_within_capacity(plan, jobs, capacity)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(), st.integers(1, 3))
def test_a_start_latency_holds_the_gpus_and_only_the_run_is_scored(
    case: tuple[list[Run], dict[str, list[int]], dict[str, list[float]]], lead: int
) -> None:
    """Every start holds its GPUs for the latency and the run, never over capacity; the intensity the
    plan expects is the forecast's mean over the run alone, [start + latency, start + latency + run)."""
    runs, rows, intensity = case
    jobs = [with_start_latency(job, lead * M) for job in fleet_jobs(runs)]
    cap = capacity(rows)
    result = plan_fleet(jobs, cap, {z: forecast(v) for z, v in intensity.items()}, T0)
    assert not result.unplaced
    assert_within_capacity(result, jobs, cap)
    for r in runs:
        a = result.assignments[r.id]
        assert a.run_time == (lead + r.minutes) * M
        begin = (a.start - T0) / M + lead
        assert a.expected_g_per_kwh == pytest.approx(_mean(intensity[a.zone], begin, begin + r.minutes), rel=1e-6)


def _mean(per_minute: Sequence[float], a: float, b: float) -> float:
    """The mean of a per-minute step function over [a, b) (minutes, not necessarily whole)."""
    total, t = 0.0, a
    while t < b - 1e-9:
        m = int(t + 1e-9)
        edge = min(float(m + 1), b)
        total += per_minute[m] * (edge - t)
        t = edge
    return total / (b - a)


@st.composite
def overloads(draw: st.DrawFn) -> tuple[list[Run], dict[str, list[int]]]:
    """7-12 jobs released over 20 minutes into one or two zones with too little room for all."""
    zones = draw(st.sampled_from([("GB",), ("GB", "FR")]))
    rows = {z: [draw(st.integers(2, 8))] * draw(st.integers(1, 10)) + [draw(st.integers(4, 8))] for z in zones}
    runs = []
    for i in range(draw(st.integers(7, 12))):
        job_zones = draw(st.sampled_from([zones, zones[:1], zones[-1:]]))
        earliest = draw(st.integers(0, 20))
        gpus = draw(st.integers(1, min(rows[z][-1] for z in job_zones)))
        runs.append(
            Run(f"j{i}", gpus, draw(st.integers(1, 15)), earliest, earliest + draw(st.integers(0, 15)), job_zones)
        )
    return runs, rows


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overloads())
def test_the_exact_stage_misses_the_fewest_deadlines_on_its_grid(case: tuple[list[Run], dict[str, list[int]]]) -> None:
    # Past the greedy's exhaustive search (six jobs), in several zones, released over time: on a grid of
    # one minute (the step) the exact stage plans the fewest late jobs the MILP oracle finds.
    runs, rows = case
    jobs, cap = fleet_jobs(runs), capacity(rows)
    flat = {z: forecast([100.0] * 600) for z in rows}
    result = plan_fleet(jobs, cap, flat, T0, step=M, exact_time_limit_s=60)  # exactness, not speed
    assert_within_capacity(result, jobs, cap)
    horizon = max(r.earliest for r in runs) + sum(r.minutes for r in runs) + max(len(row) for row in rows.values())
    assert late(result)[0] == milp_fewest_late(runs, rows, horizon=horizon)
