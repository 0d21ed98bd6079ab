"""Cumulative GPU energy per job on this node, from the GPUs' energy counters.

Each sample records who held each GPU since the previous sample (AgentState.history, persisted); a
GPU's counter delta since its last reading is split over those spans by the time each job held the
GPU, times its share (1 for a GPU of its own; an estimated share of a shared GPU or MIG parent, see
sharing.py); so are the GPU-seconds. Time in no span (nobody held the GPU) is idle: its energy is no
job's. A delta that spans missed readings (a failing counter, a lost GPU) is thus split among
whoever held the GPU when.

Between two samples the holders seen at the first keep the GPU, unless the holders changed and the
pods tell when: the new holders hold from their latest pod's start, and a job with no pod left here
held until its pods' end (or the new holders' start, when no end is known). This is what splits the
time an agent was down (a restart, an unsynced view). Where neither time is known the rule is the
old one: the holders at the previous sample keep the GPU until the next sample.

A counter that went backwards was reset (driver reload): the interval then counts from 0. Totals and
the last readings live in AgentState, which the agent persists, so a restart continues from the last
readings without counting anything twice.
"""

import logging
from collections.abc import Callable, Mapping
from datetime import datetime

from .gpu.base import GpuBackend, GpuError
from .pods import JobKey
from .state import AgentState, Held, JobTotals

log = logging.getLogger(__name__)


class Meter:
    def __init__(
        self,
        backend: GpuBackend,
        state: AgentState,
        on_error: Callable[[str], None] = lambda kind: None,
    ) -> None:
        self._backend = backend
        self._state = state
        self._on_error = on_error
        self._failing: set[int] = set()  # GPUs whose last read failed (logged once until recovery)
        self.last_counter_mj: dict[int, int] = {}

    def sample(
        self,
        now: datetime,
        holders: dict[int, dict[JobKey, float]],
        skip: frozenset[int] = frozenset(),
        since: Mapping[int, float] | None = None,
        released: Mapping[JobKey, float] | None = None,
    ) -> None:
        """`since`: per GPU, when its current pods started (the latest start); `released`: when each
        job with no running pod here ended (its pods' latest end). Both epoch seconds, when known."""
        st = self._state
        now_s = now.timestamp()
        last = st.last_sample_s
        if last is not None and now_s > last:
            for i in set(st.holders) | set(holders):
                spans = _spans(
                    last, now_s, st.holders.get(i, {}), holders.get(i, {}), (since or {}).get(i), released or {}
                )
                _extend(st.history.setdefault(i, []), spans)
        for dev in self._backend.devices():
            i = dev.index
            if i in skip:
                continue
            try:
                counter = self._backend.total_energy_mj(i)
            except GpuError as e:
                if i not in self._failing:
                    log.warning("energy counter not read: %s", e, extra={"gpu": i})
                    self._failing.add(i)
                self._on_error("energy")
                continue
            self._failing.discard(i)
            self.last_counter_mj[i] = counter
            previous = st.counters_mj.get(i)
            st.counters_mj[i] = counter
            spans = st.history.pop(i, [])
            start = st.read_s.get(i, last)  # state files from before readS: the last sample
            st.read_s[i] = now_s
            if previous is None or start is None:
                continue
            delta = counter - previous if counter >= previous else counter  # reset: count from 0
            if now_s > start:
                self._charge(delta / 1000, spans, start, now_s)
            else:  # no time passed (or the clock went back): the holders at the last sample, as before
                for job, share in st.holders.get(i, {}).items():
                    st.jobs.setdefault(job, JobTotals()).add(delta * share / 1000, 0.0, now_s, now_s)
        st.holders = {i: dict(s) for i, s in holders.items() if s}
        for i in [i for i, hs in st.history.items() if not hs]:
            del st.history[i]
        for shares in holders.values():
            for job in shares:
                st.jobs.setdefault(job, JobTotals())
        st.last_sample_s = now_s

    def _charge(self, joules: float, spans: list[Held], start: float, end: float) -> None:
        """Split `joules` used over (start, end] by the time each job held the GPU in it."""
        whole = end - start
        for span in spans:
            a, b = max(span.start_s, start), min(span.end_s, end)
            if b <= a:
                continue
            for job, share in span.shares.items():
                totals = self._state.jobs.setdefault(job, JobTotals())
                totals.add(joules * (b - a) / whole * share, (b - a) * share, a, b)

    def totals(self, job: JobKey) -> JobTotals | None:
        return self._state.jobs.get(job)


def _spans(
    last: float,
    now: float,
    old: dict[JobKey, float],
    new: dict[JobKey, float],
    since: float | None,
    released: Mapping[JobKey, float],
) -> list[Held]:
    """Who held one GPU over (last, now], from the holders seen at both ends and the pods' times."""
    if old.keys() == new.keys():  # the same jobs (shares may move with utilisation): the previous sample's
        return [Held(last, now, dict(old))] if old else []
    # The holders changed: the new ones from their pods' latest start (before `last`: the whole span;
    # unknown: not before `now`, i.e. the old holders keep the span, the rule without pod times).
    b = now if since is None else min(max(since, last), now)
    out: list[Held] = []
    for job, share in old.items():
        end = b
        if job not in new and job in released:
            end = min(max(released[job], last), b)  # its pods ended: idle from then on, not its energy
        if end > last:
            out.append(Held(last, end, {job: share}))
    if new and b < now:
        out.append(Held(b, now, dict(new)))
    return out


def _extend(history: list[Held], spans: list[Held]) -> None:
    for span in spans:
        if history and history[-1].shares == span.shares and history[-1].end_s == span.start_s:
            history[-1] = Held(history[-1].start_s, span.end_s, span.shares)  # one span per stable holding
        else:
            history.append(span)
