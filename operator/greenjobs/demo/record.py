"""What the demo records while the jobs run (for the plot), and the summary it prints at the end.

Pure of processes and Kubernetes: it reads GreenTrainingJob objects (JSON form) and an intensity
function, so the unit tests feed it hand-made objects.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from greenjobs.api.durations import parse_time

Intensity = Callable[[str, datetime, timedelta], float]  # zone, start, duration -> mean gCO2e/kWh


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the demo's t0
    phase: str | None
    cap_watts: int | None  # status.power.targetCapWatts: what the operator asks for
    agent_caps: dict[str, int]  # node -> capWatts the node agent reports in force
    k_wh: float
    grams: float


@dataclass
class Track:
    name: str
    samples: list[Sample] = field(default_factory=list)
    first_plan: dict[str, Any] | None = None  # the plan as first decided (the deferral shown in the plot)
    last: dict[str, Any] = field(default_factory=dict)  # the newest object


@dataclass
class Recording:
    t0: datetime
    tracks: dict[str, Track] = field(default_factory=dict)
    end: float = 0.0

    def seconds(self, t: datetime) -> float:
        return (t - self.t0).total_seconds()

    def add(self, now: datetime, objects: Iterable[Mapping[str, Any]]) -> None:
        t = self.seconds(now)
        self.end = max(self.end, t)
        for obj in objects:
            name = obj["metadata"]["name"]
            track = self.tracks.setdefault(name, Track(name))
            status = obj.get("status") or {}
            if track.first_plan is None and status.get("plan"):
                track.first_plan = dict(status["plan"])
            track.last = dict(obj)
            nodes = (status.get("energy") or {}).get("nodes") or {}
            track.samples.append(
                Sample(
                    t=t,
                    phase=status.get("phase"),
                    cap_watts=(status.get("power") or {}).get("targetCapWatts"),
                    agent_caps={n: int(e["capWatts"]) for n, e in nodes.items() if e and e.get("capWatts")},
                    k_wh=float((status.get("energy") or {}).get("kWh") or 0.0),
                    grams=float((status.get("emissions") or {}).get("grams") or 0.0),
                )
            )


@dataclass(frozen=True)
class JobSummary:
    name: str
    phase: str
    zone: str | None
    first_zone: str | None  # the baseline zone: the first of spec.placement.zones
    created: datetime
    start: datetime | None
    end: datetime | None
    k_wh: float  # TOTAL: GPU + host + facility (GPU only in a status from before the footprint split)
    gpu_hours: float
    grams: float  # TOTAL: operational + embodied
    avg_g_per_k_wh: float | None  # what the job effectively ran at
    planned_savings_percent: float | None  # status.plan.expectedSavingsPercent
    baseline_g_per_k_wh: float | None  # trace mean had it run as long, at once, in its first zone
    default_watts: float
    # The footprint split; None where the status predates it (then k_wh and grams are GPU only).
    gpu_k_wh: float | None = None
    host_k_wh: float | None = None
    facility_k_wh: float | None = None
    operational_grams: float | None = None
    embodied_grams: float | None = None
    host_method: str | None = None

    @property
    def gpu_energy(self) -> float:
        return self.k_wh if self.gpu_k_wh is None else self.gpu_k_wh

    @property
    def operational(self) -> float:
        """Grams of the electricity: what timing and placement can change (embodied grams cannot)."""
        return self.grams if self.operational_grams is None else self.operational_grams

    @property
    def waited(self) -> timedelta | None:
        return None if self.start is None else self.start - self.created

    @property
    def baseline_grams(self) -> float | None:
        return None if self.baseline_g_per_k_wh is None else self.k_wh * self.baseline_g_per_k_wh

    @property
    def saved_grams(self) -> float | None:
        base = self.baseline_grams
        return None if base is None else base - self.operational

    @property
    def saved_percent(self) -> float | None:
        base, saved = self.baseline_grams, self.saved_grams
        return None if not base or saved is None else 100.0 * saved / base

    @property
    def avg_watts_per_gpu(self) -> float | None:
        return None if self.gpu_hours <= 0 else 1000.0 * self.gpu_energy / self.gpu_hours

    @property
    def cap_saved_k_wh(self) -> float:
        """GPU energy below what the GPUs draw at full load at their default limit (simulated GPUs: a
        cap lowers power and, here, not speed; real capped jobs run a little longer)."""
        return max(self.gpu_hours * self.default_watts / 1000.0 - self.gpu_energy, 0.0)


def _time(value: Any) -> datetime | None:
    return parse_time(value) if isinstance(value, str) and value else None


def _suspended_at(status: Mapping[str, Any]) -> datetime | None:
    """When a job over its budget was suspended: the BudgetExceeded condition's transition."""
    for c in status.get("conditions") or []:
        if c.get("type") == "BudgetExceeded" and c.get("status") == "True":
            return _time(c.get("lastTransitionTime"))
    return None


