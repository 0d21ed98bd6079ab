"""Prometheus metrics and the /metrics, /healthz, /readyz endpoints of the agent."""

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class CumulativeCounter(Collector):
    """A Prometheus counter whose value is READ from a cumulative source (a GPU's energy counter, a
    job's running total) instead of incremented; exported as `<name>_total` so rate() applies."""

    def __init__(self, name: str, documentation: str, labelnames: list[str], registry: CollectorRegistry) -> None:
        self._name, self._doc, self._labelnames = name, documentation, labelnames
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[tuple(labels[n] for n in self._labelnames)] = value

    def remove(self, *labelvalues: str) -> None:
        with self._lock:
            self._values.pop(tuple(labelvalues), None)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._doc, labels=self._labelnames)
        with self._lock:
            for labelvalues, value in self._values.items():
                family.add_metric(list(labelvalues), value)
        yield family


class AgentMetrics:
    def __init__(self, node: str, stale_after_s: float = 30.0) -> None:
        self.registry = CollectorRegistry()
        self.node = node
        self.gpu_power = Gauge("greenjobs_gpu_power_watts", "GPU power draw, W.", ["gpu"], registry=self.registry)
        self.gpu_energy = CumulativeCounter(
            "greenjobs_gpu_energy_joules", "GPU energy counter, J.", ["gpu"], self.registry
        )
        self.gpu_cap = Gauge("greenjobs_gpu_cap_watts", "GPU power limit in force, W.", ["gpu"], registry=self.registry)
        self.job_energy = CumulativeCounter(
            "greenjobs_job_energy_joules",
            "Cumulative GPU energy of a GreenTrainingJob on this node, J.",
            ["namespace", "job"],
            self.registry,
        )
        self.errors = Counter("greenjobs_agent_errors_total", "Errors, by kind.", ["kind"], registry=self.registry)
        # What the agent asks of and receives from the API server (the fan-out benchmark reads these).
        self.api_requests = Counter(
            "greenjobs_agent_api_requests_total",
            "Requests sent to the API server, by verb and resource.",
            ["verb", "resource"],
            registry=self.registry,
        )
        self.watch_events = Counter(
            "greenjobs_agent_watch_events_total",
            "Watch events received, by resource and type (ADDED, MODIFIED, DELETED, BOOKMARK).",
            ["resource", "type"],
            registry=self.registry,
        )
        self.watch_bytes = Counter(
            "greenjobs_agent_watch_bytes_total",
            "Bytes received in list and watch responses, by resource.",
            ["resource"],
            registry=self.registry,
        )
        self._stale_after_s = stale_after_s
        self._last_tick: float | None = None
        self.ready = threading.Event()

    def error(self, kind: str) -> None:
        self.errors.labels(kind=kind).inc()

    def ticked(self) -> None:
        self._last_tick = time.monotonic()

    def healthy(self) -> bool:
        # Before the first tick the process is starting up: alive. After it, the loop must keep ticking.
        return self._last_tick is None or time.monotonic() - self._last_tick < self._stale_after_s

    def render(self) -> bytes:
        return generate_latest(self.registry)


def serve(metrics: AgentMetrics, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:  # noqa: S104
    """Serve in a daemon thread; returns the server (call .shutdown() to stop)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                ok = metrics.healthy()
                self._send(200 if ok else 503, b"ok\n" if ok else b"loop stalled\n")
            elif self.path == "/readyz":
                ok = metrics.ready.is_set()
                self._send(200 if ok else 503, b"ok\n" if ok else b"not ready\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would flood the logs

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
