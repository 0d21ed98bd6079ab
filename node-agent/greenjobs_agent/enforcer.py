"""Sets each GPU of a running GreenTrainingJob pod to the job's target cap; restores the rest.

What it set is recorded in AgentState.applied (persisted by the agent), so that a restarted agent
knows what to undo. A GPU that cannot be capped (not supported, no permission) or is lost is logged
once and skipped from then on: the agent never crash-loops on one bad GPU.
"""

import logging
from collections.abc import Callable

from .gpu.base import GpuBackend, GpuError, GpuLost, NoPermission, NotSupported, clamp
from .pods import JobKey
from .state import AgentState, Applied

log = logging.getLogger(__name__)

# GPU index -> (job holding it, targetCapWatts or None for the default limit)
Desired = dict[int, tuple[JobKey, int | None]]


class Enforcer:
    def __init__(
        self,
        backend: GpuBackend,
        state: AgentState,
        on_error: Callable[[str], None] = lambda kind: None,
    ) -> None:
        self._backend = backend
        self._state = state
        self._on_error = on_error
        self.skipped: dict[int, str] = {}  # GPU index -> why it is no longer capped
        self.lost: set[int] = set()  # GPUs that are gone: not metered either

    def reconcile(self, desired: Desired, full: bool = False) -> None:
        """Make the limits match `desired`. `full` (at start) reads every GPU's limit and resets any
        GPU not in `desired` to its default, whatever the state file says."""
        for dev in self._backend.devices():
            i = dev.index
            if i in self.skipped:
                continue
            try:
                self._reconcile_one(i, desired.get(i), full)
            except (GpuLost, NotSupported, NoPermission) as e:
                self._skip(i, e)
            except GpuError as e:
                # Transient (timeout, unknown): try again next tick.
                log.warning("power limit not set: %s", e, extra={"gpu": i})
                self._on_error("set_limit")

    def restore_all(self) -> None:
        """Put every GPU this agent capped back to its default limit (SIGTERM)."""
        for i in sorted(self._state.applied):
            if i in self.skipped:
                continue
            try:
                self._set(i, self._backend.default_limit_mw(i))
            except GpuError as e:
                log.warning("default limit not restored: %s", e, extra={"gpu": i})
                self._on_error("restore")
                continue
            del self._state.applied[i]

    def cap_mw(self, index: int) -> int | None:
        a = self._state.applied.get(index)
        return a.mw if a is not None else None

    def _reconcile_one(self, i: int, want: tuple[JobKey, int | None] | None, full: bool) -> None:
        applied = self._state.applied.get(i)
        if want is None:
            if full:
                default = self._backend.default_limit_mw(i)
                if self._backend.get_limit_mw(i) != default:
                    self._set(i, default)
                self._state.applied.pop(i, None)
            elif applied is not None:
                self._set(i, self._backend.default_limit_mw(i))
                del self._state.applied[i]
            return
        job, cap_watts = want
        if cap_watts is None:
            target = self._backend.default_limit_mw(i)
        else:
            target = clamp(cap_watts * 1000, self._backend.constraints(i))
        if full:
            if self._backend.get_limit_mw(i) != target:
                target = self._set(i, target)
        elif applied is None or applied.mw != target:
            target = self._set(i, target)
        self._state.applied[i] = Applied(job, target)

    def _set(self, i: int, mw: int) -> int:
        applied = self._backend.set_limit_mw(i, mw)
        log.info("power limit set", extra={"gpu": i, "limitWatts": applied / 1000})
        return applied

    def _skip(self, i: int, e: GpuError) -> None:
        self.skipped[i] = str(e)
        if isinstance(e, GpuLost):
            self.lost.add(i)
        self._state.applied.pop(i, None)
        log.error("GPU skipped for capping from now on: %s", e, extra={"gpu": i})
        self._on_error(type(e).__name__)
