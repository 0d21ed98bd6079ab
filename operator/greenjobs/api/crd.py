"""Generate the CustomResourceDefinition from the pydantic models.

Pydantic's JSON schema has `$ref`/`$defs`, `anyOf: [X, null]` for optionals, `title`s and
`additionalProperties` beside `properties`; a structural CRD schema allows none of these, so this
module rewrites it. `tests/unit/test_crd.py` fails when crds/ drifts from the models.
"""

from pathlib import Path
from typing import Any

import yaml

from . import constants as c
from .models import GreenTrainingJobSpec, GreenTrainingJobStatus

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Zone", "type": "string", "jsonPath": ".status.plan.zone"},
    {"name": "Start", "type": "string", "jsonPath": ".status.plan.scheduledStart"},
    # The cap asked for; -o wide adds the one the GPUs really got (the agents' report: lower when
    # the GPUs' limits clamp it).
    {"name": "Cap-W", "type": "integer", "jsonPath": ".status.power.targetCapWatts"},
    {"name": "Energy-kWh", "type": "number", "jsonPath": ".status.energy.kWh"},
    {"name": "CO2e-g", "type": "number", "jsonPath": ".status.emissions.grams"},
    {"name": "Saved-%", "type": "number", "jsonPath": ".status.plan.expectedSavingsPercent"},
    # Whole-run jobs: work done across segments, and runs started (first start + resumes).
    {"name": "Work-%", "type": "integer", "jsonPath": ".status.progress.percent"},
    {"name": "Runs", "type": "integer", "jsonPath": ".status.progress.segments"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Deadline", "type": "string", "jsonPath": ".status.plan.deadline", "priority": 1},
    {"name": "Job", "type": "string", "jsonPath": ".status.jobName", "priority": 1},
    {"name": "Applied-W", "type": "integer", "jsonPath": ".status.power.appliedCapWatts", "priority": 1},
    # The split behind Energy-kWh and CO2e-g (both totals), in -o wide.
    {"name": "GPU-kWh", "type": "number", "jsonPath": ".status.energy.gpuKWh", "priority": 1},
    {"name": "Host-kWh", "type": "number", "jsonPath": ".status.energy.hostKWh", "priority": 1},
    {"name": "Facility-kWh", "type": "number", "jsonPath": ".status.energy.facilityKWh", "priority": 1},
    {"name": "Operational-g", "type": "number", "jsonPath": ".status.emissions.operationalGrams", "priority": 1},
    {"name": "Embodied-g", "type": "number", "jsonPath": ".status.emissions.embodiedGrams", "priority": 1},
]

_DROP = {"title", "$defs"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return _structural({**variants[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "default" and value is None):
            continue
        if key == "additionalProperties" and (value is True or value is False):
            continue  # `true` is spelled x-kubernetes-preserve-unknown-fields; `false` is implied
        if key == "properties":
            out[key] = {name: _structural(v, defs) for name, v in value.items()}
        else:
            out[key] = _structural(value, defs)
    if out.get("x-kubernetes-preserve-unknown-fields") or "properties" in out or "additionalProperties" in out:
        out.setdefault("type", "object")
    return out


def schema_of(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    result: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    return result


def build_crd() -> dict[str, Any]:
    spec_schema = schema_of(GreenTrainingJobSpec)
    spec_schema["description"] = "What to run, when and where it may run, and how to cap its GPUs."
    status_schema = schema_of(GreenTrainingJobStatus)
    status_schema["description"] = "Written by the operator and, under energy.nodes, by the node agents."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": c.CRD_NAME, "labels": {"app.kubernetes.io/part-of": "greenjobs"}},
        "spec": {
            "group": c.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": c.KIND,
                "listKind": f"{c.KIND}List",
                "plural": c.PLURAL,
                "singular": c.SINGULAR,
                "shortNames": list(c.SHORT_NAMES),
                "categories": [c.CATEGORY],
            },
            "versions": [
                {
                    "name": c.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "description": (
                                "A training Job run in the cleanest grid window and zone before its deadline."
                            ),
                            "type": "object",
                            "required": ["spec"],
                            "x-kubernetes-validations": [
                                {
                                    # The owned Job has the same name, and a Job's name becomes a pod label
                                    # value (at most 63 characters): refuse what could never run.
                                    "rule": "self.metadata.name.size() <= 63",
                                    "message": "metadata.name may have at most 63 characters: the Job it owns"
                                    " carries the same name, which Kubernetes puts in a label",
                                    "reason": "FieldValueInvalid",
                                }
                            ],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER = "# Generated by `greenjobs crd` from greenjobs.api.models. Do not edit: run `make crd`.\n"


def render_crd() -> str:
    return HEADER + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


def write_crd(path: Path) -> None:
    path.write_text(render_crd())
