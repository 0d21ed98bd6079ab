"""Accounting counted once and never stuck (issue 21): empty node entries settle, the energy metrics
are added after the status write (a conflict and its retry add nothing twice), phase metrics from
several threads, and host energy read from Prometheus off the workers' threads behind a breaker."""

from __future__ import annotations

import sys
import threading
from datetime import timedelta
from typing import Any

import pytest

from greenjobs.accounting.host_energy import BackgroundHostEnergy, HostEnergy, JobRef
from greenjobs.carbon.providers.base import ProviderError
from greenjobs.controller.decide import Action, Pacing, Timers, decide
from greenjobs.controller.kube import Conflict
from greenjobs.controller.observe import observe
from greenjobs.metrics import OperatorMetrics
from tests.fakes.operator_world import T0, TIMERS, Clock, Env, H, body, view


def test_a_finished_job_with_an_empty_node_entry_still_settles() -> None:
    timers = Timers(TIMERS.tick, TIMERS.replan, TIMERS.power, TIMERS.account, settle=timedelta(minutes=10))
    status = {
        "phase": "Succeeded",
        "startTime": "2026-11-23T10:00:00Z",
        "completionTime": "2026-11-23T11:00:00Z",
        "energy": {"nodes": {"gpu-0": {"joules": 3.6e6}, "gpu-1": {}}},  # an agent left an empty entry
        "emissions": {"accountedJoules": {"gpu-0": 3.6e6}},
    }
    d = decide(observe(body(status), None), T0, Pacing(), timers)
    assert d.action == Action.SETTLE  # not ACCOUNT for ever


RUNNING = {
    "phase": "Running",
    "startTime": "2026-11-23T13:00:00Z",
    "plan": {"zone": "FR"},
    "power": {"targetCapWatts": 250, "reason": "Static"},
    "energy": {"nodes": {"gpu-fr-0": {"joules": 7.2e6, "gpus": 4}}},
}


def test_energy_is_counted_once_after_the_status_write_not_on_each_conflicting_try() -> None:
    env = Env()
    env.clock.now = T0 + 3 * H
    real = env.kube.patch_status
    tries = {"n": 0}

    def conflicting(*args: Any, **kwargs: Any) -> Any:
        tries["n"] += 1
        if tries["n"] == 1:
            raise Conflict("changed since it was read")
        return real(*args, **kwargs)

    env.kube.patch_status = conflicting  # type: ignore[method-assign]
    with pytest.raises(Conflict):
        env.step(body(RUNNING), view(False))
    assert env.ex.metrics.energy._value.get() == 0  # nothing recorded, nothing counted
    env.step(body(RUNNING), view(False))  # the retry after a fresh read
    written = env.kube.statuses()[-1]["energy"]
    assert written["gpuKWh"] == pytest.approx(2.0)
    # Once, and the total (GPU + host + facility) its help text names.
    assert env.ex.metrics.energy._value.get() == pytest.approx(written["kWh"])


def test_phase_metrics_from_many_threads_add_up() -> None:
    metrics = OperatorMetrics()
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:

        def churn(i: int) -> None:
            for n in range(300):
                uid = f"{i}-{n}"
                metrics.observe_phase(uid, "Deferred")
                metrics.observe_phase(uid, "Running")
                metrics.observe_phase(uid, None)

        threads = [threading.Thread(target=churn, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    for phase in ("Deferred", "Running"):
        assert metrics.jobs.labels(phase)._value.get() == 0


class SlowPrometheus:
    name = "kepler"

    def __init__(self) -> None:
        self.go = threading.Event()
        self.calls = 0
        self.fail = False

    def job_energy(self, job: JobRef) -> HostEnergy | None:
        self.calls += 1
        if self.fail:
            raise ProviderError("prometheus: connection refused")
        self.go.wait(timeout=5)
        return HostEnergy(method="kepler", cpu_joules=1000.0)


def test_host_energy_is_read_off_the_callers_thread_and_an_outage_opens_a_breaker() -> None:
    clock = Clock()
    prom = SlowPrometheus()
    source = BackgroundHostEnergy(prom, clock, failures=3, cooldown=timedelta(seconds=30))
    job = JobRef("ml", "llm", start=T0)
    # Prometheus hangs: the accounting is answered at once (nothing yet), the query runs elsewhere.
    assert source.job_energy(job) is None
    prom.go.set()
    assert source.drain()
    found = source.job_energy(job)
    assert found is not None and found.joules == pytest.approx(1000.0)
    # An outage: the last figure stands, and after three failures in a row no query goes out.
    prom.fail = True
    for _ in range(6):
        assert source.job_energy(job) == found
        assert source.drain()
    assert prom.calls == 1 + 3
    clock.now += timedelta(seconds=31)  # the cooldown passed: one probe
    source.job_energy(job)
    assert source.drain()
    assert prom.calls == 5
    source.stop()
