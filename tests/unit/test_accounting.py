"""Energy/emissions accounting from node-agent entries, and budget verdicts."""

import math
from datetime import UTC, datetime, timedelta

import pytest

from greenjobs.accounting.energy import Accounting, Piece, account, check_budget, new_pieces, rounded
from greenjobs.accounting.past import intensity_of_use
from greenjobs.api.models import Budget, Emissions, NodeEnergy, UsagePoint
from greenjobs.carbon.providers.base import Forecast, NoData
from greenjobs.carbon.series import IntensitySeries

KWH = 3.6e6  # joules


def nodes(**joules: float) -> dict[str, NodeEnergy]:
    return {name: NodeEnergy(joules=j) for name, j in joules.items()}


def test_first_accounting_charges_all_energy_at_current_intensity() -> None:
    acc = account(nodes(a=2 * KWH, b=1 * KWH), None, 100.0)
    assert acc.k_wh == pytest.approx(3.0)
    assert acc.grams == pytest.approx(300.0)
    assert acc.avg_g_per_kwh == pytest.approx(100.0)
    assert acc.accounted_joules == {"a": 2 * KWH, "b": 1 * KWH}


def test_only_new_joules_take_the_new_intensity() -> None:
    first = account(nodes(a=1 * KWH), None, 100.0)  # 1 kWh at 100 g
    second = account(nodes(a=3 * KWH), first.emissions(), 400.0)  # 2 more kWh at 400 g
    assert second.grams == pytest.approx(100.0 + 800.0)
    assert second.k_wh == pytest.approx(3.0)
    assert second.avg_g_per_kwh == pytest.approx(900.0 / 3.0)


def test_accounting_the_same_input_twice_adds_nothing() -> None:
    entries = nodes(a=1.5 * KWH, b=0.5 * KWH)
    once = account(entries, None, 250.0)
    twice = account(entries, once.emissions(), 250.0)
    thrice = account(entries, twice.emissions(), 999.0)  # even at another intensity
    assert twice == once
    assert thrice.grams == once.grams


def test_restart_reading_state_back_from_status_json() -> None:
    """All state round-trips through the status object as the API server stores it."""
    first = account(nodes(a=1 * KWH), None, 200.0)
    stored = first.emissions().dump()
    after_restart = account(nodes(a=2 * KWH), Emissions.model_validate(stored), 50.0)
    assert after_restart.grams == pytest.approx(200.0 + 50.0)


def test_counter_going_backwards_neither_subtracts_nor_double_counts() -> None:
    first = account(nodes(a=2 * KWH, b=1 * KWH), None, 100.0)  # 300 g
    reset = account(nodes(a=0.5 * KWH, b=1 * KWH), first.emissions(), 100.0)
    assert reset.grams == pytest.approx(300.0)
    assert reset.accounted_joules["a"] == 2 * KWH  # high-water mark kept
    assert reset.k_wh == pytest.approx(3.0)  # the total never shrinks
    # Only energy above the old mark is new.
    climbed = account(nodes(a=2.5 * KWH, b=1 * KWH), reset.emissions(), 100.0)
    assert climbed.grams == pytest.approx(350.0)


def test_node_that_disappears_keeps_its_energy() -> None:
    first = account(nodes(a=1 * KWH, b=1 * KWH), None, 100.0)
    later = account(nodes(a=1 * KWH), first.emissions(), 100.0)
    assert later.k_wh == pytest.approx(2.0)
    assert later.grams == pytest.approx(200.0)


def test_node_joining_later_is_charged_from_zero() -> None:
    first = account(nodes(a=1 * KWH), None, 100.0)
    later = account(nodes(a=1 * KWH, b=0.25 * KWH), first.emissions(), 400.0)
    assert later.grams == pytest.approx(100.0 + 100.0)


def test_gpu_hours_sum_gpu_seconds() -> None:
    entries = {
        "a": NodeEnergy(joules=KWH, gpus=4, gpu_seconds=4 * 3600.0),
        "b": NodeEnergy(joules=KWH, gpus=2, gpu_seconds=1800.0),
        "c": NodeEnergy(joules=0),  # no gpuSeconds written yet
    }
    assert account(entries, None, 0.0).gpu_hours == pytest.approx(4.5)


def test_no_energy_has_no_average() -> None:
    acc = account({}, None, 123.0)
    assert acc.k_wh == 0.0
    assert acc.grams == 0.0
    assert acc.avg_g_per_kwh is None


@pytest.mark.parametrize("intensity", [math.nan, math.inf, -1.0])
def test_bad_intensity_is_refused(intensity: float) -> None:
    with pytest.raises(ValueError, match="intensity"):
        account(nodes(a=KWH), None, intensity)


