"""The fleet planner's exact stage: deadlines of a small batch, as one time-indexed program (HiGHS).

The greedy constructions of planning.fleet place one job at a time and, past six jobs, search the
deadline-first orders only in part: where they leave a job late, this stage solves the batch at once
on the grid of the planning step (planning.grid_milp) for the fewest late jobs, then the least
lateness, then the earliest starts. Carbon is left to the greedy's improvement pass, which moves a job
to a cleaner start only where no deadline is lost: replayed on real clusters (bench/exact_stage.py),
a program that also traded CO2e deferred more work to its latest start and missed more deadlines later.

A start is a grid instant in [earliest, hi], the job's earliest start or its start in the greedy plan
(hi is the greedy plan's last start, or the job's latest if later), or none: a job left out is late
and placed after the others, at its earliest feasible start (the fewest late jobs stay exact: a late
job can always wait for the on-time ones). The grid holds each run for every cell it touches, against
the fewest GPUs free at any instant of the cell: a solution is feasible in continuous time too.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from greenjobs.carbon.series import FloatArray

from .grid_milp import Chain, solve
from .profile import FreeProfile

LATE_WEIGHT_PER_JOB = 10.0  # x jobs: one more late job outweighs every other term together
LATENESS_WEIGHT = 2.0  # per job, at the longest lateness of the batch
TIE_WEIGHT = 1e-3  # the earlier starts, in all: below a lateness difference that matters
ON_GRID_S = 1e-3


@dataclass(frozen=True)
class ExactJob:
    gpus: int
    run: float  # seconds its GPUs are held
    earliest: float  # epoch seconds
    latest: float  # the last on-time start
    hi: float  # the last start to consider (>= latest)
    planned: float  # its start in the greedy plan
    zones: tuple[int, ...]  # indices into the profiles


class ExactProblem:
    """The batch's program on the grid: its size, before it is built, and its solution."""

    def __init__(self, jobs: Sequence[ExactJob], profiles: Sequence[FreeProfile], now: float, step_s: float) -> None:
        if not jobs:
            raise ValueError("an exact problem needs a job")
        self.jobs, self.profiles, self.now, self.step_s = jobs, profiles, now, step_s
        self.g0 = math.floor(now / step_s) * step_s
        self.candidates = [_starts(j, self.g0, step_s) for j in jobs]
        self.starts = sum(len(j.zones) * (len(g) + len(o)) for j, (g, o) in zip(jobs, self.candidates, strict=True))
        self.cells = max(_cell(j.hi, self.g0, step_s) + _hold(j.hi, j.run, self.g0, step_s) for j in jobs)
        # The cost's scales: the longest lateness a start may have, and how far the last start is.
        self.span = max(*(j.hi - j.latest for j in jobs), step_s)
        self.horizon = max(max(j.hi for j in jobs) - now, step_s)
        self.late_weight = LATE_WEIGHT_PER_JOB * (len(jobs) + 1)

    def costs(self, job: ExactJob, starts: FloatArray) -> FloatArray:
        """Late, then lateness, then the later start."""
        return (
            self.late_weight * (starts > job.latest + ON_GRID_S)
            + LATENESS_WEIGHT * np.maximum(starts - job.latest, 0.0) / self.span
            + TIE_WEIGHT / len(self.jobs) * (starts - self.now) / self.horizon
        )

    def solve(self, time_limit_s: float) -> list[tuple[int, float] | None] | None:
        """A (zone, start) per job, or None for a job left out (late past `hi`: the caller places it
        after the others); None where the solver found nothing within its time limit. Leaving a job
        out costs a late job and more lateness than any start up to `hi`, so the fewest late jobs are
        exact whatever `hi` is: a late job can always wait for the others."""
        g0, step_s = self.g0, self.step_s
        chains: list[Chain] = []
        starts: list[tuple[int, FloatArray]] = []  # per chain: its zone and its starts
        for n, (job, (grid, singles)) in enumerate(zip(self.jobs, self.candidates, strict=True)):
            cost = self.costs(job, np.concatenate((grid, singles)))
            for zone in job.zones:
                if len(grid):
                    hold = _hold(grid[0], job.run, g0, step_s)
                    chains.append(Chain(n, zone, job.gpus, _cell(grid[0], g0, step_s), hold, cost[: len(grid)]))
                    starts.append((zone, grid))
                for k, s in enumerate(singles.tolist()):
                    hold = _hold(s, job.run, g0, step_s)
                    at = len(grid) + k
                    chains.append(Chain(n, zone, job.gpus, _cell(s, g0, step_s), hold, cost[at : at + 1]))
                    starts.append((zone, singles[k : k + 1]))
        capacity = np.stack([_cell_minimum(p, g0, step_s, self.cells) for p in self.profiles])
        left_out = np.full(len(self.jobs), self.late_weight + 2 * LATENESS_WEIGHT + TIE_WEIGHT)
        chosen = solve(chains, len(self.jobs), capacity, time_limit_s=time_limit_s, left_out=left_out)
        if chosen is None:
            return None
        return [None if c is None else (starts[c.chain][0], float(starts[c.chain][1][c.offset])) for c in chosen]


def _cell(t: float, g0: float, step_s: float) -> int:
    return math.floor((t - g0) / step_s + ON_GRID_S / step_s)


def _hold(start: float, run: float, g0: float, step_s: float) -> int:
    """Cells a run touches: from the one it starts in to the one it ends in."""
    return max(math.ceil((start + run - g0) / step_s - ON_GRID_S / step_s) - _cell(start, g0, step_s), 1)


def _starts(job: ExactJob, g0: float, step_s: float) -> tuple[FloatArray, FloatArray]:
    """The grid instants in [earliest, hi], and the off-grid starts: its earliest, its greedy start."""
    first = math.ceil((job.earliest - g0) / step_s - ON_GRID_S / step_s)
    last = math.floor((job.hi - g0) / step_s + ON_GRID_S / step_s)
    grid = g0 + step_s * np.arange(first, last + 1, dtype=np.float64)
    off = [s for s in dict.fromkeys([job.earliest, job.planned]) if not np.any(np.abs(grid - s) <= ON_GRID_S)]
    return grid, np.array(off, dtype=np.float64)


def _cell_minimum(profile: FreeProfile, g0: float, step_s: float, cells: int) -> FloatArray:
    """The fewest GPUs free at any instant of each cell."""
    edges = g0 + step_s * np.arange(cells, dtype=np.float64)
    times, free = profile.times, profile.free
    out = free[np.maximum(np.searchsorted(times, edges, side="right") - 1, 0)].astype(np.float64)
    inside = times[(times > g0) & (times < g0 + step_s * cells)]
    cell = np.floor((inside - g0) / step_s).astype(np.int64)
    np.minimum.at(out, cell, free[np.searchsorted(times, inside, side="right") - 1].astype(np.float64))
    return out
