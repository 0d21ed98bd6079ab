"""A GreenTrainingJob's whole run, as the operator plans and tracks it: segments, pauses, caps, progress.

Pure code between the API models and the whole-run planner (planning/whole_run.py): the request for a
job from its spec and progress, the plan's segments in status, the work done across segments, and
what the plan asks for now (run at which cap, pause, resume). The executor does the I/O.

Caps: a DeadlinePaced job's caps are watts in [minCapWatts, maxCapWatts]; the GPU model is relative to
maxCapWatts (estimatedDuration is the run time there), so the planner's fractions are watts /
maxCapWatts. A job that is only resumable runs at one level: its own cap (Static) or uncapped.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from greenjobs.api.models import GreenTrainingJobSpec, Plan, PlannedSegment, Progress
from greenjobs.carbon.series import IntensitySeries
from greenjobs.planning import gpu_model
from greenjobs.planning.timing import window_of
from greenjobs.planning.whole_run import Interruptible, WholeRunPlan, WholeRunRequest

# At most this many cap levels between minCapWatts and maxCapWatts: the planner's time grows with them,
# and the GPU model's curve is smooth enough that more levels gain little.
MAX_CAP_LEVELS = 5
# Energy figures of a job whose caps are unknown (resumable only): any value gives the same plan, as
# every grams figure scales with it, except against embodied emissions; a common training GPU's TDP.
NOMINAL_WATTS = 400.0
# Segments kept in status (the CRD allows 512): a paced week in 15-minute slots may have more; the job
# is planned again when it reaches the end of the ones listed (`pause_due`).
MAX_STATUS_SEGMENTS = 200
# A plan's start within this of now is a start now (the operator's own pacing).
NOW_SLACK = timedelta(seconds=5)


def cap_levels(spec: GreenTrainingJobSpec, step_w: int) -> list[int] | None:
    """The caps (W) a DeadlinePaced plan may choose, ascending; None for any other policy."""
    p = spec.power
    if p.policy != "DeadlinePaced" or p.min_cap_watts is None or p.max_cap_watts is None:
        return None
    lo, hi = min(p.min_cap_watts, p.max_cap_watts), max(p.min_cap_watts, p.max_cap_watts)
    raw = np.linspace(lo, hi, MAX_CAP_LEVELS)
    step = max(step_w, 1)
    levels = {lo, hi, *(int(round(w / step) * step) for w in raw)}
    return sorted(w for w in levels if lo <= w <= hi)


def reference_watts(spec: GreenTrainingJobSpec) -> float:
    """The watts the GPU model's fraction 1.0 stands for (see the module docstring)."""
    p = spec.power
    if p.policy == "DeadlinePaced" and p.max_cap_watts:
        return float(max(p.max_cap_watts, p.min_cap_watts or 0))
    if p.policy == "Static" and p.cap_watts:
        return float(p.cap_watts)
    return NOMINAL_WATTS


@dataclass(frozen=True)
class RunRequest:
    """What the executor knows of one job when it plans its whole run."""

    spec: GreenTrainingJobSpec
    created: datetime
    now: datetime
    gpus: int
    work_done_s: float  # before now, in seconds at the reference cap
    running: bool  # its pods run now (continuing costs no overhead)
    segments_started: int  # 0: never started
    interruptions_used: int
    step_w: int
    embodied_g_per_gpu_hour: float = 0.0


def whole_run_request(r: RunRequest, step: timedelta) -> WholeRunRequest | None:
    """The planner's request, or None when nothing is left to plan (no duration, no deadline, or the
    estimated work is done: the job then runs on uncapped by the plan until it ends)."""
    window = window_of(r.spec.timing, r.created)
    if window.duration is None or window.deadline is None:
        return None
    remaining = window.duration.total_seconds() - r.work_done_s
    if remaining <= 1.0:
        return None
    levels = cap_levels(r.spec, r.step_w)
    ref = reference_watts(r.spec)
    caps = tuple(w / ref for w in levels) if levels else (1.0,)
    interruption = r.spec.interruption
    interruptible = None
    if interruption is not None and interruption.resumable:
        interruptible = Interruptible(interruption.overhead(), interruption.min_run(), interruption.max_interruptions)
    return WholeRunRequest(
        now=r.now,
        remaining_work=timedelta(seconds=remaining),
        deadline=window.deadline,
        gpus=max(r.gpus, 1),
        tdp_watts=ref,
        caps=caps,
        interruptible=interruptible,
        running=r.running,
        resumed_before=r.segments_started > 0,
        interruptions_used=r.interruptions_used,
        embodied_g_per_gpu_hour=r.embodied_g_per_gpu_hour,
        step=step,
    )


def forecast_step(series: IntensitySeries) -> timedelta:
    """The plan's slot: the forecast's own step (its median spacing), within [1 s, 1 h]."""
    if len(series.times) < 2:
        return timedelta(minutes=15)
    seconds = float(np.median(np.diff(series.times)))
    return timedelta(seconds=min(max(seconds, 1.0), 3600.0))


