"""kopf handlers: each translates an event into one Reconciler call. No logic lives here."""

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import kopf

from greenjobs.api import constants as c

from .config import OperatorConfig
from .reconciler import JobState, Reconciler, job_state


@dataclass
class Memo:
    """Dependencies handed to every handler through kopf's `memo` (no module globals)."""

    reconciler: Reconciler


def _zones(node_zones: kopf.Index[str, str]) -> Collection[str]:
    return set(node_zones.keys())


def _job(kwargs: dict[str, Any], namespace: str | None, name: str, uid: str) -> JobState | None:
    jobs: kopf.Index[tuple[str, str], JobState] = kwargs["gtj_jobs"]  # kopf passes indexes by name
    return next((j for j in jobs.get((namespace or "", name), []) if uid in j.owner_uids), None)


def _nodes(kwargs: dict[str, Any]) -> Collection[str]:
    return _zones(kwargs["node_zones"])


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    gtj: dict[str, Any] = {"group": c.GROUP, "version": c.VERSION, "plural": c.PLURAL, "registry": registry}

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A private registry has none of kopf's default login handlers: in-cluster first, then KUBECONFIG.
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry, id="configure")
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Our structural status schema would prune kopf's own status fields: keep its state in
        # annotations under our prefix instead.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=c.GROUP, key="last-handled-configuration"
        )
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = 270  # re-establish watches regularly; kopf re-lists on 410
        settings.watching.client_timeout = 300
        settings.execution.max_workers = 16
        settings.networking.error_backoffs = [1, 2, 5, 10, 30]

    @kopf.index("batch", "v1", "jobs", labels={c.LABEL_JOB: kopf.PRESENT}, id="gtj_jobs", registry=registry)
    def gtj_jobs(
        namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
    ) -> dict[tuple[str, str], JobState]:
        return {(namespace or "", labels[c.LABEL_JOB]): job_state(body)}

    @kopf.index("v1", "nodes", id="node_zones", registry=registry)
    def node_zones(labels: kopf.Labels, name: str, **_: Any) -> dict[str, str] | None:
        value = labels.get(config.zone_label)
        return None if value is None else {config.zone_map.get(value, value): name}

    @kopf.on.resume(**gtj, id="ensure")
    @kopf.on.create(**gtj, id="ensure")
    def ensure(
        body: kopf.Body,
        status: kopf.Status,
        patch: kopf.Patch,
        namespace: str | None,
        name: str,
        uid: str,
        memo: Memo,
        **kwargs: Any,
    ) -> None:
        memo.reconciler.ensure(dict(body), status, patch, _nodes(kwargs), _job(kwargs, namespace, name, uid))

    @kopf.on.update(**gtj, field="spec", id="respec")
    def respec(
        body: kopf.Body,
        status: kopf.Status,
        patch: kopf.Patch,
        diff: kopf.Diff,
        namespace: str | None,
        name: str,
        uid: str,
        memo: Memo,
        **kwargs: Any,
    ) -> None:
        memo.reconciler.respec(dict(body), status, patch, diff, _nodes(kwargs), _job(kwargs, namespace, name, uid))

    @kopf.timer(**gtj, interval=config.tick_seconds, initial_delay=config.tick_seconds, id="tick")
    def tick(
        body: kopf.Body,
        status: kopf.Status,
        patch: kopf.Patch,
        namespace: str | None,
        name: str,
        uid: str,
        memo: Memo,
        **kwargs: Any,
    ) -> None:
        memo.reconciler.tick(dict(body), status, patch, _nodes(kwargs), _job(kwargs, namespace, name, uid))

    @kopf.on.delete(**gtj, optional=True, id="forget")
    def forget(uid: str, memo: Memo, **_: Any) -> None:
        # optional=True: no finalizer; the owned Job goes by ownerReference (garbage collection).
        memo.reconciler.metrics.observe_phase(uid, None)
        memo.reconciler.last_replan.pop(uid, None)
        memo.reconciler.last_power.pop(uid, None)
