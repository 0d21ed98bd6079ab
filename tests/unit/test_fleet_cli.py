"""`greenjobs plan --jobs FILE --capacity ZONE=GPUS`: the batch planned jointly against capacity."""

import json
from pathlib import Path

import pytest

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
    ]


def test_the_clean_window_is_filled_then_the_next_best_zone(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*args, "--capacity", "GB=16", "--capacity", "FR=8", "-o", "json"]) == 0
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