def summarize(obj: Mapping[str, Any], intensity: Intensity, default_watts: float, now: datetime) -> JobSummary:
    """One job's figures. The baseline is the same energy used at once in the job's first zone, over as
    long as the job really ran, at the trace's intensity then: what not waiting and not moving would
    have emitted."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    plan = status.get("plan") or {}
    zones = (spec.get("placement") or {}).get("zones") or []
    first_zone = zones[0] if zones else plan.get("zone")
    created = parse_time(meta["creationTimestamp"])
    start, end = _time(status.get("startTime")), _time(status.get("completionTime"))
    if end is None and status.get("phase") == "Suspended":
        end = _suspended_at(status)
    energy = status.get("energy") or {}
    emissions = status.get("emissions") or {}
    baseline = None
    if start is not None and first_zone:
        ran = (end or now) - start
        baseline = intensity(first_zone, created, max(ran, timedelta(seconds=1)))
    return JobSummary(
        name=meta["name"],
        phase=status.get("phase") or "Pending",
        zone=plan.get("zone"),
        first_zone=first_zone,
        created=created,
        start=start,
        end=end,
        k_wh=float(energy.get("kWh") or 0.0),
        gpu_hours=float(energy.get("gpuHours") or 0.0),
        grams=float(emissions.get("grams") or 0.0),
        avg_g_per_k_wh=emissions.get("avgGPerKWh"),
        planned_savings_percent=plan.get("expectedSavingsPercent"),
        baseline_g_per_k_wh=baseline,
        default_watts=default_watts,
        **_split(energy, emissions),
    )


def _split(energy: Mapping[str, Any], emissions: Mapping[str, Any]) -> dict[str, Any]:
    if emissions.get("gpuGrams") is None:
        return {}  # accounted before the footprint split: GPU only

    def num(value: Any) -> float:
        return float(value or 0.0)

    return {
        "gpu_k_wh": num(energy.get("gpuKWh")),
        "host_k_wh": num(energy.get("hostKWh")),
        "facility_k_wh": num(energy.get("facilityKWh")),
        "operational_grams": num(emissions.get("operationalGrams")),
        "embodied_grams": num(emissions.get("embodiedGrams")),
        "host_method": (energy.get("methods") or {}).get("host"),
    }


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def summary_table(jobs: list[JobSummary]) -> str:
    header = (
        "JOB", "PHASE", "ZONE", "WAITED", "ENERGY-kWh", "W/GPU", "CO2e-g", "RAN-AT-g/kWh",
        "AT-ONCE-g/kWh", "SAVED-g", "SAVED-%", "PLANNED-%",
    )  # fmt: skip
    rows = [header]
    for j in jobs:
        waited = j.waited
        rows.append(
            (
                j.name,
                j.phase,
                j.zone or "-",
                "-" if waited is None else f"{max(waited.total_seconds(), 0):.0f}s",
                f"{j.k_wh:.4f}",
                _fmt(j.avg_watts_per_gpu, ".0f"),
                f"{j.grams:.1f}",
                _fmt(j.avg_g_per_k_wh, ".1f"),
                _fmt(j.baseline_g_per_k_wh, ".1f") + (f" ({j.first_zone})" if j.baseline_g_per_k_wh else ""),
                _fmt(j.saved_grams, ".1f"),
                _fmt(j.saved_percent, ".1f"),
                _fmt(j.planned_savings_percent, ".1f"),
            )
        )
    total_g = sum(j.grams for j in jobs)
    total_op = sum(j.operational for j in jobs)  # savings compare electricity only: embodied does not move
    total_base = sum(j.baseline_grams or j.operational for j in jobs)
    total_kwh = sum(j.k_wh for j in jobs)
    total_pct = 100 * (total_base - total_op) / total_base if total_base else None
    blank = ("",) * 3
    rows.append(
        ("TOTAL", *blank, f"{total_kwh:.4f}", "", f"{total_g:.1f}", "", "", f"{total_base - total_op:.1f}",
         _fmt(total_pct, ".1f"), "")
    )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    capped = sum(j.cap_saved_k_wh for j in jobs)
    notes = [
        "WAITED: creation to start. ENERGY and CO2e are totals (the footprint below splits them). RAN-AT: "
        "operational emissions / energy as the operator accounted them.",
        "AT-ONCE: the trace's mean intensity in the job's first zone, had it started when created and run as "
        "long; SAVED = energy x AT-ONCE - operational CO2e (timing and placement; caps and embodied not counted).",
        f"Power caps kept the GPUs {capped:.4f} kWh below their {jobs[0].default_watts if jobs else 0:.0f} W "
        "default (simulated GPUs draw their cap at full load and do not slow down; "
        "docs/benchmarks/power-capping.md measures the real trade-off).",
    ]
    return "\n".join([*lines, "", *notes, "", footprint_table(jobs)])


def footprint_table(jobs: list[JobSummary]) -> str:
    """The split of each job's totals: energy by part, emissions operational and embodied."""
    header = ("JOB", "GPU-kWh", "HOST-kWh", "FACILITY-kWh", "TOTAL-kWh", "OPERATIONAL-g", "EMBODIED-g", "TOTAL-g",
              "HOST-METHOD")  # fmt: skip
    rows = [header]
    for j in jobs:
        split = j.gpu_k_wh is not None
        rows.append(
            (
                j.name,
                f"{j.gpu_energy:.4f}",
                _fmt(j.host_k_wh, ".4f"),
                _fmt(j.facility_k_wh, ".4f"),
                f"{j.k_wh:.4f}",
                f"{j.operational:.1f}",
                _fmt(j.embodied_grams, ".1f"),
                f"{j.grams:.1f}",
                (j.host_method or "-") if split else "GPU only",
            )
        )

    def total(values: list[float | None]) -> str:
        known = [v for v in values if v is not None]
        return f"{sum(known):.4f}" if known else "-"

    rows.append(
        (
            "TOTAL",
            total([j.gpu_energy for j in jobs]),
            total([j.host_k_wh for j in jobs]),
            total([j.facility_k_wh for j in jobs]),
            f"{sum(j.k_wh for j in jobs):.4f}",
            f"{sum(j.operational for j in jobs):.1f}",
            _fmt(sum(j.embodied_grams or 0.0 for j in jobs) if any(j.embodied_grams is not None for j in jobs)
                 else None, ".1f"),
            f"{sum(j.grams for j in jobs):.1f}",
            "",
        )
    )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    note = (
        "FOOTPRINT: host energy by the method shown, facility = (PUE - 1) x (GPU + host), embodied = GPU-hours x "
        "amortised manufacturing; every factor and its source: docs/savings.md. GPU only: the operator has not "
        "accounted the split for that job."
    )
    return "\n".join([*lines, note])
