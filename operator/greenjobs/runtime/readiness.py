"""Readiness of a kopf operator: "the initial list of every watched kind is in".

kopf has no hook for the end of a LIST, but it has one rule that gives it: while an index is being
populated, kopf calls no handler at all, and an index is populated once the initial list of its kind
has been indexed. So an index that stores nothing on every watched kind holds every handler until all
those lists are in; the first event handled after that is the moment of readiness. It is logged once
(READY, what the tests wait for instead of sleeping) and served by kopf's liveness endpoint as the
probe `ready`.
"""

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import kopf

READY = "ready: the initial list of every watched kind is in"

log = logging.getLogger(__name__)


async def _index_nothing(**_: Any) -> None:
    """An index that stores nothing: only its gate on the handlers is wanted. Async, so that kopf calls
    it in its event loop: no thread hop per watch event."""
    return None


@dataclass
class Readiness:
    """Set by the first event handled; the operator needs at least one object of some watched kind
    (the GreenTrainingJob operator watches nodes: every cluster has one)."""

    _ready: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ready(self) -> bool:
        return self._ready.is_set()

    def seen(self) -> None:
        """Called by every event handler: cheap after the first time."""
        if self._ready.is_set():
            return
        with self._lock:
            if not self._ready.is_set():
                self._ready.set()
                log.info(READY)


def hold_handlers_until_listed(registry: kopf.OperatorRegistry, *resource: str, **filters: Any) -> None:
    """Register the empty index on one watched kind: `resource` and `filters` as on its event handler."""
    kopf.index(*resource, id=f"listed-{resource[-1]}", registry=registry, **filters)(_index_nothing)
    logging.getLogger("kopf.objects").addFilter(_quiet_index)  # the same filter is added once


def serve_readiness(registry: kopf.OperatorRegistry, readiness: Readiness) -> None:
    """`ready: true|false` in the liveness endpoint's answer."""

    @kopf.on.probe(id="ready", registry=registry)
    def ready(**_: Any) -> bool:
        return readiness.ready()

    logging.getLogger("kopf.activities.probe").addFilter(_quiet_probe)


def _quiet_probe(record: logging.LogRecord) -> bool:
    """Drop "Activity 'ready' succeeded.": one line per liveness check is noise; failures still show."""
    return not (record.levelno == logging.INFO and record.getMessage() == "Activity 'ready' succeeded.")


def _quiet_index(record: logging.LogRecord) -> bool:
    """Drop "Indexer 'listed-pods' succeeded." and the like: one line per watch event is noise."""
    msg = record.getMessage()
    return not (record.levelno == logging.INFO and msg.startswith("Indexer 'listed-") and msg.endswith("' succeeded."))
