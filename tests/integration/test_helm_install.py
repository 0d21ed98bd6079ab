"""`helm install` of the chart into the real local control plane (kwok nodes: pods are never run).

Checks that the API server accepts every object as rendered (security contexts included), that the
DaemonSet lands only on GPU-labelled nodes, and what the ServiceAccounts may and may not do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.kube import REPO, Cluster, wait_until
from tests.manifests import gtj_manifest

pytestmark = pytest.mark.cluster

CHART = REPO / "helm" / "greenjobs"
SIM_VALUES = CHART / "values-sim.yaml"


@dataclass
class Release:
    name: str
    namespace: str
    fullname: str
    install_output: str

    @property
    def operator_sa(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}-operator"

    @property
    def agent_sa(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}-agent"


def _release_name(namespace: str) -> str:
    # Cluster-scoped objects (ClusterRoles, the peering object) carry the release name: make it unique.
    return "gj" + hashlib.sha256(namespace.encode()).hexdigest()[:8]


@pytest.fixture
def cpu_node(cluster: Cluster, namespace: str) -> Iterator[str]:
    """A kwok node WITHOUT the GPU label, so the DaemonSet's node selector has something to exclude."""
    name = f"cpu-{namespace}"
    cluster.kubectl(
        "create",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"},
                },
                "status": {
                    "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                    "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                },
            }
        ),
    )
    try:
        cluster.kubectl("wait", "--for=condition=Ready", f"node/{name}", "--timeout=60s")
        yield name
    finally:
        cluster.kubectl("delete", "node", name, "--wait=false", check=False)


@contextmanager
def _installed(cluster: Cluster, namespace: str, *extra: str) -> Iterator[Release]:
    name = _release_name(namespace)
    out = cluster.helm("install", name, str(CHART), "-n", namespace, "-f", str(SIM_VALUES), "--timeout", "120s", *extra)
    try:
        yield Release(name, namespace, f"{name}-greenjobs", out.stdout)
    finally:
        # Uninstall explicitly: namespace deletion would leave the cluster-scoped RBAC behind.
        cluster.helm("uninstall", name, "-n", namespace, "--wait", "--timeout", "60s", check=False)


@pytest.fixture
def release(cluster: Cluster, namespace: str, cpu_node: str) -> Iterator[Release]:
    with _installed(cluster, namespace) as rel:
        yield rel


def _rendered(cluster: Cluster, rel: Release, kind: str, suffix: str) -> dict[str, Any]:
    manifest = cluster.helm("get", "manifest", rel.name, "-n", rel.namespace).stdout
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    found: list[dict[str, Any]] = [
        d for d in docs if d["kind"] == kind and d["metadata"]["name"] == f"{rel.fullname}{suffix}"
    ]
    assert len(found) == 1, [d["metadata"]["name"] for d in docs]
    return found[0]


def _can(cluster: Cluster, who: str, verb: str, resource: str, namespace: str, *extra: str) -> bool:
    out = cluster.kubectl("auth", "can-i", verb, resource, f"--as={who}", "-n", namespace, *extra, check=False)
    answer = out.stdout.strip()
    assert answer in ("yes", "no"), out.stdout + out.stderr
    return answer == "yes"


def test_install_creates_the_workloads_as_rendered(cluster: Cluster, release: Release) -> None:
    ns = release.namespace
    assert "kubectl get gtj" in release.install_output  # NOTES.txt tells the next step
    for kind, suffix in (("Deployment", "-operator"), ("DaemonSet", "-agent")):
        live = cluster.get_json(kind.lower(), f"{release.fullname}{suffix}", "-n", ns)
        rendered = _rendered(cluster, release, kind, suffix)
        live_pod, want_pod = live["spec"]["template"]["spec"], rendered["spec"]["template"]["spec"]
        (live_c,), (want_c,) = live_pod["containers"], want_pod["containers"]
        # The API server kept what the chart asked for (no field dropped or refused).
        for field in ("image", "command", "securityContext", "ports"):
            assert _subset(want_c.get(field), live_c.get(field)), field
        assert [e["name"] for e in live_c["env"]] == [e["name"] for e in want_c["env"]]
        assert sorted(v["name"] for v in live_pod["volumes"]) == sorted(v["name"] for v in want_pod["volumes"])
        assert live_pod["serviceAccountName"] == want_pod["serviceAccountName"]

    deploy = cluster.get_json("deployment", f"{release.fullname}-operator", "-n", ns)
    assert deploy["spec"]["replicas"] == 1
    cm = cluster.get_json("configmap", f"{release.fullname}-operator", "-n", ns)
    assert yaml.safe_load(cm["data"]["config.yaml"])["providers"][0]["type"] == "replay"
    for svc, port in (("-operator-metrics", 8080), ("-agent-metrics", 9102)):
        ports = cluster.get_json("service", f"{release.fullname}{svc}", "-n", ns)["spec"]["ports"]
        assert [p["port"] for p in ports] == [port]


