"""The whole footprint of a job: GPU, host and facility energy; operational and embodied emissions.

The operator already meters GPU energy (greenjobs.accounting.energy). `account_footprint` wraps that
accounting and adds, each with the method it came from:

- host energy (CPU, DRAM, ...) of the job's pods, cumulative joules from a HostEnergySource
  (greenjobs.accounting.host_energy), charged like GPU energy: only joules above a high-water mark are
  new, at the zone's intensity now;
- facility overhead: (PUE - 1) x (GPU + host) energy, at the same intensities, so its grams are
  exactly (PUE - 1) x (GPU + host grams);
- embodied emissions: GPU-hours x the hardware's manufacturing emissions amortised per GPU-hour (the
  GPU's own, plus its share of the server's), independent of the grid.

Totals: energy.kWh = GPU + host + facility; emissions.grams = operational + embodied. Budgets
compare these totals. emissions.avgGPerKWh stays the grid intensity the job ran at (operational
grams / total kWh). Every default factor and its source are listed in docs/savings.md.

State lives in the status (gpuGrams, hostGrams, accountedJoules, accountedHostJoules), so the same
call made twice, or after a restart, adds nothing, as with the GPU accounting.
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from greenjobs.api.durations import parse_time
from greenjobs.api.models import Emissions, EmissionsMethods, EnergyMethods, NodeEnergy
from greenjobs.carbon.providers.http import HttpFetcher

from .energy import JOULES_PER_KWH, Accounting, IntensityOf, account
from .host_energy import (
    NONE,
    BackgroundHostEnergy,
    HostEnergy,
    HostEnergyChain,
    HostEnergySource,
    JobRef,
    RaplCpuShare,
    WattsPerGpu,
)
from .kepler import DEFAULT_ZONES, KeplerSource, PrometheusRaplReader, RaplQueries, Schema
from .prometheus import Prometheus

HOURS_PER_YEAR = 8760.0

# Defaults, each with its source (docs/savings.md explains them).
# Uptime Institute, Global Data Center Survey 2023: industry-average annual PUE 1.58.
DEFAULT_PUE = 1.58
DEFAULT_PUE_SOURCE = "Uptime Institute Global Data Center Survey 2023 average"
# Luccioni, Viguier & Ligozat, "Estimating the Carbon Footprint of BLOOM", JMLR 24(253), 2023: 150 kg
# CO2e per A100 GPU and 2,500 kg per HPE Apollo 6500 Gen10 Plus server without its GPUs (8 GPUs per
# server), replaced after 6 years, used 85 % of the time.
DEFAULT_GPU_KG = 150.0
DEFAULT_SERVER_KG = 2500.0
DEFAULT_GPUS_PER_SERVER = 8
DEFAULT_LIFETIME_YEARS = 6.0
DEFAULT_UTILIZATION = 0.85
DEFAULT_EMBODIED_SOURCE = "Luccioni et al., JMLR 24(253) 2023 (BLOOM LCA)"
# Latif et al., IEEE Access 13 (2025): an 8 x H100 HGX node drew at most 8.4 kW while training; less
# 8 x 700 W of GPU TDP leaves ~2.8 kW for the rest of the node: 350 W per GPU.
DEFAULT_HOST_WATTS_PER_GPU = 350.0


class _Config(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class EmbodiedFactors(_Config):
    """Life-cycle (cradle-to-gate) emissions of the hardware, amortised over its service life."""

    gpu_kg_co2e: float = Field(DEFAULT_GPU_KG, ge=0, alias="gpuKgCO2e", description="Manufacturing of one GPU.")
    server_kg_co2e: float = Field(
        DEFAULT_SERVER_KG, ge=0, alias="serverKgCO2e", description="Manufacturing of one server without its GPUs."
    )
    gpus_per_server: int = Field(DEFAULT_GPUS_PER_SERVER, ge=1, alias="gpusPerServer")
    lifetime_years: float = Field(DEFAULT_LIFETIME_YEARS, gt=0, alias="lifetimeYears")
    utilization: float = Field(
        DEFAULT_UTILIZATION, gt=0, le=1, description="Share of its life the hardware runs jobs (who pays for it)."
    )
    source: str = Field(DEFAULT_EMBODIED_SOURCE, description="Where the figures come from, shown in the status.")

    @property
    def service_hours(self) -> float:
        return self.lifetime_years * HOURS_PER_YEAR * self.utilization

    @property
    def g_per_gpu_hour(self) -> float:
        """The GPU's own manufacturing, per hour of use."""
        return self.gpu_kg_co2e * 1000.0 / self.service_hours

    @property
    def g_per_server_hour(self) -> float:
        return self.server_kg_co2e * 1000.0 / self.service_hours

    @property
    def g_per_job_gpu_hour(self) -> float:
        """What one GPU-hour of a job carries: its GPU, and 1/gpusPerServer of a server-hour."""
        return self.g_per_gpu_hour + self.g_per_server_hour / self.gpus_per_server

    def describe(self) -> str:
        return (
            f"{self.g_per_job_gpu_hour:.2f} g per GPU-hour: {self.gpu_kg_co2e:g} kg per GPU + "
            f"{self.server_kg_co2e:g} kg per {self.gpus_per_server}-GPU server, over {self.lifetime_years:g} y "
            f"at {100 * self.utilization:g} % use ({self.source})"
        )


