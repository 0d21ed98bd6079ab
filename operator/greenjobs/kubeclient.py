"""The Kubernetes API client of the operator and the agent: every call has a timeout.

The kubernetes client waits forever by default. A request caught by an API server that stalls (a
restart, an overloaded server, a half-open connection) would then hold a reconcile worker or the
agent's report loop for good; with a timeout it fails, and the caller's retry takes it from there.
A watch passes its own, longer `_request_timeout`.
"""

from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0


class TimedApiClient(client.ApiClient):  # type: ignore[misc]  # the client is untyped
    """An ApiClient whose calls without a `_request_timeout` of their own get `timeout`."""

    def __init__(
        self,
        configuration: client.Configuration | None = None,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
    ) -> None:
        super().__init__(configuration)
        self.timeout = timeout

    def call_api(
        self,
        method: str,
        url: str,
        header_params: Any = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        return super().call_api(method, url, header_params, body, post_params, _request_timeout or self.timeout)


def api_client(*, in_cluster_first: bool = True, pool_size: int | None = None) -> TimedApiClient:
    """A client from the pod's service account (in a cluster) or the kubeconfig."""
    loaders = [config.load_incluster_config, config.load_kube_config]
    if not in_cluster_first:
        loaders.reverse()
    try:
        loaders[0]()
    except config.ConfigException:
        loaders[1]()
    configuration = client.Configuration.get_default_copy()
    if pool_size is not None:
        configuration.connection_pool_maxsize = pool_size
    return TimedApiClient(configuration)


def utc_now() -> datetime:
    return datetime.now(UTC)


def operator_api_client() -> client.ApiClient:
    """The operator's client: reconcile workers and event posting share the pool, a connection each."""
    return api_client(pool_size=32)
