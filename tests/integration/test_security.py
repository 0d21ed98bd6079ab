"""The chart's admission policies and aggregated roles on the real API server, with real tokens.

The policies, aggregated ClusterRoles, ServiceAccounts and RBAC of `helm template` are applied under a
unique release name (cluster-scoped names) for the test's namespace. Users are ServiceAccounts with
tokens from `kubectl create token`, so the API server authenticates them as it would anyone; the agent's
tokens are bound to a pod on a node, as the kubelet's projected tokens are. docs/security.md maps each
rule to its test here.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from greenjobs_agent.pods import JobKey
from greenjobs_agent.reporter import KubeStatusPatcher, NodeEnergyReport, build_patch
from tests.integration.test_rbac import token_kubeconfig
from tests.kube import REPO, Cluster, wait_until
from tests.manifests import gtj_manifest

pytestmark = pytest.mark.cluster

CHART = REPO / "helm" / "greenjobs"
KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
CLUSTER_SCOPED = KINDS - {"ServiceAccount"}
ZONE_LABEL = "greenjobs.dev/grid-zone"
TEMPLATE = "spec.jobTemplate.spec.template.spec"


@dataclass
class Secured:
    namespace: str
    fullname: str
    tmp: Path

    @property
    def agent_sa(self) -> str:
        return f"{self.fullname}-agent"


def _apply_rendered(cluster: Cluster, release: str, namespace: str, *values: str) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "-n", namespace, "-f", str(CHART / "values-sim.yaml")]
    for v in values:
        args += ["--set", v]
    docs = [d for d in yaml.safe_load_all(cluster.helm(*args).stdout) if d and d.get("kind") in KINDS]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    return docs


def _delete_cluster_scoped(cluster: Cluster, docs: list[dict[str, Any]]) -> None:
    for d in docs:
        if d["kind"] in CLUSTER_SCOPED:
            cluster.kubectl("delete", d["kind"].lower(), d["metadata"]["name"], "--ignore-not-found", check=False)


@pytest.fixture
def secured(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Secured]:
    release = "sec" + hashlib.sha256(namespace.encode()).hexdigest()[:8]
    docs = _apply_rendered(cluster, release, namespace)
    try:
        sec = Secured(namespace, f"{release}-greenjobs", tmp_path)
        # Policies take effect once the API server's policy informer has them: wait on behaviour.
        bad = _gtj(namespace, "probe-policy", zones=["GB"], pod={"nodeName": "nowhere"})
        wait_until(
            "the placement policy to act",
            lambda: (
                cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(bad), check=False).returncode
                != 0
            ),
            timeout=30,
        )
        yield sec
    finally:
        _delete_cluster_scoped(cluster, docs)


def _gtj(
    namespace: str, name: str, *, zones: list[str] | None = None, pod: dict[str, Any] | None = None
) -> dict[str, Any]:
    obj = gtj_manifest(namespace, name, zones=zones, timing={"estimatedDuration": "1m", "maxDelay": "10m"})
    obj["spec"]["jobTemplate"]["spec"]["template"]["spec"].update(pod or {})
    return obj


def _kubectl_as(
    cluster: Cluster, kubeconfig: Path, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _user(cluster: Cluster, sec: Secured, name: str, *, role: str | None = None, rules: Any = None) -> Path:
    """A ServiceAccount `name` in the test's namespace holding `role` (a ClusterRole bound in the
    namespace) or `rules` (a Role of its own); returns a kubeconfig holding only its token."""
    ns = sec.namespace
    cluster.kubectl("create", "serviceaccount", name, "-n", ns)
    if rules is not None:
        role_doc = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": ns},
            "rules": rules,
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(role_doc))
        cluster.kubectl("create", "rolebinding", name, f"--role={name}", f"--serviceaccount={ns}:{name}", "-n", ns)
    elif role is not None:
        cluster.kubectl(
            "create", "rolebinding", name, f"--clusterrole={role}", f"--serviceaccount={ns}:{name}", "-n", ns
        )
    return token_kubeconfig(cluster, ns, name, sec.tmp)


GTJ_ONLY = [{"apiGroups": ["greenjobs.dev"], "resources": ["greentrainingjobs"], "verbs": ["get", "create", "patch"]}]


# --- 1. no escalation ------------------------------------------------------------------------


def test_gtj_creator_without_the_right_to_create_jobs_is_refused(cluster: Cluster, secured: Secured) -> None:
    ns = secured.namespace
    kc = _user(cluster, secured, "gtj-only", rules=GTJ_ONLY)
    user = f"system:serviceaccount:{ns}:gtj-only"
    # RBAC alone would let it create a GTJ and not a Job: the refusal below is the policy's.
    assert (
        _kubectl_as(cluster, kc, "auth", "can-i", "create", "greentrainingjobs.greenjobs.dev").stdout.strip() == "yes"
    )
    assert _kubectl_as(cluster, kc, "auth", "can-i", "create", "jobs.batch").stdout.strip() == "no"

    out = _kubectl_as(cluster, kc, "create", "-f", "-", input=json.dumps(_gtj(ns, "sneaky", zones=["GB"])))
    assert out.returncode != 0
    assert "greenjobs-workload-rights" in out.stderr  # the policy that refused it, named by the API server
    assert f"spec.jobTemplate: {user} may not create jobs.batch in namespace {ns}" in out.stderr
    assert "Forbidden" in out.stderr or "forbidden" in out.stderr
    assert not cluster.get_json("greentrainingjobs", "-n", ns)["items"]

    # Nor may it change the template of a GTJ someone else created (an admin, who may create Jobs).
    cluster.kubectl("create", "-f", "-", input=json.dumps(_gtj(ns, "admins", zones=["GB"])))
    image = '{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"train","image":"evil"}]}}}}}}'
    out = _kubectl_as(cluster, kc, "patch", "gtj", "admins", "--type=merge", "-p", image)
    assert out.returncode != 0 and "may not create jobs.batch" in out.stderr
    # A metadata-only change wraps no new workload and is its RBAC's business alone.
    out = _kubectl_as(cluster, kc, "label", "gtj", "admins", "team=ml")
    assert out.returncode == 0, out.stderr


def test_user_who_may_create_jobs_too_succeeds(cluster: Cluster, secured: Secured) -> None:
    ns = secured.namespace
    kc = _user(
        cluster,
        secured,
        "gtj-and-jobs",
        rules=[*GTJ_ONLY, {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}],
    )
    out = _kubectl_as(cluster, kc, "create", "-f", "-", input=json.dumps(_gtj(ns, "honest", zones=["GB"])))
    assert out.returncode == 0, out.stderr
    assert cluster.get_json("gtj", "honest", "-n", ns)["metadata"]["name"] == "honest"

    # The right must hold in THAT namespace: a Job right in another namespace does not count.
    other = f"{ns}-x"
    cluster.kubectl("create", "namespace", other)
    try:
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "gtj", "namespace": other},
            "rules": GTJ_ONLY,
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(role))
        cluster.kubectl(
            "create", "rolebinding", "gtj", "--role=gtj", f"--serviceaccount={ns}:gtj-and-jobs", "-n", other
        )
        out = _kubectl_as(cluster, kc, "create", "-f", "-", input=json.dumps(_gtj(other, "elsewhere", zones=["GB"])))
        assert out.returncode != 0 and f"may not create jobs.batch in namespace {other}" in out.stderr
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


# --- 2. placement ------------------------------------------------------------------------------


def _affinity(operator: str, values: list[str] | None = None) -> dict[str, Any]:
    expr: dict[str, Any] = {"key": ZONE_LABEL, "operator": operator}
    if values is not None:
        expr["values"] = values
    term = {"matchExpressions": [expr]}
    return {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}
    }


REFUSED_TEMPLATES: dict[str, tuple[list[str], dict[str, Any], str]] = {
    "nodeName": (["GB"], {"nodeName": "gpu-fr-0"}, f"{TEMPLATE}.nodeName: a pod template may not name a node"),
    "selector-other-zone": (
        ["GB"],
        {"nodeSelector": {ZONE_LABEL: "FR"}},
        f'{TEMPLATE}.nodeSelector["{ZONE_LABEL}"]: "FR" contradicts spec.placement.zones [GB]',
    ),
    "selector-narrows-zones": (
        ["GB", "FR"],
        {"nodeSelector": {ZONE_LABEL: "GB"}},
        f'{TEMPLATE}.nodeSelector["{ZONE_LABEL}"]: "GB" contradicts spec.placement.zones [GB, FR]',
    ),
    "affinity-in-other-zone": (["GB"], _affinity("In", ["FR"]), f"matchExpressions[key={ZONE_LABEL}] contradicts"),
    "affinity-not-in-zone": (["GB", "FR"], _affinity("NotIn", ["FR"]), "contradicts spec.placement.zones [GB, FR]"),
    "affinity-no-zone": (["GB"], _affinity("DoesNotExist"), f"{TEMPLATE}.affinity.nodeAffinity"),
}
ACCEPTED_TEMPLATES: dict[str, tuple[list[str] | None, dict[str, Any]]] = {
    "selector-same-single-zone": (["GB"], {"nodeSelector": {ZONE_LABEL: "GB"}}),
    "affinity-in-every-zone": (["GB", "FR"], _affinity("In", ["FR", "GB", "DE"])),
    "affinity-not-in-other-zone": (["GB"], _affinity("NotIn", ["FR"])),
    "hostname-selector": (["GB"], {"nodeSelector": {"kubernetes.io/hostname": "gpu-gb-0"}}),
    "selector-without-zones": (None, {"nodeSelector": {ZONE_LABEL: "FR"}}),
}


def test_templates_that_defeat_placement_are_refused_naming_the_field(cluster: Cluster, secured: Secured) -> None:
    ns = secured.namespace
    for case, (zones, pod, message) in REFUSED_TEMPLATES.items():
        out = cluster.kubectl(
            "create", "-f", "-", input=json.dumps(_gtj(ns, case.lower(), zones=zones, pod=pod)), check=False
        )
        assert out.returncode != 0, case
        assert "greenjobs-placement" in out.stderr and message in out.stderr, (case, out.stderr)
    for case, (maybe_zones, pod) in ACCEPTED_TEMPLATES.items():
        manifest = json.dumps(_gtj(ns, case.lower(), zones=maybe_zones, pod=pod))
        out = cluster.kubectl("create", "-f", "-", input=manifest, check=False)
        assert out.returncode == 0, (case, out.stderr)

    # An update that adds a contradiction is refused just like a create.
    patch = json.dumps({"spec": {"placement": {"zones": ["FR"]}}})
    out = cluster.kubectl(
        "patch", "gtj", "selector-same-single-zone", "-n", ns, "--type=merge", "-p", patch, check=False
    )
    assert out.returncode != 0 and '"GB" contradicts spec.placement.zones [FR]' in out.stderr


# --- 3. agents confined to their node ----------------------------------------------------------


def _agent_pod(cluster: Cluster, sec: Secured, node: str) -> str:
    """A pod of the agent's ServiceAccount bound to `node` (kwok runs it), as the DaemonSet's is."""
    name = f"agent-{node}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": sec.namespace},
        "spec": {
            "serviceAccountName": sec.agent_sa,
            "nodeName": node,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "agent", "image": "busybox"}],
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
    return name


def _bound_kubeconfig(cluster: Cluster, sec: Secured, pod: str | None, label: str) -> Path:
    """The agent ServiceAccount's token, bound to `pod` (None: a token bound to nothing)."""
    args = ["create", "token", sec.agent_sa, "-n", sec.namespace, "--duration=1h"]
    if pod is not None:
        args += ["--bound-object-kind=Pod", f"--bound-object-name={pod}"]
    token = cluster.kubectl(*args).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": label, "user": {"token": token}}],
        "contexts": [{"name": label, "context": {"cluster": "e2e", "user": label, "namespace": sec.namespace}}],
        "current-context": label,
    }
    path = sec.tmp / f"{label}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def _patch_status(kubeconfig: Path, namespace: str, name: str, body: dict[str, Any]) -> ApiException | None:
    api = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))
    try:
        KubeStatusPatcher(api).patch_status(JobKey(namespace, name), body)  # the agent's own call
    except ApiException as exc:
        return exc
    return None


