"""A small fault-injecting HTTP proxy in front of the test control plane's API server.

A product process given `kubeconfig` talks plain HTTP to the proxy (no credentials of its own); the proxy
forwards every request to the real API server over TLS with the admin client certificate, streaming the
answers (watches included), except those a `fault` rule picks: they are answered by the proxy with the
rule's status and a Kubernetes Status body, and never reach the API server. Used where a real API server
has no simple way to fail one request (a transient 500 on one write).
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from tests.kube import Cluster

# Hop-by-hop headers and those aiohttp sets itself: never copied across.
SESSION = web.AppKey("session", aiohttp.ClientSession)
_SKIP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "content-encoding"}


@dataclass
class Fault:
    """Answer the first request whose method is in `methods` and whose path matches `path` with
    `status`, and every other matching one for `for_seconds` after it (a short outage of that write)."""

    methods: tuple[str, ...]
    path: str  # a regular expression searched in the request's path
    status: int = 500
    for_seconds: float = 0.0
    injected: int = 0
    first_at: float | None = None

    def picks(self, method: str, path: str) -> bool:
        if method not in self.methods or re.search(self.path, path) is None:
            return False
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
        return now - self.first_at <= self.for_seconds or self.injected == 0


@dataclass
class FaultProxy:
    upstream: str
    ssl_context: ssl.SSLContext
    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status) of every request
    port: int = 0

    def requests(self, method: str, path: str) -> list[int]:
        """Statuses answered to the requests matching `method` and the `path` expression, in order."""
        return [s for m, p, s in list(self.seen) if m == method and re.search(path, p)]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        for fault in self.faults:
            if fault.picks(request.method, path):
                fault.injected += 1
                self.seen.append((request.method, path, fault.status))
                body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": fault.status,
                        "reason": "InternalError", "message": "injected by tests/fault_proxy.py"}  # fmt: skip
                return web.json_response(body, status=fault.status)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP}
        data = await request.read()
        session = request.app[SESSION]
        url = f"{self.upstream}{request.rel_url}"
        # A body without a Content-Type (the kubernetes client sends JSON so) must not get aiohttp's
        # application/octet-stream, which the API server refuses.
        skip = () if "Content-Type" in request.headers else ("Content-Type",)
        forward = session.request(request.method, url, headers=headers, data=data or None, skip_auto_headers=skip)
        async with forward as upstream:
            self.seen.append((request.method, path, upstream.status))
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in _SKIP:
                    response.headers[k] = v
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (ConnectionResetError, aiohttp.ClientError):
                pass  # the client or the API server closed a watch: end this one too
            return response

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "fault-proxy.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
            "current-context": "proxy",
        }
        path.write_text(yaml.safe_dump(config))
        return path


def _admin_tls(cluster: Cluster, directory: Path) -> tuple[str, ssl.SSLContext]:
    """The API server's URL and a TLS context with its CA and the admin client certificate."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    user = admin["users"][0]["user"]
    ctx = ssl.create_default_context(cadata=base64.b64decode(server["certificate-authority-data"]).decode())
    cert, key = directory / "proxy-admin.crt", directory / "proxy-admin.key"
    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    key.chmod(0o600)
    ctx.load_cert_chain(cert, key)
    return str(server["server"]).rstrip("/"), ctx


@contextmanager
def fault_proxy(cluster: Cluster, directory: Path, faults: list[Fault]) -> Iterator[FaultProxy]:
    """The proxy on a free port of 127.0.0.1, served by an event loop in a thread of its own."""
    directory.mkdir(parents=True, exist_ok=True)
    upstream, ctx = _admin_tls(cluster, directory)
    proxy = FaultProxy(upstream, ctx, faults)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner: web.AppRunner | None = None

    async def start() -> None:
        nonlocal runner
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app[SESSION] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx), timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
        )
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        runner = web.AppRunner(app, shutdown_timeout=1.0)  # open watches are cut, not waited for
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        proxy.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()

    async def stop() -> None:
        if runner is not None:
            await runner.app[SESSION].close()
            await runner.cleanup()
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:  # handlers of watches still streaming
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    thread = threading.Thread(target=loop.run_forever, name="fault-proxy", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    ready.wait(10)
    try:
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
