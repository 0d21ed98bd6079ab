"""Energy and emissions accounting of a running job, and its budget check.

Node agents write cumulative per-node entries into `status.energy.nodes`. The operator calls `account`
periodically and once at the end; every piece of state it needs comes from its arguments (read from the
status), so a restarted operator, or the same call made twice, never counts anything twice.

Counter rule: `accounted_joules[node]` is a high-water mark. Only joules above it are new; they are turned
into grams, and the mark moves up to the entry's value. Each new joule is charged at the intensity of the
time it was used where the entry says when (its `usage` points, and an `intensity_of` that knows that
time), else at the intensity given now. When an agent's counter
goes backwards (it lost its state and restarted from a lower value) nothing is added and the mark stays
where it was: grams never go negative and no joule is charged twice. The price is that energy used after
such a reset is only charged once the counter climbs past its old mark again; agents avoid that by
resuming from the value they last wrote.
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from greenjobs.api.models import Budget, Emissions, NodeEnergy

JOULES_PER_KWH = 3.6e6

# gCO2e/kWh over [start, end], or None when not known (the intensity now is used instead)
IntensityOf = Callable[[datetime, datetime], float | None]


@dataclass(frozen=True)
class Piece:
    """New joules of a node entry and when they were used; start/end None: not known."""

    joules: float
    start: datetime | None = None
    end: datetime | None = None


def new_pieces(entry: NodeEnergy, mark: float) -> list[Piece]:
    """The joules of `entry` above `mark`, cut at the entry's usage points (cumulative joules at times)."""
    if entry.joules <= mark:
        return []
    out: list[Piece] = []
    done = mark
    start: datetime | None = None
    for point in entry.usage or []:
        upto = min(point.joules, entry.joules)
        if upto > done:
            # Before the first point (a timeline that starts after these joules): when is not known.
            out.append(Piece(upto - done, start, point.at if start is not None else None))
            done = upto
        start = point.at
    if entry.joules > done:
        out.append(Piece(entry.joules - done))  # past the last point (no usage, an older agent): not known
    return out


@dataclass(frozen=True)
class Accounting:
    k_wh: float  # energy over all nodes, including nodes whose entry has since disappeared
    gpu_hours: float
    grams: float  # gCO2e, cumulative
    avg_g_per_kwh: float | None  # grams / kWh; None before any energy
    accounted_joules: dict[str, float]  # per node: joules already turned into grams

    def emissions(self) -> Emissions:
        """The `status.emissions` object to write back (what the next `account` call reads)."""
        return Emissions(
            grams=self.grams, avg_g_per_k_wh=self.avg_g_per_kwh, accounted_joules=dict(self.accounted_joules)
        )


def account(
    nodes: Mapping[str, NodeEnergy],
    previous: Emissions | None,
    intensity_g_per_kwh: float,
    intensity_of: IntensityOf | None = None,
) -> Accounting:
    """Charge the joules each node used since the last accounting at the zone's intensity when they were
    used (`intensity_of` over each piece's interval), or now where that is not known.

    Raises ValueError for a non-finite or negative intensity: when it is unknown, skip the call; the new
    joules stay unaccounted and are charged at the next known intensity.
    """
    if not math.isfinite(intensity_g_per_kwh) or intensity_g_per_kwh < 0:
        raise ValueError(f"intensity must be a finite, non-negative gCO2e/kWh, not {intensity_g_per_kwh!r}")
    marks: dict[str, float] = dict(previous.accounted_joules) if previous else {}
    grams = (previous.grams or 0.0) if previous else 0.0

    for node, entry in nodes.items():
        mark = marks.get(node, 0.0)
        if entry.joules > mark:
            for piece in new_pieces(entry, mark):
                grams += piece.joules / JOULES_PER_KWH * _rate(piece, intensity_of, intensity_g_per_kwh)
            marks[node] = entry.joules
        else:
            marks[node] = mark  # counter went backwards or did not move: keep the high-water mark

    # kWh from the marks rather than the raw entries, so a counter reset never shrinks the total and
    # grams / kWh stays a true average.
    k_wh = sum(marks.values()) / JOULES_PER_KWH
    gpu_hours = sum(entry.gpu_seconds or 0.0 for entry in nodes.values()) / 3600.0
    avg = grams / k_wh if k_wh > 0 else None
    return Accounting(k_wh=k_wh, gpu_hours=gpu_hours, grams=grams, avg_g_per_kwh=avg, accounted_joules=marks)


def _rate(piece: Piece, intensity_of: IntensityOf | None, now: float) -> float:
    if intensity_of is None or piece.start is None or piece.end is None:
        return now
    then = intensity_of(piece.start, piece.end)
    return then if then is not None and math.isfinite(then) and then >= 0 else now


def rounded(acc: Accounting) -> Accounting:
    """Figures as written to the status: kWh and GPU-hours to 4 decimals, grams to 3, gCO2e/kWh to 1.

    The per-node marks stay exact: they are state, not display, and rounding them would re-charge or
    drop the rounding residue on the next call. Grams are state too (the next call adds to them): at
    0.1 g the residue of every call accumulated (+7 % on a 15 s test job reported every second), at
    1 mg it stays far below anything shown.
    """
    return replace(
        acc,
        k_wh=round(acc.k_wh, 4),
        gpu_hours=round(acc.gpu_hours, 4),
        grams=round(acc.grams, 3),
        avg_g_per_kwh=None if acc.avg_g_per_kwh is None else round(acc.avg_g_per_kwh, 1),
    )


@dataclass(frozen=True)
class BudgetVerdict:
    exceeded: bool
    message: str
    suspend: bool  # exceeded and the budget's action is Suspend


def check_budget(budget: Budget | None, k_wh: float, grams: float) -> BudgetVerdict:
    """Compare the job's energy (kWh) and emissions (gCO2e) so far with its budget.

    A limit is exceeded when the use is strictly above it. The message names every limit and is meant for
    the BudgetExceeded condition and its Event.
    """
    if budget is None or (budget.max_energy_k_wh is None and budget.max_c_o2e_kg is None):
        return BudgetVerdict(exceeded=False, message="no budget set", suspend=False)
    kg = grams / 1000.0
    over: list[str] = []
    within: list[str] = []
    if budget.max_energy_k_wh is not None:
        text = f"energy {k_wh:.4g} kWh of {budget.max_energy_k_wh:g} kWh"
        (over if k_wh > budget.max_energy_k_wh else within).append(text)
    if budget.max_c_o2e_kg is not None:
        text = f"emissions {kg:.4g} kg CO2e of {budget.max_c_o2e_kg:g} kg CO2e"
        (over if kg > budget.max_c_o2e_kg else within).append(text)
    if not over:
        return BudgetVerdict(exceeded=False, message="within budget: " + "; ".join(within), suspend=False)
    suspend = budget.action == "Suspend"
    action = "the Job is suspended" if suspend else "the Job keeps running (action Warn)"
    return BudgetVerdict(exceeded=True, message="budget exceeded: " + "; ".join(over) + f"; {action}", suspend=suspend)
