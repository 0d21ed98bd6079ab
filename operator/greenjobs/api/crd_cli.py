"""`greenjobs crd`: print the CRD, or write it to a file."""

import argparse
import sys
from pathlib import Path

from .crd import render_crd


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    text = render_crd()
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0
