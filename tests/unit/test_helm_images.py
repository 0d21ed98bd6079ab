"""The chart's image references: by tag (default) or pinned by digest (image.digests, as `make push`
writes them into build/images/values-images.yaml). Rendered by the real `helm` binary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_helm_chart import CHART, HELM, RELEASE, _helm, needs_helm

pytestmark = needs_helm

OPERATOR = "sha256:" + "a" * 64
AGENT = "sha256:" + "b" * 64


def _images(tmp_path: Path, values: dict[str, Any]) -> dict[str, str]:
    out = _helm("template", RELEASE, str(CHART), values=values, tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    return {
        d["metadata"]["name"].removeprefix(f"{RELEASE}-greenjobs-"): d["spec"]["template"]["spec"]["containers"][0][
            "image"
        ]
        for d in yaml.safe_load_all(out.stdout)
        if d and d["kind"] in ("Deployment", "DaemonSet")
    }


def test_by_tag_by_default(tmp_path: Path) -> None:
    app = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert _images(tmp_path, {"kueue": {"enabled": True}}) == {
        "operator": f"ghcr.io/greenjobs/greenjobs-operator:{app}",
        "kueue-check": f"ghcr.io/greenjobs/greenjobs-operator:{app}",
        "agent": f"ghcr.io/greenjobs/greenjobs-agent:{app}",
    }
    assert _images(tmp_path, {"image": {"repo": "r.example/x", "tag": "1.2.3"}})["agent"] == (
        "r.example/x/greenjobs-agent:1.2.3"
    )


def test_digests_pin_each_image(tmp_path: Path) -> None:
    values = {
        "image": {"repo": "127.0.0.1:5000/greenjobs", "tag": "0.1.0", "digests": {"operator": OPERATOR}},
        "kueue": {"enabled": True},
    }
    assert _images(tmp_path, values) == {
        "operator": f"127.0.0.1:5000/greenjobs/greenjobs-operator@{OPERATOR}",
        "kueue-check": f"127.0.0.1:5000/greenjobs/greenjobs-operator@{OPERATOR}",
        "agent": "127.0.0.1:5000/greenjobs/greenjobs-agent:0.1.0",  # no digest: by tag
    }
    values["image"]["digests"] = {"operator": OPERATOR, "agent": AGENT}  # type: ignore[index]
    assert _images(tmp_path, values)["agent"] == f"127.0.0.1:5000/greenjobs/greenjobs-agent@{AGENT}"


@pytest.mark.parametrize(
    "digests",
    [{"operator": "sha256:abc"}, {"operator": "latest"}, {"operator": "md5:" + "a" * 32}, {"agnet": AGENT}],
)
def test_schema_refuses_bad_digests(tmp_path: Path, digests: dict[str, str]) -> None:
    assert HELM is not None
    out = _helm("template", RELEASE, str(CHART), values={"image": {"repo": "r", "digests": digests}}, tmp=tmp_path)
    assert out.returncode != 0 and "digests" in out.stderr, out.stderr
