"""`greenjobs plan --whole-run`: the whole run of one long job, planned as segments (start, end, cap)
in one zone by greenjobs.planning.whole_run: pauses at checkpoints around dirty hours (with
--resume-overhead) and a GPU cap paced against the deadline (with --caps).

    greenjobs plan --whole-run --forecast GB=gb.csv --duration 72h --deadline 2020-03-09T00:00:00Z \\
        --now 2020-03-05T00:00:00Z --gpus 8 --caps 0.6,0.7,0.8,0.9,1 --resume-overhead 5m --min-segment 30m
"""

import argparse
import json
from collections.abc import Mapping
from datetime import datetime
from typing import TextIO

from greenjobs.api.durations import format_duration, format_time, parse_duration, parse_time
from greenjobs.carbon.series import IntensitySeries

from .whole_run import Interruptible, WholeRunPlan, WholeRunRequest, plan_whole_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("whole run (--whole-run)")
    group.add_argument(
        "--whole-run",
        action="store_true",
        help="plan the whole run of one job as segments (pauses and paced caps) in the first zone",
    )
    group.add_argument("--gpus", type=int, default=1, help="GPUs of the job (default 1)")
    group.add_argument("--tdp", type=float, default=400.0, metavar="W", help="per-GPU TDP in watts (default 400)")
    group.add_argument(
        "--caps",
        default="1",
        metavar="X[,X...]",
        help="allowed per-GPU caps as fractions of TDP, e.g. 0.6,0.8,1 (default 1: no pacing)",
    )
    group.add_argument(
        "--resume-overhead",
        metavar="D",
        help="the job resumes from a checkpoint, losing this much per resume: it may be paused",
    )
    group.add_argument("--min-segment", default="30m", metavar="D", help="shortest run worth a restart (30m)")
    group.add_argument("--max-interruptions", type=int, metavar="N", help="at most this many pauses")


class WholeRunError(ValueError):
    """The request cannot be planned as asked (bad flags: exit status 2)."""


def build(args: argparse.Namespace, now: datetime) -> WholeRunRequest:
    if not args.duration:
        raise WholeRunError("--whole-run needs --duration")
    work = parse_duration(args.duration)
    if args.deadline:
        deadline = parse_time(args.deadline)
    elif args.max_delay:
        deadline = now + parse_duration(args.max_delay) + work
    else:
        raise WholeRunError("--whole-run needs --deadline or --max-delay")
    try:
        caps = sorted({float(x) for x in args.caps.split(",") if x.strip()})
    except ValueError:
        raise WholeRunError(f"--caps {args.caps!r}: expected fractions of TDP such as 0.6,0.8,1") from None
    interruptible = None
    if args.resume_overhead:
        interruptible = Interruptible(
            parse_duration(args.resume_overhead), parse_duration(args.min_segment), args.max_interruptions
        )
    elif args.max_interruptions is not None:
        raise WholeRunError("--max-interruptions needs --resume-overhead (a job that may be paused)")
    try:
        return WholeRunRequest(
            now=now,
            remaining_work=work,
            deadline=deadline,
            gpus=args.gpus,
            tdp_watts=args.tdp,
            caps=caps,
            interruptible=interruptible,
            running=False,
        )
    except ValueError as e:
        raise WholeRunError(str(e)) from None


def run(
    args: argparse.Namespace,
    request: WholeRunRequest,
    forecasts: Mapping[str, IntensitySeries],
    zone: str,
    out: TextIO,
) -> int:
    """Plan `request` (from `build`; the caller checked that the forecast covers its now) and print it;
    1 when the deadline cannot be kept."""
    result = plan_whole_run(request, forecasts[zone])
    if args.output == "json":
        print(json.dumps(as_json(result, request, zone)), file=out)
    else:
        print(render(result, request, zone), file=out)
    return 0 if result.feasible else 1


def as_json(p: WholeRunPlan, req: WholeRunRequest, zone: str) -> dict[str, object]:
    return {
        "zone": zone,
        "segments": [
            {
                "start": format_time(s.start),
                "end": format_time(s.end),
                "capWatts": round(s.cap_fraction * req.tdp_watts),
            }
            for s in p.segments
        ],
        "finishesAt": format_time(p.finishes_at),
        "feasible": p.feasible,
        "interruptions": p.interruptions,
        "expectedGrams": round(p.expected_grams, 1),
        "straightGrams": None if p.straight_grams is None else round(p.straight_grams, 1),
        "savingPercent": None if p.saving_percent is None else round(p.saving_percent, 1),
        "energyKWh": round(p.energy_kwh, 3),
        "resumeOverheadKWh": round(p.overhead_kwh, 3),
        "horizonLimited": p.horizon_limited,
    }


def render(p: WholeRunPlan, req: WholeRunRequest, zone: str) -> str:
    lines = [f"{'SEGMENT':<8} {'START':<21} {'END':<21} {'LENGTH':<10} CAP-W"]
    for i, s in enumerate(p.segments, start=1):
        length = format_duration(s.end - s.start)
        cap = round(s.cap_fraction * req.tdp_watts)
        lines.append(f"{i:<8} {format_time(s.start):<21} {format_time(s.end):<21} {length:<10} {cap}")
    saving = "n/a (the forecast does not cover the straight run)"
    if p.saving_percent is not None and p.straight_grams is not None:
        saving = f"{p.saving_percent:.1f} % ({p.expected_grams / 1000:.2f} kg vs {p.straight_grams / 1000:.2f} kg)"
    late = "" if p.feasible else f" (LATE: the deadline is {format_time(req.deadline)})"
    lines += [
        "",
        f"zone {zone}: {len(p.segments)} segment(s), {p.interruptions} pause(s),"
        f" ends {format_time(p.finishes_at)}{late}",
        f"saving vs running straight through from now at the highest cap: {saving}",
        f"energy {p.energy_kwh:.2f} kWh, of which resumes {p.overhead_kwh:.3f} kWh"
        + (" (part of the run lies beyond the forecast: re-plan as it moves)" if p.horizon_limited else ""),
    ]
    return "\n".join(lines)
