"""The settled label (greenjobs.dev/settled=true) takes a finished GreenTrainingJob out of the operator's
watch for good, so it is the operator's alone (issue 21):

- with the chart's admission policy installed, nobody but the operator's ServiceAccount sets, changes or
  removes it: an `edit` user (or a cluster admin) creating a job with it, or labelling a running one, is
  refused, while the operator, on its own chart token, still settles a finished job;
- a job labelled before the policy guarded the label is not lost: the operator finds the workloads its
  finalizer still holds for settled jobs, takes the label off one that has not finished (it is then
  accounted and finished like any other) and releases the workload of one that has.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from greenjobs.api.constants import JOB_FINALIZER, LABEL_SETTLED
from tests.integration.test_rbac import token_kubeconfig
from tests.integration.test_security import Secured, secured  # noqa: F401 (the fixture)
from tests.kube import Cluster, wait_until
from tests.manifests import gtj_manifest
from tests.operator_proc import OperatorProcess, file_forecasts, gtj, phase, wait_phase

pytestmark = pytest.mark.cluster

SETTLED_TRUE = f"{LABEL_SETTLED}=true"


def _flat_gb(tmp_path: Path) -> dict[str, Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    return file_forecasts(tmp_path / "fc", now, {"GB": 200.0}, step=timedelta(minutes=1), steps=range(-5, 60))


def _label(obj: dict[str, Any]) -> str | None:
    value: str | None = (obj["metadata"].get("labels") or {}).get(LABEL_SETTLED)
    return value


def _job_finalizers(cluster: Cluster, namespace: str, name: str) -> list[str]:
    found: list[str] = cluster.get_json("job", name, "-n", namespace)["metadata"].get("finalizers") or []
    return found


def _complete(job: dict[str, Any]) -> bool:
    return any(c["type"] == "Complete" and c["status"] == "True" for c in job.get("status", {}).get("conditions", []))


# --- the admission policy ----------------------------------------------------------------------


def test_only_the_operator_sets_the_settled_label(
    cluster: Cluster,
    secured: Secured,  # noqa: F811 (the fixture imported above)
    operator_factory: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    ns = secured.namespace
    cluster.kubectl("create", "rolebinding", "editor", "--clusterrole=edit", "--user=editor", "-n", ns)
    gtj_resource = "greentrainingjobs.greenjobs.dev"

    def can_edit() -> bool:
        out = cluster.kubectl("auth", "can-i", "create", gtj_resource, "--as=editor", "-n", ns, check=False)
        return out.stdout.strip() == "yes"

    wait_until("edit to aggregate the GreenTrainingJob rules", can_edit, timeout=30)

    # A job created from an exported settled one: refused, naming the label (the policy's informer
    # takes a moment after the fixture's other policies act: wait for this one too).
    exported = gtj_manifest(ns, "exported", zones=["GB"], gpus=1, run_for="5s")
    exported["metadata"]["labels"] = {LABEL_SETTLED: "true"}

    def create_refused(*who: str) -> str | None:
        out = cluster.kubectl("create", "-f", "-", *who, input=json.dumps(exported), check=False)
        return out.stderr if out.returncode != 0 and LABEL_SETTLED in out.stderr else None

    message = wait_until(
        "the settled-label policy to refuse a CREATE with it",
        lambda: create_refused("--as=editor", "--dry-run=server"),
        timeout=30,
    )
    assert f"{secured.fullname}-settled-label" in message and "created unsettled" in message, message
    assert create_refused("--as=editor"), "an edit user created a settled job"
    assert create_refused(), "a cluster admin (not the operator) created a settled job"

    # The operator on its chart token; the editor's job runs.
    operator_token = token_kubeconfig(cluster, ns, f"{secured.fullname}-operator", tmp_path)
    op = operator_factory({**_flat_gb(tmp_path), "settleAfter": "2s"}, env={"KUBECONFIG": str(operator_token)})
    job = gtj_manifest(ns, "mine", zones=["GB"], gpus=1, run_for="15s")
    cluster.kubectl("create", "-f", "-", "--as=editor", input=json.dumps(job))
    wait_phase(cluster, ns, "mine", "Running", timeout=60)

    # Labelling the running job, by its editor or by an admin, with any value: refused.
    for who in (["--as=editor"], []):
        for value in ("true", "false"):
            out = cluster.kubectl("label", "gtj", "mine", "-n", ns, f"{LABEL_SETTLED}={value}", *who, check=False)
            assert out.returncode != 0, f"{who or 'admin'} labelled a running job {value}"
            assert "may not set, change or remove it" in out.stderr, out.stderr
    assert _label(gtj(cluster, ns, "mine")) is None
    assert phase(cluster, ns, "mine") == "Running"  # still watched, still the operator's

    # The operator itself settles the finished job (its write passes the policy) ...
    wait_until(
        "the operator to settle the finished job", lambda: _label(gtj(cluster, ns, "mine")) == "true", timeout=90
    )
    finished = gtj(cluster, ns, "mine")
    assert finished["status"]["phase"] == "Succeeded"
    assert "denied request" not in op.logs() and "Forbidden" not in op.logs()
    # ... and nobody else takes the label off (which would bring the job back into the watch).
    out = cluster.kubectl("label", "gtj", "mine", "-n", ns, f"{LABEL_SETTLED}-", "--as=editor", check=False)
    assert out.returncode != 0 and "may not set, change or remove it" in out.stderr, out.stderr
    assert _label(gtj(cluster, ns, "mine")) == "true"


# --- jobs labelled before the policy: found and released -----------------------------------------


def test_settled_jobs_whose_workloads_are_still_held_are_found_and_released(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """No policy here (as before the chart installed it): two jobs are labelled settled while the
    operator is down, one still running, one whose outcome the operator recorded but whose Job it had
    not let go yet. Neither is ever listed by the next operator (its watch selects settled=true out);
    the settled sweep finds their Jobs, held by our finalizer, through the Jobs it watches."""
    ns = namespace
    config = _flat_gb(tmp_path)
    op = operator_factory(config)
    node = cluster.nodes["GB"][0]
    sel = {"kubernetes.io/hostname": node}
    for name, run_for in (("kept", "25s"), ("done", "6s")):
        body = gtj_manifest(ns, name, zones=["GB"], gpus=1, run_for=run_for, node_selector=sel)
        cluster.kubectl("create", "-f", "-", input=json.dumps(body))
    wait_until(
        "both jobs Running", lambda: phase(cluster, ns, "kept") == phase(cluster, ns, "done") == "Running", timeout=60
    )
    op.kill()  # down before `done` finishes: nobody records its end or lets its Job go
    for name in ("kept", "done"):
        assert JOB_FINALIZER in _job_finalizers(cluster, ns, name), name

    done_job = wait_until(
        "the Job `done` to complete",
        lambda: (j := cluster.get_json("job", "done", "-n", ns)) and _complete(j) and j,
        timeout=90,
    )
    # `done`: its outcome was recorded (as the operator writes it) but the Job not yet released when
    # a user labelled it settled. `kept`: labelled while it runs; an agent reports its energy meanwhile.
    completed = done_job["status"]["completionTime"]
    outcome = {"status": {"phase": "Succeeded", "completionTime": completed}}
    energy = {"status": {"energy": {"nodes": {node: {"joules": 36000.0, "gpus": 1, "gpuSeconds": 10.0}}}}}
    for name, patch in (("done", outcome), ("kept", energy)):
        cluster.kubectl("patch", "gtj", name, "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps(patch))
        cluster.kubectl("label", "gtj", name, "-n", ns, SETTLED_TRUE)

    op = operator_factory(config)
    # Released within one sweep (min(resyncInterval, 30 s) after the start: 10 s in tests) and a look.
    wait_until(
        "the settled finished job's Job released",
        lambda: JOB_FINALIZER not in _job_finalizers(cluster, ns, "done"),
        timeout=60,
    )
    assert _label(gtj(cluster, ns, "done")) == "true", "a settled finished job stays settled"
    assert "settled while its Job is still held: releasing it" in op.logs()
    # The running one is not forgotten: the label comes off, it finishes, is accounted and let go.
    wait_until("the label taken off the running job", lambda: _label(gtj(cluster, ns, "kept")) != "true", timeout=60)
    assert "labelled settled before it finished: taking the label off" in op.logs()
    wait_phase(cluster, ns, "kept", "Succeeded", timeout=90)
    kept = gtj(cluster, ns, "kept")["status"]
    assert kept["energy"]["gpuKWh"] == pytest.approx(0.01, abs=1e-4), kept["energy"]
    assert (kept.get("emissions") or {}).get("accountedJoules", {}).get(node) == 36000.0
    wait_until(
        "the running job's Job released",
        lambda: JOB_FINALIZER not in _job_finalizers(cluster, ns, "kept"),
        timeout=30,
    )
    # Nothing was created twice or restarted.
    jobs = cluster.get_json("jobs", "-n", ns)["items"]
    assert sorted(j["metadata"]["name"] for j in jobs) == ["done", "kept"]
