"""The operator with a real fleet's history: 10,000 GreenTrainingJobs, most of them long finished.

One `greenjobs operator` process watches a fresh namespace on the local control plane, in stages:
  1. an operator on the empty namespace: baseline RSS (then stopped);
  2. N finished GTJs (Succeeded, energy accounted, their Jobs gone as after a TTL, labelled
     greenjobs.dev/settled as the operator leaves them) are written with no operator running; a new
     operator starts over them: RSS per finished job, then a quiet minute: every API request of the
     operator while only finished jobs exist (target: none), and its CPU. With `--history unsettled`
     they lack the label (an upgrade from a version that did not settle): the time to settle them all;
  3. D deferred and R running GTJs are added and planned; a quiet minute again: requests per minute,
     CPU, RSS (what active jobs cost);
  4. A burst of B new GTJs applied at once: time until all are planned, and the operator's writes per
     job from creation to a deferred plan (target: at most 3, its Job, its status and one Event).

The bench brings the control plane up (e2e/cluster.sh up), installs the CRD and adds the kwok GPU
nodes the load needs (every deferred and burst job fits FR's clean hour; removed at the end):

    .venv/bin/python bench/operator_fleet.py [--finished 9000 --deferred 900 --running 100 --burst 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, kwok_node, table
from operator_scale import (
    GROUP,
    PLURAL,
    VERSION,
    GtjWatch,
    apiserver_requests,
    cpu_seconds,
    delta,
    free_port,
    gtj,
    kubectl,
    pct,
    prepared_cluster,
    scrape,
    vm_kib,
    wait,
    write_forecasts,
)

READS = ("GET", "LIST")


def finished_status(now: datetime, i: int) -> dict[str, Any]:
    """What a Succeeded job's status looks like once its agents' last report is accounted."""
    joules = 3.6e6 * (1 + i % 7)
    start = now - timedelta(days=30, hours=i % 500)
    return {
        "phase": "Succeeded",
        "observedGeneration": 1,
        "jobName": f"done-{i:05d}",
        "startTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "completionTime": (start + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "plan": {"zone": "GB", "scheduledStart": start.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "energy": {"kWh": joules / 3.6e6, "gpuHours": 8.0, "nodes": {"gpu-gb-0": {"joules": joules, "gpus": 8}}},
        "emissions": {"grams": 150.0, "accountedJoules": {"gpu-gb-0": joules}},
        "conditions": [
            {
                "type": "Complete",
                "status": "True",
                "reason": "JobSucceeded",
                "message": "the Job completed",
                "lastTransitionTime": (start + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ],
    }


def add_nodes(env: dict[str, str], per_zone: dict[str, int], gpus: int) -> None:
    """kwok GPU nodes in each zone, for this bench only (label bench=operator-fleet)."""
    items = [
        kwok_node(f"bench-{zone.lower()}-{i:03d}", gpus, {"bench": "operator-fleet", "greenjobs.dev/grid-zone": zone})
        for zone, n in per_zone.items()
        for i in range(n)
    ]
    kubectl(env, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def running_gtj(namespace: str, name: str) -> dict[str, Any]:
    body = gtj(namespace, name)
    body["spec"].pop("timing")
    body["spec"]["placement"] = {"zones": ["GB"]}
    pod = body["spec"]["jobTemplate"]["spec"]["template"]
    pod["metadata"] = {"annotations": {"kwok.greenjobs.dev/run-for": "2h"}}
    return body


# What the operator sends: reads of one object, writes. LIST and DELETE of GTJs, Jobs and Events come
# from the namespace and garbage collectors of the shared control plane (other tests' namespaces).
OPERATOR_VERBS = ("GET", "POST", "PATCH", "PUT")


def operator_requests(env: dict[str, str], before: Counter[tuple[str, str]]) -> Counter[tuple[str, str]]:
    """Requests on GTJs, Jobs and Events since `before` with the verbs the operator uses."""
    return Counter({k: v for k, v in delta(apiserver_requests(env), before).items() if k[1] in OPERATOR_VERBS})


def quiet(env: dict[str, str], pid: int, seconds: float) -> dict[str, Any]:
    cpu0, req0 = cpu_seconds(pid), apiserver_requests(env)
    time.sleep(seconds)
    reqs = operator_requests(env, req0)
    gtj_reqs = {f"{r} {v}": n for (r, v), n in sorted(reqs.items()) if r.startswith("greentrainingjobs")}
    return {
        "seconds": seconds,
        "cpu_percent": round(100 * (cpu_seconds(pid) - cpu0) / seconds, 2),
        "gtj_requests_per_minute": round(sum(gtj_reqs.values()) * 60 / seconds, 1),
        "gtj_requests": gtj_reqs,
        "all_requests": {f"{r} {v}": n for (r, v), n in sorted(reqs.items())},
        "rss_mib": round(vm_kib(pid, "VmRSS") / 1024, 1),
    }


def create_all(objects: Any, namespace: str, bodies: list[dict[str, Any]], threads: int) -> dict[str, float]:
    created: dict[str, float] = {}

    def create(body: dict[str, Any]) -> None:
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        created[body["metadata"]["name"]] = time.time()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, bodies))
    return created


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--finished", type=int, default=9000)
    parser.add_argument("--deferred", type=int, default=900)
    parser.add_argument("--running", type=int, default=100)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--quiet-seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--history", choices=("settled", "unsettled"), default="settled")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS / "operator_fleet.json")
    args = parser.parse_args()
    # A SIGTERM (a CI timeout, kill) still runs the clean-up below: its running pods hold GPUs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    env = prepared_cluster()
    # Sized so that capacity never binds: deferred and burst jobs (1 GPU, 30 min) two per GPU in FR's
    # clean hour, running ones (1 GPU) in GB. An oversubscribed cluster measures lateness instead.
    per_node = args.gpus_per_node
    fr_nodes = -(-(args.deferred + args.burst) // (2 * per_node)) + 1
    gb_nodes = -(-args.running // per_node) + 1
    add_nodes(env, {"FR": fr_nodes, "GB": gb_nodes}, per_node)
    result_nodes = {"FR": fr_nodes, "GB": gb_nodes, "gpus_per_node": per_node}
    namespace = f"bench-fleet-{uuid.uuid4().hex[:6]}"
    kubectl(env, "create", "namespace", namespace)
    work = Path(tempfile.mkdtemp(prefix="operator-fleet-"))
    now = datetime.now(UTC).replace(microsecond=0)
    write_forecasts(work / "fc", now)
    port = free_port()
    config = {"providers": [{"type": "file", "path": str(work / "fc")}], "metricsPort": port}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "greenjobs.cli", "operator", "--config", str(work / "config.yaml")]
    api = kubernetes.config.new_client_from_config(config_file=env["KUBECONFIG"])
    objects = kubernetes.client.CustomObjectsApi(api)
    result: dict[str, Any] = {"jobs": vars(args) | {"out": str(args.out)}, "bench_nodes": result_nodes}
    watch: GtjWatch | None = None

    def start_operator(log_name: str) -> subprocess.Popen[bytes]:
        log = (work / log_name).open("wb")
        proc = subprocess.Popen(
            [*cmd, "--liveness", "", "-n", namespace], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        wait("the operator to log in", lambda: b"Activity 'login' succeeded" in (work / log_name).read_bytes(), 60)
        return proc

    op = start_operator("operator-empty.log")
    try:
        time.sleep(5)
        rss_empty = vm_kib(op.pid, "VmRSS")
        op.terminate()
        op.wait(30)

        # 2. The history: finished jobs, created and given their final status with no operator running.
        t0 = time.time()
        bodies = [gtj(namespace, f"done-{i:05d}") for i in range(args.finished)]
        if args.history == "settled":
            for b in bodies:
                b["metadata"]["labels"] = {"greenjobs.dev/settled": "true"}

        def finish(i: int) -> None:
            name = f"done-{i:05d}"
            objects.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": finished_status(now, i)}
            )

        create_all(objects, namespace, bodies, args.threads)
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(finish, range(args.finished)))
        result["populate_seconds"] = round(time.time() - t0, 1)
        t_start = time.time()
        op = start_operator("operator.log")
        if args.history == "unsettled":
            # An upgrade: the new operator labels every finished job once, then stops watching it.
            def unsettled() -> int:
                sel = "!greenjobs.dev/settled"
                got = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, label_selector=sel)
                return len(got["items"])

            wait("every finished job settled", lambda: unsettled() == 0, timeout=1800)
            result["settle_all_seconds"] = round(time.time() - t_start, 1)
            result["rss_after_settling_mib"] = round(vm_kib(op.pid, "VmRSS") / 1024, 1)
        time.sleep(10)  # the initial LIST and one event per object
        result["start_over_finished_seconds"] = round(time.time() - t_start, 1)
        rss_finished = vm_kib(op.pid, "VmRSS")
        result["finished_only"] = quiet(env, op.pid, args.quiet_seconds)
        result["rss_per_finished_kib"] = round((rss_finished - rss_empty) / max(args.finished, 1), 2)
        result["jobs_created_for_finished"] = len(
            json.loads(kubectl(env, "get", "jobs", "-n", namespace, "-o", "json"))["items"]
        )

        # 3. Active jobs: deferred ones wait for FR's clean hour, running ones start at once in GB.
        watch = GtjWatch(objects, namespace)
        active = [gtj(namespace, f"wait-{i:04d}") for i in range(args.deferred)]
        active += [running_gtj(namespace, f"run-{i:04d}") for i in range(args.running)]
        create_all(objects, namespace, active, args.threads)
        w = watch
        wait("every active job planned", lambda: len(w.planned_at) >= len(active), timeout=600)
        time.sleep(15)
        result["with_active"] = quiet(env, op.pid, args.quiet_seconds)

        # 4. A burst of new jobs applied at once.
        writes0 = sum(scrape(port, "greenjobs_api_writes_total").values())
        modified0 = sum(watch.modified.values())
        burst = [gtj(namespace, f"burst-{i:04d}") for i in range(args.burst)]
        tb = time.time()
        created = create_all(objects, namespace, burst, args.threads)
        wait("every burst job planned", lambda: all(n in w.planned_at for n in created), timeout=600)
        t_planned = time.time()
        time.sleep(3)
        writes = sum(scrape(port, "greenjobs_api_writes_total").values()) - writes0
        modified = sum(watch.modified.values()) - modified0
        latencies = [watch.planned_at[n] - created[n] for n in created]
        result["burst"] = {
            "all_planned_seconds": round(t_planned - tb, 1),
            "latency_p50": round(pct(latencies, 0.5), 2),
            "latency_p99": round(pct(latencies, 0.99), 2),
            "operator_writes_per_job": round(writes / args.burst, 2),
            "gtj_modifications_per_job": round(modified / args.burst, 2),
        }
        result["rss_peak_mib"] = round(vm_kib(op.pid, "VmHWM") / 1024, 1)
        result["rss_empty_mib"] = round(rss_empty / 1024, 1)
        events = json.loads(kubectl(env, "get", "events", "-n", namespace, "-o", "json"))["items"]
        reasons = Counter(e["reason"] for e in events if e["involvedObject"].get("kind") == "GreenTrainingJob")
        result["gtj_events"] = dict(reasons)
        jobs = json.loads(kubectl(env, "get", "jobs", "-n", namespace, "-o", "json"))["items"]
        result["jobs_created"] = len(jobs)
    finally:
        if watch is not None:
            watch.stop()
        op.terminate()
        try:
            op.wait(30)
        except subprocess.TimeoutExpired:
            op.kill()
        # The operator is gone, so nothing releases its finalizer on the Jobs: drop them first.
        for job in kubectl(env, "get", "jobs", "-n", namespace, "-o", "name").split():
            subprocess.run(
                ["kubectl", "patch", job, "-n", namespace, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'],
                env=env, check=False, capture_output=True,
            )  # fmt: skip
        subprocess.run(["kubectl", "delete", "namespace", namespace, "--wait=false"], env=env, check=False)
        subprocess.run(["kubectl", "delete", "nodes", "-l", "bench=operator-fleet"], env=env, check=False)

    active_total = args.deferred + args.running
    fo, wa, b = result["finished_only"], result["with_active"], result["burst"]
    idle_rpm, idle_cpu = fo["gtj_requests_per_minute"], wa["cpu_percent"]
    writes, planned, peak = b["operator_writes_per_job"], b["all_planned_seconds"], result["rss_peak_mib"]
    rows = [
        (f"API requests/min on GTJs, {args.finished} finished only", idle_rpm, "0", idle_rpm == 0),
        (f"operator CPU, {args.finished} finished only", f"{fo['cpu_percent']} %", "", None),
        ("RSS per finished GTJ", f"{result['rss_per_finished_kib']} KiB", "", None),
        (f"API requests/min on GTJs, + {active_total} active", wa["gtj_requests_per_minute"], "", None),
        (f"operator CPU idle, {args.finished + active_total} GTJs", f"{idle_cpu} %", "< 5 %", idle_cpu < 5),
        (f"{args.burst} new GTJs: all planned", f"{planned} s", "< 60 s", planned < 60),
        ("  creation -> plan p50 / p99", f"{b['latency_p50']} / {b['latency_p99']} s", "", None),
        ("operator writes per new job (Job, status, Event)", writes, "<= 3", writes <= 3),
        ("peak RSS", f"{peak} MiB", "< 300 MiB", peak < 300),
    ]
    print(table(["figure", "value", "target", "met"], [(a, v, t, "" if m is None else m) for a, v, t, m in rows]))
    result["machine"] = f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    result["operator_log"] = str(work / "operator.log")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
