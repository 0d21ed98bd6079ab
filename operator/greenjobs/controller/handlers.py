"""kopf handlers: watch events in, nothing else. The decisions and writes live in the Controller.

Only `on.event` handlers and activities are registered: kopf then needs no finalizer on a
GreenTrainingJob and writes no annotation to it (no last-handled-configuration, no progress), so a
GTJ can be deleted with no operator running, a large spec breaks nothing, and creating a deferred job
costs three writes: its Job, its status and one Event.
"""

from dataclasses import dataclass, field
from typing import Any

import kopf

from greenjobs.api import constants as c
from greenjobs.runtime.readiness import Readiness, hold_handlers_until_listed, serve_readiness
from greenjobs.workloads import ADAPTERS

from .loop import Controller

LIST_CHUNK = 500  # objects per page of an initial list


@dataclass
class Memo:
    """Dependencies handed to every handler through kopf's `memo` (no module globals)."""

    controller: Controller
    readiness: Readiness = field(default_factory=Readiness)


def watch_only_what_matters(settings: kopf.OperatorSettings) -> None:
    """Server-side selectors, so that what the operator never acts on never reaches it: settled
    GreenTrainingJobs (finished long enough: months of them cost nothing), workloads greenjobs did not
    create, and finished pods (they hold no GPU). Initial lists come in chunks: no 10,000-object
    response parsed at once."""
    settings.watching.chunk_size = LIST_CHUNK
    # `!= true`, not "label absent": a label with any other value is no reason to stop watching a job.
    settings.watching.label_selectors[c.GROUP, c.PLURAL] = f"{c.LABEL_SETTLED}!=true"
    for adapter in ADAPTERS:
        settings.watching.label_selectors[adapter.group, adapter.plural] = c.LABEL_JOB
    settings.watching.field_selectors["v1", "pods"] = "status.phase!=Succeeded,status.phase!=Failed"


def register(registry: kopf.OperatorRegistry, readiness: Readiness) -> None:
    """`readiness`: the same object as the Memo's, for the liveness endpoint's probe."""
    gtj: dict[str, Any] = {"group": c.GROUP, "version": c.VERSION, "plural": c.PLURAL, "registry": registry}
    serve_readiness(registry, readiness)

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A private registry has none of kopf's default login handlers: in-cluster first, then KUBECONFIG.
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry, id="configure")
    def configure(settings: kopf.OperatorSettings, memo: Memo, **_: Any) -> None:
        settings.posting.enabled = False  # Events are posted by the executor, not from kopf's log records
        settings.watching.server_timeout = 270  # re-establish watches regularly; kopf re-lists on 410
        settings.watching.client_timeout = 300
        settings.execution.max_workers = 4  # event handlers only enqueue: a few threads suffice
        settings.networking.error_backoffs = [1, 2, 5, 10, 30]
        watch_only_what_matters(settings)
        memo.controller.start()

    @kopf.on.cleanup(registry=registry, id="stop")
    def stop(memo: Memo, **_: Any) -> None:
        memo.controller.stop()

    # No handler runs before every kind below is listed: the first look at a job sees its Job and the nodes.
    hold_handlers_until_listed(registry, c.GROUP, c.VERSION, c.PLURAL)
    hold_handlers_until_listed(registry, "v1", "pods")
    hold_handlers_until_listed(registry, "v1", "nodes")

    @kopf.on.event(**gtj, id="gtj")
    def gtj_event(event: kopf.RawEvent, body: kopf.Body, memo: Memo, **_: Any) -> None:
        memo.readiness.seen()
        memo.controller.on_gtj(event.get("type"), body)

    def job_event(event: kopf.RawEvent, body: kopf.Body, memo: Memo, **_: Any) -> None:
        memo.readiness.seen()
        memo.controller.on_job(event.get("type"), body)

    # The owned workloads of every supported kind (kopf watches a kind once its CRD exists).
    for adapter in ADAPTERS:
        version = adapter.api_version.rsplit("/", 1)[-1]
        handler_id = "job" if adapter.kind == "Job" else f"workload-{adapter.plural}"
        kopf.on.event(
            adapter.group, version, adapter.plural, labels={c.LABEL_JOB: kopf.PRESENT}, id=handler_id, registry=registry
        )(job_event)
        hold_handlers_until_listed(registry, adapter.group, version, adapter.plural, labels={c.LABEL_JOB: kopf.PRESENT})

    @kopf.on.event("v1", "pods", id="pod", registry=registry)
    def pod_event(event: kopf.RawEvent, body: kopf.Body, memo: Memo, **_: Any) -> None:
        memo.readiness.seen()
        memo.controller.on_pod(event.get("type"), body)

    @kopf.on.event("v1", "nodes", id="node", registry=registry)
    def node_event(event: kopf.RawEvent, body: kopf.Body, memo: Memo, **_: Any) -> None:
        memo.readiness.seen()
        memo.controller.on_node(event.get("type"), body)
