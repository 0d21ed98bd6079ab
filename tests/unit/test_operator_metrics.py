"""Jobs-by-phase gauge follows phase changes and deletions."""

from greenjobs.metrics import OperatorMetrics


def gauge(m: OperatorMetrics, phase: str) -> float | None:
    return m.registry.get_sample_value("greenjobs_jobs", {"phase": phase})


def test_jobs_by_phase_counts_transitions_once() -> None:
    m = OperatorMetrics()
    m.observe_phase("a", "Deferred")
    m.observe_phase("b", "Deferred")
    m.observe_phase("a", "Deferred")  # a tick with no change
    assert gauge(m, "Deferred") == 2
    m.observe_phase("a", "Running")
    assert (gauge(m, "Deferred"), gauge(m, "Running")) == (1, 1)
    m.observe_phase("a", None)  # deleted
    m.observe_phase("zzz", None)  # unknown: nothing happens
    assert (gauge(m, "Deferred"), gauge(m, "Running"), gauge(m, "Succeeded")) == (1, 0, 0)
