"""Per-GPU power-cap policy: which cap the node agents should enforce for a job, given the zone's intensity.

Pure functions: the operator calls `target_cap` whenever it re-evaluates a running job and writes the result
to `status.power`; `should_update` keeps tiny moves from rewriting the status (and re-programming GPUs).
"""

import math
from dataclasses import dataclass

from greenjobs.api.models import Power

DEFAULT_STEP_W = 5

REASON_NONE = "None"
REASON_STATIC = "Static"
REASON_CARBON_AWARE = "CarbonAware"
REASON_INTENSITY_UNKNOWN = "IntensityUnknown"
# Set by the controller (not here) when a budget with action Suspend is exceeded.
REASON_BUDGET_SUSPEND = "BudgetSuspend"


@dataclass(frozen=True)
class CapDecision:
    cap_watts: int | None  # None: leave GPUs at their default limit
    reason: str


def target_cap(power: Power, intensity_g_per_kwh: float | None, step_w: int = DEFAULT_STEP_W) -> CapDecision:
    """The per-GPU cap the policy asks for at this intensity (gCO2e/kWh; None when unknown).

    CarbonAware: maxCapWatts at or below lowGPerKWh, minCapWatts at or above highGPerKWh, linear in
    between, rounded down to a multiple of `step_w` (so small intensity moves do not flap the cap) and
    never outside [minCapWatts, maxCapWatts].
    """
    if power.policy == "Static":
        if power.cap_watts is None:  # refused by the CRD's CEL rule; be safe if it slips through
            return CapDecision(None, REASON_NONE)
        return CapDecision(power.cap_watts, REASON_STATIC)
    if power.policy != "CarbonAware":
        return CapDecision(None, REASON_NONE)

    lo_w = power.min_cap_watts if power.min_cap_watts is not None else power.max_cap_watts
    hi_w = power.max_cap_watts if power.max_cap_watts is not None else power.min_cap_watts
    if lo_w is None or hi_w is None:  # neither bound set: refused by the CRD, nothing to enforce
        return CapDecision(None, REASON_NONE)
    lo_w, hi_w = min(lo_w, hi_w), max(lo_w, hi_w)

    if intensity_g_per_kwh is None or not math.isfinite(intensity_g_per_kwh):
        # Missing data must never slow a job down: a forecast outage would otherwise throttle every job
        # for its whole duration without any carbon evidence. Run at the policy's upper cap instead.
        return CapDecision(hi_w, REASON_INTENSITY_UNKNOWN)

    low, high = power.low_g_per_k_wh, power.high_g_per_k_wh
    if intensity_g_per_kwh <= low:
        return CapDecision(hi_w, REASON_CARBON_AWARE)
    if intensity_g_per_kwh >= high:  # also covers low >= high (refused by the CRD): a plain step
        return CapDecision(lo_w, REASON_CARBON_AWARE)
    fraction = (intensity_g_per_kwh - low) / (high - low)
    watts = hi_w - fraction * (hi_w - lo_w)
    step = max(step_w, 1)
    stepped = math.floor(watts / step) * step
    return CapDecision(min(max(stepped, lo_w), hi_w), REASON_CARBON_AWARE)


def should_update(current: int | None, new: int | None, hysteresis_w: int) -> bool:
    """Whether to replace the cap in force (`current`) by `new`.

    Going to or from "no cap" always counts; otherwise the move must be at least `hysteresis_w` watts.
    """
    if current == new:
        return False
    if current is None or new is None:
        return True
    return abs(new - current) >= max(hysteresis_w, 1)
