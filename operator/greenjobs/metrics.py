"""Prometheus metrics of the operator."""

import threading
from collections import Counter as Tally
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from greenjobs.api.constants import Phase


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.jobs = Gauge(
            "greenjobs_jobs", "GreenTrainingJobs the operator watches, by phase (settled ones leave)", ["phase"],
            registry=r,
        )  # fmt: skip
        self.settled = Counter(
            "greenjobs_jobs_settled_total", "Finished jobs labelled settled and let out of the watch", registry=r
        )
        self.planned_savings = Histogram(
            "greenjobs_planned_savings_percent",
            "Expected CO2e savings of each plan vs starting at once, percent",
            buckets=(0, 5, 10, 20, 30, 40, 50, 60, 80, 100),
            registry=r,
        )
        self.plans = Counter("greenjobs_plans_total", "Plans made, by reason", ["reason"], registry=r)
        # Counted once per accounting, after its status write succeeded (a 409 and its retry add nothing twice).
        self.energy = Counter(
            "greenjobs_energy_kwh_total", "Energy accounted, total of GPU, host and facility, kWh", registry=r
        )
        self.co2e = Counter(
            "greenjobs_co2e_grams_total", "Emissions accounted, total of operational and embodied, gCO2e", registry=r
        )
        # The split of the two totals above (greenjobs.accounting.footprint).
        self.footprint_energy = Counter(
            "greenjobs_footprint_energy_kwh_total", "Energy accounted by part: gpu, host, facility; kWh", ["part"],
            registry=r,
        )  # fmt: skip
        self.footprint_co2e = Counter(
            "greenjobs_footprint_co2e_grams_total",
            "Emissions accounted by part: gpu, host, facility (operational) and embodied; gCO2e",
            ["part"],
            registry=r,
        )
        self.forecast_errors = Counter(
            "greenjobs_forecast_errors_total", "Forecast provider errors", ["provider", "kind"], registry=r
        )
        self.forecast_latency = Histogram(
            "greenjobs_forecast_latency_seconds", "Forecast provider call latency", ["provider"], registry=r
        )
        self.api_writes = Counter(
            "greenjobs_api_writes_total", "Writes the operator sent to the API server", ["kind"], registry=r
        )
        self._phases: dict[str, str] = {}
        self._counts: Tally[str] = Tally()
        self._phase_lock = threading.Lock()  # kopf's threads and the workers all report phases
        for phase in Phase.ALL:
            self.jobs.labels(phase).set(0)

    def observe_phase(self, uid: str, phase: str | None) -> None:
        """Track each job's phase; O(1) per call (it runs on every tick of every job), under a lock: the
        read-modify-write of the counts from several threads would otherwise lose updates."""
        with self._phase_lock:
            old = self._phases.pop(uid, None) if phase is None else self._phases.get(uid)
            if old == phase:
                return
            if phase is not None:
                self._phases[uid] = phase
                self._counts[phase] += 1
                self.jobs.labels(phase).set(self._counts[phase])
            if old is not None:
                self._counts[old] -= 1
                self.jobs.labels(old).set(self._counts[old])

    def on_footprint(self, energy_k_wh: Mapping[str, float], co2e_grams: Mapping[str, float]) -> None:
        """Add what one accounting added, per part (Footprint.increments_since gives both mappings)."""
        for part, k_wh in energy_k_wh.items():
            self.footprint_energy.labels(part).inc(max(k_wh, 0.0))
        for part, grams in co2e_grams.items():
            self.footprint_co2e.labels(part).inc(max(grams, 0.0))

    def on_forecast_error(self, provider: str, zone: str, kind: str) -> None:
        self.forecast_errors.labels(provider, kind).inc()

    def on_forecast_latency(self, provider: str, seconds: float) -> None:
        self.forecast_latency.labels(provider).observe(seconds)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from the pod network
        start_http_server(port, addr=addr, registry=self.registry)
