"""Workload adapters: each kind built suspended and labelled, started in a zone, read back."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from greenjobs.workloads import SUPPORTED, UnsupportedWorkload, adapter_for, owned_by
from greenjobs.workloads.trainjob import MANAGER, REPLICATED_JOBS_ANNOTATION

ZONE = {"greenjobs.dev/grid-zone": "FR"}
OURS = {"greenjobs.dev/job": "llm", "greenjobs.dev/job-uid": "uid-1"}


def _pod(gpus: int, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "train"}},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"gpu": "h100"},
            "containers": [{"name": "main", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": gpus}}}],
            **extra,
        },
    }


TEMPLATES: dict[str, dict[str, Any]] = {
    "Job": {"metadata": {"labels": {"team": "nlp"}}, "spec": {"parallelism": 2, "template": _pod(4)}},
    "JobSet": {
        "metadata": {"labels": {"team": "nlp", "kueue.x-k8s.io/queue-name": "lq"}},
        "spec": {
            "replicatedJobs": [
                {"name": "trainer", "replicas": 2, "template": {"spec": {"parallelism": 2, "template": _pod(2)}}},
                {"name": "evaluator", "template": {"spec": {"template": _pod(1)}}},
            ]
        },
    },
    "TrainJob": {
        "metadata": {"labels": {"team": "nlp"}},
        "spec": {
            "runtimeRef": {"name": "torch-distributed"},
            "trainer": {"numNodes": 3, "resourcesPerNode": {"limits": {"nvidia.com/gpu": "4"}}},
            "runtimePatches": [{"manager": "example.com/other", "trainingRuntimeSpec": {}}],
        },
    },
    "PyTorchJob": {
        "metadata": {"labels": {"team": "nlp"}},
        "spec": {
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "template": _pod(8)},
                "Worker": {"replicas": 3, "template": _pod(8)},
            }
        },
    },
    "RayJob": {
        "metadata": {"labels": {"team": "nlp"}},
        "spec": {
            "entrypoint": "python train.py",
            "rayClusterSpec": {
                "headGroupSpec": {"template": _pod(0)},
                "workerGroupSpecs": [
                    {"groupName": "gpu", "replicas": 2, "numOfHosts": 2, "template": _pod(4)},
                    {"groupName": "small", "replicas": 1, "template": _pod(1)},
                ],
            },
        },
    },
}
API = {kind: api for api, kind in SUPPORTED}
# GPUs at full parallelism: what the fleet planner reserves.
EXPECTED_GPUS = {
    "Job": 2 * 4,
    "JobSet": 2 * 2 * 2 + 1,
    "TrainJob": 3 * 4,
    "PyTorchJob": 8 + 3 * 8,
    "RayJob": 2 * 2 * 4 + 1,
}


def _build(kind: str, suspended: bool = True, **kw: Any) -> dict[str, Any]:
    return adapter_for(API[kind], kind).build(
        TEMPLATES[kind], name="llm", namespace="ml", owner_uid="uid-1", labels=OURS, suspended=suspended, **kw
    )


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch, as the API server applies it to a custom resource."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


def _trainjob_pod_patches(obj: dict[str, Any]) -> list[dict[str, Any]]:
    (ours,) = [p for p in obj["spec"]["runtimePatches"] if p["manager"] == MANAGER]
    return [
        rj["template"]["spec"]["template"] for rj in ours["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    ]


def _pod_templates(kind: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
    if kind == "TrainJob":
        return _trainjob_pod_patches(obj)
    return adapter_for(API[kind], kind).pod_templates(obj)


def test_every_kind_of_the_crd_has_an_adapter_and_others_are_refused() -> None:
    assert {k for _, k in SUPPORTED} == set(TEMPLATES)
    with pytest.raises(UnsupportedWorkload, match="MPIJob"):
        adapter_for("kubeflow.org/v1", "MPIJob")


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_built_suspended_owned_and_labelled_on_every_pod_template(kind: str) -> None:
    before = copy.deepcopy(TEMPLATES[kind])
    a = adapter_for(API[kind], kind)
    obj = _build(kind)
    assert obj["apiVersion"] == a.api_version and obj["kind"] == kind
    assert obj["metadata"]["name"] == "llm" and obj["metadata"]["namespace"] == "ml"
    assert owned_by(obj, "uid-1") and obj["metadata"]["ownerReferences"][0]["controller"] is True
    assert obj["metadata"]["labels"] == {**TEMPLATES[kind]["metadata"]["labels"], **OURS}
    assert a.is_suspended(obj)
    templates = _pod_templates(kind, obj)
    assert templates, "no pod template carries our labels"
    for pt in templates:
        assert OURS.items() <= pt["metadata"]["labels"].items()
        assert "greenjobs.dev/grid-zone" not in (pt.get("spec") or {}).get("nodeSelector", {})
    assert TEMPLATES[kind] == before, "the template was mutated"
    assert not a.is_suspended(_build(kind, suspended=False))


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_start_patches_place_every_pod_template_in_the_zone_and_unsuspend(kind: str) -> None:
    a = adapter_for(API[kind], kind)
    obj = _build(kind)
    patches = a.start_patches(obj, ZONE, {"greenjobs.dev/zone": "FR"})
    started = obj
    for i, patch in enumerate(patches):
        started = _merge(started, patch)
        if i < len(patches) - 1:  # TrainJob: runtimePatches change while it stays suspended
            assert a.is_suspended(started)
    assert not a.is_suspended(started)
    assert started["metadata"]["labels"]["greenjobs.dev/zone"] == "FR"
    for pt in _pod_templates(kind, started):
        assert pt["spec"]["nodeSelector"]["greenjobs.dev/grid-zone"] == "FR"
        assert {**OURS, "greenjobs.dev/zone": "FR"}.items() <= pt["metadata"]["labels"].items()
    if kind != "TrainJob":  # the user's own selector and containers survive the merge
        for pt in a.pod_templates(started):
            assert pt["spec"]["nodeSelector"]["gpu"] == "h100" and pt["spec"]["containers"][0]["name"] == "main"
    assert a.gpus(started) == a.gpus(obj) == EXPECTED_GPUS[kind]
    assert a.is_suspended(_merge(started, a.suspend_patch(started)))


def test_trainjob_keeps_other_managers_runtime_patches_and_uses_the_named_replicated_jobs() -> None:
    a = adapter_for(API["TrainJob"], "TrainJob")
    tpl = copy.deepcopy(TEMPLATES["TrainJob"])
    tpl["metadata"]["annotations"] = {REPLICATED_JOBS_ANNOTATION: "node, dataset-initializer"}
    obj = a.build(tpl, name="llm", namespace="ml", owner_uid="uid-1", labels=OURS, suspended=True)
    (placed, start) = a.start_patches(obj, ZONE)
    managers = [p["manager"] for p in placed["spec"]["runtimePatches"]]
    assert managers == ["example.com/other", MANAGER] and placed["spec"]["suspend"] is True
    assert start == {"spec": {"suspend": False}}
    (ours,) = [p for p in placed["spec"]["runtimePatches"] if p["manager"] == MANAGER]
    names = [rj["name"] for rj in ours["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]]
    assert names == ["node", "dataset-initializer"]
    # our pod labels are kept when a later start adds the zone label
    for pt in _trainjob_pod_patches(_merge(obj, placed)):
        assert OURS.items() <= pt["metadata"]["labels"].items()


def test_batch_job_start_is_one_merge_patch_on_the_template_map() -> None:
    a = adapter_for("batch/v1", "Job")
    (patch,) = a.start_patches(_build("Job"), ZONE)
    assert patch == {"spec": {"suspend": False, "template": {"spec": {"nodeSelector": ZONE}}}}


def test_jobset_start_resends_the_whole_replicated_jobs_list() -> None:
    a = adapter_for(API["JobSet"], "JobSet")
    (patch,) = a.start_patches(_build("JobSet"), ZONE)
    assert [rj["name"] for rj in patch["spec"]["replicatedJobs"]] == ["trainer", "evaluator"]
    assert patch["spec"]["replicatedJobs"][0]["replicas"] == 2  # whole entries, not fragments


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        ("Job", {"conditions": [{"type": "Complete", "status": "True"}]}, "Succeeded"),
        ("Job", {"conditions": [{"type": "FailureTarget", "status": "True"}]}, "Failed"),
        ("Job", {"conditions": [{"type": "Suspended", "status": "True"}]}, None),
        ("JobSet", {"conditions": [{"type": "Completed", "status": "True"}]}, "Succeeded"),
        ("JobSet", {"conditions": [{"type": "Failed", "status": "True"}]}, "Failed"),
        ("JobSet", {"conditions": [{"type": "Completed", "status": "False"}]}, None),
        ("TrainJob", {"conditions": [{"type": "Complete", "status": "True"}]}, "Succeeded"),
        ("TrainJob", {"conditions": [{"type": "Failed", "status": "True"}]}, "Failed"),
        ("PyTorchJob", {"conditions": [{"type": "Succeeded", "status": "True"}]}, "Succeeded"),
        ("PyTorchJob", {"conditions": [{"type": "Running", "status": "True"}]}, None),
        ("RayJob", {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, "Succeeded"),
        ("RayJob", {"jobDeploymentStatus": "Complete", "jobStatus": "FAILED"}, "Failed"),
        ("RayJob", {"jobDeploymentStatus": "Failed"}, "Failed"),
        ("RayJob", {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, None),
    ],
)
def test_outcome(kind: str, status: dict[str, Any], expected: str | None) -> None:
    assert adapter_for(API[kind], kind).outcome({"status": status}) == expected
    assert adapter_for(API[kind], kind).outcome({}) is None


def test_gpus_counts_requests_init_containers_other_resource_names_and_autoscaling() -> None:
    job = adapter_for("batch/v1", "Job")
    pod = {"containers": [{"resources": {"requests": {"amd.com/gpu": "2"}}}], "initContainers": [
        {"resources": {"limits": {"amd.com/gpu": 3}}}]}  # fmt: skip
    obj = {"spec": {"parallelism": 4, "completions": 2, "template": {"spec": pod}}}
    assert job.gpus(obj, ["amd.com/gpu"]) == 2 * 3 and job.gpus(obj) == 0
    ray = adapter_for("ray.io/v1", "RayJob")
    auto = copy.deepcopy(TEMPLATES["RayJob"])
    auto["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] = True
    auto["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] = 5
    assert ray.gpus(auto) == 5 * 2 * 4 + 1


def test_queue_name_is_the_kueue_label() -> None:
    assert adapter_for(API["JobSet"], "JobSet").queue_name(_build("JobSet")) == "lq"
    assert adapter_for("batch/v1", "Job").queue_name(_build("Job")) is None


def test_rayjob_on_an_existing_cluster_has_no_templates_but_still_starts() -> None:
    ray = adapter_for("ray.io/v1", "RayJob")
    obj = ray.build({"spec": {"clusterSelector": {"ray.io/cluster": "c"}}}, name="r", namespace="ml",
                    owner_uid="u", labels=OURS, suspended=True)  # fmt: skip
    assert ray.pod_templates(obj) == [] and ray.start_patches(obj, ZONE) == [{"spec": {"suspend": False}}]
