"""`greenjobs report NAME [-n NS]`: a job's footprint card, a picture, CodeCarbon rows, MLflow.

    greenjobs report llama-finetune -n ml                    # card on stdout, llama-finetune-footprint.png
    greenjobs report llama-finetune -n ml --format codecarbon --csv emissions.csv
    greenjobs report llama-finetune -n ml --prometheus http://prometheus:9090 --intensity gb.csv
    greenjobs report llama-finetune -n ml --mlflow           # pip install 'greenjobs[mlflow]'
    kubectl get gtj llama-finetune -o json | greenjobs report llama-finetune --file -

Everything comes from the GreenTrainingJob's status; only the picture's time series may come from
elsewhere (docs/savings.md, "The report"): GPU power and caps from Prometheus scraping the node
agents (`--prometheus`), grid intensity from a forecast/history file of the job's zone
(`--intensity`, the CSV or JSON that `greenjobs plan` reads). Without them the picture says so and
draws what the status holds: the mean power over the run, the cap in force, the mean intensity.
"""

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import yaml

from greenjobs.api import constants as c
from greenjobs.api.durations import format_time, parse_time

ANNOTATION_MLFLOW_RUN = f"{c.GROUP}/mlflow-run"
ANNOTATION_MLFLOW_EXPERIMENT = f"{c.GROUP}/mlflow-experiment"
# A start later than this after creation counts as shifted in time (one operator tick and then some).
SHIFT_THRESHOLD = timedelta(seconds=60)

# CodeCarbon's emissions.csv fields as its documentation lists them (docs/reference/output.md of
# github.com/mlco2/codecarbon, "CSV"), in that order, then `pue`, which CodeCarbon writes too
# (codecarbon/output_methods/emissions_data.py) and which says what our energy includes.
CODECARBON_DOCUMENTED_COLUMNS: tuple[str, ...] = (
    "timestamp", "project_name", "run_id", "duration", "emissions", "emissions_rate",
    "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy", "ram_energy", "energy_consumed",
    "country_name", "country_iso_code", "region", "on_cloud", "cloud_provider", "cloud_region",
    "os", "python_version", "codecarbon_version", "cpu_count", "cpu_model", "gpu_count", "gpu_model",
    "longitude", "latitude", "ram_total_size", "tracking_mode",
    "cpu_utilization_percent", "gpu_utilization_percent", "ram_utilization_percent", "ram_used_gb",
)  # fmt: skip
CODECARBON_COLUMNS: tuple[str, ...] = (*CODECARBON_DOCUMENTED_COLUMNS, "pue")


@dataclass(frozen=True)
class Saving:
    kind: str  # shifting, placement, shifting+placement, capping, none
    grams: float | None
    note: str