def _energy(node: str, joules: float) -> dict[str, Any]:
    return build_patch(node, NodeEnergyReport(joules=joules, gpus=1, gpu_seconds=2.0), datetime.now(UTC))


def _message(exc: ApiException | None) -> str:
    assert exc is not None, "the request was allowed"
    assert exc.status == 403, exc
    return str(json.loads(exc.body)["message"])


def test_agent_token_writes_only_its_own_nodes_entry(cluster: Cluster, secured: Secured) -> None:
    ns = secured.namespace
    node_a, node_b = cluster.nodes["GB"][0], cluster.nodes["FR"][0]
    cluster.kubectl("create", "-f", "-", input=json.dumps(_gtj(ns, "job", zones=["GB", "FR"])))
    # What the operator and node B's agent wrote (as admin, whom the agent policy does not concern).
    seeded: dict[str, Any] = {
        "status": {
            "power": {"targetCapWatts": 300},
            "energy": {
                "nodes": {node_b: {"joules": 5.0, "gpus": 1, "gpuSeconds": 1.0, "updatedAt": "2026-01-01T00:00:00Z"}}
            },
        }
    }
    cluster.kubectl("patch", "gtj", "job", "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps(seeded))

    kc = _bound_kubeconfig(cluster, secured, _agent_pod(cluster, secured, node_a), "agent-a")
    whoami = json.loads(_kubectl_as(cluster, kc, "auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    assert whoami["extra"]["authentication.kubernetes.io/node-name"] == [node_a]  # as the kubelet's tokens

    assert _patch_status(kc, ns, "job", _energy(node_a, 42.0)) is None  # its own entry: allowed
    msg = _message(_patch_status(kc, ns, "job", _energy(node_b, 1e9)))
    assert f'status.energy.nodes["{node_b}"]: node agent {node_a} may write only' in msg
    msg = _message(_patch_status(kc, ns, "job", {"status": {"energy": {"nodes": {node_b: None}}}}))
    assert f'status.energy.nodes["{node_b}"]' in msg  # nor delete it
    msg = _message(_patch_status(kc, ns, "job", {"status": {"power": {"targetCapWatts": 100}}}))
    assert f"status.power: node agent {node_a} may write only" in msg
    msg = _message(_patch_status(kc, ns, "job", {"status": {"phase": "Succeeded"}}))
    assert "status.phase" in msg
    # Its own entry and a forbidden field in one patch: the whole patch is refused.
    both = _energy(node_a, 43.0)
    both["status"]["power"] = {"targetCapWatts": 100}
    assert "status.power" in _message(_patch_status(kc, ns, "job", both))

    # The spec: RBAC refuses the resource itself; through /status the API server keeps the old spec.
    out = _kubectl_as(
        cluster, kc, "patch", "gtj", "job", "--type=merge", "-p", '{"spec":{"placement":{"zones":["FR"]}}}'
    )
    assert out.returncode != 0 and "forbidden" in out.stderr.lower()
    _patch_status(kc, ns, "job", {"spec": {"placement": {"zones": ["FR"]}}, **_energy(node_a, 44.0)})

    obj = cluster.get_json("gtj", "job", "-n", ns)
    assert obj["spec"]["placement"]["zones"] == ["GB", "FR"]
    assert obj["status"]["power"] == {"targetCapWatts": 300}
    nodes = obj["status"]["energy"]["nodes"]
    assert nodes[node_b] == seeded["status"]["energy"]["nodes"][node_b]
    assert nodes[node_a]["joules"] == 44.0


def test_agent_token_without_a_node_is_refused(cluster: Cluster, secured: Secured) -> None:
    ns = secured.namespace
    cluster.kubectl("create", "-f", "-", input=json.dumps(_gtj(ns, "job", zones=["GB"])))
    kc = _bound_kubeconfig(cluster, secured, None, "agent-unbound")
    whoami = json.loads(_kubectl_as(cluster, kc, "auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    assert "authentication.kubernetes.io/node-name" not in whoami.get("extra", {})
    msg = _message(_patch_status(kc, ns, "job", _energy(cluster.nodes["GB"][0], 1.0)))
    assert "the agent's token names no node" in msg
    assert not cluster.get_json("gtj", "job", "-n", ns).get("status", {}).get("energy")


# --- 4. aggregated roles -----------------------------------------------------------------------


def _can(cluster: Cluster, who: str, verb: str, resource: str, namespace: str, *extra: str) -> bool:
    out = cluster.kubectl("auth", "can-i", verb, resource, f"--as={who}", "-n", namespace, *extra, check=False)
    answer = out.stdout.strip()
    assert answer in ("yes", "no"), out.stdout + out.stderr
    return answer == "yes"


GTJ = "greentrainingjobs.greenjobs.dev"
READ = ("get", "list", "watch")
WRITE = ("create", "update", "patch", "delete", "deletecollection")


def test_aggregated_roles_grant_exactly_view_and_edit_rights(cluster: Cluster, secured: Secured) -> None:
    ns = secured.namespace
    for role in ("view", "edit", "admin"):
        cluster.kubectl(
            "create", "rolebinding", f"{role}-binding", f"--clusterrole={role}", f"--user={role}-user", "-n", ns
        )
    # kube-controller-manager aggregates the rules into the built-in roles asynchronously.
    wait_until("view to aggregate GTJ rules", lambda: _can(cluster, "view-user", "get", GTJ, ns), timeout=30)
    wait_until("edit to aggregate GTJ rules", lambda: _can(cluster, "edit-user", "create", GTJ, ns), timeout=30)
    wait_until("admin to aggregate GTJ rules", lambda: _can(cluster, "admin-user", "create", GTJ, ns), timeout=30)

    for verb in READ:
        assert _can(cluster, "view-user", verb, GTJ, ns), verb
        assert _can(cluster, "view-user", verb, GTJ, ns, "--subresource=status"), verb
    for verb in WRITE:
        assert not _can(cluster, "view-user", verb, GTJ, ns), verb
    for who in ("edit-user", "admin-user"):
        for verb in READ + WRITE:
            assert _can(cluster, who, verb, GTJ, ns), (who, verb)
        # The status is the operator's and the agents': not even an admin of the namespace writes it.
        assert not _can(cluster, who, "patch", GTJ, ns, "--subresource=status"), who
        assert not _can(cluster, who, "update", GTJ, ns, "--subresource=status"), who
        # The rights are the namespace's, not the cluster's.
        assert not _can(cluster, who, "create", GTJ, "default"), who
    assert not _can(cluster, "nobody-user", "get", GTJ, ns)

    # And edit really suffices to create one (its Job right passes the workload-rights policy).
    kc = _user(cluster, secured, "editor", role="edit")
    out = _kubectl_as(cluster, kc, "create", "-f", "-", input=json.dumps(_gtj(ns, "by-editor", zones=["GB"])))
    assert out.returncode == 0, out.stderr
    kc = _user(cluster, secured, "viewer", role="view")
    out = _kubectl_as(cluster, kc, "create", "-f", "-", input=json.dumps(_gtj(ns, "by-viewer", zones=["GB"])))
    assert out.returncode != 0 and "forbidden" in out.stderr.lower()