class KeplerConfig(_Config):
    prometheus_url: str = Field(alias="prometheusURL", min_length=1, description="Prometheus that scrapes Kepler.")
    schema_: Schema = Field("current", alias="schema", description="current (Kepler >= 0.10) or legacy (<= 0.7).")
    zones: tuple[str, ...] = Field(DEFAULT_ZONES, min_length=1, description="RAPL zones summed (current schema).")


class RaplConfig(_Config):
    prometheus_url: str = Field(alias="prometheusURL", min_length=1)
    node_label: str = Field("node", alias="nodeLabel")
    package_query: str | None = Field(None, alias="packageQuery")
    dram_query: str | None = Field(None, alias="dramQuery")
    job_cpu_query: str | None = Field(None, alias="jobCpuQuery")
    busy_cpu_query: str | None = Field(None, alias="busyCpuQuery")

    def queries(self) -> RaplQueries:
        base = RaplQueries(node_label=self.node_label)
        return RaplQueries(
            node_label=self.node_label,
            package=self.package_query or base.package,
            dram=self.dram_query or base.dram,
            job_cpu=self.job_cpu_query or base.job_cpu,
            busy_cpu=self.busy_cpu_query or base.busy_cpu,
        )


class HostConfig(_Config):
    kepler: KeplerConfig | None = None
    rapl: RaplConfig | None = None
    watts_per_gpu: float = Field(
        DEFAULT_HOST_WATTS_PER_GPU,
        ge=0,
        alias="wattsPerGpu",
        description="Fallback estimate of host power per GPU in use, W; 0 counts no host energy without a measurement.",
    )
    timeout_seconds: float = Field(10.0, gt=0, alias="timeoutSeconds")

    @property
    def measured(self) -> bool:
        """A measured source (Kepler, RAPL) is configured, beyond the watts-per-GPU estimate."""
        return self.kepler is not None or self.rapl is not None


class FootprintFactors(_Config):
    """The `footprint` section of the operator configuration. Every field has a cited default."""

    pue: float = Field(DEFAULT_PUE, ge=1, description="Power usage effectiveness of every zone not in pueByZone.")
    pue_source: str = Field(DEFAULT_PUE_SOURCE, alias="pueSource")
    pue_by_zone: dict[str, float] = Field(default_factory=dict, alias="pueByZone")
    embodied: EmbodiedFactors = Field(default_factory=EmbodiedFactors)
    host: HostConfig = Field(default_factory=HostConfig)

    @field_validator("pue_by_zone")
    @classmethod
    def _pues(cls, v: dict[str, float]) -> dict[str, float]:
        for zone, pue in v.items():
            if not math.isfinite(pue) or pue < 1:
                raise ValueError(f"pueByZone.{zone} must be a number >= 1, not {pue!r}")
        return v

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> "FootprintFactors":
        """Parse the operator configuration's `footprint` mapping; ValueError names the bad field."""
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"footprint.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            raise ValueError(problems) from None

    def pue_for(self, zone: str | None) -> float:
        return self.pue_by_zone.get(zone, self.pue) if zone else self.pue

    def pue_method(self, zone: str | None) -> str:
        if zone and zone in self.pue_by_zone:
            return f"PUE {self.pue_by_zone[zone]:g} (configured for zone {zone})"
        return f"PUE {self.pue:g} ({self.pue_source})"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_host_source(
    config: HostConfig, client: httpx.Client | None = None, clock: Callable[[], datetime] | None = None
) -> HostEnergySource:
    """The chain Kepler -> RAPL by CPU share -> watts per GPU, as far as configured."""
    measured: list[HostEnergySource] = []
    http = client or httpx.Client(timeout=config.timeout_seconds)
    # One retry at most; the chain falls back on failure.
    fetcher = HttpFetcher(http, "prometheus", timeout_s=config.timeout_seconds, retries=1)
    if config.kepler is not None:
        prom = Prometheus(config.kepler.prometheus_url, fetcher=fetcher)
        measured.append(KeplerSource(prom, schema=config.kepler.schema_, zones=config.kepler.zones))
    if config.rapl is not None:
        prom = Prometheus(config.rapl.prometheus_url, fetcher=fetcher)
        measured.append(RaplCpuShare(PrometheusRaplReader(prom, config.rapl.queries())))
    sources: list[HostEnergySource] = []
    if measured:
        # Prometheus is queried off the accounting's thread, behind a circuit breaker (host_energy.py).
        sources.append(BackgroundHostEnergy(HostEnergyChain(measured, name="prometheus"), clock or _utc_now))
    sources.append(WattsPerGpu(config.watts_per_gpu))
    return HostEnergyChain(sources)


