"""Electricity Maps v3, against its documented response and error shapes; the key never leaks."""

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from greenjobs.api.durations import parse_time
from greenjobs.carbon.providers import AuthFailed, BadResponse, RateLimited, TimedOut, ZoneUnknown
from greenjobs.carbon.providers.electricitymaps import ElectricityMapsProvider
from greenjobs.carbon.providers.http import HttpFetcher
from greenjobs.carbon.providers.secrets import SecretFile

FIXTURES = Path(__file__).parents[1] / "fixtures" / "providers"
NOW = datetime(2026, 11, 23, 14, 40, tzinfo=UTC)
KEY = "em-key-5f3a9c0d1e2b"


def body(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def make(tmp_path: Path, handler: Any, **kw: Any) -> ElectricityMapsProvider:
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY + "\n")  # Secrets often end in a newline
    client = httpx.Client(transport=httpx.MockTransport(handler))
    fetcher = HttpFetcher(client, "electricitymaps", retries=1, sleep=lambda s: None, clock=lambda: NOW)
    return ElectricityMapsProvider(fetcher, lambda: NOW, SecretFile(key_file, "API key"), **kw)


def test_latest_sends_key_header_and_zone(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=body("electricitymaps_latest.json"))

    p = make(tmp_path, handler, zones={"FR": "FR"})
    assert p.current("FR") == 37.0
    (req,) = seen
    assert req.url.path == "/v3/carbon-intensity/latest" and req.url.params["zone"] == "FR"
    assert req.headers["auth-token"] == KEY


def test_forecast_series_and_coverage(tmp_path: Path) -> None:
    p = make(tmp_path, lambda r: httpx.Response(200, json=body("electricitymaps_forecast.json")))
    fc = p.forecast("FR", NOW, NOW + timedelta(hours=48))
    points = body("electricitymaps_forecast.json")["forecast"]
    assert fc.series.at(NOW) == points[0]["carbonIntensity"]
    assert fc.series.at(parse_time(points[3]["datetime"])) == points[3]["carbonIntensity"]
    # Hourly points: the last one covers one more hour, then coverage stops.
    assert fc.series.end == (parse_time(points[-1]["datetime"]) + timedelta(hours=1)).timestamp()
    assert fc.source == "electricitymaps"


def test_zone_alias_is_sent(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params["zone"])
        return httpx.Response(200, json=body("electricitymaps_latest.json"))

    make(tmp_path, handler, zones={"CAISO": "US-CAL-CISO"}).current("CAISO")
    assert seen == ["US-CAL-CISO"]


def test_unknown_zone_is_zone_unknown(tmp_path: Path) -> None:
    p = make(tmp_path, lambda r: httpx.Response(400, json=body("electricitymaps_error_zone.json")))
    with pytest.raises(ZoneUnknown, match="Zone 'XX' does not exist"):
        p.current("XX")


def test_refused_key_never_appears_in_logs_or_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # The API echoes the key back in its error (worst case): it must be redacted.
    echo = {"error": f"Invalid authentication token {KEY}"}
    answers = iter([httpx.Response(500, json=echo), httpx.Response(401, json=echo)])
    p = make(tmp_path, lambda r: next(answers))
    with pytest.raises(AuthFailed) as err:
        p.current("FR")
    assert "Invalid authentication token ***" in str(err.value)
    assert KEY not in str(err.value) and KEY not in repr(err.value)
    assert KEY not in caplog.text
    assert KEY not in repr(p.api_key) and KEY not in repr(p.api_key.get())


def test_timeouts_429_and_malformed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(TimedOut):
        make(tmp_path, timeout).current("FR")
    limited = make(tmp_path, lambda r: httpx.Response(429, headers={"Retry-After": "600"}))
    with pytest.raises(RateLimited) as err:
        limited.forecast("FR", NOW, NOW + timedelta(hours=1))
    assert err.value.retry_after == 600.0
    with pytest.raises(BadResponse):
        make(tmp_path, lambda r: httpx.Response(200, text="{")).current("FR")
    with pytest.raises(BadResponse, match="unexpected answer shape"):
        make(tmp_path, lambda r: httpx.Response(200, json={"zone": "FR"})).forecast("FR", NOW, NOW)
    assert KEY not in caplog.text


def test_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    p = ElectricityMapsProvider(
        HttpFetcher(client, "electricitymaps"), lambda: NOW, SecretFile(tmp_path / "nope", "API key")
    )
    with pytest.raises(AuthFailed, match="cannot read the API key from"):
        p.current("FR")
