"""A small client of Prometheus' HTTP query API (instant and range queries), for host energy and reports.

Answers follow https://prometheus.io/docs/prometheus/latest/querying/api/ : a JSON envelope
`{"status": "success" | "error", "data": {"resultType": ..., "result": [...]}, "errorType", "error"}`;
a vector's samples are `{"metric": {labels}, "value": [<unix seconds>, "<value as string>"]}`, a
matrix's `{"metric": {...}, "values": [[t, "v"], ...]}`. Errors come back with HTTP 400 (bad_data),
422 (execution) or 503 (timeout, canceled) and the same envelope. It talks through the providers'
HttpFetcher, so it has their timeouts and retries and raises their ProviderError kinds.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from greenjobs.carbon.providers.base import BadResponse, ProviderError
from greenjobs.carbon.providers.http import HttpFetcher


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[datetime, float]]


def quote(value: str) -> str:
    """A PromQL string literal (double-quoted, backslash and quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _float(raw: Any, what: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise BadResponse(f"prometheus: {what} is not a number: {raw!r}") from None
    return value


class Prometheus:
    """Instant and range queries against one Prometheus (or Thanos, Mimir, VictoriaMetrics) base URL."""

    def __init__(self, url: str, client: httpx.Client | None = None, *, fetcher: HttpFetcher | None = None) -> None:
        self.url = url.rstrip("/")
        self.http = fetcher or HttpFetcher(client or httpx.Client(), "prometheus")

    def _data(self, path: str, params: Mapping[str, str]) -> Any:
        resp = self.http.get(f"{self.url}{path}", params=params)
        try:
            body = self.http.json(resp)
        except BadResponse:
            if resp.status_code < 300:
                raise
            raise self.http.fail(resp, "query") from None
        if not isinstance(body, dict):
            raise BadResponse(f"prometheus: answer is not a JSON object (HTTP {resp.status_code})")
        if body.get("status") != "success":
            kind, error = body.get("errorType", "error"), body.get("error", "no error message")
            raise ProviderError(f"prometheus: query refused (HTTP {resp.status_code}, {kind}): {error}")
        data = body.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("result"), list):
            raise BadResponse("prometheus: answer has no data.result list")
        return data

    def query(self, promql: str, at: datetime | None = None) -> list[Sample]:
        """An instant query; a scalar answer becomes one sample without labels."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        data = self._data("/api/v1/query", params)
        kind = data.get("resultType")
        if kind == "scalar":  # "result": [t, "v"]
            return [Sample({}, _float(data["result"][1], "scalar"))]
        if kind != "vector":
            raise BadResponse(f"prometheus: expected a vector answer, got {kind!r}")
        out = []
        for item in data["result"]:
            if not isinstance(item, dict) or not isinstance(item.get("value"), list) or len(item["value"]) != 2:
                raise BadResponse(f"prometheus: malformed sample {item!r:.120}")
            value = _float(item["value"][1], "sample value")
            if math.isnan(value):
                continue  # Prometheus writes "NaN" for, e.g., 0/0
            out.append(Sample(dict(item.get("metric") or {}), value))
        return out

    def query_range(self, promql: str, start: datetime, end: datetime, step: timedelta) -> list[Series]:
        if step.total_seconds() <= 0:
            raise ValueError("step must be positive")
        params = {
            "query": promql,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": f"{step.total_seconds():g}",
        }
        data = self._data("/api/v1/query_range", params)
        if data.get("resultType") != "matrix":
            raise BadResponse(f"prometheus: expected a matrix answer, got {data.get('resultType')!r}")
        out = []
        for item in data["result"]:
            if not isinstance(item, dict) or not isinstance(item.get("values"), list):
                raise BadResponse(f"prometheus: malformed series {item!r:.120}")
            points = []
            for pair in item["values"]:
                value = _float(pair[1], "sample value")
                if not math.isnan(value):
                    points.append((datetime.fromtimestamp(_float(pair[0], "timestamp"), UTC), value))
            out.append(Series(dict(item.get("metric") or {}), points))
        return out
