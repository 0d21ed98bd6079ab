"""The shared HTTP policy: timeouts, retries with backoff, 429 Retry-After, no retry on other 4xx."""

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from greenjobs.carbon.providers.base import BadResponse, RateLimited, TimedOut, Unavailable
from greenjobs.carbon.providers.http import HttpFetcher, parse_retry_after

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
URL = "https://api.example.test/v3/thing"


def fetcher(handler: Callable[[httpx.Request], httpx.Response], sleeps: list[float], retries: int = 2) -> HttpFetcher:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return HttpFetcher(client, "demo", retries=retries, sleep=sleeps.append, clock=lambda: NOW, rng=random.Random(7))


def scripted(
    *answers: httpx.Response | Exception,
) -> tuple[Callable[[httpx.Request], httpx.Response], list[int]]:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        answer = answers[min(len(calls), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler, calls


def test_500_then_success_retries_with_backoff() -> None:
    handler, calls = scripted(httpx.Response(500, text="oops"), httpx.Response(200, json={"ok": 1}))
    sleeps: list[float] = []
    resp = fetcher(handler, sleeps).get(URL)
    assert resp.status_code == 200 and len(calls) == 2
    # First backoff: base 0.5 s with equal jitter -> within [0.25, 0.5].
    assert len(sleeps) == 1 and 0.25 <= sleeps[0] <= 0.5


def test_backoff_grows_exponentially_and_is_capped() -> None:
    f = fetcher(lambda r: httpx.Response(200), [])
    for attempt in range(8):
        full = min(f.backoff_max_s, f.backoff_s * 2**attempt)
        delays = {f.backoff(attempt) for _ in range(20)}
        assert all(full / 2 <= d <= full for d in delays)
        assert len(delays) > 1  # jittered


def test_timeouts_exhaust_retries() -> None:
    handler, calls = scripted(httpx.ReadTimeout("slow"))
    sleeps: list[float] = []
    with pytest.raises(TimedOut, match=r"timed out after 10s \(after 3 attempts\)") as err:
        fetcher(handler, sleeps).get(URL)
    assert err.value.kind == "timeout"
    assert len(calls) == 3 and len(sleeps) == 2


def test_connect_error_then_success() -> None:
    handler, calls = scripted(httpx.ConnectError("refused"), httpx.Response(200, json={}))
    assert fetcher(handler, []).get(URL).status_code == 200
    assert len(calls) == 2


def test_persistent_503_is_unavailable_with_api_message() -> None:
    handler, calls = scripted(httpx.Response(503, json={"message": "maintenance"}))
    with pytest.raises(Unavailable, match="HTTP 503: maintenance"):
        fetcher(handler, [], retries=1).get(URL)
    assert len(calls) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_4xx_are_not_retried(status: int) -> None:
    handler, calls = scripted(httpx.Response(status, json={"error": "no"}))
    sleeps: list[float] = []
    assert fetcher(handler, sleeps).get(URL).status_code == status
    assert len(calls) == 1 and sleeps == []


def test_429_honours_retry_after_seconds() -> None:
    handler, calls = scripted(httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200, json={"ok": True}))
    sleeps: list[float] = []
    assert fetcher(handler, sleeps).get(URL).status_code == 200
    assert sleeps == [3.0] and len(calls) == 2


def test_429_honours_retry_after_http_date() -> None:
    when = format_datetime(NOW + timedelta(seconds=7), usegmt=True)
    handler, _ = scripted(httpx.Response(429, headers={"Retry-After": when}), httpx.Response(200))
    sleeps: list[float] = []
    fetcher(handler, sleeps).get(URL)
    assert sleeps == [7.0]


def test_429_beyond_cap_fails_fast_with_retry_after() -> None:
    handler, calls = scripted(httpx.Response(429, headers={"Retry-After": "3600"}))
    sleeps: list[float] = []
    with pytest.raises(RateLimited) as err:
        fetcher(handler, sleeps).get(URL)
    assert err.value.retry_after == 3600.0 and sleeps == [] and len(calls) == 1


def test_429_until_retries_run_out() -> None:
    handler, calls = scripted(httpx.Response(429, headers={"Retry-After": "1"}))
    sleeps: list[float] = []
    with pytest.raises(RateLimited):
        fetcher(handler, sleeps, retries=2).get(URL)
    assert sleeps == [1.0, 1.0] and len(calls) == 3


def test_parse_retry_after() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(format_datetime(NOW - timedelta(seconds=5), usegmt=True), NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_malformed_json_is_bad_response() -> None:
    f = fetcher(lambda r: httpx.Response(200, text="{not json"), [])
    with pytest.raises(BadResponse, match="malformed JSON"):
        f.json(f.get(URL))


def test_error_details_are_redacted() -> None:
    f = fetcher(lambda r: httpx.Response(400, json={"error": "bad token s3cr3t-key"}), [])
    f.secrets = lambda: ["s3cr3t-key"]
    detail = f.detail(f.get(URL))
    assert "s3cr3t-key" not in detail and "bad token ***" in detail
