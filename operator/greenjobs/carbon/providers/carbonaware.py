"""Green Software Foundation Carbon Aware SDK WebAPI (self-hosted, e.g. http://carbon-aware-api:8080).

GET /emissions/forecasts/current?location=eastus -> [{"location", "dataStartAt", "dataEndAt", "windowSize",
    "optimalDataPoints": [...], "forecastData": [{"location", "timestamp", "duration", "value"}]}]
GET /emissions/bylocation?location=eastus        -> [{"location", "time", "rating", "duration"}]
`duration` of a forecast point is in minutes; values are gCO2/kWh as the SDK's configured data source
gives them (WattTime behind the SDK means marginal intensity). Locations are the SDK's names (cloud
regions such as `eastus`): map zones to them with the `zones` aliases. Errors are RFC 7807 problem
details {"type", "title", "status", "detail"}.
"""

from datetime import datetime, timedelta
from typing import Any

from greenjobs.api.durations import parse_time
from greenjobs.carbon.series import IntensitySeries

from .base import BadResponse, Clock, Forecast, NoData, ZoneUnknown, clip
from .http import HttpFetcher, HttpProvider


class CarbonAwareProvider(HttpProvider):
    def __init__(
        self,
        fetcher: HttpFetcher,
        clock: Clock,
        *,
        url: str,
        zones: dict[str, str] | None = None,
        name: str = "carbonaware",
    ) -> None:
        super().__init__(fetcher, clock, url=url, zones=zones, name=name)

    def _get(self, path: str, zone: str) -> Any:
        location = self.zones.get(zone, zone)
        resp = self.http.get(self.url + path, params={"location": location}, headers={"Accept": "application/json"})
        if resp.status_code == 200:
            return self.http.json(resp)
        detail = self.http.detail(resp)
        if resp.status_code in (400, 404) and "location" in detail.lower():
            raise ZoneUnknown(f"{self.name}: location {location} not known (HTTP {resp.status_code}){detail}")
        raise self.http.fail(resp, f"{path} for {zone}")

    def current(self, zone: str) -> float:
        body = self._get("/emissions/bylocation", zone)
        what = f"{self.name} {zone}"
        try:
            latest = max(body, key=lambda item: parse_time(item["time"])) if body else None
            if latest is None:
                raise NoData(f"{what}: no current emissions data")
            return float(latest["rating"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadResponse(f"{what}: unexpected answer shape ({type(exc).__name__}: {exc})") from None

    def forecast(self, zone: str, start: datetime, end: datetime) -> Forecast:
        # No dataStartAt/dataEndAt: the SDK refuses bounds outside its forecast; we clip ourselves.
        body = self._get("/emissions/forecasts/current", zone)
        what = f"{self.name} {zone}"
        try:
            if not isinstance(body, list) or not body:
                raise NoData(f"{what}: no forecast returned")
            points: list[tuple[datetime, float]] = []
            last_end: datetime | None = None
            for item in body[0]["forecastData"]:
                t = parse_time(item["timestamp"])
                points.append((t, float(item["value"])))
                stop = t + timedelta(minutes=float(item.get("duration") or 0))
                last_end = stop if last_end is None else max(last_end, stop)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadResponse(f"{what}: unexpected answer shape ({type(exc).__name__}: {exc})") from None
        if not points:
            raise NoData(f"{what}: the forecast is empty")
        series = IntensitySeries.from_points(points, end=last_end)
        return Forecast(zone, clip(series, start, end, what), self.name, self.clock())
