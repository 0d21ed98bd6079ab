"""Durations are bounded (366 days) everywhere, and no time arithmetic on them can overflow."""

import contextlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from greenjobs.api.crd import build_crd
from greenjobs.api.durations import MAX_DURATION, parse_duration, parse_time, shift_time
from greenjobs.api.models import DEADLINE_MAX, DEADLINE_MIN, GreenTrainingJobSpec, Timing
from greenjobs.cli import main
from greenjobs.planning.timing import window_of


@pytest.mark.parametrize("text", ["366d", "8784h", "P52W2D", "PT8784H", "31622400s", "1h30m", "PT1.5H"])
def test_durations_up_to_366_days_parse(text: str) -> None:
    assert timedelta(0) < parse_duration(text) <= MAX_DURATION


@pytest.mark.parametrize("text", ["367d", "366d1s", "P53W", "8785h", "99999999d", "9" * 400 + "s", "1" * 30 + "ms"])
def test_longer_durations_are_a_clear_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="too long: at most 366d"):
        parse_duration(text)


def test_parsing_never_overflows_whatever_the_digits() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 40)))
        text = rng.choice([f"{digits}{rng.choice(['ms', 's', 'm', 'h', 'd'])}", f"P{digits}W", f"PT{digits}S"])
        with contextlib.suppress(ValueError):  # the only error allowed; an OverflowError fails the test
            parse_duration(text)


def _timing(**fields: object) -> Timing:
    return Timing.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"estimatedDuration": "1h", "maxDelay": "99999999d"}, "maxDelay"),
        ({"estimatedDuration": "400d", "maxDelay": "1h"}, "estimatedDuration"),
        ({"estimatedDuration": "1h", "deadline": "0001-01-01T00:00:00Z"}, "deadline"),
        ({"estimatedDuration": "1h", "deadline": "9999-12-31T23:59:59Z"}, "deadline"),
        ({"estimatedDuration": "1h", "deadline": "0001-01-01T00:00:00+05:00"}, "deadline"),
        ({"estimatedDuration": "1h", "deadline": "1969-12-31T23:00:00"}, "deadline"),
    ],
)
def test_the_models_refuse_absurd_timing_naming_the_field(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        _timing(**fields)
    errors = info.value.errors()
    assert [e["loc"] for e in errors] == [(where,)]
    assert "366d" in errors[0]["msg"] or "between 1970 and 9000" in errors[0]["msg"]


@pytest.mark.parametrize("created", [DEADLINE_MIN, datetime(2026, 11, 29, tzinfo=UTC), DEADLINE_MAX])
def test_the_window_of_any_accepted_timing_never_overflows(created: datetime) -> None:
    longest = "366d"
    cases = [
        _timing(estimatedDuration=longest, maxDelay=longest),
        _timing(estimatedDuration=longest, deadline=DEADLINE_MIN.isoformat()),
        _timing(estimatedDuration=longest, deadline=(DEADLINE_MAX - timedelta(seconds=1)).isoformat()),
        _timing(estimatedDuration=longest),
    ]
    for timing in cases:
        w = window_of(timing, created)
        assert w.deadline is not None
        assert abs(w.deadline - w.latest_start) <= MAX_DURATION


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_a_time_beyond_the_calendar_in_utc_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_time(text)


def test_shift_time_says_what_is_out_of_range() -> None:
    assert shift_time(DEADLINE_MIN, timedelta(hours=1), "x") == DEADLINE_MIN + timedelta(hours=1)
    with pytest.raises(ValueError, match=r"deadline: .* shifted by -1h is out of range"):
        shift_time(datetime(1, 1, 1, tzinfo=UTC), -timedelta(hours=1), "deadline")


def test_the_crd_bounds_each_duration_and_the_deadline_naming_the_field() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = schema["properties"]["spec"]["properties"]["timing"]["x-kubernetes-validations"]
    by_message = {r["message"]: r for r in rules}
    for field in ("estimatedDuration", "maxDelay"):
        rule = by_message[f"{field} must be at most 366d"]
        assert rule["fieldPath"] == f".{field}" and rule["rule"].startswith(f"!has(self.{field}) || ")
        assert "<= 31622400.0" in rule["rule"]
    assert by_message["deadline must be between 1970 and 9000"]["fieldPath"] == ".deadline"


def test_a_spec_with_an_absurd_max_delay_is_refused_not_a_traceback() -> None:
    spec = {"jobTemplate": {"spec": {}}, "timing": {"estimatedDuration": "1h", "maxDelay": "99999999d"}}
    with pytest.raises(ValidationError, match="maxDelay"):
        GreenTrainingJobSpec.model_validate(spec)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "1h", "--max-delay", "99999999d"], "too long: at most 366d"),
        (["--duration", "1h", "--deadline", "0001-01-01T00:30:00Z"], "deadline: "),
        (["--duration", "1h", "--max-delay", "1h", "--now", "9999-12-31T23:30:00Z"], "maxDelay: "),
    ],
)
def test_the_cli_reports_absurd_durations_and_times(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    forecast = tmp_path / "gb.csv"
    forecast.write_text("Time,Carbon Intensity\n2026-01-01 00:00:00,100\n2026-01-01 01:00:00,100\n")
    assert main(["plan", "--forecast", f"GB={forecast}", *args]) == 2
    assert message in capsys.readouterr().err
