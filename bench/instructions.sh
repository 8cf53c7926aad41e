#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: the same for the
# same binary and inputs whatever else the shared machine is doing, so small
# differences between routes can be told apart where CPU-time figures swing
# (bench/cpu.sh). Each route is run twice under callgrind (N1 and N2
# requests, one kept-alive connection) and the difference divided by N2-N1,
# so start-up and shut-down cancel out. Compares /v1/responses with
# /v1/chat/completions for the same request, plain (nginx's canned
# completion) and streamed (bench_upstream's 20-chunk streams).
#
#   bench/instructions.sh           N1=100 N2=1100 (about 6 minutes)
#   bench/instructions.sh --smoke   N1=5 N2=25: checks that it runs
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${N1:-100}; N2=${N2:-1100}
if [ "${1:-}" = "--smoke" ]; then N1=5; N2=25; fi
source bench/common.sh
if ! need valgrind; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
build_release bench_upstream
NPORT=$(port); SPORT=$(port)
start_nginx "$NPORT"
"$RELEASE/examples/bench_upstream" "$SPORT" 20 0 & PIDS+=($!)
wait_up "http://127.0.0.1:$SPORT/v1/user/info"

# Instructions the proxy ran, start to stop, serving $3 requests of kind $1
# (chat|responses) with stream=$2 (0|1).
count() {
  local kind=$1 stream=$2 n=$3 port upstream out pid
  port=$(port); out="$DIR/cg.$kind.$stream.$n"
  upstream="http://127.0.0.1:$NPORT"; [ "$stream" = 1 ] && upstream="http://127.0.0.1:$SPORT"
  HOST=127.0.0.1 PORT=$port SILICONFLOW_BASE_URL=$upstream DATABASE_URL="sqlite://$out.db" API_KEY=bench-client-key \
    ADMIN_PASSWORD=bench AUTO_REFRESH_INTERVAL=0 RUST_LOG=info \
    valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" >"$out.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fs -u admin:bench -H 'Content-Type: application/json' -d '{"keys":"sk-bench-000000000000000000000001"}' \
    "http://127.0.0.1:$port/import_keys" | grep -q '"added":1' || { echo "import failed" >&2; exit 1; }
  python3 - "$kind" "$stream" "$port" "$n" <<'PY'
import http.client, re, sys
kind, stream, port, n = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
lua = open(f"bench/{kind}.lua").read()
body = re.search(r"^wrk.body = '(.*)'$", lua, re.M).group(1)
if stream:
    body = body.replace('"stream":false', '"stream":true')
path = "/v1/chat/completions" if kind == "chat" else "/v1/responses"
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("POST", path, body, {"Authorization": "Bearer bench-client-key", "Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    assert r.status == 200 and (b"completed" in data or b"chatcmpl" in data), (r.status, data[:200])
PY
  sleep 2   # the log writer's flush: its rows are part of each request's cost
  kill -TERM "$pid"; wait "$pid" || true
  sed -n 's/^summary: //p' "$out"
}
declare -A PER
for stream in 0 1; do
  for kind in chat responses; do
    a=$(count "$kind" "$stream" "$N1"); b=$(count "$kind" "$stream" "$N2")
    PER[$kind.$stream]=$(( (b - a) / (N2 - N1) ))
    echo "$kind stream=$stream: $a instructions for $N1 requests, $b for $N2: $(( (b - a) / (N2 - N1) )) per request"
  done
done
python3 - "${PER[chat.0]}" "${PER[responses.0]}" "${PER[chat.1]}" "${PER[responses.1]}" <<'PY'
import sys
c0, r0, c1, r1 = (int(x) for x in sys.argv[1:5])
print(f"plain: chat {c0:,} instructions per request, responses {r0:,} = {r0 / c0:.3f}x")
print(f"streamed (20 chunks): chat {c1:,}, responses {r1:,} = {r1 / c1:.3f}x")
PY
