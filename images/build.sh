#!/usr/bin/env bash
# Build the operator and node-agent images as OCI archives with no Docker engine, from Debian's
# archive and PyPI only, reproducibly; push them to a registry.
#
#   images/build.sh build            (make images)  build/images/greenjobs-{operator,agent}.oci.tar,
#                                     an SBOM beside each (*.cdx.json, CycloneDX), images.json (digests)
#   images/build.sh push REGISTRY    (make push REGISTRY=...)  copy both to REGISTRY/greenjobs-{operator,agent}:TAG
#                                     with their digests kept; writes build/images/values-images.yaml for helm -f
#   images/build.sh tools [PKG...]   install the Debian packages the build, push and tests use, when missing
#
# How (docs: README "Build and publish the images"):
#   1. base root filesystem: `mmdebstrap --variant=essential` (Essential: yes packages only: no apt,
#      no perl) of Debian bookworm (+ -updates, -security), merged /usr, with python3, ca-certificates and libstdc++6; user greenjobs (65532); device nodes, logs and caches removed;
#      every mtime clamped to the archive's newest Release date. Cached under
#      ~/.cache/greenjobs/images/base-KEY, KEY = hash of this recipe and those Release dates.
#   2. wheels: images/requirements.lock (exact versions, generated from the project's venv by
#      images/lock.py) and images/build-requirements.lock (pip, setuptools), binary wheels only, for
#      CPython 3.11 manylinux x86-64, cached by the locks' hash; the project's wheel
#      (`pip wheel --no-deps .`, offline, with the locked setuptools).
#   3. venv: in a chroot of a copy of the base, the image's own python3 makes /opt/venv and pip (run
#      from its pinned wheel, offline) installs exactly the wheels; bytecode compiled with
#      unchecked-hash invalidation (no mtimes in .pyc); pip itself is not left in the image.
#   4. layers: GNU tar, sorted, numeric owners, fixed mtimes (SOURCE_DATE_EPOCH = the last commit's
#      time unless set), no atime/ctime; umoci adds them verbatim and writes the config (user, entrypoint,
#      env, ports, labels, created = SOURCE_DATE_EPOCH). Both images share both layers; they differ
#      in config only (operator: CMD operator, ports 8080 8081; agent: CMD agent, port 9102).
#   Both run as uid 65532 by default; the chart runs the agent as uid 0 (+CAP_SYS_ADMIN for power caps).
#
# Settings (env): GREENJOBS_IMAGES_OUT (build/images), GREENJOBS_IMAGES_CACHE (~/.cache/greenjobs/images),
# GREENJOBS_DEBIAN_MIRROR (http://deb.debian.org/debian; a snapshot.debian.org URL pins the packages
# exactly), GREENJOBS_DEBIAN_SECURITY (http://deb.debian.org/debian-security), GREENJOBS_IMAGE_TAG
# (the project version), SOURCE_DATE_EPOCH, PYTHON (the host python used for pip download / wheel),
# GREENJOBS_REGISTRY_TLS_VERIFY (push: true, false for an http registry; default false for
# 127.0.0.1 / localhost), GREENJOBS_IMAGES_KEEP_WORK=1 (keep build/images/.work to inspect), GREENJOBS_RETRIES / GREENJOBS_RETRY_DELAY (e2e/retry.sh).
# Exit status 3: the tools are missing and cannot be installed here, or the build cannot run (no root, no apt-get).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=../e2e/retry.sh
. "$REPO/e2e/retry.sh"

