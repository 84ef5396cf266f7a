#!/usr/bin/env bash
# A real, throw-away Kubernetes control plane for tests and the demo: etcd, kube-apiserver
# and kube-controller-manager (namespace deletion and owner-reference garbage collection; no
# kubelet, so pods never run) on free loopback ports.
#
#   hack/cluster.sh build        build the binaries once into the cache (idempotent)
#   hack/cluster.sh up           build if needed, start a cluster, install crds/,
#                                print `export KUBECONFIG=<path>` as the last line
#   hack/cluster.sh down [DIR]   stop the cluster in DIR (default: the one $KUBECONFIG names)
#                                and remove DIR
#   hack/cluster.sh stop-apiserver [DIR]   stop only its kube-apiserver (fault drills)
#   hack/cluster.sh start-apiserver [DIR]  start it again on the same port, etcd kept
#   hack/cluster.sh pause-apiserver|resume-apiserver [DIR]  SIGSTOP/SIGCONT it: connections
#                                are accepted and never answered, as by a hung server
#
# Several clusters may run at once; each lives in its own temporary directory.
# With PH_OWNER_PID set, `up` also tears the cluster down when that process exits (test
# binaries use this, so a crashed or killed test run leaves nothing behind).
set -euo pipefail

K8S_VERSION=1.36.3
ETCD_VERSION=3.6.13
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CACHE=${PIPELINE_HEALER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pipeline-healer}
BIN=$CACHE/k8s-v$K8S_VERSION-etcd-v$ETCD_VERSION
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"

build() {
  if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/etcd" ]; then
    return 0
  fi
  mkdir -p "$CACHE"
  # One build at a time: tests and scripts may call this concurrently.
  exec 9>"$CACHE/.k8s-build.lock"
  flock 9
  if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/etcd" ]; then
    return 0
  fi
  command -v go >/dev/null || die "go is required to build the control plane (see README)"
  log "building kube-apiserver, kube-controller-manager v$K8S_VERSION and etcd v$ETCD_VERSION (once; about 5 min cold)"
  local work; work=$(mktemp -d "$CACHE/.build.XXXXXX")
  local out="$work/bin"; mkdir -p "$out"
  (
    export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod
    local staging="0.${K8S_VERSION#1.}" minor; minor=$(echo "$K8S_VERSION" | cut -d. -f2)
    mkdir "$work/k8s" && cd "$work/k8s"
    go mod init example.com/k8s-bins >/dev/null 2>&1
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    [ -n "$gomod" ] || die "could not download k8s.io/kubernetes@v$K8S_VERSION"
    # k8s.io/kubernetes replaces its staging modules with ./staging paths; pin each to the
    # published version before `go get`, or module resolution fails.
    for m in $(sed -n 's|^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*|\1|p' "$gomod"); do
      go mod edit "-replace=$m=$m@v$staging"
    done
    go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION"
    go get -tool "k8s.io/kubernetes/cmd/kube-controller-manager@v$K8S_VERSION"
    local ld="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    for cmd in kube-apiserver kube-controller-manager; do
      go build -p 2 -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ld" -o "$out/$cmd" "k8s.io/kubernetes/cmd/$cmd"
    done
    # etcd needs its own wrapper module: `go install ...@v` fails because server/go.mod has replaces.
    mkdir "$work/etcd" && cd "$work/etcd"
    go mod init example.com/etcd-bin >/dev/null 2>&1
    go get -tool "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
    go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
  ) >&2
  rm -rf "$BIN" && mv "$out" "$BIN" && rm -rf "$work"
  log "control plane binaries cached in $BIN"
}

# A throw-away CA and a serving certificate for 127.0.0.1 and localhost, so clients verify
# the API server properly (tests never skip TLS verification).
make_serving_cert() {
  local pki=$1
  mkdir -p "$pki"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 30 \
    -subj "/CN=pipeline-healer-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req "${ec[@]}" -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" \
    -subj "/CN=kube-apiserver" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc" \
    "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature" \
    "basicConstraints=critical,CA:FALSE" >"$pki/apiserver.ext"
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -out "$pki/apiserver.crt" -days 30 -extfile "$pki/apiserver.ext" 2>/dev/null
}

