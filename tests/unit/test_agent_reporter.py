"""The energy report: the exact body, and what the Kubernetes client sends on the wire (a merge patch that
creates the entry once, then JSON patches whose first op tests the GTJ's UID)."""

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from kubernetes import client

from greenjobs_agent.pods import JobKey
from greenjobs_agent.reporter import JobGone, KubeStatusPatcher, NodeEnergyReport, build_patch, json_patch

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


# The API server's answers, as a real one gives them (tests/integration/test_agent_cluster.py): a JSON
# patch op that does not apply (a failed test, a missing path) is a bare 422 without causes.
_STATUS: dict[int, dict[str, Any]] = {
    404: {"kind": "Status", "code": 404, "reason": "NotFound"},
    422: {
        "kind": "Status",
        "code": 422,
        "reason": "Invalid",
        "message": "the server rejected our request due to an error in our request",
        "details": {},
    },
}


class _Recorder(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []
    status = 200
    json_status = 200  # the answer to JSON patches only

    def do_PATCH(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append(
            {"path": self.path, "content_type": self.headers["Content-Type"], "body": json.loads(body)}
        )
        status = self.json_status if "json-patch" in self.headers["Content-Type"] else self.status
        out = b"{}" if status == 200 else json.dumps(_STATUS[status]).encode()
        self.send_response(status)
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
    _Recorder.json_status = 200
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = client.Configuration(host=f"http://127.0.0.1:{server.server_port}")
    with client.ApiClient(config) as api_client:
        yield client.CustomObjectsApi(api_client)
    server.shutdown()


def test_patcher_creates_the_entry_once_then_sends_json_patches_testing_the_uid(
    api: client.CustomObjectsApi,
) -> None:
    body = build_patch("gpu-gb-0", NodeEnergyReport(joules=1.5, gpus=1, gpu_seconds=2.0, cap_watts=300), NOW, "u1")
    patcher = KubeStatusPatcher(api)
    patcher.patch_status(JobKey("ml", "llama", "u1"), body)
    patcher.patch_status(JobKey("ml", "llama", "u1"), body)
    first, second, third = _Recorder.requests
    path = "/apis/greenjobs.dev/v1alpha1/namespaces/ml/greentrainingjobs/llama/status"
    assert [r["path"] for r in _Recorder.requests] == [path] * 3
    assert first["content_type"] == "application/merge-patch+json"
    assert first["body"] == {"status": {"energy": {"nodes": {"gpu-gb-0": {}}}}}  # no energy, only the parents
    assert second["content_type"] == third["content_type"] == "application/json-patch+json"
    assert (
        second["body"]
        == third["body"]
        == [
            {"op": "test", "path": "/metadata/uid", "value": "u1"},
            {"op": "add", "path": "/status/energy/nodes/gpu-gb-0/joules", "value": 1.5},
            {"op": "add", "path": "/status/energy/nodes/gpu-gb-0/gpus", "value": 1},
            {"op": "add", "path": "/status/energy/nodes/gpu-gb-0/gpuSeconds", "value": 2.0},
            {"op": "add", "path": "/status/energy/nodes/gpu-gb-0/updatedAt", "value": "2026-11-23T18:02:11Z"},
            {"op": "add", "path": "/status/energy/nodes/gpu-gb-0/capWatts", "value": 300},
        ]
    )


def test_json_patch_removes_a_cleared_note_and_escapes_pointers() -> None:
    body = build_patch("a/b~c", NodeEnergyReport(joules=1.0, gpus=0, gpu_seconds=0.0, clear_cap_note=True), NOW)
    ops = json_patch(body)
    assert ops[0]["op"] == "add"  # no uid: no test
    assert {"op": "remove", "path": "/status/energy/nodes/a~1b~0c/capNotApplied"} in ops
    assert all(o["op"] == "add" for o in json_patch(body, removals=False))


def test_patcher_says_when_the_job_is_gone(api: client.CustomObjectsApi) -> None:
    _Recorder.status = 404
    with pytest.raises(JobGone):
        KubeStatusPatcher(api).patch_status(JobKey("ml", "gone"), build_patch("n", NodeEnergyReport(1.0, 1, 1.0), NOW))


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
    _Recorder.json_status = 422  # the UID test fails, also after the parents are created again
    with pytest.raises(JobGone, match="another UID"):
        KubeStatusPatcher(api).patch_status(
            JobKey("ml", "re-created", "old-uid"), build_patch("n", NodeEnergyReport(1.0, 1, 1.0), NOW, "old-uid")
        )
    kinds = [r["content_type"].split("/")[1] for r in _Recorder.requests]
    assert kinds == ["merge-patch+json", "json-patch+json", "merge-patch+json", "json-patch+json"]
