"""How much of the lower bound's saving a schedule can keep while missing no more deadlines than FIFO.

bench/fleet_planning.py's lower bound lets each job end as late as the latest of the strategies it is
compared with (FIFO, CAP and the fleet planner), so in a tight cluster it counts savings that only a
schedule missing deadlines can make. This solves, per setting, the same time-indexed program on the
15-minute grid as an integer program (HiGHS's branch and bound, scipy), each job ending by the latest
of its deadline (plus the replay's 15-minute grace), its end under FIFO and its end under CAP (the
bound's windows, less the fleet strategies' ends), with one more constraint: at most as many jobs end
past their deadline as under FIFO. Its optimum (or the proven bound where the time limit cuts the
search short) is the least CO2e any schedule missing no more deadlines than FIFO emits in those
windows, with every arrival known in advance.

Data: Microsoft's ITP 2021 traces (Gu et al., "ElasticFlow", ASPLOS '23; MIT licence) on the 2020 GB
and FR carbon-intensity traces (Wiesner et al., "Let's Wait Awhile", Middleware 2021).

    .venv/bin/python bench/deadline_bound.py [--clusters cluster04] [--zones GB+FR] [--deadlines elasticflow]

Writes bench/results/deadline_bound_<deadlines>.json.
"""

import argparse
from typing import Any

import fleet_planning as fp
from _common import table


def bounds(cluster: str, zones: str, rule: str, day: float, days: float, limit_s: float) -> dict[str, Any]:
    jobs, world = fp.sample(cluster, zones, "tight", rule, day, days)
    fifo = fp.simulate(jobs, world, fp.Fifo())
    cap = fp.simulate(jobs, world, fp.CapQuota())
    m = fp.metrics(jobs, world, fifo, days)
    window = {j.id: max(j.deadline + fp.STEP, *(s[j.id][1] + j.bins * fp.STEP for s in (fifo, cap))) for j in jobs}
    kg, seconds = fp.lower_bound(jobs, world, window, integral_s=limit_s, max_late=int(m["missed"]))
    return {
        "fifo_kg": m["kg"],
        "fifo_missed": m["missed"],
        "bound_kg": kg,
        "saved_percent": 100 * (1 - kg / m["kg"]),
        "solve_s": seconds,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--day", type=float, default=28)
    ap.add_argument("--days", type=float, default=2)
    ap.add_argument("--clusters", nargs="+", default=["cluster04", "cluster07"])
    ap.add_argument("--zones", nargs="+", default=["GB+FR", "GB", "FR"])
    ap.add_argument("--deadlines", nargs="+", default=["elasticflow"])
    ap.add_argument("--limit", type=float, default=600.0, help="seconds of branch and bound per setting")
    args = ap.parse_args()
    header = ["cluster", "zones", "deadlines", "FIFO missed", "missing <= FIFO: saved % at best", "solve s"]
    rows, out = [], []
    for cluster in args.clusters:
        for rule in args.deadlines:
            for zones in args.zones:
                r = bounds(cluster, zones, rule, args.day, args.days, args.limit)
                out.append({"cluster": cluster, "zones": zones, "size": "tight", "deadlines": rule, **r})
                rows.append(
                    [cluster, zones, rule, r["fifo_missed"], f"{r['saved_percent']:.1f}", f"{r['solve_s']:.0f}"]
                )
                print(table(header, rows[-1:]), flush=True)
    print()
    print(table(header, rows))
    fp.save_result(f"deadline_bound_{'_'.join(args.deadlines)}", {"parameters": vars(args), "settings": out})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
