"""Run the real operator (`greenjobs operator`) as a process against the test control plane."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tests.kube import Cluster, ManagedProcess, wait_until

FAST_SETTINGS: dict[str, Any] = {
    "tickSeconds": 1,
    "replanInterval": "5s",
    "powerInterval": "2s",
    "accountInterval": "1s",
    "resyncInterval": "10s",
    "metricsPort": 0,
}


def write_forecast(directory: Path, zone: str, points: Iterable[tuple[datetime, float]]) -> Path:
    """A forecast file in the format the file provider (and `greenjobs plan`) reads."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{zone}.csv"
    rows = ["time,gPerKWh", *(f"{t.isoformat()},{v}" for t, v in points)]
    path.write_text("\n".join(rows) + "\n")
    return path


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
) -> OperatorProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / f"{name}-config.yaml"
    cfg.write_text(yaml.safe_dump({**FAST_SETTINGS, **config}))
    log_path = workdir / f"{name}.log"
    cmd = [sys.executable, "-m", "greenjobs.cli", "operator", "--config", str(cfg), "--liveness", "", *args]
    for ns in namespaces:
        cmd += ["-n", ns]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=cluster.env(env), start_new_session=True)
    op = OperatorProcess(proc, log_path)
    wait_until(
        "the operator to start watching",
        lambda: not op.alive() or "Activity 'login' succeeded" in op.logs(),
        timeout=30,
    )
    if not op.alive():
        raise AssertionError(f"operator exited at start:\n{op.logs()}")
    time.sleep(2.0)  # let the first LIST of each watched resource land
    return op


def gtj(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.get_json("greentrainingjob", name, "-n", namespace)
    return obj


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)
