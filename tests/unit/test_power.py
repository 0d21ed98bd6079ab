"""The carbon-aware cap policy and its hysteresis."""

import itertools
import math

import pytest

from greenjobs.api.models import Power
from greenjobs.power import CapDecision, should_update, target_cap


def carbon_aware(**kw: object) -> Power:
    fields: dict[str, object] = {
        "policy": "CarbonAware",
        "minCapWatts": 150,
        "maxCapWatts": 300,
        "lowGPerKWh": 100,
        "highGPerKWh": 300,
    }
    fields.update(kw)
    return Power.model_validate(fields)


def test_none_policy_leaves_default_limit() -> None:
    assert target_cap(Power(), 500.0) == CapDecision(None, "None")


def test_static_policy_ignores_intensity() -> None:
    p = Power.model_validate({"policy": "Static", "capWatts": 250})
    assert target_cap(p, 20.0) == CapDecision(250, "Static")
    assert target_cap(p, 900.0) == CapDecision(250, "Static")
    assert target_cap(p, None) == CapDecision(250, "Static")


@pytest.mark.parametrize("intensity", [0.0, 50.0, 100.0])
def test_clean_grid_gets_max_cap(intensity: float) -> None:
    assert target_cap(carbon_aware(), intensity) == CapDecision(300, "CarbonAware")


@pytest.mark.parametrize("intensity", [300.0, 301.0, 1000.0])
def test_dirty_grid_gets_min_cap(intensity: float) -> None:
    assert target_cap(carbon_aware(), intensity) == CapDecision(150, "CarbonAware")


@pytest.mark.parametrize(
    ("intensity", "expected"),
    [
        (200.0, 225),  # midpoint: 300 - 0.5 * 150 = 225, already a multiple of 5
        (150.0, 260),  # 300 - 0.25 * 150 = 262.5 -> rounded down to 260
        (101.0, 295),  # 299.25 -> 295: a tiny move off the clean end already steps down one step
        (299.0, 150),  # 150.75 -> 150
    ],
)
def test_linear_between_thresholds_rounded_down_to_step(intensity: float, expected: int) -> None:
    assert target_cap(carbon_aware(), intensity).cap_watts == expected


def test_step_is_configurable() -> None:
    assert target_cap(carbon_aware(), 150.0, step_w=1).cap_watts == 262
    assert target_cap(carbon_aware(), 150.0, step_w=25).cap_watts == 250


def test_small_intensity_moves_do_not_change_cap() -> None:
    caps = {target_cap(carbon_aware(), 200.0 + d / 10).cap_watts for d in range(0, 30)}
    assert caps == {225, 220}  # 3 g of movement spans at most one 5 W step


def test_cap_never_leaves_bounds_when_bounds_are_not_multiples_of_step() -> None:
    p = carbon_aware(minCapWatts=153, maxCapWatts=298)
    for g in range(0, 400, 7):
        cap = target_cap(p, float(g)).cap_watts
        assert cap is not None
        assert 153 <= cap <= 298
    assert target_cap(p, 299.0).cap_watts == 153  # 153.7 floors to 150, clamped back up


def test_cap_is_monotone_non_increasing_in_intensity() -> None:
    caps = [target_cap(carbon_aware(), float(g)).cap_watts for g in range(0, 400)]
    assert all(a is not None and b is not None and a >= b for a, b in itertools.pairwise(caps))


@pytest.mark.parametrize("intensity", [None, math.nan, math.inf])
def test_unknown_intensity_never_throttles(intensity: float | None) -> None:
    assert target_cap(carbon_aware(), intensity) == CapDecision(300, "IntensityUnknown")


def test_only_one_bound_acts_as_a_fixed_cap() -> None:
    p = Power.model_validate({"policy": "CarbonAware", "maxCapWatts": 280})
    assert target_cap(p, 1000.0).cap_watts == 280
    assert target_cap(p, 0.0).cap_watts == 280


def test_degenerate_thresholds_do_not_divide_by_zero() -> None:
    p = carbon_aware(lowGPerKWh=200, highGPerKWh=200)
    assert target_cap(p, 199.0).cap_watts == 300
    assert target_cap(p, 201.0).cap_watts == 150


@pytest.mark.parametrize(
    ("current", "new", "hysteresis", "expected"),
    [
        (250, 250, 10, False),
        (250, 245, 10, False),
        (250, 240, 10, True),
        (250, 260, 10, True),
        (None, 250, 10, True),  # starting to cap
        (250, None, 10, True),  # releasing the cap
        (None, None, 10, False),
        (250, 249, 0, True),  # no hysteresis: any change
    ],
)
def test_should_update(current: int | None, new: int | None, hysteresis: int, expected: bool) -> None:
    assert should_update(current, new, hysteresis) is expected
