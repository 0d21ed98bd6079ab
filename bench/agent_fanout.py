"""What one node agent receives from the API server, against the size of the cluster (issue 14 item 2).

On the local control plane (real etcd and kube-apiserver, kwok for the nodes), this benchmark adds
fake GPU nodes (`fanout-<i>`, 8 GPUs each, managed by kwok), gives every node GreenTrainingJobs with a
running pod pinned to it, and runs REAL agent processes (`greenjobs agent`, simulated GPUs and
PodResources, as tests/agent_proc.py does) on a sample of the nodes. The sampled nodes carry 1, 2 or
4 jobs (8, 4 or 2 GPUs each); every other node carries 1 job. The agents of the nodes not sampled are
stood in for by a load generator that writes each of their jobs' status.energy.nodes.<node> entry
every report interval, exactly as an agent does (merge patch with the UID precondition), so the API
server carries the energy reports of an agent on every node.

Measured per sampled agent over a window (after a warm-up), from its own /metrics
(greenjobs_agent_watch_events_total, greenjobs_agent_watch_bytes_total: every list and watch byte
and event it receives; greenjobs_agent_api_requests_total: every request it sends), per minute. For
comparison, one extra watcher in this process does what every agent did before (a cluster-wide
list+watch of all GreenTrainingJobs with full bodies) and counts what it receives.

The whole thing runs for each cluster size in --sizes (default 50 then 200 nodes): per-agent figures
that do not move with the size, but with the jobs on the agent's own node, are the point. The
operator is not run (no GTJ is planned or accounted; its status writes would add one more event per
accounting pass to each watched job: see docs/benchmarks/agent-fanout.md).

    eval "$(e2e/cluster.sh env)"   # the control plane must be up: e2e/cluster.sh up
    .venv/bin/python bench/agent_fanout.py [--sizes 50,200] [--sample 9] [--minutes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from _common import kwok_node, table  # noqa: E402

GROUP, VERSION, PLURAL = "greenjobs.dev", "v1alpha1", "greentrainingjobs"
NS = "fanout"
MIX = (1, 2, 4)  # jobs on the sampled nodes, in turn
GPUS = 8


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def ensure_nodes(n: int) -> list[str]:
    names = [f"fanout-{i:04d}" for i in range(n)]
    have = set(kubectl("get", "nodes", "-l", "greenjobs.dev/fanout=true", "-o", "name").split())
    missing = [kwok_node(x, GPUS, {"greenjobs.dev/fanout": "true"}) for x in names if f"node/{x}" not in have]
    if missing:
        kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": missing}))
    kubectl("wait", "--for=condition=Ready", "node", "-l", "greenjobs.dev/fanout=true", "--timeout=180s")
    return names


@dataclass
class Job:
    name: str
    node: str
    gpus: int
    uid: str = ""


def jobs_for(nodes: list[str], sample: int) -> list[Job]:
    jobs: list[Job] = []
    for i, node in enumerate(nodes):
        k = MIX[i % len(MIX)] if i < sample else 1
        jobs.extend(Job(f"j-{node}-{j}", node, GPUS // k) for j in range(k))
    return jobs


def create_jobs(custom: Any, core: Any, jobs: list[Job]) -> None:
    """GTJs (never planned: no operator) and one running pod each, pinned to its node and labelled as
    the operator labels its pods (job name and UID)."""
    for job in jobs:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GreenTrainingJob",
            "metadata": {"name": job.name, "namespace": NS},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "image": "x"}]}}}}},
        }
        try:
            obj = custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
        except kubernetes.client.exceptions.ApiException as e:
            if e.status != 409:
                raise
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, job.name)
        job.uid = obj["metadata"]["uid"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"p-{job.name}",
                "namespace": NS,
                "labels": {"greenjobs.dev/job": job.name, "greenjobs.dev/job-uid": job.uid},
            },
            "spec": {
                "nodeName": job.node,
                "restartPolicy": "Never",
                "containers": [
                    {"name": "train", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": str(job.gpus)}}}
                ],
            },
        }
        try:
            core.create_namespaced_pod(NS, pod)
        except kubernetes.client.exceptions.ApiException as e:
            if e.status != 409:
                raise


@dataclass
class AgentProc:
    node: str
    jobs: int
    proc: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    def metrics_port(self) -> int | None:
        if self.port is None:
            for line in self.log.read_text(errors="replace").splitlines():
                if '"agent started"' in line:
                    self.port = int(json.loads(line)["metricsPort"])
        return self.port

    def scrape(self) -> dict[str, float]:
        port = self.metrics_port()
        assert port is not None, self.log.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            m = re.match(r"^(greenjobs_agent_(?:watch_events|watch_bytes|api_requests)_total)\{([^}]*)\} (\S+)$", line)
            if m:
                out[f"{m.group(1)}{{{m.group(2)}}}"] = float(m.group(3))
        return out

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def start_agents(nodes: list[str], jobs: list[Job], workdir: Path, report_interval: float) -> list[AgentProc]:
    out = []
    for node in nodes:
        state = workdir / node
        state.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "NODE_NAME": node,
            "GREENJOBS_GPU_BACKEND": "simulated",
            "GREENJOBS_PODRESOURCES": "simulated",
            "GREENJOBS_STATE_DIR": str(state),
            "GREENJOBS_REPORT_INTERVAL": str(report_interval),
            "GREENJOBS_METRICS_PORT": "0",
            "GREENJOBS_NAMESPACES": NS,
        }
        log = workdir / f"{node}.log"
        with log.open("ab") as f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "greenjobs.cli", "agent"], stdout=f, stderr=subprocess.STDOUT, env=env
            )
        out.append(AgentProc(node, sum(1 for j in jobs if j.node == node), proc, log))
    return out


def wait_ready(agents: list[AgentProc], timeout: float) -> None:
    """Every agent serving /readyz (on 2 busy cores, starting 9 Python processes takes a while)."""
    deadline = time.monotonic() + timeout
    pending = list(agents)
    while pending:
        for a in list(pending):
            if a.proc.poll() is not None:
                raise SystemExit(f"agent {a.node} exited:\n{a.log.read_text()}")
            port = a.metrics_port()
            if port is None:
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        pending.remove(a)
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise SystemExit(f"agents not ready after {timeout:.0f} s: {[a.node for a in pending]}")
        time.sleep(1)


class StandIns(threading.Thread):
    """Writes the energy entries of the agents that are not run: each job's entry every interval."""

    def __init__(self, custom: Any, jobs: list[Job], interval: float) -> None:
        super().__init__(daemon=True)
        self.custom, self.jobs, self.interval = custom, jobs, interval
        self.stop = threading.Event()
        self.patches = 0

    def run(self) -> None:
        start = time.monotonic()
        n = len(self.jobs)
        k = 0
        while not self.stop.is_set():
            job = self.jobs[k % n]
            due = start + self.interval * (k / n)
            self.stop.wait(max(0.0, due - time.monotonic()))
            joules = 700.0 * job.gpus * (time.monotonic() - start)
            entry = {"joules": round(joules, 3), "gpus": job.gpus, "gpuSeconds": 1.0, "updatedAt": _now()}
            body = {"metadata": {"uid": job.uid}, "status": {"energy": {"nodes": {job.node: entry}}}}
            try:
                self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, job.name, body)
                self.patches += 1
            except Exception as e:
                print(f"stand-in patch failed: {e}", file=sys.stderr)
            k += 1


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class OldWatcher(threading.Thread):
    """What each agent received before: one cluster-wide watch of every GTJ with full bodies."""

    def __init__(self, custom: Any) -> None:
        super().__init__(daemon=True)
        self.custom = custom
        self.events = 0
        self.nbytes = 0
        self.counting = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        listing = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _preload_content=False).data
        version = json.loads(listing)["metadata"]["resourceVersion"]
        while not self.stop.is_set():
            resp = self.custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, watch=True, resource_version=version, timeout_seconds=60,
                allow_watch_bookmarks=True, _preload_content=False,
            )  # fmt: skip
            for line in _lines(resp):
                if self.counting.is_set():
                    self.events += 1
                    self.nbytes += len(line) + 1
                version = json.loads(line)["object"]["metadata"].get("resourceVersion", version)
                if self.stop.is_set():
                    break


