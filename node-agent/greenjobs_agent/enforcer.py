"""Sets the GPUs that greenjobs jobs hold to their cap; gives every GPU it capped back its old limit.

Rules:
- A GPU that no greenjobs job holds is never changed, unless greenjobs capped it and its limit is
  still the one greenjobs set: then it gets back the limit it had BEFORE greenjobs capped it.
- The limit a GPU had before its first cap is recorded in the state file and persisted before the
  limit is changed (write-ahead), so a crash between the two can never lose it.
- A lower limit set by an administrator stays: the cap is never above the recorded limit, and a
  limit changed by someone else while greenjobs holds the GPU becomes the limit to go back to.
- A GPU that cannot be capped (not supported, no permission) or is lost is logged once and skipped
  from then on: the agent never crash-loops on one bad GPU.
"""

import logging
from collections.abc import Callable

from .gpu.base import GpuBackend, GpuError, GpuLost, NoPermission, NotSupported, clamp
from .sharing import Want
from .state import AgentState, Applied

log = logging.getLogger(__name__)

# GPU index -> what greenjobs wants of it; a GPU absent is held by no greenjobs job.
Desired = dict[int, Want]


class Enforcer:
    def __init__(
        self,
        backend: GpuBackend,
        state: AgentState,
        on_error: Callable[[str], None] = lambda kind: None,
        persist: Callable[[], None] = lambda: None,
    ) -> None:
        self._backend = backend
        self._state = state
        self._on_error = on_error
        self._persist = persist  # saves the state file (write-ahead of a first cap)
        self.skipped: dict[int, str] = {}  # GPU index -> why it is no longer capped
        self.lost: set[int] = set()  # GPUs that are gone: not metered either

    def reconcile(self, desired: Desired) -> None:
        """Make the limits match `desired` on the GPUs greenjobs holds or capped; touch no other."""
        for dev in self._backend.devices():
            i = dev.index
            if i in self.skipped:
                continue
            want = desired.get(i)
            try:
                if want is None or (want.cap_watts is None and not want.keep):
                    self._release(i)
                elif not want.keep and want.cap_watts is not None:
                    self._cap(i, want.cap_watts)
            except (GpuLost, NotSupported, NoPermission) as e:
                self._skip(i, e)
            except GpuError as e:
                # Transient (timeout, unknown): try again next tick.
                log.warning("power limit not set: %s", e, extra={"gpu": i})
                self._on_error("set_limit")

    def restore_all(self) -> None:
        """Give every GPU greenjobs capped its old limit back (SIGTERM)."""
        for i in sorted(self._state.applied):
            if i in self.skipped:
                continue
            try:
                self._release(i)
            except GpuError as e:
                log.warning("limit not restored: %s", e, extra={"gpu": i})
                self._on_error("restore")

    def cap_mw(self, index: int) -> int | None:
        a = self._state.applied.get(index)
        return a.mw if a is not None else None

    def _cap(self, i: int, cap_watts: int) -> None:
        applied = self._state.applied.get(i)
        current = self._backend.get_limit_mw(i)
        if applied is None:
            original: int | None = current
        elif current != applied.mw:
            # Someone else (an administrator, nvidia-smi -pl) set this limit while greenjobs held the
            # GPU (or a crash came between recording a cap and setting it): the limit found is the
            # one to go back to, and the cap never goes above it.
            log.warning(
                "power limit is not the one greenjobs set; keeping it as the limit to restore",
                extra={"gpu": i, "limitWatts": current / 1000},
            )
            original = current
        else:
            original = applied.original_mw
        ceiling = original if original is not None else self._backend.default_limit_mw(i)
        target = clamp(min(cap_watts * 1000, ceiling), self._backend.constraints(i))
        if applied is None or applied.mw != target or applied.original_mw != original:
            self._state.applied[i] = Applied(target, original)
            self._persist()  # what to go back to is on disk before the limit changes
        if current != target:
            self._set(i, target)

    def _release(self, i: int) -> None:
        applied = self._state.applied.get(i)
        if applied is None:
            return  # greenjobs did not cap it: not ours to change
        current = self._backend.get_limit_mw(i)
        if current == applied.mw:
            back = applied.original_mw if applied.original_mw is not None else self._backend.default_limit_mw(i)
            if back != current:
                self._set(i, back)
        else:
            log.info("limit changed outside greenjobs since it was capped; left as it is", extra={"gpu": i})
        del self._state.applied[i]

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
