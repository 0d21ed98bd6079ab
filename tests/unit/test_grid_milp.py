"""planning.grid_milp against brute force: every combination of one start per job, capacity per cell."""

import itertools
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenjobs.planning.grid_milp import Chain, Choice, solve


def cells_used(chains: Sequence[Chain], choice: Sequence[Choice], zones: int, cells: int) -> np.ndarray:
    used = np.zeros((zones, cells))
    for c in choice:
        chain = chains[c.chain]
        at = chain.first + c.offset
        used[chain.zone, at : at + chain.hold] += chain.gpus
    return used


def brute_force(chains: Sequence[Chain], jobs: int, capacity: np.ndarray, left_out: np.ndarray | None) -> float | None:
    """The least total cost over every choice of one start per job (or, with `left_out`, none at that
    cost) that fits every cell, or None."""
    options: list[list[Choice | None]] = [
        [Choice(n, k) for n, c in enumerate(chains) if c.job == j for k in range(len(c.costs))] for j in range(jobs)
    ]
    if left_out is not None:
        for option in options:
            option.append(None)
    cells = max(c.first + len(c.costs) - 1 + c.hold for c in chains)
    cap = np.concatenate([capacity, np.repeat(capacity[:, -1:], max(cells - capacity.shape[1], 0), axis=1)], axis=1)
    best = None
    for choice in itertools.product(*options):
        used = cells_used(chains, [c for c in choice if c is not None], capacity.shape[0], cap.shape[1])
        if (used <= cap).all():
            total = cost_of(chains, choice, left_out)
            best = total if best is None else min(best, total)
    return best


def cost_of(chains: Sequence[Chain], choice: Sequence[Choice | None], left_out: np.ndarray | None) -> float:
    return sum(
        float(chains[c.chain].costs[c.offset]) if c is not None else float(left_out[j])  # type: ignore[index]
        for j, c in enumerate(choice)
    )


Problem = tuple[list[Chain], int, np.ndarray, np.ndarray | None]


@st.composite
def problems(draw: st.DrawFn) -> Problem:
    zones, jobs = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    chains = []
    for j in range(jobs):
        for zone in range(zones):
            for _ in range(draw(st.integers(1 if zone == 0 else 0, 2))):
                starts = draw(st.integers(1, 4))
                costs = np.array([float(draw(st.integers(0, 20))) for _ in range(starts)])
                chains.append(
                    Chain(j, zone, draw(st.integers(1, 3)), draw(st.integers(0, 4)), draw(st.integers(1, 3)), costs)
                )
    width = draw(st.integers(1, 8))
    capacity = np.array([[float(draw(st.integers(0, 4))) for _ in range(width)] for _ in range(zones)])
    left_out = np.array([float(draw(st.integers(0, 30))) for _ in range(jobs)]) if draw(st.booleans()) else None
    return chains, jobs, capacity, left_out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_the_program_finds_the_least_cost_start_of_every_job_that_fits(problem: Problem) -> None:
    chains, jobs, capacity, left_out = problem
    expected = brute_force(chains, jobs, capacity, left_out)
    got = solve(chains, jobs, capacity, time_limit_s=10.0, left_out=left_out)
    if expected is None:
        assert got is None
        return
    assert got is not None, "a schedule fits, the program found none"
    assert len(got) == jobs
    assert all(c is None or chains[c.chain].job == j for j, c in enumerate(got))
    assert left_out is not None or None not in got
    cells = max(c.first + len(c.costs) - 1 + c.hold for c in chains)
    used = cells_used(chains, [c for c in got if c is not None], capacity.shape[0], cells)
    cap = np.concatenate([capacity, np.repeat(capacity[:, -1:], max(cells - capacity.shape[1], 0), axis=1)], axis=1)
    assert (used <= cap[:, : used.shape[1]]).all()
    assert cost_of(chains, got, left_out) == pytest.approx(expected, abs=1e-6)


def test_a_long_hold_in_a_chain_blocks_every_cell_it_spans() -> None:
    # One zone of 1 GPU; job 0 must take cells 2-5 (its only start); job 1 may start at 0-5 holding 2
    # cells, cheapest late: it must go to cells 0-1 or 6-7, and 6 is past its chain, so 0.
    chains = [Chain(0, 0, 1, 2, 4, np.array([0.0])), Chain(1, 0, 1, 0, 2, np.array([5.0, 4, 3, 2, 1, 0]))]
    got = solve(chains, 2, np.array([[1.0] * 8]), time_limit_s=5.0)
    assert got is not None
    assert [(chains[c.chain].job, chains[c.chain].first + c.offset) for c in got if c] == [(0, 2), (1, 0)]


def test_no_room_for_every_job_is_none() -> None:
    chains = [Chain(j, 0, 2, 0, 3, np.array([1.0, 2.0])) for j in range(2)]
    assert solve(chains, 2, np.array([[3.0] * 6]), time_limit_s=5.0) is None


def test_a_chain_must_have_a_start_and_a_hold() -> None:
    with pytest.raises(ValueError, match="hold"):
        Chain(0, 0, 1, 0, 0, np.array([1.0]))
    with pytest.raises(ValueError, match="every job"):
        solve([Chain(0, 0, 1, 0, 1, np.array([1.0]))], 2, np.array([[1.0]]), time_limit_s=1.0)


def test_the_solver_writes_nothing_to_the_operators_output(capfd: pytest.CaptureFixture[str]) -> None:
    # HiGHS's banner and logs would land in the operator's log stream, between its JSON lines.
    assert solve([Chain(0, 0, 1, 0, 2, np.array([1.0, 0.5]))], 1, np.array([[1.0] * 4]), time_limit_s=1.0)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
