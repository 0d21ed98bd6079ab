"""Host energy sources: Kepler through Prometheus, node RAPL by CPU-time share, watts per GPU, the chain.

Prometheus answers are shaped as its HTTP API documents them
(https://prometheus.io/docs/prometheus/latest/querying/api/): an envelope with `status`, `data.resultType`
and `data.result`, samples as `{"metric": {...}, "value": [<unix time>, "<value>"]}`, and errors as
`{"status": "error", "errorType": "bad_data", "error": "..."}` with HTTP 400.
"""

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from greenjobs.accounting.host_energy import (
    KEPLER,
    KEPLER_LEGACY,
    RAPL_CPU_SHARE,
    WATTS_PER_GPU,
    HostEnergy,
    HostEnergyChain,
    JobRef,
    NodeWindow,
    RaplCpuShare,
    WattsPerGpu,
    cpu_share_joules,
)
from greenjobs.accounting.kepler import KeplerSource, PrometheusRaplReader, current_query, legacy_query
from greenjobs.accounting.prometheus import Prometheus
from greenjobs.carbon.providers.base import BadResponse, ProviderError, Unavailable
from greenjobs.carbon.providers.http import HttpFetcher

T = 1764396000.123
START = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)
JOB = JobRef("ml", "train", start=START, end=START + timedelta(hours=2), gpu_seconds=16 * 7200.0)


def vector(*samples: tuple[dict[str, str], str]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": m, "value": [T, v]} for m, v in samples]},
    }


def prom(handler: Callable[[httpx.Request], httpx.Response]) -> Prometheus:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    fetcher = HttpFetcher(client, "prometheus", retries=1, sleep=lambda s: None, rng=random.Random(1))
    return Prometheus("http://prometheus.monitoring:9090/", fetcher=fetcher)


def queries_of(seen: list[httpx.Request]) -> list[str]:
    return [parse_qs(urlparse(str(r.url)).query)["query"][0] for r in seen]


def test_kepler_sums_package_and_dram_of_the_jobs_pods() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        # `sum by (zone)` over kepler_pod_cpu_joules_total: one sample per RAPL zone.
        return httpx.Response(
            200,
            json=vector(({"zone": "package"}, "5400000"), ({"zone": "dram"}, "720000"), ({"zone": "core"}, "4000000")),
        )

    got = KeplerSource(prom(handler)).job_energy(JOB)
    assert got == HostEnergy(
        method=KEPLER,
        cpu_joules=5.4e6,
        dram_joules=7.2e5,
        detail="kepler_pod_cpu_joules_total zones dram+package",
    )  # core is part of package: not added again
    assert str(seen[0].url).startswith("http://prometheus.monitoring:9090/api/v1/query?")
    q = queries_of(seen)[0]
    assert q == current_query(JOB)
    assert 'kepler_pod_cpu_joules_total{pod_namespace="ml",pod_name=~"train-([0-9]+-)?[a-z0-9]{5}"}' in q
    assert q.startswith("sum by (zone) (")


def test_kepler_with_explicit_pods_and_a_psys_zone() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=vector(({"zone": "psys"}, "100"), ({"zone": "package"}, "60")))

    job = JobRef("ml", "train", pods=("train-0-abcde", "train-1-fghij"))
    got = KeplerSource(prom(handler), zones=("psys",)).job_energy(job)
    assert got is not None and got.other_joules == 100 and got.cpu_joules == 0
    assert 'pod_name=~"train\\\\-0\\\\-abcde|train\\\\-1\\\\-fghij"' in queries_of(seen)[0]


def test_kepler_without_series_for_the_job_knows_nothing() -> None:
    source = KeplerSource(prom(lambda r: httpx.Response(200, json=vector())))
    assert source.job_energy(JOB) is None


def test_kepler_legacy_metrics() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json=vector(
                ({"__name__": "kepler_container_package_joules_total"}, "300"),
                ({"__name__": "kepler_container_dram_joules_total"}, "40"),
                ({"__name__": "kepler_container_other_joules_total"}, "60"),
            ),
        )

    got = KeplerSource(prom(handler), schema="legacy").job_energy(JOB)
    assert got is not None and got.method == KEPLER_LEGACY
    assert (got.cpu_joules, got.dram_joules, got.other_joules, got.joules) == (300, 40, 60, 400)
    q = queries_of(seen)[0]
    assert q == legacy_query(JOB) and 'container_namespace="ml"' in q and q.startswith("sum by (__name__)")


def test_prometheus_error_envelope_becomes_a_provider_error() -> None:
    body = {"status": "error", "errorType": "bad_data", "error": 'parse error at char 5: unexpected "}"'}
    source = KeplerSource(prom(lambda r: httpx.Response(400, json=body)))
    with pytest.raises(ProviderError, match=r"query refused \(HTTP 400, bad_data\): parse error"):
        source.job_energy(JOB)


