"""The local control plane itself: real API server, scheduler, Job controller and kwok GPU nodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kube import Cluster, wait_until

pytestmark = pytest.mark.cluster


def test_fake_gpu_nodes_in_two_zones(cluster: Cluster) -> None:
    assert sorted(cluster.nodes) == ["FR", "GB"]
    nodes = cluster.get_json("nodes")["items"]
    for n in nodes:
        assert n["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        ready = {c["type"]: c["status"] for c in n["status"]["conditions"]}["Ready"]
        assert ready == "True"
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert version["gitVersion"].startswith("v1.")


def test_crd_and_custom_resource_round_trip(cluster: Cluster, namespace: str) -> None:
    manifest = f"""
apiVersion: greenjobs.dev/v1alpha1
kind: GreenTrainingJob
metadata: {{name: roundtrip, namespace: {namespace}}}
spec:
  jobTemplate: {{spec: {{template: {{spec: {{restartPolicy: Never, containers: [{{name: c, image: busybox}}]}}}}}}}}
  timing: {{estimatedDuration: 1h, maxDelay: 6h}}
  placement: {{zones: [GB, FR]}}
  power: {{policy: Static, capWatts: 250}}
"""
    cluster.kubectl("apply", "-f", "-", input=manifest)
    out = cluster.kubectl("get", "gtj", "-n", namespace).stdout
    header = out.splitlines()[0].split()
    assert header == [
        "NAME",
        "PHASE",
        "ZONE",
        "START",
        "CAP-W",
        "ENERGY-KWH",
        "CO2E-G",
        "SAVED-%",
        "WORK-%",
        "RUNS",
        "AGE",
    ]
    assert out.splitlines()[1].startswith("roundtrip")
    obj = cluster.get_json("greentrainingjob", "roundtrip", "-n", namespace)
    assert obj["spec"]["placement"]["zones"] == ["GB", "FR"]
    # The API server applies the schema's defaults.
    assert obj["spec"]["power"] == {
        "policy": "Static",
        "capWatts": 250,
        "lowGPerKWh": 100,
        "highGPerKWh": 300,
    }
    wide = cluster.kubectl("get", "gtjs", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert wide[-8:] == [
        "DEADLINE", "JOB", "APPLIED-W", "GPU-KWH", "HOST-KWH", "FACILITY-KWH", "OPERATIONAL-G", "EMBODIED-G"
    ]  # fmt: skip


def test_job_runs_on_a_gpu_node_of_the_chosen_zone_and_completes(cluster: Cluster, namespace: str) -> None:
    manifest = f"""
apiVersion: batch/v1
kind: Job
metadata: {{name: train, namespace: {namespace}}}
spec:
  completions: 2
  parallelism: 2
  template:
    metadata: {{annotations: {{kwok.greenjobs.dev/run-for: 3s}}}}
    spec:
      restartPolicy: Never
      nodeSelector: {{greenjobs.dev/grid-zone: FR}}
      containers: [{{name: train, image: busybox, resources: {{limits: {{nvidia.com/gpu: 6}}}}}}]
"""
    cluster.kubectl("apply", "-f", "-", input=manifest)
    cluster.kubectl("wait", "--for=condition=Complete", "job/train", "-n", namespace, "--timeout=90s")
    pods = cluster.get_json("pods", "-n", namespace, "-l", "job-name=train")["items"]
    nodes = {p["spec"]["nodeName"] for p in pods}
    # 6 GPUs each on 8-GPU nodes: the real scheduler must spread the two pods over both FR nodes.
    assert nodes == set(cluster.nodes["FR"])


def test_pod_asking_more_gpus_than_any_node_stays_pending(cluster: Cluster, namespace: str) -> None:
    manifest = f"""
apiVersion: v1
kind: Pod
metadata: {{name: greedy, namespace: {namespace}}}
spec:
  containers: [{{name: c, image: busybox, resources: {{limits: {{nvidia.com/gpu: 9}}}}}}]
"""
    cluster.kubectl("apply", "-f", "-", input=manifest)

    def unschedulable() -> bool:
        pod = cluster.get_json("pod", "greedy", "-n", namespace)
        conds = pod["status"].get("conditions", [])
        return any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conds)

    wait_until("the scheduler to refuse a 9-GPU pod", unschedulable, timeout=60)


def test_helm_installs_a_trivial_chart(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    chart = tmp_path / "trivial"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: trivial\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: trivial}\ndata: {greeting: {{ .Values.greeting | quote }}}\n"
    )
    (chart / "values.yaml").write_text("greeting: hello\n")
    cluster.helm("install", "trivial", str(chart), "-n", namespace, "--set", "greeting=hi", "--wait")
    cm = cluster.get_json("configmap", "trivial", "-n", namespace)
    assert cm["data"] == {"greeting": "hi"}
    assert "deployed" in cluster.helm("status", "trivial", "-n", namespace).stdout
