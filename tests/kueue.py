"""Kueue + JobSet on the test control plane (e2e/cluster.sh kueue-up), and the carbon check process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from greenjobs.runtime.readiness import READY
from tests.kube import CLUSTER_SH, Cluster, ManagedProcess, wait_until
from tests.operator_proc import FAST_SETTINGS

CHECK = "greenjobs-carbon"
ZONE_LABEL = "greenjobs.dev/grid-zone"


@contextmanager
def kueue_running(cluster: Cluster) -> Iterator[None]:
    """Kueue and the JobSet controller up (built on first use), and down with their webhooks removed
    afterwards, so the rest of the session creates Jobs without them."""
    env = cluster.env()
    up = subprocess.run([str(CLUSTER_SH), "kueue-up"], capture_output=True, text=True, env=env, check=False)
    if up.returncode != 0:
        raise AssertionError(f"e2e/cluster.sh kueue-up failed:\n{up.stdout}\n{up.stderr}")
    try:
        yield
    finally:
        subprocess.run([str(CLUSTER_SH), "kueue-down"], capture_output=True, env=env, check=False)


def queues(namespace: str, *, gpus: int, check: bool = True, cq: str | None = None, pinned_zone: str = "") -> str:
    """A zone-less ResourceFlavor (so the check picks the zone) or, with `pinned_zone`, one whose
    nodeLabels pin that zone; a ClusterQueue of `gpus` GPUs on it that uses the carbon check; and a
    LocalQueue `lq` in `namespace` pointing at it."""
    cq = cq or f"cq-{namespace}"
    strategy = f"admissionChecksStrategy: {{admissionChecks: [{{name: {CHECK}}}]}}" if check else ""
    flavor = f"pinned-{pinned_zone.lower()}" if pinned_zone else "gpu-any"
    flavor_spec = f"{{nodeLabels: {{{ZONE_LABEL}: {pinned_zone}}}}}" if pinned_zone else "{}"
    return f"""
apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata: {{name: {flavor}}}
spec: {flavor_spec}
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: AdmissionCheck
metadata: {{name: {CHECK}}}
spec: {{controllerName: greenjobs.dev/carbon}}
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueue
metadata: {{name: {cq}}}
spec:
  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {namespace}}}}}
  {strategy}
  resourceGroups:
  - coveredResources: [nvidia.com/gpu]
    flavors:
    - {{name: {flavor}, resources: [{{name: nvidia.com/gpu, nominalQuota: {gpus}}}]}}
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: LocalQueue
metadata: {{name: lq, namespace: {namespace}}}
spec: {{clusterQueue: {cq}}}
"""


def start_check(
    cluster: Cluster,
    workdir: Path,
    config: dict[str, Any],
    name: str = "kueue-check",
    env: dict[str, str] | None = None,
) -> ManagedProcess:
    """`greenjobs kueue-check` as a process (cluster-wide: Kueue's objects are cluster-scoped); `env`
    adds to its environment (e.g. another KUBECONFIG)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / f"{name}-config.yaml"
    cfg.write_text(yaml.safe_dump({**FAST_SETTINGS, **config}))
    log_path = workdir / f"{name}.log"
    cmd = [sys.executable, "-m", "greenjobs.cli", "kueue-check", "--config", str(cfg), "--liveness", ""]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=cluster.env(env), start_new_session=True)
    p = ManagedProcess(proc, log_path)
    # Ready: the initial list of every watched kind (nodes too) is in.
    wait_until("kueue-check to be ready", lambda: not p.alive() or READY in p.logs(), timeout=30)
    if not p.alive():
        raise AssertionError(f"kueue-check exited at start:\n{p.logs()}")
    return p


def workload_of(cluster: Cluster, namespace: str, owner_uid: str) -> dict[str, Any] | None:
    items = cluster.get_json("workloads", "-n", namespace, "-l", f"kueue.x-k8s.io/job-uid={owner_uid}")["items"]
    return items[0] if items else None


def cq_usage(cluster: Cluster, cq: str) -> tuple[int, int]:
    """(GPUs reserved, admitted workloads) as the ClusterQueue's status reports them."""
    status = cluster.get_json("clusterqueue", cq).get("status", {})
    used = 0
    for fu in status.get("flavorsReservation") or []:
        for r in fu.get("resources") or []:
            if r["name"] == "nvidia.com/gpu":
                used += int(str(r.get("total", "0")))
    return used, int(status.get("reservingWorkloads", 0))


def condition(obj: dict[str, Any], type_: str) -> str | None:
    return next((c["status"] for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)
