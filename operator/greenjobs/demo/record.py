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
    k_wh: float
    gpu_hours: float
    grams: float
    avg_g_per_k_wh: float | None  # what the job effectively ran at
    planned_savings_percent: float | None  # status.plan.expectedSavingsPercent
    baseline_g_per_k_wh: float | None  # trace mean had it run as long, at once, in its first zone
    default_watts: float

    @property
    def waited(self) -> timedelta | None:
        return None if self.start is None else self.start - self.created

    @property
    def baseline_grams(self) -> float | None:
        return None if self.baseline_g_per_k_wh is None else self.k_wh * self.baseline_g_per_k_wh

    @property
    def saved_grams(self) -> float | None:
        base = self.baseline_grams
        return None if base is None else base - self.grams

    @property
    def saved_percent(self) -> float | None:
        base, saved = self.baseline_grams, self.saved_grams
        return None if not base or saved is None else 100.0 * saved / base

    @property
    def avg_watts_per_gpu(self) -> float | None:
        return None if self.gpu_hours <= 0 else 1000.0 * self.k_wh / self.gpu_hours

    @property
    def cap_saved_k_wh(self) -> float:
        """Energy below what the GPUs draw at full load at their default limit (simulated GPUs: a cap
        lowers power and, here, not speed; real capped jobs run a little longer)."""
        return max(self.gpu_hours * self.default_watts / 1000.0 - self.k_wh, 0.0)


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
    )


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
    total_base = sum(j.baseline_grams or j.grams for j in jobs)
    total_kwh = sum(j.k_wh for j in jobs)
    total_pct = 100 * (total_base - total_g) / total_base if total_base else None
    blank = ("",) * 3
    rows.append(
        ("TOTAL", *blank, f"{total_kwh:.4f}", "", f"{total_g:.1f}", "", "", f"{total_base - total_g:.1f}",
         _fmt(total_pct, ".1f"), "")
    )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    capped = sum(j.cap_saved_k_wh for j in jobs)
    notes = [
        "WAITED: creation to start. RAN-AT: emissions / energy as the operator accounted them.",
        "AT-ONCE: the trace's mean intensity in the job's first zone, had it started when created and run as "
        "long; SAVED = energy x AT-ONCE - CO2e (timing and placement; caps not counted).",
        f"Power caps kept the GPUs {capped:.4f} kWh below their {jobs[0].default_watts if jobs else 0:.0f} W "
        "default (simulated GPUs draw their cap at full load and do not slow down; "
        "docs/benchmarks/power-capping.md measures the real trade-off).",
    ]
    return "\n".join([*lines, "", *notes])
