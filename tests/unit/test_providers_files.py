"""File and ConfigMap-directory provider, on the real traces and on edge cases."""

import csv
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greenjobs.api.durations import parse_time
from greenjobs.carbon.providers import ProviderError, ZoneUnknown
from greenjobs.carbon.providers.files import FileProvider

DATA = Path("/work/shared/data/carbon-intensity")
NOW = datetime(2020, 6, 1, 12, 10, tzinfo=UTC)


def clock() -> datetime:
    return NOW


def rows(path: Path) -> list[tuple[datetime, float]]:
    with path.open() as f:
        reader = csv.reader(f)
        next(reader)
        return [(parse_time(r[0]), float(r[1])) for r in reader]


@pytest.mark.skipif(not DATA.is_dir(), reason="shared traces not present")
@pytest.mark.parametrize("zone,stem", [("GB", "gb_2020"), ("FR", "fr_2020")])
def test_real_traces_load_and_answer(zone: str, stem: str) -> None:
    provider = FileProvider(DATA, clock, zones={zone: stem})
    expected = rows(DATA / f"{stem}.csv")
    series = provider.series(zone)
    assert len(series) == len({t for t, _ in expected})
    # current(): the row in force at NOW (the last one at or before it), read independently.
    in_force = [v for t, v in expected if t <= NOW][-1]
    assert provider.current(zone) == pytest.approx(in_force)
    fc = provider.forecast(zone, NOW, NOW + timedelta(hours=24))
    assert fc.source == "file" and fc.zone == zone and fc.fetched_at == NOW
    assert fc.series.start == NOW and fc.series.at(NOW) == pytest.approx(in_force)
    inside = [v for t, v in expected if NOW < t < NOW + timedelta(hours=24)]
    assert len(fc.series) == len(inside) + 1


@pytest.mark.skipif(not DATA.is_dir(), reason="shared traces not present")
def test_gb_irregular_steps_integrate_by_duration() -> None:
    provider = FileProvider(DATA / "gb_2020.csv", clock, zone="GB")
    points = rows(DATA / "gb_2020.csv")
    # Find a place where a 15-minute row sits between 30-minute rows and integrate it by hand.
    i = next(k for k in range(1, len(points) - 2) if points[k + 1][0] - points[k][0] == timedelta(minutes=15))
    start, end = points[i - 1][0], points[i + 2][0]
    by_hand = (
        sum(v * (points[j + 1][0] - t).total_seconds() for j, (t, v) in enumerate(points[i - 1 : i + 2], start=i - 1))
        / (end - start).total_seconds()
    )
    assert provider.series("GB").mean(start, end - start) == pytest.approx(by_hand)


def test_gaps_hold_the_previous_value_and_duplicates_average(tmp_path: Path) -> None:
    (tmp_path / "XX.csv").write_text(
        "Time,Carbon Intensity\n"
        "2026-01-01 00:00:00,100\n"
        "2026-01-01 00:30:00,200\n"
        "2026-01-01 00:30:00,300\n"  # duplicate
        "2026-01-01 05:00:00,50\n"  # after a 4.5 h gap
    )
    p = FileProvider(tmp_path, clock)
    s = p.series("XX")
    assert len(s) == 3
    assert s.at(parse_time("2026-01-01T00:30:00Z")) == 250.0
    assert s.at(parse_time("2026-01-01T04:59:00Z")) == 250.0
    assert s.at(parse_time("2026-01-01T05:00:00Z")) == 50.0


def test_json_file_and_case_insensitive_zone(tmp_path: Path) -> None:
    body = [{"time": "2026-01-01T00:00:00Z", "gPerKWh": 80}, {"time": "2026-01-01T01:00:00Z", "gPerKWh": 90}]
    (tmp_path / "fr.json").write_text(json.dumps(body))
    p = FileProvider(tmp_path, lambda: parse_time("2026-01-01T01:30:00Z"))
    assert p.current("FR") == 90.0


def test_unknown_zone_and_bad_content(tmp_path: Path) -> None:
    (tmp_path / "GB.csv").write_text("Time,Carbon Intensity\n2026-01-01 00:00:00,100\nnot-a-time,5\n")
    p = FileProvider(tmp_path, clock)
    with pytest.raises(ZoneUnknown, match=r"no DE\.csv"):
        p.current("DE")
    with pytest.raises(ProviderError, match="line 3"):
        p.current("GB")
    single = FileProvider(tmp_path / "GB.csv", clock)
    with pytest.raises(ZoneUnknown):
        single.current("FR")


def test_configmap_directory_is_reread_when_the_file_changes(tmp_path: Path) -> None:
    # The kubelet's layout: files are links through `..data`, which is flipped to a new dir on update.
    first, second = tmp_path / "..2026_11_23_1", tmp_path / "..2026_11_23_2"
    first.mkdir()
    second.mkdir()
    (first / "GB.csv").write_text("Time,Carbon Intensity\n2026-01-01 00:00:00,111\n")
    (second / "GB.csv").write_text("Time,Carbon Intensity\n2026-01-01 00:00:00,222\n")
    os.symlink(first.name, tmp_path / "..data")
    os.symlink("..data/GB.csv", tmp_path / "GB.csv")
    p = FileProvider(tmp_path, clock)
    assert p.current("GB") == 111.0
    os.symlink(second.name, tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert p.current("GB") == 222.0


def test_plain_file_rewrite_is_noticed_and_unchanged_file_is_not_reparsed(tmp_path: Path) -> None:
    f = tmp_path / "GB.csv"
    f.write_text("Time,Carbon Intensity\n2026-01-01 00:00:00,100\n")
    p = FileProvider(tmp_path, clock)
    first = p.series("GB")
    assert p.series("GB") is first  # cached while the file is unchanged
    f.write_text("Time,Carbon Intensity\n2026-01-01 00:00:00,7\n")
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert p.current("GB") == 7.0
