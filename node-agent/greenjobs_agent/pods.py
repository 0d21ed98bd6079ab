"""What the agent knows about pods and GreenTrainingJobs on its node (filled by kube.py or a test)."""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, order=True)
class PodKey:
    namespace: str
    name: str


@dataclass(frozen=True, order=True)
class JobKey:
    """A GreenTrainingJob, by namespace and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> "JobKey":
        namespace, _, name = text.partition("/")
        return cls(namespace, name)


@dataclass(frozen=True)
class PodInfo:
    key: PodKey
    phase: str
    job: str | None  # value of the greenjobs.dev/job label
    gpu_limit: int  # sum of nvidia.com/gpu limits over its containers

    @property
    def running(self) -> bool:
        return self.phase == "Running"

    @property
    def job_key(self) -> JobKey | None:
        return JobKey(self.key.namespace, self.job) if self.job else None


class ClusterView(Protocol):
    def synced(self) -> bool:
        """True once the first list of pods and GreenTrainingJobs has been read."""
        ...

    def pods(self) -> list[PodInfo]: ...

    def target_caps(self) -> dict[JobKey, int | None]:
        """status.power.targetCapWatts of every known GreenTrainingJob (None: no cap)."""
        ...


@dataclass
class StaticView:
    """A fixed view for tests and the benchmark."""

    pod_list: list[PodInfo]
    caps: dict[JobKey, int | None]
    is_synced: bool = True

    def synced(self) -> bool:
        return self.is_synced

    def pods(self) -> list[PodInfo]:
        return list(self.pod_list)

    def target_caps(self) -> dict[JobKey, int | None]:
        return dict(self.caps)
