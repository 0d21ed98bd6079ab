#!/usr/bin/env python3
"""A small training program that checkpoints on SIGTERM and resumes where it stopped.

Linear regression by minibatch SGD on synthetic data it generates itself from a fixed seed: the
standard library only, so it runs as-is in python:3.11-slim. It stands in for a real training loop
to show what a job needs so that greenjobs (or anything else) may stop it and start it again later:

* On start it loads its latest complete checkpoint, if any, and continues at the next step with the
  weights *and* the random generator's state restored: an interrupted run ends with exactly the
  weights of an uninterrupted one.
* On SIGTERM (SIGINT) it finishes the current step, writes a checkpoint and exits 143 (130), never 0:
  a pod that exits 0 counts as a completion, and its Job would be marked Complete with its training
  unfinished.
* Each step appends `step K` to DIR/steps.log, exactly once across any number of interruptions (see
  "Guarantee" below and README.md).
* When all steps are done it writes DIR/DONE (final loss and weights) and exits 0; started again with
  DONE present, it exits 0 at once without training.

Checkpoints: DIR/ckpt-<step>.json, written to a temporary file, fsynced and renamed over (os.replace),
then the directory fsynced; the latest two are kept. Each holds a SHA-256 of its payload; one that is
torn or corrupt is renamed to *.corrupt and the previous one is used instead.

Guarantee: before a checkpoint is written, steps.log is fsynced, and the checkpoint records its length
in bytes. On resume, steps.log is truncated to that length, so it lists exactly the steps whose effect
is in the restored weights. SIGTERM/SIGINT lose no step (the checkpoint is written at the step where
the program stops). A SIGKILL, OOM kill or node loss loses the steps since the last checkpoint: they are
done again (and logged again, once, since their lines were cut). Checkpoints are written every
--checkpoint-every steps to bound that loss.

Exit codes: 0 all steps done (now or before); 143 stopped by SIGTERM, checkpoint written; 130 stopped by
SIGINT, checkpoint written; 2 bad arguments or a checkpoint from a different configuration; 1 anything
else (e.g. steps.log shorter than the checkpoint says: it was not written by this program).

Progress: every --log-every steps (and at each checkpoint) a line `progress step=K steps=N fraction=F
loss=L` on stdout and DIR/progress.json {"step": K, "steps": N, "fraction": F, "loss": L}.

Options may also be given as environment variables (TRAIN_STEPS, CHECKPOINT_DIR, STEP_SECONDS,
LOG_EVERY, CHECKPOINT_EVERY, SEED); a command-line option wins.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

FORMAT = 1
EXIT_DONE = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143
KEEP_CHECKPOINTS = 2

# The problem: y = x . TRUE_W + TRUE_B + noise, SAMPLES points in DIM dimensions.
DIM = 8
SAMPLES = 256
BATCH = 16
LEARNING_RATE = 0.02


class CheckpointError(Exception):
    """A checkpoint that cannot be used: torn, corrupt, or of another format."""


# ---------------------------------------------------------------- files


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str, *, durable: bool = True) -> None:
    """Replace `path` with `text`: a reader sees the old file or the new one, never a part of either."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        if durable:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        _fsync_dir(path.parent)


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(payload: dict[str, Any]) -> str:
    """The file's text: the payload with its checksum (floats in JSON round-trip exactly)."""
    return json.dumps({"sha256": _digest(payload), "payload": payload}, sort_keys=True) + "\n"


def unseal(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
        payload, digest = doc["payload"], doc["sha256"]
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"unreadable ({e})") from e
    if not isinstance(payload, dict) or _digest(payload) != digest:
        raise CheckpointError("checksum mismatch")
    if payload.get("format") != FORMAT:
        raise CheckpointError(f"format {payload.get('format')!r}, expected {FORMAT}")
    return payload


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"ckpt-{step:08d}.json"


def checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """The checkpoint files in `directory`, latest first."""
    found = []
    for p in directory.glob("ckpt-*.json"):
        with contextlib.suppress(ValueError):
            found.append((int(p.stem.removeprefix("ckpt-")), p))
    return sorted(found, reverse=True)


def load_latest(directory: Path) -> dict[str, Any] | None:
    """The latest checkpoint that verifies; corrupt ones are set aside (renamed *.corrupt) with a warning."""
    for step, path in checkpoints(directory):
        try:
            payload = unseal(path.read_text(encoding="utf-8"))
            if payload["step"] != step:
                raise CheckpointError(f"holds step {payload['step']}")
        except (OSError, UnicodeDecodeError, CheckpointError) as e:
            print(f"warning: ignoring checkpoint {path.name}: {e}", file=sys.stderr, flush=True)
            with contextlib.suppress(OSError):
                os.replace(path, path.with_name(path.name + ".corrupt"))
            continue
        return payload
    return None


