"""Kubernetes Events about GreenTrainingJobs, posted from the reconcile workers (core/v1 Events)."""

import logging
import os
import uuid
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from greenjobs.metrics import OperatorMetrics
from greenjobs.planning.decisions import Event

log = logging.getLogger(__name__)

COMPONENT = "greenjobs-operator"


class EventRecorder:
    def __init__(self, api: client.ApiClient, metrics: OperatorMetrics) -> None:
        self._core = client.CoreV1Api(api)
        self._metrics = metrics
        self._host = os.environ.get("POD_NAME") or os.uname().nodename

    def __call__(self, ref: dict[str, Any], event: Event) -> None:
        meta = ref["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": ref["apiVersion"],
                "kind": ref["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "source": {"component": COMPONENT, "host": self._host},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._host,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._metrics.api_writes.labels("event").inc()
        try:
            self._core.create_namespaced_event(meta["namespace"], body)
        except ApiException as exc:  # an Event is news, not state: never fail a decision over it
            log.warning("could not post Event %s for %s: %s %s", event.reason, meta["name"], exc.status, exc.reason)