# ---------------------------------------------------------------- accounting


@dataclass(frozen=True)
class Footprint:
    gpu: Accounting  # the GPU accounting (kWh, GPU-hours, grams, per-node marks)
    host_k_wh: float
    host_grams: float
    host_joules_mark: float  # high-water mark of the host counter
    host_method: str
    pue: float
    pue_method: str
    embodied_grams: float
    embodied_method: str

    @property
    def gpu_k_wh(self) -> float:
        return self.gpu.k_wh

    @property
    def facility_k_wh(self) -> float:
        return (self.pue - 1.0) * (self.gpu.k_wh + self.host_k_wh)

    @property
    def facility_grams(self) -> float:
        return (self.pue - 1.0) * (self.gpu.grams + self.host_grams)

    @property
    def k_wh(self) -> float:
        """TOTAL energy: what budgets compare with maxEnergyKWh."""
        return self.gpu.k_wh + self.host_k_wh + self.facility_k_wh

    @property
    def operational_grams(self) -> float:
        return self.gpu.grams + self.host_grams + self.facility_grams

    @property
    def grams(self) -> float:
        """TOTAL gCO2e: what budgets compare with maxCO2eKg."""
        return self.operational_grams + self.embodied_grams

    @property
    def avg_g_per_kwh(self) -> float | None:
        return self.operational_grams / self.k_wh if self.k_wh > 0 else None

    def parts(self) -> tuple[dict[str, float], dict[str, float]]:
        """Cumulative energy (kWh) and emissions (g) by part, as the metrics label them."""
        energy = {"gpu": self.gpu_k_wh, "host": self.host_k_wh, "facility": self.facility_k_wh}
        grams = {
            "gpu": self.gpu.grams,
            "host": self.host_grams,
            "facility": self.facility_grams,
            "embodied": self.embodied_grams,
        }
        return energy, grams

    def increments_since(
        self, energy: Mapping[str, Any] | None, emissions: Mapping[str, Any] | None
    ) -> tuple[dict[str, float], dict[str, float]]:
        """What this accounting added to each part, against the status it started from (for counters).

        A status from before the split has only GPU figures in kWh and grams.
        """
        energy, emissions = energy or {}, emissions or {}
        split = emissions.get("gpuGrams") is not None
        before_energy = {
            "gpu": float((energy.get("gpuKWh") if split else energy.get("kWh")) or 0.0),
            "host": float(energy.get("hostKWh") or 0.0),
            "facility": float(energy.get("facilityKWh") or 0.0),
        }
        before_grams = {
            "gpu": float((emissions.get("gpuGrams") if split else emissions.get("grams")) or 0.0),
            "host": float(emissions.get("hostGrams") or 0.0),
            "facility": float(emissions.get("facilityGrams") or 0.0),
            "embodied": float(emissions.get("embodiedGrams") or 0.0),
        }
        now_energy, now_grams = self.parts()
        return (
            {k: max(v - before_energy[k], 0.0) for k, v in now_energy.items()},
            {k: max(v - before_grams[k], 0.0) for k, v in now_grams.items()},
        )

    def status_patch(self) -> dict[str, dict[str, Any]]:
        """`{"energy": {...}, "emissions": {...}}` to merge into status (energy.nodes is the agents')."""
        energy = {
            "kWh": round(self.k_wh, 4),
            "gpuHours": round(self.gpu.gpu_hours, 4),
            "gpuKWh": round(self.gpu_k_wh, 4),
            "hostKWh": round(self.host_k_wh, 4),
            "facilityKWh": round(self.facility_k_wh, 4),
            "pue": self.pue,
            "methods": EnergyMethods(gpu="nvml", host=self.host_method, facility=self.pue_method).dump(),
        }
        avg = self.avg_g_per_kwh
        emissions = Emissions(
            # Grams are state (the next call adds to gpuGrams and hostGrams): 1 mg, as accounting.rounded.
            grams=round(self.grams, 3),
            avg_g_per_k_wh=None if avg is None else round(avg, 1),
            operational_grams=round(self.operational_grams, 3),
            embodied_grams=round(self.embodied_grams, 3),
            gpu_grams=round(self.gpu.grams, 3),
            host_grams=round(self.host_grams, 3),
            facility_grams=round(self.facility_grams, 3),
            methods=EmissionsMethods(
                operational="energy x the zone's intensity when it was used (GPU energy reported late: "
                "of its interval of use); facility = (PUE - 1) x IT",
                embodied=self.embodied_method,
            ),
            accounted_joules=dict(self.gpu.accounted_joules),
            accounted_host_joules=self.host_joules_mark,
        ).dump()
        return {"energy": energy, "emissions": emissions}


