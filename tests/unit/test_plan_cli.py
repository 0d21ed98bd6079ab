"""`greenjobs plan` end to end through the console entry point, on small forecasts written here."""

import json
from pathlib import Path

import pytest

from greenjobs.cli import main

# GB: 300 until 02:00, 100 from 02:00 to 04:00, then 300 again (covered until 14:00: the last row holds
# for one 2 h step). FR: a flat 200, covered until 2026-01-02.
GB_CSV = (
    "Time,Carbon Intensity\n2026-01-01 00:00:00,300\n2026-01-01 02:00:00,100\n2026-01-01 04:00:00,300\n"
    "2026-01-01 12:00:00,300\n"
)
FR_JSON = json.dumps([{"time": f"2026-01-01T{h}:00:00Z", "gPerKWh": 200} for h in ("00", "12")])
NOW = "2026-01-01T00:00:00Z"


@pytest.fixture
def forecast_args(tmp_path: Path) -> list[str]:
    (tmp_path / "gb.csv").write_text(GB_CSV)
    (tmp_path / "fr.json").write_text(FR_JSON)
    return ["--forecast", f"GB={tmp_path / 'gb.csv'}", "--forecast", f"FR={tmp_path / 'fr.json'}"]


def plan_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["plan", *argv, "-o", "json"]) == 0
    result: dict[str, object] = json.loads(capsys.readouterr().out)
    return result


