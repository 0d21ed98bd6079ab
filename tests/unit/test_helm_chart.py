"""The Helm chart, rendered by the real `helm` binary over a matrix of values and checked as objects.

Needs helm (built by `e2e/build.sh helm`); found through $GREENJOBS_BIN or ~/.cache/greenjobs/bin/*/.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from greenjobs.planning.settings import FleetSettings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "greenjobs"
NAMESPACE = "greenjobs-system"
RELEASE = "gj"


def _find_helm() -> Path | None:
    dirs = [os.environ["GREENJOBS_BIN"]] if os.environ.get("GREENJOBS_BIN") else []
    dirs += sorted(glob.glob(os.path.expanduser("~/.cache/greenjobs/bin/*")))
    for d in dirs:
        if (Path(d) / "helm").is_file() and os.access(Path(d) / "helm", os.X_OK):
            return Path(d) / "helm"
    return None


HELM = _find_helm()
needs_helm = pytest.mark.skipif(
    HELM is None, reason="helm is not built: run `e2e/build.sh helm` (or set GREENJOBS_BIN)"
)

# Values for each case of the matrix (merged over values.yaml, as `-f` would).
CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "sim": yaml.safe_load((CHART / "values-sim.yaml").read_text()),
    "leader": {"operator": {"replicas": 2}},
    "no-leader": {"operator": {"leaderElection": {"enabled": False}}},
    "electricitymaps": {
        "operator": {
            "config": {
                "providers": [
                    {"type": "electricitymaps", "apiKeySecret": {"name": "emaps-cred", "key": "auth-token"}},
                    {"type": "nationalgrid"},
                ]
            }
        }
    },
    "watttime": {
        "operator": {
            "config": {
                "providers": [
                    {
                        "type": "watttime",
                        "usernameSecret": {"name": "wt-login", "key": "user"},
                        "passwordSecret": {"name": "wt-pass", "key": "pw"},
                        "zones": {"US-CAL": "CAISO_NORTH"},
                    }
                ]
            }
        }
    },
    "carbonaware": {
        "operator": {
            "config": {
                "providers": [
                    {
                        "type": "carbonaware",
                        "url": "http://carbon-aware-api.tools:8080",
                        "timeoutSeconds": 5,
                    }
                ]
            }
        }
    },
    "file-configmap": {"operator": {"config": {"providers": [{"type": "file", "configMap": "grid.forecasts"}]}}},
    "servicemonitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "capping-off": {"agent": {"powerCapping": False}},
    "capping-on": {"agent": {"powerCapping": True, "runtimeClassName": "nvidia"}},
    "no-agent": {"agent": {"enabled": False}},
    "agent-namespace": {"agent": {"namespace": "greenjobs-agent"}},
    "zone-map": {
        "operator": {
            "config": {
                "zoneLabel": "topology.kubernetes.io/region",
                "zoneMap": {"europe-west2": "GB", "europe-west9": "FR"},
            }
        }
    },
    "no-policies": {"policies": {"enabled": False}, "aggregatedRoles": {"enabled": False}},
    "warn-only": {"policies": {"validationActions": ["Warn", "Audit"]}},
    "kueue": {"kueue": {"enabled": True}},
}
SECRET_CASES = ["electricitymaps", "watttime"]  # the Carbon Aware SDK WebAPI takes no key


def _helm(
    *args: str, values: dict[str, Any] | None = None, tmp: Path | None = None
) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    cmd = [str(HELM), *args]
    if values:
        assert tmp is not None
        f = tmp / "values.yaml"
        f.write_text(yaml.safe_dump(values))
        cmd += ["-f", str(f)]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)


@functools.cache
def _render_case(case: str) -> tuple[dict[str, Any], ...]:
    with tempfile.TemporaryDirectory() as d:
        out = _helm("template", RELEASE, str(CHART), "-n", NAMESPACE, values=CASES[case], tmp=Path(d))
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def render(case: str) -> list[dict[str, Any]]:
    return list(_render_case(case))


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    c: dict[str, Any] = containers[0]
    return c


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def operator_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    cm = one(docs, "ConfigMap", "-operator")
    cfg: dict[str, Any] = yaml.safe_load(cm["data"]["config.yaml"])
    return cfg


def rbac_triples(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in role["rules"]
        for g in rule.get("apiGroups", [])
        for r in rule.get("resources", [])
        for v in rule["verbs"]
    }


def walk(obj: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair anywhere in a nested object."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)


AGENT_CASES = sorted(c for c in CASES if c != "no-agent")


def _effective(case: str, *path: str) -> Any:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for values in (CASES[case], defaults):
        node: Any = values
        for key in path:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            return node
    raise KeyError(path)


# --- lint and schema ------------------------------------------------------------------------


@needs_helm
@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_helm_lint(case: str, strict: bool, tmp_path: Path) -> None:
    args = ["lint", str(CHART), "-n", NAMESPACE] + (["--strict"] if strict else [])
    out = _helm(*args, values=CASES[case], tmp=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "replicas-string": ({"operator": {"replicas": "two"}}, "/operator/replicas"),
    "unknown-backend": ({"agent": {"gpuBackend": "cuda"}}, "/agent/gpuBackend"),
    "typo-key": ({"agent": {"powerCaping": True}}, "powerCaping"),
    "bad-duration": ({"operator": {"config": {"replanInterval": "soon"}}}, "/operator/config/replanInterval"),
    "interval-with-unit": ({"agent": {"reportIntervalSeconds": "15s"}}, "/agent/reportIntervalSeconds"),
    "emaps-without-key": ({"operator": {"config": {"providers": [{"type": "electricitymaps"}]}}}, "apiKey"),
    "key-for-keyless-provider": (
        {
            "operator": {
                "config": {
                    "providers": [
                        {
                            "type": "carbonaware",
                            "url": "http://x:8080",
                            "apiKeySecret": {"name": "a", "key": "b"},
                        }
                    ]
                }
            }
        },
        "/operator/config/providers/0",
    ),
    "literal-api-key": (
        {"operator": {"config": {"providers": [{"type": "electricitymaps", "apiKey": "s3cr3t"}]}}},
        "apiKey",
    ),
    "secret-ref-without-key": (
        {"operator": {"config": {"providers": [{"type": "electricitymaps", "apiKeySecret": {"name": "x"}}]}}},
        "apiKeySecret",
    ),
    "unknown-provider": ({"operator": {"config": {"providers": [{"type": "weather"}]}}}, "/type"),
    # The API server refuses a binding that both denies and warns.
    "deny-and-warn": ({"policies": {"validationActions": ["Deny", "Warn"]}}, "/policies/validationActions"),
    "unknown-action": ({"policies": {"validationActions": ["Block"]}}, "/policies/validationActions/0"),
    "bad-agent-namespace": ({"agent": {"namespace": "Agents!"}}, "/agent/namespace"),
}


@needs_helm
@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_refuses_bad_values(case: str, tmp_path: Path) -> None:
    values, where = BAD_VALUES[case]
    out = _helm("template", RELEASE, str(CHART), values=values, tmp=tmp_path)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr
    assert where in out.stderr
    # A refused literal key is not echoed back in the error either.
    assert "s3cr3t" not in out.stderr


def test_schema_is_draft07_and_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


def test_the_charts_fleet_settings_are_the_operators() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    fleet = schema["properties"]["operator"]["properties"]["config"]["properties"]["fleet"]["properties"]
    assert set(fleet) == {f.alias or name for name, f in FleetSettings.model_fields.items()}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert FleetSettings.parse(values["operator"]["config"]["fleet"]) == FleetSettings.parse({})


@needs_helm
def test_two_providers_of_one_type_need_distinct_names(tmp_path: Path) -> None:
    ref = {"name": "a", "key": "k"}
    twins = [
        {"type": "electricitymaps", "apiKeySecret": ref},
        {"type": "electricitymaps", "apiKeySecret": ref},
    ]
    out = _helm("template", RELEASE, str(CHART), values={"operator": {"config": {"providers": twins}}}, tmp=tmp_path)
    assert out.returncode != 0
    assert "mount paths would clash" in out.stderr

    named = [{**twins[0], "name": "emaps-eu"}, {**twins[1], "name": "emaps-us"}]
    out = _helm("template", RELEASE, str(CHART), values={"operator": {"config": {"providers": named}}}, tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    files = [p["apiKeyFile"] for p in operator_config(docs)["providers"]]
    assert files == [
        "/var/run/secrets/greenjobs/emaps-eu/apiKey",
        "/var/run/secrets/greenjobs/emaps-us/apiKey",
    ]
    mounts = {m["mountPath"] for m in container(one(docs, "Deployment", "-operator"))["volumeMounts"]}
    assert {str(Path(f).parent) for f in files} <= mounts


# --- CRDs -----------------------------------------------------------------------------------


def test_chart_crd_is_the_generated_crd() -> None:
    assert (CHART / "crds" / "greentrainingjobs.yaml").read_bytes() == (
        REPO / "crds" / "greentrainingjobs.yaml"
    ).read_bytes(), "run: cp crds/greentrainingjobs.yaml helm/greenjobs/crds/"


def test_no_kopf_peering_crds_are_needed() -> None:
    # Leader election uses a coordination.k8s.io Lease: the chart ships no CRD of its own for it.
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == ["greentrainingjobs.yaml"]


# --- RBAC -----------------------------------------------------------------------------------


@needs_helm
@pytest.mark.parametrize("case", sorted(CASES))
def test_no_rbac_wildcards_and_no_secret_access(case: str) -> None:
    roles = [d for d in render(case) if d["kind"] in ("ClusterRole", "Role")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert not any("*" in item for item in rule.get(field, [])), (role["metadata"]["name"], rule)
        # Provider keys arrive as mounted files: nothing needs to read Secrets through the API.
        assert not any(r == "secrets" for _, r, _ in rbac_triples(role))


# What the operator calls (controller/kube.py, handlers.py, main.py, and kopf under them); nothing else.
OPERATOR_RULES = {
    *{("greenjobs.dev", "greentrainingjobs", v) for v in ("get", "list", "watch", "patch")},
    *{("greenjobs.dev", "greentrainingjobs/status", v) for v in ("get", "patch")},
    ("greenjobs.dev", "greentrainingjobs/finalizers", "update"),
    *{
        (g, r, v)
        for g, r in [
            ("batch", "jobs"),
            ("jobset.x-k8s.io", "jobsets"),
            ("trainer.kubeflow.org", "trainjobs"),
            ("kubeflow.org", "pytorchjobs"),
            ("ray.io", "rayjobs"),
        ]
        for v in ("get", "list", "watch", "create", "patch", "delete")
    },
    *{("kueue.x-k8s.io", "workloads", v) for v in ("list", "patch")},
    *{("", "nodes", v) for v in ("get", "list", "watch")},
    *{("", "pods", v) for v in ("get", "list", "watch")},
    ("", "events", "create"),
    *{("", "namespaces", v) for v in ("list", "watch")},
    *{("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")},
}
LEASE_RULES = {("coordination.k8s.io", "leases", v) for v in ("create", "get", "update")}
AGENT_RULES = {
    *{("", "pods", v) for v in ("get", "list", "watch")},
    *{("greenjobs.dev", "greentrainingjobs", v) for v in ("get", "list", "watch")},
    ("greenjobs.dev", "greentrainingjobs/status", "patch"),
}


@needs_helm
@pytest.mark.parametrize("case", ["defaults", "leader", "no-leader"])
def test_operator_rbac_is_exactly_what_it_needs(case: str) -> None:
    docs = render(case)
    assert rbac_triples(one(docs, "ClusterRole", "-operator")) == OPERATOR_RULES
    roles = [d for d in docs if d["kind"] in ("Role", "RoleBinding")]
    if case == "no-leader":
        # No namespaced Role at all: forecast ConfigMaps are mounted files, not API reads.
        assert not roles
    else:
        role = one(docs, "Role", "-operator")
        assert role["metadata"]["namespace"] == NAMESPACE
        assert rbac_triples(role) == LEASE_RULES
        named = [r for r in role["rules"] if r.get("resourceNames")]
        assert named == [
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": [f"{RELEASE}-greenjobs-operator"],
                "verbs": ["get", "update"],
            }
        ]
        rb = one(docs, "RoleBinding", "-operator")
        assert rb["roleRef"]["name"] == role["metadata"]["name"]
    sa = one(docs, "ServiceAccount", "-operator")["metadata"]["name"]
    binding = one(docs, "ClusterRoleBinding", "-operator")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    deploy = one(docs, "Deployment", "-operator")
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == sa


KUEUE_CHECK_RULES = {
    *{("kueue.x-k8s.io", "workloads", v) for v in ("get", "list", "watch", "patch")},
    *{("kueue.x-k8s.io", "workloads/status", v) for v in ("get", "patch")},
    *{("kueue.x-k8s.io", "admissionchecks", v) for v in ("get", "list", "watch")},
    *{("kueue.x-k8s.io", "admissionchecks/status", v) for v in ("get", "patch")},
    *{
        ("kueue.x-k8s.io", r, v)
        for r in ("clusterqueues", "localqueues", "resourceflavors")
        for v in ("get", "list", "watch")
    },
    ("batch", "jobs", "get"),
    ("jobset.x-k8s.io", "jobsets", "get"),
    ("trainer.kubeflow.org", "trainjobs", "get"),
    ("kubeflow.org", "pytorchjobs", "get"),
    ("ray.io", "rayjobs", "get"),
    *{("", "nodes", v) for v in ("list", "watch")},
    *{(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")},
    *{("", "namespaces", v) for v in ("list", "watch")},
    *{("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")},
}  # fmt: skip


@needs_helm
def test_kueue_mode_renders_the_admission_check_and_a_least_privilege_controller() -> None:
    assert not [d for d in render("defaults") if "kueue" in d["metadata"]["name"] or d["kind"] == "AdmissionCheck"]
    docs = render("kueue")
    check = one(docs, "AdmissionCheck")
    assert check["apiVersion"] == "kueue.x-k8s.io/v1beta2"
    assert check["spec"] == {"controllerName": "greenjobs.dev/carbon"}
    assert rbac_triples(one(docs, "ClusterRole", "-kueue-check")) == KUEUE_CHECK_RULES
    deploy = one(docs, "Deployment", "-kueue-check")
    c = container(deploy)
    assert c["command"] == ["greenjobs", "kueue-check"]
    assert env_of(c)["GREENJOBS_CONFIG"]["value"] == "/etc/greenjobs/config.yaml"
    sa = one(docs, "ServiceAccount", "-kueue-check")["metadata"]["name"]
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == sa
    assert one(docs, "ClusterRoleBinding", "-kueue-check")["subjects"][0]["name"] == sa


@needs_helm
def test_agent_rbac_is_exactly_what_it_needs() -> None:
    docs = render("defaults")
    assert rbac_triples(one(docs, "ClusterRole", "-agent")) == AGENT_RULES
    sa = one(docs, "ServiceAccount", "-agent")["metadata"]["name"]
    assert one(docs, "ClusterRoleBinding", "-agent")["subjects"] == [
        {"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}
    ]
    assert one(docs, "DaemonSet", "-agent")["spec"]["template"]["spec"]["serviceAccountName"] == sa


@needs_helm
def test_agent_disabled_renders_no_agent_objects() -> None:
    docs = render("no-agent")
    assert not [d for d in docs if d["metadata"]["name"].endswith(("-agent", "-agent-metrics"))]
    one(docs, "Deployment", "-operator")


@needs_helm
def test_agent_can_live_in_a_namespace_of_its_own() -> None:
    """agent.namespace moves every agent object, so the operator's namespace can enforce Pod Security
    `restricted` while the agent's is `privileged` (docs/security.md)."""
    docs = render("agent-namespace")
    agent_objs = [
        d for d in docs if d["metadata"]["name"].endswith(("-agent", "-agent-metrics")) and "namespace" in d["metadata"]
    ]
    assert {d["kind"] for d in agent_objs} == {"ServiceAccount", "DaemonSet", "Service"}
    assert {d["metadata"]["namespace"] for d in agent_objs} == {"greenjobs-agent"}
    sa = one(docs, "ServiceAccount", "-agent")["metadata"]["name"]
    assert one(docs, "ClusterRoleBinding", "-agent")["subjects"] == [
        {"kind": "ServiceAccount", "name": sa, "namespace": "greenjobs-agent"}
    ]
    others = [d for d in docs if "namespace" in d["metadata"] and d not in agent_objs]
    assert others and {d["metadata"]["namespace"] for d in others} == {NAMESPACE}
    policy = one(docs, "ValidatingAdmissionPolicy", "-agent-own-node")
    (cond,) = policy["spec"]["matchConditions"]
    assert f"'system:serviceaccount:greenjobs-agent:{sa}'" in cond["expression"]


