"""What a ClusterQueue leaves free, per grid zone: the capacity the fleet planner plans held Workloads
against (pure, on plain dicts).

Kueue, not the nodes, is the limit for a Kueue user: a Workload starts only when its ClusterQueue
reserves quota for it. The free GPUs of a zone are, over the ClusterQueue's flavors whose nodeLabels
name that zone, the nominal quota plus what the flavor may borrow from its cohort (its
borrowingLimit; no limit: whatever the cohort's other queues leave unused of their nominal quota),
minus what Kueue has reserved (status.flavorsReservation, which includes admitted Workloads).
"""

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from kubernetes.utils import parse_quantity

from greenjobs.carbon.series import IntensitySeries, to_epoch
from greenjobs.planning.capacity import Capacity
from greenjobs.planning.decisions import FleetPlacement, grid_step
from greenjobs.planning.fleet import FleetJob, FleetPlan, plan_fleet
from greenjobs.planning.settings import FleetSettings

Obj = Mapping[str, Any]


def _quantity(value: Any) -> int:
    try:
        return int(parse_quantity(str(value)))
    except (ValueError, TypeError):
        return 0


def flavor_zone(labels: Mapping[str, str], zone_label: str, zone_map: Mapping[str, str]) -> str | None:
    """The grid zone a ResourceFlavor's nodeLabels pin it to (None: not pinned to one zone)."""
    value = labels.get(zone_label)
    return zone_map.get(value, value) if value else None


def _nominal(cq: Obj, resources: Collection[str]) -> dict[str, tuple[int, int | None]]:
    """flavor -> (nominal GPUs, borrowing limit or None for unlimited) of one ClusterQueue."""
    out: dict[str, tuple[int, int | None]] = {}
    for group in (cq.get("spec") or {}).get("resourceGroups") or []:
        for flavor in group.get("flavors") or []:
            nominal, limit = 0, None
            named = [r for r in flavor.get("resources") or [] if r.get("name") in resources]
            for r in named:
                nominal += _quantity(r.get("nominalQuota", 0))
                if r.get("borrowingLimit") is not None:
                    limit = (limit or 0) + _quantity(r["borrowingLimit"])
            if named:
                out[flavor["name"]] = (nominal, limit)
    return out


