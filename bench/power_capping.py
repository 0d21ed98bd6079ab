"""Power-capping benchmark: run time, energy and CO2e of GPU training jobs under three cap policies.

Simulated, with a stated GPU model and real grid traces:

* GPU model (see docs/benchmarks/power-capping.md): with x = cap / TDP,
  throughput(x) / throughput(TDP) = 1 - A * (1 - x)**B  and  draw(x) / draw(TDP) = 1 - C * (1 - x),
  where an uncapped training job draws U * TDP. A, B, C, U were fitted to the published power traces of
  Zeus (You, Chung, Chowdhury, NSDI'23); `--fit-zeus` refits them from those CSV files.
* Grid: the 2020 GB and FR carbon-intensity traces of Wiesner et al. (Middleware 2021), replayed as the
  live intensity. The policy (greenjobs.power.target_cap) is re-evaluated every 30 minutes, as the operator
  does, with the operator's hysteresis (greenjobs.power.should_update); a capped job runs slower and so
  longer, and its emissions integrate power x intensity over the real trace.

    .venv/bin/python bench/power_capping.py            # prints tables, writes bench/results/power_capping.*
    .venv/bin/python bench/power_capping.py --fit-zeus summary_power_v100.csv summary_power_a40.csv
"""

import argparse
import csv
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from greenjobs.api.models import Power
from greenjobs.carbon.series import IntensitySeries, to_epoch
from greenjobs.planning import gpu_model
from greenjobs.power import should_update, target_cap

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DATA_DIRS = [ROOT / "shared" / "data" / "carbon-intensity", Path("/work/shared/data/carbon-intensity")]

# ---------------------------------------------------------------- GPU power/performance model

# The model lives in the carbon core (greenjobs.planning.gpu_model), shared with the fleet planner.
MODEL_A, MODEL_B, MODEL_C, MODEL_U, MODEL_MIN_X = (
    gpu_model.MODEL_A,
    gpu_model.MODEL_B,
    gpu_model.MODEL_C,
    gpu_model.MODEL_U,
    gpu_model.MIN_X,
)

GPU_TDP_W = 400  # an A100-SXM-class GPU; the model is in fractions of TDP, so the GPU only sets the scale
GPUS_PER_JOB = 8
REEVALUATE_S = 1800  # the operator re-evaluates the cap every 30 minutes
HYSTERESIS_W = 10
WORK_HOURS = (1, 6, 12, 24)  # run time at full power
START_EVERY = timedelta(hours=13)  # 13 h apart: every hour of the day is sampled over the year
YEAR = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 12, 29, tzinfo=UTC))


def throughput(x: float) -> float:
    """Training throughput under a cap of x * TDP, relative to the uncapped job."""
    return gpu_model.throughput(x)


def draw_w(x: float) -> float:
    """Mean per-GPU power under a cap of x * TDP, in watts."""
    return gpu_model.draw_fraction(x) * GPU_TDP_W


# ---------------------------------------------------------------- simulation


@dataclass(frozen=True)
class Run:
    hours: float
    k_wh: float
    kg: float


def simulate(series: IntensitySeries, power: Power, start: datetime, work_h: float) -> Run:
    """One job of `work_h` hours at full power, started at `start`, under `power`."""
    t = to_epoch(start)
    t0 = t
    remaining = work_h * 3600.0  # seconds of full-throughput work left
    joules = grams = 0.0
    cap: int | None = None
    first = True
    while remaining > 1e-6:
        intensity = series.at(datetime.fromtimestamp(t, UTC))
        new = target_cap(power, intensity).cap_watts
        if first or should_update(cap, new, HYSTERESIS_W):
            cap, first = new, False
        x = 1.0 if cap is None else min(cap / GPU_TDP_W, 1.0)
        rate = throughput(x)
        dt = min(REEVALUATE_S, remaining / rate)
        watts = GPUS_PER_JOB * draw_w(x)
        joules += watts * dt
        grams += watts * series.integral_s(t, t + dt) / 3.6e6  # W x (g/kWh x s) -> g
        remaining -= rate * dt
        t += dt
    return Run(hours=(t - t0) / 3600.0, k_wh=joules / 3.6e6, kg=grams / 1000.0)


