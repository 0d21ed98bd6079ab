"""The `greenjobs` command: operator, agent, plan, crd, report, demo."""

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# subcommand -> (module, help). Each module has `add_arguments(parser)` and `run(args) -> int`;
# imported lazily so `greenjobs plan` never pays for kopf or the Kubernetes client.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "operator": ("greenjobs.controller.main", "run the kopf operator"),
    "agent": ("greenjobs_agent.main", "run a node agent (one per GPU node)"),
    "kueue-check": ("greenjobs.kueue.main", "run the carbon AdmissionCheck controller for Kueue"),
    "plan": ("greenjobs.planning.cli", "what-if planning: when and where would a job run"),
    "crd": ("greenjobs.api.crd_cli", "print or write the CustomResourceDefinition"),
    "report": ("greenjobs.report", "a job's footprint card, picture, CodeCarbon rows and MLflow logging"),
    "demo": ("greenjobs.demo", "the end-to-end demo on a local control plane (needs a repository checkout)"),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="greenjobs", description=__doc__)
    subs = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub = subs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module)
        mod = importlib.import_module(module) if _wants(name, sys.argv[1:] if argv is None else argv) else None
        if mod is not None:
            mod.add_arguments(sub)
    return parser


def _wants(name: str, argv: Sequence[str]) -> bool:
    # Only the chosen subcommand's module is imported (and `-h` of the top level imports none).
    return len(argv) > 0 and argv[0] == name


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; `argv` without the program name (default: the process's own arguments).
    The process's sys.argv is left as it is."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(args_list).parse_args(args_list)
    run: Callable[[argparse.Namespace], int] = importlib.import_module(args._module).run
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
