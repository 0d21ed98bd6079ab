"""Which pod a GPU process belongs to, from its cgroup path (for splitting a shared GPU's energy).

NVML reports processes by host PID. The kubelet puts each container in a cgroup whose path names the
pod's UID ("pod<uid>" with cgroupfs, "pod<uid with _>.slice" with systemd). That is readable only
where the agent sees the host's /proc (hostPID, or the host's /proc mounted at GREENJOBS_PROC_ROOT);
elsewhere no PID resolves and shared GPUs fall back to equal shares.
"""

import re
from pathlib import Path

_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")


def pod_uid_of_cgroup(text: str) -> str | None:
    m = _POD_UID.search(text)
    return m.group(1).replace("_", "-") if m else None


class PidResolver:
    def __init__(self, proc_root: Path = Path("/proc")) -> None:
        self._root = proc_root

    def pod_uid(self, pid: int) -> str | None:
        try:
            return pod_uid_of_cgroup((self._root / str(pid) / "cgroup").read_text())
        except OSError:
            return None

    def by_pod(self, utilisation: dict[int, float]) -> dict[str, float]:
        """pid -> SM % into pod uid -> SM %; processes of no pod are kept under "" (they count in the
        GPU's total but are nobody's share)."""
        out: dict[str, float] = {}
        for pid, util in utilisation.items():
            uid = self.pod_uid(pid) or ""
            out[uid] = out.get(uid, 0.0) + util
        return out
