"""Run the real operator (`greenjobs operator`) as a process against the test control plane."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from greenjobs.runtime.readiness import READY
from tests.kube import Cluster, ManagedProcess, wait_until

FAST_SETTINGS: dict[str, Any] = {
    "tickSeconds": 1,
    "replanInterval": "5s",
    "powerInterval": "2s",
    "accountInterval": "1s",
    "resyncInterval": "10s",
    "metricsPort": 0,
}
# kwok runs a pod about a second after it is created: the plans' start latency on the test cluster (the
# product's default, 10 s, is for real clusters with admission and image pulls). A test's own `fleet:`
# settings win.
KWOK_START_LATENCY = "1s"


STEP = timedelta(seconds=10)  # the forecasts' step in most scenarios: a clean window of 3 steps is 30 s


def write_forecast(directory: Path, zone: str, points: Iterable[tuple[datetime, float]]) -> Path:
    """A forecast file in the format the file provider (and `greenjobs plan`) reads."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{zone}.csv"
    rows = ["time,gPerKWh", *(f"{t.isoformat()},{v}" for t, v in points)]
    path.write_text("\n".join(rows) + "\n")
    return path


Intensity = float | Callable[[int], float]  # flat, or a function of the step's index (0 at `now`)


def file_forecasts(
    directory: Path,
    now: datetime,
    zones: Mapping[str, Intensity],
    *,
    step: timedelta = STEP,
    steps: range = range(-6, 180),
) -> dict[str, Any]:
    """A forecast file per zone, one point per `step` from `now` (`steps` counts them); returns the
    operator config of a file provider that reads them."""
    for zone, value in zones.items():
        write_forecast(directory, zone, [(now + i * step, value(i) if callable(value) else value) for i in steps])
    return {"providers": [{"type": "file", "path": str(directory)}]}


def clean_between(first: int, end: int, clean: float = 40.0, dirty: float = 250.0) -> Callable[[int], float]:
    """Dirty except the steps [first, end): the clean window a job with slack is deferred to."""
    return lambda i: clean if first <= i < end else dirty


class OperatorProcess(ManagedProcess):
    """`greenjobs operator` run by a test."""


def start_operator(
    cluster: Cluster,
    namespaces: list[str],
    workdir: Path,
    config: dict[str, Any],
    *,
    name: str = "operator",
    args: Iterable[str] = (),
    env: dict[str, str] | None = None,
    ready: bool = True,
) -> OperatorProcess:
    """Start it and wait until it is ready (its initial lists are in); `ready=False` waits only for its
    login, for an operator that is refused its lists."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / f"{name}-config.yaml"
    fleet = {"startLatency": KWOK_START_LATENCY, **(config.get("fleet") or {})}
    cfg.write_text(yaml.safe_dump({**FAST_SETTINGS, **config, "fleet": fleet}))
    log_path = workdir / f"{name}.log"
    cmd = [sys.executable, "-m", "greenjobs.cli", "operator", "--config", str(cfg), "--liveness", "", *args]
    for ns in namespaces:
        cmd += ["-n", ns]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=cluster.env(env), start_new_session=True)
    op = OperatorProcess(proc, log_path)
    signal = READY if ready else "Activity 'login' succeeded"
    wait_until(f"the operator to log {signal!r}", lambda: not op.alive() or signal in op.logs(), timeout=30)
    if not op.alive():
        raise AssertionError(f"operator exited at start:\n{op.logs()}")
    return op


def gtj(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.get_json("greentrainingjob", name, "-n", namespace)
    return obj


def status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    st: dict[str, Any] = gtj(cluster, namespace, name).get("status") or {}
    return st


def phase(cluster: Cluster, namespace: str, name: str) -> str | None:
    ph: str | None = status(cluster, namespace, name).get("phase")
    return ph


def wait_phase(cluster: Cluster, namespace: str, name: str, want: str, timeout: float = 60) -> dict[str, Any]:
    """Wait until the GreenTrainingJob is in phase `want`; return it."""
    wait_until(f"{name} {want}", lambda: phase(cluster, namespace, name) == want, timeout=timeout)
    return gtj(cluster, namespace, name)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)
