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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from greenjobs_agent.pods import JobKey
from greenjobs_agent.reporter import KubeStatusPatcher, NodeEnergyReport, build_patch
from tests.agent_proc import AgentProcess, start_agent
from tests.integration.test_rbac import token_kubeconfig
from tests.kube import REPO, Cluster, wait_until
from tests.manifests import gtj_manifest
from tests.operator_proc import OperatorProcess, file_forecasts

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


def _rendered(cluster: Cluster, release: str, namespace: str) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "-n", namespace, "-f", str(CHART / "values-sim.yaml")]
    return [d for d in yaml.safe_load_all(cluster.helm(*args).stdout) if d and d.get("kind") in KINDS]


def _delete_cluster_scoped(cluster: Cluster, docs: list[dict[str, Any]]) -> None:
    for d in docs:
        if d["kind"] in CLUSTER_SCOPED:
            cluster.kubectl("delete", d["kind"].lower(), d["metadata"]["name"], "--ignore-not-found", check=False)


@pytest.fixture
def secured(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Secured]:
    release = "sec" + hashlib.sha256(namespace.encode()).hexdigest()[:8]
    docs = _rendered(cluster, release, namespace)
    try:
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        sec = Secured(namespace, f"{release}-greenjobs", tmp_path)
        _wait_for_policies(cluster, sec)
        yield sec
    finally:
        _delete_cluster_scoped(cluster, docs)


def _wait_for_policies(cluster: Cluster, sec: Secured) -> None:
    """Each policy takes effect once the API server's policy informer has it and its binding, each in
    its own time: wait until every one of them refuses what it must (server-side dry runs)."""
    ns = sec.namespace

    def refused(*args: str, input: str | None = None, needle: str) -> bool:
        out = cluster.kubectl(*args, "--dry-run=server", "-n", ns, input=input, check=False)
        return out.returncode != 0 and needle in out.stderr

    bad = json.dumps(_gtj(ns, "probe-policy", zones=["GB"], pod={"nodeName": "nowhere"}))
    wait_until("the placement policy to act", lambda: refused("create", "-f", "-", input=bad, needle="nodeName"))

    # A user who may create GTJs and not Jobs (impersonated: admin may).
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "probe-gtj-only"}}
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({**role, "rules": GTJ_ONLY}))
    cluster.kubectl("create", "rolebinding", "probe-gtj-only", "--role=probe-gtj-only", "--user=probe", "-n", ns)
    good = json.dumps(_gtj(ns, "probe-rights", zones=["GB"]))
    wait_until(
        "the workload-rights policy to act",
        lambda: refused("create", "-f", "-", "--as=probe", input=good, needle="workload-rights"),
    )

    # The agent's ServiceAccount without a node in its token (impersonated, through the API: kubectl
    # patch would GET the status first, which the agent may not).
    cluster.kubectl("create", "-f", "-", input=good.replace("probe-rights", "probe-agent"))
    api = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
    api.set_default_header("Impersonate-User", f"system:serviceaccount:{ns}:{sec.agent_sa}")
    objects = kubernetes.client.CustomObjectsApi(api)

    def agent_refused() -> bool:
        report = {"status": {"energy": {"nodes": {"probe": {"joules": 1.0}}}}}
        try:
            objects.patch_namespaced_custom_object_status(
                "greenjobs.dev", "v1alpha1", ns, "greentrainingjobs", "probe-agent", report, dry_run="All"
            )
        except ApiException as exc:
            return "names no node" in str(exc.body)
        return False

    wait_until("the agent policy to act", agent_refused)
    cluster.kubectl("delete", "gtj", "probe-agent", "-n", ns, "--wait=true")


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


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for a in started:
        a.stop()


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
    """An energy report goes through the agent's own call (a JSON patch); anything else, as a
    compromised agent could send it, as a plain merge patch with the same token."""
    api = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))
    nodes = ((body.get("status") or {}).get("energy") or {}).get("nodes") or {}
    own_call = set(body) == {"status"} and set(body["status"]) == {"energy"} and all(nodes.values())
    try:
        if own_call:
            KubeStatusPatcher(api).patch_status(JobKey(namespace, name), body)  # the agent's own call
        else:
            api.patch_namespaced_custom_object_status(
                "greenjobs.dev", "v1alpha1", namespace, "greentrainingjobs", name, body,
                _content_type="application/merge-patch+json",
            )  # fmt: skip
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


# --- spec.workload (JobSet, TrainJob, PyTorchJob, RayJob) ---------------------------------------
# The GTJ CRD does not have spec.workload yet (the API server prunes it), so the very same two
# policies are bound to a stand-in CRD whose spec keeps any field: their CEL runs on real workloads.

PROBE_GROUP = "sectest.greenjobs.dev"


