"""Carbon Aware SDK WebAPI: /emissions/forecasts/current and /emissions/bylocation."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from greenjobs.api.durations import parse_time
from greenjobs.carbon.providers import BadResponse, NoData, ZoneUnknown
from greenjobs.carbon.providers.carbonaware import CarbonAwareProvider
from greenjobs.carbon.providers.http import HttpFetcher

FIXTURES = Path(__file__).parents[1] / "fixtures" / "providers"
NOW = datetime(2026, 11, 23, 14, 32, tzinfo=UTC)


def body(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def make(handler: Any) -> CarbonAwareProvider:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    fetcher = HttpFetcher(client, "carbonaware", retries=0, sleep=lambda s: None)
    return CarbonAwareProvider(fetcher, lambda: NOW, url="http://carbon-aware-api:8080/", zones={"US-E": "eastus"})


def test_forecast_uses_forecast_data_with_durations() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=body("carbonaware_forecast.json"))

    fc = make(handler).forecast("US-E", NOW, NOW + timedelta(days=3))
    data = body("carbonaware_forecast.json")[0]["forecastData"]
    assert seen[0].url.path == "/emissions/forecasts/current"
    assert seen[0].url.params["location"] == "eastus"
    assert fc.series.at(NOW) == data[0]["value"]
    assert fc.series.at(parse_time(data[7]["timestamp"])) == data[7]["value"]
    # Coverage ends with the last point's duration (5 minutes), not at the requested 3 days.
    assert fc.series.end == (parse_time(data[-1]["timestamp"]) + timedelta(minutes=5)).timestamp()


def test_current_takes_the_latest_rating() -> None:
    p = make(lambda r: httpx.Response(200, json=body("carbonaware_bylocation.json")))
    assert p.current("US-E") == 431.5


def test_unknown_location_empty_and_bad_shapes() -> None:
    with pytest.raises(ZoneUnknown, match="Unknown location"):
        make(lambda r: httpx.Response(400, json=body("carbonaware_error_location.json"))).current("mars")
    with pytest.raises(NoData):
        make(lambda r: httpx.Response(200, json=[])).current("US-E")
    with pytest.raises(NoData):
        make(lambda r: httpx.Response(200, json=[{"forecastData": []}])).forecast("US-E", NOW, NOW)
    with pytest.raises(BadResponse):
        make(lambda r: httpx.Response(200, json=[{"forecastData": [{"value": 1}]}])).forecast("US-E", NOW, NOW)


def test_forecast_that_ended_before_start_is_no_data() -> None:
    p = make(lambda r: httpx.Response(200, json=body("carbonaware_forecast.json")))
    later = NOW + timedelta(days=2)
    with pytest.raises(NoData, match="data ends at"):
        p.forecast("US-E", later, later + timedelta(hours=1))
