"""The `greenjobs` console entry point (greenjobs/cli.py)."""

import sys

import pytest

from greenjobs.cli import main


def test_main_leaves_the_processs_own_argv_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["pytest", "-q", "tests"])
    assert main(["crd"]) == 0
    assert "kind: CustomResourceDefinition" in capsys.readouterr().out
    assert sys.argv == ["pytest", "-q", "tests"]  # a caller's (or a test runner's) arguments stay theirs
