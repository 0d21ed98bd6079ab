"""`greenjobs plan`: when and where would a job run, and what would it save (what-if planning).

Runs the operator's own planner against forecast files:

    greenjobs plan --forecast GB=gb.csv --forecast FR=fr.csv --duration 6h --max-delay 12h
    greenjobs plan --forecast GB=gb.csv ... --jobs jobs.jsonl -o json
    greenjobs plan --forecast GB=gb.csv ... --jobs jobs.jsonl --capacity GB=16 --capacity FR=8

With --capacity the batch is planned jointly by the fleet planner (greenjobs.planning.fleet), against
that many free GPUs per zone; a job line may carry "gpus" (default 1) and "priority" (default 0).
"""

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from greenjobs.api.durations import format_duration, format_time, parse_duration, parse_time, shift_time
from greenjobs.carbon.series import IntensitySeries
from greenjobs.planning import whole_run_cli
from greenjobs.planning.capacity import Capacity
from greenjobs.planning.decisions import with_start_latency
from greenjobs.planning.fleet import (
    DEFAULT_EXACT_TIME_LIMIT_S,
    DEFAULT_ZONE_GAP_PERCENT,
    Assignment,
    FleetJob,
    plan_fleet,
)
from greenjobs.planning.job import PlanRequest, PlanResult, plan
from greenjobs.planning.settings import DEFAULT_START_LATENCY

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--forecast",
        action="append",
        default=[],
        metavar="ZONE=FILE",
        required=True,
        help="forecast of a zone, CSV (timestamp,gCO2e/kWh) or JSON by extension; repeatable",
    )
    parser.add_argument("--duration", metavar="D", help="estimated run time, e.g. 6h, 1h30m, PT6H")
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--deadline", metavar="T", help="latest completion time (RFC 3339)")
    limit.add_argument("--max-delay", metavar="D", help="latest start = now + this delay")
    parser.add_argument("--now", metavar="T", help="planning time (RFC 3339); default: the current time")
    parser.add_argument(
        "--start-when-below", type=float, metavar="N", help="gPerKWh: start at once where it is this clean"
    )
    parser.add_argument(
        "--zones",
        action="append",
        metavar="Z[,Z...]",
        help="candidate zones in order (the first is the baseline); default: the --forecast zones",
    )
    parser.add_argument(
        "--jobs",
        metavar="FILE",
        help='JSON lines, one job each: {"id", "now", "duration", "deadline"|"maxDelay"}',
    )
    parser.add_argument(
        "--capacity",
        action="append",
        default=[],
        metavar="ZONE=GPUS",
        help="free GPUs of a zone: plan the --jobs batch jointly against capacity; repeatable",
    )
    parser.add_argument(
        "--zone-gap-percent",
        type=float,
        default=DEFAULT_ZONE_GAP_PERCENT,
        metavar="P",
        help="with --capacity: a job starts earlier in its cleanest zone for up to P%% of that zone's "
        f"advantage (default {DEFAULT_ZONE_GAP_PERCENT:g}; 0: the cleanest start)",
    )
    parser.add_argument(
        "--exact-time-limit",
        type=float,
        default=DEFAULT_EXACT_TIME_LIMIT_S,
        metavar="S",
        help="with --capacity: where the fast plan leaves a job late, solve the batch exactly (HiGHS) for "
        f"at most S seconds (default {DEFAULT_EXACT_TIME_LIMIT_S:g}; 0: off)",
    )
    parser.add_argument(
        "--start-latency",
        default=format_duration(DEFAULT_START_LATENCY),
        metavar="D",
        help="with --capacity: from a planned start to the job running (admission, pod start); each start "
        "holds its GPUs this much longer and is planned this much before the latest start (default "
        f"{format_duration(DEFAULT_START_LATENCY)}, the operator's fleet.startLatency)",
    )
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")
    whole_run_cli.add_arguments(parser)


