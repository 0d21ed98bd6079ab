"""Absurd durations and deadlines are refused by the API server at `kubectl apply`, naming the field.

The CEL rules come from greenjobs.api.models (`make crd`); the operator's own parser enforces the same
bound (tests/unit/test_durations.py), so nothing accepted here can overflow its time arithmetic.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kube import Cluster

pytestmark = pytest.mark.cluster


def _manifest(namespace: str, name: str, timing: dict[str, Any]) -> str:
    container = {"name": "train", "image": "busybox"}
    spec = {"jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}}}}
    obj = {
        "apiVersion": "greenjobs.dev/v1alpha1",
        "kind": "GreenTrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {**spec, "timing": timing},
    }
    return json.dumps(obj)


@pytest.fixture(scope="module")
def ns(cluster: Cluster) -> Iterator[str]:
    name = f"t-dur-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _apply(cluster: Cluster, namespace: str, timing: dict[str, Any]) -> Any:
    name = f"d-{uuid.uuid4().hex[:10]}"
    return cluster.kubectl("apply", "--server-side", "-f", "-", input=_manifest(namespace, name, timing), check=False)


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        ({"estimatedDuration": "1h", "maxDelay": "99999999d"}, "spec.timing.maxDelay: Invalid value"),
        ({"estimatedDuration": "1h", "maxDelay": "367d"}, "maxDelay must be at most 366d"),
        ({"estimatedDuration": "1h", "maxDelay": "366d1s"}, "maxDelay must be at most 366d"),
        ({"estimatedDuration": "1h", "maxDelay": "8785h"}, "maxDelay must be at most 366d"),
        ({"estimatedDuration": "1h", "maxDelay": "P53W"}, "maxDelay must be at most 366d"),
        ({"estimatedDuration": "1h", "maxDelay": "P1DT8761H"}, "maxDelay must be at most 366d"),
        ({"estimatedDuration": "31622401s", "maxDelay": "1h"}, "estimatedDuration must be at most 366d"),
        ({"estimatedDuration": "9999999999999999999999ms"}, "estimatedDuration must be at most 366d"),
        ({"estimatedDuration": "1h", "deadline": "0001-01-01T00:00:00Z"}, "deadline must be between 1970 and 9000"),
        ({"estimatedDuration": "1h", "deadline": "9999-12-31T23:59:59Z"}, "deadline must be between 1970 and 9000"),
    ],
)
def test_absurd_timing_is_refused_naming_the_field(
    cluster: Cluster, ns: str, timing: dict[str, Any], message: str
) -> None:
    proc = _apply(cluster, ns, timing)
    assert proc.returncode != 0, f"accepted:\n{proc.stdout}"
    assert message in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "timing",
    [
        {"estimatedDuration": "1h", "maxDelay": "366d"},
        {"estimatedDuration": "1h", "maxDelay": "8784h"},
        {"estimatedDuration": "1h", "maxDelay": "P52W2D"},
        {"estimatedDuration": "1h", "maxDelay": "PT1.5H"},
        {"estimatedDuration": "366d", "maxDelay": "31622400s"},
        {"estimatedDuration": "90ms"},
        {"estimatedDuration": "1h30m", "deadline": "2030-01-01T00:00:00Z"},
    ],
)
def test_durations_up_to_the_bound_are_accepted(cluster: Cluster, ns: str, timing: dict[str, Any]) -> None:
    proc = _apply(cluster, ns, timing)
    assert proc.returncode == 0, proc.stderr
