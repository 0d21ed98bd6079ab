"""Watches the pods bound to this node and the GreenTrainingJobs, keeping a ClusterView in memory.

Each watch lists first (the view is synced once both lists are in), then streams changes from the
list's resourceVersion; on 410 Gone (history compacted) or any stream end it lists again.
"""

import json
import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from greenjobs.api.constants import GPU_RESOURCE, GROUP, LABEL_JOB, PLURAL, VERSION

from .pods import JobKey, PodInfo, PodKey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Watched:
    list_fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    replace: Callable[[list[dict[str, Any]]], None]
    apply: Callable[[str, dict[str, Any]], None]
    synced: threading.Event


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def pod_info(pod: dict[str, Any]) -> PodInfo:
    """A pod as returned by the API (JSON form) -> PodInfo."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    gpus = 0
    for c in spec.get("containers") or []:
        limits = (c.get("resources") or {}).get("limits") or {}
        gpus += _quantity(limits.get(GPU_RESOURCE, 0))
    return PodInfo(
        key=PodKey(meta.get("namespace", ""), meta.get("name", "")),
        phase=(pod.get("status") or {}).get("phase") or "Pending",
        job=(meta.get("labels") or {}).get(LABEL_JOB),
        gpu_limit=gpus,
    )


def target_cap(gtj: dict[str, Any]) -> tuple[JobKey, int | None]:
    meta = gtj.get("metadata") or {}
    power = (gtj.get("status") or {}).get("power") or {}
    cap = power.get("targetCapWatts")
    return JobKey(meta.get("namespace", ""), meta.get("name", "")), int(cap) if cap is not None else None


class KubeClusterView:
    """`namespaces`: only pods and GreenTrainingJobs of these namespaces are seen (empty: all). The
    watches stay cluster-wide (one stream per kind); objects of other namespaces are dropped on arrival."""

    def __init__(self, node: str, api_client: Any, namespaces: Collection[str] = ()) -> None:
        from kubernetes import client  # noqa: PLC0415 - only the real agent needs the client

        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._api_client = api_client
        self._node = node
        self._namespaces = frozenset(namespaces)
        self._lock = threading.Lock()
        self._pods: dict[PodKey, PodInfo] = {}
        self._caps: dict[JobKey, int | None] = {}
        self._pods_synced = threading.Event()
        self._jobs_synced = threading.Event()
        self._stop = threading.Event()

    # ---------------------------------------------------------------- ClusterView

    def synced(self) -> bool:
        return self._pods_synced.is_set() and self._jobs_synced.is_set()

    def pods(self) -> list[PodInfo]:
        with self._lock:
            return list(self._pods.values())

    def target_caps(self) -> dict[JobKey, int | None]:
        with self._lock:
            return dict(self._caps)

    # ---------------------------------------------------------------- watching

    def start(self, on_change: Callable[[], None] = lambda: None) -> None:
        """Start both watch threads; `on_change` is called after every event (wakes the loop)."""
        pods = _Watched(
            self._core.list_pod_for_all_namespaces,
            (),
            {"field_selector": f"spec.nodeName={self._node}"},
            self._replace_pods,
            self._apply_pod,
            self._pods_synced,
        )
        jobs = _Watched(
            self._custom.list_cluster_custom_object,
            (GROUP, VERSION, PLURAL),
            {},
            self._replace_jobs,
            self._apply_job,
            self._jobs_synced,
        )
        for name, what in (("watch-pods", pods), ("watch-gtjs", jobs)):
            threading.Thread(target=self._run, name=name, daemon=True, args=(what, on_change)).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, what: "_Watched", on_change: Callable[[], None]) -> None:
        from kubernetes import watch  # noqa: PLC0415 - only the real agent needs the client
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        watch_cls: Any = watch.Watch  # untyped library: keep mypy's view the same in every run
        while not self._stop.is_set():
            try:
                # Raw JSON rather than models: the same dict shape for pods and custom objects.
                listing = json.loads(what.list_fn(*what.args, **what.kwargs, _preload_content=False).data)
                what.replace(listing.get("items") or [])
                what.synced.set()
                on_change()
                version = (listing.get("metadata") or {}).get("resourceVersion")
                while not self._stop.is_set():
                    w: Any = watch_cls()
                    for event in w.stream(
                        what.list_fn,
                        *what.args,
                        **what.kwargs,
                        resource_version=version,
                        timeout_seconds=300,
                        allow_watch_bookmarks=True,
                    ):
                        if event["type"] != "BOOKMARK":
                            what.apply(event["type"], event["raw_object"])
                            on_change()
                        if self._stop.is_set():
                            return
                    # The server closed the stream (timeout): resume from the last version seen.
                    version = w.resource_version or version
            except ApiException as e:
                if e.status == 410:
                    log.info("watch expired (410 Gone); listing again")
                    continue
                log.warning("watch failed (HTTP %s); retrying in 5 s", e.status)
                self._stop.wait(5)
            except Exception as e:
                log.warning("watch failed: %s; retrying in 5 s", e)
                self._stop.wait(5)

    def _wanted(self, obj: dict[str, Any]) -> bool:
        return not self._namespaces or (obj.get("metadata") or {}).get("namespace") in self._namespaces

    def _replace_pods(self, items: list[dict[str, Any]]) -> None:
        pods = {p.key: p for p in map(pod_info, filter(self._wanted, items))}
        with self._lock:
            self._pods = pods

    def _apply_pod(self, kind: str, obj: dict[str, Any]) -> None:
        if not self._wanted(obj):
            return
        pod = pod_info(obj)
        with self._lock:
            if kind == "DELETED":
                self._pods.pop(pod.key, None)
            else:
                self._pods[pod.key] = pod

    def _replace_jobs(self, items: list[dict[str, Any]]) -> None:
        caps = dict(map(target_cap, filter(self._wanted, items)))
        with self._lock:
            self._caps = caps

    def _apply_job(self, kind: str, obj: dict[str, Any]) -> None:
        if not self._wanted(obj):
            return
        job, cap = target_cap(obj)
        with self._lock:
            if kind == "DELETED":
                self._caps.pop(job, None)
            else:
                self._caps[job] = cap