def run(args: argparse.Namespace, clock: Clock = _utc_now, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        forecasts = load_forecasts(args.forecast)
        zones = _zones(args.zones, forecasts)
        default_now = parse_time(args.now) if args.now else clock()
    except (OSError, ValueError) as e:
        _error(str(e))
        return 2
    if args.whole_run:
        if args.jobs or args.capacity or args.start_when_below is not None:
            _error("--whole-run plans one job: --jobs, --capacity and --start-when-below do not apply")
            return 2
        try:
            whole = whole_run_cli.build(args, default_now)
            check_covered(zones[:1], forecasts, default_now, f"now ({format_time(default_now)})")
            return whole_run_cli.run(args, whole, forecasts, zones[0], out)
        except whole_run_cli.WholeRunError as e:
            _error(str(e))
            return 2
        except ValueError as e:
            _error(str(e))
            return 1
    if args.capacity:
        if not args.jobs:
            _error("--capacity plans a batch: give --jobs FILE")
            return 2
        if args.start_when_below is not None:
            _error("--start-when-below is not used by the fleet planner (--capacity)")
            return 2
        try:
            capacity = parse_capacity(args.capacity)
            latency = parse_duration(args.start_latency)
        except ValueError as e:
            _error(str(e) if "--" in str(e) else f"--start-latency: {e}")
            return 2
        return _run_fleet(args, forecasts, zones, default_now, capacity, latency, out)
    if args.jobs:
        return _run_batch(args, forecasts, zones, default_now, out)
    try:
        if not args.duration:
            raise ValueError("--duration is required (or use --jobs)")
        if not (args.deadline or args.max_delay):
            raise ValueError("one of --deadline or --max-delay is required")
        request = build_request(
            now=default_now,
            duration=args.duration,
            deadline=args.deadline,
            max_delay=args.max_delay,
            zones=zones,
            start_when_below=args.start_when_below,
        )
        check_plannable(request, forecasts)
        result = plan(request, forecasts)
    except CannotPlan as e:
        _error(str(e))
        return 1
    except ValueError as e:
        _error(str(e))
        return 2
    if result.horizon_limited and result.horizon is not None:
        _note(f"the forecast covers until {format_time(result.horizon)}: later starts were not considered")
    if args.output == "json":
        obj = {
            **result_json(result),
            "latestStart": format_time(request.latest_start),
            "reason": result.reason,
        }
        print(json.dumps(obj), file=out)
    else:
        print(render_table([(None, request, result)]), file=out)
    return 0


# ------------------------------------------------------------------ building blocks


def load_forecasts(specs: Sequence[str]) -> dict[str, IntensitySeries]:
    """`ZONE=FILE` specs -> series; JSON when the file ends in .json, CSV otherwise."""
    forecasts: dict[str, IntensitySeries] = {}
    for spec in specs:
        zone, sep, file = spec.partition("=")
        if not sep or not zone.strip() or not file:
            raise ValueError(f"--forecast {spec!r}: expected ZONE=FILE")
        path = Path(file)
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() == ".json":
                forecasts[zone.strip()] = IntensitySeries.from_json(text)
            else:
                forecasts[zone.strip()] = IntensitySeries.from_csv(text)
        except ValueError as e:
            raise ValueError(f"--forecast {spec!r}: {e}") from None
    return forecasts


def build_request(
    *,
    now: datetime,
    duration: str,
    deadline: str | None,
    max_delay: str | None,
    zones: Sequence[str],
    start_when_below: float | None = None,
) -> PlanRequest:
    """Latest start = deadline - duration, or now + max delay (exactly one of the two)."""
    if (deadline is None) == (max_delay is None):
        raise ValueError("give exactly one of deadline or maxDelay")
    d = parse_duration(duration)
    if d <= timedelta(0):
        raise ValueError(f"duration must be positive, got {duration!r}")
    if deadline is not None:
        latest = shift_time(parse_time(deadline), -d, "deadline")
    else:
        assert max_delay is not None
        latest = shift_time(now, parse_duration(max_delay), "maxDelay")
    return PlanRequest(now=now, duration=d, latest_start=latest, zones=zones, start_when_below=start_when_below)


class CannotPlan(ValueError):
    """The job cannot be planned as asked (exit status 1): its latest start has passed, or no forecast
    covers `now`."""


def check_plannable(request: PlanRequest, forecasts: Mapping[str, IntensitySeries]) -> None:
    """Raise CannotPlan when the latest start is already past, or a zone's forecast does not cover now."""
    if request.latest_start < request.now:
        raise CannotPlan(
            f"the deadline cannot be met: latest start {format_time(request.latest_start)}"
            f" is before now ({format_time(request.now)})"
        )
    check_covered(request.zones, forecasts, request.now, f"now ({format_time(request.now)})")


def check_covered(zones: Sequence[str], forecasts: Mapping[str, IntensitySeries], at: datetime, what: str) -> None:
    """Raise CannotPlan when a zone's forecast does not cover `at` (`what` names it in the message):
    nothing is extrapolated."""
    for zone in zones:
        series = forecasts.get(zone)
        if series is not None and not series.start <= at < series.horizon:
            raise CannotPlan(
                f"the forecast for {zone} covers {format_time(series.start)} to {format_time(series.horizon)},"
                f" not {what}"
            )


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def result_json(result: PlanResult) -> dict[str, Any]:
    return {
        "zone": result.zone,
        "start": format_time(result.start),
        "expectedGPerKWh": _round(result.expected_g_per_kwh, 3),
        "baselineGPerKWh": _round(result.baseline_g_per_kwh, 3),
        "expectedSavingsPercent": _round(result.expected_savings_percent, 2),
        "forecastHorizon": format_time(result.horizon) if result.horizon else None,
        "horizonLimited": result.horizon_limited,
    }


def render_table(rows: Sequence[tuple[str | None, PlanRequest, PlanResult]]) -> str:
    """An aligned table: one row per job (with an ID column when the jobs have ids)."""
    with_id = any(job_id is not None for job_id, _, _ in rows)
    header = [*(["ID"] if with_id else []), "ZONE", "START", "LATEST-START", "EXPECTED-G/KWH"]
    header += ["BASELINE-G/KWH", "SAVED-%", "REASON"]
    lines = [header]
    for job_id, request, r in rows:
        cells = [format_time(r.start), format_time(request.latest_start), _cell(r.expected_g_per_kwh)]
        cells += [_cell(r.baseline_g_per_kwh), _cell(r.expected_savings_percent), r.reason]
        lines.append([*([job_id or ""] if with_id else []), r.zone, *cells])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"  # "-": the forecast does not cover it


def _zones(selected: Sequence[str] | None, forecasts: Mapping[str, IntensitySeries]) -> list[str]:
    if not selected:
        return list(forecasts)
    zones = [z.strip() for item in selected for z in item.split(",") if z.strip()]
    unknown = [z for z in zones if z not in forecasts]
    if unknown:
        raise ValueError(f"--zones {', '.join(unknown)}: no --forecast given for them")
    return zones


def _run_batch(
    args: argparse.Namespace,
    forecasts: Mapping[str, IntensitySeries],
    zones: Sequence[str],
    default_now: datetime,
    out: TextIO,
) -> int:
    """One plan per input line; a bad line is reported on stderr by number and the rest still run."""
    source = _open_jobs(args.jobs)
    if source is None:
        return 2
    failed = 0
    rows: list[tuple[str | None, PlanRequest, PlanResult]] = []
    with source:
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            try:
                job_id, request = _parse_job(line, default_now, zones, forecasts, args.start_when_below)
                check_plannable(request, forecasts)
                result = plan(request, forecasts)
            except (ValueError, TypeError, KeyError) as e:
                _error(f"{args.jobs} line {number}: {e}")
                failed += 1
                continue
            if args.output == "json":
                print(json.dumps({"id": job_id, **result_json(result)}), file=out, flush=True)
            else:
                rows.append((job_id, request, result))
    if args.output == "table" and rows:
        print(render_table(rows), file=out)
    return 1 if failed else 0


def _parse_job(
    line: str,
    default_now: datetime,
    zones: Sequence[str],
    forecasts: Mapping[str, IntensitySeries],
    start_when_below: float | None,
) -> tuple[str | None, PlanRequest]:
    try:
        job: Any = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(job, dict):
        raise ValueError("expected a JSON object")
    if "duration" not in job:
        raise ValueError('missing "duration"')
    job_zones = job.get("zones")
    if job_zones is not None:
        if not isinstance(job_zones, list) or not all(isinstance(z, str) for z in job_zones):
            raise ValueError('"zones" must be a list of zone names')
        unknown = [z for z in job_zones if z not in forecasts]
        if unknown:
            raise ValueError(f"no --forecast for zones {', '.join(unknown)}")
    threshold = job.get("startWhenBelow", start_when_below)
    request = build_request(
        now=parse_time(str(job["now"])) if job.get("now") else default_now,
        duration=str(job["duration"]),
        deadline=str(job["deadline"]) if job.get("deadline") is not None else None,
        max_delay=str(job["maxDelay"]) if job.get("maxDelay") is not None else None,
        zones=job_zones or zones,
        start_when_below=float(threshold) if threshold is not None else None,
    )
    job_id = job.get("id")
    return (str(job_id) if job_id is not None else None), request


def parse_capacity(specs: Sequence[str]) -> Capacity:
    """`ZONE=GPUS` specs -> a constant capacity; a zone not named has no GPUs."""
    gpus: dict[str, int] = {}
    for spec in specs:
        zone, sep, raw = spec.partition("=")
        try:
            n = int(raw)
        except ValueError:
            n = -1
        if not sep or not zone.strip() or n < 0:
            raise ValueError(f"--capacity {spec!r}: expected ZONE=GPUS with GPUS a whole number >= 0")
        gpus[zone.strip()] = n
    return Capacity.constant(gpus)


def _run_fleet(
    args: argparse.Namespace,
    forecasts: Mapping[str, IntensitySeries],
    zones: Sequence[str],
    now: datetime,
    capacity: Capacity,
    start_latency: timedelta,
    out: TextIO,
) -> int:
    """All lines planned jointly; bad lines and jobs that cannot be placed go to stderr (exit 1).

    The planning time is --now, else the earliest `now` of the lines, else the current time; each
    line's own `now` is its arrival (it starts no earlier). A zone whose forecast does not cover the
    planning time cannot be planned: that line is an error, never a traceback.
    """
    source = _open_jobs(args.jobs)
    if source is None:
        return 2
    with source:
        lines = [(number, line) for number, line in enumerate(source, start=1) if line.strip()]
    if not args.now:
        now = min(_line_nows(lines), default=now)
    failed = 0
    parsed: list[tuple[str, PlanRequest, FleetJob]] = []
    for number, line in lines:
        try:
            job_id, request, gpus, priority = _parse_fleet_job(line, number, now, zones, forecasts)
            if any(job_id == other for other, _, _ in parsed):
                raise ValueError(f"duplicate id {job_id!r}")
            check_covered(request.zones, forecasts, now, f"the planning time {format_time(now)}")
            job = FleetJob(
                id=job_id,
                gpus=gpus,
                duration=request.duration,
                latest_start=request.latest_start,
                zones=request.zones,
                arrival=request.now,
                priority=priority,
                earliest_start=request.now,
            )
            job = with_start_latency(job, start_latency)
        except (ValueError, TypeError, KeyError) as e:
            _error(f"{args.jobs} line {number}: {e}")
            failed += 1
            continue
        parsed.append((job_id, request, job))
    fleet = plan_fleet(
        [job for _, _, job in parsed],
        capacity,
        forecasts,
        now,
        zone_gap_percent=args.zone_gap_percent,
        exact_time_limit_s=args.exact_time_limit,
    )
    rows: list[tuple[str | None, PlanRequest, PlanResult]] = []
    for job_id, request, _ in parsed:
        if job_id in fleet.unplaced:
            _error(f"{args.jobs} job {job_id}: {fleet.unplaced[job_id]}")
            failed += 1
            continue
        a = fleet.assignments[job_id]
        if args.output == "json":
            extra = {"waitsFor": a.waits_for, "lateBySeconds": round(a.late_by.total_seconds())}
            print(json.dumps({"id": job_id, **result_json(_as_result(a)), **extra}), file=out, flush=True)
        else:
            rows.append((job_id, request, _as_result(a)))
    if args.output == "table" and rows:
        print(render_table(rows), file=out)
    return 1 if failed else 0


def _line_nows(lines: Sequence[tuple[int, str]]) -> list[datetime]:
    """The `now` of every line that gives a readable one (bad lines are reported when parsed)."""
    nows = []
    for _, line in lines:
        try:
            job = json.loads(line)
            if isinstance(job, dict) and job.get("now"):
                nows.append(parse_time(str(job["now"])))
        except ValueError:
            continue
    return nows


def _as_result(a: Assignment) -> PlanResult:
    """A fleet assignment in the per-job result's shape (the reason is what the job waits for)."""
    base = a.baseline_g_per_kwh
    saved = 100.0 * (base - a.expected_g_per_kwh) / base if base else 0.0
    reason = a.waits_for + (" (late)" if a.late_by > timedelta(0) else "")
    return PlanResult(a.zone, a.start, a.expected_g_per_kwh, base, saved, reason)


def _parse_fleet_job(
    line: str, number: int, now: datetime, zones: Sequence[str], forecasts: Mapping[str, IntensitySeries]
) -> tuple[str, PlanRequest, int, int]:
    job_id, request = _parse_job(line, now, zones, forecasts, None)
    job: Any = json.loads(line)
    if job.get("startWhenBelow") is not None:
        raise ValueError('"startWhenBelow" is not used by the fleet planner (--capacity)')
    gpus, priority = job.get("gpus", 1), job.get("priority", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ValueError(f'"gpus" must be a whole number >= 0, got {gpus!r}')
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(f'"priority" must be a whole number, got {priority!r}')
    return (job_id if job_id is not None else f"line-{number}"), request, gpus, priority


def _open_jobs(path: str) -> TextIO | None:
    """The --jobs file (`-`: standard input), or None after saying why it cannot be read."""
    try:
        return sys.stdin if path == "-" else open(path, encoding="utf-8")
    except OSError as e:
        _error(str(e))
        return None


def _error(message: str) -> None:
    print(f"greenjobs plan: error: {message}", file=sys.stderr)


def _note(message: str) -> None:
    print(f"greenjobs plan: note: {message}", file=sys.stderr)
