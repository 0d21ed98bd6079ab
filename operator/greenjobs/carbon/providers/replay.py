"""Replay a historical trace as if it were live, for demos and tests.

Trace time runs from `anchor` at real time `started`, `speedup` times faster than real time:
    trace_time = anchor + (now - started) * speedup
so speedup=60 plays one trace hour per real minute. Past the trace's end it wraps to its start.
forecast() answers in REAL time coordinates: with speedup > 1 a trace day is compressed into
24/speedup real hours, which is what a planner running in real time must see.
"""

import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import numpy as np

from greenjobs.carbon.series import IntensitySeries, from_epoch, to_epoch

from .base import Clock, Forecast, ProviderError, ZoneUnknown
from .files import load_series

MAX_WRAPS = 10_000  # a forecast window that spans more trace repetitions than this is a config mistake


class ReplayProvider:
    def __init__(
        self,
        traces: Mapping[str, Path | IntensitySeries],
        anchor: datetime,
        clock: Clock,
        *,
        speedup: float = 1.0,
        started: datetime | None = None,
        name: str = "replay",
    ) -> None:
        if speedup <= 0:
            raise ValueError("replay speedup must be positive")
        self.traces = dict(traces)
        self.anchor = anchor
        self.clock = clock
        self.speedup = speedup
        self.started = started if started is not None else clock()
        self.name = name
        self._series: dict[str, tuple[IntensitySeries, float]] = {}

    def _trace(self, zone: str) -> tuple[IntensitySeries, float]:
        """The zone's trace and its period in seconds (span plus one typical step, so it loops evenly)."""
        if zone in self._series:
            return self._series[zone]
        source = self.traces.get(zone)
        if source is None:
            raise ZoneUnknown(f"{self.name}: no trace for zone {zone}")
        if isinstance(source, IntensitySeries):
            series = source
        else:
            try:
                series = load_series(source)
            except OSError as exc:
                raise ProviderError(f"{self.name}: cannot read {source}: {exc.strerror}") from None
            except ValueError as exc:
                raise ProviderError(f"{self.name}: {source}: {exc}") from None
        steps = np.diff(series.times)
        step = float(np.median(steps)) if len(steps) else 1800.0
        period = float(series.times[-1] - series.times[0]) + step
        self._series[zone] = (series, period)
        return series, period

    def _unwrapped(self, t: datetime) -> float:
        """Trace epoch seconds for real time `t`, before wrapping."""
        return to_epoch(self.anchor) + (to_epoch(t) - to_epoch(self.started)) * self.speedup

    def _real(self, u: float) -> float:
        return to_epoch(self.started) + (u - to_epoch(self.anchor)) / self.speedup

    def trace_time(self, zone: str, now: datetime) -> datetime:
        """The trace instant that real time `now` replays (wrapped into the trace)."""
        series, period = self._trace(zone)
        t0 = float(series.times[0])
        return from_epoch(t0 + (self._unwrapped(now) - t0) % period)

    def current(self, zone: str) -> float:
        series, _ = self._trace(zone)
        return series.at(self.trace_time(zone, self.clock()))

    def forecast(self, zone: str, start: datetime, end: datetime) -> Forecast:
        series, period = self._trace(zone)
        t0 = float(series.times[0])
        u0, u1 = self._unwrapped(start), self._unwrapped(max(end, start))
        k0, k1 = math.floor((u0 - t0) / period), math.floor((u1 - t0) / period)
        if k1 - k0 > MAX_WRAPS:
            raise ProviderError(f"{self.name}: window {start}..{end} spans too many trace loops")
        times = [np.array([u0])]
        values = [np.array([series.at(from_epoch(t0 + (u0 - t0) % period))])]
        for k in range(k0, k1 + 1):
            shifted = series.times + k * period
            keep = (shifted > u0) & (shifted < u1)
            times.append(shifted[keep])
            values.append(series.values[keep])
        trace = np.concatenate(times)
        real = to_epoch(self.started) + (trace - to_epoch(self.anchor)) / self.speedup
        out = IntensitySeries(real.astype(np.float64), np.concatenate(values).astype(np.float64), self._real(u1))
        return Forecast(zone=zone, series=out, source=self.name, fetched_at=self.clock())
