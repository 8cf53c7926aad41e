# Shared by the benchmark scripts (sourced, not run): tools, ports, the nginx
# fake upstream and the proxy under test. Expects to run from the repo root.

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk || ! need sqlite3 || ! need curl; then
  echo "installing nginx, wrk, sqlite3, curl (Debian packages) ..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk sqlite3 curl >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true

# Builds the release proxy (unless BIN names one) and the example $1, both
# in the release profile; sets BIN and RELEASE (the directory they are in).
build_release() {
  RELEASE=${CARGO_TARGET_DIR:-target}/release
  if [ -z "${BIN:-}" ]; then
    cargo build --release --bin siliconflow-proxy --example "$1" 2>&1 | tail -1
    BIN=$RELEASE/siliconflow-proxy
  else
    cargo build --release --example "$1" 2>&1 | tail -1
  fi
}

DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  [ -f "$DIR/nginx.pid" ] && kill -QUIT "$(cat "$DIR/nginx.pid")" 2>/dev/null || true
  sleep 0.5; rm -rf "$DIR"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 200); do curl -fs -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "not up: $1"; exit 1; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Samples a process's RSS every 100 ms into a file until the file $2.stop exists.
sample_rss() { local pid=$1 out=$2 max=0 r; while [ ! -e "$out.stop" ]; do r=$(rss_kb "$pid"); [ "$r" -gt "$max" ] && max=$r; sleep 0.1; done; echo "$max" > "$out"; }
# Samples the proxy's request-log queue (GET /health on port $1) every 200 ms
# into a file until the file $2.stop exists: the largest value seen.
sample_queue() {
  local port=$1 out=$2 max=0 q
  while [ ! -e "$out.stop" ]; do
    q=$(curl -fs "http://127.0.0.1:$port/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["request_log"]["queued"])' 2>/dev/null || echo 0)
    [ "$q" -gt "$max" ] && max=$q
    sleep 0.2
  done
  echo "$max" > "$out"
}
# CPU time (ns) a process has used so far, all threads.
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'; }

# nginx answering /v1/user/info, /v1/models and the canned ~500-byte completion on $1;
# with $2 = gone, /v1/user/info answers 410 as SiliconFlow China's does (keys are then
# checked with /v1/models and each is its own account).
start_nginx() {
  local completion userinfo status=200
  completion=$(sed -n 's/^pub const COMPLETION: &str = r#"\(.*\)"#;$/\1/p' examples/bench_upstream.rs)
  userinfo='{"code":20000,"message":"OK","status":true,"data":{"id":"bench-account","name":"bench","balance":"0.00","chargeBalance":"1000.00","totalBalance":"1000.00"}}'
  if [ "${2:-}" = gone ]; then status=410; userinfo='{"code":20410,"message":"This API has been deprecated","data":null}'; fi
  cat > "$DIR/nginx.conf" <<NGINX
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/nginx-error.log;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$1 backlog=4096;
    location = /v1/user/info { default_type application/json; return $status '$userinfo'; }
    location = /v1/models { default_type application/json; return 200 '{"object":"list","data":[]}'; }
    location = /v1/chat/completions { default_type application/json; return 200 '$completion'; }
  }
}
NGINX
  "$NGINX" -c "$DIR/nginx.conf" -p "$DIR" -e "$DIR/nginx-error.log"
  wait_up "http://127.0.0.1:$1/v1/models"
}

# The proxy ($BIN) on port $1 in front of upstream $2, database $3, one key
# imported, logging as in production. Sets LAST to its pid.
start_proxy() {
  HOST=127.0.0.1 PORT=$1 SILICONFLOW_BASE_URL=$2 DATABASE_URL="sqlite://$3" API_KEY=bench-client-key \
    ADMIN_PASSWORD=bench AUTO_REFRESH_INTERVAL=0 RUST_LOG=${RUST_LOG:-info} "$BIN" >"$3.log" 2>&1 &
  PIDS+=($!); LAST=$!
  wait_up "http://127.0.0.1:$1/health"
  curl -fs -u admin:bench -H 'Content-Type: application/json' -d '{"keys":"sk-bench-000000000000000000000001"}' \
    "http://127.0.0.1:$1/import_keys" | grep -q '"added":1' || { echo "import failed"; exit 1; }
}
# WRK_SCRIPT: the request (bench/chat.lua, or bench/responses.lua for the Responses API).
wrk_json() { wrk "$@" -s "${WRK_SCRIPT:-bench/chat.lua}" | sed -n 's/^JSON //p'; }
