"""The demo's pure parts: its scenario really defers and moves jobs, its summary arithmetic, the picture.

The demo itself (`make demo`) runs against the real control plane; tests/integration/test_examples.py
checks the manifests it applies against the real API server.
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from greenjobs.api.models import GreenTrainingJobSpec
from greenjobs.carbon.providers.replay import ReplayProvider
from greenjobs.demo import scenario
from greenjobs.demo.procs import find_repo, parse_exports
from greenjobs.demo.record import Recording, summarize, summary_table
from greenjobs.planning.decisions import decide_plan
from tests.kube import REPO

EXAMPLES = REPO / "examples"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _example(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return doc


def test_the_demo_finds_this_checkout() -> None:
    assert find_repo() == REPO


def test_cluster_env_exports_are_unquoted() -> None:
    text = "export KUBECONFIG=/tmp/a\\ b/admin.kubeconfig\nexport PATH=/bin/x:$PATH\nexport GREENJOBS_BIN='/c d'\n"
    env = parse_exports(text)
    assert env["KUBECONFIG"] == "/tmp/a b/admin.kubeconfig"
    assert env["GREENJOBS_BIN"] == "/c d"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_a_valid_spec(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["kind"] == "GreenTrainingJob"
    GreenTrainingJobSpec.model_validate(doc["spec"])


def test_the_demo_applies_existing_examples_that_finish_on_kwok() -> None:
    for name in scenario.EXAMPLES:
        pod = _example(name)["spec"]["jobTemplate"]["spec"]["template"]
        assert pod["metadata"]["annotations"]["kwok.greenjobs.dev/run-for"].endswith("s")


def _plan(name: str, speedup: float = scenario.DEFAULT_SPEEDUP) -> Any:
    """Plan an example as the demo's operator would, 5 s after the replay starts."""
    now = T0 + timedelta(seconds=5)
    provider = ReplayProvider(scenario.TRACES, scenario.ANCHOR, lambda: now, speedup=speedup, started=T0)
    spec = GreenTrainingJobSpec.model_validate(_example(name)["spec"])
    return decide_plan(spec, now, now, {"GB", "FR"}, provider.forecast, provider.current).plan


def test_the_deferred_example_waits_for_the_windy_night_in_gb() -> None:
    plan = _plan("deferred.yaml")
    assert plan.zone == "GB"
    delay = (plan.scheduled_start - T0).total_seconds()
    # 23:00 in the trace (the wind picks up) is 90 s into the replay at x120.
    assert 80 <= delay <= 100
    assert plan.expected_savings_percent > 25


def test_the_carbon_aware_example_moves_to_france_at_once() -> None:
    plan = _plan("carbon-aware.yaml")
    assert plan.zone == "FR"
    assert plan.scheduled_start <= T0 + timedelta(seconds=6)
    assert plan.expected_savings_percent > 50


def test_replay_maps_real_time_onto_the_trace() -> None:
    replay = scenario.Replay(scenario.ANCHOR, 120, T0)
    assert replay.trace_time(T0 + timedelta(seconds=30)) == scenario.ANCHOR + timedelta(hours=1)
    spec = replay.provider_spec()
    assert spec["type"] == "replay" and set(spec["traces"]) == {"GB", "FR"}


def _gtj(name: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-01-01T12:00:00Z"},
        "spec": {"placement": {"zones": ["GB", "FR"]}},
        "status": status,
    }


def _flat(values: dict[str, float]) -> Any:
    return lambda zone, start, duration: values[zone]


def test_summary_charges_the_same_energy_at_once_in_the_first_zone() -> None:
    obj = _gtj(
        "moved",
        phase="Succeeded",
        startTime="2026-01-01T12:00:10Z",
        completionTime="2026-01-01T12:01:10Z",
        plan={"zone": "FR", "expectedSavingsPercent": 60.0},
        energy={"kWh": 0.5, "gpuHours": 1.0},
        emissions={"grams": 25.0, "avgGPerKWh": 50.0},
    )
    seen: list[tuple[str, datetime, timedelta]] = []

    def intensity(zone: str, start: datetime, duration: timedelta) -> float:
        seen.append((zone, start, duration))
        return 200.0

    s = summarize(obj, intensity, 700.0, T0)
    # The baseline: the first zone, from creation, for as long as the job really ran.
    assert seen == [("GB", datetime(2026, 1, 1, 12, 0, tzinfo=UTC), timedelta(seconds=60))]
    assert s.baseline_grams == pytest.approx(100.0)
    assert s.saved_grams == pytest.approx(75.0)
    assert s.saved_percent == pytest.approx(75.0)
    assert s.waited == timedelta(seconds=10)
    assert s.avg_watts_per_gpu == pytest.approx(500.0)
    assert s.cap_saved_k_wh == pytest.approx(0.2)  # 1 GPU-hour at 700 W would be 0.7 kWh