# ---------------------------------------------------------------- the model


def make_data(seed: int) -> tuple[list[list[float]], list[float]]:
    """The data set, the same on every start: it is regenerated, never stored."""
    rng = random.Random(seed)  # noqa: S311 -- reproducible synthetic data, not cryptography
    true_w = [rng.uniform(-2.0, 2.0) for _ in range(DIM)]
    true_b = rng.uniform(-1.0, 1.0)
    xs = [[rng.gauss(0.0, 1.0) for _ in range(DIM)] for _ in range(SAMPLES)]
    ys = [sum(w * x for w, x in zip(true_w, row, strict=True)) + true_b + rng.gauss(0.0, 0.1) for row in xs]
    return xs, ys


def mse(w: list[float], b: float, xs: list[list[float]], ys: list[float]) -> float:
    total = 0.0
    for row, y in zip(xs, ys, strict=True):
        err = sum(wi * xi for wi, xi in zip(w, row, strict=True)) + b - y
        total += err * err
    return total / len(xs)


def sgd_step(w: list[float], b: float, xs: list[list[float]], ys: list[float], rng: random.Random) -> float:
    """One minibatch step on `w` (in place); the new bias."""
    batch = [rng.randrange(len(xs)) for _ in range(BATCH)]
    grad_w = [0.0] * len(w)
    grad_b = 0.0
    for i in batch:
        err = sum(wi * xi for wi, xi in zip(w, xs[i], strict=True)) + b - ys[i]
        for j, xj in enumerate(xs[i]):
            grad_w[j] += 2.0 * err * xj / BATCH
        grad_b += 2.0 * err / BATCH
    for j, g in enumerate(grad_w):
        w[j] -= LEARNING_RATE * g
    return b - LEARNING_RATE * grad_b


