"""Carbon savings of greenjobs' planner against simple rules and the exact oracle, on real 2020 traces.

A seeded job mix (arrivals at whole minutes across 2020, run time 1-24 h, slack 0-48 h) is planned by
each strategy; the CO2e a job really emits is always computed on the TRUE trace (mean intensity over
its run x its run time, i.e. per kW of constant draw). Strategies:

  start-now        start at arrival in the first zone (the baseline of every percentage)
  nightly          the next 01:00 UTC if it is within the slack, else at once
  threshold        at once if the intensity is below the trace's 30th percentile, else the first moment
                   it drops below, else at the latest start (a real-time rule: it sees the true trace)
  cleaner-now      (spatial only) at once, in the zone that is cleaner at arrival
  planner          greenjobs.planning.job.plan with the true trace as a perfect forecast
  planner-noisy    the same planner fed a forecast issued at arrival whose error grows with lead time:
                   value x (1 + e), e = sigma(lead) x z, sigma = a + b x lead_hours, z an AR(1)
                   unit-variance series across forecast points (correlation --noise-rho)
  oracle           plan_bruteforce on the true trace (scan of starts plus the exact candidate set)

Scenarios: GB alone, FR alone, and GB+FR (each job may run in either; the baseline is GB now).
Then the check asked for in the issue: on GB 2020 with exactly 24 h of slack and 1-24 h jobs, the
planner's saving against a plain 1-minute brute-force scan (no candidate set).

    .venv/bin/python bench/carbon_savings.py [--jobs 2000] [--seed 2020] [--noise-a 0.03] [--noise-b 0.004]

Writes bench/results/carbon_savings.json, carbon_savings_jobs.csv and carbon_savings.png.
Data: Wiesner et al., "Let's Wait Awhile", Middleware 2021.
"""

import argparse
import csv
import json
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from _common import CITATION, RESULTS, load_trace, table, trace_dir

from greenjobs.carbon.series import IntensitySeries, from_epoch, to_epoch
from greenjobs.planning.job import PlanRequest, plan, plan_bruteforce

YEAR_START = datetime(2020, 1, 1, tzinfo=UTC)
LAST_ARRIVAL = datetime(2020, 12, 28, tzinfo=UTC)  # so that slack and run stay inside the trace
NIGHTLY_HOUR = 1
H = timedelta(hours=1)


@dataclass(frozen=True)
class Job:
    now: datetime
    duration: timedelta
    slack: timedelta

    @property
    def latest(self) -> datetime:
        return self.now + self.slack


# A strategy maps (job, zones) to (zone, start).
Strategy = Callable[[Job, list[str]], tuple[str, datetime]]


