"""The images `make images` builds (images/build.sh), tested for real: built from the working tree,
run by podman with runc (read-only root filesystem, non-root, no capabilities), pushed to a registry
on 127.0.0.1 and pulled back by digest, the operator image reconciling a GreenTrainingJob against the
local control plane, and the chart installed with the images' repository and digests from that registry.

Needs root (mmdebstrap, chroot, podman) and installs what is missing with apt-get (images/build.sh
tools); it skips, saying why, only where that cannot happen. Marked `cluster` as well, so that
`make test-unit` (-m "not cluster") leaves the image build out; the first two tests do not start
the control plane. About 2-4 minutes on a fresh machine (apt, mmdebstrap, pip download), well under
one warm. Podman here uses its own storage and a containers.conf under the session's tmp folder
(runc, cgroupfs, no network namespace unless asked: /work/shared/design/IMAGES.md).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_helm_install import _installed
from tests.kube import REPO, Cluster, wait_until
from tests.manifests import gtj_manifest
from tests.operator_proc import FAST_SETTINGS

pytestmark = [pytest.mark.images, pytest.mark.cluster]

BUILD_SH = REPO / "images" / "build.sh"
NAMES = ("operator", "agent")
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]
netns = "none"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""
REGISTRY_CONF = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
"""
CANNOT = 3  # images/build.sh: the tools cannot be installed, or the build cannot run, here


def _build_sh(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(BUILD_SH), *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=timeout, check=False
    )
    if proc.returncode == CANNOT:
        pytest.skip(f"images/build.sh {args[0]}: {proc.stderr.strip().splitlines()[-1]}")
    if proc.returncode != 0:
        pytest.fail(
            f"images/build.sh {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-6000:]}", pytrace=False
        )
    return proc


