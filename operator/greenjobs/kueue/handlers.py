"""kopf handlers of the carbon AdmissionCheck: each hands one watch event to KueueCheck, which only
updates its caches and queues keys (no I/O here: kopf does not retry event handlers).

Only event handlers: no finalizers and no kopf annotations on Kueue's objects (a timer would put a
finalizer on every Workload); the planned starts are kept by a ticker thread instead.
"""

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import kopf

from .controller import KueueCheck
from .names import KUEUE_GROUP, KUEUE_VERSION


@dataclass
class Memo:
    check: KueueCheck
    tick_seconds: float = 1.0
    stop: threading.Event = field(default_factory=threading.Event)


def register(registry: kopf.OperatorRegistry) -> None:
    kq: dict[str, Any] = {"group": KUEUE_GROUP, "version": KUEUE_VERSION, "registry": registry}

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
        memo.check.on_admission_check(dict(body), type == "DELETED")

    @kopf.on.event(plural="clusterqueues", id="cluster-queues", **kq)
    def cluster_queue(body: kopf.Body, type: str | None, memo: Memo, **_: Any) -> None:
        memo.check.on_cluster_queue(dict(body), type == "DELETED")

    @kopf.on.event(plural="localqueues", id="local-queues", **kq)
    def local_queue(body: kopf.Body, type: str | None, memo: Memo, **_: Any) -> None:
        memo.check.on_local_queue(dict(body), type == "DELETED")

    @kopf.on.event(plural="resourceflavors", id="resource-flavors", **kq)
    def resource_flavor(body: kopf.Body, type: str | None, memo: Memo, **_: Any) -> None:
        memo.check.on_resource_flavor(dict(body), type == "DELETED")

    @kopf.on.event(plural="workloads", id="workloads", **kq)
    def workload(body: kopf.Body, type: str | None, memo: Memo, **_: Any) -> None:
        memo.check.on_workload(dict(body), type == "DELETED")
