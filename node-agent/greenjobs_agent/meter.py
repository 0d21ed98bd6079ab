"""Cumulative GPU energy per job on this node, from the GPUs' energy counters.

Each sample's counter delta of a GPU goes to the jobs that held the GPU during the interval (the
holders at the previous sample), each by its share (1 for a GPU of its own; an estimated share of a
shared GPU or MIG parent, see sharing.py); so do the GPU-seconds. A counter that went backwards was
reset (driver reload): the interval then counts from 0. Totals and the last readings live in AgentState, which the agent
persists, so a restart continues from the last readings without counting anything twice.
"""

import logging
from collections.abc import Callable
from datetime import datetime

from .gpu.base import GpuBackend, GpuError
from .pods import JobKey
from .state import AgentState, JobTotals

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
        self, now: datetime, holders: dict[int, dict[JobKey, float]], skip: frozenset[int] = frozenset()
    ) -> None:
        st = self._state
        now_s = now.timestamp()
        dt = now_s - st.last_sample_s if st.last_sample_s is not None else 0.0
        dt = max(dt, 0.0)
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
            shares = st.holders.get(i)
            if previous is None or not shares:
                continue
            delta = counter - previous if counter >= previous else counter  # reset: count from 0
            for job, share in shares.items():
                totals = st.jobs.setdefault(job, JobTotals())
                totals.joules += delta * share / 1000
                totals.gpu_seconds += dt * share
        st.holders = {i: dict(s) for i, s in holders.items() if s}
        for shares in holders.values():
            for job in shares:
                st.jobs.setdefault(job, JobTotals())
        st.last_sample_s = now_s

    def totals(self, job: JobKey) -> JobTotals | None:
        return self._state.jobs.get(job)
