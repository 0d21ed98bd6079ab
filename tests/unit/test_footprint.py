"""The footprint split: GPU + host + facility energy, operational + embodied emissions, and its factors."""

from typing import Any

import pytest

from greenjobs.accounting.energy import account, check_budget
from greenjobs.accounting.footprint import (
    DEFAULT_HOST_WATTS_PER_GPU,
    DEFAULT_PUE,
    EmbodiedFactors,
    FootprintFactors,
    account_footprint,
    build_host_source,
    footprint,
    job_ref,
)
from greenjobs.accounting.host_energy import KEPLER, WATTS_PER_GPU, HostEnergy, JobRef
from greenjobs.api.models import Emissions, GreenTrainingJobStatus, NodeEnergy

KWH = 3.6e6


def nodes(**joules: float) -> dict[str, NodeEnergy]:
    return {name: NodeEnergy(joules=j, gpus=8, gpu_seconds=8 * 3600.0) for name, j in joules.items()}


FACTORS = FootprintFactors.from_mapping(
    {"pue": 1.5, "embodied": {"gpuKgCO2e": 100, "serverKgCO2e": 800, "gpusPerServer": 8, "lifetimeYears": 1,
                              "utilization": 1.0}}
)  # fmt: skip


def test_defaults_are_the_cited_figures() -> None:
    f = FootprintFactors()
    assert f.pue == DEFAULT_PUE == 1.58
    e = f.embodied
    # BLOOM LCA: 150 kg per GPU, 2,500 kg per 8-GPU server, 6 years at 85 % use.
    assert e.service_hours == pytest.approx(6 * 8760 * 0.85)
    assert e.g_per_gpu_hour == pytest.approx(150_000 / 44_676)
    assert e.g_per_job_gpu_hour == pytest.approx((150_000 + 2_500_000 / 8) / 44_676)
    assert 10.3 < e.g_per_job_gpu_hour < 10.4
    assert f.host.watts_per_gpu == DEFAULT_HOST_WATTS_PER_GPU == 350.0


def test_split_adds_up_to_the_totals() -> None:
    host = HostEnergy(method=KEPLER, cpu_joules=0.3 * KWH, dram_joules=0.2 * KWH)
    fp = account_footprint(nodes(a=2 * KWH), None, 100.0, host, FACTORS, zone="GB")
    assert fp.gpu_k_wh == pytest.approx(2.0)
    assert fp.host_k_wh == pytest.approx(0.5)
    assert fp.facility_k_wh == pytest.approx(0.5 * 2.5)  # (PUE - 1) x IT
    assert fp.k_wh == pytest.approx(2.0 + 0.5 + 1.25)
    assert fp.operational_grams == pytest.approx(3.75 * 100.0)
    # 8 GPU-hours x (100 kg / 8760 h + 800 kg / 8 / 8760 h)
    assert fp.embodied_grams == pytest.approx(8 * (100_000 + 100_000) / 8760)
    assert fp.grams == pytest.approx(fp.operational_grams + fp.embodied_grams)
    assert fp.avg_g_per_kwh == pytest.approx(100.0)  # still the grid intensity the job ran at


def test_host_and_facility_follow_the_intensity_when_used() -> None:
    first = account_footprint(
        nodes(a=1 * KWH), None, 100.0, HostEnergy(method=KEPLER, cpu_joules=1 * KWH), FACTORS, zone=None
    )
    stored = Emissions.model_validate(first.status_patch()["emissions"])
    second = account_footprint(
        nodes(a=2 * KWH), stored, 300.0, HostEnergy(method=KEPLER, cpu_joules=3 * KWH), FACTORS, zone=None
    )
    assert second.gpu.grams == pytest.approx(100 + 300)
    assert second.host_grams == pytest.approx(100 + 2 * 300)
    assert second.facility_grams == pytest.approx(0.5 * (400 + 700))
    assert second.avg_g_per_kwh == pytest.approx(second.operational_grams / second.k_wh)


def test_same_call_twice_and_after_restart_adds_nothing() -> None:
    host = HostEnergy(method=KEPLER, cpu_joules=0.7 * KWH)
    once = account_footprint(nodes(a=1 * KWH), None, 200.0, host, FACTORS, zone="FR")
    stored = Emissions.model_validate(once.status_patch()["emissions"])
    twice = account_footprint(nodes(a=1 * KWH), stored, 999.0, host, FACTORS, zone="FR")
    assert twice.grams == pytest.approx(once.grams, abs=1e-3)
    assert twice.k_wh == pytest.approx(once.k_wh)


def test_host_counter_going_backwards_keeps_its_mark() -> None:
    first = account_footprint(
        nodes(a=KWH), None, 100.0, HostEnergy(method=KEPLER, cpu_joules=2 * KWH), FACTORS, zone=None
    )
    stored = Emissions.model_validate(first.status_patch()["emissions"])
    reset = account_footprint(
        nodes(a=KWH), stored, 100.0, HostEnergy(method=KEPLER, cpu_joules=0.5 * KWH), FACTORS, zone=None
    )
    assert reset.host_k_wh == pytest.approx(2.0) and reset.host_grams == pytest.approx(200.0)


