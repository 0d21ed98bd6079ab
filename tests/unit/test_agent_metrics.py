"""The agent's /metrics: energy series are Prometheus counters named as the dashboard queries them."""

from prometheus_client.parser import text_string_to_metric_families

from greenjobs_agent.metrics import AgentMetrics


def test_energy_series_are_counters_with_total_suffix_and_can_be_removed() -> None:
    m = AgentMetrics("gpu-gb-0")
    m.gpu_energy.set(1234.5, gpu="0")
    m.job_energy.set(99.0, namespace="ml", job="llm")
    m.gpu_cap.labels(gpu="0").set(250)
    families = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert families["greenjobs_gpu_energy_joules"].type == "counter"
    [sample] = [s for s in families["greenjobs_gpu_energy_joules"].samples if s.name.endswith("_total")]
    assert sample.name == "greenjobs_gpu_energy_joules_total" and sample.value == 1234.5
    assert sample.labels == {"gpu": "0"}
    job = [s for s in families["greenjobs_job_energy_joules"].samples if s.name.endswith("_total")]
    assert [(s.labels, s.value) for s in job] == [({"namespace": "ml", "job": "llm"}, 99.0)]
    m.job_energy.remove("ml", "llm")
    after = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert after["greenjobs_job_energy_joules"].samples == []
