"""What the agent knows about pods and GreenTrainingJobs on its node (filled by kube.py or a test)."""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, order=True)
class PodKey:
    namespace: str
    name: str


@dataclass(frozen=True, order=True)
class JobRef:
    """A GreenTrainingJob by namespace and name: what API paths and watches address."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, order=True)
class JobKey:
    """One GreenTrainingJob object: namespace, name AND uid. Energy is keyed by it, so a deleted and
    re-applied GTJ of the same name is another job and starts from zero. An empty uid (tests, tools)
    means "whatever object has that name" and sends no UID precondition."""

    namespace: str
    name: str
    uid: str = ""

    @property
    def ref(self) -> JobRef:
        return JobRef(self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}/{self.uid}" if self.uid else f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> "JobKey":
        namespace, _, rest = text.partition("/")
        name, _, uid = rest.partition("/")
        return cls(namespace, name, uid)


@dataclass(frozen=True)
class NodeSeed:
    """This node's entry in a GTJ's status, as last seen: where a new count for that job resumes."""

    joules: float
    gpu_seconds: float


@dataclass(frozen=True)
class JobInfo:
    """What the agent needs of one GreenTrainingJob: its identity, cap and this node's entry."""

    uid: str
    target_cap_watts: int | None
    seed: NodeSeed | None = None
    created: str = ""  # metadata.creationTimestamp (RFC 3339, UTC: compares as text)


@dataclass(frozen=True)
class PodInfo:
    key: PodKey
    phase: str
    job: str | None  # value of the greenjobs.dev/job label
    gpu_limit: int  # sum of nvidia.com/gpu limits over its containers
    job_uid: str | None = None  # value of the greenjobs.dev/job-uid label (set by the operator)
    uid: str = ""  # the pod's own metadata.uid (its cgroup path names it)
    created: str = ""  # metadata.creationTimestamp (RFC 3339, UTC: compares as text)
    started: str = ""  # status.startTime: from when it holds its GPUs (RFC 3339)
    ended: str = ""  # a finished pod's last container end (terminated.finishedAt, RFC 3339)

    @property
    def running(self) -> bool:
        return self.phase == "Running"

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def job_ref(self) -> JobRef | None:
        return JobRef(self.key.namespace, self.job) if self.job else None

    def job_key(self, jobs: Mapping[JobRef, JobInfo | None]) -> JobKey | None:
        """The GTJ this pod belongs to: by its job-uid label, else (older pods) the uid of the GTJ
        of that name if it is known. None for a pod that is no greenjobs pod, or not resolvable yet."""
        if not self.job:
            return None
        if self.job_uid:
            return JobKey(self.key.namespace, self.job, self.job_uid)
        info = jobs.get(JobRef(self.key.namespace, self.job))
        if info is None or self.predates(info):
            return None
        return JobKey(self.key.namespace, self.job, info.uid)

    def predates(self, info: JobInfo) -> bool:
        """Created before that GTJ object: a pod of an earlier object of the same name."""
        return bool(self.created and info.created and self.created < info.created)


class ClusterView(Protocol):
    def synced(self) -> bool:
        """True once the first list of this node's pods has been read."""
        ...

    def pods(self) -> list[PodInfo]: ...

    def track(self, refs: Collection[JobRef]) -> None:
        """Watch exactly these GreenTrainingJobs from now on (those of this node's pods and counts)."""
        ...

    def jobs(self) -> dict[JobRef, JobInfo | None]:
        """Each tracked GTJ whose first list is in: its JobInfo, or None when no such object exists.
        Tracked GTJs not listed yet are absent."""
        ...


@dataclass
class StaticView:
    """A fixed view for tests and the benchmark."""

    pod_list: list[PodInfo]
    infos: dict[JobRef, JobInfo | None]
    is_synced: bool = True
    tracked: set[JobRef] = field(default_factory=set)

    def synced(self) -> bool:
        return self.is_synced

    def pods(self) -> list[PodInfo]:
        return list(self.pod_list)

    def track(self, refs: Collection[JobRef]) -> None:
        self.tracked = set(refs)

    def jobs(self) -> dict[JobRef, JobInfo | None]:
        # A GTJ that the view does not hold does not exist (an absent entry would mean "not listed yet").
        return {r: self.infos.get(r) for r in self.tracked | set(self.infos)}
