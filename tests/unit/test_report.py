"""`greenjobs report`: the card, savings by cause, CodeCarbon's CSV columns, the picture, MLflow."""

import argparse
import csv
import importlib.util
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from greenjobs.accounting.footprint import FootprintFactors, account_footprint
from greenjobs.accounting.host_energy import KEPLER, HostEnergy
from greenjobs.accounting.prometheus import Series
from greenjobs.api.models import NodeEnergy
from greenjobs.report import (
    ANNOTATION_MLFLOW_RUN,
    CODECARBON_COLUMNS,
    CODECARBON_DOCUMENTED_COLUMNS,
    MlflowMissingError,
    add_arguments,
    card_from,
    codecarbon_row,
    codecarbon_text,
    log_mlflow,
    render,
    run,
    write_codecarbon,
)

KWH = 3.6e6
CREATED = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)

# CodeCarbon's documented emissions.csv fields (docs/reference/output.md in github.com/mlco2/codecarbon,
# section CSV), copied here by hand so that a change on either side fails this test.
DOCUMENTED = [
    "timestamp", "project_name", "run_id", "duration", "emissions", "emissions_rate", "cpu_power", "gpu_power",
    "ram_power", "cpu_energy", "gpu_energy", "ram_energy", "energy_consumed", "country_name", "country_iso_code",
    "region", "on_cloud", "cloud_provider", "cloud_region", "os", "python_version", "codecarbon_version",
    "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude", "latitude", "ram_total_size",
    "tracking_mode", "cpu_utilization_percent", "gpu_utilization_percent", "ram_utilization_percent", "ram_used_gb",
]  # fmt: skip


def gtj(
    *,
    waited_s: float = 0,
    zone: str = "GB",
    zones: tuple[str, ...] = ("GB", "FR"),
    split: bool = True,
    hours: float = 2.0,
) -> dict[str, Any]:
    start = CREATED + timedelta(seconds=waited_s)
    nodes = {"n1": NodeEnergy(joules=8 * KWH, gpus=8, gpu_seconds=8 * 3600.0 * hours)}
    status: dict[str, Any] = {
        "phase": "Succeeded",
        "startTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "completionTime": (start + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "plan": {"zone": zone, "expectedGPerKWh": 90.0, "baselineGPerKWh": 200.0, "expectedSavingsPercent": 55.0},
        "power": {"targetCapWatts": 500},
        "energy": {"nodes": {n: e.dump() for n, e in nodes.items()}},
    }
    if split:
        fp = account_footprint(
            nodes, None, 100.0, HostEnergy(method=KEPLER, cpu_joules=2 * KWH), FootprintFactors(), zone=zone
        )
        patch = fp.status_patch()
        status["energy"].update(patch["energy"])
        status["emissions"] = patch["emissions"]
    else:
        status["energy"].update({"kWh": 8.0, "gpuHours": 8 * hours})
        status["emissions"] = {"grams": 800.0, "avgGPerKWh": 100.0}
    return {
        "apiVersion": "greenjobs.dev/v1alpha1",
        "kind": "GreenTrainingJob",
        "metadata": {
            "name": "llama",
            "namespace": "ml",
            "uid": "0d4c-uid",
            "creationTimestamp": CREATED.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "annotations": {ANNOTATION_MLFLOW_RUN: "llama-run-7"},
        },
        "spec": {"jobTemplate": {"spec": {"template": {}}}, "placement": {"zones": list(zones)}},
        "status": status,
    }


def test_card_shows_every_part_and_its_method() -> None:
    card = card_from(gtj())
    assert card.split and card.gpu_k_wh == pytest.approx(8.0) and card.host_k_wh == pytest.approx(2.0)
    assert card.k_wh == pytest.approx(10 * 1.58, abs=1e-3)
    text = render(card)
    for needle in ("GPU", "host (CPU, DRAM)", "facility overhead", "kepler", "PUE 1.58", "embodied", "Luccioni"):
        assert needle in text, needle
    assert "budgets apply to the totals" in text


def test_card_of_a_status_before_the_split_says_what_it_lacks() -> None:
    card = card_from(gtj(split=False))
    assert not card.split and card.gpu_k_wh == 8.0 and card.operational_grams == 800.0
    assert "not in this status" in render(card)


@pytest.mark.parametrize(
    ("waited_s", "zone", "kind"),
    [
        (0, "FR", "placement"),
        (3600, "GB", "shifting"),
        (3600, "FR", "shifting+placement"),
        (0, "GB", "none"),
    ],
)
def test_savings_are_attributed_to_what_the_job_did(waited_s: float, zone: str, kind: str) -> None:
    card = card_from(gtj(waited_s=waited_s, zone=zone))
    first = card.savings[0]
    assert first.kind == kind
    if kind != "none":
        # Planned at-once baseline 200 g/kWh against the 100 it ran at, over the total energy.
        assert first.grams == pytest.approx((200.0 - 100.0) * card.k_wh, rel=1e-3)


