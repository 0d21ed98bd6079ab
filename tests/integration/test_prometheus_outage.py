"""A Prometheus outage during accounting (issue 21): host-energy queries (Kepler's counters, through
Prometheus) must never hold the operator's workers, so a job whose start is due starts on time while
Prometheus hangs; once Prometheus answers, the jobs' host energy is its figure.

Prometheus is a stub HTTP server in the test process that can hang (accept the request, never answer
until switched) or answer Kepler's per-pod counters. Five one-GPU jobs run and are accounted every
second (their agents' reports are written to status here, as an agent writes them): more than the
operator's four workers, each of which a synchronous query would hold for the configured timeout (30 s,
plus a retry). A sixth job is deferred to a clean window and must start at its planned time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes
import pytest

from greenjobs.accounting.host_energy import KEPLER
from greenjobs.api.durations import parse_time
from tests.kube import Cluster, wait_until
from tests.manifests import gtj_manifest
from tests.operator_proc import OperatorProcess, clean_between, file_forecasts, gtj

pytestmark = pytest.mark.cluster

BUSY = 5  # more jobs being accounted than the operator has workers (4)
GPU_WATTS = 300.0  # what the fake agents report
# What the stub's Kepler says each job's pods used: 0.025 kWh, above the watts-per-GPU estimate of a
# 45 s run (the host figure is a high-water mark: the higher of the two stands).
PACKAGE_J, DRAM_J = 72000.0, 18000.0
TIMEOUT_S = 30  # footprint.host.timeoutSeconds: how long a synchronous query would hold a worker
START_TOLERANCE = timedelta(seconds=10)  # a tick and a loaded machine; a held worker: 30 s and more


@dataclass
class StubPrometheus:
    """Prometheus' instant-query API, hanging until `answer()` is called, then answering every query for
    `kepler_pod_cpu_joules_total` with the same package and dram joules."""

    answering: threading.Event = field(default_factory=threading.Event)
    queries: list[tuple[str, bool]] = field(default_factory=list)  # (PromQL, answered at once)
    hanging_now: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def answer(self) -> None:
        self.answering.set()  # the requests hanging now are answered too

    def hung(self) -> int:
        with self.lock:
            return sum(1 for _, at_once in self.queries if not at_once)

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        promql = parse_qs(url.query).get("query", [""])[0]
        at_once = self.answering.is_set()
        with self.lock:
            self.queries.append((promql, at_once))
            self.hanging_now += not at_once
        try:
            if not self.answering.wait(timeout=300):
                return  # the test is over: close without an answer
        finally:
            with self.lock:
                self.hanging_now -= not at_once
        samples = [
            {"metric": {"zone": zone}, "value": [datetime.now(UTC).timestamp(), str(joules)]}
            for zone, joules in (("package", PACKAGE_J), ("dram", DRAM_J))
        ]
        ok = url.path == "/api/v1/query" and "kepler_pod_cpu_joules_total" in promql
        body = {"status": "success", "data": {"resultType": "vector", "result": samples if ok else []}}
        raw = json.dumps(body).encode()
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(raw)))
            handler.end_headers()
            handler.wfile.write(raw)
        except OSError:
            pass  # the client gave up waiting (its timeout): as a real client does


class _Handler(BaseHTTPRequestHandler):
    def __init__(self, stub: StubPrometheus, *args: Any) -> None:
        self.stub = stub
        super().__init__(*args)

    def do_GET(self) -> None:
        self.stub.handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[StubPrometheus]:
    stub = StubPrometheus()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, stub))
    server.daemon_threads = True
    stub.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield stub
    stub.answer()  # let hanging handlers go
    server.shutdown()
    server.server_close()


class Agents:
    """Writes each running job's node entry every second, growing, as its node agent would; one last
    report after the job ended (the agent's final flush)."""

    def __init__(self, cluster: Cluster, namespace: str, node: str, names: list[str]) -> None:
        self.objects = kubernetes.client.CustomObjectsApi(cluster.api_client())
        self.namespace, self.node, self.names = namespace, node, names
        self.joules = dict.fromkeys(names, 0.0)
        self.flushed: set[str] = set()
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopping.wait(1.0):
            for name in self.names:
                if name in self.flushed:
                    continue
                try:
                    self._report(name)
                except Exception as exc:
                    self.errors.append(f"{name}: {exc!r}")

    def _report(self, name: str) -> None:
        obj = self.objects.get_namespaced_custom_object(
            "greenjobs.dev", "v1alpha1", self.namespace, "greentrainingjobs", name
        )
        phase = (obj.get("status") or {}).get("phase")
        if phase not in ("Running", "Succeeded"):
            return
        self.joules[name] += GPU_WATTS  # one more second of one GPU at GPU_WATTS
        entry = {"joules": self.joules[name], "gpus": 0 if phase == "Succeeded" else 1,
                 "gpuSeconds": self.joules[name] / GPU_WATTS}  # fmt: skip
        patch = {"status": {"energy": {"nodes": {self.node: entry}}}}
        self.objects.patch_namespaced_custom_object_status(
            "greenjobs.dev", "v1alpha1", self.namespace, "greentrainingjobs", name, patch
        )
        if phase == "Succeeded":
            self.flushed.add(name)

    def __enter__(self) -> Agents:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(10)


def _status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = gtj(cluster, namespace, name).get("status") or {}
    return status


def test_due_starts_do_not_wait_on_a_hanging_prometheus_and_host_energy_is_counted_once_it_answers(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorProcess],
    prometheus: StubPrometheus,
) -> None:
    ns = namespace
    now = datetime.now(UTC).replace(microsecond=0)
    forecasts = file_forecasts(tmp_path / "fc", now, {"GB": 300.0, "FR": clean_between(4, 7)}, steps=range(-6, 60))
    host = {"kepler": {"prometheusURL": prometheus.url}, "timeoutSeconds": TIMEOUT_S}
    config = {**forecasts, "footprint": {"host": host}}
    op = operator_factory(config)

    node = cluster.nodes["GB"][0]
    busy = [f"busy-{i}" for i in range(BUSY)]
    items = [gtj_manifest(ns, n, zones=["GB"], gpus=1, run_for="45s", node_selector={"kubernetes.io/hostname": node})
             for n in busy]  # fmt: skip
    # Deferred to FR's clean window (now + 40 s): due while Prometheus hangs.
    items.append(gtj_manifest(ns, "due", zones=["FR"], gpus=1, run_for="5s",
                              timing={"estimatedDuration": "10s", "maxDelay": "3m"}))  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))

    with Agents(cluster, ns, node, busy) as agents:
        plan = wait_until("the due job's plan", lambda: _status(cluster, ns, "due").get("plan"), timeout=30)
        scheduled = parse_time(plan["scheduledStart"])
        assert scheduled >= now + timedelta(seconds=25), plan
        wait_until(
            "every busy job Running", lambda: all(_status(cluster, ns, n).get("phase") == "Running" for n in busy), 60
        )
        # The accounting has asked Prometheus, and Prometheus hangs.
        wait_until("a host-energy query hanging", lambda: prometheus.hanging_now >= 1, timeout=30)
        started = wait_until(
            "the due job to start",
            lambda: _status(cluster, ns, "due").get("startTime"),
            timeout=(scheduled - datetime.now(UTC)).total_seconds() + 60,
        )
        assert not prometheus.answering.is_set()
        assert prometheus.hanging_now >= 1, "Prometheus was out all along"
        late = parse_time(started) - scheduled
        assert late <= START_TOLERANCE, (
            f"the due job started {late.total_seconds():.0f} s after its planned start while Prometheus hung"
            f" ({prometheus.hung()} queries hanging); the operator said:\n{op.logs()[-3000:]}"
        )
        print(f"\nprometheus hanging: the due job started {late.total_seconds():+.0f} s from its planned start")
        # Meanwhile the busy jobs were accounted (GPU energy) with the fallback estimate for the host.
        for n in busy:
            st = _status(cluster, ns, n)
            assert (st.get("energy") or {}).get("gpuKWh", 0) > 0, (n, st.get("energy"))
            assert st["energy"]["methods"]["host"] != KEPLER, (n, st["energy"]["methods"])

        # Prometheus answers: the jobs' host energy becomes Kepler's figure, and stays so once finished.
        prometheus.answer()
        host_kwh = (PACKAGE_J + DRAM_J) / 3.6e6

        def unmeasured() -> list[tuple[str, Any, Any, Any, Any]]:
            out = []
            for n in busy:
                st = _status(cluster, ns, n)
                energy = st.get("energy") or {}
                method, kwh = (energy.get("methods") or {}).get("host"), energy.get("hostKWh")
                accounted = ((st.get("emissions") or {}).get("accountedJoules") or {}).get(node)
                if (
                    n not in agents.flushed  # the final report after the end is in, and accounted
                    or st.get("phase") != "Succeeded"
                    or method != KEPLER
                    or kwh != pytest.approx(host_kwh, abs=1e-4)
                    or accounted != agents.joules[n]
                ):
                    out.append((n, st.get("phase"), method, kwh, (accounted, agents.joules[n])))
            return out

        try:
            wait_until("every busy job finished with Kepler's host energy", lambda: not unmeasured(), 120, 2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {unmeasured()}; operator:\n{op.logs()[-3000:]}") from None
    assert not agents.errors, agents.errors
    assert _status(cluster, ns, "due").get("phase") in ("Running", "Succeeded")
    assert op.alive()


def test_a_job_that_finished_during_the_outage_gets_its_host_energy_once_prometheus_answers(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorProcess],
    prometheus: StubPrometheus,
) -> None:
    ns = namespace
    now = datetime.now(UTC).replace(microsecond=0)
    forecasts = file_forecasts(tmp_path / "fc", now, {"GB": 300.0}, steps=range(-6, 60))
    host = {"kepler": {"prometheusURL": prometheus.url}, "timeoutSeconds": TIMEOUT_S}
    config = {**forecasts, "footprint": {"host": host}}
    operator_factory(config)
    node = cluster.nodes["GB"][0]
    job = gtj_manifest(ns, "early", zones=["GB"], gpus=1, run_for="6s", node_selector={"kubernetes.io/hostname": node})
    cluster.kubectl("create", "-f", "-", input=json.dumps(job))
    with Agents(cluster, ns, node, ["early"]) as agents:

        def finished_and_accounted() -> bool:
            st = _status(cluster, ns, "early")
            accounted = ((st.get("emissions") or {}).get("accountedJoules") or {}).get(node)
            return "early" in agents.flushed and st.get("phase") == "Succeeded" and accounted == agents.joules["early"]

        wait_until("the job finished and its last report accounted", finished_and_accounted, timeout=60)
    assert prometheus.hanging_now >= 1 and not prometheus.answering.is_set(), "finished during the outage"
    assert _status(cluster, ns, "early")["energy"]["methods"]["host"] != KEPLER

    prometheus.answer()
    host_kwh = (PACKAGE_J + DRAM_J) / 3.6e6
    wait_until(
        "Kepler's host figure counted for the finished job",
        lambda: (
            (e := _status(cluster, ns, "early")["energy"])["methods"]["host"] == KEPLER
            and e["hostKWh"] == pytest.approx(host_kwh, abs=1e-4)
        ),
        timeout=30,
    )
