"""Whole-run plans in the operator: the forecast a job's rest needs, its plan, and the status it writes.

The executor calls these when a whole-run job (interruption.resumable, or power DeadlinePaced) is
planned, started, paused, resumed or adopted. Planning is pure (planning/run_plan.py, whole_run.py);
the one I/O here is the forecast fetch, through the executor's provider.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from greenjobs.api.durations import format_time, parse_time
from greenjobs.api.models import GreenTrainingJobSpec, Plan, Progress
from greenjobs.carbon.providers.base import Forecast, ProviderError
from greenjobs.planning import run_plan
from greenjobs.planning.whole_run import Segment, WholeRunPlan, plan_whole_run, replan

from .jobs import adapter_of, workload_template
from .observe import Observed

log = logging.getLogger(__name__)

Fetch = Callable[[str, datetime, datetime], Forecast]


@dataclass(frozen=True)
class RunPlanner:
    fetch: Fetch
    step_w: int
    embodied_g_per_gpu_hour: float = 0.0
    gpu_resources: tuple[str, ...] = ("nvidia.com/gpu",)

    def plan(
        self,
        obs: Observed,
        spec: GreenTrainingJobSpec,
        zone: str,
        origin: datetime,
        *,
        progress: Progress,
        work_done_s: float,
        running: bool,
        previous: Plan | None = None,
    ) -> WholeRunPlan | None:
        """The rest of the run planned from `origin` in `zone`; None when there is nothing to plan or
        no forecast (the job then runs straight through: no information is no reason to pause)."""
        raw = dict(obs.spec)
        request = run_plan.whole_run_request(
            run_plan.RunRequest(
                spec=spec,
                created=_created(obs),
                now=origin,
                gpus=adapter_of(raw).gpus(workload_template(raw), self.gpu_resources),
                work_done_s=work_done_s,
                running=running,
                segments_started=progress.segments,
                interruptions_used=progress.interruptions,
                step_w=self.step_w,
                embodied_g_per_gpu_hour=self.embodied_g_per_gpu_hour,
            ),
            step=timedelta(minutes=15),
        )
        if request is None:
            return None
        end = max(request.deadline, origin) + timedelta(minutes=1)
        try:
            series = self.fetch(zone, origin, end).series
        except ProviderError as exc:
            log.warning("%s/%s: no forecast for its whole-run plan: %s", obs.namespace, obs.name, exc)
            return None
        request = replace(request, step=run_plan.forecast_step(series))
        kept = _whole(previous, spec) if previous is not None else None
        result = replan(kept, request, series) if kept is not None else plan_whole_run(request, series)
        return replace(result, zone=zone)


def plan_patch(plan: Plan, whole: WholeRunPlan, spec: GreenTrainingJobSpec, *, keep_start: bool = False) -> Plan:
    """`plan` with the whole run's segments, end and saving (against straight through from now)."""
    update: dict[str, Any] = {
        "segments": run_plan.status_segments(whole, spec),
        "finishes_at": whole.finishes_at,
        "expected_savings_percent": round(whole.saving_percent, 1) if whole.saving_percent is not None else None,
    }
    if not keep_start:
        update["scheduled_start"] = whole.starts_at
    return plan.model_copy(update=update)


def progress_patch(progress: Progress, spec: GreenTrainingJobSpec, done_s: float, source: str) -> dict[str, Any]:
    """status.progress as a merge patch: explicit nulls clear runningSince / pausedAt."""
    p = progress.model_copy(update={"percent": run_plan.percent(spec, done_s), "source": source})
    return p.model_dump(mode="json", by_alias=True, exclude_none=False)


def progress_of(obs: Observed) -> Progress:
    try:
        return Progress.model_validate(obs.status.get("progress") or {})
    except ValueError:
        return Progress()


def pause_message(resume: datetime | None, percent: int | None) -> str:
    done = f"; {percent}% of the work done" if percent is not None else ""
    when = f"resumes at {format_time(resume)}" if resume is not None else "resumes when its plan says"
    return f"paused at a checkpoint through dirtier hours: {when}{done}"


def _created(obs: Observed) -> datetime:
    return parse_time(obs.created)


def _whole(previous: Plan, spec: GreenTrainingJobSpec) -> WholeRunPlan | None:
    """The previous status plan as the planner's plan (for `replan`'s stability), if it has segments."""
    segs = previous.segments or []
    if not segs:
        return None
    ref = run_plan.reference_watts(spec)
    segments = tuple(Segment(s.start, s.end, (s.cap_watts / ref) if s.cap_watts else 1.0) for s in segs)
    end = previous.finishes_at or segs[-1].end
    return WholeRunPlan(segments, 0.0, None, None, end, True, zone=previous.zone)
