"""examples/checkpointing/train.py, run as a process: interrupted, killed, resumed, it does each step once.

No cluster: the program runs with the interpreter running the tests, but with `-S` (no site-packages),
so it is also checked to need nothing but the standard library, as in python:3.11-slim.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.kube import REPO

TRAIN = REPO / "examples" / "checkpointing" / "train.py"
STEPS = 60
FAST = ["--steps", str(STEPS), "--step-seconds", "0.01", "--log-every", "5", "--checkpoint-every", "10"]
TIMEOUT = 20.0


def _start(directory: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-S", str(TRAIN), *FAST, "--checkpoint-dir", str(directory), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )


def _run(directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = _start(directory, *extra)
    out, err = proc.communicate(timeout=TIMEOUT)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _log(directory: Path) -> list[str]:
    path = directory / "steps.log"
    return path.read_text().splitlines() if path.exists() else []


def _steps_done(directory: Path, at_least: int) -> Callable[[], bool]:
    return lambda: len(_log(directory)) >= at_least


def _checkpoint_steps(directory: Path) -> list[int]:
    return sorted(int(p.stem.removeprefix("ckpt-")) for p in directory.glob("ckpt-*.json"))


def _done(directory: Path) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((directory / "DONE").read_text())["payload"]
    return payload


def _assert_exactly_once(directory: Path) -> None:
    assert _log(directory) == [f"step {k}" for k in range(1, STEPS + 1)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("uninterrupted")
    result = _run(directory)
    assert result.returncode == 0, result.stderr
    _assert_exactly_once(directory)
    return _done(directory)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["TERM", "INT"])
def test_a_signal_saves_and_a_restart_continues_from_there(
    tmp_path: Path, uninterrupted: dict[str, Any], signum: int, code: int
) -> None:
    proc = _start(tmp_path)
    _wait_until(_steps_done(tmp_path, 15), "15 steps")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == code, err  # not 0: a Job would count the pod as a completion
    stopped = len(_log(tmp_path))
    assert 15 <= stopped < STEPS
    assert f"stopped at step {stopped} of {STEPS}" in out
    assert _checkpoint_steps(tmp_path)[-1] == stopped  # the step it stopped at, none lost
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert (progress["step"], progress["steps"], progress["fraction"]) == (stopped, STEPS, stopped / STEPS)
    assert not (tmp_path / "DONE").exists()

    resumed = _run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from checkpoint step {stopped}" in resumed.stdout
    assert "cut back" not in resumed.stdout  # nothing to redo after a signal
    _assert_exactly_once(tmp_path)
    assert _done(tmp_path) == uninterrupted  # weights, bias and loss bit for bit: the batches' RNG was restored
    assert json.loads((tmp_path / "progress.json").read_text())["fraction"] == 1.0

    before = (tmp_path / "steps.log").stat()
    third = _run(tmp_path)
    assert third.returncode == 0, third.stderr
    assert "already done" in third.stdout
    assert "progress" not in third.stdout
    assert (tmp_path / "steps.log").stat().st_mtime_ns == before.st_mtime_ns
    _assert_exactly_once(tmp_path)


def test_after_sigkill_the_steps_since_the_checkpoint_are_redone_and_logged_once(
    tmp_path: Path, uninterrupted: dict[str, Any]
) -> None:
    proc = _start(tmp_path)
    # Freeze it where steps.log is ahead of the latest checkpoint, then kill it there.
    while True:
        _wait_until(_steps_done(tmp_path, 25), "25 steps")
        proc.send_signal(signal.SIGSTOP)
        logged, saved = len(_log(tmp_path)), _checkpoint_steps(tmp_path)
        if saved and logged > saved[-1]:
            break
        proc.send_signal(signal.SIGCONT)  # at a checkpoint boundary: let it run a little further
        _wait_until(_steps_done(tmp_path, logged + 1), "one more step")
    proc.kill()
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    assert logged < STEPS

    resumed = _run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from checkpoint step {saved[-1]}" in resumed.stdout
    assert "steps.log cut back" in resumed.stdout  # the lines of the lost steps, done again below
    _assert_exactly_once(tmp_path)
    assert _done(tmp_path) == uninterrupted


@pytest.mark.parametrize("damage", ["torn", "corrupt"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, uninterrupted: dict[str, Any], damage: str
) -> None:
    proc = _start(tmp_path)
    _wait_until(_steps_done(tmp_path, 25), "25 steps")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 143
    *_, previous, latest = _checkpoint_steps(tmp_path)
    assert previous < latest
    path = tmp_path / f"ckpt-{latest:08d}.json"
    text = path.read_text()
    if damage == "torn":
        path.write_text(text[: len(text) // 2])  # as a write that was not atomic would leave it
    else:
        doc = json.loads(text)
        doc["payload"]["bias"] += 1.0  # valid JSON, wrong checksum
        path.write_text(json.dumps(doc))

    resumed = _run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"ignoring checkpoint {path.name}" in resumed.stderr
    assert f"resuming from checkpoint step {previous}" in resumed.stdout
    assert path.with_name(path.name + ".corrupt").exists()  # set aside, out of the rotation
    _assert_exactly_once(tmp_path)
    assert _done(tmp_path) == uninterrupted


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path: Path) -> None:
    proc = _start(tmp_path)
    _wait_until(_steps_done(tmp_path, 5), "5 steps")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 143

    other = _run(tmp_path, "--seed", "7")
    assert other.returncode == 2
    assert "another configuration" in other.stderr
