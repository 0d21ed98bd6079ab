"""The demo's script: control plane, operator, agents, jobs, live tables, summary, picture, clean-up."""

import argparse
import contextlib
import shutil
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from greenjobs.api.durations import parse_time
from greenjobs.carbon.providers.replay import ReplayProvider
from greenjobs.carbon.series import IntensitySeries

from . import scenario
from .procs import (
    Child,
    ControlPlane,
    DemoError,
    GpuNode,
    agent_ready,
    find_repo,
    gpu_nodes,
    start_agent,
    start_operator,
    tail,
    wait_for,
)
from .record import JobSummary, Recording, summarize, summary_table

SAMPLE_EVERY_S = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the control plane up at the end, with the finished jobs for kubectl "
        "(it is always left up when it was already running)",
    )
    parser.add_argument(
        "--speedup",
        type=float,
        default=scenario.DEFAULT_SPEEDUP,
        help="trace seconds played per real second (default %(default)s: one trace hour every 30 s)",
    )
    parser.add_argument(
        "--anchor",
        type=parse_time,
        default=scenario.ANCHOR,
        help="the trace instant that plays when the demo starts (default 2020-03-09T20:00:00Z)",
    )
    parser.add_argument(
        "--out",
        help="the run folder for the picture, the recording and the logs "
        "(default <repo>/runs/demo-<UTC time>; git-ignored, printed at the end)",
    )
    parser.add_argument(
        "--plot",
        help="also write the picture here (e.g. docs/img/demo.png, which changes only when asked); '' draws none",
    )
    parser.add_argument("--interval", type=float, default=6.0, help="seconds between two tables (default 6)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds (default 600)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m greenjobs.demo", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    demo = Demo(args)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return demo.play()
    except KeyboardInterrupt:
        say("\ninterrupted")
        return 130
    except DemoError as exc:
        say(f"\ndemo failed: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish: it stops our children
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.cleanup()


def say(text: str = "") -> None:
    print(text, flush=True)


def utc_now() -> datetime:
    return datetime.now(UTC)


class TraceView:
    """The intensities the operator's replay provider serves, in real time, for tables and the plot."""

    def __init__(self, replay: scenario.Replay, horizon: timedelta) -> None:
        self.replay = replay
        provider = ReplayProvider(
            scenario.TRACES, replay.anchor, utc_now, speedup=replay.speedup, started=replay.started
        )
        start = replay.started - timedelta(minutes=5)
        self.series: dict[str, IntensitySeries] = {
            zone: provider.forecast(zone, start, replay.started + horizon).series for zone in scenario.TRACES
        }

    def at(self, zone: str, t: datetime) -> float:
        return self.series[zone].at(t)

    def mean(self, zone: str, start: datetime, duration: timedelta) -> float:
        return self.series[zone].mean(start, duration)


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cp: ControlPlane | None = None
        self.started_cluster = False
        self.operator: Child | None = None
        self.agents: list[Child] = []
        self.agent_dirs: dict[str, Path] = {}
        self.ns = scenario.NAMESPACE
        self.finished = False
        self.work: Path | None = None

    # ------------------------------------------------------------------ the show

    def play(self) -> int:
        t_begin = time.monotonic()
        repo = find_repo()
        work = self.work = run_folder(repo, self.args.out)
        cp = self.cp = ControlPlane(repo)

        say("== greenjobs demo: carbon-aware scheduling and GPU power capping on a local control plane")
        was_up = cp.is_up()
        say("control plane: already running, reusing it" if was_up else "control plane: starting (e2e/cluster.sh up)")
        self.started_cluster = not was_up
        cp.up()
        cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(repo / "crds" / "greentrainingjobs.yaml"))
        cp.kubectl("wait", "--for=condition=Established", "crd/greentrainingjobs.greenjobs.dev", "--timeout=60s")
        self._namespace()
        checked = cp.kubectl("apply", "--dry-run=server", "-n", self.ns, "-f", str(repo / "examples"))
        say(f"examples/ valid (server-side dry run): {len(checked.stdout.splitlines())} GreenTrainingJob manifests")

        nodes = gpu_nodes(cp)
        zones = sorted({n.zone for n in nodes})
        if not nodes:
            raise DemoError("no GPU nodes with a greenjobs.dev/grid-zone label in the cluster")
        say("GPU nodes: " + ", ".join(f"{n.name} ({n.zone}, {n.gpus} GPUs)" for n in nodes))

        replay = scenario.Replay(self.args.anchor, self.args.speedup, utc_now())
        trace = TraceView(replay, timedelta(seconds=self.args.timeout + 600))
        say(
            f"forecasts: replay of the March 2020 traces from {replay.anchor:%Y-%m-%d %H:%M} UTC, "
            f"x{replay.speedup:g} (one trace hour every {3600 / replay.speedup:.0f} s)"
        )
        self.operator = start_operator(cp, work, scenario.operator_config(replay), self.ns)
        say(f"operator: running (pid {self.operator.proc.pid}, log {self.operator.log})")
        self._clear_previous()
        self._start_agents(cp, work, nodes)

        applied = []
        for name in scenario.EXAMPLES:
            out = cp.kubectl("apply", "-n", self.ns, "-f", str(repo / "examples" / name)).stdout.strip()
            applied.append(out.split()[0].split("/")[-1])
            say(f"applied examples/{name}: {out}")
        rec = Recording(replay.started)
        ok = self._follow(rec, replay, trace, set(applied))
        self._report(rec, trace, replay, zones, repo, work)
        self.finished = True
        say(f"\ndemo {'done' if ok else 'stopped at the time limit'} in {time.monotonic() - t_begin:.0f}s")
        return 0 if ok else 1

    def _namespace(self) -> None:
        assert self.cp is not None
        cp = self.cp
        if cp.kubectl("get", "namespace", self.ns, check=False).returncode != 0:
            cp.kubectl("create", "namespace", self.ns)
        wait_for(
            f"the default ServiceAccount of {self.ns}",
            lambda: cp.kubectl("get", "serviceaccount", "default", "-n", self.ns, check=False).returncode == 0,
            60,
        )

    def _clear_previous(self) -> None:
        """GreenTrainingJobs left by an earlier `--keep` run; deleted while the operator runs (finalizer)."""
        assert self.cp is not None
        if self.cp.get_json("greentrainingjobs", "-n", self.ns)["items"]:
            say("deleting the GreenTrainingJobs of an earlier run")
            self.cp.kubectl("delete", "greentrainingjobs", "--all", "-n", self.ns, "--timeout=90s")
            self.cp.kubectl("delete", "jobs,pods", "--all", "-n", self.ns, "--timeout=60s", check=False)

    def _start_agents(self, cp: ControlPlane, work: Path, nodes: list[GpuNode]) -> None:
        for node in nodes:
            state = work / "agents" / node.name
            state.mkdir(parents=True)
            self.agent_dirs[node.name] = state
            self.agents.append(start_agent(cp, work, node, scenario.agent_env(node.name, state, node.gpus)))
        for agent in self.agents:
            wait_for(f"{agent.name} to start", lambda a=agent: agent_ready(a), 60, agent)  # type: ignore[misc]
        say(
            f"node agents: {len(self.agents)} running (simulated H100s, reporting every "
            f"{scenario.AGENT_REPORT_INTERVAL_S} s; logs in {work})"
        )

    # ------------------------------------------------------------------ following the jobs

    def _follow(self, rec: Recording, replay: scenario.Replay, trace: TraceView, names: set[str]) -> bool:
        assert self.cp is not None
        deadline = time.monotonic() + self.args.timeout
        next_table = 0.0
        settle_until: float | None = None
        while time.monotonic() < deadline:
            self._check_children()
            now = utc_now()
            items = [
                o
                for o in self.cp.get_json("greentrainingjobs", "-n", self.ns)["items"]
                if o["metadata"]["name"] in names
            ]
            rec.add(now, items)
            done = len(items) == len(names) and all(
                (o.get("status") or {}).get("phase") in scenario.FINAL_PHASES for o in items
            )
            if time.monotonic() >= next_table:
                self._table(now, replay, trace)
                next_table = time.monotonic() + self.args.interval
            if done:
                # Let the agents' final energy reports land and be accounted before the summary.
                settle_until = settle_until or time.monotonic() + 2.5 * scenario.AGENT_REPORT_INTERVAL_S + 2
                if time.monotonic() >= settle_until:
                    rec.add(utc_now(), items)
                    return True
            time.sleep(SAMPLE_EVERY_S)
        return False

    def _check_children(self) -> None:
        for child in [self.operator, *self.agents]:
            if child is not None and not child.alive():
                raise DemoError(f"{child.name} exited (code {child.proc.returncode}); its log:\n{tail(child.logs())}")

    def _table(self, now: datetime, replay: scenario.Replay, trace: TraceView) -> None:
        assert self.cp is not None
        grid = "  ".join(f"{z} {trace.at(z, now):.0f}" for z in scenario.TRACES)
        elapsed = (now - replay.started).total_seconds()
        say(f"\n[+{elapsed:3.0f}s] trace time {replay.trace_time(now):%a %H:%M} UTC | grid gCO2e/kWh: {grid}")
        say(self.cp.kubectl("get", "gtj", "-n", self.ns, "-o", "wide").stdout.rstrip())
        caps = self._caps_in_force()
        if caps:
            say(f"GPU limits in force: {caps}")

    def _caps_in_force(self) -> str:
        from greenjobs_agent.gpu.simulated import read_simulated_limits_watts  # noqa: PLC0415

        parts = []
        for node, state in sorted(self.agent_dirs.items()):
            limits = read_simulated_limits_watts(state)
            counts: dict[float, int] = {}
            for watts in limits.values():
                counts[watts] = counts.get(watts, 0) + 1
            parts.append(f"{node} " + "+".join(f"{n}x{w:.0f}W" for w, n in sorted(counts.items())))
        return "  ".join(parts)

    # ------------------------------------------------------------------ the end

    def _report(
        self, rec: Recording, trace: TraceView, replay: scenario.Replay, zones: list[str], repo: Path, work: Path
    ) -> None:
        assert self.cp is not None
        from greenjobs_agent.gpu.simulated import H100_SXM  # noqa: PLC0415

        say("\n== final state")
        say(self.cp.kubectl("get", "gtj", "-n", self.ns, "-o", "wide").stdout.rstrip())
        say("\n== what happened (Events of the GreenTrainingJobs)")
        say(self._events())
        now = utc_now()
        summaries: dict[str, JobSummary] = {
            name: summarize(track.last, trace.mean, H100_SXM.default_mw / 1000, now)
            for name, track in rec.tracks.items()
            if track.last
        }
        say("\n== summary")
        say(summary_table(list(summaries.values())))
        target = self.args.plot
        if target == "":
            return
        path = work / "demo.png"
        try:
            from .plot import draw  # noqa: PLC0415

            draw(
                path,
                rec,
                summaries,
                trace.at,
                replay.trace_time,
                zones,
                f"greenjobs demo: GB and FR grid intensity from {replay.anchor:%d %b %Y %H:%M} UTC, "
                f"x{replay.speedup:g}",
            )
            if target:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                say(f"\npicture: {path} (and {target})")
            else:
                say(f"\npicture: {path}")
        except ImportError as exc:  # matplotlib is a dev extra
            say(f"\nno picture ({exc}); `pip install matplotlib` to get one")
        (work / "recording.txt").write_text(_dump(rec))

    def _events(self) -> str:
        assert self.cp is not None
        events = self.cp.get_json("events", "-n", self.ns, "--field-selector", "involvedObject.kind=GreenTrainingJob")
        rows = []
        for e in sorted(events["items"], key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or ""):
            when = e.get("lastTimestamp") or e.get("eventTime") or ""
            rows.append(
                f"{when[11:19]}  {e['involvedObject']['name']:<22} {e.get('type', ''):<8} "
                f"{e.get('reason', ''):<15} {e.get('message', '')}"
            )
        return "\n".join(rows) or "(none)"

    def cleanup(self) -> None:
        cp = self.cp
        if cp is None:
            return
        keep_cluster = self.args.keep or not self.started_cluster
        say("\n== cleaning up")
        if self.operator is not None and self.operator.alive() and cp.env and not self.args.keep and keep_cluster:
            # Delete while the operator runs: it removes its finalizer. The namespace goes with it.
            cp.kubectl("delete", "greentrainingjobs", "--all", "-n", self.ns, "--timeout=60s", check=False)
            cp.kubectl("delete", "namespace", self.ns, "--wait=false", check=False)
        for child in self.agents:
            child.terminate()  # each agent restores its GPUs' default limits and flushes its energy
        for child in self.agents:
            child.wait_stopped(20)
        if self.operator is not None:
            self.operator.terminate()
            self.operator.wait_stopped(20)
        say(f"stopped the operator and {len(self.agents)} node agents")
        if keep_cluster:
            if cp.env:
                say(f'control plane left running: eval "$(e2e/cluster.sh env)"  (KUBECONFIG={cp.kubeconfig})')
            if self.args.keep and self.finished:
                say(f"  kubectl get gtj -n {self.ns} -o wide; kubectl describe gtj -n {self.ns} overnight-pretrain")
                say("  (the next `make demo` clears these jobs; `make clean-cluster` stops the control plane)")
        else:
            with contextlib.suppress(Exception):
                cp.down()
            say("control plane stopped (run with --keep to leave it up)")
        if self.work is not None:
            say(f"run folder (picture, recording, logs): {self.work}")


def run_folder(repo: Path, out: str | None, now: datetime | None = None) -> Path:
    """A new folder for this run: --out, or <repo>/runs/demo-<UTC time> (runs/ is git-ignored)."""
    if out:
        work = Path(out)
    else:
        stamp = (now or utc_now()).strftime("%Y%m%dT%H%M%SZ")
        work = repo / "runs" / f"demo-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    return work


def _dump(rec: Recording) -> str:
    lines = []
    for name, track in rec.tracks.items():
        for s in track.samples:
            lines.append(
                f"{name} t={s.t:.1f} phase={s.phase} cap={s.cap_watts} agents={s.agent_caps} kWh={s.k_wh} g={s.grams}"
            )
    return "\n".join(lines) + "\n"