# --- admission policies and aggregated roles ------------------------------------------------

POLICIES = ("-workload-rights", "-placement", "-settled-label", "-agent-own-node")


def _policy(docs: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    return one(docs, "ValidatingAdmissionPolicy", suffix)


def _variables(policy: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["expression"] for v in policy["spec"]["variables"]}


@needs_helm
@pytest.mark.parametrize("case", ["defaults", "sim", "warn-only"])
def test_every_policy_is_bound_and_fails_closed(case: str) -> None:
    docs = render(case)
    actions = _effective(case, "policies", "validationActions")
    for suffix in POLICIES:
        policy = _policy(docs, suffix)
        assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert policy["spec"]["failurePolicy"] == "Fail"  # a broken expression refuses, never waves through
        binding = one(docs, "ValidatingAdmissionPolicyBinding", suffix)
        assert binding["spec"]["policyName"] == policy["metadata"]["name"]
        assert binding["spec"]["validationActions"] == actions
        for rule in policy["spec"]["matchConstraints"]["resourceRules"]:
            assert rule["apiGroups"] == ["greenjobs.dev"]
            assert set(rule["resources"]) <= {"greentrainingjobs", "greentrainingjobs/status"}
        for v in policy["spec"]["validations"]:
            # Every refusal says what is wrong: a message naming the field, and why.
            assert v.get("messageExpression") or v.get("message")
            assert v["reason"] in ("Forbidden", "Invalid")


@needs_helm
def test_policies_key_on_the_charts_own_service_accounts() -> None:
    docs = render("defaults")
    operator_sa = one(docs, "ServiceAccount", "-operator")["metadata"]["name"]
    agent_sa = one(docs, "ServiceAccount", "-agent")["metadata"]["name"]
    rights = _policy(docs, "-workload-rights")["spec"]
    conds = {c["name"]: c["expression"] for c in rights["matchConditions"]}
    assert (
        conds["not-the-operator"] == f"request.userInfo.username != 'system:serviceaccount:{NAMESPACE}:{operator_sa}'"
    )
    assert "request.operation == 'CREATE' || object.spec != oldObject.spec" in conds.values()
    assert rights["matchConstraints"]["resourceRules"][0]["operations"] == ["CREATE", "UPDATE"]
    agent = _policy(docs, "-agent-own-node")["spec"]
    (cond,) = agent["matchConditions"]
    assert cond["expression"] == f"request.userInfo.username == 'system:serviceaccount:{NAMESPACE}:{agent_sa}'"
    assert set(agent["matchConstraints"]["resourceRules"][0]["resources"]) == {
        "greentrainingjobs",
        "greentrainingjobs/status",
    }
    assert "authentication.kubernetes.io/node-name" in _variables(_policy(docs, "-agent-own-node"))["nodeNames"]


@needs_helm
def test_only_the_operator_may_touch_the_settled_label_and_none_is_created_settled() -> None:
    docs = render("defaults")
    operator_sa = one(docs, "ServiceAccount", "-operator")["metadata"]["name"]
    spec = _policy(docs, "-settled-label")["spec"]
    (cond,) = spec["matchConditions"]
    assert cond["expression"] == f"request.userInfo.username != 'system:serviceaccount:{NAMESPACE}:{operator_sa}'"
    assert spec["matchConstraints"]["resourceRules"][0]["operations"] == ["CREATE", "UPDATE"]
    variables = _variables(_policy(docs, "-settled-label"))
    assert "'greenjobs.dev/settled'" in variables["new"] and "oldObject" in variables["old"]
    rules = [v["expression"] for v in spec["validations"]]
    assert rules == [
        "request.operation != 'CREATE' || variables.new != 'true'",
        "request.operation != 'UPDATE' || variables.new == variables.old",
    ]


@needs_helm
def test_workload_rights_cover_every_workload_kind() -> None:
    variables = _variables(_policy(render("defaults"), "-workload-rights"))
    for kind, group, resource in (
        ("Job", "batch", "jobs"),
        ("JobSet", "jobset.x-k8s.io", "jobsets"),
        ("TrainJob", "trainer.kubeflow.org", "trainjobs"),
        ("PyTorchJob", "kubeflow.org", "pytorchjobs"),
        ("RayJob", "ray.io", "rayjobs"),
    ):
        assert f"'{kind}': '{group}'" in variables["groups"]
        assert f"'{kind}': '{resource}'" in variables["resources"]


@needs_helm
@pytest.mark.parametrize("case", ["defaults", "zone-map"])
def test_placement_policy_uses_the_configured_zone_label_and_map(case: str) -> None:
    variables = _variables(_policy(render(case), "-placement"))
    label = _effective(case, "operator", "config", "zoneLabel")
    assert json.loads(variables["zoneLabel"]) == label
    assert json.loads(variables["zoneMap"]) == _effective(case, "operator", "config", "zoneMap")
    for path in ("jobTemplate.spec.template.spec", "replicatedJobs", "pytorchReplicaSpecs", "rayClusterSpec"):
        assert path in variables["templates"]


@needs_helm
def test_no_agent_no_agent_policy_and_policies_can_be_left_out() -> None:
    kinds = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    names = {d["metadata"]["name"] for d in render("no-agent") if d["kind"] in kinds}
    assert names == {f"{RELEASE}-greenjobs{s}" for s in POLICIES[:3]}
    off = render("no-policies")
    assert not [d for d in off if d["kind"] in kinds or d["metadata"]["name"].endswith(("-view", "-edit"))]


@needs_helm
def test_aggregated_roles_fold_gtj_rights_into_view_edit_admin() -> None:
    docs = render("defaults")
    view, edit = one(docs, "ClusterRole", "-view"), one(docs, "ClusterRole", "-edit")
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k for k in view["metadata"]["labels"] if k.startswith(aggregate)} == {aggregate + "view"}
    assert {k for k in edit["metadata"]["labels"] if k.startswith(aggregate)} == {
        aggregate + "edit",
        aggregate + "admin",
    }
    read = {"get", "list", "watch"}
    assert rbac_triples(view) == {
        ("greenjobs.dev", r, v) for r in ("greentrainingjobs", "greentrainingjobs/status") for v in read
    }
    write = {"create", "update", "patch", "delete", "deletecollection"}
    assert rbac_triples(edit) == {
        *{("greenjobs.dev", "greentrainingjobs", v) for v in read | write},
        *{("greenjobs.dev", "greentrainingjobs/status", v) for v in read},  # status stays the operator's
    }


