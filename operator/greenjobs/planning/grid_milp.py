"""An exact time-indexed schedule of a small batch: one start per job, capacity per zone and grid cell.

Pure: the fleet planner builds the candidates (planning.fleet_exact) and solves them here with HiGHS's
branch and bound (through highspy: a few MB, where scipy would add a hundred to the images). Time is cut
into cells of one grid step; a start holds its GPUs in every cell its run touches, so a solution is
feasible in continuous time too (never over capacity).

A job's candidate starts come as chains: consecutive cells `first, first + 1, ...`, every start holding
the same number of cells (runs started on the grid), or a single start (off the grid: the job's
earliest, its start in the greedy plan). A chain is written with cumulative variables, C[i] = x[first] + ... +
x[first + i], non-decreasing in [0, 1], so that the job holds cell first + k as C[min(k, m - 1)] -
C[k - hold]: O(starts + hold) non-zeros per chain, where a variable per start and cell would need
O(starts x hold) (a multi-day run holds hundreds of cells).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import highspy
import numpy as np
import numpy.typing as npt

# highspy.Highs is this solver plus Python callbacks, and its constructor prints a banner to stdout (the
# operator's log stream) before any option can silence it; the core class prints nothing.
from highspy._core import _Highs

from greenjobs.carbon.series import FloatArray

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Chain:
    job: int  # index of the job the starts belong to
    zone: int  # row of `capacity`
    gpus: int
    first: int  # cell of the first start
    hold: int  # cells each start holds, its own first
    costs: FloatArray  # one per start: cells first, first + 1, ...

    def __post_init__(self) -> None:
        if self.hold < 1 or len(self.costs) < 1 or self.first < 0 or self.gpus < 0:
            raise ValueError("a chain needs a start, a hold of a cell or more, a first cell >= 0 and GPUs >= 0")


@dataclass(frozen=True)
class Choice:
    chain: int  # index into the chains
    offset: int  # the start: cell chains[chain].first + offset


def solve(
    chains: Sequence[Chain],
    jobs: int,
    capacity: FloatArray,
    *,
    time_limit_s: float,
    left_out: FloatArray | None = None,
) -> list[Choice | None] | None:
    """The least-cost start of each of `jobs` jobs (one chain start each) with every zone's GPUs in each
    cell within `capacity[zone, cell]` (cells past its end: its last column); with `left_out`, job j
    may instead start none of its chains at cost left_out[j] (its entry None). None when HiGHS proves
    there is no solution, or finds none within the time limit. Optimal to a relative gap of 1e-6,
    unless the time limit cut the search short (then the best solution found)."""
    if not chains or {c.job for c in chains} != set(range(jobs)):
        raise ValueError("every job needs at least one chain, and every chain a job")
    zones = capacity.shape[0]
    cells = max(*(c.first + len(c.costs) - 1 + c.hold for c in chains), capacity.shape[1])
    cap = np.concatenate([capacity, np.repeat(capacity[:, -1:], cells - capacity.shape[1], axis=1)], axis=1)
    cap = np.maximum(cap, 0.0)  # a zone shrunk under its running jobs: no room, not an infeasible row
    cost: list[FloatArray] = []
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    vals: list[FloatArray] = []
    bases: list[int] = []
    nv, row = 0, zones * cells  # the rows: capacity, then C non-decreasing, then one per job
    for chain in chains:
        m, hold, base = len(chain.costs), chain.hold, nv
        bases.append(base)
        nv += m
        # sum_i c_i (C_i - C_{i-1}) = sum_{i < m-1} (c_i - c_{i+1}) C_i + c_{m-1} C_{m-1}
        cost.append(np.append(chain.costs[:-1] - chain.costs[1:], chain.costs[-1]))
        k = np.arange(m - 1 + hold)
        at = chain.zone * cells + chain.first
        later = k[k >= hold]
        rows += [at + k, at + later]
        cols += [base + np.minimum(k, m - 1), base + later - hold]
        vals += [np.full(len(k), float(chain.gpus)), np.full(len(later), -float(chain.gpus))]
        if m > 1:  # C[i - 1] - C[i] <= 0
            i = np.arange(1, m)
            rows.append(np.repeat(row + i - 1, 2))
            cols.append(np.stack([base + i - 1, base + i], axis=1).ravel())
            vals.append(np.tile([1.0, -1.0], m - 1))
            row += m - 1
    mono_end = row
    rows.append(row + np.array([c.job for c in chains]))
    cols.append(np.array([b + len(c.costs) - 1 for b, c in zip(bases, chains, strict=True)]))
    vals.append(np.ones(len(chains)))
    if left_out is not None:  # one more variable per job, in its row only
        rows.append(row + np.arange(jobs))
        cols.append(nv + np.arange(jobs))
        vals.append(np.ones(jobs))
        cost.append(np.asarray(left_out, dtype=np.float64))
    return _branch_and_bound(
        np.concatenate(cost),
        (np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)),
        np.concatenate([np.full(mono_end, -np.inf), np.ones(jobs)]),
        np.concatenate([cap.ravel(), np.zeros(mono_end - zones * cells), np.ones(jobs)]),
        chains,
        bases,
        jobs,
        time_limit_s,
        left_out is not None,
    )


def _branch_and_bound(
    cost: FloatArray,
    entries: tuple[IntArray, IntArray, FloatArray],
    lower: FloatArray,
    upper: FloatArray,
    chains: Sequence[Chain],
    bases: Sequence[int],
    jobs: int,
    time_limit_s: float,
    may_leave_out: bool,
) -> list[Choice | None] | None:
    rows, cols, vals = entries
    order = np.lexsort((rows, cols))  # column-wise, as HiGHS takes it; no (row, column) comes twice
    nv, nr = len(cost), len(lower)
    h = _Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("mip_rel_gap", 1e-6)
    h.setOptionValue("threads", 1)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = nv, nr
    lp.col_cost_ = cost
    lp.col_lower_, lp.col_upper_ = np.zeros(nv), np.ones(nv)
    lp.row_lower_, lp.row_upper_ = lower, upper
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.searchsorted(cols[order], np.arange(nv + 1)).astype(np.int32)
    lp.a_matrix_.index_ = rows[order].astype(np.int32)
    lp.a_matrix_.value_ = vals[order]
    lp.integrality_ = [highspy.HighsVarType.kInteger] * nv
    h.passModel(lp)
    h.run()
    if h.getInfo().primal_solution_status != highspy.kSolutionStatusFeasible:
        return None
    x = np.round(np.asarray(h.getSolution().col_value))
    out: list[Choice | None] = [None] * jobs
    for n, (chain, base) in enumerate(zip(chains, bases, strict=True)):
        c = x[base : base + len(chain.costs)]
        if c[-1] > 0.5:
            out[chain.job] = Choice(n, int(np.argmax(c > 0.5)))
    if not may_leave_out and any(o is None for o in out):
        return None
    return out