def test_prometheus_outage_and_garbage() -> None:
    with pytest.raises(Unavailable):
        KeplerSource(prom(lambda r: httpx.Response(503, text="down"))).job_energy(JOB)
    with pytest.raises(BadResponse, match="malformed JSON"):
        KeplerSource(prom(lambda r: httpx.Response(200, text="<html>"))).job_energy(JOB)
    bad_value = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [T, "x"]}]}}
    with pytest.raises(BadResponse, match="not a number"):
        KeplerSource(prom(lambda r: httpx.Response(200, json=bad_value))).job_energy(JOB)


def test_query_range_reads_a_matrix() -> None:
    body = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [{"metric": {"job": "train"}, "values": [[T, "100"], [T + 60, "NaN"], [T + 120, "300"]]}],
        },
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=body)

    series = prom(handler).query_range("up", START, START + timedelta(minutes=2), timedelta(seconds=60))
    assert [v for _, v in series[0].points] == [100.0, 300.0]  # NaN skipped
    params = parse_qs(urlparse(str(seen[0].url)).query)
    assert params["step"] == ["60"] and "/api/v1/query_range" in str(seen[0].url)


def test_cpu_share_attribution() -> None:
    assert cpu_share_joules(1000.0, 30.0, 120.0) == pytest.approx(250.0)
    assert cpu_share_joules(1000.0, 50.0, 40.0) == pytest.approx(1000.0)  # clamped at the whole node
    assert cpu_share_joules(1000.0, 5.0, 0.0) == 0.0
    with pytest.raises(ValueError, match="node_joules"):
        cpu_share_joules(-1.0, 1.0, 1.0)


def test_rapl_share_over_several_nodes() -> None:
    windows = {
        "n1": NodeWindow(package_joules=1000.0, dram_joules=200.0, job_cpu_seconds=60.0, busy_cpu_seconds=120.0),
        "n2": NodeWindow(package_joules=500.0, dram_joules=100.0, job_cpu_seconds=10.0, busy_cpu_seconds=100.0),
    }
    got = RaplCpuShare(lambda job: windows).job_energy(JOB)
    assert got is not None and got.method == RAPL_CPU_SHARE
    assert got.cpu_joules == pytest.approx(500.0 + 50.0) and got.dram_joules == pytest.approx(100.0 + 10.0)
    assert RaplCpuShare(lambda job: windows).job_energy(JobRef("ml", "train")) is None  # not started


def test_prometheus_rapl_reader_queries_by_node_over_the_run() -> None:
    answers = {
        "node_rapl_package_joules_total": vector(({"node": "n1"}, "7200000"), ({"node": "n2"}, "1")),
        "node_rapl_dram_joules_total": vector(({"node": "n1"}, "720000")),
        "container_cpu_usage_seconds_total": vector(({"node": "n1"}, "1800")),
        "node_cpu_seconds_total": vector(({"node": "n1"}, "3600")),
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        q = parse_qs(urlparse(str(request.url)).query)["query"][0]
        return httpx.Response(200, json=next(v for k, v in answers.items() if k in q))

    got = RaplCpuShare(PrometheusRaplReader(prom(handler))).job_energy(JOB)
    assert got is not None
    assert got.cpu_joules == pytest.approx(3.6e6) and got.dram_joules == pytest.approx(3.6e5)
    qs = queries_of(seen)
    assert all("[7200s]" in q for q in qs)
    assert any('namespace="ml",pod=~"train-([0-9]+-)?[a-z0-9]{5}",container=""' in q for q in qs)
    times = {parse_qs(urlparse(str(r.url)).query)["time"][0] for r in seen}
    assert times == {f"{(START + timedelta(hours=2)).timestamp():.3f}"}  # evaluated at the job's end


def test_watts_per_gpu() -> None:
    got = WattsPerGpu(350.0).job_energy(JOB)
    assert got is not None and got.method == WATTS_PER_GPU
    assert got.joules == pytest.approx(350.0 * 16 * 7200.0)
    assert WattsPerGpu(0.0).job_energy(JOB) is None
    with pytest.raises(ValueError, match="wattsPerGpu"):
        WattsPerGpu(-5.0)


def test_chain_falls_back_past_failures_and_silence() -> None:
    calls: list[str] = []

    class Broken:
        name = "kepler"

        def job_energy(self, job: JobRef) -> HostEnergy | None:
            calls.append(self.name)
            raise Unavailable("prometheus: cannot connect")

    class Silent:
        name = "rapl-cpu-share"

        def job_energy(self, job: JobRef) -> HostEnergy | None:
            calls.append(self.name)
            return None

    chain = HostEnergyChain([Broken(), Silent(), WattsPerGpu(100.0)])
    got = chain.job_energy(JOB)
    assert got is not None and got.method == WATTS_PER_GPU and calls == ["kepler", "rapl-cpu-share"]
    assert HostEnergyChain([Silent()]).job_energy(JOB) is None


def test_host_energy_refuses_negative_or_nan_joules() -> None:
    with pytest.raises(ValueError, match="cpu_joules"):
        HostEnergy(method=KEPLER, cpu_joules=float("nan"))
