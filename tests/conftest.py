"""Shared fixtures. Cluster tests (`@pytest.mark.cluster`) share ONE real control plane per session."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from tests.kube import CLUSTER_SH, REPO, Cluster
from tests.kueue import kueue_running
from tests.operator_proc import OperatorProcess, start_operator

# Property tests: the same generated cases on every run (a CI failure is reproducible, never luck);
# HYPOTHESIS_PROFILE=explore draws fresh random cases each run, to look for new counterexamples.
hypothesis_settings.register_profile("repeatable", derandomize=True)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

CRD = REPO / "crds" / "greentrainingjobs.yaml"


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """Bring the local control plane up once (building binaries if needed) and tear it down after.

    A cluster that was already up before the session (a developer's) is reused and left running.
    """
    env = dict(os.environ)
    was_up = subprocess.run([str(CLUSTER_SH), "status"], capture_output=True, text=True, env=env, check=False).stdout
    already = "kube-apiserver: running" in was_up
    up = subprocess.run([str(CLUSTER_SH), "up"], capture_output=True, text=True, env=env, check=False)
    if up.returncode != 0:
        pytest.fail(f"e2e/cluster.sh up failed:\n{up.stdout}\n{up.stderr}", pytrace=False)
    exports = subprocess.run([str(CLUSTER_SH), "env"], capture_output=True, text=True, env=env, check=True).stdout
    values = dict(line.removeprefix("export ").split("=", 1) for line in exports.splitlines() if "=" in line)
    c = Cluster(kubeconfig=Path(values["KUBECONFIG"]), bin_dir=Path(values["GREENJOBS_BIN"]))
    nodes = json.loads(c.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    for n in nodes:
        zone = n["metadata"]["labels"].get("greenjobs.dev/grid-zone")
        if zone:
            c.nodes.setdefault(zone, []).append(n["metadata"]["name"])
    c.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    c.kubectl("wait", "--for=condition=Established", "crd/greentrainingjobs.greenjobs.dev", "--timeout=60s")
    yield c
    if not already and not os.environ.get("GREENJOBS_KEEP_CLUSTER"):
        subprocess.run([str(CLUSTER_SH), "down"], capture_output=True, env=env, check=False)


@pytest.fixture(scope="session")
def kueue(cluster: Cluster) -> Iterator[Cluster]:
    """Kueue v0.17 + the JobSet controller as host processes, started on first use (tests marked
    `kueue`) and stopped at the end of the session with their webhooks removed."""
    with kueue_running(cluster):
        yield cluster


@pytest.fixture(scope="session")
def workload_crds(cluster: Cluster) -> Cluster:
    """The CRDs of JobSet, TrainJob, PyTorchJob and RayJob from their Go modules (no controllers)."""
    cmd = [str(CLUSTER_SH), "workload-crds"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cluster.env(), check=False)
    if proc.returncode != 0:
        pytest.fail(f"e2e/cluster.sh workload-crds failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    return cluster


@pytest.fixture
def operator_factory(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    """Start operators for this test's namespace; at teardown delete its GreenTrainingJobs while an
    operator still runs (it lets go of its Jobs' finalizers), then stop every operator started."""
    started: list[OperatorProcess] = []

    def start(config: dict[str, Any], **kwargs: Any) -> OperatorProcess:
        op = start_operator(cluster, [namespace], tmp_path, config, name=f"operator-{len(started)}", **kwargs)
        started.append(op)
        return op

    yield start
    if not any(op.alive() for op in started) and started:
        started.append(start_operator(cluster, [namespace], tmp_path, {}, name="operator-cleanup"))
    cluster.kubectl("delete", "greentrainingjobs", "--all", "-n", namespace, "--timeout=60s", check=False)
    for op in started:
        op.stop()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl(
        "wait",
        "--for=jsonpath={.metadata.name}",
        "serviceaccount/default",
        "-n",
        name,
        "--timeout=30s",
        check=False,
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@dataclass
class JobWatch:
    """Every Job event in the namespace (ADDED/MODIFIED/DELETED name uid), from a kubectl watch."""

    proc: subprocess.Popen[str]
    lines: list[tuple[str, str, str]] = field(default_factory=list)

    def uids(self) -> dict[str, set[str]]:
        seen: dict[str, set[str]] = defaultdict(set)
        for _, name, uid in self.lines:
            seen[name].add(uid)
        return seen

    def of_type(self, type_: str) -> list[tuple[str, str, str]]:
        return [line for line in self.lines if line[0] == type_]


@pytest.fixture
def job_watch(cluster: Cluster, namespace: str) -> Iterator[JobWatch]:
    template = '{.type} {.object.metadata.name} {.object.metadata.uid}{"\\n"}'
    proc = subprocess.Popen(
        [
            str(cluster.bin_dir / "kubectl"),
            f"--kubeconfig={cluster.kubeconfig}",
            "get",
            "jobs",
            "-n",
            namespace,
            "--watch",
            "--output-watch-events",
            "-o",
            f"jsonpath={template}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=cluster.env(),
    )
    watch = JobWatch(proc)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            parts = line.split()
            if len(parts) == 3:
                watch.lines.append((parts[0], parts[1], parts[2]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    yield watch
    proc.terminate()
    proc.wait(10)
    reader.join(5)


LOG_TAIL_LINES = 15


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed cluster test shows the end of every product log it wrote (operators, agents): on a
    clean-clone CI run that is the only record of what the processes saw."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if report.when != "call" or not report.failed or not isinstance(tmp, Path):
        return
    for log in sorted(tmp.rglob("*.log")):
        lines = [_brief(line) for line in log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]]
        report.sections.append((f"log tail {log.relative_to(tmp)}", "\n".join(lines)))


def _brief(line: str) -> str:
    """One JSON log record as `time level logger: msg`, cut to 240 characters."""
    try:
        rec = json.loads(line)
        line = f"{rec['time'][11:23]} {rec['level']} {rec['logger'].rsplit('.', 1)[-1]}: {rec['msg']}"
    except (ValueError, KeyError, TypeError):
        pass
    return line[:240]
