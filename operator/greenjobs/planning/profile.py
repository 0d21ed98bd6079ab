"""Continuous-time building blocks of the fleet planner: free GPUs as a step function, and the forecast
integral that scores a run.

No grid: a zone's free GPUs change only where a running job ends or a planned run starts or ends, and
the forecast only at its points, so the planner considers exactly those instants. Times are epoch
seconds rounded to the millisecond, so that a run that ends where another starts meets it exactly.
"""

import math
from bisect import bisect_right
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from greenjobs.carbon.series import FloatArray, IntensitySeries

from .capacity import Capacity, IntArray

BoolArray = npt.NDArray[np.bool_]
EPS_S = 1e-3
WALK_CHUNKS = (32, 512)  # steps walked as lists, then numpy


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
        # concatenate: np.insert costs several times more per call, and runs are placed one by one
        self.times = np.concatenate((self.times[:i], (x,), self.times[i:]))
        self.free = np.concatenate((self.free[:i], self.free[max(i - 1, 0) : max(i, 1)], self.free[i:]))
        return i

    def add(self, start: float, end: float, gpus: int) -> None:
        """`gpus` more free (negative: taken) on [start, end)."""
        s, e = snap(start), snap(end)
        if not s < e:
            i = self._split(s)
            j = self._split(e)
            self.free[i:j] += gpus
            return
        # Both breakpoints in one pass (a placement is this and a search: the copying counts).
        times, free = self.times, self.free
        n = len(times)
        i, j = (int(k) for k in times.searchsorted((s, e)))
        new_s = not (i < n and times[i] == s)
        new_e = not (j < n and times[j] == e)
        if new_s or new_e:
            ts: list[Any] = [times[:i]]
            fs: list[Any] = [free[:i]]
            if new_s:
                ts.append((s,))
                fs.append(free[max(i - 1, 0) : max(i, 1)])
            ts.append(times[i:j])
            fs.append(free[i:j])
            if new_e:
                ts.append((e,))
                fs.append(free[max(j - 1, 0) : max(j, 1)])
            ts.append(times[j:])
            fs.append(free[j:])
            self.times = np.concatenate(ts)
            self.free = np.concatenate(fs)
        self.free[i : j + new_s] += gpus

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

    def longest_room(self, a: float, b: float, gpus: int) -> float:
        """The longest stretch with `gpus` free throughout that overlaps [a, b) (inf: one lasts for
        ever; 0: none): no run longer than that can overlap [a, b)."""
        times, free = self.times, self.free
        i0 = max(int(np.searchsorted(times, a, side="right")) - 1, 0)
        i1 = max(int(np.searchsorted(times, b, side="left")), i0 + 1)  # steps i0..i1-1 overlap it
        steps = np.flatnonzero(free[i0:i1] >= gpus) + i0
        if not len(steps):
            return 0.0
        bad = np.concatenate(([-1], np.flatnonzero(free < gpus), [len(times)]))
        p = np.searchsorted(bad, steps)
        ends = np.append(times, math.inf)[bad[p]]
        return float((ends - times[bad[p - 1] + 1]).max())

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

    def earliest_fit(self, after: float, run: float, gpus: int, give_up: float = math.inf) -> float:
        """The earliest start at or after `after` where `gpus` are free for the whole run; inf if the
        zone never has that many. The candidates are `after` and each breakpoint where `gpus` become
        free (a start between two is no better than the one before it). Once it is sure to be past
        `give_up`, it returns an instant past `give_up` before which nothing fits, without looking on."""
        if gpus > self.final:
            return math.inf
        if after > give_up:
            return after
        times, free = self.times, self.free
        n = len(times)
        i = max(int(np.searchsorted(times, after, side="right")) - 1, 0)  # the step `after` is in
        start, searching = after, False
        # A walk over the steps, as `fits` reads them, while it is short (the usual case: a queue
        # built one job at a time rarely has far to look), on lists (numpy's per-element reads are
        # slow), a short piece first; the vectorised search beyond that.
        for size in WALK_CHUNKS:
            ts: list[float] = times[i : i + size].tolist()
            fs: list[int] = free[i : i + size].tolist()
            m, last, k = len(ts), i + size >= n, 0
            while True:
                if searching:  # for the next step with room: the next candidate (the last step has room)
                    while k < m and fs[k] < gpus:
                        k += 1
                    if k == m:
                        i += m  # search on from the next piece
                        break
                    start, searching = ts[k], False
                    if start > give_up:
                        return start
                if fs[k] < gpus:  # no room in the step `start` is in
                    searching, k = True, k + 1
                    continue
                end = start + run - EPS_S / 2
                q = k + 1
                while q < m and fs[q] >= gpus and ts[q] < end:
                    q += 1
                if q == m:
                    if last:
                        return start  # room to the last step, which lasts for ever
                    i += k  # check again from the step `start` is in, in a longer piece
                    break
                if not ts[q] < end:
                    return start  # room in every step of the run
                searching, k = True, q + 1  # no room in step q: look past it
        return self._earliest_fit(start, run, gpus)  # nothing fits before `start`

    def _earliest_fit(self, after: float, run: float, gpus: int) -> float:
        k = int(np.searchsorted(self.times, after, side="right"))
        if k >= 1:
            ok = self.free[k - 1 :] >= gpus  # from the step `after` is in: only the steps after it count
            rises = np.flatnonzero(ok[1:] & ~ok[:-1]) + k
        else:
            rises = np.flatnonzero(self.free >= gpus)
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

    def mean(self, zone: str, start: float, run: float, lead: float = 0.0) -> float:
        """`means` for one start."""
        a = max(start + lead, self.first[zone])
        b = min(start + run, self.horizon[zone])
        if b <= a:
            return math.inf
        return (self._cum1(zone, b) - self._cum1(zone, a)) / (b - a)

    def cumulative(self, zone: str, x: FloatArray) -> FloatArray:
        series = self.forecasts[zone]
        i = np.maximum(np.searchsorted(series.times, x, side="right") - 1, 0)
        out: FloatArray = series.prefix[i] + series.values[i] * (x - series.times[i])
        return out

    def means(self, zone: str, starts: FloatArray, run: float, lead: float = 0.0) -> FloatArray:
        """Mean over the covered part of each run [start + lead, start + run); inf where none of it is.
        `lead`: the head of a hold that draws no power (a start's latency: admission, pod start)."""
        first = self.first[zone]
        a = np.maximum(starts + lead if lead else starts, first)
        b = np.minimum(starts + run, self.horizon[zone])
        span = b - a
        c = self.cumulative(zone, np.concatenate((a, b)))
        n = len(starts)
        with np.errstate(divide="ignore", invalid="ignore"):
            m: FloatArray = np.where(span > 0, (c[n:] - c[:n]) / np.where(span > 0, span, 1.0), np.inf)
        return m

    def whole(self, zone: str, starts: FloatArray, run: float, lead: float = 0.0) -> BoolArray:
        """Whether the forecast covers each whole run (past its `lead`)."""
        head = starts + lead if lead else starts
        ok: BoolArray = (head >= self.first[zone] - EPS_S) & (starts + run <= self.horizon[zone] + EPS_S)
        return ok

    def breakpoints(self, zone: str, lo: float, hi: float, run: float, lead: float = 0.0) -> FloatArray:
        """Starts in [lo, hi] where the score's slope changes: a forecast point less `lead` or less
        `run`; and the last start whose run the forecast covers."""
        times = self.forecasts[zone].times
        i = int(np.searchsorted(times, lo + lead, side="left"))
        j = int(np.searchsorted(times, hi + run, side="right"))
        pts = times[i:j]
        out = np.concatenate((pts - lead if lead else pts, pts - run, [self.horizon[zone] - run]))
        result: FloatArray = out[(out >= lo) & (out <= hi)]
        return result
