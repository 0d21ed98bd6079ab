"""The demo's picture: the zones' intensity, when each job waited and ran, its caps, its energy and CO2e."""

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from greenjobs.api.durations import parse_time

from .record import JobSummary, Recording, Sample

ZONE_COLORS = {"GB": "#1f77b4", "FR": "#2ca02c"}
JOB_COLORS = ("#d62728", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")

IntensityAt = Callable[[str, datetime], float]
TraceTime = Callable[[datetime], datetime]


def draw(
    path: Path,
    rec: Recording,
    summaries: Mapping[str, JobSummary],
    intensity_at: IntensityAt,
    trace_time: TraceTime,
    zones: list[str],
    title: str,
) -> Path:
    import matplotlib  # noqa: PLC0415 - a dev dependency, only needed here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    end = max(rec.end, 1.0)
    names = [n for n in rec.tracks if n in summaries]
    colors = {name: JOB_COLORS[i % len(JOB_COLORS)] for i, name in enumerate(names)}
    fig, (ax_i, ax_g, ax_c, ax_e) = plt.subplots(4, 1, figsize=(12, 11), sharex=True, height_ratios=(3, 2.2, 2.2, 2.2))
    _intensity(ax_i, rec, end, intensity_at, trace_time, zones)
    ax_i.set_title(title, fontsize=11)
    _gantt(ax_g, rec, summaries, names, end)
    _caps(ax_c, rec, names, colors)
    _energy(ax_e, rec, summaries, names, colors)
    ax_e.set_xlim(0, end * 1.15)
    speedup = (trace_time(rec.t0 + timedelta(seconds=100)) - trace_time(rec.t0)).total_seconds() / 100.0
    fig.text(
        0.01, 0.003,
        "Traces: Wiesner et al., \"Let's Wait Awhile\", Middleware 2021 (from ENTSO-E data). "
        f"Simulated GPUs on kwok fake nodes; one trace hour plays every {3600 / max(speedup, 1e-9):.0f} s.",
        fontsize=7, color="grey",
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0.015, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _intensity(
    ax: Any, rec: Recording, end: float, intensity_at: IntensityAt, trace_time: TraceTime, zones: list[str]
) -> None:
    """The intensity as the replay provider serves it in real time, with the trace's clock on top."""
    n = 400
    ts = [end * i / n for i in range(n + 1)]
    for zone in zones:
        values = [intensity_at(zone, rec.t0 + timedelta(seconds=t)) for t in ts]
        ax.step(ts, values, where="post", color=ZONE_COLORS.get(zone), lw=2, label=f"{zone} grid")
    ax.set_ylabel("gCO2e/kWh")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    top = ax.secondary_xaxis("top", functions=(lambda s: s, lambda s: s))
    ticks = list(range(0, int(end) + 1, 30))
    top.set_xticks(ticks)
    top.set_xticklabels([trace_time(rec.t0 + timedelta(seconds=t)).strftime("%H:%M") for t in ticks], fontsize=8)
    top.set_xlabel("trace time (UTC)", fontsize=9)


def _gantt(ax: Any, rec: Recording, summaries: Mapping[str, JobSummary], names: list[str], end: float) -> None:
    """When each job waited (hatched) and ran (solid, in its zone's colour)."""
    for row, name in enumerate(names):
        track, s = rec.tracks[name], summaries[name]
        y = len(names) - 1 - row
        created = rec.seconds(s.created)
        start = rec.seconds(s.start) if s.start else None
        stop = rec.seconds(s.end) if s.end else _last_running(track.samples) or end
        waited = start is not None and start - created > 1
        if waited and start is not None:
            ax.barh(y, start - created, left=created, height=0.5, color="none", edgecolor="grey", hatch="///")
            planned = (track.first_plan or {}).get("scheduledStart")
            if planned:
                ax.plot([rec.seconds(parse_time(planned))], [y + 0.38], marker="v", color="black", ms=6)
        if start is not None:
            ax.barh(y, stop - start, left=start, height=0.5, color=ZONE_COLORS.get(s.zone or "", "grey"), alpha=0.85)
        x, color = _label_at(created, start, stop, end)
        ax.text(x, y, _label(s), va="center", fontsize=8, color=color)
    ax.set_yticks(range(len(names)), [f"{n} ({summaries[n].zone or '-'})" for n in reversed(names)], fontsize=8)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.grid(axis="x", alpha=0.3)
    ax.text(
        0.005, 1.02, "hatched: deferred (Job suspended), \u25bc planned start; solid: running, in its zone's colour",
        transform=ax.transAxes, fontsize=8,
    )  # fmt: skip


def _label(s: JobSummary) -> str:
    if s.phase == "Suspended":
        return "Suspended: over its CO2e budget"
    label = s.phase
    if s.saved_percent is not None and s.first_zone:
        how = "less" if s.saved_percent >= 0 else "more"
        label += f": {abs(s.saved_percent):.0f}% {how} CO2e than at once in {s.first_zone}"
    return label


def _label_at(created: float, start: float | None, stop: float, end: float) -> tuple[float, str]:
    """Where a bar's label goes: after the bar, or inside it when the bar reaches the right side."""
    if start is None:
        return created + 2, "black"
    if stop > 0.6 * end and stop - start > 0.3 * end:
        return start + 2, "white"
    return stop + 2, "black"


def _caps(ax: Any, rec: Recording, names: list[str], colors: Mapping[str, str]) -> None:
    """What the operator asks for (lines) and what the agents report in force (dots)."""
    for name in names:
        samples = [s for s in rec.tracks[name].samples if s.phase == "Running"]
        pts = [(s.t, s.cap_watts) for s in samples if s.cap_watts is not None]
        if pts:
            ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color=colors[name], lw=2, label=name)
        dots = [(s.t, c) for s in samples for c in s.agent_caps.values()]
        if dots:
            label = None if pts else f"{name} (no cap: default limit)"
            ax.scatter([d[0] for d in dots], [d[1] for d in dots], s=12, color=colors[name], alpha=0.6, label=label)
    ax.set_ylabel("GPU power cap, W")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    ax.text(
        0.005, 1.02, "lines: status.power.targetCapWatts (operator); dots: cap in force as the node agents report it",
        transform=ax.transAxes, fontsize=8,
    )  # fmt: skip


def _energy(
    ax: Any, rec: Recording, summaries: Mapping[str, JobSummary], names: list[str], colors: Mapping[str, str]
) -> None:
    """Cumulative energy per job as the operator accounts it: status.energy.kWh, the whole footprint's
    energy (GPU + host + facility overhead), not the GPUs' alone; the legend gives each job's totals."""
    for name in names:
        samples = rec.tracks[name].samples
        if any(s.k_wh for s in samples):
            ax.plot(
                [x.t for x in samples],
                [x.k_wh for x in samples],
                color=colors[name],
                lw=2,
                label=_footprint(summaries[name]),
            )
    ax.set_ylabel("energy, kWh\n(GPU + host + facility)")
    ax.set_xlabel("seconds since the demo started")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8)
    ax.text(
        0.005, 1.02, "lines: status.energy.kWh (GPU + host + facility); "
        "legend: each job's total energy (GPU part) and total CO2e (operational + embodied)",
        transform=ax.transAxes, fontsize=8,
    )  # fmt: skip


def _footprint(s: JobSummary) -> str:
    """A job's totals as the legend gives them: energy with its GPU part, CO2e with its parts."""
    label = f"{s.name}: {s.k_wh:.3f} kWh"
    if s.gpu_k_wh is not None:
        label += f" (GPU {s.gpu_k_wh:.3f})"
    label += f", {s.grams:.1f} g CO2e"
    if s.operational_grams is not None and s.embodied_grams is not None:
        label += f" ({s.operational_grams:.1f} operational + {s.embodied_grams:.1f} embodied)"
    return label


def _last_running(samples: list[Sample]) -> float | None:
    times = [s.t for s in samples if s.phase == "Running"]
    return max(times) if times else None
