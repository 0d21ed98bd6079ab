"""Carbon-intensity series as step functions, and the CSV/JSON formats they are read from.

A series is a list of (start time, gCO2e/kWh) points: each value holds from its time until the next
point's time; the last one holds until `end`. Real traces have gaps (the previous value is held across
them, as a forecast would), irregular steps and duplicate timestamps (averaged).

What a series COVERS is [first point, horizon): the horizon is `end` when the source said where its data
stops, else one typical (median) step after the last point (a half-hourly forecast's last point covers
its half hour). Arithmetic beyond the horizon (`mean`, `at`) still extends the edge values flat, but the
planner only counts windows inside the coverage, so nothing it reports rests on that extension.
"""

import csv
import io
import json
import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from greenjobs.api.durations import parse_time

FloatArray = npt.NDArray[np.float64]
_EDGE_S = 1e-5


def to_epoch(t: datetime) -> float:
    return t.timestamp()


def from_epoch(s: float) -> datetime:
    return datetime.fromtimestamp(s, UTC)


@dataclass(frozen=True, eq=False)
class IntensitySeries:
    """Step function of intensity over time. `times` are epoch seconds, strictly increasing."""

    times: FloatArray
    values: FloatArray
    end: float | None = None
    # prefix[i] = integral from times[0] to times[i] (gCO2e/kWh x seconds)
    prefix: FloatArray = field(init=False, repr=False)
    # Where the data stops (epoch seconds): see the module docstring.
    horizon_s: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.times) == 0:
            raise ValueError("an intensity series needs at least one point")
        steps = np.diff(self.times)
        prefix = np.concatenate(([0.0], np.cumsum(self.values[:-1] * steps)))
        object.__setattr__(self, "prefix", prefix)
        if self.end is not None:
            horizon = float(self.end)
        else:
            # A single point says nothing about how long it holds: it covers no time at all.
            horizon = float(self.times[-1]) + (float(np.median(steps)) if len(steps) else 0.0)
        object.__setattr__(self, "horizon_s", horizon)

    # ------------------------------------------------------------ construction

    @classmethod
    def from_points(cls, points: Iterable[tuple[datetime, float]], end: datetime | None = None) -> "IntensitySeries":
        """Sort, average duplicate timestamps, drop non-finite or negative values."""
        buckets: dict[float, list[float]] = defaultdict(list)
        for t, raw in points:
            v = float(raw)
            if math.isfinite(v) and v >= 0:
                buckets[to_epoch(t)].append(v)
        if not buckets:
            raise ValueError("no valid (time, gCO2e/kWh) points")
        keys = sorted(buckets)
        times = np.array(keys, dtype=np.float64)
        values = np.array([sum(buckets[k]) / len(buckets[k]) for k in keys], dtype=np.float64)
        return cls(times, values, to_epoch(end) if end else None)

    @classmethod
    def from_csv(cls, text: str) -> "IntensitySeries":
        """A header row, then `timestamp,gCO2e/kWh` rows (ISO 8601, or `YYYY-MM-DD HH:MM:SS` as UTC)."""
        rows = csv.reader(io.StringIO(text))
        points: list[tuple[datetime, float]] = []
        for n, row in enumerate(rows):
            if len(row) < 2 or not row[0].strip():
                continue
            try:
                points.append((parse_time(row[0]), float(row[1])))
            except ValueError:
                if n == 0:
                    continue  # the header row
                raise ValueError(f"line {n + 1}: cannot read {row[:2]!r} as timestamp,gCO2e/kWh") from None
        return cls.from_points(points)

    @classmethod
    def from_json(cls, text: str) -> "IntensitySeries":
        """A list of `{"time"|"datetime"|"timestamp"|"from": T, "gPerKWh"|"intensity"|"value": N}`."""
        data: Any = json.loads(text)
        if isinstance(data, dict):
            data = data.get("data") or data.get("forecast") or data.get("points") or []
        points = []
        for item in data:
            t = next((item[k] for k in ("time", "datetime", "timestamp", "from") if k in item), None)
            v = next((item[k] for k in ("gPerKWh", "intensity", "value", "carbonIntensity") if k in item), None)
            if t is None or v is None:
                raise ValueError(f"JSON point {item!r} needs a time and a gPerKWh value")
            points.append((parse_time(str(t)), float(v)))
        return cls.from_points(points)

    # ------------------------------------------------------------ queries

    @property
    def start(self) -> datetime:
        return from_epoch(float(self.times[0]))

    @property
    def horizon(self) -> datetime:
        """Where the data stops: the series covers [start, horizon)."""
        return from_epoch(self.horizon_s)

    def covers(self, start: datetime, end: datetime) -> bool:
        """Whether [start, end) lies within the data (no value extended past either edge)."""
        # The tolerance absorbs datetime's rounding to microseconds of an epoch-float edge.
        return float(self.times[0]) - _EDGE_S <= to_epoch(start) and to_epoch(end) <= self.horizon_s + _EDGE_S

    def points(self) -> list[tuple[datetime, float]]:
        return [(from_epoch(float(t)), float(v)) for t, v in zip(self.times, self.values, strict=True)]

    def at(self, t: datetime) -> float:
        """Intensity in force at `t` (the first value before the series starts)."""
        i = bisect_right(self.times, to_epoch(t)) - 1
        return float(self.values[max(i, 0)])

    def integral_s(self, a: float, b: float) -> float:
        """Integral of intensity over [a, b] (epoch seconds); flat extension before and after."""
        return self._cumulative(b) - self._cumulative(a)

    def _cumulative(self, x: float) -> float:
        t0 = float(self.times[0])
        if x <= t0:
            return float(self.values[0]) * (x - t0)
        i = bisect_right(self.times, x) - 1
        return float(self.prefix[i]) + float(self.values[i]) * (x - float(self.times[i]))

    def mean(self, start: datetime, duration: timedelta) -> float:
        """Mean intensity over [start, start + duration)."""
        a = to_epoch(start)
        d = duration.total_seconds()
        if d <= 0:
            return self.at(start)
        return self.integral_s(a, a + d) / d

    def window(self, start: datetime, end: datetime) -> "IntensitySeries":
        """The part of the series within [start, end], keeping the value in force at `start`.

        Its `end` is `end` or this series' horizon, whichever comes first: a window never claims
        coverage the data does not have.
        """
        a, b = to_epoch(start), to_epoch(end)
        i = max(bisect_right(self.times, a) - 1, 0)
        j = max(bisect_right(self.times, b), i + 1)
        times = self.times[i:j].copy()
        times[0] = max(times[0], a) if times[0] < a else times[0]
        return IntensitySeries(times, self.values[i:j].copy(), min(b, self.horizon_s))

    def shifted(self, delta: timedelta) -> "IntensitySeries":
        s = delta.total_seconds()
        return IntensitySeries(self.times + s, self.values.copy(), None if self.end is None else self.end + s)

    def __len__(self) -> int:
        return len(self.times)
