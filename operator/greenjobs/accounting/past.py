"""The intensity of the time energy was used, for GPU energy the agents report late.

An agent reports after a restart, after an outage of the API server, or a job's last joules after it
ended; the operator may account them later still. Their entry's `usage` points say when each joule
was used; this looks the zone's intensity up for those intervals (one forecast call per accounting,
only when some energy is late), so late energy is charged at the intensity of its interval of use,
not of accounting time.
"""

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from greenjobs.api.models import NodeEnergy
from greenjobs.carbon.providers.base import Forecast, ProviderError
from greenjobs.carbon.series import IntensitySeries, to_epoch

from .energy import IntensityOf, new_pieces

log = logging.getLogger(__name__)

# Energy used within this long before accounting is charged at the intensity now: real-time values
# and forecasts move on a 5-60 min step, and timely accounting then asks the provider nothing more.
LATE = timedelta(minutes=10)

Fetch = Callable[[str, datetime, datetime], Forecast]


def intensity_of_use(
    nodes: Mapping[str, NodeEnergy], marks: Mapping[str, float], zone: str | None, now: datetime, fetch: Fetch
) -> IntensityOf | None:
    """What `account` prices each late piece of new energy at: the mean of the zone's series over its
    interval. None (everything at the intensity now) when no energy is late, there is no zone, or the
    provider has no series for then."""
    cutoff = now - LATE
    late = [
        p
        for node, entry in nodes.items()
        for p in new_pieces(entry, marks.get(node, 0.0))
        if p.start is not None and p.end is not None and p.end < cutoff
    ]
    if not zone or not late:
        return None
    start = min(p.start for p in late if p.start is not None)
    end = max(p.end for p in late if p.end is not None)
    try:
        series = fetch(zone, start, max(end, start + timedelta(seconds=1))).series
    except ProviderError as exc:
        # Providers without history (a forecast-only API) or an outage: the current value stands in.
        log.info("no intensity of %s for %s..%s, late energy at the current value: %s", zone, start, end, exc)
        return None
    return lambda a, b: None if b >= cutoff else _mean(series, a, b)


def _mean(series: IntensitySeries, a: datetime, b: datetime) -> float | None:
    """Mean over [a, b] within the series' coverage (the covered part where it covers only part of
    it); None where it covers none of it."""
    lo, hi = max(to_epoch(a), float(series.times[0])), min(to_epoch(b), series.horizon_s)
    if hi > lo:
        return series.integral_s(lo, hi) / (hi - lo)
    if a == b and series.covers(a, b):
        return series.at(a)
    return None
