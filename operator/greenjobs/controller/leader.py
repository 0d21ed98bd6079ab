"""Leader election through a coordination.k8s.io Lease, as controller-runtime does it.

Every replica watches and keeps its cache warm; only the holder of the Lease acts. The holder renews it
every third of its duration; a replica takes it over when it has not been renewed for a whole duration,
and a replica that stops cleanly gives it up at once so that a standby takes over within one retry.
Writes are conditional on the Lease's resourceVersion, so two replicas can never both win.
"""

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from greenjobs.api.durations import parse_time

log = logging.getLogger(__name__)

_MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"


def _micro(t: datetime) -> str:
    return t.strftime(_MICRO)


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        duration: timedelta,
        clock: Callable[[], datetime],
        on_change: Callable[[bool], None],
    ) -> None:
        self._api = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration = duration
        self._clock = clock
        self._on_change = on_change
        self._leading = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    @property
    def leading(self) -> bool:
        return self._leading

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._leading:
            self._release()

    def _run(self) -> None:
        retry = self.duration.total_seconds() / 3
        while not self._stop.is_set():
            try:
                leading = self._try()
            except ApiException as exc:
                log.warning("leader election: %s %s", exc.status, exc.reason)
                leading = self._leading and not self._expired_for_me()
            except Exception as exc:
                log.warning("leader election: %s", exc)
                leading = False
            self._set(leading)
            self._stop.wait(retry)

    def _set(self, leading: bool) -> None:
        if leading != self._leading:
            self._leading = leading
            log.info("%s the lease %s/%s", "acquired" if leading else "lost", self.namespace, self.name)
            self._on_change(leading)
            if leading:
                self._renewed = self._clock()
        elif leading:
            self._renewed = self._clock()

    def _expired_for_me(self) -> bool:
        renewed = getattr(self, "_renewed", None)
        return renewed is None or self._clock() - renewed >= self.duration

    def _try(self) -> bool:
        now = self._clock()
        try:
            lease: Any = self._api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, acquired=now, transitions=0),
            }
            try:
                self._api.create_namespaced_lease(self.namespace, body)
            except ApiException as exc2:
                if exc2.status == 409:
                    return False
                raise
            return True
        spec = lease.spec
        holder = spec.holder_identity
        renewed = spec.renew_time or spec.acquire_time
        duration = timedelta(seconds=spec.lease_duration_seconds or self.duration.total_seconds())
        free = not holder or renewed is None or now - _aware(renewed) >= duration
        if holder != self.identity and not free:
            return False
        transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
        acquired = _aware(spec.acquire_time) if holder == self.identity and spec.acquire_time else now
        body = {
            "metadata": {"name": self.name, "resourceVersion": lease.metadata.resource_version},
            "spec": self._spec(now, acquired=acquired, transitions=transitions),
        }
        try:
            self._api.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # another replica renewed or took it first
                return False
            raise
        return True

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
            lease: Any = self._api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity != self.identity:
                return
            body = {
                "metadata": {"name": self.name, "resourceVersion": lease.metadata.resource_version},
                "spec": {
                    "holderIdentity": None,
                    "leaseDurationSeconds": 1,
                    "leaseTransitions": lease.spec.lease_transitions,
                },
            }
            self._api.replace_namespaced_lease(self.name, self.namespace, body)
            log.info("released the lease %s/%s", self.namespace, self.name)
        except ApiException as exc:
            log.warning("could not release the lease: %s %s", exc.status, exc.reason)


def _aware(t: Any) -> datetime:
    if isinstance(t, datetime):
        return t
    return parse_time(str(t))
