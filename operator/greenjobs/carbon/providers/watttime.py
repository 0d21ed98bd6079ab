"""WattTime API v3: marginal operating emissions rate (MOER), in lbs CO2/MWh.

GET /login (HTTP basic auth)                     -> {"token": "..."}; the token lasts 30 minutes
GET /v3/forecast?region=CAISO_NORTH&signal_type=co2_moer[&horizon_hours=N]
    -> {"data": [{"point_time": "2023-...+00:00", "value": 870.0}], "meta": {"units": "lbs_co2_per_mwh", ...}}
The answer is converted to gCO2/kWh (1 lb/MWh = 0.45359237 g/kWh). MOER is MARGINAL intensity: the
emissions of the plant that follows a change in load, not the grid average that the other providers
give; do not mix the two in one comparison. /v3/signal-index gives a 0-100 percentile, not an
intensity, so current() reads the forecast's first point instead.
"""

import contextlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from greenjobs.api.durations import parse_time
from greenjobs.carbon.series import IntensitySeries

from .base import AuthFailed, BadResponse, Clock, Forecast, ProviderError, ZoneUnknown, clip
from .http import HttpFetcher, HttpProvider
from .secrets import SecretFile

DEFAULT_URL = "https://api.watttime.org"
TOKEN_LIFETIME = timedelta(minutes=25)  # WattTime's tokens last 30 minutes; renew a little early
MAX_HORIZON_HOURS = 72
LB_IN_G = 453.59237
# units -> factor to gCO2/kWh
UNITS = {"lbs_co2_per_mwh": LB_IN_G / 1000.0, "g_co2_per_kwh": 1.0, "kg_co2_per_mwh": 1.0}


class WattTimeProvider(HttpProvider):
    def __init__(
        self,
        fetcher: HttpFetcher,
        clock: Clock,
        username: SecretFile,
        password: SecretFile,
        *,
        url: str = DEFAULT_URL,
        zones: dict[str, str] | None = None,
        signal_type: str = "co2_moer",
        name: str = "watttime",
    ) -> None:
        super().__init__(fetcher, clock, url=url, zones=zones, name=name)
        self.username = username
        self.password = password
        self.signal_type = signal_type
        self._token: str | None = None
        self._token_expires: datetime | None = None
        fetcher.secrets = self._secrets

    def _secrets(self) -> Iterable[str]:
        out = [self._token or ""]
        for secret in (self.password, self.username):
            with contextlib.suppress(ProviderError):
                out.append(secret.get().get_secret_value())
        return out

    def _login(self) -> str:
        auth = (self.username.get().get_secret_value(), self.password.get().get_secret_value())
        resp = self.http.get(f"{self.url}/login", auth=auth)
        if resp.status_code in (401, 403):
            raise AuthFailed(f"{self.name}: login refused (HTTP {resp.status_code}){self.http.detail(resp)}")
        if resp.status_code != 200:
            raise self.http.fail(resp, "login")
        body = self.http.json(resp)
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise BadResponse(f"{self.name}: login answer holds no token")
        self._token = token
        self._token_expires = self.clock() + TOKEN_LIFETIME
        return token

    def _token_now(self) -> str:
        if self._token is None or self._token_expires is None or self.clock() >= self._token_expires:
            return self._login()
        return self._token

    def _get(self, path: str, params: dict[str, str], zone: str) -> Any:
        for attempt in range(2):
            headers = {"Authorization": f"Bearer {self._token_now()}"}
            resp = self.http.get(self.url + path, params=params, headers=headers)
            if resp.status_code == 401 and attempt == 0:
                self._token = None  # expired or revoked early: log in again, once
                continue
            break
        if resp.status_code == 200:
            return self.http.json(resp)
        detail = self.http.detail(resp)
        if resp.status_code in (400, 403, 404) and "region" in detail.lower():
            # Unknown region, or one outside the subscription: this provider cannot serve the zone.
            raise ZoneUnknown(f"{self.name}: region {params['region']} not available for {zone}{detail}")
        raise self.http.fail(resp, f"{path} for {zone}")

    def _moer(self, zone: str, horizon_hours: int) -> IntensitySeries:
        region = self.zones.get(zone, zone)
        params = {"region": region, "signal_type": self.signal_type, "horizon_hours": str(horizon_hours)}
        body = self._get("/v3/forecast", params, zone)
        what = f"{self.name} {zone}"
        try:
            units = body["meta"]["units"]
            factor = UNITS.get(units)
            if factor is None:
                raise BadResponse(f"{what}: unsupported units {units!r}")
            points = [(parse_time(p["point_time"]), float(p["value"]) * factor) for p in body["data"]]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadResponse(f"{what}: unexpected answer shape ({type(exc).__name__}: {exc})") from None
        if not points:
            raise BadResponse(f"{what}: the forecast is empty")
        points.sort()
        step = points[-1][0] - points[-2][0] if len(points) > 1 else timedelta(minutes=5)
        return IntensitySeries.from_points(points, end=points[-1][0] + step)

    def current(self, zone: str) -> float:
        return self._moer(zone, 0).at(self.clock())

    def forecast(self, zone: str, start: datetime, end: datetime) -> Forecast:
        hours = (end - self.clock()).total_seconds() / 3600
        horizon = max(1, min(MAX_HORIZON_HOURS, int(hours) + 1))
        series = self._moer(zone, horizon)
        return Forecast(zone, clip(series, start, end, f"{self.name} {zone}"), self.name, self.clock())
