"""Every forecast provider failing, for real over HTTP: the operator starts jobs at once (no
information is no reason to wait), says why in ForecastUnavailable, and plans from forecasts again once
the providers come back.

A real HTTP server on 127.0.0.1 (random port, a thread) poses as the Carbon Aware SDK WebAPI and the
Electricity Maps API, with the documented response shapes (tests/fixtures/providers). The operator is
configured with both, in failover order, and each zone fails differently on each:

    zone  carbonaware (1st, retries 1)     electricitymaps (2nd, retries 0)
    GB    HTTP 500 (problem details)       HTTP 429, Retry-After: 30
    FR    200 with malformed JSON          no answer within timeoutSeconds (1 s)
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from greenjobs.api.durations import parse_time
from tests.kube import Cluster, wait_until
from tests.manifests import gtj_json
from tests.operator_proc import OperatorProcess, condition, gtj

pytestmark = pytest.mark.cluster

# (status, headers, body, delay before answering in seconds)
Answer = tuple[int, dict[str, str], bytes, float]
Responder = Callable[[str, dict[str, str], dict[str, str]], Answer]


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode(), 0.0


@dataclass
class FakeApi:
    """A threaded HTTP server whose answers come from `responder(path, query, headers)`; it records
    every request as (path, zone/location, status) and every request's headers."""

    responder: Responder
    requests: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, extra, body, delay = api.responder(parts.path, query, headers)
                where = query.get("location") or query.get("zone") or ""
                api.requests[(parts.path, where, status)] += 1
                api.seen_headers.append(headers)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (a timeout): nothing to answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def count(self, path_prefix: str, where: str, status: int | None = None) -> int:
        return sum(
            n
            for (p, w, s), n in self.requests.items()
            if p.startswith(path_prefix) and w == where and (status is None or s == status)
        )


# ---------------------------------------------------------------- valid answers, as documented


def carbonaware_forecast(location: str, points: list[tuple[datetime, float]], step_minutes: float) -> Any:
    data = [{"location": location, "timestamp": t.isoformat(), "duration": step_minutes, "value": v} for t, v in points]
    best = data[min(range(len(points)), key=lambda i: points[i][1])]
    return [
        {
            "generatedAt": points[0][0].isoformat(),
            "requestedAt": points[0][0].isoformat(),
            "location": location,
            "dataStartAt": points[0][0].isoformat(),
            "dataEndAt": (points[-1][0] + timedelta(minutes=step_minutes)).isoformat(),
            "windowSize": step_minutes,
            "optimalDataPoints": [best],
            "forecastData": data,
        }
    ]


def electricitymaps_forecast(zone: str, points: list[tuple[datetime, float]]) -> Any:
    return {
        "zone": zone,
        "forecast": [{"carbonIntensity": v, "datetime": t.isoformat()} for t, v in points],
        "updatedAt": points[0][0].isoformat(),
    }