def test_capping_savings_need_the_default_limit() -> None:
    assert card_from(gtj()).savings[-1].grams is None
    card = card_from(gtj(), default_watts=700.0)
    capping = card.savings[-1]
    assert capping.kind == "capping"
    # 16 GPU-hours at 700 W = 11.2 kWh; the GPUs used 8: 3.2 kWh saved, x PUE 1.58, x 100 g/kWh.
    assert capping.grams == pytest.approx(3.2 * 1.58 * 100.0, rel=1e-3)


def test_codecarbon_columns_are_the_documented_ones_plus_pue() -> None:
    assert list(CODECARBON_DOCUMENTED_COLUMNS) == DOCUMENTED
    assert (*DOCUMENTED, "pue") == CODECARBON_COLUMNS


def test_codecarbon_row_values() -> None:
    card = card_from(gtj())
    row = codecarbon_row(card)
    assert list(row) == list(CODECARBON_COLUMNS)
    assert row["timestamp"] == "2026-11-29T08:00:00" and row["run_id"] == "0d4c-uid" and row["project_name"] == "ml"
    assert float(row["duration"]) == 7200.0
    assert float(row["emissions"]) == pytest.approx(card.operational_grams / 1000.0)  # kg, no embodied
    assert float(row["energy_consumed"]) == pytest.approx(float(row["gpu_energy"]) + float(row["cpu_energy"]))
    assert float(row["gpu_energy"]) == pytest.approx(8.0) and float(row["cpu_energy"]) == pytest.approx(2.0)
    assert float(row["gpu_power"]) == pytest.approx(4000.0)  # 8 kWh in 2 h
    assert float(row["emissions_rate"]) == pytest.approx(float(row["emissions"]) / 7200.0)
    assert row["pue"] == "1.58" and row["region"] == "GB" and row["gpu_count"] == "8"


def test_codecarbon_file_appends_under_one_header(tmp_path: Path) -> None:
    path = tmp_path / "emissions.csv"
    row = codecarbon_row(card_from(gtj()))
    write_codecarbon(path, [row])
    write_codecarbon(path, [row])
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and list(rows[0]) == list(CODECARBON_COLUMNS)
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="header"):
        write_codecarbon(other, [row])
    assert codecarbon_text([card_from(gtj())]).splitlines()[0] == ",".join(CODECARBON_COLUMNS)


