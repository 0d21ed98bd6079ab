"""Whole-run planning: when a long job runs, pauses and at which GPU power cap, up to its deadline.

Pure code, no Kubernetes and no I/O (issue 19). `plan_whole_run` plans one job's whole remaining run
against a forecast; `plan_fleet_whole_run` plans many against the GPUs of each zone; `replan` keeps a
previous plan unless a new one is meaningfully cleaner.

The model, per planning slot of length dt at cap x (a fraction of TDP):

    work done  = dt * gpu_model.throughput(x)            (seconds of full-power run time)
    energy     = gpus * tdp * gpu_model.draw_fraction(x) * dt
    grams      = kWh * forecast intensity (exact integral over the slot) + embodied per GPU-hour held

A resume after a pause costs `resume_overhead` of held GPUs drawing the uncapped mean
(draw_fraction(1.0)) and doing no work (restart, checkpoint load, warm-up).

Slots: from `now` to the deadline, cut at every multiple of `step` (epoch-aligned, so that 15/30/60-min
forecast points fall on slot edges) and at the forecast's horizon; the first and last slot may be
partial. Nothing beyond the horizon is forecast, so nothing is gained there: in an uncovered slot the job
runs at the highest cap and may not pause, and its intensity is valued at the forecast's highest value, so
no pause is planned whose gain the forecast cannot see (a pause that pushes work past the horizon never
looks cheaper than running now).

The search (`_Solver`): dynamic programming over (slot boundary, run state, interruptions used, work
done). Run states: not started yet (F), paused (P), running for r slots of this segment (r capped at R,
the slots after which a segment has surely passed `min_segment` and its overhead), and running with
resume overhead still pending. A segment may only be paused once it has run `min_segment` (a shorter run
would not reach its next checkpoint; a running job's present segment may always be paused); the segment
that finishes the job ends by finishing, not by a pause, so it may be shorter. Work done is discretised
into buckets of q seconds (the floor of work / q: rounded down) and each (state, bucket) keeps its
cheapest path together with that path's EXACT work: rounding never accumulates, completion and deadlines
are decided on exact work, so a plan is never late by rounding. The optimum is exact when no two
distinct reachable amounts of work share a bucket (the tests pick q so, and check against a brute force
over every on/off/cap assignment); with the default budget (MAX_WORK_BUCKETS over the job's slack) two
paths whose work differs by less than q compete and the cheaper is kept. Every state kept can still finish
by the deadline at the highest cap (including one resume overhead when paused): the buckets span only
that band of work.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from greenjobs.carbon.series import FloatArray, IntensitySeries, from_epoch, to_epoch
from greenjobs.planning import gpu_model
from greenjobs.planning.capacity import Capacity

DEFAULT_STEP = timedelta(minutes=15)
# Work buckets over a job's band of slack, and cells of the back-pointer table: together they bound the
# planning time and memory (a 7-day job in a 9-day window, 5 caps: 0.75-1 s on a busy 2-core machine).
MAX_WORK_BUCKETS = 600
TABLE_BUDGET = 12_000_000
# A pause that gains nothing is not worth the disruption: each costs this share of the straight run's
# grams in the search (never in the reported figures), so equal-cost plans keep running.
PAUSE_TIE_BREAK = 1e-9
_J_PER_KWH = 3.6e6
_TOL_S = 1e-6
# Datetimes carry microseconds: edges within a millisecond meet, and work within a millisecond is done.
_GAP_S = 1e-3

Int16Array = npt.NDArray[np.int16]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Interruptible:
    """What a job allows: None on the request means it is never paused."""

    resume_overhead: timedelta  # time lost at each resume, GPUs held at full draw and no work done
    min_segment: timedelta  # shortest run worth a restart: a segment is paused only after this long
    max_interruptions: int | None = None  # pauses over the job's life (None: no limit)

    def __post_init__(self) -> None:
        if self.resume_overhead < timedelta(0) or self.min_segment < timedelta(0):
            raise ValueError("resume_overhead and min_segment must not be negative")
        if self.max_interruptions is not None and self.max_interruptions < 0:
            raise ValueError("max_interruptions must not be negative")


@dataclass(frozen=True)
class WholeRunRequest:
    now: datetime
    remaining_work: timedelta  # run time still needed at full power (uncapped), > 0
    deadline: datetime
    gpus: int
    tdp_watts: float  # per GPU
    caps: Sequence[float]  # allowed cap fractions of TDP, ascending; (1.0,) = no pacing
    interruptible: Interruptible | None
    running: bool  # running now: continuing costs no overhead
    resumed_before: bool = False  # not running but has done work: its next start pays the overhead
    interruptions_used: int = 0
    embodied_g_per_gpu_hour: float = 0.0  # counts while GPUs are held (overhead included)
    step: timedelta = DEFAULT_STEP

    def __post_init__(self) -> None:
        if self.remaining_work <= timedelta(0):
            raise ValueError(f"remaining_work must be positive, got {self.remaining_work}")
        if self.gpus <= 0 or self.tdp_watts <= 0:
            raise ValueError("gpus and tdp_watts must be positive")
        caps = list(self.caps)
        if not caps or caps != sorted(caps) or len(set(caps)) != len(caps) or not 0 < caps[0] <= caps[-1] <= 1:
            raise ValueError(f"caps must be distinct, ascending fractions of TDP in (0, 1], got {caps}")
        if self.step <= timedelta(0):
            raise ValueError("step must be positive")

    @property
    def top_cap(self) -> float:
        return float(self.caps[-1])

    @property
    def first_start_overhead_s(self) -> float:
        """Overhead paid at the next start: none when running or never started."""
        if self.running or not self.resumed_before or self.interruptible is None:
            return 0.0
        return self.interruptible.resume_overhead.total_seconds()


@dataclass(frozen=True)
class Segment:
    start: datetime
    end: datetime
    cap_fraction: float


@dataclass(frozen=True)
class WholeRunPlan:
    segments: tuple[Segment, ...]  # ordered, non-overlapping: the job's whole remaining run
    expected_grams: float  # energy x forecast + embodied; uncovered time valued at the forecast's maximum
    straight_grams: float | None  # straight through from now at the highest cap; None if not all forecast
    saving_percent: float | None
    finishes_at: datetime
    feasible: bool  # False: cannot end by the deadline; the plan is then the least late one
    interruptions: int = 0  # pauses in the plan (a gap between two segments)
    energy_kwh: float = 0.0
    overhead_kwh: float = 0.0  # spent on resumes
    horizon_limited: bool = False  # part of the run lies beyond the forecast (re-plan as it moves)
    zone: str | None = None  # set by the fleet planner

    @property
    def starts_at(self) -> datetime:
        return self.segments[0].start

    def cap_at(self, t: datetime) -> float | None:
        """The cap in force at `t`; None when the plan has the job paused (or done) then."""
        for s in self.segments:
            if s.start <= t < s.end:
                return s.cap_fraction
        return None


# ------------------------------------------------------------------ evaluation (continuous, exact)


@dataclass(frozen=True)
class _Valuation:
    """The forecast with uncovered time valued at its maximum (pessimistic: no gain beyond it)."""

    series: IntensitySeries
    first: float
    horizon: float
    worst: float

    @classmethod
    def of(cls, series: IntensitySeries, now: float) -> "_Valuation":
        first, horizon = float(series.times[0]), series.horizon_s
        i, j = series.times.searchsorted((now, horizon), side="right")
        seen = series.values[max(i - 1, 0) : max(j, i)]
        worst = float(seen.max()) if len(seen) else float(series.values.max())
        return cls(series, first, horizon, worst)

    def cumulative(self, x: FloatArray) -> FloatArray:
        """Integral from `first` to each x, forecast inside [first, horizon), `worst` outside."""
        s = self.series
        inside = np.clip(x, self.first, self.horizon)
        i = np.maximum(s.times.searchsorted(inside, side="right") - 1, 0)
        out: FloatArray = s.prefix[i] + s.values[i] * (inside - s.times[i])
        out += self.worst * (np.maximum(x - self.horizon, 0.0) - np.maximum(self.first - x, 0.0))
        return out

    def integral(self, a: float, b: float) -> float:
        c = self.cumulative(np.array([a, b]))
        return float(c[1] - c[0])

    def covers(self, a: float, b: float) -> bool:
        return self.first - _TOL_S <= a and b <= self.horizon + _TOL_S


@dataclass(frozen=True)
class _Outcome:
    grams: float
    kwh: float
    overhead_kwh: float
    finish: float  # epoch s; inf when the segments do not finish the work
    segments: tuple[Segment, ...]  # cut at the finish
    interruptions: int


def _evaluate(req: WholeRunRequest, val: _Valuation, segments: Sequence[Segment]) -> _Outcome:
    """Run `segments` in the continuous model until the work is done (the reference for every figure)."""
    watts = req.gpus * req.tdp_watts
    embodied_per_s = req.gpus * req.embodied_g_per_gpu_hour / 3600.0
    left = req.remaining_work.total_seconds()
    grams = kwh = over_kwh = 0.0
    # A running job has run up to now: a plan that starts later pauses it first.
    prev_end: float | None = to_epoch(req.now) if req.running else None
    pauses = 0
    out: list[Segment] = []
    finish = math.inf
    pending = 0.0
    for seg in segments:
        a, b = to_epoch(seg.start), to_epoch(seg.end)
        if b <= a:
            continue
        if prev_end is None:
            pending = req.first_start_overhead_s
        elif a > prev_end + _GAP_S:
            pauses += 1
            pending = req.interruptible.resume_overhead.total_seconds() if req.interruptible else 0.0
        prev_end = b
        ov = min(pending, b - a)
        pending -= ov
        if ov > 0:
            e = watts * gpu_model.draw_fraction(1.0) * ov / _J_PER_KWH
            over_kwh += e
            kwh += e
            grams += watts * gpu_model.draw_fraction(1.0) * val.integral(a, a + ov) / _J_PER_KWH
        thr = gpu_model.throughput(seg.cap_fraction)
        end = b
        if (b - a - ov) * thr >= left - _GAP_S:
            end = min(a + ov + max(left, 0.0) / thr, b)
        draw = watts * gpu_model.draw_fraction(seg.cap_fraction)
        kwh += draw * (end - a - ov) / _J_PER_KWH
        grams += draw * val.integral(a + ov, end) / _J_PER_KWH + embodied_per_s * (end - a)
        left -= (end - a - ov) * thr
        out.append(Segment(seg.start, from_epoch(end), seg.cap_fraction))
        if end < b or left <= _GAP_S:
            finish = end
            break
    return _Outcome(grams, kwh, over_kwh, finish, tuple(out), pauses)


def _straight(req: WholeRunRequest, start: float) -> Segment:
    run = req.first_start_overhead_s + req.remaining_work.total_seconds() / gpu_model.throughput(req.top_cap)
    return Segment(from_epoch(start), from_epoch(start + run), req.top_cap)


def _plan_of(
    req: WholeRunRequest, val: _Valuation, segments: Sequence[Segment], straight: _Outcome, feasible: bool
) -> WholeRunPlan:
    got = _evaluate(req, val, segments)
    now = to_epoch(req.now)
    straight_covered = val.covers(now, straight.finish)
    base = straight.grams if straight_covered else None
    saving = None
    if base is not None:
        saving = 100.0 * (base - got.grams) / base if base > 0 else 0.0
    return WholeRunPlan(
        segments=got.segments,
        expected_grams=got.grams,
        straight_grams=base,
        saving_percent=saving,
        finishes_at=from_epoch(got.finish),
        feasible=feasible,
        interruptions=got.interruptions,
        energy_kwh=got.kwh,
        overhead_kwh=got.overhead_kwh,
        horizon_limited=not val.covers(now, got.finish),
    )


# ------------------------------------------------------------------ the planner


def plan_whole_run(req: WholeRunRequest, forecast: IntensitySeries) -> WholeRunPlan:
    """The cleanest whole remaining run that ends by the deadline (see the module docstring).

    When even running straight through from now at the highest cap ends after the deadline, that
    straight run is the plan (the least late one) and `feasible` is False.
    """
    return _plan_single(req, forecast, None, None)


def _plan_single(
    req: WholeRunRequest,
    forecast: IntensitySeries,
    runnable: "_Runnable | None",
    max_buckets: int | None,
) -> WholeRunPlan:
    now = to_epoch(req.now)
    val = _Valuation.of(forecast, now)
    straight = _evaluate(req, val, [_straight(req, now)])
    if straight.finish > to_epoch(req.deadline) + _TOL_S:
        return _plan_of(req, val, straight.segments, straight, feasible=False)
    solver = _Solver(req, val, runnable, max_buckets or MAX_WORK_BUCKETS, straight.grams)
    segments = solver.solve()
    if segments is None:  # only with a `runnable` mask (the fleet): the caller falls back
        return _plan_of(req, val, straight.segments, straight, feasible=False)
    return _plan_of(req, val, segments, straight, feasible=True)


@dataclass(frozen=True)
class _Runnable:
    """Slots of the fleet's grid (origin + i * step) where the job's GPUs are free."""

    origin: float
    step: float
    ok: BoolArray  # beyond its end: the last value

    def mask(self, t: FloatArray) -> BoolArray:
        i = np.floor((t[:-1] - self.origin + _TOL_S) / self.step).astype(np.int64)
        i = np.clip(i, 0, len(self.ok) - 1)
        out: BoolArray = self.ok[i]
        return out


def _grid(req: WholeRunRequest, val: _Valuation) -> FloatArray:
    """Slot edges: now, every epoch-aligned multiple of step, the forecast's first point and horizon,
    the deadline."""
    now, end = to_epoch(req.now), to_epoch(req.deadline)
    step = req.step.total_seconds()
    first = math.floor(now / step + 1) * step
    inner = np.arange(first, end - _TOL_S, step)
    extra = [x for x in (val.first, val.horizon) if now + _TOL_S < x < end - _TOL_S]
    edges: FloatArray = np.unique(np.concatenate(([now, end], inner, extra)))
    return edges


# State codes: F (not started), P (paused), then running states (see _Solver.__init__).
_F, _P = 0, 1
_INF = math.inf


class _Solver:
    """The dynamic program of the module docstring, for one job, one forecast, one capacity mask."""

    def __init__(
        self,
        req: WholeRunRequest,
        val: _Valuation,
        runnable: _Runnable | None,
        max_buckets: int,
        scale_grams: float,
    ) -> None:
        self.req = req
        self.val = val
        self.t = t = _grid(req, val)
        self.n = n = len(t) - 1
        self.dt = np.diff(t)
        self.work = req.remaining_work.total_seconds()
        self.caps = [float(c) for c in req.caps]
        self.thr = [gpu_model.throughput(c) for c in self.caps]
        self.draw = [gpu_model.draw_fraction(c) for c in self.caps]
        self.watts = req.gpus * req.tdp_watts
        self.embodied_per_s = req.gpus * req.embodied_g_per_gpu_hour / 3600.0
        self.covered = (t[:-1] >= val.first - _TOL_S) & (t[1:] <= val.horizon + _TOL_S)
        self.runnable = np.ones(n, dtype=np.bool_) if runnable is None else runnable.mask(t)
        self.cum = val.cumulative(t)
        self._lost_cum: dict[tuple[int, float], float] = {}
        ir = req.interruptible
        self.ov = ir.resume_overhead.total_seconds() if ir else 0.0
        self.min_seg = ir.min_segment.total_seconds() if ir else 0.0
        if ir is None:
            self.levels, self.pausable = 1, False
        elif ir.max_interruptions is None:
            self.levels, self.pausable = 1, True
        else:
            left = ir.max_interruptions - req.interruptions_used
            self.levels, self.pausable = max(left, 0) + 1, left > 0
        self.limited = ir is not None and ir.max_interruptions is not None
        self.pause_penalty = PAUSE_TIE_BREAK * max(scale_grams, 1.0)
        # The search stores cost - price * work (a potential: the same optimum, since every finished
        # path has done the same work), so that two paths merged in one bucket are compared at the same
        # work, priced at the straight run's mean grams per second of work.
        self.price = scale_grams / self.work

        # R: slots after which any segment has run min_segment and any overhead is behind it.
        self.r_ov = self._slots_for(self.ov)
        self.r_max = max(self._slots_for(self.min_seg), self.r_ov, 1)
        # States: 0 F, 1 P, 2.. running r = 1..R (overhead done or none), then "overhead pending" after
        # r = 1..r_ov - 1 slots of a resumed segment.
        self.on = {r: 1 + r for r in range(1, self.r_max + 1)}
        self.ov_on = {r: 1 + self.r_max + r for r in range(1, self.r_ov)}
        self.states = 2 + self.r_max + max(self.r_ov - 1, 0)
        self.start_state = self.on[self.r_max] if req.running else (_P if req.resumed_before else _F)
        if req.running or not req.resumed_before:
            self.first_ov = 0.0
        else:
            self.first_ov = self.ov

        self.q, self.lo, self.width = self._buckets(max_buckets)

    def _buckets(self, max_buckets: int) -> tuple[float, npt.NDArray[np.int64], int]:
        """Bucket size q, each edge's lowest bucket and the band's width in buckets: the band is the work
        a state may hold at an edge and still finish by the deadline (module docstring)."""
        reach = np.concatenate(([0.0], np.cumsum(self.dt * self.thr[-1])))
        lo_w = np.maximum(self.work - (reach[-1] - reach), 0.0)
        hi_w = np.minimum(reach, self.work)
        width = float(np.max(hi_w - lo_w)) if self.n else 0.0
        std = self.req.step.total_seconds()
        q = max(width / max_buckets, 1e-6)
        q = std / math.ceil(std / q) if q < std else q  # a whole number of buckets per full slot
        cells = self.n * self.states * self.levels
        while math.ceil(width / q) + 3 > max(TABLE_BUDGET // max(cells, 1), 8):
            q *= 1.25
        return q, np.floor(lo_w / q).astype(np.int64), math.ceil(width / q) + 3

    def _slots_for(self, span: float) -> int:
        """Fewest slots that always last `span` from any slot edge (span 0: 0)."""
        if span <= 0:
            return 0
        t = self.t
        ends = t.searchsorted(t[:-1] + span - _TOL_S, side="left")
        idx = np.arange(self.n)
        ok = ends <= self.n
        return int(max(int((ends[ok] - idx[ok]).max()) if ok.any() else 1, 1))

    # ------------------------------------------------------------ slot physics

    def lost(self, k: int, state: int) -> float:
        """Overhead time inside slot k for a job in `state` at its start that runs in slot k."""
        if state == _P:
            age = 0.0
        elif state in self.ov_on.values():
            r = state - 1 - self.r_max
            age = float(self.t[k] - self.t[k - r])
        else:
            return 0.0
        return float(min(max(self.ov - age, 0.0), self.dt[k]))

    def next_state(self, state: int) -> int:
        if state == _F:
            r, pending = 1, False
        elif state == _P:
            r, pending = 1, self.ov > 0
        elif state in self.ov_on.values():
            r, pending = state - 1 - self.r_max + 1, True
        else:
            r, pending = state - 1 + 1, False
        if pending and r < self.r_ov:
            return self.ov_on[r]
        return self.on[min(r, self.r_max)]

    def may_pause(self, k: int, state: int) -> bool:
        if not self.pausable or state in (_F, _P):
            return False
        if state == self.on[self.r_max]:
            return True
        r = state - 1 if state <= 1 + self.r_max else state - 1 - self.r_max
        return float(self.t[k] - self.t[k - r]) >= self.min_seg - _TOL_S

    def slot_run(self, k: int, lost: float, c: int) -> tuple[float, float]:
        """(work, grams) of running slot k at cap c with `lost` seconds of overhead first."""
        a, b = float(self.t[k]), float(self.t[k + 1])
        work = (b - a - lost) * self.thr[c]
        c0, c2 = float(self.cum[k]), float(self.cum[k + 1])
        c1 = c0
        if lost > 0:
            key = (k, lost)
            if key not in self._lost_cum:
                self._lost_cum[key] = float(self.val.cumulative(np.array([a + lost]))[0])
            c1 = self._lost_cum[key]
        grams = self.watts * (gpu_model.draw_fraction(1.0) * (c1 - c0) + self.draw[c] * (c2 - c1))
        return work, grams / _J_PER_KWH + self.embodied_per_s * (b - a)

    def shift_of(self, inc: float) -> tuple[int, bool]:
        """Whole buckets a run of `inc` seconds of work moves, and whether a carry is possible (the same
        rule forwards and in the back-tracking)."""
        r = inc / self.q
        whole = round(r)
        if abs(r - whole) < 1e-9:
            return int(whole), False
        return math.floor(r), True

    def caps_in(self, k: int) -> range:
        """Caps allowed in slot k: only the highest where the forecast does not reach."""
        return range(len(self.caps)) if self.covered[k] else range(len(self.caps) - 1, len(self.caps))

    # ------------------------------------------------------------ the search

    def solve(self) -> list[Segment] | None:
        s_n, lv, w = self.states, self.levels, self.width
        q = self.q
        value = np.full((s_n, lv, w), _INF)
        exact = np.zeros((s_n, lv, w))
        value[self.start_state, 0, 0 - self.lo[0]] = 0.0
        tables: list[Int16Array] = []
        best: tuple[float, float, int, int, int, int, int] | None = None  # grams, finish, k, state, i, j, cap
        bucket = np.arange(w, dtype=np.float64)
        for k in range(self.n):
            lo, lo2 = int(self.lo[k]), int(self.lo[k + 1])
            nv = np.full((s_n, lv, w), _INF)
            nx = np.zeros((s_n, lv, w))
            code = np.full((s_n, lv, w), -1, dtype=np.int16)
            may_idle = bool(self.covered[k]) or not self.runnable[k]
            # Off: F and P stay (work unchanged), a running state pauses (one interruption more).
            if may_idle:
                for src in (_F, _P):
                    self._shift(value, exact, nv, nx, code, src, src, 0, lo - lo2, 0.0, src * 64)
                for src in range(2, s_n):
                    if self.may_pause(k, src):
                        self._shift(
                            value,
                            exact,
                            nv,
                            nx,
                            code,
                            src,
                            _P,
                            1 if self.limited else 0,
                            lo - lo2,
                            self.pause_penalty,
                            src * 64,
                        )
            if self.runnable[k]:
                edge = (lo + bucket) * q  # lower edge of each bucket's work
                cids = list(self.caps_in(k))
                for src in range(s_n):
                    if not np.isfinite(value[src]).any():
                        continue
                    lost = self.lost(k, src)
                    runs = [self.slot_run(k, lost, c) for c in cids]
                    incs = np.array([r[0] for r in runs])
                    grams = np.array([r[1] for r in runs])
                    best = self._completions(k, src, cids, lost, incs, value, exact, best)
                    self._run(value, exact, nv, nx, code, src, self.next_state(src), cids, incs, grams, lo, lo2, edge)
            tables.append(code)
            value, exact = nv, nx
        if best is None:
            return None
        return self._backtrack(best, tables)

    def _shift(
        self,
        value: FloatArray,
        exact: FloatArray,
        nv: FloatArray,
        nx: FloatArray,
        code: Int16Array,
        src: int,
        dst: int,
        di: int,
        d: int,
        cost: float,
        tag: int,
    ) -> None:
        """Relax src -> dst with no work done (bucket index shifts by d = lo - lo2, levels by di)."""
        w, lv = self.width, self.levels
        a, b = max(0, -d), min(w, w - d)
        if a >= b or di >= lv:
            return
        cand = value[src, : lv - di, a:b] + cost
        cur = nv[dst, di:, a + d : b + d]
        better = cand < cur
        if not better.any():
            return
        cur[better] = cand[better]
        nx[dst, di:, a + d : b + d][better] = exact[src, : lv - di, a:b][better]
        code[dst, di:, a + d : b + d][better] = tag

    def _run(
        self,
        value: FloatArray,
        exact: FloatArray,
        nv: FloatArray,
        nx: FloatArray,
        code: Int16Array,
        src: int,
        dst: int,
        cids: Sequence[int],
        incs: FloatArray,
        grams: FloatArray,
        lo: int,
        lo2: int,
        edge: FloatArray,
    ) -> None:
        """Relax src -> dst running one slot at each allowed cap: exact work += inc; the bucket moves by
        floor(inc/q), plus one where the exact work crosses into the next bucket (a carry)."""
        q, w = self.q, self.width
        xs = exact[src][None] + incs[:, None, None]
        cs = value[src][None] + (grams - self.price * incs)[:, None, None]
        if (lo + w) * q + float(incs.max()) >= self.work - 1e-9:
            cs[xs >= self.work - 1e-9] = _INF  # finished: counted by _completions
        for n_c, c in enumerate(cids):
            s, may_carry = self.shift_of(float(incs[n_c]))
            xn, cn = xs[n_c], cs[n_c]
            carry = xn >= edge + (s + 1) * q if may_carry else None
            tag = src * 64 + (c + 1) * 2
            for extra in (0, 1) if may_carry else (0,):
                d = lo - lo2 + s + extra
                a, b = max(0, -d), min(w, w - d)
                if a >= b:
                    continue
                if carry is None:
                    cand = cn[:, a:b]
                else:
                    m = carry[:, a:b]
                    cand = np.where(m if extra else ~m, cn[:, a:b], _INF)
                cur = nv[dst, :, a + d : b + d]
                better = cand < cur
                np.copyto(cur, cand, where=better)
                np.copyto(nx[dst, :, a + d : b + d], xn[:, a:b], where=better)
                np.copyto(code[dst, :, a + d : b + d], tag + extra, where=better)

    def _completions(
        self,
        k: int,
        src: int,
        cids: Sequence[int],
        lost: float,
        incs: FloatArray,
        value: FloatArray,
        exact: FloatArray,
        best: tuple[float, float, int, int, int, int, int] | None,
    ) -> tuple[float, float, int, int, int, int, int] | None:
        """States that finish the work in slot k: their cost up to the finish (any allowed cap)."""
        if (int(self.lo[k]) + self.width) * self.q + float(incs.max()) < self.work - 1e-9:
            return best
        x = exact[src]
        done = (x[None] + incs[:, None, None] >= self.work - 1e-9) & np.isfinite(value[src])[None]
        if not done.any():
            return best
        cc, ii, jj = np.nonzero(done)
        xs = x[ii, jj]
        thr = np.array([self.thr[c] for c in cids])[cc]
        draw = np.array([self.draw[c] for c in cids])[cc]
        a = float(self.t[k])
        fin = a + lost + np.maximum(self.work - xs, 0.0) / thr
        cum = self.val.cumulative(np.concatenate(([a, a + lost], fin)))
        part = self.watts * (gpu_model.draw_fraction(1.0) * (cum[1] - cum[0]) + draw * (cum[2:] - cum[1]))
        total = value[src][ii, jj] + self.price * xs + part / _J_PER_KWH + self.embodied_per_s * (fin - a)
        # The cheapest; among equals (within float noise) the earliest finish.
        low = float(total.min())
        near = np.flatnonzero(total <= low + 1e-12 * max(abs(low), 1.0))
        m = int(near[np.argmin(fin[near])])
        cand = (float(total[m]), float(fin[m]), k, src, int(ii[m]), int(jj[m]), cids[int(cc[m])])
        if best is None or cand[0] < best[0] - 1e-9 * max(abs(best[0]), 1.0):
            return cand
        return best

    def _backtrack(self, best: tuple[float, float, int, int, int, int, int], tables: list[Int16Array]) -> list[Segment]:
        _, finish, k_end, state, i, j, cap = best
        slots: list[tuple[int, int]] = [(k_end, cap)]
        for k in range(k_end - 1, -1, -1):
            tag = int(tables[k][state, i, j])
            assert tag >= 0, "broken back-pointer"
            src, c, extra = tag // 64, (tag % 64) // 2 - 1, tag % 2
            lo, lo2 = int(self.lo[k]), int(self.lo[k + 1])
            if c < 0:
                j = j + lo2 - lo
                if state == _P and src not in (_F, _P) and self.limited:
                    i -= 1
            else:
                inc, _ = self.slot_run(k, self.lost(k, src), c)
                j = lo2 + j - self.shift_of(inc)[0] - extra - lo
                slots.append((k, c))
            state = src
        assert state == self.start_state and i == 0, "back-pointers do not lead to the start"
        slots.reverse()
        spans: list[tuple[float, float, float]] = []
        for k, c in slots:
            a = float(self.t[k])
            b = finish if k == k_end else float(self.t[k + 1])
            frac = self.caps[c]
            if spans and spans[-1][1] == a and spans[-1][2] == frac:
                spans[-1] = (spans[-1][0], b, frac)
            else:
                spans.append((a, b, frac))
        segments = [Segment(from_epoch(a), from_epoch(b), cap) for a, b, cap in spans]
        return segments


# ------------------------------------------------------------------ stability


def replan(
    previous: WholeRunPlan, req: WholeRunRequest, forecast: IntensitySeries, min_gain_percent: float = 1.0
) -> WholeRunPlan:
    """A new plan, unless the previous one (re-timed from now) still ends by the deadline and the new
    one saves less than `min_gain_percent` of its grams: plans do not flap on small forecast moves."""
    new = plan_whole_run(req, forecast)
    if not new.feasible:
        return new
    now = to_epoch(req.now)
    kept = [Segment(max(s.start, req.now), s.end, s.cap_fraction) for s in previous.segments if to_epoch(s.end) > now]
    if not kept:
        return new
    val = _Valuation.of(forecast, now)
    got = _evaluate(req, val, kept)
    ir = req.interruptible
    allowed = None if ir is None else ir.max_interruptions
    if got.finish > to_epoch(req.deadline) + _GAP_S:
        return new
    if got.interruptions and (
        ir is None or (allowed is not None and req.interruptions_used + got.interruptions > allowed)
    ):
        return new
    if new.expected_grams < got.grams * (1.0 - min_gain_percent / 100.0):
        return new
    straight = _evaluate(req, val, [_straight(req, now)])
    return replace(_plan_of(req, val, kept, straight, feasible=True), zone=previous.zone)


# ------------------------------------------------------------------ the fleet


@dataclass(frozen=True)
class FleetWholeRunJob:
    id: str
    request: WholeRunRequest
    zones: Sequence[str]  # candidate zones, the user's order
    zone: str | None = None  # where it runs or last ran: a started job stays there


def plan_fleet_whole_run(
    jobs: Sequence[FleetWholeRunJob],
    capacity: "Mapping[str, npt.NDArray[np.int64]] | Capacity",
    forecasts: Mapping[str, IntensitySeries],
    now: datetime,
    step: timedelta = DEFAULT_STEP,
) -> dict[str, WholeRunPlan]:
    """Whole-run plans for many jobs against the GPUs of each zone. A HEURISTIC around an exact per-job
    search:

    - capacity is given per slot of the fleet grid: slot i is [origin + i*step, origin + (i+1)*step),
      origin = `now` rounded down to `step`; arrays (or Capacity.grid) hold the GPUs that these jobs may
      use (a running job's own GPUs included: it may pause and give them up); past an array's end its
      last value holds;
    - jobs that cannot pause and are running come first, then earliest deadline first (then id);
    - each job is planned by plan_whole_run's exact search restricted to the slots where its GPUs fit
      in what the jobs before it left (a pause frees GPUs for the jobs after it; a resume needs them
      back), in each candidate zone (a started job: its own), and takes the cleanest feasible plan;
    - a job with no feasible plan gets the least late one: the earliest contiguous run at the highest cap
      that fits.
    The order is greedy: an earlier job never yields to a later one, so the fleet's optimum may be missed.
    """
    step_s = step.total_seconds()
    origin = math.floor(to_epoch(now) / step_s) * step_s
    longest = max((to_epoch(j.request.deadline) for j in jobs), default=origin) - origin
    n = math.ceil(max(longest, 0.0) / step_s) + 1
    free: dict[str, npt.NDArray[np.int64]] = {}
    zones = sorted({z for j in jobs for z in ([j.zone] if j.zone else j.zones)})
    for z in zones:
        if isinstance(capacity, Capacity):
            free[z] = capacity.grid(z, origin, step_s, n).astype(np.int64)
        else:
            free[z] = np.asarray(capacity.get(z, np.zeros(1, dtype=np.int64)), dtype=np.int64).copy()

    def order(j: FleetWholeRunJob) -> tuple[int, float, str]:
        fixed = j.request.running and j.request.interruptible is None
        return (0 if fixed else 1, to_epoch(j.request.deadline), j.id)

    plans: dict[str, WholeRunPlan] = {}
    for job in sorted(jobs, key=order):
        req = replace(job.request, now=now, step=step)
        candidates = [job.zone] if job.zone else [z for z in job.zones if z in forecasts]
        candidates = [z for z in candidates if z in forecasts]
        if not candidates:
            continue
        options: list[WholeRunPlan] = []
        for z in candidates:
            runnable = _Runnable(origin, step_s, _extend(free[z], n) >= req.gpus)
            got = _plan_single(req, forecasts[z], runnable, None)
            if got.feasible and _fits(got, free[z], origin, step_s, req.gpus):
                options.append(replace(got, zone=z))
        if options:
            chosen = min(options, key=lambda p: (p.expected_grams, candidates.index(p.zone or "")))
        else:
            chosen = _least_late(req, candidates, forecasts, free, origin, step_s)
        plans[job.id] = chosen
        if chosen.zone is not None:
            _take(chosen, free, origin, step_s, req.gpus)
    return plans


def _extend(a: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.int64]:
    if len(a) >= n:
        return a
    last = a[-1] if len(a) else 0
    out: npt.NDArray[np.int64] = np.concatenate((a, np.full(n - len(a), last, dtype=np.int64)))
    return out


def _slots_of(plan: WholeRunPlan, origin: float, step_s: float) -> list[int]:
    """Fleet slots the plan's segments touch (a run holds its GPUs in every slot it touches)."""
    out: list[int] = []
    for s in plan.segments:
        a, b = to_epoch(s.start), to_epoch(s.end)
        if b - a <= _GAP_S:
            continue
        out.extend(range(int((a - origin + _GAP_S) // step_s), math.ceil((b - origin - _GAP_S) / step_s)))
    return sorted(set(out))


def _fits(plan: WholeRunPlan, free: npt.NDArray[np.int64], origin: float, step_s: float, gpus: int) -> bool:
    slots = _slots_of(plan, origin, step_s)
    arr = _extend(free, max(slots, default=0) + 1)
    return all(arr[i] >= gpus for i in slots)


def _take(plan: WholeRunPlan, free: dict[str, npt.NDArray[np.int64]], origin: float, step_s: float, gpus: int) -> None:
    assert plan.zone is not None
    slots = _slots_of(plan, origin, step_s)
    arr = _extend(free[plan.zone], max(slots, default=0) + 1).copy()
    for i in slots:
        arr[i] -= gpus
    free[plan.zone] = arr


def _least_late(
    req: WholeRunRequest,
    zones: Sequence[str],
    forecasts: Mapping[str, IntensitySeries],
    free: Mapping[str, npt.NDArray[np.int64]],
    origin: float,
    step_s: float,
) -> WholeRunPlan:
    """The earliest contiguous run at the highest cap that fits, over the zones (then the cleaner)."""
    now = to_epoch(req.now)
    run = _straight(req, now)
    length = to_epoch(run.end) - now
    best: tuple[float, float, str] | None = None
    for z in zones:
        arr = free[z]
        if (arr[-1] if len(arr) else 0) < req.gpus and not (arr >= req.gpus).any():
            continue
        i0 = int((now - origin) // step_s)
        need = math.ceil((now + length - origin) / step_s) - i0 + 1
        arr = _extend(arr, i0 + need + len(arr) + 1)
        ok = arr >= req.gpus
        for i in range(i0, len(arr) - need):
            if ok[i : i + need].all():
                start = max(now, origin + i * step_s)
                val = _Valuation.of(forecasts[z], now)
                grams = _evaluate(req, val, [_straight(req, start)]).grams
                if best is None or (start, grams) < best[:2]:
                    best = (start, grams, z)
                break
    val0 = _Valuation.of(forecasts[zones[0]], now)
    straight = _evaluate(req, val0, [run])
    if best is None:  # more GPUs than the zones ever have: straight through, flagged, no zone
        return _plan_of(req, val0, [run], straight, feasible=False)
    start, _, zone = best
    val = _Valuation.of(forecasts[zone], now)
    seg = _straight(req, start)
    plan = _plan_of(req, val, [seg], _evaluate(req, val, [_straight(req, now)]), feasible=False)
    on_time = to_epoch(plan.finishes_at) <= to_epoch(req.deadline) + _GAP_S
    return replace(plan, zone=zone, feasible=on_time)
