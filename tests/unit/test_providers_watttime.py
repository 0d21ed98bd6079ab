"""WattTime v3: login with basic auth, bearer token, re-login on 401, lbs/MWh -> g/kWh."""

import base64
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from greenjobs.api.durations import parse_time
from greenjobs.carbon.providers import AuthFailed, BadResponse, ZoneUnknown
from greenjobs.carbon.providers.http import HttpFetcher
from greenjobs.carbon.providers.secrets import SecretFile
from greenjobs.carbon.providers.watttime import WattTimeProvider

FIXTURES = Path(__file__).parents[1] / "fixtures" / "providers"
START = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
USER, PASSWORD = "greenjobs-user", "wt-pass-8c1f2e77"


def body(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class Clock:
    def __init__(self) -> None:
        self.now = START + timedelta(minutes=2)

    def __call__(self) -> datetime:
        return self.now


class FakeWattTime:
    """Answers like WattTime; tokens can be revoked to force a 401."""

    def __init__(self) -> None:
        self.logins = 0
        self.valid: set[str] = set()
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/login":
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if request.headers.get("Authorization") != expected:
                return httpx.Response(403, json={"error": "invalid credentials"})
            self.logins += 1
            token = f"token-{self.logins}"
            self.valid.add(token)
            return httpx.Response(200, json={"token": token})
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.valid:
            return httpx.Response(401, json={"error": "Unauthorized"})
        if request.url.params["region"] != "CAISO_NORTH":
            return httpx.Response(403, json=body("watttime_error_region.json"))
        return httpx.Response(200, json=body("watttime_forecast.json"))


def make(tmp_path: Path, api: FakeWattTime, clock: Clock, password: str = PASSWORD) -> WattTimeProvider:
    (tmp_path / "username").write_text(USER)
    (tmp_path / "password").write_text(password)
    client = httpx.Client(transport=httpx.MockTransport(api))
    fetcher = HttpFetcher(client, "watttime", retries=1, sleep=lambda s: None, clock=clock)
    return WattTimeProvider(
        fetcher,
        clock,
        SecretFile(tmp_path / "username", "username"),
        SecretFile(tmp_path / "password", "password"),
        zones={"CA-N": "CAISO_NORTH"},
    )


def test_forecast_converts_lbs_per_mwh_to_g_per_kwh(tmp_path: Path) -> None:
    api, clock = FakeWattTime(), Clock()
    p = make(tmp_path, api, clock)
    fc = p.forecast("CA-N", clock(), clock() + timedelta(hours=6))
    first = body("watttime_forecast.json")["data"][0]
    assert fc.series.at(clock()) == pytest.approx(first["value"] * 0.45359237)
    assert fc.series.end == (clock() + timedelta(hours=6)).timestamp()
    forecast_req = api.requests[-1]
    assert forecast_req.url.path == "/v3/forecast"
    assert forecast_req.url.params["signal_type"] == "co2_moer"
    assert forecast_req.url.params["horizon_hours"] == "7"
    assert forecast_req.headers["Authorization"] == "Bearer token-1"


def test_token_is_reused_then_renewed_after_expiry_and_on_401(tmp_path: Path) -> None:
    api, clock = FakeWattTime(), Clock()
    p = make(tmp_path, api, clock)
    p.current("CA-N")
    p.current("CA-N")
    assert api.logins == 1
    clock.now += timedelta(minutes=31)
    p.current("CA-N")
    assert api.logins == 2
    api.valid.clear()  # revoked early: the next call gets 401 and logs in again
    index = (clock.now - START) // timedelta(minutes=5)
    expected = body("watttime_forecast.json")["data"][index]["value"] * 0.45359237
    assert p.current("CA-N") == pytest.approx(expected)
    assert api.logins == 3


def test_region_outside_subscription_is_zone_unknown(tmp_path: Path) -> None:
    p = make(tmp_path, FakeWattTime(), Clock())
    with pytest.raises(ZoneUnknown, match="does not have access to this region"):
        p.current("PJM_DC")


def test_wrong_password_never_leaks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    p = make(tmp_path, FakeWattTime(), Clock(), password="wrong-pass-1234")
    with pytest.raises(AuthFailed, match="login refused") as err:
        p.forecast("CA-N", START, START + timedelta(hours=1))
    for text in (str(err.value), repr(err.value), caplog.text, repr(p.password)):
        assert "wrong-pass-1234" not in text and USER not in text


def test_unknown_units_and_malformed_body(tmp_path: Path) -> None:
    answer = body("watttime_forecast.json")
    answer["meta"]["units"] = "percentile"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/login":
            return httpx.Response(200, json={"token": "t"})
        return httpx.Response(200, json=answer)

    p = make(tmp_path, FakeWattTime(), Clock())
    p.http.client = httpx.Client(transport=httpx.MockTransport(handler))
    with pytest.raises(BadResponse, match="unsupported units 'percentile'"):
        p.current("CA-N")
    answer.pop("meta")
    with pytest.raises(BadResponse, match="unexpected answer shape"):
        p.current("CA-N")


def test_point_times_parse() -> None:
    assert parse_time(body("watttime_forecast.json")["data"][0]["point_time"]) == START