def make_jobs(n: int, seed: int, slack_hours: tuple[int, int] = (0, 48)) -> list[Job]:
    rng = random.Random(seed)
    minutes = int((LAST_ARRIVAL - YEAR_START).total_seconds() // 60)
    return [
        Job(
            now=YEAR_START + timedelta(minutes=rng.randrange(minutes)),
            duration=timedelta(minutes=rng.randrange(60, 24 * 60 + 1)),
            slack=timedelta(minutes=rng.randrange(slack_hours[0] * 60, slack_hours[1] * 60 + 1)),
        )
        for _ in range(n)
    ]


def request(job: Job, zones: list[str]) -> PlanRequest:
    return PlanRequest(now=job.now, duration=job.duration, latest_start=job.latest, zones=zones)


# ------------------------------------------------------------------ strategies


def start_now(job: Job, zones: list[str]) -> tuple[str, datetime]:
    return zones[0], job.now


def nightly(job: Job, zones: list[str]) -> tuple[str, datetime]:
    night = job.now.replace(hour=NIGHTLY_HOUR, minute=0, second=0, microsecond=0)
    if night < job.now:
        night += timedelta(days=1)
    return zones[0], night if night <= job.latest else job.now


def threshold_rule(truth: Mapping[str, IntensitySeries], percentile: float) -> Strategy:
    thresholds = {z: float(np.percentile(s.values, percentile)) for z, s in truth.items()}

    def strategy(job: Job, zones: list[str]) -> tuple[str, datetime]:
        zone = zones[0]
        series, limit = truth[zone], thresholds[zone]
        if series.at(job.now) < limit:
            return zone, job.now
        a, b = np.searchsorted(series.times, (to_epoch(job.now), to_epoch(job.latest)), side="right")
        below = np.flatnonzero(series.values[a:b] < limit)
        return zone, from_epoch(float(series.times[a + below[0]])) if len(below) else job.latest

    return strategy


def cleaner_now(truth: Mapping[str, IntensitySeries]) -> Strategy:
    def strategy(job: Job, zones: list[str]) -> tuple[str, datetime]:
        return min(zones, key=lambda z: truth[z].at(job.now)), job.now

    return strategy


def planner(forecasts_for: Callable[[Job, list[str]], Mapping[str, IntensitySeries]]) -> Strategy:
    def strategy(job: Job, zones: list[str]) -> tuple[str, datetime]:
        result = plan(request(job, zones), forecasts_for(job, zones))
        return result.zone, result.start

    return strategy


def oracle(truth: Mapping[str, IntensitySeries], step: timedelta) -> Strategy:
    def strategy(job: Job, zones: list[str]) -> tuple[str, datetime]:
        result = plan_bruteforce(request(job, zones), truth, step)
        return result.zone, result.start

    return strategy


class NoisyForecasts:
    """Forecasts issued at a job's arrival: the true trace times multiplicative, lead-growing error."""

    def __init__(self, truth: Mapping[str, IntensitySeries], a: float, b: float, rho: float, seed: int) -> None:
        self.truth, self.a, self.b, self.rho = truth, a, b, rho
        self.rng = np.random.default_rng(seed)

    def __call__(self, job: Job, zones: list[str]) -> dict[str, IntensitySeries]:
        now = to_epoch(job.now)
        horizon = to_epoch(job.latest + job.duration)
        out = {}
        for zone in zones:
            series = self.truth[zone]
            i = max(int(np.searchsorted(series.times, now, side="right")) - 1, 0)
            j = int(np.searchsorted(series.times, horizon, side="right")) + 1
            times, values = series.times[i:j], series.values[i:j]
            lead_hours = np.maximum(times - now, 0.0) / 3600.0
            sigma = self.a + self.b * lead_hours
            out[zone] = IntensitySeries(times.copy(), values * np.maximum(1.0 + sigma * self._ar1(len(times)), 0.0))
        return out

    def _ar1(self, n: int) -> np.ndarray:
        shocks = self.rng.standard_normal(n)
        z = np.empty(n)
        z[0] = shocks[0]
        scale = math.sqrt(1.0 - self.rho**2)
        for k in range(1, n):
            z[k] = self.rho * z[k - 1] + scale * shocks[k]
        return z


# ------------------------------------------------------------------ evaluation


def realised(truth: Mapping[str, IntensitySeries], job: Job, zone: str, start: datetime) -> float:
    """gCO2e per kW of draw: the TRUE mean intensity over the run times its hours."""
    return truth[zone].mean(start, job.duration) * (job.duration / H)


def run_scenario(
    name: str,
    zones: list[str],
    jobs: list[Job],
    strategies: dict[str, Strategy],
    truth: Mapping[str, IntensitySeries],
) -> tuple[dict[str, dict[str, float]], list[dict[str, object]]]:
    emitted: dict[str, list[float]] = {s: [] for s in strategies}
    delays: dict[str, list[float]] = {s: [] for s in strategies}
    moved: dict[str, int] = dict.fromkeys(strategies, 0)
    rows: list[dict[str, object]] = []
    for n, job in enumerate(jobs):
        row: dict[str, object] = {
            "scenario": name,
            "job": n,
            "now": job.now.strftime("%Y-%m-%dT%H:%MZ"),
            "duration_h": round(job.duration / H, 3),
            "slack_h": round(job.slack / H, 3),
        }
        for s, strategy in strategies.items():
            zone, start = strategy(job, zones)
            assert job.now <= start <= job.latest + timedelta(seconds=1), (s, job, start)
            g = realised(truth, job, zone, start)
            emitted[s].append(g)
            delays[s].append((start - job.now) / H)
            moved[s] += zone != zones[0]
            row[s] = round(g, 1)
            if len(zones) > 1:
                row[f"{s}_zone"] = zone
        rows.append(row)
    base = np.array(emitted["start-now"])
    oracle_total = float(np.sum(emitted["oracle"]))
    summary = {}
    for s, values in emitted.items():
        x = np.array(values)
        saved = float(np.sum(base - x))
        summary[s] = {
            "mean_job_reduction_percent": float(np.mean(100 * (base - x) / base)),
            "total_reduction_percent": 100 * saved / float(np.sum(base)),
            "percent_of_oracle_saving": 100 * saved / (float(np.sum(base)) - oracle_total),
            "mean_delay_hours": float(np.mean(delays[s])),
            "jobs_moved_zone": moved[s],
            "total_g_per_kw": float(np.sum(x)),
        }
    return summary, rows


def issue_check(truth: Mapping[str, IntensitySeries], n: int, seed: int) -> dict[str, float]:
    """GB 2020, exactly 24 h of slack, 1-24 h jobs: the planner against a plain 1-minute scan."""
    jobs = make_jobs(n, seed, slack_hours=(24, 24))
    gb = {"GB": truth["GB"]}
    planned, scanned, base = [], [], []
    for job in jobs:
        req = request(job, ["GB"])
        planned.append(realised(gb, job, "GB", plan(req, gb).start))
        grid = plan_bruteforce(req, gb, timedelta(minutes=1), include_candidates=False)
        scanned.append(realised(gb, job, "GB", grid.start))
        base.append(realised(gb, job, "GB", job.now))
    p, s, b = np.array(planned), np.array(scanned), np.array(base)
    return {
        "jobs": n,
        "planner_total_reduction_percent": float(100 * np.sum(b - p) / np.sum(b)),
        "bruteforce_total_reduction_percent": float(100 * np.sum(b - s) / np.sum(b)),
        "max_abs_diff_g_per_kwh": float(np.max(np.abs(p - s) / np.array([j.duration / H for j in jobs]))),
        "jobs_where_planner_is_worse": int(np.sum(p > s * (1 + 1e-9))),
        "jobs_where_planner_is_better": int(np.sum(p < s * (1 - 1e-9))),
    }


# ------------------------------------------------------------------ output


def plot(results: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = [s for s in dict.fromkeys(k for r in results.values() for k in r) if s != "start-now"]
    width = 0.8 / len(results)
    for k, (scenario, summary) in enumerate(results.items()):
        xs = [i + k * width for i in range(len(names))]
        shown = [(x, summary[s]["total_reduction_percent"]) for x, s in zip(xs, names, strict=True) if s in summary]
        ax.bar([x for x, _ in shown], [y for _, y in shown], width, label=scenario)
    ax.set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(names))], names, rotation=15)
    ax.set_ylabel("CO2e saved vs start-now (%)")
    ax.set_title("Carbon saved by strategy, 2020 traces (Wiesner et al., Middleware 2021)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs in the mix")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--noise-a", type=float, default=0.03, help="forecast error sigma at lead 0")
    parser.add_argument("--noise-b", type=float, default=0.004, help="sigma added per hour of lead time")
    parser.add_argument("--noise-rho", type=float, default=0.95, help="error correlation between points")
    parser.add_argument("--percentile", type=float, default=30, help="threshold rule's percentile")
    parser.add_argument("--oracle-step", type=float, default=30, help="oracle scan step, minutes")
    parser.add_argument("--check-jobs", type=int, default=500, help="jobs in the 24 h-slack check")
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args()

    data = trace_dir(args.data_dir)
    truth = {"GB": load_trace("GB", data), "FR": load_trace("FR", data)}
    jobs = make_jobs(args.jobs, args.seed)
    noisy = NoisyForecasts(truth, args.noise_a, args.noise_b, args.noise_rho, args.seed)
    common: dict[str, Strategy] = {"start-now": start_now}
    temporal = {
        **common,
        "nightly": nightly,
        "threshold": threshold_rule(truth, args.percentile),
    }
    spatial = {**common, "cleaner-now": cleaner_now(truth)}
    searching: dict[str, Strategy] = {
        "planner": planner(lambda job, zones: truth),
        "planner-noisy": planner(noisy),
        "oracle": oracle(truth, timedelta(minutes=args.oracle_step)),
    }

    results: dict[str, dict[str, dict[str, float]]] = {}
    all_rows: list[dict[str, object]] = []
    for name, zones, strategies in (
        ("GB", ["GB"], {**temporal, **searching}),
        ("FR", ["FR"], {**temporal, **searching}),
        ("GB+FR", ["GB", "FR"], {**spatial, **searching}),
    ):
        results[name], rows = run_scenario(name, zones, jobs, strategies, truth)
        all_rows += rows
        print(f"\n{name}: {args.jobs} jobs, 1-24 h, slack 0-48 h, arrivals across 2020 (seed {args.seed})")
        header = ["strategy", "mean job saving %", "total saving %", "% of oracle saving", "mean delay h"]
        header += ["moved zone"] if len(zones) > 1 else []
        print(
            table(
                header,
                [
                    [
                        s,
                        r["mean_job_reduction_percent"],
                        r["total_reduction_percent"],
                        r["percent_of_oracle_saving"],
                        r["mean_delay_hours"],
                        *([r["jobs_moved_zone"]] if len(zones) > 1 else []),
                    ]
                    for s, r in results[name].items()
                ],
            )
        )

    check = issue_check(truth, args.check_jobs, args.seed + 1)
    print(
        f"\nIssue check, GB 2020, 24 h slack, {check['jobs']} jobs of 1-24 h: planner saves "
        f"{check['planner_total_reduction_percent']:.3f} %, 1-minute brute force saves "
        f"{check['bruteforce_total_reduction_percent']:.3f} %; largest per-job difference "
        f"{check['max_abs_diff_g_per_kwh']:.2e} gCO2e/kWh; planner worse on "
        f"{check['jobs_where_planner_is_worse']} jobs, better on {check['jobs_where_planner_is_better']}."
    )
    print(f"Noise: sigma = {args.noise_a} + {args.noise_b} x lead hours, rho {args.noise_rho}. {CITATION}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    summary = {"parameters": params, "scenarios": results, "issue_check": check, "data": CITATION}
    (RESULTS / "carbon_savings.json").write_text(json.dumps(summary, indent=2) + "\n")
    fields = list(dict.fromkeys(k for row in all_rows for k in row))
    with (RESULTS / "carbon_savings_jobs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(all_rows)
    plot(results, RESULTS / "carbon_savings.png")
    print("wrote bench/results/carbon_savings.json, carbon_savings_jobs.csv, carbon_savings.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