def _subset(want: Any, live: Any) -> bool:
    """`want` is contained in `live` (the API server adds defaults, e.g. ports' protocol)."""
    if isinstance(want, dict):
        return isinstance(live, dict) and all(_subset(v, live.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(live, list) and len(want) == len(live) and all(map(_subset, want, live))
    return bool(want == live)


def test_daemonset_runs_only_on_gpu_nodes(cluster: Cluster, release: Release, cpu_node: str) -> None:
    ns = release.namespace
    nodes = cluster.get_json("nodes")["items"]
    gpu_nodes = {
        n["metadata"]["name"] for n in nodes if n["metadata"]["labels"].get("nvidia.com/gpu.present") == "true"
    }
    assert gpu_nodes and cpu_node not in gpu_nodes
    selector = f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=agent"

    def placed() -> set[str] | None:
        pods = cluster.get_json("pods", "-n", ns, "-l", selector)["items"]
        where = {p["spec"].get("nodeName") for p in pods}
        return where if where == gpu_nodes else None

    wait_until("one agent pod bound to every GPU node", placed, timeout=90)
    status = cluster.get_json("daemonset", f"{release.fullname}-agent", "-n", ns)["status"]
    assert status["desiredNumberScheduled"] == len(gpu_nodes)
    pods = cluster.get_json("pods", "-n", ns, "-l", selector)["items"]
    assert cpu_node not in {p["spec"]["nodeName"] for p in pods}


CAN_OPERATOR = [
    ("get", "greentrainingjobs.greenjobs.dev", ()),
    ("watch", "greentrainingjobs.greenjobs.dev", ()),
    ("patch", "greentrainingjobs.greenjobs.dev", ()),
    ("patch", "greentrainingjobs.greenjobs.dev", ("--subresource=status",)),
    ("update", "greentrainingjobs.greenjobs.dev", ("--subresource=finalizers",)),
    ("create", "jobs.batch", ()),
    ("patch", "jobs.batch", ()),
    ("delete", "jobs.batch", ()),
    ("watch", "nodes", ()),
    ("watch", "pods", ()),  # GPUs held by pods greenjobs does not manage (fleet capacity)
    ("create", "events", ()),
    ("list", "namespaces", ()),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", ()),
]
CANNOT_OPERATOR = [
    ("create", "greentrainingjobs.greenjobs.dev", ()),
    ("delete", "greentrainingjobs.greenjobs.dev", ()),
    ("update", "jobs.batch", ()),  # every Job write is a patch
    ("patch", "events", ()),  # each Event is created new
    ("create", "pods", ()),
    ("delete", "pods", ()),
    ("patch", "nodes", ()),
    ("get", "secrets", ()),
    ("list", "secrets", ()),
    ("get", "configmaps", ()),  # forecast ConfigMaps are mounted files
    ("get", "namespaces", ()),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ()),
    ("update", "leases.coordination.k8s.io", ()),  # only its own Lease, by name (see the next tests)
    ("create", "clusterroles.rbac.authorization.k8s.io", ()),
    ("impersonate", "serviceaccounts", ()),
]


def test_operator_service_account_permissions(cluster: Cluster, release: Release) -> None:
    ns, sa = release.namespace, release.operator_sa
    for verb, resource, extra in CAN_OPERATOR:
        # Cluster-wide rights hold in any namespace, not only the release's.
        for where in (ns, "default"):
            assert _can(cluster, sa, verb, resource, where, *extra), (verb, resource, extra, where)
    for verb, resource, extra in CANNOT_OPERATOR:
        assert not _can(cluster, sa, verb, resource, ns, *extra), (verb, resource, extra)


def test_agent_service_account_permissions(cluster: Cluster, release: Release) -> None:
    ns, sa = release.namespace, release.agent_sa
    assert _can(cluster, sa, "watch", "pods", "default")
    assert _can(cluster, sa, "list", "greentrainingjobs.greenjobs.dev", "default")
    assert _can(cluster, sa, "patch", "greentrainingjobs.greenjobs.dev", "default", "--subresource=status")
    for verb, resource, extra in (
        ("update", "greentrainingjobs.greenjobs.dev", ("--subresource=status",)),
        ("patch", "greentrainingjobs.greenjobs.dev", ()),
        ("create", "jobs.batch", ()),
        ("delete", "pods", ()),
        ("get", "secrets", ()),
        ("patch", "nodes", ()),
    ):
        assert not _can(cluster, sa, verb, resource, ns, *extra), (verb, resource, extra)


def test_two_replicas_install_leader_election(cluster: Cluster, namespace: str) -> None:
    with _installed(cluster, namespace, "--set", "operator.replicas=2") as rel:
        deploy = cluster.get_json("deployment", f"{rel.fullname}-operator", "-n", namespace)
        assert deploy["spec"]["replicas"] == 2
        (c,) = deploy["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        lease = f"{rel.fullname}-operator"
        assert env["GREENJOBS_LEASE"] == lease
        sa = rel.operator_sa
        assert _can(cluster, sa, "create", "leases.coordination.k8s.io", namespace)
        for verb in ("get", "update"):
            assert _can(cluster, sa, verb, f"leases.coordination.k8s.io/{lease}", namespace)
            assert not _can(cluster, sa, verb, "leases.coordination.k8s.io/someone-elses", namespace)
        assert not _can(cluster, sa, "create", "leases.coordination.k8s.io", "default")


def test_policies_are_installed_and_act(cluster: Cluster, release: Release) -> None:
    """After `helm install` the four admission policies and the aggregated roles are live."""
    ns = release.namespace
    for suffix in ("-workload-rights", "-placement", "-settled-label", "-agent-own-node"):
        cluster.get_json("validatingadmissionpolicy", f"{release.fullname}{suffix}")
        binding = cluster.get_json("validatingadmissionpolicybinding", f"{release.fullname}{suffix}")
        assert binding["spec"]["validationActions"] == ["Deny"]
    pinned = gtj_manifest(ns, "pinned", zones=["GB"])
    pinned["spec"]["jobTemplate"]["spec"]["template"]["spec"]["nodeName"] = "gpu-fr-0"

    def refused() -> str | None:
        out = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pinned), check=False)
        return out.stderr if out.returncode != 0 else None

    message = wait_until("the placement policy to refuse nodeName", refused, timeout=30)
    assert f"{release.fullname}-placement" in message and "spec.template.spec.nodeName" in message

    # A user who may create GTJs (impersonated: the policy asks the authorizer about that user).
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "gtj-only", "namespace": ns},
        "rules": [{"apiGroups": ["greenjobs.dev"], "resources": ["greentrainingjobs"], "verbs": ["create"]}],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(role))
    cluster.kubectl("create", "rolebinding", "gtj-only", "--role=gtj-only", "--user=carol", "-n", ns)
    plain = json.dumps(gtj_manifest(ns, "plain", zones=["GB"]))
    out = cluster.kubectl("create", "--as=carol", "-f", "-", input=plain, check=False)
    assert out.returncode != 0 and f"carol may not create jobs.batch in namespace {ns}" in out.stderr

    # Aggregated roles: the namespace's built-in edit role now covers GTJs.
    cluster.kubectl("create", "rolebinding", "dave-edit", "--clusterrole=edit", "--user=dave", "-n", ns)
    gtj = "greentrainingjobs.greenjobs.dev"
    wait_until("edit to include GTJs", lambda: _can(cluster, "dave", "create", gtj, ns), timeout=30)
    out = cluster.kubectl("create", "--as=dave", "-f", "-", input=plain, check=False)
    assert out.returncode == 0, out.stderr


