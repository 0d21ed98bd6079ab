"""The processes the demo drives: the local control plane (e2e/cluster.sh), kubectl, the operator and
the node agents. Each child runs in its own session, so Ctrl-C in the terminal reaches only the demo,
which then stops them in order."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from greenjobs.api.constants import NODE_ZONE_LABEL
from greenjobs.runtime.readiness import READY


class DemoError(RuntimeError):
    """Something the user has to fix (no checkout, the control plane does not start, ...)."""


def find_repo(cwd: Path | None = None) -> Path:
    """The repository checkout: where this package lives (an editable install), else the current
    directory or one of its parents."""
    here = Path(__file__).resolve()
    start = (cwd or Path.cwd()).resolve()
    for candidate in (here.parents[3], start, *start.parents):
        if (candidate / "e2e" / "cluster.sh").is_file() and (candidate / "crds").is_dir():
            return candidate
    raise DemoError(
        "the demo needs a checkout of the greenjobs repository (e2e/cluster.sh, crds/, examples/); "
        "run it from the repository root"
    )


@dataclass
class ControlPlane:
    """e2e/cluster.sh and kubectl against it. GREENJOBS_E2E_DIR / GREENJOBS_E2E_PORT pass through."""

    repo: Path
    env: dict[str, str] = field(default_factory=dict)  # KUBECONFIG, PATH, GREENJOBS_BIN once known

    @property
    def script(self) -> Path:
        return self.repo / "e2e" / "cluster.sh"

    def is_up(self) -> bool:
        out = subprocess.run(
            [str(self.script), "status"], capture_output=True, text=True, check=False, env=dict(os.environ)
        ).stdout
        return "kube-apiserver: running" in out

    def up(self) -> None:
        """Build the binaries if needed (minutes, cold) and start everything; the script's progress
        lines go to our stderr."""
        proc = subprocess.run([str(self.script), "up"], check=False, env=dict(os.environ))
        if proc.returncode != 0:
            raise DemoError(f"e2e/cluster.sh up failed (exit {proc.returncode}); see the lines above")
        exports = subprocess.run(
            [str(self.script), "env"], capture_output=True, text=True, check=True, env=dict(os.environ)
        ).stdout
        self.env = parse_exports(exports)

    def down(self) -> None:
        subprocess.run([str(self.script), "down"], check=False, env=dict(os.environ))

    @property
    def kubeconfig(self) -> str:
        return self.env["KUBECONFIG"]

    def child_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = self.env["KUBECONFIG"]
        env["PATH"] = f"{self.env['GREENJOBS_BIN']}{os.pathsep}{env.get('PATH', '')}"
        env.update(extra or {})
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(Path(self.env["GREENJOBS_BIN"]) / "kubectl"), *args]
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, env=self.child_env(), check=False
        )
        if check and proc.returncode != 0:
            raise DemoError(f"kubectl {shlex.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)


def parse_exports(text: str) -> dict[str, str]:
    """`export K=V` lines (values possibly shell-quoted, as printf %q writes them) -> dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("export ") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        words = shlex.split(value)
        out[key] = words[0] if words else ""
    return out


@dataclass(frozen=True)
class GpuNode:
    name: str
    zone: str
    gpus: int


def gpu_nodes(cp: ControlPlane) -> list[GpuNode]:
    nodes = cp.get_json("nodes", "-l", NODE_ZONE_LABEL)["items"]
    out = []
    for n in nodes:
        gpus = int((n.get("status", {}).get("allocatable") or {}).get("nvidia.com/gpu", "0"))
        if gpus:
            out.append(GpuNode(n["metadata"]["name"], n["metadata"]["labels"][NODE_ZONE_LABEL], gpus))
    return sorted(out, key=lambda n: (n.zone, n.name))


@dataclass
class Child:
    """A process the demo started, in its own session, logging to a file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def terminate(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)

    def wait_stopped(self, timeout: float) -> None:
        if self.proc.poll() is not None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def spawn(name: str, cmd: Sequence[str], env: Mapping[str, str], log: Path) -> Child:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env), start_new_session=True,
        )  # fmt: skip
    return Child(name, proc, log)


def wait_for(what: str, probe: Callable[[], bool], timeout: float, child: Child | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        if child is not None and not child.alive():
            raise DemoError(f"{child.name} exited while starting; its log ({child.log}):\n{tail(child.logs())}")
        time.sleep(0.25)
    extra = f"; its log ({child.log}):\n{tail(child.logs())}" if child is not None else ""
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")


def tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])


def start_operator(cp: ControlPlane, workdir: Path, config: dict[str, Any], namespace: str) -> Child:
    cfg = workdir / "operator-config.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "greenjobs.cli", "operator", "--config", str(cfg), "--liveness", "", "-n", namespace]
    op = spawn("operator", cmd, cp.child_env(), workdir / "operator.log")
    wait_for("the operator to be ready (its initial lists in)", lambda: READY in op.logs(), 60, op)
    return op


def start_agent(cp: ControlPlane, workdir: Path, node: GpuNode, env: Mapping[str, str]) -> Child:
    cmd = [sys.executable, "-m", "greenjobs.cli", "agent"]
    return spawn(f"agent {node.name}", cmd, cp.child_env(env), workdir / f"agent-{node.name}.log")


def agent_ready(agent: Child) -> bool:
    return '"agent started"' in agent.logs()