def policies(series: IntensitySeries) -> dict[str, Power]:
    """The compared policies; names are stable keys, the zone-tuned thresholds are in the JSON."""
    q25, q75 = (round(float(v)) for v in np.percentile(series.values, [25, 75]))
    w = {pct: round(pct / 100 * GPU_TDP_W) for pct in (60, 70, 75, 80, 100)}

    def carbon_aware(lo: int, hi: int, low: float, high: float) -> Power:
        return Power.model_validate(
            {
                "policy": "CarbonAware",
                "minCapWatts": lo,
                "maxCapWatts": hi,
                "lowGPerKWh": low,
                "highGPerKWh": high,
            }
        )

    return {
        "no cap": Power(),
        **{f"static {w[p]} W": Power(policy="Static", cap_watts=w[p]) for p in (80, 75, 70)},
        # The API's example thresholds, over the widest range the model covers well.
        f"carbon-aware {w[60]}-{w[100]} W, 100-300 g": carbon_aware(w[60], w[100], 100, 300),
        # Thresholds at the zone's quartiles, caps between the two best static caps.
        f"carbon-aware {w[70]}-{w[80]} W, zone quartiles": carbon_aware(w[70], w[80], q25, q75),
    }


def starts() -> list[datetime]:
    out, t = [], YEAR[0]
    while t < YEAR[1]:
        out.append(t)
        t += START_EVERY
    return out


@dataclass(frozen=True)
class Summary:
    jobs: int
    mean_hours: float
    mean_k_wh: float
    mean_kg: float

    @classmethod
    def of(cls, runs: Sequence[Run]) -> "Summary":
        return cls(
            jobs=len(runs),
            mean_hours=float(np.mean([r.hours for r in runs])),
            mean_k_wh=float(np.mean([r.k_wh for r in runs])),
            mean_kg=float(np.mean([r.kg for r in runs])),
        )


@dataclass(frozen=True)
class PolicyResult:
    power: dict[str, object]
    all_jobs: Summary
    by_work_hours: dict[str, Summary]


def run_zone(series: IntensitySeries) -> dict[str, PolicyResult]:
    times = starts()
    results: dict[str, PolicyResult] = {}
    for name, power in policies(series).items():
        by_len = {w: [simulate(series, power, s, w) for s in times] for w in WORK_HOURS}
        results[name] = PolicyResult(
            power=power.dump(),
            all_jobs=Summary.of([r for runs in by_len.values() for r in runs]),
            by_work_hours={str(w): Summary.of(runs) for w, runs in by_len.items()},
        )
    return results


def pct(value: float, base: float) -> str:
    return f"{100.0 * (value - base) / base:+.1f} %"


