"""Learn the fleet planner's `zone_gap_percent` offline on some days of a trace; check it on others.

Online, a job that waits in the clean zone for a marginally cleaner hour holds GPUs there that later
arrivals would use instead of the dirtier zone. planning.fleet lets a job start earlier within
`zone_gap_percent` of what its zone choice is worth (second-cleanest minus cleanest zone's mean over
its window). This replays bench/fleet_planning.py's online `fleet` strategy (perfect forecast, hourly
re-plans, arrivals folded in) for each candidate value on TRAINING days and on HELD-OUT days, tight
and roomy clusters (sizes as bench/fleet_planning.py), every zone set (--zones) and deadline rule. The
value kept is the best total CO2e saved on the training days with no more deadlines missed than FIFO
in any of them; the held-out days say whether it carries over. A single zone has no gap: the value
changes nothing there.

Data: Microsoft's ITP 2021 traces (Gu et al., "ElasticFlow", ASPLOS '23; MIT licence) on the 2020 GB
and FR carbon-intensity traces (Wiesner et al., "Let's Wait Awhile", Middleware 2021).

    .venv/bin/python bench/zone_gap.py --zones GB+FR [--train-day 21] [--test-day 28] [--days 2] \
        [--values 0 1 2.5 5]

Writes bench/results/zone_gap.json. About 15 minutes on one core with --zones GB+FR.
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
    ap.add_argument("--values", type=float, nargs="+", default=[0, 1, 2.5, 5])
    ap.add_argument("--clusters", nargs="+", default=["cluster04", "cluster07"])
    ap.add_argument("--zones", nargs="+", default=["GB+FR", "GB", "FR"])
    ap.add_argument("--sizes", nargs="+", default=["tight", "roomy"])
    args = ap.parse_args()

    header = ["cluster", "zones", "size", "deadlines", "days", "FIFO missed"]
    header += [f"{v:g} %: saved % / missed" for v in args.values]
    settings: list[dict[str, Any]] = []
    rows = []
    for cluster in args.clusters:
        for rule in ("slack24h", "elasticflow"):
            for size in args.sizes:
                for zones in args.zones:
                    for split, day in (("train", args.train_day), ("held-out", args.test_day)):
                        r = fp.replay_values(
                            cluster, zones, size, rule, day, args.days, "zone_gap_percent", args.values
                        )
                        settings.append(
                            {"cluster": cluster, "zones": zones, "size": size, "deadlines": rule, "split": split, **r}
                        )
                        row = [cluster, zones, size, rule, split, r["fifo_missed"]]
                        row += [
                            f"{r['runs'][str(v)]['saved_percent']:.1f} / {r['runs'][str(v)]['missed']}"
                            for v in args.values
                        ]
                        rows.append(row)
                        print(table(header, rows[-1:]), flush=True)
    # The value kept: the best CO2e saved over the training days, no setting missing more than FIFO.
    train = [st for st in settings if st["split"] == "train"]
    ok = [v for v in args.values if all(st["runs"][str(v)]["missed"] <= st["fifo_missed"] for st in train)]
    best = max(ok or args.values, key=lambda v: sum(st["fifo_kg"] - st["runs"][str(v)]["kg"] for st in train))
    print()
    print(table(header, rows))
    print(f"\nkept: zone_gap_percent {best:g} (planner default {fleet.DEFAULT_ZONE_GAP_PERCENT:g})")
    fp.save_result("zone_gap", {"parameters": vars(args), "settings": settings, "chosen": best})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
