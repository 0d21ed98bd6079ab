"""Every workload adapter against the kinds' REAL CRDs (from their Go modules): the built object is
accepted by the API server with strict field validation, and its start patches, applied as JSON merge
patches, leave every pod template in the zone and the object unsuspended. No controller of those
kinds runs here (Kueue/JobSet runs are in test_kueue_check.py); a batch Job really runs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from greenjobs.workloads import adapter_for
from greenjobs.workloads.trainjob import MANAGER
from tests.kube import Cluster, wait_until
from tests.unit.test_workloads import API, TEMPLATES

pytestmark = pytest.mark.cluster

ZONE = {"greenjobs.dev/grid-zone": "FR"}
OURS = {"greenjobs.dev/job": "w", "greenjobs.dev/job-uid": "uid-1"}
RESOURCE = {"Job": "jobs.batch", "JobSet": "jobsets.jobset.x-k8s.io", "TrainJob": "trainjobs.trainer.kubeflow.org",
            "PyTorchJob": "pytorchjobs.kubeflow.org", "RayJob": "rayjobs.ray.io"}  # fmt: skip


def _pod_templates(kind: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
    if kind != "TrainJob":
        return adapter_for(API[kind], kind).pod_templates(obj)
    (ours,) = [p for p in obj["spec"]["runtimePatches"] if p["manager"] == MANAGER]
    return [
        rj["template"]["spec"]["template"] for rj in ours["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    ]


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_adapter_objects_and_start_patches_are_valid_for_the_real_crds(
    workload_crds: Cluster, namespace: str, kind: str
) -> None:
    cluster = workload_crds
    a = adapter_for(API[kind], kind)
    template = json.loads(json.dumps(TEMPLATES[kind]))
    template["metadata"].get("labels", {}).pop("kueue.x-k8s.io/queue-name", None)  # no Kueue here
    if kind == "Job":  # it really runs: no node has the unit test's gpu=h100 label
        del template["spec"]["template"]["spec"]["nodeSelector"]
    # A fake owner UID: the API server does not check it, and the GC only acts once it looks it up.
    obj = a.build(template, name="w", namespace=namespace, owner_uid="uid-1", labels=OURS, suspended=True)
    obj["metadata"]["ownerReferences"] = []  # the GC would delete an object whose owner is missing
    cluster.kubectl("create", "--validate=strict", "-f", "-", input=json.dumps(obj))
    stored = cluster.get_json(RESOURCE[kind], "w", "-n", namespace)
    assert a.is_suspended(stored)
    for pt in _pod_templates(kind, stored):
        assert OURS.items() <= pt["metadata"]["labels"].items()

    for patch in a.start_patches(stored, ZONE, {"greenjobs.dev/zone": "FR"}):
        cluster.kubectl("patch", RESOURCE[kind], "w", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    started = cluster.get_json(RESOURCE[kind], "w", "-n", namespace)
    assert not a.is_suspended(started)
    assert started["metadata"]["labels"]["greenjobs.dev/zone"] == "FR"
    templates = _pod_templates(kind, started)
    assert templates
    for pt in templates:
        assert pt["spec"]["nodeSelector"]["greenjobs.dev/grid-zone"] == "FR"
        assert {**OURS, "greenjobs.dev/zone": "FR"}.items() <= pt["metadata"]["labels"].items()
    assert a.gpus(started) == a.gpus(obj) > 0
    if kind == "TrainJob":  # the other manager's runtime patch survived the merge patches
        assert [p["manager"] for p in started["spec"]["runtimePatches"]] == ["example.com/other", MANAGER]
    if kind == "Job":  # the real Job controller and scheduler run it in the zone, with our labels
        pods = wait_until(
            "the Job's pods on nodes",
            lambda: [p for p in cluster.get_json("pods", "-n", namespace, "-l", "job-name=w")["items"]
                     if p["spec"].get("nodeName")],
        )  # fmt: skip
        assert {p["spec"]["nodeName"] for p in pods} <= set(cluster.nodes["FR"])
        assert all(OURS.items() <= p["metadata"]["labels"].items() for p in pods)

    cluster.kubectl(
        "patch", RESOURCE[kind], "w", "-n", namespace, "--type=merge", "-p", json.dumps(a.suspend_patch(started))
    )
    assert a.is_suspended(cluster.get_json(RESOURCE[kind], "w", "-n", namespace))
