#!/usr/bin/env bash
# The local test control plane: real etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# and kwok for fake GPU nodes, all on loopback, built from pinned Go modules (e2e/build.sh).
#
#   e2e/cluster.sh build     build (or reuse) the binaries
#   e2e/cluster.sh up        start everything, create the fake GPU nodes, wait until ready
#   e2e/cluster.sh down      stop everything, leave no process behind (keeps the PKI)
#   e2e/cluster.sh env       print `export KUBECONFIG=... PATH=...` for eval
#   e2e/cluster.sh status    what is running
#   e2e/cluster.sh restart-apiserver [S]   API server down S seconds, then back (outage tests)
#
# Settings (env): GREENJOBS_E2E_DIR (state, default e2e/.run), GREENJOBS_E2E_PORT (apiserver, 16443),
# GREENJOBS_E2E_ZONES ("GB FR"), GREENJOBS_E2E_NODES_PER_ZONE (2), GREENJOBS_E2E_GPUS (8).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=${GREENJOBS_E2E_DIR:-$HERE/.run}
PORT=${GREENJOBS_E2E_PORT:-16443}
ETCD_PORT=$((PORT - 4064))        # 12379 by default
ZONES=${GREENJOBS_E2E_ZONES:-GB FR}
PER_ZONE=${GREENJOBS_E2E_NODES_PER_ZONE:-2}
GPUS=${GREENJOBS_E2E_GPUS:-8}
KC=$D/admin.kubeconfig
log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bin_dir() { "$HERE/build.sh" all | tail -1; }

pki() {
  [ -f "$D/pki/admin.crt" ] && return 0
  mkdir -p "$D/pki"; (cd "$D/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=greenjobs-e2e-ca" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' > server.ext
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=kube-apiserver" 2>/dev/null
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 3650 -extfile server.ext 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=greenjobs-admin" 2>/dev/null
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 3650 -extfile client.ext 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null)
}

