"""The operator at scale: 1,000 GreenTrainingJobs applied at once against the local control plane.

Measures, for one `greenjobs operator` process watching a fresh namespace:
  - time from each job's creation (the create call's return) to its status.plan (p50/p99/max), and
    until the last one is planned;
  - API requests: the operator's own writes (greenjobs_api_writes_total on its metrics port), and
    ALL requests by resource and verb from the API server's apiserver_request_total (kopf's
    annotation and status patches, Events, watches), minus the background rate of other clients of
    the shared control plane measured just before; plus the exact count of writes that changed a
    GreenTrainingJob in this namespace (MODIFIED watch events) and of Events posted in it;
  - operator CPU time (/proc/<pid>/stat) for planning, for 1,000 idle deferred jobs ticking, and
    for deleting them; peak RSS (VmHWM in /proc/<pid>/status).

Every job is deferred (maxDelay 2h, FR clean only in an hour) and asks for 1 GPU, so none runs.
They are then deleted with the operator running.

    .venv/bin/python bench/operator_scale.py [--jobs 1000]

It brings the local control plane up (e2e/cluster.sh up) and installs the CRD itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from greenjobs.runtime.readiness import READY

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, table

CLUSTER_SH = ROOT / "e2e" / "cluster.sh"
GROUP, VERSION, PLURAL = "greenjobs.dev", "v1alpha1", "greentrainingjobs"
TICKS = os.sysconf("SC_CLK_TCK")
RESOURCES = ("greentrainingjobs", "jobs", "events", "kopfpeerings", "nodes")
WRITE_VERBS = ("POST", "PATCH", "PUT", "DELETE")


def prepared_cluster() -> dict[str, str]:
    """Bring the local control plane up (a no-op when it is), install the CRD; its environment."""
    subprocess.run([str(CLUSTER_SH), "up"], check=True, capture_output=True)
    env = cluster_env()
    kubectl(env, "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "greentrainingjobs.yaml"))
    kubectl(env, "wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")
    return env


def cluster_env() -> dict[str, str]:
    out = subprocess.run([str(CLUSTER_SH), "env"], capture_output=True, text=True, check=True).stdout
    env = dict(os.environ)
    for line in out.splitlines():
        if "=" in line:
            k, v = line.removeprefix("export ").split("=", 1)
            env[k] = v.strip("'\"")
    env["PATH"] = f"{env['GREENJOBS_BIN']}:{env.get('PATH', '')}"
    return env


def kubectl(env: dict[str, str], *args: str, input: str | None = None) -> str:
    proc = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc.stdout


def apiserver_requests(env: dict[str, str]) -> Counter[tuple[str, str]]:
    """apiserver_request_total summed by (resource[/subresource], verb) for the resources we care about."""
    counts: Counter[tuple[str, str]] = Counter()
    pattern = re.compile(r"^apiserver_request_total\{(.*)\} ([0-9.e+]+)$")
    for line in kubectl(env, "get", "--raw", "/metrics").splitlines():
        m = pattern.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("resource") not in RESOURCES:
            continue
        res = labels["resource"] + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        counts[(res, labels["verb"])] += int(float(m.group(2)))
    return counts


def scrape(port: int, name: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)


def vm_kib(pid: int, key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_forecasts(directory: Path, now: datetime) -> None:
    """GB flat 300; FR 250 except a clean hour from +60 min: every 2h-maxDelay job waits for it."""
    directory.mkdir(parents=True, exist_ok=True)
    for zone in ("GB", "FR"):
        rows = ["time,gPerKWh"]
        for i in range(-2, 4 * 6):  # 10-minute steps over 4 hours
            t = now + timedelta(minutes=10 * i)
            value = 300.0 if zone == "GB" else (40.0 if 6 <= i < 12 else 250.0)
            rows.append(f"{t.isoformat()},{value}")
        (directory / f"{zone}.csv").write_text("\n".join(rows) + "\n")


def gtj(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GreenTrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [
                                {"name": "train", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": 1}}}
                            ],
                        }
                    }
                }
            },
            "timing": {"estimatedDuration": "30m", "maxDelay": "2h"},
            "placement": {"zones": ["GB", "FR"]},
        },
    }


class GtjWatch:
    """A watch of the namespace's GreenTrainingJobs: when each got a plan, and how many writes changed them."""

    def __init__(self, objects: Any, namespace: str) -> None:
        self.objects, self.namespace = objects, namespace
        self.planned_at: dict[str, float] = {}
        self.modified: Counter[str] = Counter()
        self.version: str | None = None
        self.watch = kubernetes.watch.Watch()
        self.stopped = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopped:
            try:
                self._stream()
            except Exception:  # a dropped stream: resume from the last version seen
                time.sleep(0.5)

    def _stream(self) -> None:
        kwargs: dict[str, Any] = {"timeout_seconds": 240}
        if self.version:
            kwargs["resource_version"] = self.version
        list_fn = self.objects.list_namespaced_custom_object
        for event in self.watch.stream(list_fn, GROUP, VERSION, self.namespace, PLURAL, **kwargs):
            obj = event["object"]
            if event["type"] == "ERROR":
                self.version = None  # 410 Gone: start over (planned_at keeps the first sighting)
                return
            name = obj["metadata"]["name"]
            self.version = obj["metadata"]["resourceVersion"]
            if event["type"] == "MODIFIED":
                self.modified[name] += 1
            if (obj.get("status") or {}).get("plan") and name not in self.planned_at:
                self.planned_at[name] = time.time()

    def stop(self) -> None:
        self.stopped = True
        self.watch.stop()


