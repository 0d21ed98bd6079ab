"""What every forecast provider promises: the Forecast value, the error kinds, the protocol.

Error messages are shown to users (conditions, Events, CLI output), so they say which provider failed
and why, and never carry a credential: anything built from a response body goes through `redact`.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from greenjobs.carbon.series import IntensitySeries

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Forecast:
    zone: str
    series: IntensitySeries  # covers [start, end] as far as the provider can
    source: str  # provider name, e.g. "nationalgrid"
    fetched_at: datetime


class ProviderError(Exception):
    """A provider could not answer. The message is user-facing and never contains a credential."""

    kind: str = "error"  # short label for metrics: error, timeout, unavailable, auth, bad_response, ...
    repeated: bool = False  # answered from memory (negative cache, open circuit): no new request failed


class ZoneUnknown(ProviderError):
    """The provider does not serve this zone: retrying is pointless, fail over."""

    kind = "zone_unknown"


class RateLimited(ProviderError):
    kind = "rate_limited"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ProviderError):
    """Connection failures and 5xx answers that outlasted the retries."""

    kind = "unavailable"


class TimedOut(Unavailable):
    kind = "timeout"


class AuthFailed(ProviderError):
    kind = "auth"


class BadResponse(ProviderError):
    """The answer was not the documented shape (malformed JSON, missing fields, unknown units)."""

    kind = "bad_response"


class NoData(ProviderError):
    """The provider answered, but has no data for the requested time."""

    kind = "no_data"


class AllProvidersFailed(ProviderError):
    kind = "all_failed"

    def __init__(self, zone: str, errors: dict[str, str]) -> None:
        # Provider messages usually start with the provider's name already; don't say it twice.
        reasons = "; ".join(why if why.startswith(f"{name}:") else f"{name}: {why}" for name, why in errors.items())
        super().__init__(f"no forecast for zone {zone}: {reasons or 'no provider configured'}")
        self.zone = zone
        self.errors = errors


class ForecastProvider(Protocol):
    name: str

    def current(self, zone: str) -> float:
        """Intensity now, gCO2e/kWh."""
        ...

    def forecast(self, zone: str, start: datetime, end: datetime) -> Forecast: ...


def copied(error: ProviderError) -> ProviderError:
    """A new instance of a remembered error (same type, message and fields), to raise again.

    Raising one shared instance from several threads would make them write one traceback.
    """
    again = type(error).__new__(type(error))
    again.args = error.args
    again.__dict__.update(error.__dict__)
    again.repeated = True
    return again


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value that occurs in `text` (e.g. an API echoing the key back)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def coverage_end(series: IntensitySeries) -> datetime:
    """Where the provider's data stops (the series' horizon)."""
    return series.horizon


def clip(series: IntensitySeries, start: datetime, end: datetime, what: str) -> IntensitySeries:
    """The part of `series` within [start, end], never claiming coverage the provider did not give.

    Raise NoData when the data ends at or before `start` (`what` names the provider and zone).
    """
    stop = min(end, series.horizon)
    if stop <= start:
        raise NoData(f"{what}: data ends at {stop.isoformat()}, before the requested {start.isoformat()}")
    return series.window(start, stop)
