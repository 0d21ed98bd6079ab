"""Every API call has a timeout: a server that accepts a request and never answers is given up on."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import urllib3
from kubernetes import client

from greenjobs.kubeclient import TimedApiClient


@pytest.fixture
def stalled_server() -> Iterator[str]:
    """A TCP server that accepts connections, reads the request and never replies."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            held.append(conn)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    t.join()
    for conn in held:
        conn.close()
    srv.close()


def _api(host: str, timeout: tuple[float, float]) -> client.CustomObjectsApi:
    configuration = client.Configuration(host=host)
    configuration.retries = False
    return client.CustomObjectsApi(TimedApiClient(configuration, timeout=timeout))


def test_a_call_to_a_stalled_server_times_out(stalled_server: str) -> None:
    api = _api(stalled_server, (0.5, 0.5))
    with pytest.raises(urllib3.exceptions.ReadTimeoutError) as err:
        api.get_namespaced_custom_object("greenjobs.dev", "v1alpha1", "ns", "greentrainingjobs", "x")
    assert "read timeout=0.5" in str(err.value)


def test_a_call_with_its_own_timeout_keeps_it(stalled_server: str) -> None:
    api = _api(stalled_server, (0.5, 60.0))
    with pytest.raises(urllib3.exceptions.ReadTimeoutError) as err:
        api.get_namespaced_custom_object(
            "greenjobs.dev", "v1alpha1", "ns", "greentrainingjobs", "x", _request_timeout=(0.5, 0.3)
        )
    assert "read timeout=0.3" in str(err.value)