OUT=${GREENJOBS_IMAGES_OUT:-$REPO/build/images}
CACHE=${GREENJOBS_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/greenjobs/images}
MIRROR=${GREENJOBS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${GREENJOBS_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
SUITE=bookworm
# libstdc++6: what manylinux wheels (numpy, grpcio) expect of the system besides glibc and libgcc.
BASE_PACKAGES=python3,ca-certificates,libstdc++6
BASE_RECIPE=5  # bump when the base recipe below changes: it is part of the cache key
PY_TAG=3.11
LOCK=$HERE/requirements.lock
BUILD_LOCK=$HERE/build-requirements.lock
APT_TOOLS=(mmdebstrap umoci skopeo podman runc docker-registry debian-archive-keyring)  # build + push + tests
BUILD_TOOLS=(mmdebstrap umoci debian-archive-keyring)
IMAGES=(operator agent)
PATH_ENV=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
TAR=(tar --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime
  --sort=name --numeric-owner --no-acls --no-xattrs --no-selinux)

GIT=(git -c "safe.directory=$REPO" -C "$REPO")
log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# --- tools ---------------------------------------------------------------------------------------
# tools [PACKAGE...]: install those Debian packages whose command is missing (all of APT_TOOLS by default).
tools() {
  local missing=() p
  [ $# -gt 0 ] || set -- "${APT_TOOLS[@]}"
  for p in "$@"; do
    case $p in
      debian-archive-keyring) [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=("$p") ;;
      *) command -v "$p" > /dev/null || missing+=("$p") ;;
    esac
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo > /dev/null && sudo -n true 2> /dev/null; then sudo=(sudo -n); else
      printf 'CANNOT INSTALL: %s missing; installing them needs root (apt-get) and this user (%s) is not root and has no password-less sudo.\n' \
        "${missing[*]}" "$(id -un)" >&2
      exit 3
    fi
  fi
  if ! command -v apt-get > /dev/null; then
    printf 'CANNOT INSTALL: %s missing and there is no apt-get (the build needs Debian/Ubuntu packages).\n' "${missing[*]}" >&2
    exit 3
  fi
  log "installing ${missing[*]}"
  retry --what "the Debian package lists" -- "${sudo[@]}" apt-get update -qq
  retry --what "Debian packages ${missing[*]}" -- "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
}

need_root() {
  [ "$(id -u)" -eq 0 ] && return 0
  echo "CANNOT BUILD: building the images needs root (mmdebstrap --mode=root, chroot, file ownership); run it as root or under sudo" >&2
  exit 3
}

# --- inputs --------------------------------------------------------------------------------------
sde() {
  if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then echo "$SOURCE_DATE_EPOCH"; else "${GIT[@]}" log -1 --format=%ct; fi
}
project_version() { sed -n 's/^version *= *"\(.*\)"/\1/p' "$REPO/pyproject.toml" | head -1; }
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }
host_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; elif [ -x "$REPO/.venv/bin/python" ]; then echo "$REPO/.venv/bin/python"; else echo python3; fi
}

# The Date: of each suite's InRelease: the archive state the base is built from.
release_dates() {
  local url
  for url in "$MIRROR/dists/$SUITE" "$MIRROR/dists/$SUITE-updates" "$SECURITY/dists/$SUITE-security"; do
    printf '%s %s\n' "$url" "$(retry --what "$url/InRelease" -- curl -fsSL --max-time 60 "$url/InRelease" | sed -n 's/^Date: //p' | head -1)"
  done
}