def test_operator_namespace_enforces_restricted_with_the_agent_elsewhere(cluster: Cluster, namespace: str) -> None:
    """Pod Security: the operator passes `restricted`; the agent (hostPath, uid 0) cannot, so it goes to a
    `privileged` namespace of its own (agent.namespace)."""
    agent_ns = f"{namespace}-agent"
    cluster.kubectl("create", "namespace", agent_ns)
    try:
        cluster.kubectl("label", "namespace", agent_ns, "pod-security.kubernetes.io/enforce=privileged")
        cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
        with _installed(cluster, namespace, "--set", f"agent.namespace={agent_ns}") as rel:
            component = f"app.kubernetes.io/instance={rel.name},app.kubernetes.io/component="
            wait_until(
                "the operator pod admitted under restricted",
                lambda: cluster.get_json("pods", "-n", namespace, "-l", component + "operator")["items"],
                timeout=60,
            )
            wait_until(
                "agent pods in the agent's namespace",
                lambda: cluster.get_json("pods", "-n", agent_ns, "-l", component + "agent")["items"],
                timeout=60,
            )
            assert not cluster.get_json("pods", "-n", namespace, "-l", component + "agent")["items"]
            # Control: the agent's pod would be refused in the restricted namespace.
            ds = cluster.get_json("daemonset", f"{rel.fullname}-agent", "-n", agent_ns)
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "agent-probe", "namespace": namespace},
                "spec": {**ds["spec"]["template"]["spec"], "serviceAccountName": "default"},
            }
            out = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
            assert out.returncode != 0 and 'violates PodSecurity "restricted' in out.stderr, out.stderr
            assert "hostPath" in out.stderr
    finally:
        cluster.kubectl("delete", "namespace", agent_ns, "--wait=false", check=False)
