"""The chart's RBAC, as real ServiceAccount tokens see it: least privilege AND sufficient.

The RBAC documents of `helm template` (ServiceAccounts, ClusterRoles, ClusterRoleBindings, Role,
RoleBinding; nothing else) are applied under a unique release name. Each ServiceAccount gets a real
token (`kubectl create token`) and a kubeconfig holding only that token; requests made with it show
what each may and may not do. Then the operator itself runs with the operator's token-only
kubeconfig and plans a GreenTrainingJob and creates its Job: the rules are sufficient, not only
minimal. Last, a provider API key (read from a file, as from a mounted Secret) never reaches the
operator's logs, conditions or Events, even when the API echoes it back in a 401.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from greenjobs_agent.pods import JobKey
from greenjobs_agent.reporter import KubeStatusPatcher, NodeEnergyReport, build_patch
from tests.integration.test_forecast_outage import Answer, FakeApi
from tests.kube import REPO, Cluster, wait_until
from tests.manifests import gtj_json
from tests.operator_proc import OperatorProcess, condition, file_forecasts, gtj

pytestmark = pytest.mark.cluster

CHART = REPO / "helm" / "greenjobs"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
FAKE_KEY = "em-FAKE-KEY-7f3a9c1e5b2d4068"


@dataclass
class Rbac:
    namespace: str
    fullname: str
    docs: list[dict[str, Any]]

    def kubeconfig(self, cluster: Cluster, sa: str, directory: Path) -> Path:
        return token_kubeconfig(cluster, self.namespace, sa, directory)


def token_kubeconfig(cluster: Cluster, namespace: str, sa: str, directory: Path) -> Path:
    """A kubeconfig whose only credential is a fresh token of ServiceAccount `sa`."""
    token = cluster.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": server}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": "e2e", "user": sa, "namespace": namespace}}],
        "current-context": sa,
    }
    path = directory / f"{sa}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture
def rbac(cluster: Cluster, namespace: str) -> Iterator[Rbac]:
    release = "rb" + hashlib.sha256(namespace.encode()).hexdigest()[:8]  # cluster-scoped names: unique
    rendered = cluster.helm(
        "template", release, str(CHART), "-n", namespace, "-f", str(CHART / "values-sim.yaml")
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") in RBAC_KINDS]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    try:
        yield Rbac(namespace, f"{release}-greenjobs", docs)
    finally:
        for d in docs:
            if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                cluster.kubectl("delete", d["kind"].lower(), d["metadata"]["name"], "--wait=false", check=False)


def _as(cluster: Cluster, kubeconfig: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """kubectl with the token-only kubeconfig (not the admin one that Cluster.kubectl passes)."""
    return subprocess.run(
        [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _allowed(proc: subprocess.CompletedProcess[str]) -> bool:
    if proc.returncode == 0:
        return True
    assert "forbidden" in proc.stderr.lower(), proc.stderr  # refused by RBAC, not for another reason
    return False


def _job(namespace: str, name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "suspend": True,
                "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}},
            },
        }
    )


def _gtj(namespace: str, name: str, zones: list[str]) -> str:
    return gtj_json(namespace, name, zones=zones, timing={"estimatedDuration": "1m", "maxDelay": "10m"}, run_for="60s")


def _patch_status(kubeconfig: Path, namespace: str, name: str) -> bool:
    """The agent's own energy report (a JSON merge patch of the status subresource, no GET first),
    sent with the token-only kubeconfig; False when RBAC refuses it."""
    api = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))
    body = build_patch("gpu-gb-0", NodeEnergyReport(joules=1.0, gpus=1, gpu_seconds=2.0), datetime.now(UTC))
    try:
        KubeStatusPatcher(api).patch_status(JobKey(namespace, name), body)
    except ApiException as exc:
        assert exc.status == 403, exc
        return False
    return True


def test_rules_name_every_verb_and_resource_no_wildcards(rbac: Rbac) -> None:
    roles = [d for d in rbac.docs if d["kind"] in ("ClusterRole", "Role")]
    assert {d["metadata"]["name"] for d in roles} == {
        f"{rbac.fullname}-{who}" for who in ("operator", "agent", "view", "edit")
    }
    rules = [(d["metadata"]["name"], r) for d in roles for r in d["rules"]]
    assert len(rules) >= 10
    for role, rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], (role, rule)
        assert "resourceNames" not in rule or "*" not in rule["resourceNames"]
        assert "nonResourceURLs" not in rule, (role, rule)
    granted = {(g, res, v) for _, r in rules for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}
    assert not {x for x in granted if x[1] == "secrets"}, "no role may touch Secrets"
    assert not {x for x in granted if x[1] == "nodes" and x[2] not in ("get", "list", "watch")}


def test_operator_token_may_do_its_job_and_nothing_more(cluster: Cluster, rbac: Rbac, tmp_path: Path) -> None:
    ns = rbac.namespace
    kc = rbac.kubeconfig(cluster, f"{rbac.fullname}-operator", tmp_path)
    cluster.kubectl("apply", "-f", "-", input=_gtj(ns, "target", ["GB"]))  # as admin: no operator runs

    assert _allowed(_as(cluster, kc, "create", "-f", "-", input=_job(ns, "made-by-operator-sa")))
    assert _allowed(_as(cluster, kc, "get", "greentrainingjobs", "-n", ns))
    assert _patch_status(kc, ns, "target")
    assert _allowed(_as(cluster, kc, "get", "nodes"))
    assert not _allowed(_as(cluster, kc, "get", "secrets", "-n", ns))
    assert not _allowed(_as(cluster, kc, "get", "secrets", "-A"))
    # --dry-run=server: authorisation is checked all the same, and nothing shared can be harmed.
    assert not _allowed(_as(cluster, kc, "delete", "node", "gpu-gb-0", "--dry-run=server"))
    assert not _allowed(_as(cluster, kc, "label", "node", "gpu-gb-0", "x=y", "--dry-run=server"))
    assert not _allowed(_as(cluster, kc, "delete", "gtj", "target", "-n", ns, "--dry-run=server"))
    assert not _allowed(_as(cluster, kc, "create", "rolebinding", "x", "--clusterrole=admin", "--user=me", "-n", ns))
    whoami = _as(cluster, kc, "auth", "whoami", "-o", "json")
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{ns}:{rbac.fullname}-operator"
    )


def test_agent_token_may_only_report_energy(cluster: Cluster, rbac: Rbac, tmp_path: Path) -> None:
    ns = rbac.namespace
    kc = rbac.kubeconfig(cluster, f"{rbac.fullname}-agent", tmp_path)
    cluster.kubectl("apply", "-f", "-", input=_gtj(ns, "target", ["GB"]))

    assert _patch_status(kc, ns, "target")
    stored = gtj(cluster, ns, "target")["status"]["energy"]["nodes"]["gpu-gb-0"]
    assert stored["joules"] == 1.0
    assert _allowed(_as(cluster, kc, "get", "pods", "-n", ns))
    assert not _allowed(_as(cluster, kc, "create", "-f", "-", "--dry-run=server", input=_job(ns, "made-by-agent-sa")))
    assert not _allowed(_as(cluster, kc, "get", "secrets", "-n", ns))
    assert not _allowed(_as(cluster, kc, "patch", "gtj", "target", "-n", ns, "--type=merge", "-p", '{"spec":{}}'))
    assert not _allowed(_as(cluster, kc, "delete", "node", "gpu-gb-0", "--dry-run=server"))


def _job_name(cluster: Cluster, namespace: str, name: str) -> str | None:
    job_name: str | None = gtj(cluster, namespace, name).get("status", {}).get("jobName")
    return job_name


def _echo_401(path: str, query: dict[str, str], headers: dict[str, str]) -> Answer:
    """Electricity Maps refusing the key, and (badly) echoing it back in the body and a header."""
    key = headers.get("auth-token", "")
    body = json.dumps({"error": f"Invalid authentication token {key}"}).encode()
    return 401, {"Content-Type": "application/json", "X-Echo-Auth-Token": key}, body, 0.0


@pytest.fixture
def echo_api() -> Iterator[FakeApi]:
    api = FakeApi(_echo_401).start()
    yield api
    api.stop()


def test_operator_runs_on_the_chart_rbac_alone_and_never_leaks_the_api_key(
    cluster: Cluster,
    rbac: Rbac,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorProcess],
    echo_api: FakeApi,
) -> None:
    ns = rbac.namespace
    kc = rbac.kubeconfig(cluster, f"{rbac.fullname}-operator", tmp_path)
    key_file = tmp_path / "secrets" / "electricitymaps" / "apiKey"
    key_file.parent.mkdir(parents=True)
    key_file.write_text(FAKE_KEY + "\n")
    now = datetime.now(UTC).replace(microsecond=0)
    # The file provider knows GB only: FR's forecast has to come from Electricity Maps, which refuses.
    file_forecasts(tmp_path / "fc", now, {"GB": 300.0}, steps=range(-6, 200))
    op = operator_factory(
        {
            "providers": [
                {"type": "electricitymaps", "url": echo_api.url, "apiKeyFile": str(key_file), "retries": 0},
                {"type": "file", "path": str(tmp_path / "fc")},
            ]
        },
        env={"KUBECONFIG": str(kc)},
        args=["--verbose"],
    )
    cluster.kubectl("apply", "-f", "-", input=_gtj(ns, "gb", ["GB"]))
    cluster.kubectl("apply", "-f", "-", input=_gtj(ns, "gbfr", ["GB", "FR"]))

    # Sufficient: planned, Job created (suspended, owned), Events posted, all with the operator's token.
    for name in ("gb", "gbfr"):
        wait_until(f"{name} planned", partial(_job_name, cluster, ns, name))
        job = cluster.get_json("job", name, "-n", ns)
        assert job["metadata"]["ownerReferences"][0]["uid"] == gtj(cluster, ns, name)["metadata"]["uid"]
    obj = gtj(cluster, ns, "gb")
    assert obj["status"]["plan"]["zone"] == "GB"
    assert obj["status"]["plan"]["forecastSource"] == "file"
    assert condition(obj, "ForecastUnavailable")["status"] == "False"  # type: ignore[index]
    wait_until(
        "Events posted with the operator's token",
        lambda: cluster.get_json("events", "-n", ns, "--field-selector", "involvedObject.name=gb")["items"],
        timeout=20,
    )
    logs = op.logs()
    assert "Forbidden" not in logs and "status=403" not in logs  # as kopf logs an APIForbiddenError

    # The key was really sent (so its absence below means something) and echoed back.
    assert any(h.get("auth-token") == FAKE_KEY for h in echo_api.seen_headers)
    gbfr = gtj(cluster, ns, "gbfr")
    cond = condition(gbfr, "ForecastUnavailable")
    assert cond is not None and cond["status"] == "True"
    assert "electricitymaps: API key refused (HTTP 401)" in cond["message"]
    assert "***" in cond["message"]  # the echoed key, redacted

    events = cluster.get_json("events", "-n", ns)["items"]
    assert any(e["reason"] == "ForecastUnavailable" and "HTTP 401" in e["message"] for e in events)
    texts = {
        "operator log": op.logs(),
        "events": json.dumps(events),
        "GreenTrainingJobs": json.dumps(cluster.get_json("greentrainingjobs", "-n", ns)),
    }
    b64 = base64.b64encode(FAKE_KEY.encode()).decode()
    for where, text in texts.items():
        assert FAKE_KEY not in text, f"API key leaked into the {where}"
        assert FAKE_KEY[-12:] not in text and b64 not in text, f"part of the API key leaked into the {where}"
    assert "API key refused" in op.logs()  # the failure itself is logged, just not the key


def test_control_without_the_chart_rbac_the_operator_gets_nothing_done(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """Negative control: the same operator on the namespace's `default` token (no role bound) is
    refused, so the test above really ran on the chart's RBAC and not on some broader credential."""
    kc = token_kubeconfig(cluster, namespace, "default", tmp_path)
    now = datetime.now(UTC).replace(microsecond=0)
    forecasts = file_forecasts(tmp_path / "fc", now, {"GB": 300.0}, steps=range(-6, 200))
    op = operator_factory(forecasts, env={"KUBECONFIG": str(kc)}, ready=False)  # refused its lists: never ready
    cluster.kubectl("apply", "-f", "-", input=_gtj(namespace, "gb", ["GB"]))
    # kopf logs the API error JSON-escaped.
    who = f'User \\"system:serviceaccount:{namespace}:default\\" cannot list'
    wait_until("the operator to be refused", lambda: who in op.logs(), timeout=20)
    assert not gtj(cluster, namespace, "gb").get("status")
    assert not cluster.get_json("jobs", "-n", namespace)["items"]
