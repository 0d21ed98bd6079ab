#!/usr/bin/env bash
# Build the local control plane's binaries from pinned Go modules, once; later runs reuse the cache.
# Output: $GREENJOBS_BIN (default ~/.cache/greenjobs/bin/<versions>), printed on the last line.
# `build.sh kueue` builds Kueue and the JobSet controller instead, into $GREENJOBS_KUEUE_BIN
# (default ~/.cache/greenjobs/bin/kueue-<v>-jobset-<v>), printed on the last line.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$HERE/versions.env"
CACHE=${GREENJOBS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/greenjobs}
OUT=${GREENJOBS_BIN:-$CACHE/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION}
export GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
export GOPATH=${GOPATH:-$HOME/go} GOCACHE=${GOCACHE:-$CACHE/go-build}
mkdir -p "$OUT"
log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# shellcheck source=retry.sh
. "$HERE/retry.sh"
# Every fetch from the module proxy goes through gofetch: retried with backoff (5, 10, 20, 40 s),
# then an error that names the module and the remedy. Compiles run with GOPROXY=off where all their
# modules were fetched first, so a compile error is never retried and never touches the network.
gofetch() { local what=$1; shift; retry --what "$what" --remedy go -- "$@"; }

# Temporary folders, removed on exit (the module cache's copies are read-only: chmod first).
TMPS=()
cleanup() { local d; for d in "${TMPS[@]}"; do chmod -R u+w "$d" 2>/dev/null; rm -rf "$d"; done; }
trap cleanup EXIT
tmpdir() { local d; d=$(mktemp -d); TMPS+=("$d"); echo "$d"; }

# module_field MOD@VERSION FIELD: download one module version (no version list, no @latest asked)
# and print a field of `go mod download -json` (Dir, GoMod).
_mod_json() { go mod download -json "$1" > "$2"; }
module_field() {
  local j; j=$(tmpdir)/mod.json
  gofetch "Go module $1" _mod_json "$1" "$j"
  python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$j" "$2"
}

# build_module MOD VERSION OUTDIR LDFLAGS PKG...: build packages of MOD@VERSION with the module's
# own go.mod and go.sum, as `go install PKG@VERSION` would, but without its deprecation check:
# that check reads MOD/@v/list, which the module proxy refuses for some modules (403 for
# sigs.k8s.io/jobset/@v/list), and a file proxy in front does not help (go asks every proxy).
build_module() {
  local mod=$1 ver=$2 out=$3 ldf=$4 src w; shift 4
  src=$(module_field "$mod@$ver" Dir)
  w=$(tmpdir); cp -r "$src/." "$w/"; chmod -R u+w "$w"
  (cd "$w" && gofetch "the Go modules that $mod@$ver needs" go mod download \
    && GOPROXY=off GOFLAGS=-mod=mod nice -n 10 go build -trimpath -ldflags "$ldf" -o "$out/" "$@")
}

have() { for b in "$@"; do [ -x "$OUT/$b" ] || return 1; done; }

