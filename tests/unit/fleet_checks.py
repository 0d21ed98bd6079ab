"""Independent checks of fleet plans, in continuous time (shared by the fleet planner's tests)."""

from collections.abc import Iterable

from greenjobs.planning.capacity import Capacity
from greenjobs.planning.fleet import FleetJob, FleetPlan


def assert_within_capacity(plan: FleetPlan, jobs: Iterable[FleetJob], capacity: Capacity) -> None:
    """At every instant a run starts, the GPUs of the runs in progress fit what the zone has free then.

    Usage only rises where a run starts and free GPUs only fall where... never (releases add GPUs), so
    checking at each start (runs ending there are over: [start, end) intervals) covers every instant.
    """
    gpus = {j.id: j.gpus for j in jobs}
    runs = [(a.zone, a.start.timestamp(), a.end.timestamp(), gpus[jid]) for jid, a in plan.assignments.items()]
    for zone, start, _, _ in runs:
        used = sum(g for z, s, e, g in runs if z == zone and s <= start + 1e-3 / 2 and e > start + 1e-3 / 2)
        free = capacity.free_at(zone, plan.now if start < plan.now.timestamp() else _at(start))
        assert used <= free, f"{zone} over capacity at {_at(start)}: {used} GPUs used, {free} free"


def _at(epoch: float):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)
