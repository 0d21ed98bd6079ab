"""A delaying, de-duplicating work queue, the shape of client-go's: one key is never processed twice at once.

Each GreenTrainingJob is a key. A key added while it is being processed is handed out again only when
that processing is done, so the handlers of one object are serialized by construction (no lost
updates between a timer and a change handler); different objects run in parallel on the workers.
"""

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}  # scheduled keys -> their earliest due time (heap entries may be stale)
        self._processing: set[K] = set()
        self._seq = itertools.count()
        self._closed = False

    def add(self, key: K, delay: float = 0.0) -> None:
        """Schedule `key` in `delay` seconds; an earlier schedule of the same key wins."""
        due = self._clock() + max(delay, 0.0)
        with self._cv:
            if self._closed:
                return
            current = self._due.get(key)
            if current is not None and current <= due:
                return
            self._due[key] = due
            heapq.heappush(self._heap, (due, next(self._seq), key))
            self._cv.notify()

    def forget(self, key: K) -> None:
        with self._cv:
            self._due.pop(key, None)

    def get(self, timeout: float | None = None) -> K | None:
        """The next due key that is not being processed, or None after `timeout` (or when closed)."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cv:
            while not self._closed:
                now = self._clock()
                wait = self._next_wait(now)
                if wait == 0.0:
                    key = self._pop_due(now)
                    if key is not None:
                        return key
                    continue
                if deadline is not None:
                    if now >= deadline:
                        return None
                    wait = min(wait if wait is not None else deadline - now, deadline - now)
                self._cv.wait(wait)
            return None

    def _next_wait(self, now: float) -> float | None:
        """0 when a due, free key may be at the top; else seconds to the next due time (None: nothing)."""
        while self._heap:
            due, _, key = self._heap[0]
            if self._due.get(key) != due:
                heapq.heappop(self._heap)  # stale: re-scheduled earlier or forgotten
                continue
            return 0.0 if due <= now else due - now
        return None

    def _pop_due(self, now: float) -> K | None:
        deferred: list[tuple[float, int, K]] = []
        found: K | None = None
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            key = entry[2]
            if self._due.get(key) != entry[0]:
                continue
            if key in self._processing:
                deferred.append(entry)  # handed out again once its current processing is done
                continue
            del self._due[key]
            self._processing.add(key)
            found = key
            break
        for entry in deferred:
            heapq.heappush(self._heap, entry)
        if found is None and deferred:
            # Only busy keys are due: sleep until one is done (done() notifies).
            self._cv.wait(0.5)
        return found

    def done(self, key: K) -> None:
        with self._cv:
            self._processing.discard(key)
            self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def __len__(self) -> int:
        with self._cv:
            return len(self._due)


def serve(
    queue: WorkQueue[K], process: Callable[[K], None], active: threading.Event, stopping: threading.Event
) -> None:
    """One worker thread's loop: while this replica may act (`active`), take due keys and process
    them one at a time; a key taken just as leadership was lost goes back for whoever leads."""
    while not stopping.is_set():
        if not active.wait(timeout=1.0):
            continue
        key = queue.get(timeout=1.0)
        if key is None:
            continue
        try:
            if stopping.is_set() or not active.is_set():
                queue.add(key, 1.0)
                continue
            process(key)
        finally:
            queue.done(key)


def stop_workers(
    queue: WorkQueue[K], active: threading.Event, stopping: threading.Event, threads: list[threading.Thread]
) -> None:
    stopping.set()
    active.set()  # wake workers waiting for leadership so they can exit
    queue.close()
    for t in threads:
        t.join(timeout=10)
