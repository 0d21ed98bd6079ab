"""The energy report: the exact merge-patch body, and what the Kubernetes client sends on the wire."""

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from kubernetes import client

from greenjobs_agent.pods import JobKey
from greenjobs_agent.reporter import JobGone, KubeStatusPatcher, NodeEnergyReport, build_patch

NOW = datetime(2026, 11, 23, 18, 2, 11, 500_000, tzinfo=UTC)


def test_build_patch_writes_only_this_nodes_entry() -> None:
    report = NodeEnergyReport(
        joules=23_112_000.12345, gpus=4, gpu_seconds=14_400.0, cap_watts=210, avg_power_watts=318.456
    )
    assert build_patch("gpu-node-7", report, NOW) == {
        "status": {
            "energy": {
                "nodes": {
                    "gpu-node-7": {
                        "joules": 23_112_000.123,
                        "gpus": 4,
                        "gpuSeconds": 14_400.0,
                        "capWatts": 210,
                        "avgPowerWatts": 318.46,
                        "updatedAt": "2026-11-23T18:02:11Z",
                    }
                }
            }
        }
    }


def test_build_patch_leaves_out_unknown_values_instead_of_nulls() -> None:
    # A null in a merge patch would delete capWatts/avgPowerWatts written earlier.
    entry = build_patch("n", NodeEnergyReport(joules=5.0, gpus=0, gpu_seconds=0.0), NOW)["status"]["energy"]["nodes"][
        "n"
    ]
    assert entry == {"joules": 5.0, "gpus": 0, "gpuSeconds": 0.0, "updatedAt": "2026-11-23T18:02:11Z"}


# The API server's answers (the 409 message is the one a real API server gives for a UID mismatch; see
# tests/integration/test_agent_cluster.py, which checks it).
_STATUS: dict[int, dict[str, Any]] = {
    404: {"kind": "Status", "code": 404, "reason": "NotFound"},
    409: {
        "kind": "Status",
        "code": 409,
        "reason": "Conflict",
        "message": 'Operation cannot be fulfilled on greentrainingjobs.greenjobs.dev "re-created": '
        "Precondition failed: UID in precondition: old-uid, UID in object meta: new-uid",
    },
}


class _Recorder(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []
    status = 200

    def do_PATCH(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append(
            {"path": self.path, "content_type": self.headers["Content-Type"], "body": json.loads(body)}
        )
        out = b"{}" if self.status == 200 else json.dumps(_STATUS[self.status]).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[client.CustomObjectsApi]:
    _Recorder.requests = []
    _Recorder.status = 200
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = client.Configuration(host=f"http://127.0.0.1:{server.server_port}")
    with client.ApiClient(config) as api_client:
        yield client.CustomObjectsApi(api_client)
    server.shutdown()


def test_patcher_sends_a_merge_patch_to_the_status_subresource(api: client.CustomObjectsApi) -> None:
    body = build_patch("gpu-gb-0", NodeEnergyReport(joules=1.5, gpus=1, gpu_seconds=2.0, cap_watts=300), NOW)
    KubeStatusPatcher(api).patch_status(JobKey("ml", "llama"), body)
    [request] = _Recorder.requests
    assert request["path"] == "/apis/greenjobs.dev/v1alpha1/namespaces/ml/greentrainingjobs/llama/status"
    assert request["content_type"] == "application/merge-patch+json"
    assert request["body"] == body


def test_patcher_says_when_the_job_is_gone(api: client.CustomObjectsApi) -> None:
    _Recorder.status = 404
    with pytest.raises(JobGone):
        KubeStatusPatcher(api).patch_status(JobKey("ml", "gone"), {"status": {}})


def test_build_patch_carries_the_uid_precondition_and_marks_estimates() -> None:
    report = NodeEnergyReport(
        joules=10.0, gpus=2, gpu_seconds=4.0, split=("equalShares", "migSlices"), cap_note="GPU 1 is shared"
    )
    body = build_patch("n", report, NOW, uid="1f0c-uid")
    assert body["metadata"] == {"uid": "1f0c-uid"}
    entry = body["status"]["energy"]["nodes"]["n"]
    assert entry["estimated"] is True
    assert entry["splitRule"] == "equalShares,migSlices"
    assert entry["capNotApplied"] == "GPU 1 is shared"
    cleared = build_patch("n", NodeEnergyReport(joules=10.0, gpus=2, gpu_seconds=4.0, clear_cap_note=True), NOW)
    assert cleared["status"]["energy"]["nodes"]["n"]["capNotApplied"] is None  # a null deletes the old note
    assert "metadata" not in build_patch("n", report, NOW)  # no uid known: no precondition


def test_patcher_says_when_the_name_now_belongs_to_another_object(api: client.CustomObjectsApi) -> None:
    _Recorder.status = 409
    with pytest.raises(JobGone):
        KubeStatusPatcher(api).patch_status(JobKey("ml", "re-created", "old-uid"), {"metadata": {"uid": "old-uid"}})