def test_rounded_keeps_marks_exact() -> None:
    acc = Accounting(
        k_wh=12.345678,
        gpu_hours=1.234567,
        grams=492.149,
        avg_g_per_kwh=38.26,
        accounted_joules={"a": 1.23456789},
    )
    r = rounded(acc)
    assert (r.k_wh, r.gpu_hours, r.grams, r.avg_g_per_kwh) == (12.3457, 1.2346, 492.149, 38.3)
    assert r.accounted_joules == {"a": 1.23456789}
    assert rounded(Accounting(0.0, 0.0, 0.0, None, {})).avg_g_per_kwh is None


# ---------------------------------------------------------------- budgets


def test_no_budget_is_never_exceeded() -> None:
    assert not check_budget(None, 1e9, 1e12).exceeded
    assert not check_budget(Budget(), 1e9, 1e12).exceeded


def test_energy_budget_warn() -> None:
    b = Budget.model_validate({"maxEnergyKWh": 500, "action": "Warn"})
    assert not check_budget(b, 500.0, 0.0).exceeded  # at the limit is still within it
    v = check_budget(b, 500.5, 0.0)
    assert v.exceeded
    assert not v.suspend
    assert "energy" in v.message
    assert "500" in v.message


def test_co2e_budget_suspend_compares_kilograms() -> None:
    b = Budget.model_validate({"maxCO2eKg": 100, "action": "Suspend"})
    within = check_budget(b, 10_000.0, 99_999.0)  # grams: 99.999 kg
    assert not within.exceeded
    assert not within.suspend
    over = check_budget(b, 0.0, 100_001.0)
    assert over.exceeded
    assert over.suspend
    assert "emissions" in over.message
    assert "energy" not in over.message


def test_both_limits_message_names_only_the_exceeded_one() -> None:
    b = Budget.model_validate({"maxEnergyKWh": 10, "maxCO2eKg": 1, "action": "Suspend"})
    v = check_budget(b, 5.0, 2000.0)
    assert v.exceeded
    assert v.suspend
    assert "emissions" in v.message
    assert "energy" not in v.message
    both = check_budget(b, 11.0, 2000.0)
    assert "energy" in both.message
    assert "emissions" in both.message


T = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def used(*points: tuple[int, float]) -> NodeEnergy:
    """An entry whose usage says: cumulative joules at T + hours."""
    return NodeEnergy(joules=points[-1][1], usage=[UsagePoint(at=T + h * H, joules=j) for h, j in points])


def test_new_joules_are_cut_at_the_usage_points_and_priced_by_their_interval() -> None:
    entry = used((0, 0.0), (1, 1 * KWH), (2, 3 * KWH))
    assert new_pieces(entry, 0.5 * KWH) == [Piece(0.5 * KWH, T, T + H), Piece(2 * KWH, T + H, T + 2 * H)]
    assert new_pieces(NodeEnergy(joules=KWH), 0.0) == [Piece(KWH)]  # no usage (an older agent): when unknown
    hourly = {T: 100.0, T + H: 40.0}
    acc = account({"a": entry}, Emissions(grams=50.0, accounted_joules={"a": 0.5 * KWH}), 999.0, lambda a, b: hourly[a])
    assert acc.grams == pytest.approx(50.0 + 0.5 * 100.0 + 2 * 40.0)  # not at the 999 g of now
    assert acc.accounted_joules == {"a": 3 * KWH}


def test_late_energy_is_looked_up_for_its_time_and_falls_back_to_now_without_a_series() -> None:
    now = T + 3 * H
    entry = used((0, 0.0), (1, 1 * KWH), (3, 2 * KWH))  # the last hour ends now: not late
    series = IntensitySeries.from_points([(T, 80.0), (T + H, 300.0)], end=now)
    asked: list[tuple[datetime, datetime]] = []

    def fetch(zone: str, start: datetime, end: datetime) -> Forecast:
        asked.append((start, end))
        return Forecast(zone, series, "test", now)

    rate = intensity_of_use({"a": entry}, {}, "FR", now, fetch)
    assert rate is not None and asked == [(T, T + H)]  # one look-up, for the late hour only
    assert account({"a": entry}, None, 200.0, rate).grams == pytest.approx(80.0 + 200.0)

    def no_history(zone: str, start: datetime, end: datetime) -> Forecast:
        raise NoData("test FR: data ends before the requested start")

    assert intensity_of_use({"a": entry}, {}, "FR", now, no_history) is None  # the current value stands in
    assert intensity_of_use({"a": entry}, {"a": 1 * KWH}, "FR", now, fetch) is None  # nothing late left
