"""GB National Grid ESO Carbon Intensity API (https://api.carbonintensity.org.uk, no key).

National:  GET /intensity                 -> {"data": [{"from", "to",
                                                "intensity": {"forecast", "actual", "index"}}]}
           GET /intensity/{from}/fw48h    -> the same list, 48 h of half-hour slots
Regional:  GET /regional/regionid/{id}    -> {"data": [{"regionid", "shortname", "data": [slot]}]}
           GET /regional/intensity/{from}/fw48h/regionid/{id} -> {"data": {"regionid", ..., "data": [slot]}}
Times are written `2018-01-20T12:00Z` (minutes, no seconds). Regional slots carry only a forecast.

Zones: `GB` is the national series; map another zone to a region id (1-17) with the `zones` aliases,
e.g. {"GB-LONDON": "13"}.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from greenjobs.api.durations import parse_time
from greenjobs.carbon.series import IntensitySeries

from .base import BadResponse, Clock, Forecast, ZoneUnknown, clip
from .http import HttpFetcher, HttpProvider

DEFAULT_URL = "https://api.carbonintensity.org.uk"
REGION_IDS = range(1, 18)


def format_from(t: datetime) -> str:
    """The API's own time format: `2018-01-20T12:00Z`."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _slot_value(slot: dict[str, Any]) -> float | None:
    intensity = slot["intensity"]
    # A measured value, where the half hour has one, beats the forecast made for it.
    value = intensity.get("actual")
    if value is None:
        value = intensity.get("forecast")
    return None if value is None else float(value)


def parse_slots(slots: Any, what: str) -> IntensitySeries:
    """Half-hour slots -> a step series ending at the last slot's `to`."""
    try:
        points = []
        last_to: datetime | None = None
        for slot in slots:
            value = _slot_value(slot)
            if value is None:
                continue
            points.append((parse_time(slot["from"]), value))
            to = parse_time(slot["to"])
            last_to = to if last_to is None else max(last_to, to)
        if not points:
            raise BadResponse(f"{what}: the answer holds no intensity values")
        return IntensitySeries.from_points(points, end=last_to)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadResponse(f"{what}: unexpected answer shape ({type(exc).__name__}: {exc})") from None


class NationalGridProvider(HttpProvider):
    def __init__(
        self,
        fetcher: HttpFetcher,
        clock: Clock,
        *,
        url: str = DEFAULT_URL,
        zones: dict[str, str] | None = None,
        name: str = "nationalgrid",
    ) -> None:
        super().__init__(fetcher, clock, url=url, zones=zones, name=name)

    def _region(self, zone: str) -> int | None:
        """None for the national series, else the regional id; ZoneUnknown for anything else."""
        target = self.zones.get(zone, zone)
        if target.upper() == "GB":
            return None
        if target.isdigit() and int(target) in REGION_IDS:
            return int(target)
        raise ZoneUnknown(f"{self.name}: serves GB and GB region ids 1-17 only, not {zone}")

    def _get(self, path: str, what: str) -> Any:
        resp = self.http.get(self.url + path, headers={"Accept": "application/json"})
        if resp.status_code != 200:
            raise self.http.fail(resp, what)
        return self.http.json(resp)

    @staticmethod
    def _regional_slots(body: Any) -> Any:
        data = body["data"]
        region = data[0] if isinstance(data, list) else data  # list for /regional/regionid, object for fw48h
        return region["data"]

    def _series(self, zone: str, path_national: str, path_regional: str) -> IntensitySeries:
        region = self._region(zone)
        what = f"{self.name} {zone}"
        if region is None:
            body = self._get(path_national, f"request for {zone}")
            slots = body.get("data") if isinstance(body, dict) else None
        else:
            body = self._get(path_regional.format(region=region), f"request for {zone}")
            try:
                slots = self._regional_slots(body)
            except (KeyError, TypeError, IndexError):
                slots = None
        if not isinstance(slots, list):
            raise BadResponse(f"{what}: unexpected answer shape (no data list)")
        return parse_slots(slots, what)

    def current(self, zone: str) -> float:
        series = self._series(zone, "/intensity", "/regional/regionid/{region}")
        return series.at(self.clock())

    def forecast(self, zone: str, start: datetime, end: datetime) -> Forecast:
        # Ask from half an hour earlier: the API may begin with the slot after `from`, and the slot
        # that contains `start` is needed.
        frm = format_from(start - timedelta(minutes=30))
        series = self._series(zone, f"/intensity/{frm}/fw48h", f"/regional/intensity/{frm}/fw48h/regionid/{{region}}")
        fetched = self.clock()
        return Forecast(zone, clip(series, start, end, f"{self.name} {zone}"), self.name, fetched)
