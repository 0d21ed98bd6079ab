"""Leader election through a coordination.k8s.io Lease, with client-go's semantics.

Every replica watches and keeps its cache warm; only the holder of the Lease acts. As client-go's
leaderelection does it:

- Expiry is judged on the LOCAL clock, never on the holder's renewTime: a replica remembers the Lease
  record it last saw and when it saw it change (observedTime). Another holder's Lease is free only once
  its record has not changed for leaseDuration as measured here, so clock skew between nodes cannot
  make a standby take over early.
- The holder tries to renew every retryPeriod; when no renewal succeeded for renewDeadline (less than
  leaseDuration) it steps down at once, so it has stopped acting before any standby may take over.
- `leading` is re-checked before every write (controller/kube.py and kueue/controller.py fence them):
  work in flight when the lease is lost is refused at its next write, not carried out by a replica
  that no longer leads.
- A replica that stops cleanly gives the Lease up (holder cleared, duration 1 s): a standby takes over
  within one retry period.

Writes of the Lease are conditional on its resourceVersion, so two replicas can never both win.
"""

import argparse
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from greenjobs.api.durations import parse_time

log = logging.getLogger(__name__)

_MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"


def _micro(t: datetime) -> str:
    return t.strftime(_MICRO)


class LeaseApi:
    """The three Lease calls the elector makes (CoordinationV1Api), a seam for tests."""

    def __init__(self, api: Any) -> None:
        self._api = client.CoordinationV1Api(api)

    def read(self, namespace: str, name: str) -> Any:
        return self._api.read_namespaced_lease(name, namespace)

    def create(self, namespace: str, body: dict[str, Any]) -> Any:
        return self._api.create_namespaced_lease(namespace, body)

    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> Any:
        return self._api.replace_namespaced_lease(name, namespace, body)


@dataclass(frozen=True)
class Record:
    """What identifies one version of the Lease's record (client-go's LeaderElectionRecord, plus the
    resourceVersion: any write of the Lease is a sign of life)."""

    version: str
    holder: str
    duration_s: int
    acquire: str
    renew: str
    transitions: int


def _record(lease: Any) -> Record:
    spec = lease.spec
    return Record(
        str(getattr(lease.metadata, "resource_version", "") or ""),
        spec.holder_identity or "",
        int(spec.lease_duration_seconds or 0),
        str(spec.acquire_time or ""),
        str(spec.renew_time or ""),
        int(spec.lease_transitions or 0),
    )


class LeaderElector:
    def __init__(
        self,
        api: Any,
        namespace: str,
        name: str,
        identity: str,
        duration: timedelta,
        clock: Callable[[], datetime],
        on_change: Callable[[bool], None],
        *,
        renew_deadline: timedelta | None = None,
        retry_period: timedelta | None = None,
        monotonic: Callable[[], float] | None = None,
        leases: Any = None,
    ) -> None:
        self._leases = leases if leases is not None else LeaseApi(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration = duration
        # client-go's defaults are 15 s / 10 s / 2 s: renewDeadline two thirds of the duration.
        self.renew_deadline = renew_deadline or duration * 2 / 3
        self.retry_period = retry_period or min(duration / 7.5, self.renew_deadline / 2)
        if not self.retry_period < self.renew_deadline < self.duration:
            raise ValueError("leader election needs retryPeriod < renewDeadline < leaseDuration")
        self._clock = clock  # wall time: only written into the Lease for humans to read
        self._mono = monotonic or time.monotonic  # what expiry and deadlines are measured on
        self._on_change = on_change
        self._leading = False
        self._renewed_at: float | None = None  # monotonic time of our last successful acquire/renew
        self._observed: Record | None = None
        self._observed_at = 0.0  # monotonic time the observed record last changed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    @property
    def leading(self) -> bool:
        """Whether this replica may act now: it holds the Lease and renewed it within renewDeadline."""
        with self._lock:
            return self._leading and self._renewed_at is not None and self._fresh()

    def _fresh(self) -> bool:
        return self._renewed_at is not None and self._mono() - self._renewed_at < self.renew_deadline.total_seconds()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._leading:
            self._set(False)
            self._release()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self.retry_period.total_seconds())

    def step(self) -> bool:
        """One try to acquire or renew; steps down when renewing failed for renewDeadline."""
        try:
            ok = self.try_acquire_or_renew()
        except Exception as exc:  # an unreachable API server is a failed try, nothing more
            log.warning("leader election: %s", exc)
            ok = False
        with self._lock:
            if ok:
                self._renewed_at = self._mono()
            leading = ok or (self._leading and self._fresh())
        self._set(leading)
        return leading

    def _set(self, leading: bool) -> None:
        with self._lock:
            changed = leading != self._leading
            self._leading = leading
            if not leading:
                self._renewed_at = None
        if changed:
            log.info("%s the lease %s/%s", "acquired" if leading else "lost", self.namespace, self.name)
            self._on_change(leading)

    def try_acquire_or_renew(self) -> bool:
        now, mono = self._clock(), self._mono()
        try:
            lease = self._leases.read(self.namespace, self.name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, acquired=now, transitions=0),
            }
            try:
                created = self._leases.create(self.namespace, body)
            except ApiException as exc2:
                if exc2.status == 409:
                    return False
                raise
            self._observe(created, mono)
            return True
        record = _record(lease)
        if record != self._observed:
            # The record changed since we last looked: its age is measured from now, on our clock.
            self._observed, self._observed_at = record, mono
        duration = record.duration_s or self.duration.total_seconds()
        mine = record.holder == self.identity
        if record.holder and not mine and mono - self._observed_at < duration:
            return False  # held by another, and not expired as we have watched it
        transitions = record.transitions + (0 if mine else 1)
        acquired = _aware(lease.spec.acquire_time) if mine and lease.spec.acquire_time else now
        body = {
            "metadata": {"name": self.name, "resourceVersion": lease.metadata.resource_version},
            "spec": self._spec(now, acquired=acquired, transitions=transitions),
        }
        try:
            written = self._leases.replace(self.namespace, self.name, body)
        except ApiException as exc:
            if exc.status == 409:  # another replica renewed or took it first
                return False
            raise
        self._observe(written, mono)
        return True

    def _observe(self, lease: Any, mono: float) -> None:
        if getattr(lease, "spec", None) is not None:
            self._observed, self._observed_at = _record(lease), mono

    def _spec(self, now: datetime, *, acquired: datetime, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration.total_seconds()),
            "acquireTime": _micro(acquired),
            "renewTime": _micro(now),
            "leaseTransitions": transitions,
        }

    def _release(self) -> None:
        try:
            lease = self._leases.read(self.namespace, self.name)
            if lease.spec.holder_identity != self.identity:
                return
            now = _micro(self._clock())
            body = {
                "metadata": {"name": self.name, "resourceVersion": lease.metadata.resource_version},
                "spec": {
                    "holderIdentity": None,
                    "leaseDurationSeconds": 1,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": lease.spec.lease_transitions,
                },
            }
            self._leases.replace(self.namespace, self.name, body)
            log.info("released the lease %s/%s", self.namespace, self.name)
        except ApiException as exc:
            log.warning("could not release the lease: %s %s", exc.status, exc.reason)


