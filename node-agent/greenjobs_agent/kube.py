"""Watches this node's pods and, one by one, the GreenTrainingJobs those pods belong to.

What an agent receives grows with the jobs on ITS node, never with the cluster:
- pods: one cluster-wide list+watch with the field selector spec.nodeName=<node> (the API server
  filters; other nodes' pods never reach the agent);
- GreenTrainingJobs: one list+watch per job the agent tracks (its pods' jobs and the counts it has
  not yet flushed), each with the field selector metadata.name=<name> in the job's namespace. A job
  no longer tracked has its watch closed at once.
Each watch lists first, then streams changes from the list's resourceVersion; on 410 Gone (history
compacted) or any stream end it lists again. Every event and byte received is counted in
greenjobs_agent_watch_events_total / greenjobs_agent_watch_bytes_total (the fan-out benchmark).
"""

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from greenjobs.api.constants import GPU_RESOURCE, GROUP, LABEL_JOB, LABEL_JOB_UID, PLURAL, VERSION

from .metrics import AgentMetrics
from .pods import JobInfo, JobRef, NodeSeed, PodInfo, PodKey

log = logging.getLogger(__name__)

WATCH_TIMEOUT_S = 300


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def pod_info(pod: dict[str, Any]) -> PodInfo:
    """A pod as returned by the API (JSON form) -> PodInfo."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    labels = meta.get("labels") or {}
    gpus = 0
    for c in spec.get("containers") or []:
        limits = (c.get("resources") or {}).get("limits") or {}
        gpus += _quantity(limits.get(GPU_RESOURCE, 0))
    status = pod.get("status") or {}
    ends = [
        str(((c.get("state") or {}).get("terminated") or {}).get("finishedAt") or "")
        for c in status.get("containerStatuses") or []
    ]
    return PodInfo(
        key=PodKey(meta.get("namespace", ""), meta.get("name", "")),
        phase=status.get("phase") or "Pending",
        job=labels.get(LABEL_JOB),
        gpu_limit=gpus,
        job_uid=labels.get(LABEL_JOB_UID) or None,
        uid=meta.get("uid", ""),
        created=meta.get("creationTimestamp") or "",
        started=status.get("startTime") or "",
        ended=max(ends, default=""),  # RFC 3339 in UTC compares as text
    )


def job_info(gtj: dict[str, Any], node: str) -> JobInfo:
    """What the agent keeps of a GreenTrainingJob: uid, target cap, and this node's entry only."""
    meta = gtj.get("metadata") or {}
    status = gtj.get("status") or {}
    cap = (status.get("power") or {}).get("targetCapWatts")
    entry = ((status.get("energy") or {}).get("nodes") or {}).get(node)
    seed = None
    if isinstance(entry, dict) and entry.get("joules") is not None:
        seed = NodeSeed(float(entry["joules"]), float(entry.get("gpuSeconds") or 0.0))
    return JobInfo(
        meta.get("uid", ""), int(cap) if cap is not None else None, seed, meta.get("creationTimestamp") or ""
    )


@dataclass
class _Stream:
    """One list+watch loop; `resp` is the open watch response, closed to stop it at once."""

    kind: str
    list_fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    replace: Callable[[list[dict[str, Any]]], None]
    apply: Callable[[str, dict[str, Any]], None]
    synced: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    resp: Any = None


