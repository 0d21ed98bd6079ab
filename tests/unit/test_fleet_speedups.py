"""The fleet planner's shortcuts for big batches give exactly what the plain searches give.

The list walk of FreeProfile.earliest_fit against its vectorised search; longest_room against brute
force; search floors never past the earliest start; and whole plans with the shortcuts (search floors
and cut-short searches, compaction certificates) on and off.
"""

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenjobs.carbon.series import IntensitySeries
from greenjobs.planning import fleet
from greenjobs.planning.capacity import Capacity
from greenjobs.planning.fleet import FleetJob, plan_fleet
from greenjobs.planning.profile import FreeProfile
from tests.unit.fleet_checks import assert_within_capacity

T0 = datetime(2026, 3, 5, tzinfo=UTC)


@st.composite
def profiles(draw: st.DrawFn) -> FreeProfile:
    """Up to 1,500 steps (past both list pieces the walk reads) of 0-8 free GPUs, 8 for ever after."""
    n = draw(st.integers(1, 1500))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    times = np.cumsum(np.concatenate(([0.0], rng.integers(1, 5, n - 1) * 60.0)))
    free = rng.integers(0, 9, n)
    free[-1] = 8
    return FreeProfile(times, free.astype(np.int64))


@settings(max_examples=150, deadline=None)
@given(profiles(), st.integers(0, 6000), st.integers(1, 400), st.integers(0, 8), st.integers(-1, 6000))
def test_the_walk_finds_what_the_vectorised_search_finds(
    prof: FreeProfile, after_min: int, run_min: int, gpus: int, give_up_min: int
) -> None:
    after, run = after_min * 60.0, run_min * 60.0
    exact = prof._earliest_fit(after, run, gpus)
    assert prof.earliest_fit(after, run, gpus) == exact
    give_up = give_up_min * 60.0
    got = prof.earliest_fit(after, run, gpus, give_up)
    if exact <= give_up:
        assert got == exact
    else:  # a bound: past give_up, and nothing fits before it
        assert give_up < got <= exact


@settings(max_examples=150, deadline=None)
@given(profiles(), st.integers(0, 3000), st.integers(0, 600), st.integers(1, 400), st.integers(1, 8))
def test_no_run_overlapping_a_stretch_lasts_longer_than_its_longest_room(
    prof: FreeProfile, lo_min: int, span_min: int, run_min: int, gpus: int
) -> None:
    lo, hi, run = lo_min * 60.0, (lo_min + span_min) * 60.0, run_min * 60.0
    starts = np.arange(lo, hi + 1, 30.0)  # every half minute: the breakpoints are whole minutes
    if prof.fits(starts, run, gpus).any():
        assert prof.longest_room(lo, hi + run, gpus) >= run - 1e-3


def forecast(seed: int) -> IntensitySeries:
    rng = random.Random(seed)
    values = [rng.choice([100.0, 150.0, 200.0, 300.0]) for _ in range(4 * 24 * 3)]
    return IntensitySeries.from_points(
        [(T0 + k * timedelta(minutes=15), v) for k, v in enumerate(values)], end=T0 + timedelta(days=3)
    )


def batch(seed: int, n: int) -> list[FleetJob]:
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        earliest = T0 + timedelta(minutes=rng.randrange(0, 24 * 60, 7)) if rng.random() < 0.2 else None
        zones = rng.choice([("GB", "FR"), ("FR", "GB"), ("GB",), ("FR",)])
        jobs.append(
            FleetJob(
                f"j{i}",
                rng.choice([1, 2, 4, 8]),
                timedelta(minutes=rng.randrange(20, 16 * 60)),
                T0 + timedelta(minutes=rng.randrange(0, 36 * 60)),
                zones,
                arrival=T0,
                priority=rng.randint(0, 1),
                earliest_start=earliest,
                flexible=rng.random() > 0.1,
            )
        )
    return jobs


# Past LOCAL_SEARCH_MAX_JOBS, on a full queue (most jobs late), where the shortcuts do their work; the
# last two also move a job in the compaction (which is what ends a certificate).
@pytest.mark.parametrize(("seed", "n", "gpus"), [(1, 120, (16, 12)), (27, 120, (16, 12)), (3, 200, (8, 8))])
def test_plans_are_the_same_without_the_shortcuts(
    seed: int, n: int, gpus: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = batch(seed, n)
    cap = Capacity.constant({"GB": gpus[0], "FR": gpus[1]})
    forecasts = {"GB": forecast(seed), "FR": forecast(seed + 100)}
    # The greedy's shortcuts, without the exact stage (its time limit would make the two plans differ
    # with the machine's load, not with the shortcuts).
    fast = plan_fleet(jobs, cap, forecasts, T0, exact_time_limit_s=0)
    assert_within_capacity(fast, jobs, cap)
    first_fit = fleet._State.first_fit
    monkeypatch.setattr(fleet._State, "floor", lambda self, zone, pj: pj.earliest)
    monkeypatch.setattr(
        fleet._State, "first_fit", lambda self, zone, pj, floor, give_up=0: first_fit(self, zone, pj, floor)
    )
    monkeypatch.setattr(fleet, "_still_certified", lambda state, pj, present: False)
    monkeypatch.setattr(fleet, "_still_earliest", lambda state, pj, present: False)
    plain = plan_fleet(jobs, cap, forecasts, T0, exact_time_limit_s=0)
    assert fast.assignments == plain.assignments
    assert fast.unplaced == plain.unplaced


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_search_floors_are_never_past_the_earliest_start(seed: int) -> None:
    # One zone filled a run at a time; between placements, jobs of every size and nearly every run
    # length are asked for (most not placed): each floor is at most the exact earliest start.
    rng = random.Random(seed)
    state = fleet._State(Capacity.constant({"GB": 8}), fleet.Scorer({"GB": forecast(seed)}), T0.timestamp())
    for i in range(1500):
        job = FleetJob(f"j{i}", rng.randint(1, 8), timedelta(seconds=rng.randrange(600, 7200)), T0, ("GB",), T0)
        pj = fleet._prepare(state, job)
        assert isinstance(pj, fleet._Job)
        exact = state.profile("GB")._earliest_fit(pj.earliest, pj.run, pj.gpus)
        floor = state.floor("GB", pj)
        assert floor <= exact
        assert state.first_fit("GB", pj, floor) == exact
        if rng.random() < 0.3:
            state.take(pj, fleet._Option("GB", exact, 0.0))