# --- 1. base root filesystem ---------------------------------------------------------------------
base() {
  local dates key dir epoch
  dates=$(release_dates)
  key=$(printf '%s\n' "recipe $BASE_RECIPE" "$SUITE" "$BASE_PACKAGES" "$dates" "$(uname -m)" | sha256sum | cut -c1-16)
  dir=$CACHE/base-$key
  if [ -f "$dir/done" ]; then
    log "base root filesystem: cached ($dir)"
    echo "$dir"; return 0
  fi
  epoch=0
  while read -r _ d; do
    [ -n "$d" ] || die "no Date in an InRelease file: $dates"
    local e; e=$(date -u -d "$d" +%s)
    if [ "$e" -gt "$epoch" ]; then epoch=$e; fi
  done <<< "$dates"
  log "base root filesystem: mmdebstrap $SUITE ($BASE_PACKAGES), archive as of $(iso "$epoch")"
  rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
  local r=$dir.tmp/rootfs snapshot=()
  # snapshot.debian.org serves old Release files whose Valid-Until has passed: that is the point there.
  case "$MIRROR $SECURITY" in *snapshot.debian.org*) snapshot=(--aptopt='Acquire::Check-Valid-Until "false"') ;; esac
  retry --what "Debian $SUITE packages (mmdebstrap)" -- env SOURCE_DATE_EPOCH="$epoch" mmdebstrap --quiet \
    --mode=root --variant=essential --include="$BASE_PACKAGES" --format=directory \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='Acquire::Retries "3"' "${snapshot[@]}" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    "$SUITE" "$r" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY $SUITE-security main" >&2
  # Nothing that changes from run to run, nothing a container runtime provides itself.
  find "$r/dev" -mindepth 1 -delete
  rm -rf "$r"/var/log/* "$r"/var/cache/apt/* "$r"/var/lib/apt/lists/* "$r"/var/cache/ldconfig/aux-cache \
    "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old "$r"/etc/*- "$r"/tmp/* "$r"/run/*
  : > "$r/etc/machine-id"
  echo 'greenjobs:x:65532:65532:greenjobs:/nonexistent:/usr/sbin/nologin' >> "$r/etc/passwd"
  echo 'greenjobs:x:65532:' >> "$r/etc/group"
  find "$r" -newermt "@$epoch" -exec touch --no-dereference --date="@$epoch" {} +
  "${TAR[@]}" -C "$r" -cf "$dir.tmp/layer.tar" .
  echo "$epoch" > "$dir.tmp/epoch"; echo "$dates" > "$dir.tmp/sources"
  touch "$dir.tmp/done"
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
  echo "$dir"
}

# --- 2. wheels -----------------------------------------------------------------------------------
wheels() {
  local py key dir
  py=$(host_python)
  key=$(cat "$LOCK" "$BUILD_LOCK" <(echo "cp${PY_TAG/./} x86_64") | sha256sum | cut -c1-16)
  dir=$CACHE/wheels-$key
  if [ ! -f "$dir/done" ]; then
    log "dependency wheels: pip download (images/requirements.lock)"
    rm -rf "$dir"; mkdir -p "$dir"
    local plat=() v
    for v in 17 27 28 31 34 35 36; do plat+=(--platform "manylinux_2_${v}_x86_64"); done
    plat+=(--platform manylinux2014_x86_64 --platform any)
    retry --what "the pinned wheels from PyPI" --remedy pip -- "$py" -m pip download -q --no-deps \
      --only-binary=:all: --python-version "$PY_TAG" --implementation cp --abi "cp${PY_TAG/./}" --abi abi3 --abi none \
      "${plat[@]}" -r "$LOCK" -r "$BUILD_LOCK" -d "$dir" >&2
    touch "$dir/done"
  else
    log "dependency wheels: cached ($dir)"
  fi
  echo "$dir"
}

project_wheel() {
  local py=$1 dest=$2 wheelhouse=$3
  log "project wheel: pip wheel --no-deps . (setuptools from the build lock, offline)"
  rm -rf "$OUT/.work/src"; mkdir -p "$OUT/.work/src"
  # A clean copy of what the wheel is made of (the .dockerignore list), so no stale build/ leaks in.
  (cd "$REPO" && cp -r --parents pyproject.toml README.md operator node-agent "$OUT/.work/src/")
  find "$OUT/.work/src" \( -name __pycache__ -o -name '*.egg-info' -o -name .mypy_cache \) -prune -exec rm -rf {} +
  # The isolated build environment gets exactly the locked setuptools (PIP_* reach its pip too).
  env SOURCE_DATE_EPOCH="$EPOCH" PIP_CONSTRAINT="$BUILD_LOCK" PIP_NO_INDEX=1 PIP_FIND_LINKS="$wheelhouse" \
    "$py" -m pip wheel -q --no-deps -w "$dest" "$OUT/.work/src" >&2
}

# --- 3 + 4. venv, layers, images -----------------------------------------------------------------
build() {
  need_root
  tools "${BUILD_TOOLS[@]}"
  EPOCH=$(sde)
  TAG=${GREENJOBS_IMAGE_TAG:-$(project_version)}
  local created rev py basedir wheeldir w=$OUT/.work
  created=$(iso "$EPOCH")
  rev=$("${GIT[@]}" rev-parse HEAD)
  [ -z "$("${GIT[@]}" status --porcelain -- pyproject.toml operator node-agent)" ] || rev="$rev-dirty"
  py=$(host_python)
  mkdir -p "$OUT" "$CACHE"
  # One build per output folder, and one writer of the shared cache at a time.
  exec 9> "$OUT/.lock"; flock 9
  exec 8> "$CACHE/.lock"; flock 8
  rm -rf "$w"; mkdir -p "$w"
  basedir=$(base)
  wheeldir=$(wheels)
  mkdir -p "$w/wheels"
  cp "$wheeldir"/*.whl "$w/wheels/"
  project_wheel "$py" "$w/wheels" "$wheeldir"

  log "venv: chroot install into /opt/venv"
  local s=$w/stage
  cp -a "$basedir/rootfs" "$s"
  mkdir -p "$s/tmp/wheels" && cp "$w"/wheels/*.whl "$LOCK" "$s/tmp/wheels/"
  local pipwhl; pipwhl=$(cd "$s/tmp/wheels" && ls pip-*.whl)
  local project; project=$(cd "$s/tmp/wheels" && ls greenjobs-*.whl)
  chroot "$s" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 \
    /bin/sh -eu -c "
      python3 -m venv --without-pip /opt/venv
      /opt/venv/bin/python /tmp/wheels/$pipwhl/pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --disable-pip-version-check --find-links /tmp/wheels -r /tmp/wheels/requirements.lock /tmp/wheels/$project
      mkdir -p /app
      ln -s \"\$(/opt/venv/bin/python -c 'import greenjobs, os; print(os.path.dirname(greenjobs.__file__))')/data\" /app/data
      test -f /app/data/gb_2020_excerpt.csv
      # Every compiled extension finds its shared libraries in the image.
      missing=\$(find /opt/venv -name '*.so*' -type f -exec ldd {} + 2>&1 | grep 'not found' | sort -u || true)
      [ -z \"\$missing\" ] || { echo \"shared libraries missing from the image:\"; echo \"\$missing\"; exit 1; } >&2
    "
  rm -rf "$s/tmp/wheels"
  find "$s/opt/venv" "$s/app" -exec touch --no-dereference --date="@$EPOCH" {} +
  chroot "$s" /usr/bin/env -i PATH=/usr/bin:/bin LANG=C.UTF-8 /opt/venv/bin/python -m compileall -q -j 1 \
    --invalidation-mode unchecked-hash /opt/venv/lib > /dev/null
  find "$s/opt/venv" "$s/app" -exec touch --no-dereference --date="@$EPOCH" {} +
  "${TAR[@]}" -C "$s" -cf "$w/venv.tar" opt/venv app

  log "images: umoci (2 layers, 2 configs)"
  local L=$w/layout
  umoci init --layout "$L"
  umoci new --image "$L:base"
  umoci raw add-layer --image "$L:base" --history.created "$(iso "$(cat "$basedir/epoch")")" \
    --history.created_by "mmdebstrap --variant=essential --include=$BASE_PACKAGES $SUITE (images/build.sh)" \
    "$basedir/layer.tar"
  umoci raw add-layer --image "$L:base" --history.created "$created" \
    --history.created_by "venv /opt/venv: greenjobs $TAG + images/requirements.lock (images/build.sh)" "$w/venv.tar"
  local name cmd ports=() common=(
    --created "$created" --author "greenjobs" --os linux --architecture amd64 --no-history
    --config.user 65532:65532 --config.workingdir / --config.entrypoint greenjobs
    --config.env "PATH=$PATH_ENV" --config.env LANG=C.UTF-8 --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1
    --config.label "org.opencontainers.image.version=$TAG" --config.label "org.opencontainers.image.revision=$rev"
    --config.label "org.opencontainers.image.created=$created" --config.label org.opencontainers.image.licenses=Apache-2.0
    --config.label "org.opencontainers.image.source=${GREENJOBS_IMAGE_SOURCE:-https://github.com/greenjobs/greenjobs}"
    --config.label "org.opencontainers.image.base.name=debian:$SUITE (mmdebstrap essential)"
  )
  for name in "${IMAGES[@]}"; do
    case $name in
      operator) cmd=operator; ports=(--config.exposedports 8080/tcp --config.exposedports 8081/tcp) ;;
      agent) cmd=agent; ports=(--config.exposedports 9102/tcp) ;;
    esac
    umoci config --image "$L:base" --tag "$name" "${common[@]}" "${ports[@]}" --config.cmd "$cmd" \
      --config.label "org.opencontainers.image.title=greenjobs-$name" \
      --manifest.annotation "org.opencontainers.image.version=$TAG" \
      --manifest.annotation "org.opencontainers.image.created=$created"
  done

  local manifest digest sizes="" entries=()
  for name in "${IMAGES[@]}"; do
    local one=$w/layout-$name img=greenjobs-$name
    cp -a "$L" "$one"
    umoci tag --image "$one:$name" "$TAG"
    local t; for t in base "${IMAGES[@]}"; do umoci rm --image "$one:$t"; done
    umoci gc --layout "$one"
    find "$one" -exec touch --no-dereference --date="@$EPOCH" {} +
    "${TAR[@]}" --owner=0 --group=0 -C "$one" -cf "$OUT/$img.oci.tar" .
    manifest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$one/index.json")
    python3 "$HERE/sbom.py" --rootfs "$s" --venv-site "opt/venv/lib/python$PY_TAG/site-packages" \
      --name "$img" --version "$TAG" --digest "$manifest" --epoch "$EPOCH" -o "$OUT/$img.cdx.json"
    local size gz
    size=$(stat -c %s "$OUT/$img.oci.tar")
    gz=$(python3 - "$one" "$manifest" << 'PY'
import json, sys
root, digest = sys.argv[1], sys.argv[2]
m = json.load(open(f"{root}/blobs/sha256/{digest.split(':')[1]}"))
print(sum(layer["size"] for layer in m["layers"]))
PY
)
    entries+=("\"$name\": {\"image\": \"$img\", \"tag\": \"$TAG\", \"digest\": \"$manifest\", \"archive\": \"$img.oci.tar\", \"sbom\": \"$img.cdx.json\", \"archiveBytes\": $size, \"layersCompressedBytes\": $gz}")
    sizes+="  $img:$TAG  $manifest  archive $((size / 1024 / 1024)) MiB, layers (gzip) $((gz / 1024 / 1024)) MiB\n"
  done
  local IFS=,
  printf '{"sourceDateEpoch": %s, "created": "%s", "revision": "%s", "images": {%s}}\n' \
    "$EPOCH" "$created" "$rev" "${entries[*]}" | python3 -m json.tool > "$OUT/images.json"
  unset IFS
  [ -n "${GREENJOBS_IMAGES_KEEP_WORK:-}" ] || rm -rf "$w"
  log "done: $OUT"
  printf '%b' "$sizes" >&2
}

# --- push ----------------------------------------------------------------------------------------
push() {
  local registry=${1:-}
  [ -n "$registry" ] || die "usage: images/build.sh push REGISTRY   (e.g. ghcr.io/OWNER or 127.0.0.1:5000/greenjobs)"
  registry=${registry%/}
  [ -f "$OUT/images.json" ] || die "no images in $OUT: run make images first"
  tools skopeo
  local verify=${GREENJOBS_REGISTRY_TLS_VERIFY:-}
  if [ -z "$verify" ]; then
    case $registry in 127.0.0.1* | localhost* | \[::1\]*) verify=false ;; *) verify=true ;; esac
  fi
  local name tag digest pushed out=()
  for name in "${IMAGES[@]}"; do
    tag=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["images"][sys.argv[2]]["tag"])' "$OUT/images.json" "$name")
    digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["images"][sys.argv[2]]["digest"])' "$OUT/images.json" "$name")
    log "push $registry/greenjobs-$name:$tag"
    retry --what "push of greenjobs-$name to $registry" -- skopeo copy -q --preserve-digests \
      --dest-tls-verify="$verify" --digestfile "$OUT/.digest-$name" \
      "oci-archive:$OUT/greenjobs-$name.oci.tar:$tag" "docker://$registry/greenjobs-$name:$tag"
    pushed=$(cat "$OUT/.digest-$name"); rm -f "$OUT/.digest-$name"
    [ "$pushed" = "$digest" ] || die "the registry holds greenjobs-$name as $pushed, not $digest"
    out+=("$name" "$digest")
    echo "$registry/greenjobs-$name:$tag@$digest"
  done
  cat > "$OUT/values-images.yaml" << EOF
# Written by \`make push REGISTRY=$registry\`: helm install ... -f $OUT/values-images.yaml
image:
  repo: $registry
  tag: "$tag"
  digests:
    ${out[0]}: "${out[1]}"
    ${out[2]}: "${out[3]}"
EOF
  log "wrote $OUT/values-images.yaml"
}

case "${1:-}" in
  build) build ;;
  push) shift; push "$@" ;;
  tools) shift; tools "$@" ;;
  *) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
