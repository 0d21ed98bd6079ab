"""The operator's readiness: every watched kind holds the handlers until it is listed; READY once."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import kopf
import pytest

from greenjobs.controller.handlers import register
from greenjobs.runtime.readiness import READY, Readiness


def _kinds(handlers: Iterable[Any]) -> set[tuple[str, str, str]]:
    return {(h.selector.group, h.selector.version, h.selector.plural or h.selector.any_name) for h in handlers}


def test_every_watched_kind_has_the_index_that_holds_the_handlers_until_it_is_listed() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, Readiness())
    watched = _kinds(registry._watching.get_all_handlers())
    indexed = _kinds(registry._indexing.get_all_handlers())
    assert ("", "v1", "nodes") in watched  # the kind every cluster has an object of
    assert watched == indexed


def test_ready_is_logged_once_by_the_first_event(caplog: pytest.LogCaptureFixture) -> None:
    readiness = Readiness()
    assert not readiness.ready()
    with caplog.at_level(logging.INFO, logger="greenjobs.runtime.readiness"):
        for _ in range(3):
            readiness.seen()
    assert readiness.ready()
    assert [r.getMessage() for r in caplog.records] == [READY]
