"""The fleet planner's exact stage on and off, replayed online on training and held-out days.

planning.fleet re-plans a batch the greedy leaves late as one time-indexed program for its deadlines
(planning.fleet_exact, HiGHS), within `exact_time_limit_s` per re-plan. This replays
bench/fleet_planning.py's online `fleet` strategy (perfect forecast, hourly re-plans, arrivals folded
in) with the stage off (0) and on (the planner's default) on TRAINING days (trace days 21-22) and
HELD-OUT days (28-29, the samples of docs/benchmarks/fleet-planning.md), every cluster, zone set, size
and deadline rule. Cells: CO2e saved vs FIFO % / deadlines missed; the slowest re-plan.

Data: Microsoft's ITP 2021 traces (Gu et al., "ElasticFlow", ASPLOS '23; MIT licence) on the 2020 GB
and FR carbon-intensity traces (Wiesner et al., "Let's Wait Awhile", Middleware 2021).

    .venv/bin/python bench/exact_stage.py [--clusters cluster04 cluster07] [--zones GB+FR GB FR]

Writes bench/results/exact_stage.json. About 30 minutes on one core.
"""

import argparse
from typing import Any

import fleet_planning as fp
from _common import table

from greenjobs.planning import fleet


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-day", type=float, default=21)
    ap.add_argument("--test-day", type=float, default=28)
    ap.add_argument("--days", type=float, default=2)
    ap.add_argument("--clusters", nargs="+", default=["cluster04", "cluster07"])
    ap.add_argument("--zones", nargs="+", default=["GB+FR", "GB", "FR"])
    ap.add_argument("--sizes", nargs="+", default=["tight", "roomy"])
    ap.add_argument("--deadlines", nargs="+", default=["elasticflow", "slack24h"])
    args = ap.parse_args()
    limits = [0.0, fleet.DEFAULT_EXACT_TIME_LIMIT_S]

    header = ["cluster", "zones", "size", "deadlines", "days", "FIFO missed"]
    header += ["off: saved % / missed", f"on ({limits[1]:g} s): saved % / missed", "on: slowest re-plan s"]
    settings: list[dict[str, Any]] = []
    rows = []
    for split, day in (("train", args.train_day), ("held-out", args.test_day)):
        for cluster in args.clusters:
            for rule in args.deadlines:
                for size in args.sizes:
                    for zones in args.zones:
                        r = fp.replay_values(cluster, zones, size, rule, day, args.days, "exact_time_limit_s", limits)
                        settings.append(
                            {"cluster": cluster, "zones": zones, "size": size, "deadlines": rule, "split": split, **r}
                        )
                        off, on = (r["runs"][str(v)] for v in limits)
                        row = [cluster, zones, size, rule, split, r["fifo_missed"]]
                        row += [
                            f"{off['saved_percent']:.1f} / {off['missed']}",
                            f"{on['saved_percent']:.1f} / {on['missed']}",
                        ]
                        row.append(f"{on['replan_max_s']:.2f}")
                        rows.append(row)
                        print(table(header, rows[-1:]), flush=True)
    print()
    print(table(header, rows))
    for split in ("train", "held-out"):
        part = [st for st in settings if st["split"] == split]
        missed = [sum(st["runs"][str(v)]["missed"] for st in part) for v in limits]
        saved = [sum(st["fifo_kg"] - st["runs"][str(v)]["kg"] for st in part) / 1000 for v in limits]
        print(f"{split}: deadlines missed off {missed[0]}, on {missed[1]};", end=" ")
        print(f"t CO2e saved off {saved[0]:.2f}, on {saved[1]:.2f}")
    fp.save_result("exact_stage", {"parameters": vars(args), "limits": limits, "settings": settings})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