def gpu_state(previous: Emissions | None) -> Emissions | None:
    """The GPU-only accounting state inside a status that may hold the footprint split.

    Before the split, `grams` was GPU grams; after it, `grams` is the total and `gpuGrams` the GPU part.
    """
    if previous is None:
        return None
    gpu_grams = previous.gpu_grams if previous.gpu_grams is not None else previous.grams
    return Emissions(grams=gpu_grams, accounted_joules=dict(previous.accounted_joules))


def footprint(
    gpu: Accounting,
    host: HostEnergy | None,
    factors: FootprintFactors,
    *,
    zone: str | None,
    intensity_g_per_kwh: float,
    previous: Emissions | None,
    previous_host_method: str | None = None,
) -> Footprint:
    """The split from an already computed GPU accounting, new host joules, PUE and embodied factors."""
    if not math.isfinite(intensity_g_per_kwh) or intensity_g_per_kwh < 0:
        raise ValueError(f"intensity must be a finite, non-negative gCO2e/kWh, not {intensity_g_per_kwh!r}")
    mark = (previous.accounted_host_joules or 0.0) if previous else 0.0
    host_grams = (previous.host_grams or 0.0) if previous else 0.0
    method = previous_host_method or NONE
    if host is not None:
        method = host.method
        if host.joules > mark:  # counter reset or method switch to a lower figure: keep the mark
            host_grams += (host.joules - mark) / JOULES_PER_KWH * intensity_g_per_kwh
            mark = host.joules
    pue = factors.pue_for(zone)
    return Footprint(
        gpu=gpu,
        host_k_wh=mark / JOULES_PER_KWH,
        host_grams=host_grams,
        host_joules_mark=mark,
        host_method=method,
        pue=pue,
        pue_method=factors.pue_method(zone),
        embodied_grams=gpu.gpu_hours * factors.embodied.g_per_job_gpu_hour,
        embodied_method=factors.embodied.describe(),
    )


def account_footprint(
    nodes: Mapping[str, NodeEnergy],
    previous: Emissions | None,
    intensity_g_per_kwh: float,
    host: HostEnergy | None,
    factors: FootprintFactors,
    *,
    zone: str | None,
    previous_host_method: str | None = None,
    intensity_of: IntensityOf | None = None,
) -> Footprint:
    """The one call of the reconciler at accounting time, in place of `rounded(account(...))`.

    `previous` is `Emissions.model_validate(status["emissions"])`; `host` the job's cumulative host
    energy from `build_host_source(...).job_energy(JobRef(...))`, or None when nothing is known;
    `previous_host_method` is `status.energy.methods.host` (kept while no source answers).
    `intensity_of` (see `past.intensity_of_use`) prices GPU energy reported late at the intensity of
    when it was used; host energy has no such times and is charged at `intensity_g_per_kwh`.
    Write `.status_patch()` into the status; check the budget with `.k_wh` and `.grams` (totals).
    """
    gpu = account(nodes, gpu_state(previous), intensity_g_per_kwh, intensity_of)
    return footprint(
        gpu,
        host,
        factors,
        zone=zone,
        intensity_g_per_kwh=intensity_g_per_kwh,
        previous=previous,
        previous_host_method=previous_host_method,
    )


def job_ref(namespace: str, name: str, status: Mapping[str, Any], pods: tuple[str, ...] = ()) -> JobRef:
    """What a host-energy source needs, from the GTJ's status: its run window and GPU-seconds."""
    nodes = (status.get("energy") or {}).get("nodes") or {}
    gpu_seconds = sum(float((e or {}).get("gpuSeconds") or 0.0) for e in nodes.values())
    start, end = status.get("startTime"), status.get("completionTime")
    return JobRef(
        namespace=namespace,
        name=name,
        pods=pods,
        start=parse_time(start) if isinstance(start, str) and start else None,
        end=parse_time(end) if isinstance(end, str) and end else None,
        gpu_seconds=gpu_seconds,
    )