def test_json_waits_for_the_clean_window(forecast_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    got = plan_json(capsys, *forecast_args, "--duration", "2h", "--max-delay", "6h", "--now", NOW)
    assert got == {
        "zone": "GB",
        "start": "2026-01-01T02:00:00Z",
        "expectedGPerKWh": 100.0,
        "baselineGPerKWh": 300.0,
        "expectedSavingsPercent": pytest.approx(100 * 200 / 300, abs=0.01),
        "latestStart": "2026-01-01T06:00:00Z",
        "reason": "ForecastWindow",
        "forecastHorizon": "2026-01-01T14:00:00Z",
        "horizonLimited": False,
    }


def test_deadline_sets_the_latest_start(forecast_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # Deadline 03:00 for 2 h: latest start 01:00, whose window (300, then 100) averages 200, no better
    # than FR now (200): the tie goes to the earlier start.
    argv = [*forecast_args, "--duration", "2h", "--deadline", "2026-01-01T03:00:00Z", "--now", NOW]
    got = plan_json(capsys, *argv)
    assert (got["zone"], got["start"], got["latestStart"]) == ("FR", NOW, "2026-01-01T01:00:00Z")


def test_zones_restricts_and_orders_the_candidates(
    forecast_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    got = plan_json(capsys, *forecast_args, "--zones", "FR", "--duration", "2h", "--max-delay", "6h", "--now", NOW)
    assert (got["zone"], got["baselineGPerKWh"], got["reason"]) == ("FR", 200.0, "StartNow")


def test_start_when_below(forecast_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*forecast_args, "--zones", "FR,GB", "--duration", "2h", "--max-delay", "6h", "--now", NOW]
    got = plan_json(capsys, *argv, "--start-when-below", "250")
    assert (got["zone"], got["start"], got["reason"]) == ("FR", NOW, "StartWhenBelow")


def test_table_output(forecast_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", *forecast_args, "--duration", "2h", "--max-delay", "6h", "--now", NOW]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split() == [
        "ZONE",
        "START",
        "LATEST-START",
        "EXPECTED-G/KWH",
        "BASELINE-G/KWH",
        "SAVED-%",
        "REASON",
    ]
    want = ["GB", "2026-01-01T02:00:00Z", "2026-01-01T06:00:00Z", "100.0", "300.0", "66.7", "ForecastWindow"]
    assert row.split() == want
    # Aligned: every column starts at the same offset in the header and the row.
    assert header.index("START") == row.index("2026-01-01T02:00:00Z")


def test_now_defaults_to_the_current_time(forecast_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # Now (the clock) is far after the forecasts, which no longer cover it: a clear error, no plan made
    # up from their last values.
    assert main(["plan", *forecast_args, "--duration", "2h", "--max-delay", "6h", "-o", "json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "the forecast for GB covers 2026-01-01T00:00:00Z to 2026-01-01T14:00:00Z, not now" in captured.err


def test_jobs_batch_keeps_going_after_a_bad_line(
    forecast_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    lines = [
        {"id": "wait", "now": NOW, "duration": "2h", "maxDelay": "6h"},
        "this is not JSON",
        {"id": "fr-only", "now": NOW, "duration": "2h", "deadline": "2026-01-01T12:00:00Z", "zones": ["FR"]},
        {"id": "no-duration", "now": NOW, "maxDelay": "6h"},
        {"id": "bad-zone", "now": NOW, "duration": "1h", "maxDelay": "1h", "zones": ["DE"]},
        {"id": "both", "now": NOW, "duration": "1h", "maxDelay": "1h", "deadline": "2026-01-01T12:00:00Z"},
    ]
    jobs.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n\n")
    assert main(["plan", *forecast_args, "--jobs", str(jobs), "-o", "json"]) == 1
    captured = capsys.readouterr()
    out = [json.loads(line) for line in captured.out.splitlines()]
    assert [o["id"] for o in out] == ["wait", "fr-only"]
    assert set(out[0]) == {
        "id",
        "zone",
        "start",
        "expectedGPerKWh",
        "baselineGPerKWh",
        "expectedSavingsPercent",
        "forecastHorizon",
        "horizonLimited",
    }
    assert (out[0]["zone"], out[0]["start"]) == ("GB", "2026-01-01T02:00:00Z")
    assert (out[1]["zone"], out[1]["start"], out[1]["baselineGPerKWh"]) == ("FR", NOW, 200.0)
    errors = captured.err.splitlines()
    assert [e.split(": ")[2] for e in errors] == [f"{jobs} line {n}" for n in (2, 4, 5, 6)]
    assert "duration" in errors[1]
    assert "DE" in errors[2]


def test_a_good_batch_exits_zero(forecast_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"id": "a", "now": NOW, "duration": "1h", "maxDelay": "PT1H"}) + "\n")
    assert main(["plan", *forecast_args, "--jobs", str(jobs), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == "a"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--duration", "2h"], "--deadline or --max-delay"),
        (["--max-delay", "2h"], "--duration"),
        (["--duration", "soon", "--max-delay", "2h"], "invalid duration"),
        (["--duration", "2h", "--max-delay", "2h", "--zones", "DE"], "DE"),
    ],
)
def test_user_errors_are_reported_not_raised(
    forecast_args: list[str], capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["plan", *forecast_args, "--now", NOW, *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_bad_forecast_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Time,Carbon Intensity\n2026-01-01 00:00:00,1\nyesterday,5\n")
    assert main(["plan", "--forecast", f"GB={bad}", "--duration", "1h", "--max-delay", "1h"]) == 2
    assert "GB=" in capsys.readouterr().err


# ------------------------------------------------------------------ the forecast horizon


def test_a_deadline_that_cannot_be_met_exits_non_zero(
    forecast_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*forecast_args, "--duration", "2h", "--deadline", "2026-01-01T01:00:00Z", "--now", NOW]
    assert main(["plan", *argv]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "the deadline cannot be met: latest start 2025-12-31T23:00:00Z is before now" in captured.err


def test_a_window_past_the_horizon_is_planned_on_the_covered_part_with_a_note(
    forecast_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # GB is covered until 14:00: a 2 h job may start until 20:00, only starts until 12:00 count.
    argv = [*forecast_args, "--zones", "GB", "--duration", "2h", "--max-delay", "20h", "--now", NOW]
    assert main(["plan", *argv, "-o", "json"]) == 0
    captured = capsys.readouterr()
    got = json.loads(captured.out)
    assert (got["start"], got["forecastHorizon"], got["horizonLimited"]) == (
        "2026-01-01T02:00:00Z",
        "2026-01-01T14:00:00Z",
        True,
    )
    assert "note: the forecast covers until 2026-01-01T14:00:00Z" in captured.err


def test_a_run_longer_than_the_forecast_shows_no_figures(
    forecast_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*forecast_args, "--zones", "GB", "--duration", "20h", "--max-delay", "2h", "--now", NOW]
    assert main(["plan", *argv]) == 0
    _, row = capsys.readouterr().out.strip().splitlines()
    assert row.split() == ["GB", "2026-01-01T02:00:00Z", "2026-01-01T02:00:00Z", "-", "-", "-", "BeyondHorizon"]
