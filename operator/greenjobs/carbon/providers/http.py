"""The one way providers talk HTTP: explicit timeouts, retries with backoff and jitter, 429 handling.

Retried: connect errors, timeouts and 5xx answers (exponential backoff with jitter). A 429 is retried
after its Retry-After (seconds or an HTTP date) when that wait is within `retry_after_cap_s`; a longer
wait raises RateLimited at once so that the failover chain moves on instead of blocking a handler.
Other 4xx answers are returned to the provider, which knows what they mean for its API.
"""

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .base import AuthFailed, BadResponse, Clock, ProviderError, RateLimited, TimedOut, Unavailable, redact

log = logging.getLogger(__name__)

Secrets = Callable[[], Iterable[str]]


def _no_secrets() -> Iterable[str]:
    return ()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None when absent/garbled."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


class HttpFetcher:
    """GET with the retry policy above, for one provider (its name goes into messages and logs)."""

    def __init__(
        self,
        client: httpx.Client,
        provider: str,
        *,
        timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
        retry_after_cap_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Clock = _utcnow,
        rng: random.Random | None = None,
        secrets: Secrets = _no_secrets,
    ) -> None:
        self.client = client
        self.provider = provider
        self.timeout = httpx.Timeout(timeout_s)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_cap_s = retry_after_cap_s
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)
        self.secrets = secrets

    def backoff(self, attempt: int) -> float:
        """Equal jitter: half the exponential delay fixed, half random, so retries never bunch up."""
        delay = min(self.backoff_max_s, self.backoff_s * 2.0**attempt)
        return delay / 2 + self.rng.uniform(0, delay / 2)

    def get(
        self,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
    ) -> httpx.Response:
        """The final response (2xx or a non-429 4xx); raise ProviderError when retries run out."""
        attempt = 0
        path = httpx.URL(url).path
        while True:
            failure: ProviderError
            try:
                resp = self.client.get(url, params=params, headers=headers, auth=auth, timeout=self.timeout)
            except httpx.TimeoutException as exc:
                failure = TimedOut(f"{self.provider}: request timed out after {self.timeout_s:g}s")
                cause: str = type(exc).__name__
            except httpx.TransportError as exc:
                failure = Unavailable(f"{self.provider}: cannot connect ({type(exc).__name__})")
                cause = type(exc).__name__
            else:
                if resp.status_code == 429:
                    wait = parse_retry_after(resp.headers.get("Retry-After"), self.clock())
                    if attempt < self.retries and (wait is None or wait <= self.retry_after_cap_s):
                        wait = self.backoff(attempt) if wait is None else wait
                        log.warning("%s: rate limited on %s, retrying in %.1fs", self.provider, path, wait)
                        self.sleep(wait)
                        attempt += 1
                        continue
                    hint = f", retry after {wait:g}s" if wait is not None else ""
                    raise RateLimited(f"{self.provider}: rate limited (HTTP 429){hint}", retry_after=wait)
                if resp.status_code < 500:
                    return resp
                failure = Unavailable(f"{self.provider}: HTTP {resp.status_code}{self.detail(resp)}")
                cause = f"HTTP {resp.status_code}"
            if attempt >= self.retries:
                if attempt:
                    failure.args = (f"{failure.args[0]} (after {attempt + 1} attempts)",)
                raise failure
            wait = self.backoff(attempt)
            log.warning("%s: %s on %s, retry %d in %.2fs", self.provider, cause, path, attempt + 1, wait)
            self.sleep(wait)
            attempt += 1

    # ------------------------------------------------------------ reading answers

    def detail(self, resp: httpx.Response) -> str:
        """`: <the API's own error message>` from the usual error body shapes, redacted; or ''."""
        text = ""
        try:
            body: Any = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            for key in ("message", "error", "detail", "title"):
                value = body.get(key)
                if isinstance(value, dict):  # {"error": {"code": ..., "message": ...}}
                    value = value.get("message")
                if isinstance(value, str) and value.strip():
                    text = value.strip()
                    break
        elif body is None:
            text = resp.text.strip()
        text = redact(" ".join(text.split())[:200], self.secrets())
        return f": {text}" if text else ""

    def json(self, resp: httpx.Response) -> Any:
        """The JSON body of a 2xx answer; BadResponse when it isn't JSON."""
        try:
            return json.loads(resp.content)
        except ValueError:
            raise BadResponse(f"{self.provider}: malformed JSON in the answer (HTTP {resp.status_code})") from None

    def fail(self, resp: httpx.Response, what: str) -> ProviderError:
        """The error for a 4xx answer that the provider did not handle itself."""
        detail = self.detail(resp)
        if resp.status_code in (401, 403):
            return AuthFailed(f"{self.provider}: credentials refused (HTTP {resp.status_code}){detail}")
        return ProviderError(f"{self.provider}: {what} failed (HTTP {resp.status_code}){detail}")


class HttpProvider:
    """What every HTTP forecast provider holds: its fetcher, clock, base URL and zone-name map."""

    def __init__(
        self, fetcher: HttpFetcher, clock: Clock, *, url: str, zones: dict[str, str] | None, name: str
    ) -> None:
        self.http = fetcher
        self.clock = clock
        self.url = url.rstrip("/")
        self.zones = zones or {}
        self.name = name