@pytest.fixture
def probe_policies(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Secured]:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"policyprobes.{PROBE_GROUP}"},
        "spec": {
            "group": PROBE_GROUP,
            "scope": "Namespaced",
            "names": {"plural": "policyprobes", "singular": "policyprobe", "kind": "PolicyProbe"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                        }
                    },
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(crd))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/policyprobes.{PROBE_GROUP}", "--timeout=30s")
    release = "probe" + hashlib.sha256(namespace.encode()).hexdigest()[:8]
    rendered = cluster.helm(
        "template", release, str(CHART), "-n", namespace, "--show-only", "templates/admission-policies.yaml"
    )
    docs = [
        d for d in yaml.safe_load_all(rendered.stdout) if d and not d["metadata"]["name"].endswith("agent-own-node")
    ]
    for d in docs:
        if d["kind"] == "ValidatingAdmissionPolicy":
            for rule in d["spec"]["matchConstraints"]["resourceRules"]:
                rule["apiGroups"], rule["resources"] = [PROBE_GROUP], ["policyprobes"]
    try:
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        sec = Secured(namespace, f"{release}-greenjobs", tmp_path)
        probe = _probe(
            namespace,
            "probe",
            {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {"nodeName": "x"}}}},
        )
        wait_until(
            "the probe policies to act",
            lambda: (
                cluster.kubectl(
                    "create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False
                ).returncode
                != 0
            ),
            timeout=30,
        )
        yield sec
    finally:
        _delete_cluster_scoped(cluster, docs)
        cluster.kubectl("delete", "crd", f"policyprobes.{PROBE_GROUP}", "--ignore-not-found", check=False)


def _probe(namespace: str, name: str, workload: dict[str, Any], zones: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"workload": {"metadata": {"name": name}, **workload}}
    if zones is not None:
        spec["placement"] = {"zones": zones}
    return {
        "apiVersion": f"{PROBE_GROUP}/v1",
        "kind": "PolicyProbe",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _pod(**extra: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "c", "image": "busybox"}], **extra}}


WORKLOADS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    # kind: (apiVersion, resource the user needs, path of a pod spec, workload spec with a pod spec at it)
    "JobSet": (
        "jobset.x-k8s.io/v1alpha2",
        "jobsets.jobset.x-k8s.io",
        "spec.workload.spec.replicatedJobs[workers].template.spec.template.spec",
        {"replicatedJobs": [{"name": "workers", "template": {"spec": {"template": _pod()}}}]},
    ),
    "PyTorchJob": (
        "kubeflow.org/v1",
        "pytorchjobs.kubeflow.org",
        "spec.workload.spec.pytorchReplicaSpecs.Worker.template.spec",
        {"pytorchReplicaSpecs": {"Master": {"template": _pod()}, "Worker": {"template": _pod()}}},
    ),
    "RayJob": (
        "ray.io/v1",
        "rayjobs.ray.io",
        "spec.workload.spec.rayClusterSpec.workerGroupSpecs[gpu].template.spec",
        {
            "rayClusterSpec": {
                "headGroupSpec": {"template": _pod()},
                "workerGroupSpecs": [{"groupName": "gpu", "template": _pod()}],
            }
        },
    ),
    "TrainJob": (
        "trainer.kubeflow.org/v1alpha1",
        "trainjobs.trainer.kubeflow.org",
        "spec.workload.spec.podTemplateOverrides[].spec",
        {"runtimeRef": {"name": "torch"}, "podTemplateOverrides": [{"targetJobs": [{"name": "node"}], "spec": {}}]},
    ),
    "Job": ("batch/v1", "jobs.batch", "spec.workload.spec.template.spec", {"template": _pod()}),
}


