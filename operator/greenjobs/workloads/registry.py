"""One adapter per supported kind, looked up by apiVersion and kind."""

from .base import WorkloadAdapter
from .batch import BatchJobAdapter
from .jobset import JobSetAdapter
from .pytorchjob import PyTorchJobAdapter
from .rayjob import RayJobAdapter
from .trainjob import TrainJobAdapter

ADAPTERS: tuple[WorkloadAdapter, ...] = (
    BatchJobAdapter(),
    JobSetAdapter(),
    TrainJobAdapter(),
    PyTorchJobAdapter(),
    RayJobAdapter(),
)
_BY_KEY = {(a.api_version, a.kind): a for a in ADAPTERS}
SUPPORTED: tuple[tuple[str, str], ...] = tuple(_BY_KEY)


class UnsupportedWorkload(ValueError):
    def __init__(self, api_version: str, kind: str) -> None:
        kinds = ", ".join(f"{k} ({v})" for v, k in SUPPORTED)
        super().__init__(f"unsupported workload {kind} ({api_version}); supported: {kinds}")


def adapter_for(api_version: str, kind: str) -> WorkloadAdapter:
    try:
        return _BY_KEY[(api_version, kind)]
    except KeyError:
        raise UnsupportedWorkload(api_version, kind) from None
