"""Shared helpers of the carbon benchmarks: where the traces are, where results go, plain tables."""

import os
from collections.abc import Sequence
from pathlib import Path

from greenjobs.carbon.series import IntensitySeries

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# The full 2020 traces (Wiesner et al., Middleware 2021) are not in the repository: looked up in
# $GREENJOBS_TRACE_DIR, then shared/ in the checkout, then beside it.
TRACE_DIRS = [
    *([Path(os.environ["GREENJOBS_TRACE_DIR"])] if "GREENJOBS_TRACE_DIR" in os.environ else []),
    ROOT / "shared" / "data" / "carbon-intensity",
    ROOT.parent / "shared" / "data" / "carbon-intensity",
]
CITATION = (
    "Carbon-intensity data: Wiesner, Behnke, Scheinert, Gontarska, Thamsen, "
    '"Let\'s Wait Awhile", Middleware 2021 (doi 10.1145/3464298.3493399).'
)


def trace_dir(explicit: Path | None = None) -> Path:
    for d in [explicit] if explicit else TRACE_DIRS:
        if d is not None and (d / "gb_2020.csv").exists():
            return d
    tried = ", ".join(str(d) for d in ([explicit] if explicit else TRACE_DIRS))
    raise SystemExit(f"no gb_2020.csv in {tried}: pass --data-dir or set GREENJOBS_TRACE_DIR")


def load_trace(zone: str, data_dir: Path) -> IntensitySeries:
    """`zone` is GB or FR; the file is <zone>_2020.csv."""
    return IntensitySeries.from_csv((data_dir / f"{zone.lower()}_2020.csv").read_text(encoding="utf-8"))


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (readable in a terminal too), numbers right-aligned."""
    cells = [[str(h) for h in header], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            + " |"
        )

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *[line(r) for r in cells[1:]]])


def _fmt(c: object) -> str:
    if isinstance(c, float):
        return f"{c:.1f}" if abs(c) >= 10 else f"{c:.2f}"
    return str(c)


def kwok_node(name: str, gpus: int, labels: dict[str, str]) -> dict[str, object]:
    """A fake GPU node that kwok keeps Ready, like e2e/cluster.sh's, with extra `labels`."""
    capacity = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": name, "type": "kwok", **labels},
        },
        "status": {"capacity": capacity, "allocatable": capacity},
    }
