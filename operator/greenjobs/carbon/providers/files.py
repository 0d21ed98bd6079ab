"""Forecasts from CSV/JSON files: one file, or a directory with one `<ZONE>.csv|.json` per zone.

A directory is typically a mounted ConfigMap: the kubelet swaps the files atomically (a symlink flip),
so each read checks the file's identity (mtime, size, inode) and re-parses only when it changed.
"""

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from greenjobs.carbon.series import IntensitySeries

from .base import Clock, Forecast, ProviderError, ZoneUnknown, clip

SUFFIXES = (".csv", ".json")


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple[int, int, int]
    series: IntensitySeries


def load_series(path: Path) -> IntensitySeries:
    """Parse a CSV or JSON intensity file (by suffix; CSV unless it ends in .json)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        return IntensitySeries.from_json(text)
    return IntensitySeries.from_csv(text)


class FileProvider:
    def __init__(
        self,
        path: Path,
        clock: Clock,
        *,
        zone: str | None = None,
        zones: dict[str, str] | None = None,
        name: str = "file",
    ) -> None:
        """`path` is a directory of per-zone files, or one file serving `zone` (default: its stem)."""
        self.path = path
        self.clock = clock
        self.zone = zone
        self.zones = zones or {}  # our zone -> file name stem
        self.name = name
        self._loaded: dict[Path, _Loaded] = {}

    def _file_for(self, zone: str) -> Path:
        wanted = self.zones.get(zone, zone)
        if not self.path.is_dir():
            served = self.zone or self.path.stem
            if wanted.lower() != served.lower():
                raise ZoneUnknown(f"{self.name}: {self.path} serves zone {served}, not {zone}")
            return self.path
        try:
            entries = [p for p in self.path.iterdir() if p.suffix.lower() in SUFFIXES]
        except OSError as exc:
            raise ProviderError(f"{self.name}: cannot list {self.path}: {exc.strerror}") from None
        exact = [p for p in entries if p.stem == wanted]
        folded = [p for p in entries if p.stem.lower() == wanted.lower()]
        found = sorted(exact or folded)
        if not found:
            raise ZoneUnknown(f"{self.name}: no {wanted}.csv or {wanted}.json in {self.path}")
        return found[0]

    def series(self, zone: str) -> IntensitySeries:
        file = self._file_for(zone)
        try:
            st = os.stat(file)  # follows the ConfigMap's ..data symlink
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            cached = self._loaded.get(file)
            if cached is not None and cached.stamp == stamp:
                return cached.series
            series = load_series(file)
        except OSError as exc:
            raise ProviderError(f"{self.name}: cannot read {file}: {exc.strerror}") from None
        except ValueError as exc:
            raise ProviderError(f"{self.name}: {file}: {exc}") from None
        self._loaded[file] = _Loaded(stamp, series)
        return series

    def current(self, zone: str) -> float:
        return self.series(zone).at(self.clock())

    def forecast(self, zone: str, start: datetime, end: datetime) -> Forecast:
        # A file covers until one typical step after its last row (IntensitySeries.horizon): a plan
        # never counts a value the file does not give.
        windowed = clip(self.series(zone), start, end, f"{self.name} {zone}")
        return Forecast(zone=zone, series=windowed, source=self.name, fetched_at=self.clock())
