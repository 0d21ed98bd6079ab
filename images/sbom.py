"""Write a CycloneDX 1.5 SBOM (JSON) of an image root filesystem: every Debian package recorded in its
dpkg status file and every Python distribution installed in its venv, each with version and purl.

    python3 images/sbom.py --rootfs DIR --venv-site opt/venv/lib/python3.11/site-packages \
        --name greenjobs-operator --version 0.1.0 --digest sha256:... --epoch 1700000000 -o out.cdx.json

Nothing here needs a tool that may be missing: the dpkg status file is read directly (what
`dpkg-query -W` prints) and Python metadata through importlib.metadata (what `pip list` prints).
The output is deterministic: sorted components, the timestamp from --epoch (SOURCE_DATE_EPOCH) and a
serial number derived from the image digest. Scanners read it as is: `trivy sbom FILE`, `grype sbom:FILE`.
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

DEBIAN_DISTRO = "debian-12"


def dpkg_packages(rootfs: Path) -> Iterator[dict[str, str]]:
    """Installed packages from var/lib/dpkg/status (stanzas whose Status ends in `installed`)."""
    text = (rootfs / "var/lib/dpkg/status").read_text(encoding="utf-8")
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t"):
                continue  # continuation lines (descriptions, conffiles)
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed"):
            yield fields


def deb_component(fields: dict[str, str]) -> dict[str, Any]:
    name, version, arch = fields["Package"], fields["Version"], fields.get("Architecture", "all")
    purl = f"pkg:deb/debian/{name}@{quote(version, safe='.+~-')}?arch={arch}&distro={DEBIAN_DISTRO}"
    source = fields.get("Source", "").split(" ")[0]
    comp: dict[str, Any] = {
        "type": "library" if name.startswith("lib") else "application",
        "bom-ref": purl,
        "name": name,
        "version": version,
        "purl": purl,
        "properties": [{"name": "debian:architecture", "value": arch}],
    }
    if source and source != name:
        comp["properties"].append({"name": "debian:source", "value": source})
    return comp


def python_components(site: Path) -> Iterator[dict[str, Any]]:
    for dist in metadata.distributions(path=[str(site)]):
        name, version = dist.metadata["Name"], dist.version
        norm = name.lower().replace("_", "-").replace(".", "-")
        purl = f"pkg:pypi/{norm}@{version}"
        comp: dict[str, Any] = {"type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl}
        expression = dist.metadata["License-Expression"] or ""
        lic = expression or dist.metadata["License"] or ""
        if lic and "\n" not in lic and len(lic) <= 80:
            comp["licenses"] = [{"expression": lic}] if expression else [{"license": {"name": lic}}]
        yield comp


def sbom(rootfs: Path, site: Path, name: str, version: str, digest: str, epoch: int) -> dict[str, Any]:
    components = sorted(
        [*map(deb_component, dpkg_packages(rootfs)), *python_components(rootfs / site)], key=lambda c: c["bom-ref"]
    )
    image_ref = f"pkg:oci/{name}@{quote(digest)}?tag={version}" if digest else f"pkg:oci/{name}?tag={version}"
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, image_ref)}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "greenjobs images/sbom.py"}]},
            "component": {
                "type": "container",
                "bom-ref": image_ref,
                "name": name,
                "version": version,
                "purl": image_ref,
                "properties": [{"name": "oci:digest", "value": digest}] if digest else [],
            },
        },
        "components": components,
        "dependencies": [{"ref": image_ref, "dependsOn": [c["bom-ref"] for c in components]}],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="CycloneDX SBOM of an image root filesystem")
    p.add_argument("--rootfs", type=Path, required=True)
    p.add_argument("--venv-site", type=Path, required=True, help="site-packages, relative to --rootfs")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--digest", default="", help="the image manifest digest (sha256:...)")
    p.add_argument("--epoch", type=int, required=True, help="SOURCE_DATE_EPOCH")
    p.add_argument("-o", "--output", type=Path, required=True)
    a = p.parse_args(argv)
    doc = sbom(a.rootfs, a.venv_site, a.name, a.version, a.digest, a.epoch)
    a.output.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
