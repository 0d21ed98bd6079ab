"""Workload adapters: one small adapter per suspendable kind behind one interface (base.WorkloadAdapter).

Usage::

    adapter = adapter_for("jobset.x-k8s.io/v1alpha2", "JobSet")
    obj = adapter.build(template, name=..., namespace=..., owner_uid=..., labels=..., suspended=True)
    for patch in adapter.start_patches(obj, {"greenjobs.dev/grid-zone": "FR"}): merge-patch it
"""

from .base import QUEUE_LABEL, Obj, Outcome, WorkloadAdapter, owned_by
from .registry import ADAPTERS, SUPPORTED, UnsupportedWorkload, adapter_for

__all__ = [
    "ADAPTERS",
    "QUEUE_LABEL",
    "SUPPORTED",
    "Obj",
    "Outcome",
    "UnsupportedWorkload",
    "WorkloadAdapter",
    "adapter_for",
    "owned_by",
]