def args_for(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_run_from_a_file_prints_the_card_and_draws_the_picture(tmp_path: Path) -> None:
    src = tmp_path / "gtj.json"
    src.write_text(json.dumps(gtj(waited_s=3600)))
    png = tmp_path / "card.png"
    out = io.StringIO()
    assert run(args_for("llama", "--file", str(src), "--png", str(png)), out=out) == 0
    assert "TOTAL" in out.getvalue() and "shifting" in out.getvalue()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_codecarbon_and_json_formats(tmp_path: Path) -> None:
    src = tmp_path / "gtj.yaml"
    src.write_text(json.dumps(gtj()))  # JSON is YAML
    target = tmp_path / "e.csv"
    out = io.StringIO()
    assert (
        run(args_for("llama", "--file", str(src), "--format", "codecarbon", "--csv", str(target), "--no-png"), out) == 0
    )
    assert target.read_text().startswith("timestamp,project_name,run_id")
    out = io.StringIO()
    assert (
        run(args_for("llama", "--file", "-", "--format", "json", "--no-png"), out, stdin=io.StringIO(src.read_text()))
        == 0
    )
    figures = json.loads(out.getvalue())
    assert figures["co2e_g"] == pytest.approx(card_from(gtj()).grams) and figures["methods"]["host"] == KEPLER


def test_run_refuses_a_file_that_is_not_a_gtj(tmp_path: Path) -> None:
    bad = tmp_path / "pod.yaml"
    bad.write_text("kind: Pod\n")
    assert run(args_for("x", "--file", str(bad), "--no-png"), io.StringIO()) == 2


def test_picture_series_from_prometheus_and_an_intensity_file(tmp_path: Path) -> None:
    src = tmp_path / "gtj.json"
    src.write_text(json.dumps(gtj()))
    start = CREATED
    queries: list[str] = []

    class FakeProm:
        def __init__(self, url: str) -> None:
            assert url == "http://prom:9090"

        def query_range(self, q: str, a: datetime, b: datetime, step: timedelta) -> list[Series]:
            queries.append(q)
            value = 4000.0 if "job_energy" in q else 500.0
            return [Series({}, [(start + timedelta(minutes=m), value) for m in range(0, 120, 10)])]

    intensity = tmp_path / "gb.csv"
    intensity.write_text("timestamp,gco2\n2026-11-29T05:00:00Z,120\n2026-11-29T07:00:00Z,80\n")
    png = tmp_path / "p.png"
    out = io.StringIO()
    argv = ("llama", "--file", str(src), "--png", str(png), "--prometheus", "http://prom:9090",
            "--intensity", str(intensity))  # fmt: skip
    assert run(args_for(*argv), out, prometheus=FakeProm) == 0
    assert 'greenjobs_job_energy_joules_total{namespace="ml",job="llama"}' in queries[0]
    assert 'greenjobs_gpu_cap_watts{node=~"n1"}' in queries[1]
    assert png.exists()


class FakeClient:
    """The part of mlflow.MlflowClient that log_mlflow uses, with its signatures."""

    def __init__(self, runs: dict[str, str], experiments: dict[str, str], calls: list[tuple[str, Any]]) -> None:
        self.runs, self.experiments, self.calls = runs, experiments, calls

    def get_experiment_by_name(self, name: str) -> Any:
        return SimpleNamespace(experiment_id=self.experiments[name]) if name in self.experiments else None

    def create_experiment(self, name: str) -> str:
        self.calls.append(("create_experiment", name))
        self.experiments[name] = "exp-new"
        return "exp-new"

    def search_runs(self, experiment_ids: list[str], filter_string: str, max_results: int) -> list[Any]:
        self.calls.append(("search_runs", (experiment_ids, filter_string)))
        name = filter_string.split("'")[1]
        return [SimpleNamespace(info=SimpleNamespace(run_id=self.runs[name]))] if name in self.runs else []

    def create_run(self, experiment_id: str, run_name: str) -> Any:
        self.calls.append(("create_run", (experiment_id, run_name)))
        return SimpleNamespace(info=SimpleNamespace(run_id="new-id"))

    def log_metric(self, run_id: str, key: str, value: float) -> None:
        self.calls.append(("log_metric", (run_id, key, value)))

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.calls.append(("set_tag", (run_id, key, value)))

    def set_terminated(self, run_id: str) -> None:
        self.calls.append(("set_terminated", run_id))


class FakeMlflow:
    def __init__(self, runs: dict[str, str] | None = None, experiments: dict[str, str] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.client = FakeClient(runs or {}, experiments or {}, self.calls)

    def MlflowClient(self) -> FakeClient:
        return self.client


def test_mlflow_logs_into_the_run_the_annotation_names_without_ending_it() -> None:
    card = card_from(gtj())
    fake = FakeMlflow(runs={"llama-run-7": "abc123"})
    assert log_mlflow(card, mlflow=fake) == "abc123"
    assert ("search_runs", (["0"], "attributes.run_name = 'llama-run-7'")) in fake.calls
    metrics = {k: v for kind, (run, k, v) in ((c[0], c[1]) for c in fake.calls if c[0] == "log_metric")}
    assert metrics["greenjobs.co2e_g"] == pytest.approx(card.grams)
    assert metrics["greenjobs.embodied_co2e_g"] == pytest.approx(card.embodied_grams or 0)
    assert not any(kind in ("create_run", "set_terminated") for kind, _ in fake.calls)  # the training's run
    fresh = FakeMlflow(experiments={"footprints": "7"})
    assert log_mlflow(card, mlflow=fresh, experiment="footprints") == "new-id"
    assert ("create_run", ("7", "llama-run-7")) in fresh.calls and ("set_terminated", "new-id") in fresh.calls
    other = FakeMlflow()
    log_mlflow(card, mlflow=other, experiment="new-exp")
    assert ("create_experiment", "new-exp") in other.calls


def test_mlflow_needs_a_run_name() -> None:
    obj = gtj()
    obj["metadata"]["annotations"] = {}
    with pytest.raises(ValueError, match=ANNOTATION_MLFLOW_RUN):
        log_mlflow(card_from(obj), mlflow=FakeMlflow())


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="mlflow is installed")
def test_without_the_extra_mlflow_logging_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(MlflowMissingError, match=r"greenjobs\[mlflow\]"):
        log_mlflow(card_from(gtj()))
    src = tmp_path / "gtj.json"
    src.write_text(json.dumps(gtj()))
    assert run(args_for("llama", "--file", str(src), "--no-png", "--mlflow"), io.StringIO()) == 2


def test_report_is_a_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from greenjobs.cli import SUBCOMMANDS, main

    assert SUBCOMMANDS["report"][0] == "greenjobs.report"
    src = tmp_path / "gtj.json"
    src.write_text(json.dumps(gtj()))
    assert main(["report", "llama", "--file", str(src), "--no-png"]) == 0
    assert "EMISSIONS" in capsys.readouterr().out


def test_a_finished_job_whose_entries_say_zero_gpus_still_has_its_gpus_and_last_cap() -> None:
    obj = gtj()
    obj["status"]["energy"]["nodes"]["n1"].update({"gpus": 0, "capWatts": 450})
    obj["status"]["power"] = {}
    card = card_from(obj)
    assert card.gpus == 8  # 16 GPU-hours over 2 h
    assert card.cap_watts == 450