@dataclass(frozen=True)
class Card:
    namespace: str
    name: str
    uid: str
    phase: str
    zone: str | None
    first_zone: str | None
    created: datetime | None
    start: datetime | None
    end: datetime | None
    gpus: int
    gpu_hours: float
    gpu_k_wh: float
    host_k_wh: float | None  # None: the status predates the split (GPU only)
    facility_k_wh: float | None
    k_wh: float
    operational_grams: float
    embodied_grams: float | None
    grams: float
    avg_g_per_k_wh: float | None
    expected_g_per_k_wh: float | None
    baseline_g_per_k_wh: float | None
    planned_savings_percent: float | None
    pue: float | None
    cap_watts: int | None
    methods: dict[str, str] = field(default_factory=dict)  # gpu, host, facility, operational, embodied
    savings: tuple[Saving, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    nodes: tuple[str, ...] = ()

    @property
    def split(self) -> bool:
        return self.host_k_wh is not None

    @property
    def duration(self) -> timedelta | None:
        if self.start is None:
            return None
        return (self.end or datetime.now(UTC)) - self.start

    def metrics(self) -> dict[str, float]:
        """Numeric figures, for MLflow."""
        out = {
            "energy_kwh": self.k_wh,
            "gpu_kwh": self.gpu_k_wh,
            "gpu_hours": self.gpu_hours,
            "co2e_g": self.grams,
            "operational_co2e_g": self.operational_grams,
        }
        for key, value in (
            ("host_kwh", self.host_k_wh),
            ("facility_kwh", self.facility_k_wh),
            ("embodied_co2e_g", self.embodied_grams),
            ("ran_at_g_per_kwh", self.avg_g_per_k_wh),
            ("pue", self.pue),
            ("planned_savings_percent", self.planned_savings_percent),
        ):
            if value is not None:
                out[key] = value
        for s in self.savings:
            if s.grams is not None:
                out[f"saved_{s.kind.replace('+', '_and_')}_g"] = s.grams
        return out


def _time(value: Any) -> datetime | None:
    return parse_time(value) if isinstance(value, str) and value else None


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def card_from(obj: Mapping[str, Any], default_watts: float | None = None) -> Card:
    """The card of one GreenTrainingJob in its JSON form (as `kubectl get -o json` prints it)."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    plan, energy, emissions = status.get("plan") or {}, status.get("energy") or {}, status.get("emissions") or {}
    zones = (spec.get("placement") or {}).get("zones") or []
    nodes = {n: e for n, e in (energy.get("nodes") or {}).items() if e}
    split = emissions.get("gpuGrams") is not None
    k_wh = float(energy.get("kWh") or 0.0)
    grams = float(emissions.get("grams") or 0.0)
    methods: dict[str, str] = {"gpu": "nvml"}
    for part, text in {**(energy.get("methods") or {}), **(emissions.get("methods") or {})}.items():
        if text:
            methods[part] = str(text)
    card = Card(
        namespace=meta.get("namespace") or "default",
        name=meta.get("name") or "",
        uid=meta.get("uid") or "",
        phase=status.get("phase") or "Pending",
        zone=plan.get("zone"),
        first_zone=zones[0] if zones else plan.get("zone"),
        created=_time(meta.get("creationTimestamp")),
        start=_time(status.get("startTime")),
        end=_time(status.get("completionTime")),
        gpus=_gpus(
            nodes,
            float(energy.get("gpuHours") or 0.0),
            _time(status.get("startTime")),
            _time(status.get("completionTime")),
        ),
        gpu_hours=float(energy.get("gpuHours") or 0.0),
        gpu_k_wh=float(energy.get("gpuKWh") or 0.0) if split else k_wh,
        host_k_wh=_num(energy.get("hostKWh")) if split else None,
        facility_k_wh=_num(energy.get("facilityKWh")) if split else None,
        k_wh=k_wh,
        operational_grams=float(emissions.get("operationalGrams") or 0.0) if split else grams,
        embodied_grams=_num(emissions.get("embodiedGrams")) if split else None,
        grams=grams,
        avg_g_per_k_wh=_num(emissions.get("avgGPerKWh")),
        expected_g_per_k_wh=_num(plan.get("expectedGPerKWh")),
        baseline_g_per_k_wh=_num(plan.get("baselineGPerKWh")),
        planned_savings_percent=_num(plan.get("expectedSavingsPercent")),
        pue=_num(energy.get("pue")),
        # The operator clears its target when the job ends; the agents' entries keep the last cap in force.
        cap_watts=(status.get("power") or {}).get("targetCapWatts")
        or max((int(e["capWatts"]) for e in nodes.values() if e.get("capWatts")), default=None),
        methods=methods,
        annotations=dict(meta.get("annotations") or {}),
        nodes=tuple(sorted(nodes)),
    )
    return _with_savings(card, default_watts)


def _gpus(nodes: Mapping[str, Any], gpu_hours: float, start: datetime | None, end: datetime | None) -> int:
    """GPUs in use: the agents' entries while the pods run; after they end (entries say 0), GPU-hours / hours."""
    now = sum(int(e.get("gpus") or 0) for e in nodes.values())
    if now or start is None or end is None or end <= start:
        return now
    return round(gpu_hours / ((end - start).total_seconds() / 3600.0))


def _with_savings(card: Card, default_watts: float | None) -> Card:
    from dataclasses import replace  # noqa: PLC0415

    return replace(card, savings=tuple(savings(card, default_watts)))


def savings(card: Card, default_watts: float | None) -> list[Saving]:
    """What shifting, placement and capping saved, as far as the status tells.

    Timing and placement: the plan's baseline (forecast mean intensity had the job started when created,
    in its first zone) against the intensity it really ran at, times its energy; embodied emissions do
    not move. The status cannot separate the two when a job both waited and moved zone.
    Capping: GPU energy below the GPUs' default limit held for the same GPU-hours (`default_watts`).
    """
    out: list[Saving] = []
    if card.start is None:
        return [Saving("none", None, "not started")]
    waited = card.start - card.created if card.created else timedelta(0)
    shifted = waited > SHIFT_THRESHOLD
    moved = bool(card.zone and card.first_zone and card.zone != card.first_zone)
    base, ran = card.baseline_g_per_k_wh, card.avg_g_per_k_wh
    if not shifted and not moved:
        out.append(Saving("none", 0.0, f"started at once in its first zone {card.first_zone or '-'}"))
    elif base is None or ran is None or card.k_wh <= 0:
        out.append(Saving("shifting+placement", None, "no baseline or no energy in the status"))
    else:
        kind = "shifting+placement" if shifted and moved else "shifting" if shifted else "placement"
        what = {
            "shifting": f"waited {waited.total_seconds():.0f} s",
            "placement": f"ran in {card.zone} instead of {card.first_zone}",
            "shifting+placement": f"waited {waited.total_seconds():.0f} s and ran in {card.zone} instead of "
            f"{card.first_zone} (the status does not separate the two)",
        }[kind]
        out.append(
            Saving(
                kind,
                (base - ran) * card.k_wh,
                f"{what}: {card.k_wh:.4g} kWh x ({base:.1f} planned at-once - {ran:.1f} ran-at) gCO2e/kWh",
            )
        )
    if default_watts is None:
        out.append(Saving("capping", None, "pass --default-watts (the GPUs' default power limit) to estimate"))
    elif card.gpu_hours > 0 and ran is not None:
        saved_k_wh = max(card.gpu_hours * default_watts / 1000.0 - card.gpu_k_wh, 0.0)
        pue = card.pue or 1.0
        out.append(
            Saving(
                "capping",
                saved_k_wh * pue * ran,
                f"{saved_k_wh:.4g} GPU kWh below {default_watts:g} W x {card.gpu_hours:.4g} GPU-hours, x PUE "
                f"{pue:g} x {ran:.1f} g/kWh; an upper bound: capped GPUs also run a little longer",
            )
        )
    return out


# ---------------------------------------------------------------- text


def _f(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def _share(part: float | None, total: float) -> str:
    return "" if part is None or total <= 0 else f"  ({100 * part / total:.0f} %)"


def render(card: Card) -> str:
    d = card.duration
    lines = [
        f"GreenTrainingJob {card.namespace}/{card.name}  phase {card.phase}  zone {card.zone or '-'}",
        f"  ran {format_time(card.start) if card.start else '-'} .. "
        f"{format_time(card.end) if card.end else ('now' if card.start else '-')}"
        f"  ({'-' if d is None else f'{d.total_seconds() / 3600:.3g} h'}), {card.gpus} GPUs, "
        f"{card.gpu_hours:.4g} GPU-hours, cap {card.cap_watts or '-'} W",
        "",
        "ENERGY                      kWh",
        f"  GPU                {card.gpu_k_wh:>12.4f}{_share(card.gpu_k_wh, card.k_wh)}   "
        f"{card.methods.get('gpu', '')}",
    ]
    if card.split:
        lines += [
            f"  host (CPU, DRAM)   {card.host_k_wh or 0:>12.4f}{_share(card.host_k_wh, card.k_wh)}   "
            f"{card.methods.get('host', '')}",
            f"  facility overhead  {card.facility_k_wh or 0:>12.4f}{_share(card.facility_k_wh, card.k_wh)}   "
            f"{card.methods.get('facility', '')}",
        ]
    else:
        lines.append("  host, facility               -   not in this status (accounted before the footprint split)")
    lines += [
        f"  TOTAL              {card.k_wh:>12.4f}",
        "",
        "EMISSIONS                 gCO2e",
        f"  operational        {card.operational_grams:>12.2f}{_share(card.operational_grams, card.grams)}   "
        f"at {_f(card.avg_g_per_k_wh, '.1f')} gCO2e/kWh on average",
    ]
    if card.embodied_grams is not None:
        lines.append(
            f"  embodied           {card.embodied_grams:>12.2f}{_share(card.embodied_grams, card.grams)}   "
            f"{card.methods.get('embodied', '')}"
        )
    else:
        lines.append("  embodied                     -   not in this status")
    lines += [
        f"  TOTAL              {card.grams:>12.2f}   (budgets apply to the totals)",
        "",
        f"INTENSITY  ran at {_f(card.avg_g_per_k_wh, '.1f')}, planned {_f(card.expected_g_per_k_wh, '.1f')}, "
        f"at once in {card.first_zone or '-'} {_f(card.baseline_g_per_k_wh, '.1f')} gCO2e/kWh (forecast); "
        f"planned saving {_f(card.planned_savings_percent, '.1f', ' %')}",
        "SAVINGS",
    ]
    for s in card.savings:
        lines.append(f"  {s.kind:<19}{_f(s.grams, '>12.2f')}   {s.note}")
    return "\n".join(lines)


# ---------------------------------------------------------------- CodeCarbon


def codecarbon_row(card: Card, project: str | None = None) -> dict[str, str]:
    """One emissions.csv row in CodeCarbon's columns. Operational emissions only (CodeCarbon counts no
    embodied emissions), PUE included (the pue column); host energy goes to cpu_energy (the status
    does not split CPU from DRAM) and the grid zone to region."""
    d = card.duration
    seconds = d.total_seconds() if d else 0.0
    hours = seconds / 3600.0
    it_k_wh = card.gpu_k_wh + (card.host_k_wh or 0.0)
    kg = card.operational_grams / 1000.0
    row = dict.fromkeys(CODECARBON_COLUMNS, "")
    row.update(
        {
            "timestamp": (card.end or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S"),
            "project_name": project or card.namespace,
            "run_id": card.uid or f"{card.namespace}/{card.name}",
            "duration": f"{seconds:.3f}",
            "emissions": repr(kg),
            "emissions_rate": repr(kg / seconds if seconds > 0 else 0.0),
            "cpu_power": repr((card.host_k_wh or 0.0) * 1000.0 / hours if hours > 0 else 0.0),
            "gpu_power": repr(card.gpu_k_wh * 1000.0 / hours if hours > 0 else 0.0),
            "ram_power": "0.0",
            "cpu_energy": repr(card.host_k_wh or 0.0),
            "gpu_energy": repr(card.gpu_k_wh),
            "ram_energy": "0.0",
            "energy_consumed": repr(it_k_wh),
            "region": card.zone or "",
            "gpu_count": str(card.gpus),
            "tracking_mode": "process",
            "pue": repr(card.pue or 1.0),
        }
    )
    return row


def write_codecarbon(path: Path | TextIO, rows: Sequence[Mapping[str, str]]) -> None:
    """Append rows to an emissions.csv (header first when the file is new), as CodeCarbon does."""
    if not isinstance(path, Path):
        writer = csv.DictWriter(path, fieldnames=list(CODECARBON_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
        return
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        if tuple(header) != CODECARBON_COLUMNS:
            raise ValueError(f"{path}: its header is not the columns this writes; write to a new file")
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(CODECARBON_COLUMNS))
        if new:
            writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------- MLflow


class MlflowMissingError(RuntimeError):
    pass


def log_mlflow(card: Card, *, run_name: str | None = None, experiment: str | None = None, mlflow: Any = None) -> str:
    """Log the card's figures to the MLflow run named by the GTJ's annotation; create it if there is none.

    Uses MlflowClient, so an existing run (the training's own) is written to without being resumed or
    ended. Returns the run id. `mlflow` is the module (tests pass a fake); it is imported only here, from
    the optional extra `greenjobs[mlflow]`.
    """
    if mlflow is None:
        try:
            import mlflow  # type: ignore[import-not-found, no-redef]  # noqa: PLC0415
        except ImportError:
            raise MlflowMissingError(
                "MLflow logging needs the optional extra: pip install 'greenjobs[mlflow]'"
            ) from None
    name = run_name or card.annotations.get(ANNOTATION_MLFLOW_RUN)
    if not name:
        raise ValueError(f"no MLflow run named: annotate the GreenTrainingJob with {ANNOTATION_MLFLOW_RUN}=<run name>")
    if "'" in name and '"' in name:
        raise ValueError(f"MLflow run name {name!r} has both kinds of quotes")
    experiment = experiment or card.annotations.get(ANNOTATION_MLFLOW_EXPERIMENT)
    client = mlflow.MlflowClient()
    if experiment:
        found_exp = client.get_experiment_by_name(experiment)
        experiment_id = found_exp.experiment_id if found_exp else client.create_experiment(experiment)
    else:
        experiment_id = "0"  # MLflow's Default experiment
    quoted = f"'{name}'" if "'" not in name else f'"{name}"'
    runs = client.search_runs([experiment_id], filter_string=f"attributes.run_name = {quoted}", max_results=1)
    created = not runs
    run_id = str(client.create_run(experiment_id, run_name=name).info.run_id if created else runs[0].info.run_id)
    for key, value in card.metrics().items():
        client.log_metric(run_id, f"greenjobs.{key}", value)
    tags = {
        "greenjobs.job": f"{card.namespace}/{card.name}",
        "greenjobs.zone": card.zone or "",
        **{f"greenjobs.method.{k}": v[:250] for k, v in card.methods.items()},
    }
    for key, text in tags.items():
        client.set_tag(run_id, key, text)
    if created:
        client.set_terminated(run_id)
    return run_id


# ---------------------------------------------------------------- the picture


Points = list[tuple[datetime, float]]


@dataclass
class Timeline:
    power: Points = field(default_factory=list)  # W per GPU
    power_source: str = ""
    cap: Points = field(default_factory=list)  # W per GPU
    cap_source: str = ""
    intensity: Points = field(default_factory=list)  # gCO2e/kWh
    intensity_source: str = ""


def timeline_from_status(card: Card) -> Timeline:
    """What the status alone holds: means over the run, not a history."""
    tl = Timeline()
    if card.start is None:
        return tl
    end = card.end or datetime.now(UTC)
    span = [card.start, end]
    seconds = (end - card.start).total_seconds()
    if seconds > 0 and card.gpus > 0:
        mean = card.gpu_k_wh * 3.6e6 / seconds / card.gpus
        tl.power, tl.power_source = [(t, mean) for t in span], "status: mean GPU power over the run"
    if card.cap_watts:
        tl.cap, tl.cap_source = [(t, float(card.cap_watts)) for t in span], "status: last cap in force, not its history"
    if card.avg_g_per_k_wh is not None:
        tl.intensity = [(t, card.avg_g_per_k_wh) for t in span]
        tl.intensity_source = "status: mean intensity the job ran at"
    return tl


def timeline_from_prometheus(card: Card, prom: Any, tl: Timeline, step: timedelta | None = None) -> Timeline:
    """GPU power of the job and the caps on its nodes, from the node agents' metrics in Prometheus.

    Label names follow docs/grafana-dashboard.json: agent series carry `node` (scrape relabelling),
    job energy `namespace` and `job`.
    """
    from greenjobs.accounting.prometheus import quote  # noqa: PLC0415

    if card.start is None:
        return tl
    end = card.end or datetime.now(UTC)
    step = step or max(timedelta(seconds=15), (end - card.start) / 300)
    sel = f"namespace={quote(card.namespace)},job={quote(card.name)}"
    power = prom.query_range(f"sum(rate(greenjobs_job_energy_joules_total{{{sel}}}[2m]))", card.start, end, step)
    if power and power[0].points and card.gpus:
        tl.power = [(t, v / card.gpus) for t, v in power[0].points]
        tl.power_source = "Prometheus: rate of greenjobs_job_energy_joules_total / GPUs"
    if card.nodes:
        nodes = "|".join(card.nodes)
        cap = prom.query_range(f"max(greenjobs_gpu_cap_watts{{node=~{quote(nodes)}}})", card.start, end, step)
        if cap and cap[0].points:
            tl.cap, tl.cap_source = cap[0].points, "Prometheus: max greenjobs_gpu_cap_watts on the job's nodes"
    return tl


def timeline_intensity_from_file(card: Card, path: Path, tl: Timeline) -> Timeline:
    from greenjobs.carbon.providers.files import load_series  # noqa: PLC0415

    series = load_series(path)
    if card.start is None:
        return tl
    end = card.end or datetime.now(UTC)
    # Only where the file covers the run (up to an hour past its last point): never extrapolate.
    first, last = series.start, series.points()[-1][0] + timedelta(hours=1)
    points: Points = []
    t = card.start
    step = max(timedelta(seconds=1), (end - card.start) / 200)
    while t <= end:
        if first <= t <= last:
            points.append((t, series.at(t)))
        t += step
    if points:
        tl.intensity, tl.intensity_source = points, f"file {path.name} ({card.zone or 'zone'})"
    return tl


def draw(path: Path, card: Card, tl: Timeline) -> Path:
    import matplotlib  # noqa: PLC0415 - only the report's picture needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (ax_p, ax_i) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, height_ratios=(3, 2))
    if tl.power:
        ax_p.plot(*zip(*tl.power, strict=True), color="#d62728", label=f"GPU power ({tl.power_source})")
    if tl.cap:
        ax_p.step(*zip(*tl.cap, strict=True), where="post", color="black", ls="--", label=f"cap ({tl.cap_source})")
    ax_p.set_ylabel("W per GPU")
    ax_p.set_ylim(bottom=0)
    if tl.power or tl.cap:
        ax_p.legend(loc="lower left", fontsize=8)
    split = (
        f"GPU {card.gpu_k_wh:.4g} + host {card.host_k_wh or 0:.4g} + facility {card.facility_k_wh or 0:.4g} kWh; "
        f"{card.operational_grams:,.1f} g operational + {card.embodied_grams or 0:,.1f} g embodied"
        if card.split
        else f"GPU {card.gpu_k_wh:.4g} kWh, {card.grams:,.1f} g (GPU only)"
    )
    ax_p.set_title(f"{card.namespace}/{card.name} ({card.phase}, {card.zone or '-'}): {split}", fontsize=9)
    if tl.intensity:
        ax_i.step(*zip(*tl.intensity, strict=True), where="post", color="#1f77b4", label=tl.intensity_source)
        ax_i.legend(loc="lower left", fontsize=8)
    if not (tl.power or tl.intensity):
        ax_p.text(0.5, 0.5, "no time series: the job has not started", ha="center", transform=ax_p.transAxes)
    ax_i.set_ylabel("gCO2e/kWh")
    ax_i.set_ylim(bottom=0)
    ax_i.set_xlabel("UTC")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the GreenTrainingJob")
    parser.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")
    parser.add_argument("--file", metavar="PATH", help="read the object from a JSON/YAML file ('-': stdin) instead")
    parser.add_argument("--format", choices=("text", "json", "codecarbon"), default="text", help="what to print")
    parser.add_argument("--csv", metavar="PATH", default="emissions.csv", help="codecarbon: the file to append to")
    parser.add_argument("--project", help="codecarbon: project_name (default: the namespace)")
    parser.add_argument("--png", metavar="PATH", help="the picture (default: NAME-footprint.png)")
    parser.add_argument("--no-png", action="store_true", help="draw no picture")
    parser.add_argument("--prometheus", metavar="URL", help="GPU power and caps over time from this Prometheus")
    parser.add_argument("--intensity", metavar="FILE", help="grid intensity over the run from a CSV/JSON series")
    parser.add_argument("--default-watts", type=float, help="the GPUs' default power limit: estimates capping savings")
    parser.add_argument("--mlflow", action="store_true", help="log to the MLflow run named by the GTJ's annotation")
    parser.add_argument("--mlflow-run", help=f"the run name (default: annotation {ANNOTATION_MLFLOW_RUN})")


def _load(args: argparse.Namespace, stdin: TextIO) -> dict[str, Any]:
    if args.file:
        text = stdin.read() if args.file == "-" else Path(args.file).read_text()
        obj = yaml.safe_load(text)
        if not isinstance(obj, dict) or obj.get("kind") != c.KIND:
            raise ValueError(f"{args.file}: not a {c.KIND}")
        return obj
    from kubernetes import client, config  # noqa: PLC0415
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    namespace = args.namespace
    try:
        config.load_kube_config()
        if namespace is None:
            _, active = config.list_kube_config_contexts()
            namespace = (active or {}).get("context", {}).get("namespace") or "default"
    except config.ConfigException:
        try:
            config.load_incluster_config()
        except config.ConfigException as exc:
            raise ValueError(f"no kubeconfig and not in a cluster ({exc}); or pass --file") from None
    namespace = namespace or "default"
    try:
        got: dict[str, Any] = client.CustomObjectsApi().get_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.PLURAL, args.name
        )
    except ApiException as exc:
        what = "not found" if exc.status == 404 else f"HTTP {exc.status} {exc.reason}"
        raise ValueError(f"{c.KIND} {namespace}/{args.name}: {what}") from None
    return got


def run(
    args: argparse.Namespace,
    out: TextIO | None = None,
    stdin: TextIO | None = None,
    prometheus: Callable[[str], Any] | None = None,
    mlflow: Any = None,
) -> int:
    out = out or sys.stdout
    try:
        obj = _load(args, stdin or sys.stdin)
        card = card_from(obj, args.default_watts)
    except (OSError, ValueError) as exc:
        print(f"greenjobs report: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps({**card.metrics(), "methods": card.methods}, indent=2, sort_keys=True), file=out)
    elif args.format == "codecarbon":
        target = Path(args.csv)
        write_codecarbon(target, [codecarbon_row(card, args.project)])
        print(f"appended {card.namespace}/{card.name} to {target}", file=out)
    else:
        print(render(card), file=out)
    if not args.no_png:
        tl = timeline_from_status(card)
        if args.prometheus:
            from greenjobs.accounting.prometheus import Prometheus  # noqa: PLC0415
            from greenjobs.carbon.providers.base import ProviderError  # noqa: PLC0415

            try:
                tl = timeline_from_prometheus(card, (prometheus or Prometheus)(args.prometheus), tl)
            except ProviderError as exc:
                print(f"greenjobs report: no series from Prometheus: {exc}", file=sys.stderr)
        if args.intensity:
            tl = timeline_intensity_from_file(card, Path(args.intensity), tl)
        png = draw(Path(args.png or f"{card.name}-footprint.png"), card, tl)
        print(f"picture: {png}", file=out)
    if args.mlflow:
        try:
            run_id = log_mlflow(card, run_name=args.mlflow_run, mlflow=mlflow)
        except (MlflowMissingError, ValueError) as exc:
            print(f"greenjobs report: {exc}", file=sys.stderr)
            return 2
        print(f"logged to MLflow run {run_id}", file=out)
    return 0


def codecarbon_text(cards: Sequence[Card]) -> str:
    """The rows as CSV text (header included)."""
    buf = io.StringIO()
    write_codecarbon(buf, [codecarbon_row(k) for k in cards])
    return buf.getvalue()