def test_status_written_before_the_split_is_read_as_gpu_only() -> None:
    """An old status: grams were GPU grams. The first footprint call must not count them twice."""
    old = account(nodes(a=1 * KWH), None, 100.0).emissions()  # grams=100, no gpuGrams
    fp = account_footprint(nodes(a=1 * KWH), old, 500.0, None, FACTORS, zone=None)
    assert fp.gpu.grams == pytest.approx(100.0)
    # After the split is written, grams is the total and gpuGrams the state.
    stored = Emissions.model_validate(fp.status_patch()["emissions"])
    assert stored.grams == pytest.approx(fp.grams, abs=1e-3) and stored.grams > 100.0
    again = account_footprint(nodes(a=1 * KWH), stored, 500.0, None, FACTORS, zone=None)
    assert again.gpu.grams == pytest.approx(100.0)


def test_no_host_source_counts_no_host_energy_and_says_so() -> None:
    fp = account_footprint(nodes(a=KWH), None, 100.0, None, FACTORS, zone=None)
    assert fp.host_k_wh == 0 and fp.host_method == "none"
    patch = fp.status_patch()
    assert patch["energy"]["methods"]["host"] == "none"


def test_pue_per_zone_and_its_method() -> None:
    f = FootprintFactors.from_mapping({"pue": 1.4, "pueByZone": {"FR": 1.2}})
    assert f.pue_for("FR") == 1.2 and f.pue_for("GB") == 1.4 and f.pue_for(None) == 1.4
    assert "zone FR" in f.pue_method("FR")
    assert "Uptime Institute" in FootprintFactors().pue_method("GB")
    fp = account_footprint(nodes(a=KWH), None, 100.0, None, f, zone="FR")
    assert fp.facility_k_wh == pytest.approx(0.2)


