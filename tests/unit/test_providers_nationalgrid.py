"""GB National Grid Carbon Intensity API, against its documented response shapes."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from greenjobs.api.durations import parse_time
from greenjobs.carbon.providers import BadResponse, ProviderError, Unavailable, ZoneUnknown
from greenjobs.carbon.providers.http import HttpFetcher
from greenjobs.carbon.providers.nationalgrid import NationalGridProvider, format_from

FIXTURES = Path(__file__).parents[1] / "fixtures" / "providers"
NOW = datetime(2026, 11, 23, 14, 40, tzinfo=UTC)


def body(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def provider(routes: dict[str, httpx.Response], seen: list[str], **kw: Any) -> NationalGridProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        for prefix, resp in routes.items():
            if request.url.path.startswith(prefix):
                return resp
        return httpx.Response(404, json={"error": {"code": "404", "message": "not found"}})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    fetcher = HttpFetcher(client, "nationalgrid", retries=1, sleep=lambda s: None, clock=lambda: NOW)
    return NationalGridProvider(fetcher, lambda: NOW, **kw)


def test_time_format_is_the_apis_own() -> None:
    assert format_from(datetime(2018, 1, 20, 12, 0, 59, tzinfo=UTC)) == "2018-01-20T12:00Z"


def test_national_forecast_parses_slots_and_prefers_actuals() -> None:
    seen: list[str] = []
    p = provider({"/intensity/": httpx.Response(200, json=body("nationalgrid_fw48h.json"))}, seen)
    fc = p.forecast("GB", NOW, NOW + timedelta(hours=12))
    # Asked from the half hour before `start`, in the API's format.
    assert seen == ["/intensity/2026-11-23T14:10Z/fw48h"]
    slots = body("nationalgrid_fw48h.json")["data"]
    assert fc.series.at(NOW) == slots[0]["intensity"]["actual"]  # measured value wins
    t = parse_time(slots[5]["from"])
    assert fc.series.at(t) == slots[5]["intensity"]["forecast"]
    assert fc.source == "nationalgrid" and fc.series.start == NOW
    assert fc.series.end == (NOW + timedelta(hours=12)).timestamp()


def test_forecast_coverage_stops_at_the_last_slot() -> None:
    p = provider({"/intensity/": httpx.Response(200, json=body("nationalgrid_fw48h.json"))}, [])
    fc = p.forecast("GB", NOW, NOW + timedelta(days=5))
    last_to = parse_time(body("nationalgrid_fw48h.json")["data"][-1]["to"])
    assert fc.series.end == last_to.timestamp()


def test_national_current() -> None:
    seen: list[str] = []
    p = provider({"/intensity": httpx.Response(200, json=body("nationalgrid_intensity.json"))}, seen)
    assert p.current("GB") == 263.0
    assert seen == ["/intensity"]


def test_regional_endpoints_through_zone_alias() -> None:
    seen: list[str] = []
    routes = {
        "/regional/intensity/": httpx.Response(200, json=body("nationalgrid_regional_fw48h.json")),
        "/regional/regionid/13": httpx.Response(200, json=body("nationalgrid_regional_current.json")),
    }
    p = provider(routes, seen, zones={"GB-LONDON": "13"})
    slots = body("nationalgrid_regional_fw48h.json")["data"]["data"]
    fc = p.forecast("GB-LONDON", NOW, NOW + timedelta(hours=1))
    assert fc.series.at(NOW) == slots[0]["intensity"]["forecast"]
    assert p.current("GB-LONDON") == slots[0]["intensity"]["forecast"]
    assert seen == ["/regional/intensity/2026-11-23T14:10Z/fw48h/regionid/13", "/regional/regionid/13"]


def test_unknown_zone_needs_no_request() -> None:
    seen: list[str] = []
    p = provider({}, seen)
    with pytest.raises(ZoneUnknown, match="not FR"):
        p.forecast("FR", NOW, NOW + timedelta(hours=1))
    assert seen == []


def test_error_body_and_bad_shapes() -> None:
    p = provider({"/intensity": httpx.Response(400, json=body("nationalgrid_error_400.json"))}, [])
    with pytest.raises(ProviderError, match=r"request for GB failed \(HTTP 400\): Please enter a valid ISO8601 date"):
        p.current("GB")
    p = provider({"/intensity": httpx.Response(200, json={"data": [{"from": "x"}]})}, [])
    with pytest.raises(BadResponse, match="unexpected answer shape"):
        p.current("GB")
    p = provider({"/intensity": httpx.Response(200, text="<html>")}, [])
    with pytest.raises(BadResponse, match="malformed JSON"):
        p.current("GB")


def test_server_error_then_success_and_persistent_failure() -> None:
    answers = [httpx.Response(502), httpx.Response(200, json=body("nationalgrid_intensity.json"))]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0) if answers else httpx.Response(500)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    sleeps: list[float] = []
    p = NationalGridProvider(HttpFetcher(client, "nationalgrid", sleep=sleeps.append), lambda: NOW)
    assert p.current("GB") == 263.0 and len(sleeps) == 1
    with pytest.raises(Unavailable, match="HTTP 500"):
        p.current("GB")
