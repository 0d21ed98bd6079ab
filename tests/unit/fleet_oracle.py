"""Exact answers for small fleet-planning instances, written independently of the planner.

- `least_lateness`: brute force over every job order (and zone choice), each job at its earliest
  feasible start in turn (serial schedule generation). The earliest-start schedules of all orders
  include one with the least lateness (they are the active schedules; lateness is a regular measure),
  so the minimum found is exact.
- `milp_fewest_late`: the same MILP's columns, the fewest late jobs (for batches past brute force).
- `milp_least_co2`: a time-indexed MILP through HiGHS (scipy.optimize.milp) on a one-minute grid: the
  least expected CO2e with every deadline held, or None when no such schedule exists on the grid.

Instances are single-zone or multi-zone, in whole minutes from `t0`, so the grid loses nothing.
"""

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix


@dataclass(frozen=True)
class Run:
    """One job in whole minutes from t0: may start in [earliest, latest] (later is late)."""

    id: str
    gpus: int
    minutes: int
    earliest: int
    latest: int
    zones: tuple[str, ...]


Capacity = Mapping[str, Sequence[int]]  # zone -> free GPUs in each minute from t0 (the last value holds on)


def free(cap: Capacity, zone: str, minute: int) -> int:
    row = cap[zone]
    return row[min(minute, len(row) - 1)]


def _earliest_fit(cap: Capacity, used: Mapping[str, list[int]], run: Run, zone: str) -> int:
    """The earliest whole minute >= run.earliest where the run fits beside what `used` (GPUs in use
    per zone and minute) holds."""
    start = run.earliest
    while True:
        clash = next(
            (
                m
                for m in range(start, start + run.minutes)
                if (used[zone][m] if m < len(used[zone]) else 0) + run.gpus > free(cap, zone, m)
            ),
            None,
        )
        if clash is None:
            return start
        start = clash + 1


def _use(used: dict[str, list[int]], zone: str, start: int, run: Run) -> None:
    row = used.setdefault(zone, [])
    if len(row) < start + run.minutes:
        row.extend([0] * (start + run.minutes - len(row)))
    for m in range(start, start + run.minutes):
        row[m] += run.gpus


def least_lateness(runs: Sequence[Run], cap: Capacity) -> tuple[int, int]:
    """(fewest late jobs, least total lateness in minutes) over every order and zone choice: every
    active schedule is some order's earliest-fit list schedule, and lateness is a regular measure."""
    best: tuple[float, float] = (len(runs) + 1, math.inf)
    for order in itertools.permutations(runs):
        for zones in itertools.product(*(r.zones for r in order)):
            used: dict[str, list[int]] = {z: [] for z in cap}
            late = total = 0
            for run, zone in zip(order, zones, strict=True):
                s = _earliest_fit(cap, used, run, zone)
                _use(used, zone, s, run)
                late += s > run.latest
                total += max(s - run.latest, 0)
            best = min(best, (late, total))
            if best == (0, 0):
                return 0, 0
    return int(best[0]), int(best[1])


def milp_least_co2(runs: Sequence[Run], cap: Capacity, intensity: Mapping[str, Sequence[float]]) -> float | None:
    """The least sum over jobs of gpus x (sum of per-minute intensity over the run), deadlines held."""
    columns: list[tuple[int, str, int]] = []  # (job index, zone, start)
    cost: list[float] = []
    for j, run in enumerate(runs):
        for zone in run.zones:
            for s in range(run.earliest, run.latest + 1):
                columns.append((j, zone, s))
                cost.append(run.gpus * float(sum(intensity[zone][s : s + run.minutes])))
    result = _milp(runs, cap, columns, np.array(cost), max(r.latest + r.minutes for r in runs))
    return float(result.fun) if result.status == 0 else None


def milp_fewest_late(runs: Sequence[Run], cap: Capacity, horizon: int) -> int:
    """The fewest late jobs over every schedule that starts each job in [earliest, horizon), each
    start a column, a job late when its column starts past its latest start."""
    columns = [(j, zone, s) for j, run in enumerate(runs) for zone in run.zones for s in range(run.earliest, horizon)]
    cost = np.array([float(s > runs[j].latest) for j, _, s in columns])
    result = _milp(runs, cap, columns, cost, horizon + max(r.minutes for r in runs))
    assert result.status == 0, "the horizon holds every job"
    return round(result.fun)


def _milp(
    runs: Sequence[Run], cap: Capacity, columns: Sequence[tuple[int, str, int]], cost: np.ndarray, end: int
) -> Any:
    """Each job exactly one of its (zone, start) columns; each zone's GPUs in use within its free ones
    every minute up to `end`."""
    zones = sorted({z for r in runs for z in r.zones})
    rows = len(runs) + len(zones) * end
    a = lil_matrix((rows, len(columns)))
    lower = np.zeros(rows)
    upper = np.zeros(rows)
    for k, (j, zone, s) in enumerate(columns):
        a[j, k] = 1
        zi = zones.index(zone)
        for m in range(s, s + runs[j].minutes):
            a[len(runs) + zi * end + m, k] = runs[j].gpus
    lower[: len(runs)] = upper[: len(runs)] = 1
    for zi, zone in enumerate(zones):
        for m in range(end):
            upper[len(runs) + zi * end + m] = free(cap, zone, m)
    ones = np.ones(len(columns))
    return milp(c=cost, constraints=LinearConstraint(a.tocsr(), lower, upper), integrality=ones, bounds=Bounds(0, 1))


def fifo_co2(runs: Sequence[Run], cap: Capacity, intensity: Mapping[str, Sequence[float]]) -> float:
    """Carbon-agnostic FIFO: in list order, each job at its earliest feasible start (earliest zone)."""
    used: dict[str, list[int]] = {z: [] for z in cap}
    total = 0.0
    for run in runs:
        start, zone = min((_earliest_fit(cap, used, run, z), i, z) for i, z in enumerate(run.zones))[::2]
        _use(used, zone, start, run)
        total += run.gpus * float(sum(intensity[zone][start : start + run.minutes]))
    return total
