"""Bad GreenTrainingJob manifests are refused by the API server itself, at `kubectl apply`.

Every case is one manifest that `kubectl apply --server-side` must refuse (exit code != 0) with a
message naming the offending field, and that must leave nothing behind. The rules come from the CRD
generated out of greenjobs.api.models (OpenAPI schema, server-side field validation and CEL), so no
operator needs to run. A valid manifest built from the same base is accepted, so a refusal is never
caused by a broken base.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.kube import Cluster

pytestmark = pytest.mark.cluster


def _valid_spec() -> dict[str, Any]:
    return {
        "jobTemplate": {
            "metadata": {"labels": {"team": "nlp"}},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "train", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": 4}}}
                        ],
                    }
                }
            },
        },
        "timing": {"estimatedDuration": "6h", "maxDelay": "12h", "startWhenBelow": 120},
        "placement": {"zones": ["GB", "FR"]},
        "power": {
            "policy": "CarbonAware",
            "minCapWatts": 150,
            "maxCapWatts": 300,
            "lowGPerKWh": 100,
            "highGPerKWh": 300,
        },
        "budget": {"maxEnergyKWh": 500, "maxCO2eKg": 100, "action": "Warn"},
    }


Edit = Callable[[dict[str, Any]], None]
_JOBSET: dict[str, Any] = {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "spec": {"replicatedJobs": []}}


def _set(path: str, value: Any) -> Edit:
    """Set spec.<path> (dots) to value."""

    def edit(spec: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return edit


def _drop(path: str) -> Edit:
    def edit(spec: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = spec
        for key in parents:
            node = node[key]
        del node[leaf]

    return edit


def _all(*edits: Edit) -> Edit:
    def edit(spec: dict[str, Any]) -> None:
        for e in edits:
            e(spec)

    return edit


@dataclass(frozen=True)
class Case:
    id: str
    edit: Edit | None  # None: the manifest has no spec at all
    field: str  # what the error message must name


CASES = [
    # structure
    Case("no-spec", None, "spec: Required value"),
    Case("missing-jobTemplate", _drop("jobTemplate"), "exactly one of jobTemplate and workload must be set"),
    # spec.workload (the other kinds): one of the two, and only kinds with an adapter
    Case("jobTemplate-and-workload", _set("workload", _JOBSET), "exactly one of jobTemplate and workload must be set"),
    Case(
        "workload-unsupported-kind",
        _all(_drop("jobTemplate"), _set("workload", {**_JOBSET, "apiVersion": "kubeflow.org/v1", "kind": "MPIJob"})),
        "spec.workload.kind",
    ),
    Case(
        "workload-old-jobset-version",
        _all(_drop("jobTemplate"), _set("workload", {**_JOBSET, "apiVersion": "jobset.x-k8s.io/v1alpha1"})),
        "spec.workload.kind",
    ),
    Case(
        "workload-without-kind",
        _all(_drop("jobTemplate"), _set("workload", {"apiVersion": "ray.io/v1", "spec": {}})),
        "spec.workload.kind: Required value",
    ),
    Case("missing-jobTemplate.spec.template", _drop("jobTemplate.spec.template"), "spec.jobTemplate.spec.template"),
    Case("jobTemplate.spec-not-an-object", _set("jobTemplate.spec", "train please"), "spec.jobTemplate.spec"),
    Case("unknown-field-typo", _all(_drop("timing.maxDelay"), _set("timing.maxdelay", "12h")), "spec.timing.maxdelay"),
    Case("unknown-spec-field", _set("zones", ["GB"]), "spec.zones"),
    # timing
    Case("deadline-and-maxDelay", _set("timing.deadline", "2030-01-01T00:00:00Z"), "spec.timing.maxDelay"),
    Case("maxDelay-without-estimatedDuration", _drop("timing.estimatedDuration"), "spec.timing.estimatedDuration"),
    Case(
        "deadline-without-estimatedDuration",
        _all(
            _drop("timing.estimatedDuration"), _drop("timing.maxDelay"), _set("timing.deadline", "2030-01-01T00:00:00Z")
        ),
        "spec.timing.estimatedDuration",
    ),
    Case(
        "estimatedDuration-unparsable", _set("timing.estimatedDuration", "six hours"), "spec.timing.estimatedDuration"
    ),
    Case("estimatedDuration-zero", _set("timing.estimatedDuration", "0s"), "spec.timing.estimatedDuration"),
    Case("estimatedDuration-zero-iso", _set("timing.estimatedDuration", "PT0S"), "spec.timing.estimatedDuration"),
    Case("estimatedDuration-integer", _set("timing.estimatedDuration", 3600), "spec.timing.estimatedDuration"),
    Case("maxDelay-without-unit", _set("timing.maxDelay", "12"), "spec.timing.maxDelay"),
    Case("maxDelay-negative", _set("timing.maxDelay", "-1h"), "spec.timing.maxDelay"),
    Case(
        "deadline-not-a-time",
        _all(_drop("timing.maxDelay"), _set("timing.deadline", "tomorrow")),
        "spec.timing.deadline",
    ),
    Case(
        "deadline-without-time-of-day",
        _all(_drop("timing.maxDelay"), _set("timing.deadline", "2030-01-01")),
        "spec.timing.deadline",
    ),
    Case(
        "deadline-integer", _all(_drop("timing.maxDelay"), _set("timing.deadline", 1893456000)), "spec.timing.deadline"
    ),
    Case("startWhenBelow-negative", _set("timing.startWhenBelow", -5), "spec.timing.startWhenBelow"),
    Case("startWhenBelow-string", _set("timing.startWhenBelow", "low"), "spec.timing.startWhenBelow"),
    # placement
    Case("zones-duplicate", _set("placement.zones", ["GB", "FR", "GB"]), "spec.placement.zones"),
    Case("zone-name-with-space", _set("placement.zones", ["GB", "G B"]), "spec.placement.zones[1]"),
    Case("zone-name-too-long", _set("placement.zones", ["Z" * 64]), "spec.placement.zones[0]"),
    Case("zones-not-a-list", _set("placement.zones", "GB"), "spec.placement.zones"),
    # power
    Case("policy-unknown", _set("power.policy", "Eco"), "spec.power.policy"),
    Case("policy-wrong-case", _set("power", {"policy": "static", "capWatts": 250}), "spec.power.policy"),
    Case("Static-without-capWatts", _set("power", {"policy": "Static"}), "spec.power.capWatts"),
    Case("CarbonAware-without-caps", _set("power", {"policy": "CarbonAware"}), "spec.power.minCapWatts"),
    Case("CarbonAware-without-maxCapWatts", _drop("power.maxCapWatts"), "spec.power.minCapWatts"),
    Case("minCap-above-maxCap", _set("power.minCapWatts", 350), "spec.power.minCapWatts"),
    Case("low-equals-high", _set("power.lowGPerKWh", 300), "spec.power.lowGPerKWh"),
    Case(
        "low-above-high", _all(_set("power.lowGPerKWh", 400), _set("power.highGPerKWh", 200)), "spec.power.lowGPerKWh"
    ),
    Case("lowGPerKWh-negative", _set("power.lowGPerKWh", -1), "spec.power.lowGPerKWh"),
    Case("capWatts-zero", _set("power", {"policy": "Static", "capWatts": 0}), "spec.power.capWatts"),
    Case("capWatts-negative", _set("power", {"policy": "Static", "capWatts": -250}), "spec.power.capWatts"),
    Case("capWatts-huge", _set("power", {"policy": "Static", "capWatts": 100000}), "spec.power.capWatts"),
    Case("capWatts-fractional", _set("power", {"policy": "Static", "capWatts": 250.5}), "spec.power.capWatts"),
    Case("capWatts-with-unit", _set("power", {"policy": "Static", "capWatts": "250W"}), "spec.power.capWatts"),
    Case("maxCapWatts-huge", _set("power.maxCapWatts", 9999), "spec.power.maxCapWatts"),
    # budget
    Case("budget-action-unknown", _set("budget.action", "Kill"), "spec.budget.action"),
    Case("budget-energy-negative", _set("budget.maxEnergyKWh", -1), "spec.budget.maxEnergyKWh"),
    Case("budget-co2-negative", _set("budget.maxCO2eKg", -0.5), "spec.budget.maxCO2eKg"),
    Case("budget-energy-string", _set("budget.maxEnergyKWh", "lots"), "spec.budget.maxEnergyKWh"),
    Case("budget-not-an-object", _set("budget", ["Warn"]), "spec.budget"),
    # interruption and deadline-paced caps (whole-run plans)
    Case(
        "interruption-fields-without-resumable",
        _set("interruption", {"resumable": False, "resumeOverhead": "5m"}),
        "spec.interruption.resumable",
    ),
    Case(
        "resumable-without-slack",
        _all(_drop("timing.maxDelay"), _set("interruption", {"resumable": True})),
        "spec.interruption.resumable",
    ),
    Case(
        "resumeOverhead-unparsable",
        _set("interruption", {"resumable": True, "resumeOverhead": "soon"}),
        "spec.interruption.resumeOverhead",
    ),
    Case(
        "maxInterruptions-negative",
        _set("interruption", {"resumable": True, "maxInterruptions": -1}),
        "spec.interruption.maxInterruptions",
    ),
    Case("DeadlinePaced-without-caps", _set("power", {"policy": "DeadlinePaced"}), "spec.power.minCapWatts"),
    Case(
        "DeadlinePaced-without-slack",
        _all(
            _drop("timing.maxDelay"), _set("power", {"policy": "DeadlinePaced", "minCapWatts": 200, "maxCapWatts": 400})
        ),
        "spec.power.policy",
    ),
]


def _manifest(namespace: str, name: str, spec: dict[str, Any] | None) -> str:
    obj: dict[str, Any] = {
        "apiVersion": "greenjobs.dev/v1alpha1",
        "kind": "GreenTrainingJob",
        "metadata": {"name": name, "namespace": namespace},
    }
    if spec is not None:
        obj["spec"] = spec
    return json.dumps(obj)


@pytest.fixture(scope="module")
def bad_ns(cluster: Cluster) -> Iterator[str]:
    """One namespace for the whole module (a namespace per case would only add time)."""
    name = f"t-bad-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _apply(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any] | None) -> Any:
    return cluster.kubectl("apply", "--server-side", "-f", "-", input=_manifest(namespace, name, spec), check=False)


def test_the_valid_base_manifest_is_accepted(cluster: Cluster, bad_ns: str) -> None:
    proc = _apply(cluster, bad_ns, "valid", _valid_spec())
    assert proc.returncode == 0, proc.stderr
    stored = cluster.get_json("greentrainingjob", "valid", "-n", bad_ns)
    assert stored["spec"]["power"]["policy"] == "CarbonAware"


def test_a_workload_instead_of_a_job_template_is_accepted(cluster: Cluster, bad_ns: str) -> None:
    spec = _valid_spec()
    del spec["jobTemplate"]
    spec["workload"] = _JOBSET
    proc = _apply(cluster, bad_ns, "valid-workload", spec)
    assert proc.returncode == 0, proc.stderr
    assert cluster.get_json("greentrainingjob", "valid-workload", "-n", bad_ns)["spec"]["workload"]["kind"] == "JobSet"


def test_a_resumable_deadline_paced_job_is_accepted(cluster: Cluster, bad_ns: str) -> None:
    spec = _valid_spec()
    spec["interruption"] = {"resumable": True, "checkpointGracePeriod": "2m", "resumeOverhead": "5m",
                            "minRunDuration": "1h", "maxInterruptions": 10}  # fmt: skip
    spec["power"] = {"policy": "DeadlinePaced", "minCapWatts": 200, "maxCapWatts": 400}
    proc = _apply(cluster, bad_ns, "valid-whole-run", spec)
    assert proc.returncode == 0, proc.stderr
    stored = cluster.get_json("greentrainingjob", "valid-whole-run", "-n", bad_ns)["spec"]
    assert stored["interruption"]["maxInterruptions"] == 10 and stored["power"]["policy"] == "DeadlinePaced"


def test_there_are_at_least_25_cases() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_manifest_is_refused_naming_the_field(cluster: Cluster, bad_ns: str, case: Case) -> None:
    spec: dict[str, Any] | None = None
    if case.edit is not None:
        spec = copy.deepcopy(_valid_spec())
        case.edit(spec)
    name = f"bad-{case.id.lower().replace('.', '-')}"[:63]
    proc = _apply(cluster, bad_ns, name, spec)
    assert proc.returncode != 0, f"accepted:\n{proc.stdout}"
    assert case.field in proc.stderr, proc.stderr
    assert "not found" in cluster.kubectl("get", "greentrainingjob", name, "-n", bad_ns, check=False).stderr.lower()


def test_cel_messages_say_what_to_do(cluster: Cluster, bad_ns: str) -> None:
    """The cross-field rules answer with the sentence written for users, not only a rule dump."""
    spec = _valid_spec()
    spec["timing"]["deadline"] = "2030-01-01T00:00:00Z"
    proc = _apply(cluster, bad_ns, "both", spec)
    assert "spec.timing.maxDelay: Forbidden: deadline and maxDelay are mutually exclusive" in proc.stderr
    spec = _valid_spec()
    spec["power"]["minCapWatts"] = 350
    proc = _apply(cluster, bad_ns, "caps", spec)
    assert "minCapWatts must be less than or equal to maxCapWatts" in proc.stderr


def test_kubectl_explain_shows_field_descriptions(cluster: Cluster) -> None:
    out = " ".join(cluster.kubectl("explain", "greentrainingjob.spec.timing").stdout.split())  # unwrap
    assert "When the job may run" in out
    for field, words in [
        ("estimatedDuration", "Expected run time of the Job"),
        ("deadline", "Latest COMPLETION time"),
        ("maxDelay", "Mutually exclusive with deadline"),
        ("startWhenBelow", "start at once when the chosen zone"),
    ]:
        assert field in out
        assert words in out, f"no description of {field}:\n{out}"
    power = cluster.kubectl("explain", "greentrainingjob.spec.power.policy").stdout
    assert "CarbonAware" in power and "Static" in power


def test_a_name_too_long_for_its_job_is_refused_at_apply(cluster: Cluster, bad_ns: str) -> None:
    proc = _apply(cluster, bad_ns, "n" * 64, _valid_spec())
    assert proc.returncode != 0, proc.stdout
    assert "metadata.name may have at most 63 characters" in proc.stderr, proc.stderr
    assert _apply(cluster, bad_ns, "n" * 63, _valid_spec()).returncode == 0
