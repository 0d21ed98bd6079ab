"""`greenjobs plan --jobs FILE --capacity ZONE=GPUS`: the batch planned jointly against capacity."""

import itertools
import json
from datetime import timedelta
from pathlib import Path

import pytest

from greenjobs.api.durations import parse_time
from greenjobs.cli import main

# GB: 300 until 02:00, 100 from 02:00 to 04:00, then 300 (covered until the next day). FR: a flat 200.
GB_CSV = (
    "Time,Carbon Intensity\n2026-01-01 00:00:00,300\n2026-01-01 02:00:00,100\n2026-01-01 04:00:00,300\n"
    "2026-01-02 00:00:00,300\n"
)
FR_CSV = "Time,Carbon Intensity\n2026-01-01 00:00:00,200\n2026-01-02 00:00:00,200\n"
NOW = "2026-01-01T00:00:00Z"


@pytest.fixture
def args(tmp_path: Path) -> list[str]:
    (tmp_path / "gb.csv").write_text(GB_CSV)
    (tmp_path / "fr.csv").write_text(FR_CSV)
    jobs = [{"id": f"j{i}", "duration": "2h", "maxDelay": "10h", "gpus": 8} for i in range(3)]
    (tmp_path / "jobs.jsonl").write_text("\n".join(json.dumps(j) for j in jobs) + "\n")
    return [
        "plan",
        "--forecast",
        f"GB={tmp_path / 'gb.csv'}",
        "--forecast",
        f"FR={tmp_path / 'fr.csv'}",
        "--jobs",
        str(tmp_path / "jobs.jsonl"),
        "--now",
        NOW,
        "--start-latency",
        "0s",  # the planner's own model: the exact starts below
    ]


def test_the_clean_window_is_filled_then_the_next_best_zone(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    exact = ["--zone-gap-percent", "0"]  # the cleanest starts, not a little before them
    assert main([*args, "--capacity", "GB=16", "--capacity", "FR=8", *exact, "-o", "json"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["id"] for o in out] == ["j0", "j1", "j2"]
    assert sorted((o["zone"], o["start"]) for o in out) == [
        ("FR", NOW),
        ("GB", "2026-01-01T02:00:00Z"),
        ("GB", "2026-01-01T02:00:00Z"),
    ]
    assert {"id", "zone", "start", "expectedGPerKWh", "baselineGPerKWh", "waitsFor"} <= set(out[0])


def test_without_capacity_every_job_takes_the_same_window(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*args, "-o", "json"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(o["zone"], o["start"]) for o in out} == {("GB", "2026-01-01T02:00:00Z")}


def test_table_shows_what_each_job_waits_for(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*args, "--capacity", "GB=8"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["ID", "ZONE", "START"]
    reasons = sorted(line.split()[-1] for line in lines[1:])
    assert reasons == ["Capacity", "CleanWindow", "StartNow"]


def test_a_job_bigger_than_every_zone_is_reported(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "jobs.jsonl").write_text(json.dumps({"id": "huge", "duration": "1h", "maxDelay": "1h", "gpus": 64}))
    assert main([*args, "--capacity", "GB=8", "-o", "json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "huge" in captured.err
    assert "64 GPUs" in captured.err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--capacity", "GB"], "--capacity 'GB'"),
        (["--capacity", "GB=-1"], "GPUS"),
        (["--capacity", "GB=8", "--start-when-below", "100"], "fleet planner"),
    ],
)
def test_bad_capacity_use_is_reported(
    args: list[str], capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main([*args, *extra]) == 2
    assert message in capsys.readouterr().err


def test_capacity_needs_a_batch(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "gb.csv").write_text(GB_CSV)
    argv = ["plan", "--forecast", f"GB={tmp_path / 'gb.csv'}", "--duration", "1h", "--max-delay", "1h"]
    assert main([*argv, "--capacity", "GB=8"]) == 2
    assert "--jobs" in capsys.readouterr().err


def test_a_bad_gpus_field_is_named(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "jobs.jsonl").write_text(json.dumps({"id": "x", "duration": "1h", "maxDelay": "1h", "gpus": "many"}))
    assert main([*args, "--capacity", "GB=8"]) == 1
    assert '"gpus"' in capsys.readouterr().err


def _herd(tmp_path: Path, now: str | None) -> list[str]:
    """Issue 22's herd: ten 8-GPU one-minute jobs, 6 minutes of slack, one clean minute, 16 GPUs."""
    rows = "".join(f"2026-03-05 12:{m:02d}:00,{50 if m == 3 else 300}\n" for m in range(60))
    (tmp_path / "gb.csv").write_text("Time,Carbon Intensity\n" + rows)
    line = {"duration": "1m", "deadline": "2026-03-05T12:06:00Z", "gpus": 8}
    if now:
        line["now"] = now
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps({"id": f"j{i}", **line}) + "\n" for i in range(10)))
    return ["plan", "--forecast", f"GB={tmp_path / 'gb.csv'}", "--jobs", str(tmp_path / "jobs.jsonl")]


EXACT = ["--start-latency", "0s"]  # the planner's own model, where the exact starts are asserted


def test_each_lines_now_is_the_planning_time_and_jobs_shorter_than_a_step_are_never_late(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No --now: the lines' own `now` (12:00) is the planning time, not the wall clock.
    assert main([*_herd(tmp_path, "2026-03-05T12:00:00Z"), "--capacity", "GB=16", *EXACT, "-o", "json"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(out) == 10
    assert all(o["lateBySeconds"] == 0 for o in out)
    starts = sorted(o["start"] for o in out)
    # Two jobs take the clean minute; the zone is busy every minute from 12:00 to 12:05.
    assert starts.count("2026-03-05T12:03:00Z") == 2
    assert sorted(set(starts)) == [f"2026-03-05T12:0{m}:00Z" for m in range(5)]


def test_a_start_latency_spaces_the_rounds_and_keeps_every_deadline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator's default start latency (10 s): each round of the herd holds its GPUs 70 s, so the
    rounds are 70 s apart, the last one still in time (its latest start less the latency, 12:04:50)."""
    assert main([*_herd(tmp_path, "2026-03-05T12:00:00Z"), "--capacity", "GB=16", "-o", "json"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(o["lateBySeconds"] == 0 for o in out)
    starts = sorted({parse_time(o["start"]) for o in out})
    assert len(starts) == 5 and all(b - a >= timedelta(seconds=70) for a, b in itertools.pairwise(starts))
    assert starts[-1] <= parse_time("2026-03-05T12:04:50Z")
    assert main([*_herd(tmp_path, "2026-03-05T12:00:00Z"), "--capacity", "GB=16", "--start-latency", "soon"]) == 2
    assert "--start-latency" in capsys.readouterr().err


def test_a_forecast_that_does_not_cover_the_planning_time_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _herd(tmp_path, None)
    assert main([*args, "--capacity", "GB=16", "--now", "2026-03-06T12:00:00Z"]) == 1
    err = capsys.readouterr().err
    assert "not the planning time 2026-03-06T12:00:00Z" in err and "Traceback" not in err