build_k8s() {
  have kube-apiserver kube-controller-manager kube-scheduler kubectl && return 0
  log "kubernetes $K8S_VERSION: resolving modules"
  local staging="v0.${K8S_VERSION#v1.}" minor w up
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  up=$(module_field "k8s.io/kubernetes@$K8S_VERSION" GoMod)
  w=$(tmpdir)
  (cd "$w"
   go mod init local/k8s-bins >/dev/null 2>&1
   # Every staging module k8s.io/X => ./staging/... upstream becomes k8s.io/X@v0.<minor>.<patch>.
   for m in $(grep -E '^[[:space:]]*k8s\.io/[a-z0-9-]+ => \./staging/' "$up" | awk '{print $1}'); do
     go mod edit -replace="$m=$m@$staging"
   done
   gd=$(sed -n 's/^godebug //p' "$up" | head -1); [ -z "$gd" ] || go mod edit -godebug="$gd"
   gofetch "k8s.io/kubernetes@$K8S_VERSION and its modules" go get "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
   printf 'package tools\nimport (\n _ "k8s.io/kubernetes/cmd/kube-apiserver"\n _ "k8s.io/kubernetes/cmd/kube-controller-manager"\n _ "k8s.io/kubernetes/cmd/kube-scheduler"\n _ "k8s.io/kubernetes/cmd/kubectl"\n)\n' > tools.go
   go mod tidy >/dev/null 2>&1 || true
   gofetch "the modules of kube-apiserver, kube-controller-manager, kube-scheduler, kubectl" go mod download
   local ldf="-s -w" p
   for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
     ldf="$ldf -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
   done
   log "kubernetes $K8S_VERSION: compiling (the slow part, ~20 min cold on 2 cores)"
   go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags="$ldf" -o "$OUT/" \
     k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
     k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
}

build_etcd() {
  have etcd && return 0
  log "etcd $ETCD_VERSION"
  local w; w=$(tmpdir)
  (cd "$w" && go mod init local/etcd-bin >/dev/null 2>&1 \
    && gofetch "go.etcd.io/etcd/server/v3@$ETCD_VERSION and its modules" go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 \
    && gofetch "the modules of etcd $ETCD_VERSION" go mod download \
    && go build -trimpath -ldflags='-s -w' -o "$OUT/etcd" go.etcd.io/etcd/server/v3)
}

build_kwok() {
  have kwok && [ -d "$OUT/kwok-stages" ] && return 0
  log "kwok $KWOK_VERSION"
  build_module sigs.k8s.io/kwok "$KWOK_VERSION" "$OUT" '-s -w' ./cmd/kwok
  # kwok's own stage definitions for this version (node lifecycle, pod ready/delete, failure
  # injection), taken from its module so they match the binary; e2e/kwok adds greenjobs' own.
  local src; src=$(module_field "sigs.k8s.io/kwok@$KWOK_VERSION" Dir)/kustomize/stage
  mkdir -p "$OUT/kwok-stages"
  install -m 0644 "$src/node/fast/node-initialize.yaml" "$src/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
    "$src/pod/fast/pod-ready.yaml" "$src/pod/fast/pod-delete.yaml" "$src/pod/chaos/pod-container-running-failed.yaml" \
    "$OUT/kwok-stages/"
}

build_helm() {
  have helm && return 0
  log "helm $HELM_VERSION"
  local maj=${HELM_VERSION%%.*}
  build_module "helm.sh/helm/$maj" "$HELM_VERSION" "$OUT" \
    "-s -w -X helm.sh/helm/$maj/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/$maj/pkg/chartutil.k8sVersionMinor=36" ./cmd/helm
}

# Kueue and the JobSet controller live in their own versioned folder next to $OUT, so that the
# control plane's cache (and its folder name) is untouched by the Kueue pins.
KQ_OUT=${GREENJOBS_KUEUE_BIN:-$CACHE/bin/kueue-$KUEUE_VERSION-jobset-$JOBSET_VERSION}

# One Go build at a time on this machine (2 cores): concurrent build.sh runs queue on this lock.
build_lock() { mkdir -p "$CACHE"; exec 9> "$CACHE/build.lock"; flock 9; }

build_kueue() {
  [ -x "$KQ_OUT/kueue" ] && [ -x "$KQ_OUT/jobset" ] && return 0
  build_lock
  mkdir -p "$KQ_OUT"
  if [ ! -x "$KQ_OUT/kueue" ]; then
    log "kueue $KUEUE_VERSION: compiling (~6 min cold on 2 cores)"
    build_module sigs.k8s.io/kueue "$KUEUE_VERSION" "$KQ_OUT" \
      "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" ./cmd/kueue
  fi
  if [ ! -x "$KQ_OUT/jobset" ]; then
    # `go install sigs.k8s.io/jobset@VERSION` fails: its deprecation check reads
    # sigs.k8s.io/jobset/@v/list, which the module proxy answers with 403 (build_module explains).
    log "jobset $JOBSET_VERSION: compiling (~3 min cold on 2 cores)"
    build_module sigs.k8s.io/jobset "$JOBSET_VERSION" "$KQ_OUT" \
      "-s -w -X sigs.k8s.io/jobset/pkg/version.GitVersion=$JOBSET_VERSION" .
  fi
}

what=${1:-all}
case "$what" in
  all) build_etcd; build_kwok; build_helm; build_k8s ;;
  k8s|etcd|kwok|helm) "build_$what" ;;
  kueue) build_kueue; log "kueue and jobset ready in $KQ_OUT"; echo "$KQ_OUT"; exit 0 ;;
  *) echo "usage: $0 [all|k8s|etcd|kwok|helm|kueue]" >&2; exit 2 ;;
esac
log "binaries ready in $OUT"
echo "$OUT"
