"""The owned Job's shape, and condition bookkeeping."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from greenjobs.api.conditions import CondUpdate, apply_conditions
from greenjobs.api.models import GreenTrainingJobSpec
from greenjobs.controller.jobs import BATCH, build_job, owned_by, start_patches
from greenjobs.controller.observe import job_view

SPEC = GreenTrainingJobSpec.model_validate(
    {
        "jobTemplate": {
            "metadata": {"labels": {"team": "nlp"}, "annotations": {"a": "b"}},
            "spec": {"parallelism": 2, "template": {"spec": {"nodeSelector": {"gpu": "h100"}}}},
        }
    }
)


def test_job_is_suspended_owned_and_labelled_and_gets_no_zone_selector_until_start() -> None:
    job = build_job(
        "llm", "ml", "uid-1", SPEC, zone="FR", zone_selector={"greenjobs.dev/grid-zone": "FR"}, start_now=False
    )
    assert job["spec"]["suspend"] is True and job["spec"]["parallelism"] == 2
    assert owned_by(job, "uid-1") and job["metadata"]["ownerReferences"][0]["controller"] is True
    assert job["metadata"]["labels"] == {
        "team": "nlp",
        "greenjobs.dev/job": "llm",
        "greenjobs.dev/job-uid": "uid-1",
        "greenjobs.dev/zone": "FR",
    }
    assert job["spec"]["template"]["metadata"]["labels"]["greenjobs.dev/job"] == "llm"
    # Agents key energy by the GTJ's UID, carried on every pod.
    assert job["spec"]["template"]["metadata"]["labels"]["greenjobs.dev/job-uid"] == "uid-1"
    # Ours until the outcome is recorded; the template's digest tells a changed template apart.
    assert job["metadata"]["finalizers"] == ["greenjobs.dev/outcome"]
    assert job["metadata"]["annotations"]["a"] == "b"
    assert len(job["metadata"]["annotations"]["greenjobs.dev/template-hash"]) == 16
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"gpu": "h100"}
    assert SPEC.job_template.spec["template"]["spec"]["nodeSelector"] == {"gpu": "h100"}  # not mutated

    assert "greenjobs.dev/started-at" not in job["metadata"]["annotations"]  # it has not started

    started = build_job(
        "llm",
        "ml",
        "uid-1",
        SPEC,
        zone="FR",
        zone_selector={"greenjobs.dev/grid-zone": "FR"},
        start_now=True,
        started_at="2026-11-23T14:00:00Z",
    )
    assert started["spec"]["suspend"] is False
    assert started["metadata"]["annotations"]["greenjobs.dev/started-at"] == "2026-11-23T14:00:00Z"
    assert started["spec"]["template"]["spec"]["nodeSelector"] == {"gpu": "h100", "greenjobs.dev/grid-zone": "FR"}


def test_start_patch_unsuspends_with_the_zone_selector() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"suspend": True, "template": {}}}
    (p,) = start_patches(job, "llm", "uid-1", "GB", {"greenjobs.dev/grid-zone": "GB"})
    assert p["spec"]["suspend"] is False
    assert p["spec"]["template"]["spec"]["nodeSelector"] == {"greenjobs.dev/grid-zone": "GB"}
    assert p["spec"]["template"]["metadata"]["labels"]["greenjobs.dev/zone"] == "GB"


def test_job_outcome_reads_job_conditions() -> None:
    assert BATCH.outcome({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == "Succeeded"
    assert BATCH.outcome({"status": {"conditions": [{"type": "Failed", "status": "True"}]}}) == "Failed"
    assert BATCH.outcome({"status": {"conditions": [{"type": "Suspended", "status": "True"}]}}) is None
    assert BATCH.outcome({}) is None


def test_transition_time_moves_only_when_status_changes() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    conds = apply_conditions([], [CondUpdate("Planned", "True", "ForecastWindow", "a")], t0, 1)
    later = apply_conditions(conds, [CondUpdate("Planned", "True", "Replanned", "b")], t0 + timedelta(hours=1), 2)
    assert later[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z" and later[0]["message"] == "b"
    flipped = apply_conditions(later, [CondUpdate("Planned", "False", "X", "c")], t0 + timedelta(hours=2), 3)
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T02:00:00Z" and flipped[0]["observedGeneration"] == 3


@pytest.mark.parametrize(
    ("obj", "finished"),
    [
        (  # a Job that succeeded: its completionTime
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "status": {
                    "completionTime": "2026-11-23T15:00:00Z",
                    "conditions": [
                        {"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-23T15:00:01Z"}
                    ],
                },
            },
            "2026-11-23T15:00:00Z",
        ),
        (  # a Job that failed has no completionTime: its last true condition
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "status": {
                    "conditions": [
                        {"type": "FailureTarget", "status": "True", "lastTransitionTime": "2026-11-23T14:59:58Z"},
                        {"type": "Failed", "status": "True", "lastTransitionTime": "2026-11-23T15:00:02Z"},
                        {"type": "Suspended", "status": "False", "lastTransitionTime": "2026-11-23T16:00:00Z"},
                    ]
                },
            },
            "2026-11-23T15:00:02Z",
        ),
        (  # still running: no end
            {"apiVersion": "batch/v1", "kind": "Job", "status": {"active": 1}},
            None,
        ),
    ],
)
def test_the_job_view_carries_the_end_its_controller_recorded(obj: dict[str, Any], finished: str | None) -> None:
    assert job_view(obj).finished_at == finished
