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
#   e2e/cluster.sh restart-controller-manager   a fresh kube-controller-manager (after outage tests)
#   e2e/cluster.sh kueue-up    on a running control plane: Kueue + JobSet controller (host processes,
#                              webhooks by URL on loopback), their CRDs, and the CRDs of TrainJob,
#                              PyTorchJob and RayJob (no controllers for those); builds them if needed
#   e2e/cluster.sh workload-crds  only the CRDs of JobSet, TrainJob, PyTorchJob, RayJob (no controllers)
#   e2e/cluster.sh kueue-down  stop Kueue + JobSet and REMOVE their webhook configurations (else every
#                              Job create fails on the unreachable webhook)
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

# stop_proc NAME [SECONDS]: TERM its process group, KILL whatever is left after SECONDS (default 10).
stop_proc() {
  local pid; [ -f "$D/pids/$1" ] || return 0
  pid=$(cat "$D/pids/$1")
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq "$((${2:-10} * 4))"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -KILL -- "-$pid" 2>/dev/null || true
}

wait_for() {  # wait_for WHAT SECONDS CMD...
  local what=$1 secs=$2; shift 2
  for _ in $(seq "$((secs * 4))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  log "timed out waiting for $what; last log lines:"; tail -n 20 "$D/logs/"*.log >&2 || true; return 1
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

start_controller_manager() {
  local b=$1
  start kube-controller-manager "$b/kube-controller-manager" --kubeconfig="$KC" \
    --authentication-kubeconfig="$KC" --authorization-kubeconfig="$KC" \
    --bind-address=127.0.0.1 --secure-port=$((PORT + 1)) --leader-elect=false \
    --root-ca-file="$D/pki/ca.crt" --service-account-private-key-file="$D/pki/sa.key" \
    --controllers='*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle-controller' \
    --concurrent-job-syncs=10 --profiling=false
}

# restart-controller-manager: a fresh kube-controller-manager. After API-server restarts its Job
# controller can trail what it wrote for minutes ("read version ... is not as new as written version")
# and mark Jobs Complete late; the outage tests restart it so that the tests after them start clean.
restart_controller_manager() {
  local b; b=$(bin_dir)
  stop_proc kube-controller-manager 20
  start_controller_manager "$b"
  wait_for kube-controller-manager 60 curl -sfk "https://127.0.0.1:$((PORT + 1))/healthz"
  log "kube-controller-manager restarted"
}

# restart-apiserver [SECONDS]: stop the API server, keep it down SECONDS (default 3), start it again
# (etcd and everything else keep running): for tests of watch loss and API outages.
restart_apiserver() {
  local b; b=$(bin_dir)
  stop_proc kube-apiserver 20
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
  start_controller_manager "$b"
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
  local name
  [ -d "$D/pids" ] || return 0
  for name in kueue jobset kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_proc "$name"
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
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler kwok kueue jobset; do
    if alive "$name"; then echo "$name: running (pid $(cat "$D/pids/$name"))"; else echo "$name: stopped"; fi
  done
}

# ---------------------------------------------------------------- Kueue mode (design/KUEUE.md)
KQ=$D/kueue
KUEUE_WEBHOOK=$((PORT + 10)) KUEUE_HEALTH=$((PORT + 11)) KUEUE_METRICS=$((PORT + 12))
JOBSET_WEBHOOK=$((PORT + 13)) JOBSET_HEALTH=$((PORT + 14)) JOBSET_METRICS=$((PORT + 15))
KUEUE_CONVERTED="localqueues clusterqueues cohorts workloads multikueueclusters"

# mod_dir MODULE@VERSION: the module's source folder (downloaded once into the Go module cache).
mod_dir() { GOFLAGS= go mod download -json "$1" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])'; }

kq_pki() {
  [ -f "$KQ/pki/tls.crt" ] && return 0
  mkdir -p "$KQ/pki"; (cd "$KQ/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj /CN=greenjobs-kueue-webhook-ca 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n' > san.ext
  openssl req -newkey rsa:2048 -nodes -keyout tls.key -out tls.csr -subj /CN=127.0.0.1 2>/dev/null
  openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt -days 3650 -extfile san.ext 2>/dev/null)
  local d; for d in kueue kueue-metrics jobset jobset-metrics; do mkdir -p "$KQ/certs/$d"; cp "$KQ/pki/tls.crt" "$KQ/pki/tls.key" "$KQ/certs/$d/"; done
}

kq_config() {
  mkdir -p "$KQ/config"
  cat > "$KQ/config/kueue.yaml" <<KEOF
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: kueue-system
health: {healthProbeBindAddress: 127.0.0.1:$KUEUE_HEALTH}
metrics: {bindAddress: 127.0.0.1:$KUEUE_METRICS}
webhook: {host: 127.0.0.1, port: $KUEUE_WEBHOOK, certDir: $KQ/certs/kueue}
leaderElection: {leaderElect: false}
internalCertManagement: {enable: false}
clientConnection: {qps: 50, burst: 100}
featureGates: {VisibilityOnDemand: false}
integrations:
  frameworks: [batch/job, jobset.x-k8s.io/jobset]
KEOF
  cat > "$KQ/config/jobset.yaml" <<JEOF
apiVersion: config.jobset.x-k8s.io/v1alpha1
kind: Configuration
health: {healthProbeBindAddress: 127.0.0.1:$JOBSET_HEALTH}
metrics: {bindAddress: 127.0.0.1:$JOBSET_METRICS, certDir: $KQ/certs/jobset-metrics}
webhook: {host: 127.0.0.1, port: $JOBSET_WEBHOOK, certDir: $KQ/certs/jobset}
leaderElection: {leaderElect: false}
internalCertManagement: {enable: false}
JEOF
  # Kueue reads its metrics certificate from the hard-coded /etc/kueue/metrics/certs: give only the
  # Kueue process that path, through an overlay on /etc in a private mount namespace.
  cat > "$KQ/run-kueue.sh" <<REOF
#!/bin/sh
set -e
O=$KQ/etc-overlay
mkdir -p "\$O/upper/kueue/metrics/certs" "\$O/work"
cp $KQ/certs/kueue-metrics/tls.crt $KQ/certs/kueue-metrics/tls.key "\$O/upper/kueue/metrics/certs/"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=\$O/upper,workdir=\$O/work" /etc
exec "\$1/kueue" --kubeconfig=$KC --config=$KQ/config/kueue.yaml --zap-log-level=info
REOF
  chmod +x "$KQ/run-kueue.sh"
}

kueue_up() {
  local b kb k j t0=$SECONDS
  b=$(bin_dir)
  "$b/kubectl" --kubeconfig="$KC" get --raw /readyz >/dev/null 2>&1 || { log "control plane not up: run $0 up first"; return 1; }
  kb=$("$HERE/build.sh" kueue | tail -1)
  . "$HERE/versions.env"
  k=$(mod_dir "sigs.k8s.io/kueue@$KUEUE_VERSION"); j=$(mod_dir "sigs.k8s.io/jobset@$JOBSET_VERSION")
  kq_pki; kq_config
  local kc=("$b/kubectl" --kubeconfig="$KC")
  # Server-side: the workloads CRD (1.4 MB) is too big for the last-applied annotation.
  "${kc[@]}" apply --server-side --force-conflicts -f "$k/config/components/crd/bases/" >/dev/null
  workload_crds
  crds_established
  "${kc[@]}" get namespace kueue-system >/dev/null 2>&1 || "${kc[@]}" create namespace kueue-system >/dev/null
  alive kueue || { local unshare=(unshare -m --propagation private)
    [ "$(id -u)" = 0 ] || unshare=(unshare -rm --propagation private)   # rootless: a user namespace
    KUBECONFIG=$KC start kueue "${unshare[@]}" "$KQ/run-kueue.sh" "$kb"; }
  wait_for kueue 60 curl -sf "http://127.0.0.1:$KUEUE_HEALTH/readyz"
  alive jobset || KUBECONFIG=$KC start jobset "$kb/jobset" --kubeconfig="$KC" --config="$KQ/config/jobset.yaml" --zap-devel=false
  wait_for jobset 60 curl -sf "http://127.0.0.1:$JOBSET_HEALTH/readyz"
  # Webhooks only once the managers serve: they are failurePolicy Fail.
  python3 "$HERE/kueue/gen_webhooks.py" "$k/config/components/webhook/manifests.yaml" kueue \
    "https://127.0.0.1:$KUEUE_WEBHOOK" "$KQ/pki/ca.crt" \
    mclusterqueue.kb.io,mresourceflavor.kb.io,mworkload.kb.io,mjob.kb.io,mjobset.kb.io,vclusterqueue.kb.io,vcohort.kb.io,vresourceflavor.kb.io,vworkload.kb.io,vjob.kb.io,vjobset.kb.io \
    > "$KQ/config/kueue-webhooks.yaml"
  python3 "$HERE/kueue/gen_webhooks.py" "$j/config/components/webhook/manifests.yaml" jobset \
    "https://127.0.0.1:$JOBSET_WEBHOOK" "$KQ/pki/ca.crt" mjobset.kb.io,mpod.kb.io,vjobset.kb.io,vpod.kb.io pod \
    > "$KQ/config/jobset-webhooks.yaml"
  "${kc[@]}" apply -f "$KQ/config/kueue-webhooks.yaml" >/dev/null
  "${kc[@]}" apply -f "$KQ/config/jobset-webhooks.yaml" >/dev/null
  local cab crd; cab=$(base64 -w0 < "$KQ/pki/ca.crt")
  for crd in $KUEUE_CONVERTED; do
    "${kc[@]}" patch crd "$crd.kueue.x-k8s.io" --type=merge -p "{\"spec\":{\"conversion\":{\"strategy\":\"Webhook\",\"webhook\":{\"conversionReviewVersions\":[\"v1\"],\"clientConfig\":{\"url\":\"https://127.0.0.1:$KUEUE_WEBHOOK/convert\",\"caBundle\":\"$cab\"}}}}}" >/dev/null
  done
  log "kueue $KUEUE_VERSION + jobset $JOBSET_VERSION up in $((SECONDS - t0))s (webhooks on 127.0.0.1:$KUEUE_WEBHOOK, :$JOBSET_WEBHOOK)"
}

# The CRDs of the other training kinds (and JobSet's), from their Go modules; no controllers.
workload_crds() {
  . "$HERE/versions.env"
  local t o r j
  j=$(mod_dir "sigs.k8s.io/jobset@$JOBSET_VERSION")
  t=$(mod_dir "github.com/kubeflow/trainer/v2@$TRAINER_VERSION")
  o=$(mod_dir "github.com/kubeflow/training-operator@$TRAINING_OPERATOR_VERSION")
  r=$(mod_dir "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION")
  "$(bin_dir)/kubectl" --kubeconfig="$KC" apply --server-side --force-conflicts \
    -f "$t/manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml" \
    -f "$t/manifests/base/crds/trainer.kubeflow.org_trainingruntimes.yaml" \
    -f "$t/manifests/base/crds/trainer.kubeflow.org_clustertrainingruntimes.yaml" \
    -f "$o/manifests/base/crds/kubeflow.org_pytorchjobs.yaml" \
    -f "$r/config/crd/bases/ray.io_rayjobs.yaml" -f "$r/config/crd/bases/ray.io_rayclusters.yaml" \
    -f "$j/config/components/crd/bases/" >/dev/null
}

# Every CRD Established (`kubectl wait --all` errs on a CRD that has no status yet, and is slow).
crds_established() {
  local k; k="$(bin_dir)/kubectl"
  all_established() {
    ! "$k" --kubeconfig="$KC" get crd -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Established")].status}{"\n"}{end}' \
      | grep -qv '=True$'
  }
  wait_for "CRDs Established" 120 all_established
}

kueue_down() {
  local b name crd; b=$(bin_dir)
  local kc=("$b/kubectl" --kubeconfig="$KC")
  if "${kc[@]}" get --raw /readyz >/dev/null 2>&1; then
    # First the webhooks (failurePolicy Fail: with nobody serving them every Job create would fail),
    # then the conversion webhooks back to None.
    "${kc[@]}" delete mutatingwebhookconfiguration kueue-mutating-webhook-configuration jobset-mutating-webhook-configuration --ignore-not-found >/dev/null
    "${kc[@]}" delete validatingwebhookconfiguration kueue-validating-webhook-configuration jobset-validating-webhook-configuration --ignore-not-found >/dev/null
    for crd in $KUEUE_CONVERTED; do
      "${kc[@]}" patch crd "$crd.kueue.x-k8s.io" --type=json -p '[{"op":"replace","path":"/spec/conversion","value":{"strategy":"None"}}]' >/dev/null 2>&1 || true
    done
  fi
  for name in kueue jobset; do
    stop_proc "$name"
    rm -f "$D/pids/$name"
  done
  log "kueue and jobset down, webhooks removed"
}

case "${1:-}" in
  build) bin_dir ;;
  up) up ;;
  down) down ;;
  env) env_ ;;
  status) status ;;
  restart-apiserver) restart_apiserver "${2:-3}" ;;
  restart-controller-manager) restart_controller_manager ;;
  kueue-up) kueue_up ;;
  kueue-down) kueue_down ;;
  workload-crds) workload_crds; crds_established ;;
  *) echo "usage: $0 build|up|down|env|status|restart-apiserver [seconds]|kueue-up|kueue-down|workload-crds" >&2; exit 2 ;;
esac