class Outage:
    """The two APIs, down (as in the module docstring) until `recover()`, then serving forecasts."""

    def __init__(self) -> None:
        self.up_at: datetime | None = None

    def recover(self) -> None:
        self.up_at = datetime.now(UTC).replace(second=0, microsecond=0)

    def points(self, zone: str) -> list[tuple[datetime, float]]:
        assert self.up_at is not None
        base = self.up_at - timedelta(minutes=2)
        # GB dirty all along; FR dirty for 3 minutes after recovery, then clean.
        return [(base + timedelta(minutes=i), 300.0 if zone == "GB" else (250.0 if i < 5 else 50.0)) for i in range(60)]

    def __call__(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
        where = query.get("location") or query.get("zone") or ""
        if self.up_at is not None:
            if path == "/emissions/forecasts/current":
                return _json(200, carbonaware_forecast(where, self.points(where), 1))
            if path == "/emissions/bylocation":
                value = self.points(where)[2][1]
                return _json(
                    200, [{"location": where, "time": self.up_at.isoformat(), "rating": value, "duration": "00:05:00"}]
                )
            if path == "/v3/carbon-intensity/forecast":
                return _json(200, electricitymaps_forecast(where, self.points(where)))
            if path == "/v3/carbon-intensity/latest":
                return _json(
                    200,
                    {"zone": where, "carbonIntensity": self.points(where)[2][1], "datetime": self.up_at.isoformat()},
                )
            return _json(404, {"error": "not found"})
        if path.startswith("/emissions/"):
            if where == "GB":
                problem = {
                    "type": "about:blank",
                    "title": "Internal Server Error",
                    "status": 500,
                    "detail": "data source down",
                }
                return _json(500, problem)
            return 200, {"Content-Type": "application/json"}, b'[{"location": "FR", "forecastData": [', 0.0
        if where == "GB":
            return _json(429, {"status": "error", "message": "Too many requests"}, {"Retry-After": "30"})
        return 200, {"Content-Type": "application/json"}, b"{}", 3.0  # answers after the client's timeout


@pytest.fixture
def outage() -> Iterator[tuple[Outage, FakeApi]]:
    state = Outage()
    api = FakeApi(state).start()
    yield state, api
    api.stop()


def _manifest(namespace: str, name: str, zones: list[str], timing: dict[str, str]) -> str:
    return gtj_json(namespace, name, zones=zones, timing=timing, gpus=1, run_for="120s")


def _status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = gtj(cluster, namespace, name).get("status", {})
    return status


def _field(cluster: Cluster, namespace: str, name: str, key: str, want: Any = None) -> Any:
    """status.<key> (truthy when set), or whether it equals `want`: a probe for wait_until."""
    value = _status(cluster, namespace, name).get(key)
    return value if want is None else value == want


def test_all_providers_failing_then_recovering(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorProcess],
    outage: tuple[Outage, FakeApi],
) -> None:
    state, api = outage
    key = tmp_path / "em-key"
    key.write_text("fake-em-key-0123456789\n")
    op = operator_factory(
        {
            "providers": [
                {"type": "carbonaware", "url": api.url, "timeoutSeconds": 1, "retries": 1},
                {"type": "electricitymaps", "url": api.url, "apiKeyFile": str(key), "timeoutSeconds": 1, "retries": 0},
            ],
            # Recovery is asked for at once below: the negative cache and the circuit breaker (unit
            # tests: test_providers_breaker.py) would answer the first plan after it from memory.
            "forecastFetch": {"negativeCacheSeconds": 0, "breakerFailures": 100},
        }
    )
    began = time.monotonic()
    short = {"estimatedDuration": "1m", "maxDelay": "20s"}
    cluster.kubectl("apply", "-f", "-", input=_manifest(namespace, "gb-short", ["GB"], short))
    cluster.kubectl("apply", "-f", "-", input=_manifest(namespace, "fr-short", ["FR"], short))
    long = {"estimatedDuration": "1m", "maxDelay": "10m"}
    cluster.kubectl("apply", "-f", "-", input=_manifest(namespace, "long", ["GB", "FR"], long))

    # Planned without a forecast: no information is no reason to wait, so each starts now (in its
    # first zone), and ForecastUnavailable says why.
    for name in ("gb-short", "fr-short", "long"):
        wait_until(f"{name} planned", partial(_field, cluster, namespace, name, "plan"), timeout=30)
    why: dict[str, str] = {}
    for name in ("gb-short", "fr-short", "long"):
        obj = gtj(cluster, namespace, name)
        plan = obj["status"]["plan"]
        assert plan["forecastSource"] == "none"
        assert parse_time(plan["scheduledStart"]) <= parse_time(obj["metadata"]["creationTimestamp"]) + timedelta(
            seconds=10
        )
        assert condition(obj, "Planned")["reason"] == "NoForecast"  # type: ignore[index]
        cond = condition(obj, "ForecastUnavailable")
        assert cond is not None and cond["status"] == "True" and cond["reason"] == "ProvidersFailed"
        why[name] = cond["message"]
    assert "carbonaware: HTTP 500: data source down (after 2 attempts)" in why["gb-short"]
    assert "electricitymaps: rate limited (HTTP 429), retry after 30s" in why["gb-short"]
    assert "carbonaware: malformed JSON in the answer" in why["fr-short"]
    assert "electricitymaps: request timed out after 1s" in why["fr-short"]
    assert "zone GB" in why["long"] and "zone FR" in why["long"]
    event_reasons = {
        e["reason"]
        for e in cluster.get_json("events", "-n", namespace, "--field-selector", "involvedObject.name=gb-short")[
            "items"
        ]
    }
    assert "ForecastUnavailable" in event_reasons

    # Every job starts at once (well before its latest start), in its first zone.
    for name, zone in (("gb-short", "GB"), ("fr-short", "FR"), ("long", "GB")):
        wait_until(f"{name} Running", partial(_field, cluster, namespace, name, "phase", "Running"))
        status = _status(cluster, namespace, name)
        latest = parse_time(status["plan"]["latestStart"])
        assert parse_time(status["startTime"]) <= latest + timedelta(seconds=3)
        job = cluster.get_json("job", name, "-n", namespace)
        assert job["spec"]["suspend"] is False
        assert job["spec"]["template"]["spec"]["nodeSelector"] == {"greenjobs.dev/grid-zone": zone}
    started_after = time.monotonic() - began
    assert started_after < 40

    # Retry policy as configured: carbonaware asked twice per attempt (retries 1); the rate-limited
    # provider is left alone for its Retry-After (30 s) instead of being asked on every re-plan.
    assert api.count("/emissions/forecasts/current", "GB", 500) >= 2
    assert api.count("/v3/carbon-intensity/forecast", "GB", 429) == 1

    # The APIs come back: a new job is planned from a real forecast (FR gets clean later).
    state.recover()
    cluster.kubectl("apply", "-f", "-", input=_manifest(namespace, "after", ["GB", "FR"], long))
    wait_until(
        "after planned from a forecast",
        lambda: (
            (condition(gtj(cluster, namespace, "after"), "Planned") or {}).get("reason") not in (None, "NoForecast")
        ),
        timeout=30,
    )
    obj = gtj(cluster, namespace, "after")
    plan = obj["status"]["plan"]
    assert plan["forecastSource"] == "carbonaware"
    assert plan["zone"] == "FR"
    assert plan["expectedGPerKWh"] == pytest.approx(50.0)
    assert (condition(obj, "ForecastUnavailable") or {}).get("status") != "True"
    assert parse_time(plan["scheduledStart"]) < parse_time(plan["latestStart"])
    assert obj["status"]["phase"] == "Deferred"
    assert "Traceback" not in op.logs()
    assert op.alive()