def wait(what: str, probe: Callable[[], bool], timeout: float, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout}s waiting for {what}")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def delta(after: Counter[tuple[str, str]], before: Counter[tuple[str, str]]) -> Counter[tuple[str, str]]:
    return Counter({k: after[k] - before[k] for k in after if after[k] - before[k] > 0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=16, help="client threads creating the jobs")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="watch 1,000 deferred jobs tick")
    parser.add_argument("--background-seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "operator_scale.json")
    args = parser.parse_args()

    env = prepared_cluster()
    namespace = f"bench-scale-{uuid.uuid4().hex[:6]}"
    kubectl(env, "create", "namespace", namespace)
    work = Path(tempfile.mkdtemp(prefix="operator-scale-"))
    write_forecasts(work / "fc", datetime.now(UTC).replace(microsecond=0))
    port = free_port()
    config = {"providers": [{"type": "file", "path": str(work / "fc")}], "metricsPort": port}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    log = (work / "operator.log").open("wb")
    cmd = [sys.executable, "-m", "greenjobs.cli", "operator", "--config", str(work / "config.yaml")]
    op = subprocess.Popen([*cmd, "--liveness", "", "-n", namespace], stdout=log, stderr=subprocess.STDOUT, env=env)
    watch: GtjWatch | None = None
    api = kubernetes.config.new_client_from_config(config_file=env["KUBECONFIG"])
    objects = kubernetes.client.CustomObjectsApi(api)
    deleted = False
    try:
        # Ready: its initial LISTs of nodes, pods, jobs and greentrainingjobs are in.
        wait("the operator to be ready", lambda: READY.encode() in (work / "operator.log").read_bytes(), 60)
        if op.poll() is not None:
            raise SystemExit((work / "operator.log").read_text())
        watch = GtjWatch(objects, namespace)
        time.sleep(1)
        bg0 = apiserver_requests(env)
        time.sleep(args.background_seconds)
        bg1 = apiserver_requests(env)
        background = delta(bg1, bg0)
        writes0 = sum(scrape(port, "greenjobs_api_writes_total").values())
        cpu0, rss_before = cpu_seconds(op.pid), vm_kib(op.pid, "VmRSS")

        created_at: dict[str, float] = {}

        def create(i: int) -> None:
            name = f"scale-{i:04d}"
            objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, gtj(namespace, name))
            created_at[name] = time.time()

        t0 = time.time()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(create, range(args.jobs)))
        t_created = time.time()
        w = watch
        wait("every job planned", lambda: len(w.planned_at) >= args.jobs, timeout=600)
        t_planned = time.time()
        time.sleep(2)  # let trailing writes (kopf's own patches, Events) land before counting
        cpu_plan = cpu_seconds(op.pid) - cpu0
        after_plan = apiserver_requests(env)
        writes_plan = sum(scrape(port, "greenjobs_api_writes_total").values()) - writes0
        plan_window = time.time() - t0
        plan_requests = delta(after_plan, bg1)
        events = json.loads(kubectl(env, "get", "events", "-n", namespace, "-o", "json"))["items"]
        by_kind = Counter[str]()
        for e in events:
            by_kind[e["involvedObject"].get("kind", "")] += int(e.get("count") or 1)
        gtj_events = by_kind["GreenTrainingJob"]  # ours; the Job controller posts the Jobs' own
        modified_plan = sum(watch.modified.values())

        # 1,000 deferred jobs, ticking every tickSeconds: what does it cost when nothing happens?
        cpu_i0 = cpu_seconds(op.pid)
        idle0 = apiserver_requests(env)
        time.sleep(args.idle_seconds)
        cpu_idle = cpu_seconds(op.pid) - cpu_i0
        idle_requests = delta(apiserver_requests(env), idle0)
        modified_idle = sum(watch.modified.values()) - modified_plan

        td = time.time()
        # kubectl's own --wait checks the objects one by one (minutes for 1,000): poll the list instead.
        kubectl(env, "delete", PLURAL, "--all", "-n", namespace, "--wait=false")
        wait(
            "every job deleted",
            lambda: not objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, limit=1)["items"],
            timeout=300,
            interval=0.5,
        )
        t_deleted = time.time()
        deleted = True
        cpu_total = cpu_seconds(op.pid) - cpu0
        rss_peak = vm_kib(op.pid, "VmHWM")
    finally:
        if watch is not None:
            watch.stop()
        if not deleted and op.poll() is None:  # the finalizers need the operator: delete before stopping it
            subprocess.run(
                ["kubectl", "delete", PLURAL, "--all", "-n", namespace, "--timeout=300s"], env=env, check=False
            )
        op.terminate()
        try:
            op.wait(30)
        except subprocess.TimeoutExpired:
            op.kill()
        kubectl(env, "delete", "namespace", namespace, "--wait=false")

    latencies = [watch.planned_at[n] - created_at[n] for n in created_at]
    scale = plan_window / args.background_seconds
    noise = {k: round(v * scale) for k, v in background.items()}
    net = Counter({k: max(v - noise.get(k, 0), 0) for k, v in plan_requests.items()})
    # The operator's writes as the API server counted them: its patches of the GreenTrainingJobs
    # (kopf's finalizer and annotations, the status), its Job writes, and the Events it posted (all
    # Events POSTed minus those of other writers in this namespace: the Job controller's).
    operator_writes_apiserver = (
        net[("greentrainingjobs", "PATCH")]
        + net[("greentrainingjobs/status", "PATCH")]
        + net[("jobs", "POST")]
        + net[("jobs", "PATCH")]
        + max(net[("events", "POST")] - (sum(by_kind.values()) - gtj_events), 0)
    )
    per_job = {
        "job_writes_metric": writes_plan / args.jobs,
        "gtj_writes_exact": modified_plan / args.jobs,
        "gtj_events_exact": gtj_events / args.jobs,
        "total_exact": (writes_plan + modified_plan + gtj_events) / args.jobs,
        "total_apiserver": operator_writes_apiserver / args.jobs,
    }
    result = {
        "jobs": args.jobs,
        "create_seconds": round(t_created - t0, 2),
        "all_planned_seconds": round(t_planned - t0, 2),
        "latency_seconds": {
            "p50": round(pct(latencies, 0.5), 2),
            "p99": round(pct(latencies, 0.99), 2),
            "max": round(max(latencies), 2),
            "mean": round(statistics.fmean(latencies), 2),
        },
        "per_job": {k: round(v, 2) for k, v in per_job.items()},
        "requests_during_planning_net": {f"{r} {v}": n for (r, v), n in sorted(net.items())},
        "background_estimate": {f"{r} {v}": n for (r, v), n in sorted(noise.items())},
        "idle": {
            "seconds": args.idle_seconds,
            "cpu_percent": round(100 * cpu_idle / args.idle_seconds, 1),
            "gtj_writes": modified_idle,
            "requests": {f"{r} {v}": n for (r, v), n in sorted(idle_requests.items())},
        },
        "delete_seconds": round(t_deleted - td, 2),
        "cpu_seconds": {"planning": round(cpu_plan, 2), "idle": round(cpu_idle, 2), "total": round(cpu_total, 2)},
        "rss_mib": {"before": round(rss_before / 1024, 1), "peak": round(rss_peak / 1024, 1)},
        "operator_log": str(work / "operator.log"),
        "machine": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
    }
    targets = [
        ("all planned", f"{result['all_planned_seconds']} s", "< 60 s", result["all_planned_seconds"] < 60),
        ("creation -> plan p50", f"{result['latency_seconds']['p50']} s", "", None),
        ("creation -> plan p99", f"{result['latency_seconds']['p99']} s", "", None),
        ("Job writes / job (greenjobs_api_writes_total)", per_job["job_writes_metric"], "", None),
        ("GTJ writes / job (watch MODIFIED)", per_job["gtj_writes_exact"], "", None),
        ("Events / job (on GreenTrainingJobs)", per_job["gtj_events_exact"], "", None),
        ("operator API writes / job", round(per_job["total_exact"], 2), "<= 4", per_job["total_exact"] <= 4),
        ("  same, from apiserver_request_total", round(per_job["total_apiserver"], 2), "", None),
        ("operator CPU, planning", f"{cpu_plan:.1f} s", "", None),
        (f"operator CPU, {args.jobs} idle deferred", f"{result['idle']['cpu_percent']} %", "", None),
        ("delete all (finalizers)", f"{result['delete_seconds']} s", "", None),
        ("peak RSS", f"{result['rss_mib']['peak']} MiB", "< 250 MiB", rss_peak / 1024 < 250),
    ]
    print(table(["figure", "value", "target", "met"], [(a, b, c, "" if d is None else d) for a, b, c, d in targets]))
    print()
    print(
        table(["resource verb", "requests (net)"], [(k, v) for k, v in result["requests_during_planning_net"].items()])
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
