"""`greenjobs plan --whole-run`: one long job's whole run as segments, pauses and paced caps."""

import json
from pathlib import Path

import pytest

from greenjobs.cli import main

# A dirty night between two clean days: 12 h clean (100), 12 h dirty (400), 12 h clean (100), covered
# for three days.
CSV = (
    "Time,Carbon Intensity\n2026-01-01 00:00:00,100\n2026-01-01 12:00:00,400\n2026-01-02 00:00:00,100\n"
    "2026-01-02 12:00:00,100\n2026-01-04 00:00:00,100\n"
)
NOW = "2026-01-01T00:00:00Z"


@pytest.fixture
def base(tmp_path: Path) -> list[str]:
    (tmp_path / "gb.csv").write_text(CSV)
    return ["plan", "--whole-run", "--forecast", f"GB={tmp_path / 'gb.csv'}", "--now", NOW, "-o", "json"]


def _out(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_a_resumable_job_is_paused_through_the_dirty_night(base: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    args = [*base, "--duration", "20h", "--deadline", "2026-01-02T12:00:00Z", "--resume-overhead", "5m"]
    assert main(args) == 0
    out = _out(capsys)
    assert out["feasible"] is True and out["interruptions"] == 1
    segments = out["segments"]
    assert isinstance(segments, list)
    # Nothing runs in the dirty 12:00-24:00 window; the work is done in the two clean halves.
    for s in segments:
        assert s["end"] <= "2026-01-01T12:00:00Z" or s["start"] >= "2026-01-02T00:00:00Z"
    assert isinstance(out["savingPercent"], float) and out["savingPercent"] > 30


def test_without_resume_overhead_the_job_is_never_paused(base: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*base, "--duration", "20h", "--deadline", "2026-01-02T12:00:00Z"]) == 0
    out = _out(capsys)
    assert out["interruptions"] == 0 and len(out["segments"]) == 1  # type: ignore[arg-type]


def test_a_deadline_that_cannot_be_kept_is_exit_1(base: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*base, "--duration", "20h", "--deadline", "2026-01-01T10:00:00Z"]) == 1
    assert _out(capsys)["feasible"] is False


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--duration", "2h"], "--deadline or --max-delay"),
        (["--duration", "2h", "--max-delay", "1h", "--caps", "x"], "--caps"),
        (["--duration", "2h", "--max-delay", "1h", "--max-interruptions", "2"], "--resume-overhead"),
    ],
)
def test_bad_flags_are_named(
    base: list[str], capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main([*base, *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_forecast_that_does_not_cover_now_is_exit_1(base: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    args = [a if a != NOW else "2027-01-01T00:00:00Z" for a in base]
    assert main([*args, "--duration", "2h", "--max-delay", "1h"]) == 1
    assert "not now" in capsys.readouterr().err