def _aware(t: Any) -> datetime:
    if isinstance(t, datetime):
        return t
    return parse_time(str(t))


# ---------------------------------------------------------------- command line (operator, Kueue check)


def add_lease_arguments(parser: argparse.ArgumentParser, who: str, *aliases: str) -> None:
    """The leader-election flags both controllers take (environment variables as their defaults)."""
    parser.add_argument(
        "--leader-elect",
        *aliases,
        dest="lease",
        default=os.environ.get("GREENJOBS_LEASE"),
        metavar="LEASE",
        help=f"replicas elect one active {who} through this coordination.k8s.io Lease (in --lease-namespace)",
    )
    parser.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the Lease (default: $POD_NAMESPACE, else default)",
    )
    for flag, env, text in (
        ("--lease-duration", "GREENJOBS_LEASE_DURATION", "seconds a Lease lives without renewal (default 15)"),
        (
            "--lease-renew-deadline",
            "GREENJOBS_LEASE_RENEW_DEADLINE",
            "seconds the leader tries to renew before it stops acting (less than the duration; default 2/3 of it)",
        ),
        (
            "--lease-retry-period",
            "GREENJOBS_LEASE_RETRY_PERIOD",
            "seconds between tries to acquire or renew the Lease (default 2 for a 15 s Lease)",
        ),
    ):
        value = os.environ.get(env)
        parser.add_argument(flag, type=float, default=float(value) if value else None, help=text)


def identity() -> str:
    """This replica's name in the Lease: the pod's name, else host and process."""
    return os.environ.get("POD_NAME") or f"{os.uname().nodename}-{os.getpid()}"


def elector_from_args(
    api: Any,
    args: argparse.Namespace,
    clock: Callable[[], datetime],
    active: threading.Event,
    default_duration: timedelta = timedelta(seconds=15),
) -> "LeaderElector | None":
    """The elector the flags ask for (None without --leader-elect: then `active` is set for good).
    `active` is set while this replica leads and cleared when it stops leading."""
    if not args.lease:
        active.set()
        return None

    def toggle(on: bool) -> None:
        if on:
            active.set()
        else:
            active.clear()

    def seconds(value: float | None) -> timedelta | None:
        return timedelta(seconds=value) if value else None

    return LeaderElector(
        api, args.lease_namespace, args.lease, identity(), seconds(args.lease_duration) or default_duration, clock,
        toggle, renew_deadline=seconds(args.lease_renew_deadline), retry_period=seconds(args.lease_retry_period),
    )  # fmt: skip