def _with_pod_field(kind: str, spec: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    """A copy of a workload spec with `field` set in the pod spec the WORKLOADS path names."""
    spec = json.loads(json.dumps(spec))
    pod = {
        "JobSet": lambda s: s["replicatedJobs"][0]["template"]["spec"]["template"]["spec"],
        "PyTorchJob": lambda s: s["pytorchReplicaSpecs"]["Worker"]["template"]["spec"],
        "RayJob": lambda s: s["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"],
        "TrainJob": lambda s: s["podTemplateOverrides"][0]["spec"],
        "Job": lambda s: s["template"]["spec"],
    }[kind](spec)
    pod[field] = value
    return spec


def test_workload_kinds_need_their_own_create_right(cluster: Cluster, probe_policies: Secured) -> None:
    ns = probe_policies.namespace
    probes = {"apiGroups": [PROBE_GROUP], "resources": ["policyprobes"], "verbs": ["create"]}
    kc = _user(cluster, probe_policies, "probe-only", rules=[probes])
    for kind, (api_version, resource, _, spec) in WORKLOADS.items():
        manifest = json.dumps(_probe(ns, kind.lower(), {"apiVersion": api_version, "kind": kind, "spec": spec}))
        out = _kubectl_as(cluster, kc, "create", "-f", "-", input=manifest)
        assert out.returncode != 0, kind
        assert (
            f"spec.workload: system:serviceaccount:{ns}:probe-only may not create {resource} in namespace {ns}"
            in out.stderr
        )
    # Granted exactly those five resources, the same user may create all five.
    group, res = zip(*(r.split(".", 1)[::-1] for _, r, _, _ in WORKLOADS.values()), strict=True)
    rights = [
        probes,
        *({"apiGroups": [g], "resources": [r], "verbs": ["create"]} for g, r in zip(group, res, strict=True)),
    ]
    kc = _user(cluster, probe_policies, "probe-and-workloads", rules=rights)
    for kind, (api_version, _, _, spec) in WORKLOADS.items():
        manifest = json.dumps(_probe(ns, kind.lower(), {"apiVersion": api_version, "kind": kind, "spec": spec}))
        out = _kubectl_as(cluster, kc, "create", "-f", "-", input=manifest)
        assert out.returncode == 0, (kind, out.stderr)
    # An unknown kind, or a known kind under another group, cannot be checked and is refused.
    for api_version, kind in (("example.com/v1", "MPIJob"), ("example.com/v1", "JobSet")):
        manifest = json.dumps(_probe(ns, "odd", {"apiVersion": api_version, "kind": kind, "spec": {}}))
        out = _kubectl_as(cluster, kc, "create", "-f", "-", input=manifest)
        assert (
            out.returncode != 0
            and f"spec.workload: {api_version} {kind} is not a workload greenjobs runs" in out.stderr
        )


def test_placement_is_checked_in_every_workload_kinds_pod_templates(cluster: Cluster, probe_policies: Secured) -> None:
    ns = probe_policies.namespace
    for kind, (api_version, _, path, spec) in WORKLOADS.items():
        for field, value, message in (
            ("nodeName", "gpu-fr-0", f"{path}.nodeName: a pod template may not name a node"),
            (
                "nodeSelector",
                {ZONE_LABEL: "FR"},
                f'{path}.nodeSelector["{ZONE_LABEL}"]: "FR" contradicts spec.placement.zones [GB]',
            ),
        ):
            workload = {"apiVersion": api_version, "kind": kind, "spec": _with_pod_field(kind, spec, field, value)}
            manifest = json.dumps(_probe(ns, f"{kind.lower()}-{field.lower()}", workload, zones=["GB"]))
            out = cluster.kubectl("create", "-f", "-", input=manifest, check=False)
            assert out.returncode != 0 and message in out.stderr, (kind, field, out.stderr)
        workload = {
            "apiVersion": api_version,
            "kind": kind,
            "spec": _with_pod_field(kind, spec, "nodeSelector", {ZONE_LABEL: "GB"}),
        }
        out = cluster.kubectl(
            "create", "-f", "-", input=json.dumps(_probe(ns, f"{kind.lower()}-ok", workload, zones=["GB"])), check=False
        )
        assert out.returncode == 0, (kind, out.stderr)


# --- sufficiency: the real operator and agents work under the policies ---------------------------


def test_real_operator_and_agents_work_under_the_policies(
    cluster: Cluster,
    secured: Secured,
    operator_factory: Callable[..., OperatorProcess],
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    """The policies refuse nothing the product does: the operator on its chart token (kopf's finalizer
    and annotation patches, status, Jobs), two agents on pod-bound tokens of their nodes (each its own
    entry), and an `edit` user who creates and deletes the job."""
    ns = secured.namespace
    now = datetime.now(UTC).replace(microsecond=0)
    forecasts = file_forecasts(tmp_path / "fc", now, {"GB": 200.0}, step=timedelta(minutes=1), steps=range(-5, 60))
    operator_token = token_kubeconfig(cluster, ns, f"{secured.fullname}-operator", tmp_path)
    op = operator_factory(forecasts, env={"KUBECONFIG": str(operator_token)})
    nodes = cluster.nodes["GB"][:2]
    for node in nodes:
        kc = _bound_kubeconfig(cluster, secured, _agent_pod(cluster, secured, node), f"agent-{node}")
        agents.append(start_agent(cluster, node, tmp_path / f"agent-{node}", ns, env={"KUBECONFIG": str(kc)}))

    editor = _user(cluster, secured, "editor", role="edit")
    job = gtj_manifest(ns, "wide", zones=["GB"], gpus=6, run_for="10s", power={"policy": "Static", "capWatts": 400})
    job["spec"]["jobTemplate"]["spec"].update({"completions": 2, "parallelism": 2})
    out = _kubectl_as(cluster, editor, "create", "-f", "-", input=json.dumps(job))
    assert out.returncode == 0, out.stderr

    def entries() -> dict[str, Any]:
        found: dict[str, Any] = (
            cluster.get_json("gtj", "wide", "-n", ns).get("status", {}).get("energy", {}).get("nodes", {})
        )
        return found

    wait_until("entries from both agents", lambda: set(entries()) == set(nodes), timeout=60)
    wait_until(
        "Succeeded", lambda: cluster.get_json("gtj", "wide", "-n", ns)["status"].get("phase") == "Succeeded", timeout=60
    )
    for a in agents:
        assert a.alive() and "energy report failed" not in a.logs(), a.logs()[-2000:]
    assert "denied request" not in op.logs() and "Forbidden" not in op.logs()

    out = _kubectl_as(cluster, editor, "delete", "gtj", "wide", "--timeout=30s")
    assert out.returncode == 0, out.stderr
    assert not cluster.get_json("gtj", "-n", ns)["items"]