def test_pue_of_one_means_no_overhead_and_zero_embodied_is_allowed() -> None:
    f = FootprintFactors.from_mapping({"pue": 1, "embodied": {"gpuKgCO2e": 0, "serverKgCO2e": 0}})
    fp = account_footprint(nodes(a=KWH), None, 100.0, None, f, zone=None)
    assert fp.facility_k_wh == 0 and fp.embodied_grams == 0 and fp.grams == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ({"pue": 0.9}, "footprint.pue"),
        ({"pueByZone": {"FR": 0.5}}, "pueByZone.FR"),
        ({"embodied": {"lifetimeYears": 0}}, "footprint.embodied.lifetimeYears"),
        ({"embodied": {"utilization": 1.5}}, "footprint.embodied.utilization"),
        ({"host": {"wattsPerGpu": -1}}, "footprint.host.wattsPerGpu"),
        ({"host": {"kepler": {}}}, "footprint.host.kepler.prometheusURL"),
        ({"host": {"kepler": {"prometheusURL": "http://p", "schema": "v9"}}}, "footprint.host.kepler.schema"),
        ({"pu": 1.2}, "footprint.pu"),
    ],
)
def test_bad_configuration_names_the_field(mapping: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        FootprintFactors.from_mapping(mapping)


def test_status_patch_validates_against_the_models_and_keeps_totals_in_old_fields() -> None:
    host = HostEnergy(method=WATTS_PER_GPU, cpu_joules=0.25 * KWH)
    fp = account_footprint(nodes(a=KWH, b=KWH), None, 150.0, host, FootprintFactors(), zone="GB")
    patch = fp.status_patch()
    status = GreenTrainingJobStatus.model_validate(patch)
    assert status.energy is not None and status.emissions is not None
    assert status.energy.k_wh == pytest.approx(fp.k_wh, abs=1e-4)
    assert status.energy.k_wh == pytest.approx(
        (status.energy.gpu_k_wh or 0) + (status.energy.host_k_wh or 0) + (status.energy.facility_k_wh or 0), abs=2e-4
    )
    assert status.emissions.grams == pytest.approx(
        (status.emissions.operational_grams or 0) + (status.emissions.embodied_grams or 0), abs=2e-3
    )
    assert status.energy.methods and status.energy.methods.host == WATTS_PER_GPU
    assert status.emissions.methods and "Luccioni" in (status.emissions.methods.embodied or "")
    assert "nodes" not in patch["energy"]  # the agents own energy.nodes


def test_budget_applies_to_the_total() -> None:
    """A budget that GPU energy alone would pass is exceeded once host, facility and embodied count."""
    from greenjobs.api.models import Budget

    host = HostEnergy(method=KEPLER, cpu_joules=0.5 * KWH)
    fp = account_footprint(nodes(a=KWH), None, 100.0, host, FACTORS, zone=None)
    budget = Budget(max_c_o2e_kg=0.15)
    assert not check_budget(budget, fp.gpu_k_wh, fp.gpu.grams).exceeded
    assert check_budget(budget, fp.k_wh, fp.grams).exceeded


def test_footprint_refuses_a_bad_intensity() -> None:
    gpu = account(nodes(a=KWH), None, 100.0)
    with pytest.raises(ValueError, match="intensity"):
        footprint(gpu, None, FACTORS, zone=None, intensity_g_per_kwh=float("nan"), previous=None)


def test_embodied_describe_states_the_figures() -> None:
    text = EmbodiedFactors().describe()
    assert "150 kg per GPU" in text and "2500 kg per 8-GPU server" in text and "6 y" in text and "85 %" in text


def test_job_ref_from_status_and_the_default_host_chain() -> None:
    status = {
        "startTime": "2026-11-29T06:00:00Z",
        "energy": {"nodes": {"a": {"gpuSeconds": 7200.0}, "b": {"gpuSeconds": 3600.0}, "c": None}},
    }
    ref = job_ref("ml", "train", status)
    assert ref.gpu_seconds == 10800.0 and ref.start is not None and ref.end is None
    source = build_host_source(FootprintFactors().host)  # no Kepler configured: the estimate answers
    got = source.job_energy(ref)
    assert got is not None and got.method == WATTS_PER_GPU
    assert got.joules == pytest.approx(350.0 * 10800.0)
    off = build_host_source(FootprintFactors.from_mapping({"host": {"wattsPerGpu": 0}}).host)
    assert off.job_energy(JobRef("ml", "train", gpu_seconds=100.0)) is None


def test_increments_per_part_feed_the_metrics() -> None:
    from prometheus_client import CollectorRegistry

    from greenjobs.metrics import OperatorMetrics

    host = HostEnergy(method=KEPLER, cpu_joules=0.5 * KWH)
    # Before the split: the status holds GPU-only kWh and grams.
    old_energy, old_emissions = {"kWh": 1.0}, {"grams": 100.0}
    fp = account_footprint(
        nodes(a=2 * KWH), account(nodes(a=KWH), None, 100.0).emissions(), 100.0, host, FACTORS, zone=None
    )
    energy, grams = fp.increments_since(old_energy, old_emissions)
    assert energy == pytest.approx({"gpu": 1.0, "host": 0.5, "facility": fp.facility_k_wh})
    assert grams["gpu"] == pytest.approx(100.0) and grams["embodied"] == pytest.approx(fp.embodied_grams)
    # After it: nothing new, nothing added.
    patch = fp.status_patch()
    assert all(v < 1e-3 for v in fp.increments_since(patch["energy"], patch["emissions"])[1].values())
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    metrics.on_footprint(energy, grams)
    assert registry.get_sample_value("greenjobs_footprint_energy_kwh_total", {"part": "host"}) == pytest.approx(0.5)
    assert registry.get_sample_value("greenjobs_footprint_co2e_grams_total", {"part": "embodied"}) == pytest.approx(
        fp.embodied_grams
    )


def test_reconciler_style_round_trip_through_a_status_dict() -> None:
    """What the reconciler does each accounting: read the status, account, merge the patch, repeat."""
    status: dict[str, Any] = {"energy": {"nodes": {}}, "emissions": {}}
    source = build_host_source(FootprintFactors.from_mapping({"host": {"wattsPerGpu": 100}}).host)
    totals = []
    for hour, intensity in ((1, 100.0), (2, 300.0), (2, 300.0)):  # the last call repeats the second
        status["energy"]["nodes"]["n1"] = {
            "joules": hour * 8 * 700 * 3600.0,
            "gpus": 8,
            "gpuSeconds": hour * 8 * 3600.0,
        }
        nodes = {n: NodeEnergy.model_validate(v) for n, v in status["energy"]["nodes"].items()}
        previous = Emissions.model_validate(status["emissions"])
        host = source.job_energy(job_ref("ml", "train", status))
        method = (status["energy"].get("methods") or {}).get("host")
        fp = account_footprint(
            nodes, previous, intensity, host, FootprintFactors(), zone="GB", previous_host_method=method
        )
        patch = fp.status_patch()
        status["energy"] = {**status["energy"], **patch["energy"]}  # JSON merge: nodes stay the agents'
        status["emissions"] = patch["emissions"]
        totals.append((status["energy"]["kWh"], status["emissions"]["grams"]))
    assert status["energy"]["nodes"]["n1"]["gpus"] == 8
    assert totals[2] == pytest.approx(totals[1], abs=1e-3)  # repeating adds nothing
    # Hour 1 at 100 g, hour 2 at 300 g: GPU 5.6 kWh + host 0.8 kWh each hour, x PUE 1.58.
    it_first, it_second = 5.6 + 0.8, 5.6 + 0.8
    assert status["emissions"]["operationalGrams"] == pytest.approx(1.58 * (it_first * 100 + it_second * 300), rel=1e-4)
    assert status["energy"]["methods"]["host"] == WATTS_PER_GPU