@needs_helm
def test_kubectl_manifest_is_the_rendered_chart() -> None:
    assert HELM is not None
    out = subprocess.run(
        [str(REPO / "deploy" / "render.sh")],
        env={**os.environ, "HELM": str(HELM)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout == (REPO / "deploy" / "policies.yaml").read_text(), "run: deploy/render.sh > deploy/policies.yaml"
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert sorted(d["kind"] for d in docs) == sorted(
        ["ClusterRole"] * 2 + ["ValidatingAdmissionPolicy"] * 4 + ["ValidatingAdmissionPolicyBinding"] * 4
    )
    assert not [d for d in docs if "Helm" in json.dumps(d)]  # no Helm labels where Helm is not used


# --- the operator Deployment ----------------------------------------------------------------


@needs_helm
@pytest.mark.parametrize("case", sorted(CASES))
def test_operator_pod_is_locked_down(case: str) -> None:
    deploy = one(render(case), "Deployment", "-operator")
    pod = deploy["spec"]["template"]["spec"]
    c = container(deploy)
    sc = c["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged", False) is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert not any(v.get("hostPath") for v in pod["volumes"])


@needs_helm
def test_operator_deployment_defaults() -> None:
    docs = render("defaults")
    deploy = one(docs, "Deployment", "-operator")
    c = container(deploy)
    assert deploy["spec"]["replicas"] == 1
    assert c["image"] == "ghcr.io/greenjobs/greenjobs-operator:0.1.0"
    assert c["command"] == ["greenjobs", "operator"]
    env = env_of(c)
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # Leader election is on by default, so a `helm upgrade`'s new pod waits for the old one's Lease.
    assert env["GREENJOBS_LEASE"]["value"] == f"{RELEASE}-greenjobs-operator"
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"

    # The config file the env names is the one the ConfigMap volume provides.
    config_path = Path(env["GREENJOBS_CONFIG"]["value"])
    assert config_path == Path("/etc/greenjobs/config.yaml")
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    volume = next(v for v in deploy["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    cm = one(docs, "ConfigMap", "-operator")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert config_path.name in cm["data"]

    cfg = operator_config(docs)
    assert cfg["providers"] == [{"type": "nationalgrid"}]
    assert cfg["zoneLabel"] == "greenjobs.dev/grid-zone"
    assert cfg["zoneMap"] == {}
    assert cfg["metricsPort"] == 8080
    assert {"forecastCacheTTL", "replanInterval", "powerInterval", "tickSeconds"} <= set(cfg)

    # Probes hit kopf's health endpoint on the port the --liveness flag opens.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == 8080
    assert c["args"] == [f"--liveness=http://0.0.0.0:{ports['health']}/healthz"]
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "health"}


@needs_helm
def test_config_change_rolls_the_operator_pods() -> None:
    def checksum(case: str) -> str:
        deploy = one(render(case), "Deployment", "-operator")
        return str(deploy["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum("defaults") == checksum("capping-off")  # agent values don't touch the config
    assert checksum("defaults") != checksum("electricitymaps")


@needs_helm
def test_leader_election_with_two_replicas() -> None:
    docs = render("leader")
    deploy = one(docs, "Deployment", "-operator")
    assert deploy["spec"]["replicas"] == 2
    env = env_of(container(deploy))
    assert env["GREENJOBS_LEASE"]["value"] == f"{RELEASE}-greenjobs-operator"
    assert env["GREENJOBS_LEASE_DURATION"]["value"] == "15"
    assert env["GREENJOBS_LEASE_RENEW_DEADLINE"]["value"] == "10"  # client-go's: less than the duration
    assert env["GREENJOBS_LEASE_RETRY_PERIOD"]["value"] == "2"
    # Each replica is named in the Lease by its pod name.
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


@needs_helm
def test_without_leader_election_the_old_operator_stops_before_the_new_one_starts() -> None:
    deploy = one(render("no-leader"), "Deployment", "-operator")
    assert deploy["spec"]["strategy"]["type"] == "Recreate"
    assert "GREENJOBS_LEASE" not in env_of(container(deploy))


@needs_helm
def test_a_renew_deadline_not_below_the_lease_duration_is_refused(tmp_path: Path) -> None:
    values = {"operator": {"leaderElection": {"leaseDurationSeconds": 10, "renewDeadlineSeconds": 10}}}
    out = _helm("template", "r", str(CHART), values=values, tmp=tmp_path)
    assert out.returncode != 0 and "renewDeadlineSeconds must be less than leaseDurationSeconds" in out.stderr


@needs_helm
@pytest.mark.parametrize("case", SECRET_CASES)
def test_provider_keys_come_from_existing_secrets_as_files(case: str) -> None:
    docs = render(case)
    provider_values = CASES[case]["operator"]["config"]["providers"][0]
    refs = {k.removesuffix("Secret"): v for k, v in provider_values.items() if k.endswith("Secret")}
    assert refs

    # The chart never creates a Secret, and no env var carries a literal credential.
    assert not [d for d in docs if d["kind"] == "Secret"]
    deploy = one(docs, "Deployment", "-operator")
    c = container(deploy)
    for e in c["env"]:
        assert not re.search(r"KEY|TOKEN|PASSWORD|USERNAME", e["name"]), e

    # Each <field>Secret becomes a projected secret volume item, mounted read-only, and the
    # operator's config names exactly that file as <field>File.
    cfg = next(p for p in operator_config(docs)["providers"] if p["type"] == provider_values["type"])
    volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    for field, ref in refs.items():
        path = Path(cfg[f"{field}File"])
        assert path.parent == Path("/var/run/secrets/greenjobs") / provider_values["type"]
        mount = next(m for m in mounts.values() if m["mountPath"] == str(path.parent))
        assert mount["readOnly"] is True
        projected = volumes[mount["name"]]["projected"]
        assert projected["defaultMode"] == 0o440
        items = [(s["secret"]["name"], i["key"], i["path"]) for s in projected["sources"] for i in s["secret"]["items"]]
        assert (ref["name"], ref["key"], path.name) in items
        assert f"{field}Secret" not in cfg
    # Other provider settings pass through untouched.
    for k, v in provider_values.items():
        if not k.endswith("Secret"):
            assert cfg[k] == v
    assert not any(k in ("apiKey", "password", "username", "token") for k, _ in walk(docs))


@needs_helm
def test_file_provider_mounts_the_forecast_configmap() -> None:
    docs = render("file-configmap")
    cfg = operator_config(docs)["providers"][0]
    assert cfg == {"type": "file", "path": "/var/run/greenjobs/forecasts/grid.forecasts"}
    deploy = one(docs, "Deployment", "-operator")
    mount = next(m for m in container(deploy)["volumeMounts"] if m["mountPath"] == cfg["path"])
    volume = next(v for v in deploy["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "grid.forecasts"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", volume["name"])  # a valid volume name


@needs_helm
@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_config_is_accepted_by_the_operator(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from greenjobs.config import load_config

    for name in list(os.environ):
        if name.startswith("GREENJOBS_"):
            monkeypatch.delenv(name)
    docs = render(case)
    f = tmp_path / "config.yaml"
    f.write_text(one(docs, "ConfigMap", "-operator")["data"]["config.yaml"])
    config = load_config(f)
    values = CASES[case].get("operator", {}).get("config", {})
    expected_types = [p["type"] for p in values.get("providers", [{"type": "nationalgrid"}])]
    assert [p.type for p in config.providers] == expected_types
    assert config.metrics_port == _effective(case, "operator", "metricsPort")
    assert config.zone_label == _effective(case, "operator", "config", "zoneLabel")
    assert config.replan_interval.total_seconds() > 0


@needs_helm
@pytest.mark.parametrize("case", AGENT_CASES)
def test_rendered_agent_env_is_accepted_by_the_agent(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from greenjobs_agent.main import AgentSettings

    for name in list(os.environ):
        if name.startswith("GREENJOBS_") or name == "NODE_NAME":
            monkeypatch.delenv(name)
    for name, e in env_of(container(one(render(case), "DaemonSet", "-agent"))).items():
        monkeypatch.setenv(name, e.get("value", f"from-{name.lower()}"))
    settings = AgentSettings()
    assert settings.node_name == "from-node_name"
    assert settings.gpu_backend == _effective(case, "agent", "gpuBackend")
    assert settings.podresources == _effective(case, "agent", "podResources")
    assert settings.report_interval == _effective(case, "agent", "reportIntervalSeconds")
    assert settings.sample_interval == _effective(case, "agent", "sampleIntervalSeconds")
    assert settings.metrics_port == 9102
    assert str(settings.state_dir) == "/var/lib/greenjobs"


# --- the agent DaemonSet --------------------------------------------------------------------


@needs_helm
@pytest.mark.parametrize("case", AGENT_CASES)
def test_agent_is_root_but_not_privileged(case: str) -> None:
    ds = one(render(case), "DaemonSet", "-agent")
    pod = ds["spec"]["template"]["spec"]
    sc = container(ds)["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsUser"] == 0
    capping = _effective(case, "agent", "powerCapping")
    # The API server refuses CAP_SYS_ADMIN spelled with its prefix beside allowPrivilegeEscalation=false.
    assert sc["capabilities"].get("add", []) == (["SYS_ADMIN"] if capping else [])
    for host_ns in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host_ns, False)


@needs_helm
@pytest.mark.parametrize("case", AGENT_CASES)
def test_agent_host_paths_are_exactly_pod_resources_read_only_and_state(case: str) -> None:
    ds = one(render(case), "DaemonSet", "-agent")
    host = {v["name"]: v["hostPath"]["path"] for v in ds["spec"]["template"]["spec"]["volumes"] if "hostPath" in v}
    assert sorted(host.values()) == ["/var/lib/greenjobs", "/var/lib/kubelet/pod-resources"]
    mounts = {m["name"]: m for m in container(ds)["volumeMounts"]}
    by_path = {p: n for n, p in host.items()}
    assert mounts[by_path["/var/lib/kubelet/pod-resources"]]["readOnly"] is True
    assert not mounts[by_path["/var/lib/greenjobs"]].get("readOnly", False)
    env = env_of(container(ds))
    assert Path(env["GREENJOBS_PODRESOURCES_SOCKET"]["value"]).parent == Path(
        mounts[by_path["/var/lib/kubelet/pod-resources"]]["mountPath"]
    )
    assert env["GREENJOBS_STATE_DIR"]["value"] == mounts[by_path["/var/lib/greenjobs"]]["mountPath"]


@needs_helm
def test_agent_defaults_target_gpu_nodes_with_nvml() -> None:
    docs = render("defaults")
    ds = one(docs, "DaemonSet", "-agent")
    pod = ds["spec"]["template"]["spec"]
    c = container(ds)
    assert c["command"] == ["greenjobs", "agent"]
    assert c["image"] == "ghcr.io/greenjobs/greenjobs-agent:0.1.0"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "runtimeClassName" not in pod
    env = env_of(c)
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["GREENJOBS_GPU_BACKEND"]["value"] == "nvml"
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"
    assert env["GREENJOBS_METRICS_PORT"]["value"] == "9102"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 9102}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


@needs_helm
def test_runtime_class_is_optional() -> None:
    pod = one(render("capping-on"), "DaemonSet", "-agent")["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"


@needs_helm
def test_sim_values_replay_the_embedded_traces() -> None:
    docs = render("sim")
    ds = one(docs, "DaemonSet", "-agent")
    env = env_of(container(ds))
    assert env["GREENJOBS_GPU_BACKEND"]["value"] == "simulated"
    assert env["GREENJOBS_PODRESOURCES"]["value"] == "simulated"
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    assert "add" not in container(ds)["securityContext"]["capabilities"]
    (replay,) = operator_config(docs)["providers"]
    assert replay["type"] == "replay"
    assert set(replay["traces"]) == {"GB", "FR"}
    # The operator image links greenjobs/data to /app/data; the files must be package data.
    for path in replay["traces"].values():
        assert Path(path).parent == Path("/app/data")
        assert (REPO / "operator" / "greenjobs" / "data" / Path(path).name).is_file(), path
    dockerfile = (REPO / "operator" / "Dockerfile").read_text()
    assert "/app/data" in dockerfile


# --- Services and ServiceMonitors -----------------------------------------------------------


@needs_helm
@pytest.mark.parametrize("case", ["defaults", "servicemonitor"])
def test_metrics_services_select_the_pods_and_their_ports(case: str) -> None:
    docs = render(case)
    workloads = {"operator": one(docs, "Deployment", "-operator"), "agent": one(docs, "DaemonSet", "-agent")}
    for component, workload in workloads.items():
        svc = one(docs, "Service", f"-{component}-metrics")
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        (port,) = svc["spec"]["ports"]
        assert port["name"] == "metrics"
        container_ports = {p["name"]: p["containerPort"] for p in container(workload)["ports"]}
        assert port["port"] == container_ports[port["targetPort"]]
    assert {
        one(docs, "Service", "-operator-metrics")["spec"]["ports"][0]["port"],
        one(docs, "Service", "-agent-metrics")["spec"]["ports"][0]["port"],
    } == {8080, 9102}

    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    if case == "defaults":
        assert monitors == []
        return
    assert len(monitors) == 2
    services = [d for d in docs if d["kind"] == "Service"]
    for sm in monitors:
        assert sm["metadata"]["labels"]["release"] == "prom"
        matched = [
            s for s in services if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert len(matched) == 1
        assert sm["spec"]["endpoints"][0]["port"] == matched[0]["spec"]["ports"][0]["name"]


@needs_helm
@pytest.mark.parametrize("case", sorted(CASES))
def test_standard_labels_everywhere(case: str) -> None:
    for d in render(case):
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "greenjobs"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"


# --- Grafana dashboard ----------------------------------------------------------------------

METRICS = [
    "greenjobs_jobs",
    "greenjobs_planned_savings_percent_bucket",
    "greenjobs_energy_kwh_total",
    "greenjobs_co2e_grams_total",
    "greenjobs_forecast_errors_total",
    "greenjobs_forecast_latency_seconds_bucket",
    "greenjobs_gpu_power_watts",
    "greenjobs_gpu_cap_watts",
    "greenjobs_gpu_energy_joules_total",
    "greenjobs_job_energy_joules_total",
    "greenjobs_footprint_energy_kwh_total",
    "greenjobs_footprint_co2e_grams_total",
]


def _dashboard_exprs() -> list[str]:
    dash = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    panels = [p for p in dash["panels"] if p.get("type") != "row"]
    assert len({p["id"] for p in panels}) == len(panels)
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_dashboard_queries_every_metric() -> None:
    exprs = " ".join(_dashboard_exprs())
    for m in METRICS:
        assert re.search(rf"\b{m}\b", exprs), m


def test_dashboard_uses_only_known_metrics() -> None:
    histograms = [m.removesuffix("_bucket") for m in METRICS if m.endswith("_bucket")]
    known = set(METRICS) | {h + s for h in histograms for s in ("_sum", "_count")}
    used = {m for e in _dashboard_exprs() for m in re.findall(r"\bgreenjobs_[a-z_]+\b", e)}
    assert used <= known, used - known
