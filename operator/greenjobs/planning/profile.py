"""Continuous-time building blocks of the fleet planner: free GPUs as a step function, and the forecast
integral that scores a run.

No grid: a zone's free GPUs change only where a running job ends or a planned run starts or ends, and
the forecast only at its points, so the planner considers exactly those instants. Times are epoch
seconds rounded to the millisecond, so that a run that ends where another starts meets it exactly.
"""

import math
from bisect import bisect_right
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from greenjobs.carbon.series import FloatArray, IntensitySeries

from .capacity import Capacity, IntArray

BoolArray = npt.NDArray[np.bool_]
EPS_S = 1e-3


def snap(x: float) -> float:
    """Epoch seconds to the millisecond: breakpoints computed two ways compare equal."""
    return round(x, 3)


class FreeProfile:
    """Free GPUs of one zone: `free[i]` on [times[i], times[i+1]), the last value for ever after.

    The last value is what the zone has once every run has ended, so any job no bigger than that fits
    somewhere (`earliest_fit` always finds a start).
    """

    __slots__ = ("free", "times")

    def __init__(self, times: FloatArray, free: IntArray) -> None:
        self.times = times
        self.free = free

    @classmethod
    def of(cls, capacity: Capacity, zone: str, now: float) -> "FreeProfile":
        """The capacity model's step function from `now` on (releases before `now` count at `now`)."""
        times = [snap(now)]
        free = [capacity.base.get(zone, 0)]
        for when, gpus in sorted(capacity.releases.get(zone, ())):
            at = max(snap(when), times[0])
            if at == times[-1]:
                free[-1] += gpus
            else:
                times.append(at)
                free.append(free[-1] + gpus)
        return cls(np.array(times, dtype=np.float64), np.maximum(np.array(free, dtype=np.int64), 0))

    def copy(self) -> "FreeProfile":
        return FreeProfile(self.times.copy(), self.free.copy())

    @property
    def final(self) -> int:
        return int(self.free[-1])

    def at(self, t: float) -> int:
        i = int(np.searchsorted(self.times, t, side="right")) - 1
        return int(self.free[max(i, 0)])

    def _split(self, x: float) -> int:
        """The index of a breakpoint at `x`, inserted (holding the value in force there) if absent."""
        i = int(np.searchsorted(self.times, x, side="left"))
        if i < len(self.times) and self.times[i] == x:
            return i
        self.times = np.insert(self.times, i, x)
        self.free = np.insert(self.free, i, self.free[max(i - 1, 0)])
        return i

    def add(self, start: float, end: float, gpus: int) -> None:
        """`gpus` more free (negative: taken) on [start, end)."""
        i = self._split(snap(start))
        j = self._split(snap(end))
        self.free[i:j] += gpus

    def fits(self, starts: FloatArray, run: float, gpus: int) -> BoolArray:
        """For each start, whether `gpus` are free throughout [start, start + run)."""
        if len(starts) == 0:
            return np.zeros(0, dtype=np.bool_)
        i0 = np.maximum(np.searchsorted(self.times, starts, side="right") - 1, 0)
        i1 = np.maximum(np.searchsorted(self.times, starts + run - EPS_S / 2, side="left"), i0 + 1)
        lo, hi = int(i0.min()), int(i1.max())
        short = np.concatenate(([0], np.cumsum(self.free[lo:hi] < gpus)))
        ok: BoolArray = (short[i1 - lo] - short[i0 - lo]) == 0
        return ok

    def edges(self, lo: float, hi: float, run: float, gpus: int) -> FloatArray:
        """The starts in [lo, hi] where feasibility can begin or end: a breakpoint where `gpus` become
        free (a start there may fit), and a breakpoint where they stop being free, less `run` (the last
        start that ends before it). The cleanest feasible start is at one of these or at a forecast
        breakpoint: the score is linear in the start between them."""
        a = max(int(np.searchsorted(self.times, lo, side="left")), 1)
        b = int(np.searchsorted(self.times, hi + run, side="right"))
        if b <= a:
            return np.zeros(0, dtype=np.float64)
        ok = self.free[a - 1 : b] >= gpus
        t = self.times[a:b]
        up = ok[1:] & ~ok[:-1]
        down = ~ok[1:] & ok[:-1]
        out = np.concatenate((t[up], t[down] - run))
        result: FloatArray = out[(out >= lo) & (out <= hi)]
        return result

    def earliest_fit(self, after: float, run: float, gpus: int) -> float:
        """The earliest start at or after `after` where `gpus` are free for the whole run; inf if the
        zone never has that many."""
        if gpus > self.final:
            return math.inf
        k = int(np.searchsorted(self.times, after, side="right"))
        ok = self.free >= gpus
        rises = np.flatnonzero(ok[k:] & ~ok[k - 1 : -1]) + k if k >= 1 else np.flatnonzero(ok[k:]) + k
        candidates = np.concatenate(([after], self.times[rises]))
        fit = self.fits(candidates, run, gpus)
        return float(candidates[int(np.argmax(fit))])  # the last rise is free for ever: one fits


