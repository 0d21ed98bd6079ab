"""Host energy read from Prometheus: Kepler's per-pod counters, and node RAPL by CPU-time share.

Kepler (https://github.com/sustainable-computing-io/kepler), from 0.10 on, exports per pod
`kepler_pod_cpu_joules_total` (COUNTER, joules) with the labels `pod_id`, `pod_name`, `pod_namespace`,
`state` and `zone`, plus the constant label `node_name` (docs/user/metrics.md of the Kepler repository).
`zone` is the RAPL domain: `package` (a CPU socket: cores and uncore), `core`, `uncore`, `dram`, and
`psys` (the platform) where the hardware has it; core and uncore are parts of package, so the default
sums package and dram. Kepler gives pods the node's *active* energy by their CPU-time share and keeps
idle power apart (its power attribution guide), so this counts what the job's CPU work drew, not a
share of the node's idle floor.

Kepler 0.7 and earlier (`legacy`) export per container `kepler_container_package_joules_total`,
`kepler_container_dram_joules_total` and `kepler_container_other_host_components_joules_total` (called
`kepler_container_other_joules_total` in some releases), labelled `container_namespace` and `pod_name`
(kepler-doc docs/design/metrics.md).

The RAPL fallback reads node_exporter's RAPL collector (`node_rapl_package_joules_total`,
`node_rapl_dram_joules_total`), cAdvisor's `container_cpu_usage_seconds_total` and node_exporter's
`node_cpu_seconds_total`, all grouped by a node label that the scrape configuration must provide (the
queries are configurable for clusters that label differently).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from .host_energy import KEPLER, KEPLER_LEGACY, HostEnergy, JobRef, NodeWindow
from .prometheus import Prometheus, quote

Schema = Literal["current", "legacy"]

CURRENT_METRIC = "kepler_pod_cpu_joules_total"
LEGACY_METRICS = (
    "kepler_container_package_joules_total",
    "kepler_container_dram_joules_total",
    "kepler_container_other_host_components_joules_total",
    "kepler_container_other_joules_total",
)
DEFAULT_ZONES = ("package", "dram")


def current_query(job: JobRef) -> str:
    selector = f"pod_namespace={quote(job.namespace)},pod_name=~{quote(job.pod_regex())}"
    return f"sum by (zone) ({CURRENT_METRIC}{{{selector}}})"


def legacy_query(job: JobRef) -> str:
    names = "|".join(LEGACY_METRICS)
    selector = f"__name__=~{quote(names)},container_namespace={quote(job.namespace)},pod_name=~{quote(job.pod_regex())}"
    return f"sum by (__name__) ({{{selector}}})"


def _zone(label: str) -> str:
    # Kepler aggregates sockets into one zone ("package"); tolerate per-socket names ("package-0").
    return label.lower().split("-", 1)[0]


@dataclass
class KeplerSource:
    """The job's host joules so far: the sum of Kepler's counters over its pods (running and terminated)."""

    prometheus: Prometheus
    schema: Schema = "current"
    zones: tuple[str, ...] = DEFAULT_ZONES
    name: str = KEPLER

    def job_energy(self, job: JobRef) -> HostEnergy | None:
        if self.schema == "legacy":
            return self._legacy(job)
        samples = self.prometheus.query(current_query(job))
        if not samples:
            return None  # Kepler has not seen these pods (not deployed there, or not yet scraped)
        wanted = {z.lower() for z in self.zones}
        parts = {"cpu": 0.0, "dram": 0.0, "other": 0.0}
        used: list[str] = []
        for s in samples:
            zone = _zone(s.labels.get("zone", ""))
            if zone not in wanted:
                continue
            used.append(zone)
            key = "cpu" if zone in ("package", "core", "uncore") else "dram" if zone == "dram" else "other"
            parts[key] += max(s.value, 0.0)
        if not used:
            return None
        return HostEnergy(
            method=KEPLER,
            cpu_joules=parts["cpu"],
            dram_joules=parts["dram"],
            other_joules=parts["other"],
            detail=f"{CURRENT_METRIC} zones {'+'.join(sorted(set(used)))}",
        )

    def _legacy(self, job: JobRef) -> HostEnergy | None:
        samples = self.prometheus.query(legacy_query(job))
        if not samples:
            return None
        by_name = {s.labels.get("__name__", ""): max(s.value, 0.0) for s in samples}
        other = by_name.get(LEGACY_METRICS[2], 0.0) or by_name.get(LEGACY_METRICS[3], 0.0)
        return HostEnergy(
            method=KEPLER_LEGACY,
            cpu_joules=by_name.get(LEGACY_METRICS[0], 0.0),
            dram_joules=by_name.get(LEGACY_METRICS[1], 0.0),
            other_joules=other,
            detail="kepler_container_{package,dram,other}_joules_total",
        )


@dataclass(frozen=True)
class RaplQueries:
    """PromQL templates of the RAPL fallback. {window}, {namespace} and {pods} are filled in; every query
    must return one series per node, labelled with `node_label`."""

    node_label: str = "node"
    package: str = "sum by (node) (increase(node_rapl_package_joules_total[{window}]))"
    dram: str = "sum by (node) (increase(node_rapl_dram_joules_total[{window}]))"
    job_cpu: str = (
        'sum by (node) (increase(container_cpu_usage_seconds_total{{namespace={namespace},pod=~{pods},container=""}}'
        "[{window}]))"
    )
    busy_cpu: str = 'sum by (node) (increase(node_cpu_seconds_total{{mode!="idle"}}[{window}]))'


@dataclass
class PrometheusRaplReader:
    """Per node over the job's run: RAPL joules, the job's CPU seconds and the node's busy CPU seconds."""

    prometheus: Prometheus
    queries: RaplQueries = field(default_factory=RaplQueries)
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def __call__(self, job: JobRef) -> Mapping[str, NodeWindow]:
        if job.start is None:
            return {}
        end = job.end or self.now()
        seconds = max(int((end - job.start).total_seconds()), 1)
        fill = {"window": f"{seconds}s", "namespace": quote(job.namespace), "pods": quote(job.pod_regex())}
        q = self.queries

        def by_node(template: str) -> dict[str, float]:
            samples = self.prometheus.query(template.format(**fill), at=end)
            return {s.labels[q.node_label]: s.value for s in samples if q.node_label in s.labels}

        job_cpu = by_node(q.job_cpu)
        if not job_cpu:
            return {}
        package, dram, busy = by_node(q.package), by_node(q.dram), by_node(q.busy_cpu)
        return {
            node: NodeWindow(
                package_joules=max(package.get(node, 0.0), 0.0),
                dram_joules=max(dram.get(node, 0.0), 0.0),
                job_cpu_seconds=max(cpu, 0.0),
                busy_cpu_seconds=max(busy.get(node, 0.0), 0.0),
            )
            for node, cpu in job_cpu.items()
            if node in package
        }
