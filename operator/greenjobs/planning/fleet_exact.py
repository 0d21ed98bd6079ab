"""The fleet planner's exact stage: a small batch planned again as one time-indexed program (HiGHS).

The greedy constructions of planning.fleet place one job at a time; on a batch small enough this
stage solves the whole batch at once on the grid of the planning step (planning.grid_milp), with the
same order of concerns: fewest late jobs, then least lateness, then least expected CO2e, then the
earliest starts. A start is a grid instant in the job's window, its earliest start, or its present
plan (kept at a discount of `keep_percent`, as the greedy keeps a plan unless the gain is meaningful);
a start within a job's `slack` of its cleanest counts as clean as it, so the earliest of them wins (the
greedy's online rules: planning.fleet._slack).
A late job may start up to `hi` (where the greedy plan put it: that plan, on the grid, stays possible).

The grid holds each run for every cell it touches, against the fewest GPUs free at any instant of the
cell: a solution is feasible in continuous time too. planning.fleet keeps it only where it beats the
greedy plan on the planner's own measure (fleet._State.quality), exact in continuous time.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from greenjobs.carbon.series import FloatArray

from .grid_milp import Chain, solve
from .profile import FreeProfile

LATE_WEIGHT_PER_JOB = 10.0  # x jobs: one more late job outweighs every other term together
LATENESS_WEIGHT = 2.0  # per job, at the longest lateness of the batch
TIE_WEIGHT = 1e-4  # the earlier start, in all: below any CO2e difference that matters
ON_GRID_S = 1e-3


@dataclass(frozen=True)
class ExactJob:
    gpus: int
    run: float  # seconds its GPUs are held
    earliest: float  # epoch seconds
    latest: float  # the last on-time start
    hi: float  # the last start to consider (>= latest)
    planned: float  # its start in the greedy plan (a candidate too: that plan is a solution)
    zones: tuple[int, ...]  # indices into the profiles
    current: tuple[int, float] | None  # (zone, start) of its present plan, if still in its window
    slack: float = 0.0  # g/kWh: a start this close to its cleanest counts as clean as it (fleet._slack)


Score = Callable[[int, int, FloatArray], FloatArray]  # (job, zone, starts) -> mean g/kWh (inf: not scored)


class ExactProblem:
    """The batch's costs (any start, on the grid or not) and its program on the grid."""

    def __init__(
        self,
        jobs: Sequence[ExactJob],
        profiles: Sequence[FreeProfile],
        now: float,
        step_s: float,
        score: Score,
        *,
        keep_percent: float,
    ) -> None:
        if not jobs:
            raise ValueError("an exact problem needs a job")
        self.jobs, self.profiles, self.now, self.step_s = jobs, profiles, now, step_s
        self.score, self.keep = score, keep_percent / 100.0
        self.g0 = math.floor(now / step_s) * step_s
        self.span = max(*(j.hi - j.latest for j in jobs), step_s)
        self.horizon = max(max(j.hi for j in jobs) - now, step_s)
        self.late_weight = LATE_WEIGHT_PER_JOB * (len(jobs) + 1)
        self.candidates = [_starts(j, self.g0, step_s) for j in jobs]
        self.starts = sum(len(j.zones) * (len(g) + len(o)) for j, (g, o) in zip(jobs, self.candidates, strict=True))
        # Per job: its cleanest mean over its candidates, and its dirtiest CO2e (what a start the
        # forecast does not score costs); the scale makes the whole batch's CO2e at most 1.
        self.best: list[float] = []
        self.worst: list[float] = []
        for n, (job, (grid, singles)) in enumerate(zip(jobs, self.candidates, strict=True)):
            means = np.concatenate([score(n, z, np.concatenate((grid, singles))) for z in job.zones])
            finite = means[np.isfinite(means)]
            self.best.append(float(finite.min()) if len(finite) else math.inf)
            self.worst.append(job.gpus * job.run * max(float(finite.max()) if len(finite) else 0.0, 0.0))
        self.scale = sum(self.worst) or 1.0

    def costs(self, n: int, zone: int, starts: FloatArray) -> FloatArray:
        """Job n's cost at each start in `zone`: late, then lateness, then CO2e, then the later start."""
        job = self.jobs[n]
        means = self.score(n, zone, starts)
        if job.slack > 0:  # within the slack of the cleanest the earliest wins (the tie), as in the greedy
            means = np.where(means <= self.best[n] + job.slack, self.best[n], means)
        co2 = np.where(np.isfinite(means), job.gpus * job.run * means, self.worst[n]) / self.scale
        if job.current is not None and job.current[0] == zone:
            co2 = np.where(np.abs(starts - job.current[1]) <= ON_GRID_S, co2 * (1 - self.keep), co2)
        past = np.maximum(starts - job.latest, 0.0)
        cost = (
            co2 + LATENESS_WEIGHT * past / self.span + TIE_WEIGHT / len(self.jobs) * (starts - self.now) / self.horizon
        )
        return cost + self.late_weight * (starts > job.latest + ON_GRID_S)

    def total(self, plan: Sequence[tuple[int, float]]) -> float:
        """The cost of a (zone, start) per job, as the program counts it."""
        return sum(float(self.costs(n, z, np.array([s]))[0]) for n, (z, s) in enumerate(plan))

    def solve(self, time_limit_s: float) -> list[tuple[int, float]] | None:
        """A (zone, start) per job, or None where the solver found no schedule within its time limit."""
        g0, step_s = self.g0, self.step_s
        chains: list[Chain] = []
        starts: list[tuple[int, FloatArray]] = []  # per chain: its zone and its starts
        for n, (job, (grid, singles)) in enumerate(zip(self.jobs, self.candidates, strict=True)):
            for zone in job.zones:
                cost = self.costs(n, zone, np.concatenate((grid, singles)))
                if len(grid):
                    hold = _hold(grid[0], job.run, g0, step_s)
                    chains.append(Chain(n, zone, job.gpus, _cell(grid[0], g0, step_s), hold, cost[: len(grid)]))
                    starts.append((zone, grid))
                for k, s in enumerate(singles.tolist()):
                    at = len(grid) + k
                    hold = _hold(s, job.run, g0, step_s)
                    chains.append(Chain(n, zone, job.gpus, _cell(s, g0, step_s), hold, cost[at : at + 1]))
                    starts.append((zone, singles[k : k + 1]))
        cells = max(c.first + len(c.costs) - 1 + c.hold for c in chains)
        capacity = np.stack([_cell_minimum(p, g0, step_s, cells) for p in self.profiles])
        chosen = solve(chains, len(self.jobs), capacity, time_limit_s=time_limit_s)
        if chosen is None:
            return None
        return [(starts[c.chain][0], float(starts[c.chain][1][c.offset])) for c in chosen]


def _cell(t: float, g0: float, step_s: float) -> int:
    return math.floor((t - g0) / step_s + ON_GRID_S / step_s)


def _hold(start: float, run: float, g0: float, step_s: float) -> int:
    """Cells a run touches: from the one it starts in to the one it ends in."""
    return max(math.ceil((start + run - g0) / step_s - ON_GRID_S / step_s) - _cell(start, g0, step_s), 1)


def _starts(job: ExactJob, g0: float, step_s: float) -> tuple[FloatArray, FloatArray]:
    """The grid instants in [earliest, hi], and the off-grid starts: its earliest, its start in the
    greedy plan and its present plan."""
    first = math.ceil((job.earliest - g0) / step_s - ON_GRID_S / step_s)
    last = math.floor((job.hi - g0) / step_s + ON_GRID_S / step_s)
    grid = g0 + step_s * np.arange(first, last + 1, dtype=np.float64)
    singles = [job.earliest, job.planned]
    if job.current is not None:
        singles.append(job.current[1])
    off = [s for s in dict.fromkeys(singles) if not np.any(np.abs(grid - s) <= ON_GRID_S)]
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