@dataclass
class Built:
    out: Path
    info: dict[str, Any]  # images.json

    def image(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.info["images"][name]
        return found

    @property
    def tag(self) -> str:
        return str(self.image("operator")["tag"])


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """`images/build.sh build` (what `make images` runs) into a folder of this session."""
    out = tmp_path_factory.mktemp("images")
    _build_sh("tools", env={}, timeout=600)
    _build_sh("build", env={"GREENJOBS_IMAGES_OUT": str(out)}, timeout=900)
    return Built(out, json.loads((out / "images.json").read_text()))


@dataclass
class Podman:
    root: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.root / "containers.conf")}

    def storage(self) -> list[str]:
        root, run = self.root / "storage", self.root / "run"
        return ["--root", str(root), "--runroot", str(run), "--storage-driver", "overlay"]

    def __call__(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        cmd = ["podman", *self.storage(), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def load(self, archive: Path, tag: str, name: str) -> str:
        """The OCI archive into this storage as localhost/NAME:TAG (skopeo, as `podman load` would)."""
        ref = f"localhost/{name}:{tag}"
        dest = f"containers-storage:[overlay@{self.root / 'storage'}+{self.root / 'run'}]{ref}"
        subprocess.run(
            ["skopeo", "copy", "-q", f"oci-archive:{archive}:{tag}", dest],
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=180,
        )
        return ref


@pytest.fixture(scope="session")
def podman(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    root = tmp_path_factory.mktemp("podman")
    (root / "containers.conf").write_text(CONTAINERS_CONF)
    pm = Podman(root)
    yield pm
    pm("rm", "--all", "--force", "--time", "0", check=False)
    pm("rmi", "--all", "--force", check=False)  # nothing of the session's storage stays mounted


@pytest.fixture(scope="session")
def loaded(built: Built, podman: Podman) -> dict[str, str]:
    """Both images in podman's storage: {name: reference}."""
    return {n: podman.load(built.out / built.image(n)["archive"], built.tag, f"greenjobs-{n}") for n in NAMES}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def registry(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1: yields host:port."""
    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    conf = root / "config.yml"
    conf.write_text(REGISTRY_CONF.format(root=root / "data", port=port))
    with (root / "registry.log").open("wb") as log:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(conf)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    address = f"127.0.0.1:{port}"

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"docker-registry exited:\n{(root / 'registry.log').read_text()}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(f"the registry on {address}", answers, timeout=30, interval=0.2)
    yield address
    proc.terminate()
    proc.wait(10)


@dataclass
class Pushed:
    repo: str  # registry/path, the chart's image.repo
    values: Path  # build/images/values-images.yaml as `make push` writes it
    digests: dict[str, str]


@pytest.fixture(scope="session")
def pushed(built: Built, registry: str) -> Pushed:
    """`images/build.sh push` (what `make push REGISTRY=...` runs) to the loopback registry."""
    repo = f"{registry}/greenjobs"
    _build_sh("push", repo, env={"GREENJOBS_IMAGES_OUT": str(built.out)}, timeout=300)
    values = built.out / "values-images.yaml"
    image = yaml.safe_load(values.read_text())["image"]
    return Pushed(image["repo"], values, dict(image["digests"]))


# --- the build's outputs -------------------------------------------------------------------------


def _oci_index(archive: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(index.json, manifest, config) of an OCI archive."""
    with tarfile.open(archive) as tar:

        def blob(digest: str) -> dict[str, Any]:
            f = tar.extractfile(f"./blobs/sha256/{digest.removeprefix('sha256:')}")
            assert f is not None
            doc: dict[str, Any] = json.load(f)
            return doc

        f = tar.extractfile("./index.json")
        assert f is not None
        index: dict[str, Any] = json.load(f)
        manifest = blob(index["manifests"][0]["digest"])
        return index, manifest, blob(manifest["config"]["digest"])


def _lock() -> dict[str, str]:
    lines = (REPO / "images" / "requirements.lock").read_text().splitlines()
    return dict(line.split("==") for line in lines if line and not line.startswith("#"))


def test_archives_configs_and_sboms(built: Built) -> None:
    """Each OCI archive holds one manifest (tag = project version) whose digest images.json states;
    both share their two layers; the config runs `greenjobs` as 65532 with SOURCE_DATE_EPOCH as its
    date; the SBOM beside it lists the Debian and Python packages with the locked versions."""
    layers = {}
    for name in NAMES:
        meta = built.image(name)
        index, manifest, config = _oci_index(built.out / meta["archive"])
        (entry,) = index["manifests"]
        assert entry["digest"] == meta["digest"]
        assert entry["annotations"]["org.opencontainers.image.ref.name"] == built.tag
        layers[name] = [layer["digest"] for layer in manifest["layers"]]
        assert len(layers[name]) == 2
        cfg = config["config"]
        assert cfg["User"] == "65532:65532"
        assert cfg["Entrypoint"] == ["greenjobs"] and cfg["Cmd"] == [name]
        assert config["created"] == built.info["created"]
        assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(built.info["sourceDateEpoch"])) == config["created"]
        assert cfg["Labels"]["org.opencontainers.image.version"] == built.tag

        sbom = json.loads((built.out / meta["sbom"]).read_text())
        assert sbom["bomFormat"] == "CycloneDX"
        assert {"name": "oci:digest", "value": meta["digest"]} in sbom["metadata"]["component"]["properties"]
        purls = {c["purl"].split("@")[0]: c["version"] for c in sbom["components"]}
        assert "pkg:deb/debian/python3.11" in purls and "pkg:deb/debian/libc6" in purls
        assert "pkg:deb/debian/apt" not in purls  # essential variant: no package manager in the image
        assert purls["pkg:pypi/greenjobs"] == built.tag
        for pkg, version in _lock().items():
            assert purls.get(f"pkg:pypi/{pkg}") == version, pkg
        assert "pkg:pypi/pip" not in purls
    assert layers["operator"] == layers["agent"]


def test_rebuild_is_bit_for_bit_identical(built: Built, tmp_path: Path) -> None:
    """The same tree and SOURCE_DATE_EPOCH give the same image digests (the base root filesystem is
    the cached one: this covers the venv layer, the configs and the archives)."""
    env = {"GREENJOBS_IMAGES_OUT": str(tmp_path), "SOURCE_DATE_EPOCH": str(built.info["sourceDateEpoch"])}
    _build_sh("build", env=env, timeout=600)
    again = json.loads((tmp_path / "images.json").read_text())
    for name in NAMES:
        assert again["images"][name]["digest"] == built.image(name)["digest"], name
        archive = built.image(name)["archive"]
        assert (tmp_path / archive).read_bytes() == (built.out / archive).read_bytes(), archive


# --- running the images --------------------------------------------------------------------------

LOCKED_DOWN = ("--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges")


def test_entrypoints_run_read_only_as_non_root(podman: Podman, loaded: dict[str, str]) -> None:
    for name, ref in loaded.items():
        out = podman("run", "--rm", *LOCKED_DOWN, ref, "--help").stdout
        assert out.startswith("usage: greenjobs"), out
        sub = podman("run", "--rm", *LOCKED_DOWN, ref, name, "--help").stdout
        assert sub.startswith(f"usage: greenjobs {name}"), sub
        ident = podman("run", "--rm", *LOCKED_DOWN, "--entrypoint", "id", ref).stdout
        assert ident.startswith("uid=65532(greenjobs) gid=65532(greenjobs)"), ident
        # The root filesystem is read-only: not even the venv can be written.
        write = podman("run", "--rm", *LOCKED_DOWN, "--entrypoint", "sh", ref, "-c", "touch /opt/venv/x", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr, write
    crd = podman("run", "--rm", *LOCKED_DOWN, loaded["operator"], "crd").stdout
    assert crd == (REPO / "crds" / "greentrainingjobs.yaml").read_text()
    # The embedded forecast traces values-sim.yaml's replay provider reads.
    ls = podman("run", "--rm", *LOCKED_DOWN, "--entrypoint", "ls", loaded["operator"], "/app/data/").stdout
    assert "gb_2020_excerpt.csv" in ls and "fr_2020_excerpt.csv" in ls


def test_push_and_pull_by_digest(built: Built, pushed: Pushed, podman: Podman) -> None:
    for name in NAMES:
        assert pushed.digests[name] == built.image(name)["digest"]
        ref = f"{pushed.repo}/greenjobs-{name}"
        served = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", f"docker://{ref}:{built.tag}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        assert served == pushed.digests[name]
        by_digest = f"{ref}@{pushed.digests[name]}"
        podman("pull", "-q", "--tls-verify=false", by_digest)
        out = podman("run", "--rm", *LOCKED_DOWN, by_digest, "--help").stdout
        assert out.startswith("usage: greenjobs")


def test_operator_image_reconciles_a_gtj(
    cluster: Cluster, namespace: str, podman: Podman, loaded: dict[str, str], tmp_path: Path
) -> None:
    """The operator image, run as the chart runs it (uid 65532, read-only root, no capabilities), on
    the host network against the local control plane: a GreenTrainingJob gets planned."""
    kubeconfig = tmp_path / "kubeconfig"
    shutil.copyfile(cluster.kubeconfig, kubeconfig)
    kubeconfig.chmod(0o644)
    config = tmp_path / "config.yaml"
    replay = {
        "type": "replay",
        "traces": {"GB": "/app/data/gb_2020_excerpt.csv", "FR": "/app/data/fr_2020_excerpt.csv"},
        "anchor": "2020-03-01T00:00:00Z",
        "speedup": 60,
    }
    config.write_text(yaml.safe_dump({**FAST_SETTINGS, "providers": [replay]}))
    config.chmod(0o644)
    container = f"gj-operator-{namespace}"
    podman(
        "run",
        "--detach",
        "--name",
        container,
        "--network=host",
        *LOCKED_DOWN,
        "--user=65532:65532",
        "-v",
        f"{kubeconfig}:/etc/greenjobs/kubeconfig:ro",
        "-v",
        f"{config}:/etc/greenjobs/config.yaml:ro",
        "-e",
        "KUBECONFIG=/etc/greenjobs/kubeconfig",
        "-e",
        "GREENJOBS_CONFIG=/etc/greenjobs/config.yaml",
        loaded["operator"],
        "operator",
        "--liveness=",
        "-n",
        namespace,
    )

    def logs() -> str:
        out = podman("logs", container, check=False)
        return out.stdout + out.stderr

    def running() -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", container).stdout.strip()
        if state != "true":
            raise AssertionError(f"the operator container stopped:\n{logs()[-4000:]}")
        return "Activity 'login' succeeded" in logs()

    try:
        wait_until("the operator container to log in", running, timeout=60)
        cluster.kubectl("apply", "-f", "-", input=json.dumps(gtj_manifest(namespace, "from-image", zones=["GB"])))

        def phase() -> str | None:
            obj = cluster.get_json("greentrainingjob", "from-image", "-n", namespace)
            value: str | None = obj.get("status", {}).get("phase")
            return value

        try:
            got = wait_until("a status.phase written by the containerised operator", phase, timeout=90)
        except AssertionError as e:
            raise AssertionError(f"{e}\noperator log:\n{logs()[-4000:]}") from None
        assert got in ("Pending", "Deferred", "Running"), got
        obj = cluster.get_json("greentrainingjob", "from-image", "-n", namespace)
        assert obj["status"].get("plan"), obj["status"]
        assert "Traceback" not in logs()
    finally:
        # Delete the job while the operator runs, so it lets go of its finalizers.
        cluster.kubectl("delete", "greentrainingjobs", "--all", "-n", namespace, "--timeout=60s", check=False)
        podman("rm", "--force", "--time", "10", container, check=False)


def test_chart_installs_the_pushed_images_by_digest(cluster: Cluster, namespace: str, pushed: Pushed) -> None:
    """`helm install -f build/images/values-images.yaml` (written by `make push`): every workload names
    {repo}/greenjobs-<name>@<digest> from the loopback registry (kwok runs no pods, so nothing pulls
    here; test_push_and_pull_by_digest pulled the same references)."""
    want = {n: f"{pushed.repo}/greenjobs-{n}@{pushed.digests[n]}" for n in NAMES}
    with _installed(cluster, namespace, "-f", str(pushed.values)) as rel:
        for kind, suffix, name in (("deployment", "-operator", "operator"), ("daemonset", "-agent", "agent")):
            live = cluster.get_json(kind, f"{rel.fullname}{suffix}", "-n", namespace)
            (c,) = live["spec"]["template"]["spec"]["containers"]
            assert c["image"] == want[name], (kind, c["image"])
    # The Kueue check controller runs the operator image: the same pinned reference.
    rendered = cluster.helm(
        "template", "gj", str(REPO / "helm" / "greenjobs"), "-f", str(pushed.values), "--set", "kueue.enabled=true"
    ).stdout
    images = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] in ("Deployment", "DaemonSet")
    }
    assert images == {
        "gj-greenjobs-operator": want["operator"],
        "gj-greenjobs-kueue-check": want["operator"],
        "gj-greenjobs-agent": want["agent"],
    }
