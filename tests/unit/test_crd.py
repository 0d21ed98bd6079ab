"""The CRD in crds/ is generated from the pydantic models; this fails when they drift."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from greenjobs.api.crd import build_crd, render_crd
from greenjobs.api.models import WORKLOAD_KINDS, GreenTrainingJobSpec
from greenjobs.workloads import SUPPORTED

REPO = Path(__file__).resolve().parents[2]


def test_crds_folder_matches_the_models() -> None:
    on_disk = (REPO / "crds" / "greentrainingjobs.yaml").read_text()
    assert on_disk == render_crd(), "crds/ drifted from greenjobs.api.models: run `make crd`"


def _walk(node: object, path: str = "") -> list[tuple[str, dict[str, object]]]:
    out: list[tuple[str, dict[str, object]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for k, v in node.items():
            out.extend(_walk(v, f"{path}.{k}"))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_walk(v, f"{path}[{i}]"))
    return out


def test_schema_is_structural() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        if "properties" in node:
            assert node.get("type") == "object", path
            assert "additionalProperties" not in node, path


def test_every_spec_field_is_described_for_kubectl_explain() -> None:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for section in ("timing", "placement", "power", "budget"):
        for name, field in spec["properties"][section]["properties"].items():
            assert field.get("description"), f"spec.{section}.{name} has no description"


def test_names_and_printer_columns_follow_the_api_contract() -> None:
    crd = yaml.safe_load(render_crd())
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["gtj", "gtjs"] and names["categories"] == ["greenjobs"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [(c["name"].upper(), c.get("priority", 0)) for c in version["additionalPrinterColumns"]]
    assert [n for n, p in columns if p == 0] == [
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
    assert [n for n, p in columns if p == 1] == [
        "DEADLINE",
        "JOB",
        "APPLIED-W",
        "GPU-KWH",
        "HOST-KWH",
        "FACILITY-KWH",
        "OPERATIONAL-G",
        "EMBODIED-G",
    ]
    paths = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    # CO2e-g and Energy-kWh are the totals; the wide columns are their parts.
    assert paths["CO2e-g"] == ".status.emissions.grams" and paths["Energy-kWh"] == ".status.energy.kWh"
    # -o wide shows the cap the GPUs really got beside the one asked for.
    assert paths["Applied-W"] == ".status.power.appliedCapWatts"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for name in (v for v in paths.values() if v.startswith(".status.")):
        node = {"properties": {"status": {"properties": status}}}
        for part in name.strip(".").split("."):
            node = node["properties"][part]
        assert node, name  # every printer column points at a field of the schema


def _spec_rules() -> list[dict[str, str]]:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules: list[dict[str, str]] = spec["x-kubernetes-validations"]
    return rules


def test_workload_is_an_alternative_to_job_template_with_a_cel_rule_for_exactly_one() -> None:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "jobTemplate" not in spec.get("required", [])
    workload = spec["properties"]["workload"]
    assert workload["required"] == ["apiVersion", "kind", "spec"]
    assert workload["properties"]["spec"]["x-kubernetes-preserve-unknown-fields"] is True
    assert next(r["rule"] for r in _spec_rules()) == "has(self.jobTemplate) != has(self.workload)"
    kind_rule = workload["x-kubernetes-validations"][0]
    assert kind_rule["fieldPath"] == ".kind" and "workload.kind" in kind_rule["message"]
    for api, kind in WORKLOAD_KINDS:  # every kind with an adapter is allowed by the CEL rule
        assert f"self.apiVersion == '{api}' && self.kind == '{kind}'" in kind_rule["rule"]
    assert set(WORKLOAD_KINDS) == set(SUPPORTED)


def test_models_refuse_both_or_neither_and_unsupported_kinds() -> None:
    job = {"spec": {"template": {"spec": {"containers": []}}}}
    js = {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "spec": {"replicatedJobs": []}}
    assert GreenTrainingJobSpec.model_validate({"workload": js}).workload is not None
    for bad in ({}, {"jobTemplate": job, "workload": js}):
        with pytest.raises(ValidationError, match="exactly one of jobTemplate and workload"):
            GreenTrainingJobSpec.model_validate(bad)
    with pytest.raises(ValidationError, match=r"workload\.kind: unsupported MPIJob"):
        GreenTrainingJobSpec.model_validate({"workload": {**js, "apiVersion": "kubeflow.org/v1", "kind": "MPIJob"}})
