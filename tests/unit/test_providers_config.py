"""The `providers:` configuration and the caching failover chain built from it."""

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
import yaml

from greenjobs.carbon.providers import AllProvidersFailed, build_provider, parse_specs
from greenjobs.carbon.providers.config import CarbonAwareSpec, ElectricityMapsSpec, FileSpec, ReplaySpec

FIXTURES = Path(__file__).parents[1] / "fixtures" / "providers"
NOW = datetime(2026, 11, 23, 14, 40, tzinfo=UTC)
KEY = "em-secret-0123456789"


def body(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def config(tmp_path: Path) -> list[Any]:
    (tmp_path / "em-key").write_text(KEY)
    forecasts = tmp_path / "forecasts"
    forecasts.mkdir()
    (forecasts / "FR.csv").write_text("Time,Carbon Intensity\n2026-11-23 00:00:00,55\n")
    text = f"""
providers:
- type: electricitymaps
  apiKeyFile: {tmp_path / "em-key"}
  timeoutSeconds: 5
  retries: 1
- type: nationalgrid
- type: file
  path: {forecasts}
"""
    return parse_specs(yaml.safe_load(text)["providers"])


def test_specs_parse_with_defaults_and_aliases(tmp_path: Path) -> None:
    specs = config(tmp_path)
    assert [s.type for s in specs] == ["electricitymaps", "nationalgrid", "file"]
    em = specs[0]
    assert isinstance(em, ElectricityMapsSpec)
    assert em.timeout_seconds == 5 and em.retries == 1 and em.url == "https://api.electricitymap.org"
    assert KEY not in repr(specs)  # only the file's path is configuration
    replay = parse_specs([{"type": "replay", "traces": {"GB": "/d/gb.csv"}, "anchor": "2020-01-01T00:00:00Z"}])
    assert isinstance(replay[0], ReplaySpec) and replay[0].speedup == 1.0


@pytest.mark.parametrize(
    "entry,field",
    [
        ({"type": "carbonaware"}, "url"),
        ({"type": "file", "path": "/x", "apiKey": "inline"}, "apiKey"),
        ({"type": "nope"}, "type"),
        (
            {"type": "replay", "traces": {"GB": "/x"}, "anchor": "2020-01-01T00:00:00Z", "speedup": 0},
            "speedup",
        ),
        ({"type": "nationalgrid", "timeoutSeconds": -1}, "timeoutSeconds"),
    ],
)
def test_bad_specs_name_the_field(entry: dict[str, Any], field: str) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        parse_specs([entry])
    assert field in str(err.value)


def routes(em_status: int, ng_ok: bool) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "api.electricitymap.org":
            return httpx.Response(em_status, json={"error": f"bad token {request.headers.get('auth-token')}"})
        if request.url.host == "api.carbonintensity.org.uk" and ng_ok:
            name = "nationalgrid_intensity.json" if request.url.path == "/intensity" else "nationalgrid_fw48h.json"
            return httpx.Response(200, json=body(name))
        raise httpx.ConnectError("unreachable", request=request)

    return httpx.MockTransport(handler)


def test_chain_fails_over_in_order_and_caches(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[tuple[str, str, str]] = []
    latencies: list[str] = []
    requests: list[str] = []
    transport = routes(401, ng_ok=True)

    def counting(request: httpx.Request) -> httpx.Response:
        requests.append(request.url.host)
        return transport.handle_request(request)

    chain = build_provider(
        config(tmp_path),
        lambda: NOW,
        timedelta(minutes=10),
        httpx.Client(transport=httpx.MockTransport(counting)),
        on_error=lambda p, z, k: errors.append((p, z, k)),
        on_latency=lambda p, s: latencies.append(p),
        sleep=lambda s: None,
    )
    fc = chain.forecast("GB", NOW, NOW + timedelta(hours=6))
    assert fc.source == "nationalgrid" and fc.zone == "GB"
    assert errors == [("electricitymaps", "GB", "auth")]
    assert requests == ["api.electricitymap.org", "api.carbonintensity.org.uk"]
    chain.forecast("GB", NOW, NOW + timedelta(hours=6))  # nationalgrid answers from its cache
    assert requests.count("api.carbonintensity.org.uk") == 1
    # FR: electricitymaps refused, nationalgrid doesn't serve FR, the ConfigMap file does.
    assert chain.current("FR") == 55.0
    assert errors[-1] == ("nationalgrid", "FR", "zone_unknown")
    assert KEY not in caplog.text


def test_all_fail_with_each_reason_and_no_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = httpx.Client(transport=routes(500, ng_ok=False))
    chain = build_provider(config(tmp_path), lambda: NOW, timedelta(minutes=10), client, sleep=lambda s: None)
    with pytest.raises(AllProvidersFailed) as err:
        chain.forecast("DE", NOW, NOW + timedelta(hours=1))
    reasons = err.value.errors
    assert list(reasons) == ["electricitymaps", "nationalgrid", "file"]
    assert "HTTP 500" in reasons["electricitymaps"] and "(after 2 attempts)" in reasons["electricitymaps"]
    assert "serves GB" in reasons["nationalgrid"]
    assert "no DE.csv" in reasons["file"]
    for text in (str(err.value), repr(err.value), caplog.text, json.dumps(reasons)):
        assert KEY not in text


def test_duplicate_types_get_distinct_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    hour = f"{NOW:%Y-%m-%d %H}"
    (tmp_path / "b" / "GB.csv").write_text(f"Time,Carbon Intensity\n{hour}:00:00,1\n{hour}:30:00,1\n")
    specs = [FileSpec(type="file", path=tmp_path / "a"), FileSpec(type="file", path=tmp_path / "b")]
    chain = build_provider(specs, lambda: NOW, timedelta(minutes=1))
    assert [p.name for p in chain.inner.providers] == ["file", "file-2"]
    assert chain.forecast("GB", NOW, NOW + timedelta(hours=1)).source == "file-2"
    assert CarbonAwareSpec(type="carbonaware", url="http://x").name is None