def rng_state_to_json(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss_next = state
    return [version, list(internal), gauss_next]


def rng_state_from_json(state: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss_next = state
    return (version, tuple(internal), gauss_next)


# ---------------------------------------------------------------- the run


class Stop:
    """Set by SIGTERM/SIGINT; the loop reads it between steps, so a step is never cut in two."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:  # no print here: the handler may run in the middle of one (reentrant write)
            self.signum = signum


def _env_default(name: str, default: str) -> str:
    return os.environ.get(name, default)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--steps", type=int, default=int(_env_default("TRAIN_STEPS", "1000")), help="steps in all")
    p.add_argument("--checkpoint-dir", type=Path, default=Path(_env_default("CHECKPOINT_DIR", "/checkpoints")))
    p.add_argument(
        "--step-seconds",
        type=float,
        default=float(_env_default("STEP_SECONDS", "0.05")),
        help="sleep per step, to simulate work",
    )
    p.add_argument("--log-every", type=int, default=int(_env_default("LOG_EVERY", "10")), help="progress every N steps")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=int(_env_default("CHECKPOINT_EVERY", "50")),
        help="checkpoint every N steps (besides on SIGTERM/SIGINT)",
    )
    p.add_argument("--seed", type=int, default=int(_env_default("SEED", "0")), help="seed of the data and the batches")
    args = p.parse_args(argv)
    for name in ("steps", "log_every", "checkpoint_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.step_seconds < 0:
        p.error("--step-seconds must not be negative")
    return args


class Trainer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.dir: Path = args.checkpoint_dir
        self.steps: int = args.steps
        self.step_seconds: float = args.step_seconds
        self.log_every: int = args.log_every
        self.checkpoint_every: int = args.checkpoint_every
        self.config = {"seed": args.seed, "dim": DIM, "samples": SAMPLES, "batch": BATCH, "lr": LEARNING_RATE}
        self.xs, self.ys = make_data(args.seed)
        self.rng = random.Random(args.seed + 1)  # noqa: S311 -- the minibatch order, checkpointed
        self.w = [0.0] * DIM
        self.b = 0.0
        self.step = 0
        self.log_path = self.dir / "steps.log"
        self.saved_step = -1  # the step of the latest checkpoint on disk
        self.reported_step = -1  # the step of the latest progress report

    def resume(self) -> None:
        """Restore the latest checkpoint and cut steps.log back to the steps it includes."""
        ckpt = load_latest(self.dir)
        log_bytes = 0
        if ckpt is not None:
            if ckpt["config"] != self.config:
                print(
                    f"error: checkpoint step {ckpt['step']} is of another configuration "
                    f"({ckpt['config']}, this run {self.config})",
                    file=sys.stderr,
                )
                raise SystemExit(EXIT_USAGE)
            if ckpt["step"] > self.steps:
                print(f"error: checkpoint step {ckpt['step']} is past --steps {self.steps}", file=sys.stderr)
                raise SystemExit(EXIT_USAGE)
            self.step = self.saved_step = ckpt["step"]
            self.w = [float(v) for v in ckpt["weights"]]
            self.b = float(ckpt["bias"])
            self.rng.setstate(rng_state_from_json(ckpt["rng"]))
            log_bytes = ckpt["log_bytes"]
            print(f"resuming from checkpoint step {self.step}", flush=True)
        else:
            print("starting from step 0 (no checkpoint)", flush=True)
        # Lines past the checkpoint are of steps whose effect was lost: they will be done, and logged, again.
        with self.log_path.open("ab") as log:
            size = log.tell()
            if size < log_bytes:
                print(f"error: steps.log has {size} bytes, checkpoint says {log_bytes}", file=sys.stderr)
                raise SystemExit(EXIT_ERROR)
            if size > log_bytes:
                log.truncate(log_bytes)
                os.fsync(log.fileno())
                print(f"steps.log cut back from {size} to {log_bytes} bytes", flush=True)

    def save(self, log_bytes: int) -> None:
        if self.saved_step == self.step:
            return
        payload = {
            "format": FORMAT,
            "step": self.step,
            "steps": self.steps,
            "config": self.config,
            "weights": self.w,
            "bias": self.b,
            "rng": rng_state_to_json(self.rng.getstate()),
            "log_bytes": log_bytes,
            "loss": mse(self.w, self.b, self.xs, self.ys),
        }
        write_atomically(checkpoint_path(self.dir, self.step), seal(payload))
        self.saved_step = self.step
        for _, old in checkpoints(self.dir)[KEEP_CHECKPOINTS:]:
            with contextlib.suppress(OSError):
                old.unlink()
        print(f"checkpoint step={self.step}", flush=True)

    def progress(self) -> None:
        if self.reported_step == self.step:
            return
        self.reported_step = self.step
        loss = mse(self.w, self.b, self.xs, self.ys)
        fraction = self.step / self.steps
        print(f"progress step={self.step} steps={self.steps} fraction={fraction:.4f} loss={loss:.6g}", flush=True)
        doc = {"step": self.step, "steps": self.steps, "fraction": fraction, "loss": loss}
        write_atomically(self.dir / "progress.json", json.dumps(doc) + "\n", durable=False)

    def run(self, stop: Stop) -> int:
        with self.log_path.open("ab") as log:
            while self.step < self.steps and stop.signum is None:
                self.b = sgd_step(self.w, self.b, self.xs, self.ys, self.rng)
                if self.step_seconds:
                    time.sleep(self.step_seconds)  # the "work"; a signal does not cut it short (PEP 475)
                self.step += 1
                log.write(f"step {self.step}\n".encode())
                log.flush()
                if self.step % self.log_every == 0:
                    self.progress()
                if self.step % self.checkpoint_every == 0 and self.step < self.steps:
                    self.checkpoint(log)
            self.checkpoint(log)
        if self.step < self.steps:
            assert stop.signum is not None
            code = EXIT_SIGTERM if stop.signum == signal.SIGTERM else EXIT_SIGINT
            name = signal.Signals(stop.signum).name
            print(f"received {name}: stopped at step {self.step} of {self.steps}; exiting {code}", flush=True)
            return code
        self.finish()
        return EXIT_DONE

    def checkpoint(self, log: BinaryIO) -> None:
        # steps.log first: the checkpoint must never count a line that a crash could still lose.
        os.fsync(log.fileno())
        self.save(log.tell())
        self.progress()

    def finish(self) -> None:
        loss = mse(self.w, self.b, self.xs, self.ys)
        done = {"format": FORMAT, "steps": self.steps, "loss": loss, "weights": self.w, "bias": self.b}
        write_atomically(self.dir / "DONE", seal(done))
        print(f"done: {self.steps} steps, loss={loss:.6g}", flush=True)


def already_done(directory: Path) -> dict[str, Any] | None:
    path = directory / "DONE"
    try:
        return unseal(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, CheckpointError) as e:
        print(f"warning: ignoring DONE: {e}", file=sys.stderr, flush=True)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop = Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    done = already_done(args.checkpoint_dir)
    if done is not None:
        print(f"already done ({done['steps']} steps, loss={done['loss']:.6g}): nothing to do", flush=True)
        return EXIT_DONE
    for stale in args.checkpoint_dir.glob(".*.tmp"):  # a write a crash interrupted
        with contextlib.suppress(OSError):
            stale.unlink()
    trainer = Trainer(args)
    trainer.resume()
    return trainer.run(stop)


if __name__ == "__main__":
    sys.exit(main())