def _lines(resp: Any) -> Iterator[bytes]:
    pending = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line


def delta(a: dict[str, float], b: dict[str, float], prefix: str, label: str = "") -> float:
    return sum(v - a.get(k, 0.0) for k, v in b.items() if k.startswith(prefix) and label in k)


def run_size(
    size: int, sample: int, minutes: float, warmup: float, report_interval: float, api: Any
) -> list[dict[str, Any]]:
    custom, core = kubernetes.client.CustomObjectsApi(api), kubernetes.client.CoreV1Api(api)
    t0 = time.monotonic()
    nodes = ensure_nodes(size)
    jobs = jobs_for(nodes, sample)
    create_jobs(custom, core, jobs)
    print(f"[{size} nodes] {len(jobs)} jobs and pods in {time.monotonic() - t0:.0f} s", flush=True)
    sampled = nodes[:sample]
    with tempfile.TemporaryDirectory() as tmp:
        agents: list[AgentProc] = []
        stand_ins = StandIns(custom, [j for j in jobs if j.node not in sampled], report_interval)
        old = OldWatcher(custom)
        try:
            agents += start_agents(sampled, jobs, Path(tmp), report_interval)
            stand_ins.start()
            old.start()
            wait_ready(agents, timeout=300)
            time.sleep(warmup)
            before = [a.scrape() for a in agents]
            old.counting.set()
            p0, w0 = stand_ins.patches, time.monotonic()
            time.sleep(minutes * 60)
            after = [a.scrape() for a in agents]
            old.counting.clear()
            window_min = (time.monotonic() - w0) / 60
            stand_in_rate = (stand_ins.patches - p0) / window_min
            rows = []
            for a, b0, b1 in zip(agents, before, after, strict=True):

                def rate(metric: str, label: str, b0: dict[str, float] = b0, b1: dict[str, float] = b1) -> float:
                    return delta(b0, b1, f"greenjobs_agent_{metric}_total{{", label) / window_min

                rows.append(
                    {
                        "size": size,
                        "node": a.node,
                        "jobs": a.jobs,
                        "gtj_events": rate("watch_events", 'resource="greentrainingjobs"'),
                        "gtj_bytes": rate("watch_bytes", 'resource="greentrainingjobs"'),
                        "pod_events": rate("watch_events", 'resource="pods"'),
                        "pod_bytes": rate("watch_bytes", 'resource="pods"'),
                        "requests": rate("api_requests", ""),
                        "patches": rate("api_requests", 'verb="patch"'),
                        "modified": rate("watch_events", 'type="MODIFIED"'),
                        "bookmarks": rate("watch_events", 'type="BOOKMARK"'),
                        "rss_mib": a.rss_mib(),
                        "old_events": old.events / window_min,
                        "old_bytes": old.nbytes / window_min,
                        "stand_in_patches": stand_in_rate,
                    }
                )
        finally:
            stand_ins.stop.set()
            old.stop.set()
            for a in agents:
                a.proc.terminate()
            for a in agents:
                a.proc.wait(30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50,200", help="cluster sizes (fake GPU nodes added), in order")
    parser.add_argument("--sample", type=int, default=9, help="nodes that run a real agent")
    parser.add_argument("--minutes", type=float, default=2.0, help="measurement window per size")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the window opens")
    parser.add_argument("--report-interval", type=float, default=15.0, help="GREENJOBS_REPORT_INTERVAL, s")
    parser.add_argument("--extrapolate", type=int, default=1000, help="agents to extrapolate the request rate to")
    parser.add_argument("--keep", action="store_true", help="leave the nodes, jobs and pods in place")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()

    crd = ROOT / "crds" / "greentrainingjobs.yaml"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    kubectl("wait", "--for=condition=Established", "crd/greentrainingjobs.greenjobs.dev", "--timeout=60s")
    kubectl("delete", "namespace", NS, "--ignore-not-found", "--timeout=120s")  # a fresh one: no leftovers
    kubectl("create", "namespace", NS)
    api = kubernetes.config.new_client_from_config()
    rows: list[dict[str, Any]] = []
    t_start = time.monotonic()
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            rows += run_size(size, args.sample, args.minutes, args.warmup, args.report_interval, api)
    finally:
        if not args.keep:
            kubectl("delete", "namespace", NS, "--wait=false", check=False)
            kubectl("delete", "nodes", "-l", "greenjobs.dev/fanout=true", "--wait=false", check=False)
    print(f"\nwall time {time.monotonic() - t_start:.0f} s, report interval {args.report_interval:g} s\n")
    print(
        table(
            [
                "nodes", "agent", "jobs on node", "GTJ events/min", "MODIFIED", "BOOKMARK", "GTJ KiB/min",
                "pod events/min", "pod KiB/min", "requests/min", "patches/min", "agent RSS MiB",
                "old design events/min", "old design KiB/min",
            ],
            [
                [
                    r["size"], r["node"], r["jobs"], r["gtj_events"], r["modified"], r["bookmarks"],
                    r["gtj_bytes"] / 1024, r["pod_events"],
                    r["pod_bytes"] / 1024, r["requests"], r["patches"], r["rss_mib"], r["old_events"],
                    r["old_bytes"] / 1024,
                ]
                for r in rows
            ],
        )
    )  # fmt: skip
    largest = max(r["size"] for r in rows)
    by_jobs: dict[int, list[float]] = {}
    for r in rows:
        if r["size"] == largest:
            by_jobs.setdefault(r["jobs"], []).append(r["requests"])
    print(f"\nAPI requests per agent per minute at {largest} nodes, by jobs on its node (mean of the sample):")
    for k, values in sorted(by_jobs.items()):
        rate = statistics.mean(values)
        print(
            f"  {k} job(s): {rate:.2f}/min -> {args.extrapolate} such agents: {rate * args.extrapolate:.0f}/min "
            f"= {rate * args.extrapolate / 60:.1f}/s"
        )
    print(f"stand-in energy patches (the other agents): {statistics.mean(r['stand_in_patches'] for r in rows):.0f}/min")
    print(f"benchmark process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