def _reserved(cq: Obj, resources: Collection[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for flavor in (cq.get("status") or {}).get("flavorsReservation") or []:
        total = sum(_quantity(r.get("total", 0)) for r in flavor.get("resources") or [] if r.get("name") in resources)
        out[flavor["name"]] = out.get(flavor["name"], 0) + total
    return out


def free_gpus_by_zone(
    cq: Obj,
    cohort_peers: Collection[Obj],
    flavor_zones: Mapping[str, str | None],
    resources: Collection[str],
    *,
    less_reserved: bool = True,
) -> dict[str, int]:
    """Free GPUs per zone of `cq` now; `cohort_peers` are the other ClusterQueues of its cohort.
    `less_reserved=False`: the most it could ever have free (its own reservations not counted)."""
    # What the cohort's other queues leave unused of their own nominal quota, per flavor: the most
    # this queue could borrow.
    lendable: dict[str, int] = {}
    for peer in cohort_peers:
        reserved = _reserved(peer, resources)
        for name, (nominal, _) in _nominal(peer, resources).items():
            lendable[name] = lendable.get(name, 0) + max(nominal - reserved.get(name, 0), 0)
    reserved = _reserved(cq, resources) if less_reserved else {}
    free: dict[str, int] = {}
    for name, (nominal, limit) in _nominal(cq, resources).items():
        zone = flavor_zones.get(name)
        if zone is None:
            continue
        borrow = lendable.get(name, 0) if limit is None else min(limit, lendable.get(name, 0))
        free[zone] = free.get(zone, 0) + max(nominal + borrow - reserved.get(name, 0), 0)
    return free


def plannable_quota(
    free: Mapping[str, int],
    pending: Mapping[str, int],
    most: Mapping[str, int],
    started: Collection[tuple[str, int, datetime]],
) -> dict[str, int]:
    """GPUs per zone the joint plan may place now: the queue's `free` quota plus what Kueue reserved
    for Workloads still waiting on the check (`pending`: theirs to place), but never more than the
    queue's `most` less the GPUs of the Workloads already `started`. The ClusterQueue's status can
    lag a Workload answered Ready a moment ago; its GPUs are not free again before it ends, whatever
    that status says (else a herd starts three where two fit, and the plan made on it then leaves
    quota idle while jobs wait)."""
    holding: dict[str, int] = {}
    for zone, gpus, _ in started:
        holding[zone] = holding.get(zone, 0) + gpus
    return {
        z: max(min(free.get(z, 0) + pending.get(z, 0), most.get(z, 0) - holding.get(z, 0)), 0)
        for z in {*free, *pending}
    }


def cohort_of(cq: Obj) -> str | None:
    spec = cq.get("spec") or {}
    cohort = spec.get("cohortName") or spec.get("cohort")  # cohortName since Kueue v0.11
    return str(cohort) if cohort else None


def workload_gpus(wl: Obj, resources: Collection[str]) -> int:
    """GPUs a Workload asks for: every pod of every pod set (requests, else limits)."""
    total = 0
    for pod_set in (wl.get("spec") or {}).get("podSets") or []:
        spec = (pod_set.get("template") or {}).get("spec") or {}
        per_pod = 0
        for container in spec.get("containers") or []:
            res = container.get("resources") or {}
            amounts = {**(res.get("limits") or {}), **(res.get("requests") or {})}
            per_pod += sum(_quantity(v) for k, v in amounts.items() if k in resources)
        total += per_pod * int(pod_set.get("count", 1) or 1)
    return total


def queue_capacity(
    free: Mapping[str, int], admitted: Iterable[tuple[str, int, datetime]], now: datetime, step: timedelta
) -> Capacity:
    """The queue's free quota per zone over time: `free` now, plus the GPUs of each admitted Workload
    (zone, GPUs, expected end) back at its end. One still running past its end holds them one more
    step: it really ends when it ends, and its end brings a re-plan."""
    floor = to_epoch(now) + step.total_seconds()
    releases: dict[str, list[tuple[float, int]]] = {}
    for zone, gpus, end in admitted:
        releases.setdefault(zone, []).append((max(to_epoch(end), floor), max(gpus, 0)))
    return Capacity(base=dict(free), releases={z: sorted(r) for z, r in releases.items()})


def joint_plan(
    jobs: Sequence[FleetJob],
    capacity: Capacity | Mapping[str, int],
    forecasts: Mapping[str, IntensitySeries],
    now: datetime,
    step: timedelta | None = None,
    settings: FleetSettings | None = None,
) -> tuple[FleetPlan, timedelta]:
    """The fleet plan of every Workload a ClusterQueue holds (the same planner and `fleet:` settings as
    the GreenTrainingJob operator's), against the queue's quota, on the forecasts' own grid (unless the
    settings fix one): no job is late because of a step size."""
    settings = settings or FleetSettings()
    cap = capacity if isinstance(capacity, Capacity) else Capacity(base=dict(capacity))
    step = step or settings.step or grid_step(forecasts.values())
    unique = list({j.id: j for j in jobs}.values())
    plan = plan_fleet(
        unique,
        cap,
        forecasts,
        now,
        step=step,
        min_gain_percent=settings.min_gain_percent,
        zone_gap_percent=settings.zone_gap_percent,
        exact_time_limit_s=settings.exact_time_limit.total_seconds(),
    )
    return plan, step


def placement_of(plan: FleetPlan, job_id: str, step: timedelta) -> FleetPlacement | str:
    """One job's place in a joint plan, or the reason it has none."""
    if job_id in plan.unplaced:
        return plan.unplaced[job_id]
    return FleetPlacement(plan.assignments[job_id], step)


def plan_jointly(
    job: FleetJob,
    others: Sequence[FleetJob],
    capacity: Capacity | Mapping[str, int],
    forecasts: Mapping[str, IntensitySeries],
    now: datetime,
    step: timedelta | None = None,
) -> FleetPlacement | str:
    """`job`'s place in the joint plan of the Workloads its ClusterQueue holds; a reason when it has none."""
    plan, step = joint_plan([job, *others], capacity, forecasts, now, step)
    return placement_of(plan, job.id, step)