class Scorer:
    """Mean forecast intensity of a run in each zone, over the whole run only where it is covered."""

    def __init__(self, forecasts: Mapping[str, IntensitySeries]) -> None:
        self.forecasts = forecasts
        self.horizon = {z: float(s.horizon_s) for z, s in forecasts.items()}
        self.first = {z: float(s.times[0]) for z, s in forecasts.items()}
        # Python lists for one start at a time (bisect beats a numpy call on one element).
        self._lists = {z: (s.times.tolist(), s.values.tolist(), s.prefix.tolist()) for z, s in forecasts.items()}

    def _cum1(self, zone: str, x: float) -> float:
        times, values, prefix = self._lists[zone]
        i = max(bisect_right(times, x) - 1, 0)
        return float(prefix[i] + values[i] * (x - times[i]))

    def mean(self, zone: str, start: float, run: float) -> float:
        """`means` for one start."""
        a = max(start, self.first[zone])
        b = min(start + run, self.horizon[zone])
        if b <= a:
            return math.inf
        return (self._cum1(zone, b) - self._cum1(zone, a)) / (b - a)

    def cumulative(self, zone: str, x: FloatArray) -> FloatArray:
        series = self.forecasts[zone]
        i = np.maximum(np.searchsorted(series.times, x, side="right") - 1, 0)
        out: FloatArray = series.prefix[i] + series.values[i] * (x - series.times[i])
        return out

    def means(self, zone: str, starts: FloatArray, run: float) -> FloatArray:
        """Mean over the covered part of each run [start, start + run); inf where none of it is."""
        first = self.first[zone]
        a = np.maximum(starts, first)
        b = np.minimum(starts + run, self.horizon[zone])
        span = b - a
        c = self.cumulative(zone, np.concatenate((a, b)))
        n = len(starts)
        with np.errstate(divide="ignore", invalid="ignore"):
            m: FloatArray = np.where(span > 0, (c[n:] - c[:n]) / np.where(span > 0, span, 1.0), np.inf)
        return m

    def whole(self, zone: str, starts: FloatArray, run: float) -> BoolArray:
        """Whether the forecast covers each whole run."""
        ok: BoolArray = (starts >= self.first[zone] - EPS_S) & (starts + run <= self.horizon[zone] + EPS_S)
        return ok

    def breakpoints(self, zone: str, lo: float, hi: float, run: float) -> FloatArray:
        """Starts in [lo, hi] where the score's slope changes: a forecast point, or a point less `run`;
        and the last start whose run the forecast covers."""
        times = self.forecasts[zone].times
        i = int(np.searchsorted(times, lo, side="left"))
        j = int(np.searchsorted(times, hi + run, side="right"))
        pts = times[i:j]
        out = np.concatenate((pts, pts - run, [self.horizon[zone] - run]))
        result: FloatArray = out[(out >= lo) & (out <= hi)]
        return result
