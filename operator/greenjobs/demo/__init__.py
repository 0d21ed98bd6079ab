"""The end-to-end demo (`make demo`, `python -m greenjobs.demo`, `greenjobs demo`).

It brings up the local control plane (e2e/cluster.sh), runs the operator with the replay provider on
the shipped March 2020 GB and FR traces, one simulated node agent per fake GPU node, applies the sample
GreenTrainingJobs of examples/, follows them to the end, then prints a summary and draws its picture
into a run folder (runs/demo-<UTC time>/, git-ignored, with the recording and the logs; printed at the
end). docs/img/demo.png changes only when asked (--plot docs/img/demo.png, `make demo
DEMO_IMG=docs/img/demo.png`). Everything it started is stopped at the end and on Ctrl-C.

Needs a checkout of the repository (it uses e2e/, crds/ and examples/), not just the installed package.
"""

from .run import add_arguments, main, run

__all__ = ["add_arguments", "main", "run"]