class KubeClusterView:
    """`namespaces`: only pods of these namespaces are seen (empty: all); the pod watch stays one
    cluster-wide stream (selected by node), objects of other namespaces are dropped on arrival."""

    def __init__(
        self,
        node: str,
        api_client: Any,
        namespaces: Collection[str] = (),
        metrics: AgentMetrics | None = None,
    ) -> None:
        from kubernetes import client  # noqa: PLC0415 - only the real agent needs the client

        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._node = node
        self._namespaces = frozenset(namespaces)
        self._metrics = metrics
        self._lock = threading.Lock()
        self._pods: dict[PodKey, PodInfo] = {}
        self._pods_synced = threading.Event()
        self._jobs: dict[JobRef, JobInfo | None] = {}  # tracked jobs listed at least once
        self._watches: dict[JobRef, _Stream] = {}
        self._stop = threading.Event()
        self._on_change: Callable[[], None] = lambda: None

    # ---------------------------------------------------------------- ClusterView

    def synced(self) -> bool:
        return self._pods_synced.is_set()

    def pods(self) -> list[PodInfo]:
        with self._lock:
            return list(self._pods.values())

    def jobs(self) -> dict[JobRef, JobInfo | None]:
        with self._lock:
            return dict(self._jobs)

    def track(self, refs: Collection[JobRef]) -> None:
        wanted = set(refs)
        with self._lock:
            gone = [r for r in self._watches if r not in wanted]
            new = [r for r in wanted if r not in self._watches]
            stopped = [self._watches.pop(r) for r in gone]
            for r in gone:
                self._jobs.pop(r, None)
            for r in new:
                self._watches[r] = self._job_stream(r)
        for s in stopped:
            self._close(s)
        for r in new:
            self._spawn(f"watch-gtj-{r}", self._watches[r])

    def tracked(self) -> set[JobRef]:
        with self._lock:
            return set(self._watches)

    # ---------------------------------------------------------------- watching

    def start(self, on_change: Callable[[], None] = lambda: None) -> None:
        """Start the pod watch; `on_change` is called after every event (wakes the loop)."""
        self._on_change = on_change
        pods = _Stream(
            "pods",
            self._core.list_pod_for_all_namespaces,
            (),
            {"field_selector": f"spec.nodeName={self._node}"},
            self._replace_pods,
            self._apply_pod,
            self._pods_synced,
        )
        self._spawn("watch-pods", pods)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            streams = list(self._watches.values())
        for s in streams:
            self._close(s)

    def _job_stream(self, ref: JobRef) -> _Stream:
        return _Stream(
            "greentrainingjobs",
            self._custom.list_namespaced_custom_object,
            (GROUP, VERSION, ref.namespace, PLURAL),
            {"field_selector": f"metadata.name={ref.name}"},
            lambda items: self._replace_job(ref, items),
            lambda kind, obj: self._apply_job(ref, kind, obj),
        )

    def _spawn(self, name: str, stream: _Stream) -> None:
        threading.Thread(target=self._run, name=name, daemon=True, args=(stream,)).start()

    def _close(self, stream: _Stream) -> None:
        stream.stop.set()
        resp = stream.resp
        if resp is not None:
            with contextlib.suppress(Exception):  # already closed
                resp.shutdown()  # unblocks the reading thread (urllib3 >= 2.3)

    def _stopped(self, s: _Stream) -> bool:
        return self._stop.is_set() or s.stop.is_set()

    def _count(self, resource: str, events: int, nbytes: int, request: str | None = None, kind: str = "") -> None:
        m = self._metrics
        if m is None:
            return
        if request is not None:
            m.api_requests.labels(verb=request, resource=resource).inc()
        if events:
            m.watch_events.labels(resource=resource, type=kind).inc(events)
        if nbytes:
            m.watch_bytes.labels(resource=resource).inc(nbytes)

    def _run(self, s: _Stream) -> None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        while not self._stopped(s):
            try:
                raw = s.list_fn(*s.args, **s.kwargs, _preload_content=False).data
                self._count(s.kind, 0, len(raw), request="list")
                listing = json.loads(raw)
                if self._stopped(s):
                    return
                s.replace(listing.get("items") or [])
                s.synced.set()
                self._on_change()
                version = (listing.get("metadata") or {}).get("resourceVersion")
                while not self._stopped(s):
                    version = self._watch(s, version)
                    if version is None:
                        break  # 410 Gone: list again
            except ApiException as e:
                if self._stopped(s):
                    return
                log.warning("watch of %s failed (HTTP %s); retrying in 5 s", s.kind, e.status)
                self._stop.wait(5)
            except Exception as e:
                if self._stopped(s):
                    return
                log.warning("watch of %s failed: %s; retrying in 5 s", s.kind, e)
                self._stop.wait(5)

    def _watch(self, s: _Stream, version: str | None) -> str | None:
        """One watch request from `version`; returns the version to resume from, None to list again."""
        resp = s.list_fn(
            *s.args,
            **s.kwargs,
            watch=True,
            resource_version=version,
            timeout_seconds=WATCH_TIMEOUT_S,
            allow_watch_bookmarks=True,
            _preload_content=False,
            # Longer than the server's own end of the watch: only a stalled stream trips it.
            _request_timeout=(5.0, WATCH_TIMEOUT_S + 30),
        )
        s.resp = resp
        self._count(s.kind, 0, 0, request="watch")
        try:
            for line in _lines(resp):
                if self._stopped(s):
                    return version
                event = json.loads(line)
                self._count(s.kind, 1, len(line), kind=event.get("type", ""))
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        log.info("watch of %s expired (410 Gone); listing again", s.kind)
                        return None
                    raise RuntimeError(obj.get("message", "watch error"))
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if event.get("type") != "BOOKMARK":
                    s.apply(event["type"], obj)
                    self._on_change()
        finally:
            s.resp = None
            resp.release_conn()
        return version

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

    def _replace_job(self, ref: JobRef, items: list[dict[str, Any]]) -> None:
        info = job_info(items[0], self._node) if items else None
        with self._lock:
            if ref in self._watches:
                self._jobs[ref] = info

    def _apply_job(self, ref: JobRef, kind: str, obj: dict[str, Any]) -> None:
        info = None if kind == "DELETED" else job_info(obj, self._node)
        with self._lock:
            if ref in self._watches:
                self._jobs[ref] = info


def _lines(resp: Any) -> Iterator[bytes]:
    """Newline-delimited JSON events of a watch response, as they arrive."""
    pending = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line
    if pending.strip():
        yield pending
