"""kopf handlers of the carbon AdmissionCheck: each hands one watch event to KueueCheck, which only
updates its caches and queues keys (no I/O here: kopf does not retry event handlers).

Only event handlers: no finalizers and no kopf annotations on Kueue's objects (a timer would put a
finalizer on every Workload); the planned starts are kept by a ticker thread instead. No handler runs
before the initial list of every watched kind is in (runtime/readiness.py): a Workload is never
planned against a ClusterQueue or ResourceFlavor not seen yet. Then "ready: ..." is logged once.
"""

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import kopf

from greenjobs.runtime.readiness import Readiness, hold_handlers_until_listed, serve_readiness

from .controller import KueueCheck
from .names import KUEUE_GROUP, KUEUE_VERSION

KINDS = ("admissionchecks", "clusterqueues", "localqueues", "resourceflavors", "workloads")


@dataclass
class Memo:
    check: KueueCheck
    tick_seconds: float = 1.0
    stop: threading.Event = field(default_factory=threading.Event)
    readiness: Readiness = field(default_factory=Readiness)


def register(registry: kopf.OperatorRegistry, readiness: Readiness) -> None:
    """`readiness`: the same object as the Memo's, for the liveness endpoint's probe (it needs one object
    of a watched kind: every cluster has a node)."""
    kq: dict[str, Any] = {"group": KUEUE_GROUP, "version": KUEUE_VERSION, "registry": registry}
    serve_readiness(registry, readiness)
    for plural in KINDS:
        hold_handlers_until_listed(registry, KUEUE_GROUP, KUEUE_VERSION, plural)
    hold_handlers_until_listed(registry, "v1", "nodes")

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry, id="start-ticker")
    def start(settings: kopf.OperatorSettings, memo: Memo, **_: Any) -> None:
        settings.posting.level = logging.WARNING
        settings.execution.max_workers = 4

        def ticker() -> None:
            while not memo.stop.wait(memo.tick_seconds):
                try:
                    memo.check.tick()
                except Exception:  # keep ticking; the next tick or event retries
                    logging.getLogger("greenjobs.kueue").exception("tick failed")

        threading.Thread(target=ticker, name="kueue-check-ticker", daemon=True).start()
        memo.check.start()

    @kopf.on.cleanup(registry=registry, id="stop-ticker")
    def stop(memo: Memo, **_: Any) -> None:
        memo.stop.set()
        memo.check.stop()

    @kopf.on.event(plural="admissionchecks", id="admission-checks", **kq)
    def admission_check(body: kopf.Body, type: str | None, memo: Memo, **_: Any) -> None:
        memo.readiness.seen()
        memo.check.on_admission_check(dict(body), type == "DELETED")

    @kopf.on.event(plural="clusterqueues", id="cluster-queues", **kq)
    def cluster_queue(body: kopf.Body, type: str | None, memo: Memo, **_: Any) -> None:
        memo.readiness.seen()
        memo.check.on_cluster_queue(dict(body), type == "DELETED")

    @kopf.on.event(plural="localqueues", id="local-queues", **kq)
    def local_queue(body: kopf.Body, type: str | None, memo: Memo, **_: Any) -> None:
        memo.readiness.seen()
        memo.check.on_local_queue(dict(body), type == "DELETED")

    @kopf.on.event(plural="resourceflavors", id="resource-flavors", **kq)
    def resource_flavor(body: kopf.Body, type: str | None, memo: Memo, **_: Any) -> None:
        memo.readiness.seen()
        memo.check.on_resource_flavor(dict(body), type == "DELETED")

    @kopf.on.event(plural="workloads", id="workloads", **kq)
    def workload(body: kopf.Body, type: str | None, memo: Memo, **_: Any) -> None:
        memo.readiness.seen()
        memo.check.on_workload(dict(body), type == "DELETED")

    @kopf.on.event("v1", "nodes", id="nodes", registry=registry)
    def node(body: kopf.Body, type: str | None, memo: Memo, **_: Any) -> None:
        memo.readiness.seen()
        memo.check.on_node(dict(body), type == "DELETED")
