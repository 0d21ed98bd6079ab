"""Planner throughput: jobs planned per second, in process, against a 7-day 15-minute forecast.

Each zone's forecast is a week of a real 2020 trace (Wiesner et al., Middleware 2021) resampled to
15 minutes by linear interpolation (672 points); 4 zones are GB and FR, and GB and FR a week later.
Jobs: `now` anywhere in the first two days (to the second), 1-24 h long, 0-48 h of slack, seeded.

    .venv/bin/python bench/planner_throughput.py [--jobs 10000] [--repeat 5]

Prints a table and writes bench/results/planner_throughput.json. Target: 10,000 jobs in under 1 s.
"""

import argparse
import json
import math
import platform
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from _common import CITATION, RESULTS, load_trace, table, trace_dir

from greenjobs.carbon.series import IntensitySeries, to_epoch
from greenjobs.planning.job import PlanRequest, plan, plan_bruteforce

WEEK_START = datetime(2020, 3, 2, tzinfo=UTC)
STEP = timedelta(minutes=15)


def resampled_week(series: IntensitySeries, start: datetime) -> IntensitySeries:
    """7 days of 15-minute points, linearly interpolated between the trace's points."""
    t = to_epoch(start) + np.arange(7 * 24 * 4, dtype=np.float64) * STEP.total_seconds()
    return IntensitySeries(t, np.interp(t, series.times, series.values), float(t[-1] + STEP.total_seconds()))


def forecasts(data_dir: Path) -> dict[str, IntensitySeries]:
    gb, fr = load_trace("GB", data_dir), load_trace("FR", data_dir)
    week = timedelta(days=7)
    # The later weeks are moved onto the same dates so that all four zones cover the jobs.
    return {
        "GB": resampled_week(gb, WEEK_START),
        "FR": resampled_week(fr, WEEK_START),
        "GB2": resampled_week(gb, WEEK_START + week).shifted(-week),
        "FR2": resampled_week(fr, WEEK_START + week).shifted(-week),
    }


def jobs(n: int, zones: list[str], seed: int) -> list[PlanRequest]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        now = WEEK_START + timedelta(seconds=rng.randrange(2 * 86400))
        duration = timedelta(seconds=rng.randrange(3600, 24 * 3600 + 1))
        out.append(PlanRequest(now, duration, now + timedelta(seconds=rng.randrange(48 * 3600 + 1)), zones))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5, help="best of this many timed runs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--check", type=int, default=200, help="jobs also checked against brute force")
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args()

    fc = forecasts(trace_dir(args.data_dir))
    rows, results = [], []
    for zones in (["GB"], ["GB", "FR"], ["GB", "FR", "GB2", "FR2"]):
        requests = jobs(args.jobs, zones, args.seed)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for r in requests:
                plan(r, fc)
            times.append(time.perf_counter() - t0)
        best = min(times)
        # The speed is only worth having if the answers are right.
        mismatches = sum(
            not math.isclose(
                plan(r, fc).expected_g_per_kwh,
                plan_bruteforce(r, fc, timedelta(hours=1)).expected_g_per_kwh,
                rel_tol=1e-9,
            )
            for r in requests[: args.check]
        )
        rows.append(
            [
                len(zones),
                args.jobs,
                best,
                args.jobs / best,
                1e6 * best / args.jobs,
                "yes" if best < 1 else "NO",
            ]
        )
        results.append(
            {
                "zones": zones,
                "jobs": args.jobs,
                "seconds_best": best,
                "seconds_all": times,
                "jobs_per_second": args.jobs / best,
                "checked_against_bruteforce": min(args.check, args.jobs),
                "mismatches": int(mismatches),
            }
        )
        if mismatches:
            print(
                f"WARNING: {mismatches} plans differ from brute force with {len(zones)} zones",
                file=sys.stderr,
            )

    points = len(fc["GB"])
    print(f"Planner throughput: 7-day forecast, {points} points per zone (15 min), best of {args.repeat} runs")
    print(table(["zones", "jobs", "seconds", "jobs/s", "us/job", "10k jobs < 1 s"], rows))
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    print(CITATION)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "planner_throughput.json"
    meta = {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine()}
    out.write_text(json.dumps({"forecast_points_per_zone": points, **meta, "runs": results}, indent=2) + "\n")
    print(f"wrote {out.relative_to(RESULTS.parents[1])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