def test_a_suspended_job_ends_when_its_budget_was_exceeded() -> None:
    obj = _gtj(
        "over",
        phase="Suspended",
        startTime="2026-01-01T12:00:00Z",
        conditions=[
            {"type": "BudgetExceeded", "status": "True", "lastTransitionTime": "2026-01-01T12:00:30Z"},
        ],
        energy={"kWh": 0.1, "gpuHours": 0.2},
        emissions={"grams": 20.0},
    )
    durations: list[timedelta] = []

    def intensity(zone: str, start: datetime, duration: timedelta) -> float:
        durations.append(duration)
        return 200.0

    s = summarize(obj, intensity, 700.0, T0 + timedelta(hours=1))
    assert s.end == datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    assert durations == [timedelta(seconds=30)]  # not until `now`
    assert s.saved_grams == pytest.approx(0.0)


def test_summary_table_totals() -> None:
    jobs = [
        summarize(
            _gtj("a", phase="Succeeded", startTime="2026-01-01T12:00:00Z", completionTime="2026-01-01T12:00:30Z",
                 energy={"kWh": 1.0, "gpuHours": 2.0}, emissions={"grams": 50.0}),
            _flat({"GB": 100.0}), 700.0, T0,
        ),
        summarize(_gtj("b", phase="Pending"), _flat({"GB": 100.0}), 700.0, T0),
    ]  # fmt: skip
    table = summary_table(jobs)
    total = next(line for line in table.splitlines() if line.startswith("TOTAL")).split()
    assert total == ["TOTAL", "1.0000", "50.0", "50.0", "50.0"]  # kWh, g, saved g, saved %
    assert "b " in table and "Pending" in table


def test_recording_keeps_the_first_plan_and_the_agents_caps() -> None:
    rec = Recording(T0)
    first = _gtj("j", phase="Deferred", plan={"scheduledStart": "2026-01-01T12:01:00Z"})
    later = _gtj(
        "j",
        phase="Running",
        plan={"scheduledStart": "2026-01-01T12:00:50Z"},
        power={"targetCapWatts": 300},
        energy={"kWh": 0.01, "nodes": {"n1": {"joules": 36000, "capWatts": 300}, "n2": {"joules": 1}}},
    )
    rec.add(T0 + timedelta(seconds=1), [first])
    rec.add(T0 + timedelta(seconds=3), [later])
    track = rec.tracks["j"]
    assert track.first_plan == {"scheduledStart": "2026-01-01T12:01:00Z"}
    assert [s.phase for s in track.samples] == ["Deferred", "Running"]
    assert track.samples[1].agent_caps == {"n1": 300}
    assert track.samples[1].cap_watts == 300
    assert rec.end == 3.0


def test_the_picture_is_drawn(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from greenjobs.demo.plot import draw

    rec = Recording(T0)
    obj = _gtj(
        "j", phase="Running", startTime="2026-01-01T12:00:20Z", plan={"zone": "GB"}, power={"targetCapWatts": 400}
    )
    for t in range(0, 60, 2):
        obj["status"]["energy"] = {"kWh": t / 1000, "nodes": {"n": {"capWatts": 400}}}
        rec.add(T0 + timedelta(seconds=t), [obj])
    summaries = {"j": summarize(obj, _flat({"GB": 100.0}), 700.0, T0 + timedelta(seconds=60))}
    out = draw(tmp_path / "demo.png", rec, summaries, lambda z, t: 100.0, lambda t: t, ["GB"], "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_with_the_footprint_split_saves_on_operational_grams_only() -> None:
    obj = _gtj(
        "split",
        phase="Succeeded",
        startTime="2026-01-01T12:00:00Z",
        completionTime="2026-01-01T12:01:00Z",
        plan={"zone": "GB"},
        energy={
            "kWh": 2.0, "gpuHours": 1.0, "gpuKWh": 0.5, "hostKWh": 0.3, "facilityKWh": 1.2,
            "methods": {"host": "watts-per-gpu"},
        },
        emissions={"grams": 210.0, "operationalGrams": 200.0, "embodiedGrams": 10.0, "gpuGrams": 50.0},
    )  # fmt: skip
    s = summarize(obj, _flat({"GB": 150.0}), 700.0, T0)
    assert s.gpu_k_wh == 0.5 and s.host_k_wh == 0.3 and s.embodied_grams == 10.0
    assert s.saved_grams == pytest.approx(2.0 * 150.0 - 200.0)  # embodied grams are not a saving's business
    assert s.avg_watts_per_gpu == pytest.approx(500.0)  # GPU energy / GPU-hours, not the total
    assert s.cap_saved_k_wh == pytest.approx(0.2)
    table = summary_table([s])
    main_total = next(line for line in table.splitlines() if line.startswith("TOTAL")).split()
    assert main_total == ["TOTAL", "2.0000", "210.0", "100.0", "33.3"]
    foot = table[table.index("JOB  ", 10) :]
    row = next(line for line in foot.splitlines() if line.startswith("split")).split()
    assert row == ["split", "0.5000", "0.3000", "1.2000", "2.0000", "200.0", "10.0", "210.0", "watts-per-gpu"]
