"""The long run (issue 14 item 4): hours of steady short jobs through the operator and real agents.

On the local control plane (e2e/cluster.sh up: real etcd, kube-apiserver, scheduler, controller
manager; kwok GPU nodes), one `greenjobs operator` and one real `greenjobs agent` per GPU node
(simulated GPUs and PodResources, as tests/agent_proc.py runs them) serve a fresh namespace. A new
GreenTrainingJob arrives every --interval seconds, in turn: one that starts at once in GB, one with a
few minutes' slack over GB and FR (deferred to FR's clean spells or started at once), and one with a
deadline. Each runs --run-for (kwok ends its pods); the operator settles finished jobs after
--settle-after. Every --sample seconds the bench records the operator's and each agent's RSS, the
jobs by phase and the error lines in every log.

At the end, after the last arrivals finished: every job must be Succeeded with its energy and CO2e
accounted; RSS is flat when the median of the last third is within noise of the median of the
middle third (the first third is warm-up: imports, caches, first lists). Results go to
bench/results/soak.json.

    .venv/bin/python bench/soak.py [--minutes 120 --interval 15 --run-for 40s]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, table
from operator_scale import GROUP, PLURAL, VERSION, free_port, kubectl, prepared_cluster, vm_kib, wait

ERROR = re.compile(r"\bERROR\b|Traceback|\"level\": ?\"error\"", re.IGNORECASE)
AGENT_ENV = {
    "GREENJOBS_GPU_BACKEND": "simulated",
    "GREENJOBS_PODRESOURCES": "simulated",
    "GREENJOBS_REPORT_INTERVAL": "5",
    "GREENJOBS_METRICS_PORT": "0",
}


def write_forecasts(directory: Path, now: datetime, minutes: int) -> None:
    """GB flat 300 g/kWh; FR 250 with a clean (40) 10 minutes in every 30: slack jobs wait for them."""
    directory.mkdir(parents=True, exist_ok=True)
    for zone in ("GB", "FR"):
        rows = ["time,gPerKWh"]
        for i in range(-10, minutes + 180):
            value = 300.0 if zone == "GB" else (40.0 if i % 30 >= 20 else 250.0)
            rows.append(f"{(now + timedelta(minutes=i)).isoformat()},{value}")
        (directory / f"{zone}.csv").write_text("\n".join(rows) + "\n")


def job(namespace: str, n: int, run_for: str, now: datetime) -> dict[str, Any]:
    """The n-th arrival: start-now (GB), slack (GB or FR, 15 min), or a deadline 20 min out."""
    kind = n % 3
    spec: dict[str, Any] = {
        "jobTemplate": {
            "spec": {
                "ttlSecondsAfterFinished": 60,
                "template": {
                    "metadata": {"annotations": {"kwok.greenjobs.dev/run-for": run_for}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "train", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": 1}}}
                        ],
                    },
                },
            }
        },
        "placement": {"zones": ["GB"] if kind == 0 else ["GB", "FR"]},
    }
    if kind == 1:
        spec["timing"] = {"estimatedDuration": "2m", "maxDelay": "15m"}
    elif kind == 2:
        deadline = (now + timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
        spec["timing"] = {"estimatedDuration": "2m", "deadline": deadline}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GreenTrainingJob",
        "metadata": {"name": f"soak-{n:05d}", "namespace": namespace},
        "spec": spec,
    }


def errors_in(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text(errors="replace").splitlines() if ERROR.search(line)]


def thirds(samples: list[float]) -> tuple[float, float]:
    """Median of the middle third and of the last third of a series."""
    k = max(len(samples) // 3, 1)
    return statistics.median(samples[k : 2 * k] or samples), statistics.median(samples[-k:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=120.0)
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between arrivals")
    parser.add_argument("--run-for", default="40s", help="how long each job's pod runs (kwok)")
    parser.add_argument("--settle-after", default="2m")
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    env = prepared_cluster()
    namespace = f"soak-{uuid.uuid4().hex[:6]}"
    kubectl(env, "create", "namespace", namespace)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    start = datetime.now(UTC).replace(microsecond=0)
    write_forecasts(work / "fc", start, int(args.minutes))
    config = {
        "providers": [{"type": "file", "path": str(work / "fc")}],
        "metricsPort": free_port(),
        "settleAfter": args.settle_after,
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    nodes = json.loads(kubectl(env, "get", "nodes", "-l", "greenjobs.dev/grid-zone", "-o", "json"))["items"]
    names = sorted(n["metadata"]["name"] for n in nodes)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}

    def spawn(name: str, cmd: list[str], extra: dict[str, str]) -> None:
        logs[name] = work / f"{name}.log"
        with logs[name].open("wb") as log:
            procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**env, **extra})

    py = sys.executable
    spawn("operator", [py, "-m", "greenjobs.cli", "operator", "--config", str(work / "config.yaml"), "--liveness", "",
                       "-n", namespace], {})  # fmt: skip
    for node in names:
        state = work / node
        state.mkdir()
        agent_env = {"NODE_NAME": node, "GREENJOBS_STATE_DIR": str(state), "GREENJOBS_NAMESPACES": namespace}
        spawn(f"agent-{node}", [py, "-m", "greenjobs.cli", "agent"], {**AGENT_ENV, **agent_env})
    wait("the operator to log in", lambda: "Activity 'login' succeeded" in logs["operator"].read_text(), 60)

    api = kubernetes.config.new_client_from_config(config_file=env["KUBECONFIG"])
    objects = kubernetes.client.CustomObjectsApi(api)
    samples: list[dict[str, Any]] = []
    created = 0
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    next_arrival, next_sample = t0, t0
    try:
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_arrival:
                body = job(namespace, created, args.run_for, datetime.now(UTC))
                objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
                created += 1
                next_arrival += args.interval
            if now >= next_sample:
                items = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
                phases = Counter((i.get("status") or {}).get("phase", "None") for i in items)
                settled = sum(1 for i in items if (i["metadata"].get("labels") or {}).get("greenjobs.dev/settled"))
                dead = [n for n, p in procs.items() if p.poll() is not None]
                if dead:
                    raise SystemExit(f"exited during the soak: {dead}")
                samples.append(
                    {
                        "minute": round((now - t0) / 60, 2),
                        "rss_kib": {n: vm_kib(p.pid, "VmRSS") for n, p in procs.items()},
                        "phases": dict(phases),
                        "settled": settled,
                        "errors": {n: len(errors_in(p)) for n, p in logs.items()},
                    }
                )
                last = samples[-1]
                print(
                    f"{last['minute']:7.1f} min  jobs {created:5d}  {dict(phases)}  settled {settled}"
                    f"  operator RSS {last['rss_kib']['operator'] / 1024:.1f} MiB",
                    flush=True,
                )
                next_sample += args.sample
            time.sleep(max(min(next_arrival, next_sample) - time.monotonic(), 0.05))

        # Drain: every job ends (a slack job waits at most 15 min, a deadline job 18).
        def unfinished() -> int:
            items = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
            return sum(1 for i in items if (i.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))

        wait("every job finished", lambda: unfinished() == 0, timeout=30 * 60, interval=5)
        time.sleep(30)  # the agents' last reports folded in
        items = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["kubectl", "delete", "namespace", namespace, "--wait=false"], env=env, check=False)

    outcome = Counter(i["status"]["phase"] for i in items)
    unaccounted = [
        i["metadata"]["name"]
        for i in items
        if not ((i["status"].get("energy") or {}).get("kWh") and (i["status"].get("emissions") or {}).get("grams"))
    ]
    rss: dict[str, dict[str, float]] = {}
    for name in procs:
        series = [s["rss_kib"][name] / 1024 for s in samples]
        middle, last = thirds(series)
        rss[name] = {"first": series[0], "middle": middle, "last": last, "growth_mib": last - middle}
        rss[name]["max"] = max(series)
    errors = {n: errors_in(p)[:5] for n, p in logs.items() if errors_in(p)}
    agent_growth = max((v["growth_mib"] for n, v in rss.items() if n != "operator"), default=0.0)
    result = {
        "minutes": args.minutes,
        "interval_seconds": args.interval,
        "run_for": args.run_for,
        "settle_after": args.settle_after,
        "jobs": created,
        "outcome": dict(outcome),
        "unaccounted": unaccounted,
        "settled_at_end": sum(1 for i in items if (i["metadata"].get("labels") or {}).get("greenjobs.dev/settled")),
        "rss_mib": rss,
        "error_lines": errors,
        "samples": samples,
        "logs": str(work),
    }
    op, succeeded = rss["operator"], outcome.get("Succeeded", 0)
    rows = [
        ("jobs arrived / Succeeded", f"{created} / {succeeded}", "all", succeeded == created),
        ("jobs without energy or CO2e accounted", len(unaccounted), "0", not unaccounted),
        ("operator RSS middle -> last third", f"{op['middle']:.1f} -> {op['last']:.1f} MiB", "flat (< 5 MiB)",
         abs(op["growth_mib"]) < 5),
        ("agents' RSS growth, worst", f"{agent_growth:.1f} MiB", "flat (< 5 MiB)", abs(agent_growth) < 5),
        ("error lines in all logs", sum(len(errors_in(p)) for p in logs.values()), "0", not errors),
    ]  # fmt: skip
    print(table(["figure", "value", "target", "met"], rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