def status_segments(plan: WholeRunPlan, spec: GreenTrainingJobSpec) -> list[PlannedSegment]:
    """The plan's segments for status: caps in watts (DeadlinePaced only), touching segments at the same
    cap merged (the planner cuts at every slot)."""
    paced = spec.power.policy == "DeadlinePaced"
    ref = reference_watts(spec)
    out: list[PlannedSegment] = []
    for s in plan.segments:
        cap = round(s.cap_fraction * ref) if paced else None
        if out and out[-1].end == s.start and out[-1].cap_watts == cap:
            out[-1] = out[-1].model_copy(update={"end": s.end})
        else:
            out.append(PlannedSegment(start=s.start, end=s.end, cap_watts=cap))
    return out[:MAX_STATUS_SEGMENTS]


def segments_of(plan: Plan) -> list[PlannedSegment]:
    return list(plan.segments or [])


def cap_at(plan: Plan, t: datetime) -> int | None:
    """The planned cap in force at t (None: none planned then, or not a paced plan)."""
    for s in segments_of(plan):
        if s.start <= t < s.end:
            return s.cap_watts
    return None


def in_segment(plan: Plan, t: datetime) -> bool:
    return any(s.start <= t < s.end for s in segments_of(plan))


def pause_due(plan: Plan, now: datetime) -> bool:
    """A running job's plan has it paused now: no segment covers now and a later one resumes it."""
    segs = segments_of(plan)
    return bool(segs) and not in_segment(plan, now) and any(s.start > now for s in segs)


def listed_end_reached(plan: Plan, now: datetime) -> bool:
    """The job has reached the end of the segments status could hold while its plan goes on: time to
    plan the rest."""
    segs = segments_of(plan)
    if not segs or plan.finishes_at is None or plan.finishes_at <= segs[-1].end:
        return False
    return segs[-1].end <= now < plan.finishes_at


def next_resume(plan: Plan, now: datetime) -> datetime | None:
    """When the plan runs the job next (now if a segment covers now)."""
    for s in segments_of(plan):
        if s.end > now:
            return max(s.start, now)
    return None


def next_boundary(plan: Plan, now: datetime) -> datetime | None:
    """The next time the plan changes what the job does (a pause, a resume, a cap change)."""
    edges = [t for s in segments_of(plan) for t in (s.start, s.end) if t > now]
    return min(edges, default=None)


def run_work(
    segments: Sequence[PlannedSegment], since: datetime, until: datetime, ref_w: float, overhead: timedelta
) -> float:
    """Work (seconds at the reference cap) done by a run from `since` to `until`: run time at each
    planned cap through the GPU model, the first `overhead` of a resume doing none. Time no segment
    covers (a run past its plan) counts at the reference cap."""
    start = since + overhead
    if until <= start:
        return 0.0
    total, covered = 0.0, 0.0
    for s in segments:
        a, b = max(s.start, start), min(s.end, until)
        if b <= a:
            continue
        seconds = (b - a).total_seconds()
        fraction = (s.cap_watts / ref_w) if s.cap_watts else 1.0
        total += seconds * gpu_model.throughput(fraction)
        covered += seconds
    return total + max((until - start).total_seconds() - covered, 0.0)


def work_done(
    spec: GreenTrainingJobSpec, plan: Plan, progress: Progress, now: datetime, reported: float | None
) -> tuple[float, str]:
    """Work done up to now (seconds at the reference cap) and its source. A reported fraction (the
    progress annotation, 0-1) of estimatedDuration wins over the model: the workload knows best."""
    total = (spec.timing.duration() or timedelta(0)).total_seconds()
    if reported is not None and 0.0 <= reported <= 1.0 and total > 0:
        return reported * total, "reported"
    done = progress.work_done_seconds
    if progress.running_since is not None:
        overhead = spec.interruption.overhead() if spec.interruption and progress.segments > 1 else timedelta(0)
        done += run_work(segments_of(plan), progress.running_since, now, reference_watts(spec), overhead)
    return done, "model"


def percent(spec: GreenTrainingJobSpec, done_s: float) -> int | None:
    total = (spec.timing.duration() or timedelta(0)).total_seconds()
    if total <= 0:
        return None
    return int(min(max(100.0 * done_s / total, 0.0), 100.0))


def parse_reported(raw: str | None) -> float | None:
    """The progress annotation as a fraction, or None when absent or not a number in [0, 1]."""
    if raw is None:
        return None
    try:
        value = float(raw.strip().rstrip("%")) / (100.0 if raw.strip().endswith("%") else 1.0)
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None


def starts_now(plan: WholeRunPlan, now: datetime) -> bool:
    return plan.starts_at <= now + NOW_SLACK


__all__ = [
    "NOW_SLACK",
    "RunRequest",
    "cap_at",
    "cap_levels",
    "forecast_step",
    "in_segment",
    "next_boundary",
    "next_resume",
    "parse_reported",
    "pause_due",
    "percent",
    "reference_watts",
    "run_work",
    "starts_now",
    "status_segments",
    "whole_run_request",
    "work_done",
]
