"""examples/*.yaml (the README's reference and the demo's jobs) are accepted by the real API server."""

import pytest

from tests.kube import REPO, Cluster

pytestmark = pytest.mark.cluster


def test_every_example_passes_a_server_side_dry_run(cluster: Cluster, namespace: str) -> None:
    examples = sorted((REPO / "examples").glob("*.yaml"))
    assert examples
    out = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(REPO / "examples")).stdout
    assert out.count("created (server dry run)") == len(examples)