def table(zone: str, results: dict[str, PolicyResult]) -> list[str]:
    base = results["no cap"].all_jobs
    lines = [
        f"### {zone}",
        "",
        "| policy | mean run time (h) | energy (kWh) | CO2e (kg) | time vs no cap | energy vs no cap "
        "| CO2e vs no cap | kg CO2e saved per hour of slowdown |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        s = r.all_jobs
        slower = s.mean_hours - base.mean_hours
        # Only meaningful for a policy that really slows jobs down (at least a minute on average).
        per_hour = f"{(base.mean_kg - s.mean_kg) / slower:.2f}" if slower > 1 / 60 else "-"
        lines.append(
            f"| {name} | {s.mean_hours:.2f} | {s.mean_k_wh:.1f} | {s.mean_kg:.2f} "
            f"| {pct(s.mean_hours, base.mean_hours)} | {pct(s.mean_k_wh, base.mean_k_wh)} "
            f"| {pct(s.mean_kg, base.mean_kg)} | {per_hour} |"
        )
    return lines


def plot(all_results: dict[str, dict[str, PolicyResult]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    xs = np.linspace(MODEL_MIN_X, 1.0, 101)
    thr = np.array([throughput(x) for x in xs])
    pw = np.array([draw_w(x) / draw_w(1.0) for x in xs])
    left.plot(xs * 100, thr, label="throughput / uncapped")
    left.plot(xs * 100, pw, label="mean power / uncapped")
    left.plot(xs * 100, pw / thr, label="energy per unit of work / uncapped")
    left.set_xlabel("power cap, % of TDP")
    left.set_title("GPU model (fitted to Zeus NSDI'23 power traces)")
    left.grid(alpha=0.3)
    left.legend()

    markers = "os^vDP*X"
    for zone, color in zip(all_results, ("tab:blue", "tab:green", "tab:red"), strict=False):
        base = all_results[zone]["no cap"].all_jobs
        for (name, r), marker in zip(all_results[zone].items(), markers, strict=False):
            dt = 100.0 * (r.all_jobs.mean_hours - base.mean_hours) / base.mean_hours
            dc = 100.0 * (r.all_jobs.mean_kg - base.mean_kg) / base.mean_kg
            right.scatter(dt, dc, color=color, marker=marker, s=60, label=f"{zone}: {name}")
    right.set_xlabel("mean run time vs no cap, %")
    right.set_ylabel("CO2e vs no cap, %")
    right.set_title("8-GPU jobs of 1-24 h over 2020 (traces: Wiesner et al., Middleware 2021)", fontsize=10)
    right.grid(alpha=0.3)
    right.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- refitting the model


def fit_zeus(paths: Sequence[Path], datasets: Sequence[str]) -> dict[str, float]:
    """Least-squares fit of A, B, C, U to Zeus `summary_power_<gpu>.csv` power traces."""
    xs: list[float] = []
    rs: list[float] = []
    qs: list[float] = []
    us: list[float] = []
    for path in paths:
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if r["dataset"] in datasets]
        top = max(int(r["power_limit"]) for r in rows)
        configs: dict[tuple[str, str, str], dict[int, tuple[float, float]]] = defaultdict(dict)
        for r in rows:
            key = (r["dataset"], r["batch_size"], r["optimizer"])
            configs[key][int(r["power_limit"])] = (float(r["time_per_epoch"]), float(r["average_power"]))
        for points in configs.values():
            if top not in points:
                continue
            t_top, p_top = points[top]
            us.append(p_top / top)
            for limit, (t, p) in points.items():
                x = limit / top
                if MODEL_MIN_X <= x < 1.0:
                    xs.append(x)
                    rs.append(t_top / t)
                    qs.append(p / p_top)
    cut, thr, pw = 1.0 - np.array(xs), np.array(rs), np.array(qs)
    best = (np.inf, 0.0, 0.0)
    for b in np.arange(1.0, 5.0, 0.01):  # for a given B the best A is closed-form
        z = cut**b
        a = float(np.sum((1.0 - thr) * z) / np.sum(z * z))
        err = float(np.mean((1.0 - thr - a * z) ** 2))
        if err < best[0]:
            best = (err, a, float(b))
    c = float(np.sum((1.0 - pw) * cut) / np.sum(cut**2))
    return {
        "A": best[1],
        "B": best[2],
        "C": c,
        "U": float(np.median(us)),
        "rmse_throughput": best[0] ** 0.5,
        "points": float(len(xs)),
    }


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="folder with gb_2020.csv and fr_2020.csv")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--fit-zeus", type=Path, nargs="+", metavar="CSV", help="refit the GPU model and exit")
    ap.add_argument("--datasets", nargs="+", default=["imagenet", "squad", "sentiment140"])
    args = ap.parse_args(argv)

    if args.fit_zeus:
        print(json.dumps(fit_zeus(args.fit_zeus, args.datasets), indent=2))
        return 0

    data = args.data or next((d for d in DATA_DIRS if d.is_dir()), None)
    if data is None:
        print("no carbon-intensity data found; pass --data DIR", file=sys.stderr)
        return 2
    all_results: dict[str, dict[str, PolicyResult]] = {}
    out: list[str] = []
    for zone in ("GB", "FR"):
        series = IntensitySeries.from_csv((data / f"{zone.lower()}_2020.csv").read_text())
        all_results[zone] = run_zone(series)
        out += [*table(zone, all_results[zone]), ""]
    print("\n".join(out))

    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "model": {"A": MODEL_A, "B": MODEL_B, "C": MODEL_C, "U": MODEL_U, "tdp_w": GPU_TDP_W},
        "setup": {
            "gpus_per_job": GPUS_PER_JOB,
            "work_hours": list(WORK_HOURS),
            "start_every_h": START_EVERY.total_seconds() / 3600,
            "reevaluate_s": REEVALUATE_S,
            "hysteresis_w": HYSTERESIS_W,
            "year": [t.isoformat() for t in YEAR],
        },
        "zones": {z: {name: asdict(r) for name, r in res.items()} for z, res in all_results.items()},
    }
    (args.out / "power_capping.json").write_text(json.dumps(doc, indent=2) + "\n")
    if not args.no_plot:
        plot(all_results, args.out / "power_capping.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
