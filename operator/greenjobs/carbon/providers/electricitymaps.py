"""Electricity Maps API v3 (key in the `auth-token` header).

GET /v3/carbon-intensity/latest?zone=FR   -> {"zone": "FR", "carbonIntensity": 37, "datetime": ..., ...}
GET /v3/carbon-intensity/forecast?zone=FR -> {"zone": "FR", "forecast": [{"carbonIntensity", "datetime"}],
                                              "updatedAt": ...}
Errors: {"error": "..."} or {"status": "error", "message": "..."}. Values are lifecycle gCO2eq/kWh,
average (not marginal) intensity. Forecasts need a plan that includes them.
"""

from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from greenjobs.api.durations import parse_time
from greenjobs.carbon.series import IntensitySeries

from .base import AuthFailed, BadResponse, Clock, Forecast, ProviderError, ZoneUnknown, clip
from .http import HttpFetcher, HttpProvider
from .secrets import SecretFile

DEFAULT_URL = "https://api.electricitymap.org"


class ElectricityMapsProvider(HttpProvider):
    def __init__(
        self,
        fetcher: HttpFetcher,
        clock: Clock,
        api_key: SecretFile,
        *,
        url: str = DEFAULT_URL,
        zones: dict[str, str] | None = None,
        name: str = "electricitymaps",
    ) -> None:
        super().__init__(fetcher, clock, url=url, zones=zones, name=name)
        self.api_key = api_key
        fetcher.secrets = self._secrets

    def _secrets(self) -> Iterable[str]:
        try:
            return (self.api_key.get().get_secret_value(),)
        except ProviderError:
            return ()

    def _get(self, endpoint: str, zone: str) -> Any:
        target = self.zones.get(zone, zone)
        headers = {"auth-token": self.api_key.get().get_secret_value(), "Accept": "application/json"}
        resp = self.http.get(f"{self.url}/v3/carbon-intensity/{endpoint}", params={"zone": target}, headers=headers)
        if resp.status_code == 200:
            return self.http.json(resp)
        detail = self.http.detail(resp)
        about_zone = "zone" in detail.lower()
        if resp.status_code == 401 or (resp.status_code == 403 and not about_zone):
            raise AuthFailed(f"{self.name}: API key refused (HTTP {resp.status_code}){detail}")
        if resp.status_code in (400, 403, 404) and (about_zone or resp.status_code == 404):
            raise ZoneUnknown(f"{self.name}: zone {target} not available (HTTP {resp.status_code}){detail}")
        raise self.http.fail(resp, f"{endpoint} for {zone}")

    def current(self, zone: str) -> float:
        body = self._get("latest", zone)
        try:
            value = body["carbonIntensity"]
            if value is None:
                raise BadResponse(f"{self.name}: no current intensity for {zone}")
            return float(value)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadResponse(f"{self.name}: unexpected answer shape ({type(exc).__name__}: {exc})") from None

    def forecast(self, zone: str, start: datetime, end: datetime) -> Forecast:
        body = self._get("forecast", zone)
        what = f"{self.name} {zone}"
        try:
            points = [
                (parse_time(p["datetime"]), float(p["carbonIntensity"]))
                for p in body["forecast"]
                if p.get("carbonIntensity") is not None
            ]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadResponse(f"{what}: unexpected answer shape ({type(exc).__name__}: {exc})") from None
        if not points:
            raise BadResponse(f"{what}: the forecast is empty")
        points.sort()
        step = points[-1][0] - points[-2][0] if len(points) > 1 else timedelta(hours=1)
        series = IntensitySeries.from_points(points, end=points[-1][0] + step)
        return Forecast(zone, clip(series, start, end, what), self.name, self.clock())


def key_file(path: Path) -> SecretFile:
    return SecretFile(path, "Electricity Maps API key")