kubeconfig() {
  cat > "$KC" <<KCEOF
apiVersion: v1
kind: Config
clusters:
- name: greenjobs-e2e
  cluster:
    server: https://127.0.0.1:$PORT
    certificate-authority-data: $(base64 -w0 < "$D/pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 < "$D/pki/admin.crt")
    client-key-data: $(base64 -w0 < "$D/pki/admin.key")
contexts:
- name: greenjobs-e2e
  context: {cluster: greenjobs-e2e, user: admin}
current-context: greenjobs-e2e
KCEOF
}

# start NAME CMD...: run in its own session (process group) so `down` can stop it and its children.
start() {
  local name=$1; shift
  setsid "$@" > "$D/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$D/pids/$name"
}

alive() { [ -f "$D/pids/$1" ] && kill -0 "$(cat "$D/pids/$1")" 2>/dev/null; }

wait_for() {  # wait_for WHAT SECONDS CMD...
  local what=$1 secs=$2; shift 2
  for _ in $(seq "$((secs * 4))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  log "timed out waiting for $what; last log lines:"; tail -20 "$D/logs/"*.log >&2 || true; return 1
}

stages() {
  local b=$1 out=$D/kwok-stages.yaml
  : > "$out"
  for f in "$b"/kwok-stages/*.yaml "$HERE"/kwok/*.yaml; do printf -- '---\n' >> "$out"; cat "$f" >> "$out"; done
  echo "$out"
}

nodes() {
  local b=$1 zone i lower
  for zone in $ZONES; do
    lower=$(echo "$zone" | tr '[:upper:]' '[:lower:]')
    for i in $(seq 0 $((PER_ZONE - 1))); do
      cat <<NEOF
---
apiVersion: v1
kind: Node
metadata:
  name: gpu-$lower-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels:
    kubernetes.io/hostname: gpu-$lower-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
    greenjobs.dev/grid-zone: "$zone"
    topology.kubernetes.io/region: "region-$lower"
    nvidia.com/gpu.present: "true"
    nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3
    nvidia.com/gpu.count: "$GPUS"
status:
  capacity: {cpu: "64", memory: 512Gi, pods: "110", nvidia.com/gpu: "$GPUS"}
  allocatable: {cpu: "64", memory: 512Gi, pods: "110", nvidia.com/gpu: "$GPUS"}
NEOF
    done
  done | "$b/kubectl" --kubeconfig="$KC" create -f - >/dev/null
}

start_apiserver() {
  local b=$1
  start kube-apiserver "$b/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$PORT" \
    --tls-cert-file="$D/pki/server.crt" --tls-private-key-file="$D/pki/server.key" --client-ca-file="$D/pki/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$D/pki/sa.pub" --service-account-signing-key-file="$D/pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 --authorization-mode=Node,RBAC --allow-privileged=true \
    --endpoint-reconciler-type=none --profiling=false
}

# restart-apiserver [SECONDS]: stop the API server, keep it down SECONDS (default 3), start it again
# (etcd and everything else keep running): for tests of watch loss and API outages.
restart_apiserver() {
  local b pid; b=$(bin_dir)
  pid=$(cat "$D/pids/kube-apiserver")
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  sleep "${1:-3}"
  start_apiserver "$b"
  wait_for kube-apiserver 90 "$b/kubectl" --kubeconfig="$KC" get --raw /readyz
  log "kube-apiserver restarted"
}

up() {
  local b; b=$(bin_dir)
  mkdir -p "$D/logs" "$D/pids" "$D/etcd"
  if alive kube-apiserver && "$b/kubectl" --kubeconfig="$KC" get --raw /readyz >/dev/null 2>&1; then
    log "already up"; return 0
  fi
  down_quiet
  local t0=$SECONDS
  pki; kubeconfig
  rm -rf "$D/etcd"; mkdir -p "$D/etcd"   # a fresh cluster each time: tests rely on a known state
  start etcd "$b/etcd" --name=e2e --data-dir="$D/etcd" --unsafe-no-fsync \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls="http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster="e2e=http://127.0.0.1:$((ETCD_PORT + 1))" --listen-metrics-urls="http://127.0.0.1:$((ETCD_PORT + 2))"
  wait_for etcd 30 curl -sf "http://127.0.0.1:$((ETCD_PORT + 2))/health"
  start_apiserver "$b"
  wait_for kube-apiserver 90 "$b/kubectl" --kubeconfig="$KC" get --raw /readyz
  start kube-controller-manager "$b/kube-controller-manager" --kubeconfig="$KC" \
    --authentication-kubeconfig="$KC" --authorization-kubeconfig="$KC" \
    --bind-address=127.0.0.1 --secure-port=$((PORT + 1)) --leader-elect=false \
    --root-ca-file="$D/pki/ca.crt" --service-account-private-key-file="$D/pki/sa.key" \
    --controllers='*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle-controller' \
    --concurrent-job-syncs=10 --profiling=false
  start kube-scheduler "$b/kube-scheduler" --kubeconfig="$KC" \
    --authentication-kubeconfig="$KC" --authorization-kubeconfig="$KC" \
    --bind-address=127.0.0.1 --secure-port=$((PORT + 2)) --leader-elect=false --profiling=false
  start kwok "$b/kwok" --kubeconfig="$KC" --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --config="$(stages "$b")" --cidr=10.244.0.0/16 --node-ip=10.0.0.1 \
    --server-address=127.0.0.1:$((PORT + 3)) --node-lease-duration-seconds=40
  nodes "$b"
  wait_for "fake GPU nodes Ready" 60 "$b/kubectl" --kubeconfig="$KC" wait --for=condition=Ready node --all --timeout=1s
  wait_for "default ServiceAccount" 60 "$b/kubectl" --kubeconfig="$KC" get serviceaccount default -n default
  log "up in $((SECONDS - t0))s: $("$b/kubectl" --kubeconfig="$KC" get nodes --no-headers | wc -l) fake GPU nodes; KUBECONFIG=$KC"
}

down_quiet() {
  local name pid
  [ -d "$D/pids" ] || return 0
  for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    [ -f "$D/pids/$name" ] || continue
    pid=$(cat "$D/pids/$name")
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$D/pids/$name"
  done
}

down() { down_quiet; log "down"; }

env_() {
  local b; b=$(bin_dir)
  printf 'export KUBECONFIG=%q\nexport PATH=%q:$PATH\nexport GREENJOBS_BIN=%q\n' "$KC" "$b" "$b"
}

status() {
  local name
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
    if alive "$name"; then echo "$name: running (pid $(cat "$D/pids/$name"))"; else echo "$name: stopped"; fi
  done
}

case "${1:-}" in
  build) bin_dir ;;
  up) up ;;
  down) down ;;
  env) env_ ;;
  status) status ;;
  restart-apiserver) restart_apiserver "${2:-3}" ;;
  *) echo "usage: $0 build|up|down|env|status|restart-apiserver [seconds]" >&2; exit 2 ;;
esac