# Starts kube-apiserver for the cluster in $1 (its etcd kept) and waits until it is ready;
# its pid goes to $1/apiserver.pid as well as $1/pids (which `down` stops).
start_apiserver() {
  local dir=$1 ep sp token
  # shellcheck disable=SC1091
  . "$dir/apiserver.env"
  "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ep" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$sp" \
    --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
    --endpoint-reconciler-type=none \
    --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-key-file="$dir/sa.key" --service-account-signing-key-file="$dir/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc \
    --authorization-mode=RBAC --token-auth-file="$dir/tokens.csv" \
    --disable-admission-plugins=ServiceAccount >>"$dir/kube-apiserver.log" 2>&1 &
  echo $! >>"$dir/pids"
  echo $! >"$dir/apiserver.pid"
  wait_alive "kube-apiserver" 60 "$dir/kube-apiserver.log" "$!" \
    curl -sfk -H "Authorization: Bearer $token" "https://127.0.0.1:$sp/readyz"
}

# Stops the cluster's kube-apiserver (a fault drill), leaving etcd and everything else up.
stop_apiserver() {
  local dir=$1 pid
  pid=$(cat "$dir/apiserver.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

cluster_dir() {
  local dir=${1:-}
  [ -n "$dir" ] || { [ -n "${KUBECONFIG:-}" ] && dir=$(dirname "$KUBECONFIG"); }
  [ -n "$dir" ] || die "name the cluster directory or set KUBECONFIG"
  case "$(basename "$dir")" in ph-cluster.*) ;; *) die "$dir is not a directory made by 'up'";; esac
  echo "$dir"
}

up() {
  build
  local dir; dir=$(mktemp -d "${TMPDIR:-/tmp}/ph-cluster.XXXXXX")
  # From here on, a failure tears down whatever was started.
  trap 'down "$dir" >/dev/null 2>&1 || true' ERR
  local ep pp sp token
  ep=$(free_port); pp=$(free_port); sp=$(free_port)
  token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')

  "$BIN/etcd" --name=default --data-dir="$dir/etcd" \
    --listen-client-urls="http://127.0.0.1:$ep" --advertise-client-urls="http://127.0.0.1:$ep" \
    --listen-peer-urls="http://127.0.0.1:$pp" --initial-advertise-peer-urls="http://127.0.0.1:$pp" \
    --initial-cluster="default=http://127.0.0.1:$pp" --unsafe-no-fsync \
    --listen-metrics-urls="" >"$dir/etcd.log" 2>&1 &
  echo $! >>"$dir/pids"
  wait_for "etcd" 30 "$dir/etcd.log" curl -sf "http://127.0.0.1:$ep/health"

  openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
  make_serving_cert "$dir/pki"
  echo "$token,admin,admin-uid,system:masters" >"$dir/tokens.csv"
  printf 'ep=%s\nsp=%s\ntoken=%s\n' "$ep" "$sp" "$token" >"$dir/apiserver.env"
  start_apiserver "$dir"

  cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$sp
    certificate-authority: $dir/pki/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: local
  context: {cluster: local, user: admin, namespace: default}
current-context: local
EOF

  "$BIN/kube-controller-manager" --kubeconfig="$dir/kubeconfig" \
    --controllers=garbage-collector-controller,namespace-controller \
    --leader-elect=false --secure-port=0 \
    --service-account-private-key-file="$dir/sa.key" >"$dir/kube-controller-manager.log" 2>&1 &
  echo $! >>"$dir/pids"

  if compgen -G "$ROOT/crds/*.yaml" >/dev/null; then
    KUBECONFIG="$dir/kubeconfig" kubectl apply --server-side -f "$ROOT/crds/" >&2
    KUBECONFIG="$dir/kubeconfig" kubectl wait --for=condition=Established --timeout=60s \
      -f "$ROOT/crds/" >&2
  fi
  trap - ERR
  [ -n "${PH_OWNER_PID:-}" ] && reap_with_owner "$PH_OWNER_PID" "$0" "$dir"
  log "cluster up in $dir (apiserver https://127.0.0.1:$sp, logs in $dir/*.log)"
  echo "export KUBECONFIG=$dir/kubeconfig"
}

down() {
  local dir; dir=$(cluster_dir "${1:-}")
  stop_pids "$dir"
  rm -rf "$dir"
  log "cluster in $dir stopped"
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  down) down "${2:-}" ;;
  stop-apiserver) stop_apiserver "$(cluster_dir "${2:-}")" ;;
  start-apiserver) start_apiserver "$(cluster_dir "${2:-}")" ;;
  pause-apiserver) kill -STOP "$(cat "$(cluster_dir "${2:-}")/apiserver.pid")" ;;
  resume-apiserver) kill -CONT "$(cat "$(cluster_dir "${2:-}")/apiserver.pid")" ;;
  *) echo "usage: $0 build|up|down|stop-apiserver|start-apiserver|pause-apiserver|resume-apiserver [DIR]" >&2; exit 2 ;;
esac
