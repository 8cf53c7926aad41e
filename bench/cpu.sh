#!/usr/bin/env bash
# CPU time per request: the proxy against the floor of its own stack
# (examples/floor_proxy.rs: actix-web + awc forwarding with no features), both
# in front of the same nginx, under the same wrk load, alternating rounds.
# CPU time is what a request costs no matter how busy the shared host is, so
# this tells changes apart where wall-clock figures swing between runs.
#
#   bench/cpu.sh            5 rounds of 5 s at 16 connections
#   ROUNDS=9 SECS=5 CONNS=16 bench/cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}; SECS=${SECS:-5}; CONNS=${CONNS:-16}
source bench/common.sh
build_release floor_proxy
NPORT=$(port); PPORT=$(port); FPORT=$(port)
start_nginx "$NPORT"
start_proxy "$PPORT" "http://127.0.0.1:$NPORT" "$DIR/cpu.db"; PROXY=$LAST
"$RELEASE/examples/floor_proxy" "$FPORT" "http://127.0.0.1:$NPORT" >/dev/null 2>&1 & PIDS+=($!); FLOOR=$!
wait_up "http://127.0.0.1:$FPORT/v1/user/info"

# CPU time (ns) of the log writer's thread (named log-writer) of pid $1.
writer_ns() {
  local t v=0
  for t in /proc/"$1"/task/*; do [ "$(cat "$t/comm")" = log-writer ] && v=$(cut -d' ' -f1 "$t/schedstat"); done
  echo "$v"
}
# One round against pid $1 on port $2: prints "ns_per_request requests writer_ns_per_request".
round() {
  local pid=$1 url="http://127.0.0.1:$2/v1/chat/completions" a b n wa wb
  wrk -t1 -c"$CONNS" -d1s -s bench/chat.lua "$url" >/dev/null      # warm up
  sleep 1.2                                                         # the log writer's flush interval
  a=$(cpu_ns "$pid"); wa=$(writer_ns "$pid")
  n=$(wrk_json -t1 -c"$CONNS" -d"${SECS}s" "$url" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  sleep 1.2                                                         # so the rows are written, and paid for
  b=$(cpu_ns "$pid"); wb=$(writer_ns "$pid")
  echo "$(( (b - a) / n )) $n $(( (wb - wa) / n ))"
}
us() { echo "$(($1 / 1000)).$(( ($1 % 1000) / 100 ))"; }   # ns -> µs with one decimal
echo "floor: examples/floor_proxy; proxy: $BIN; $ROUNDS rounds of ${SECS}s at $CONNS connections, alternating"
F=(); P=(); W=()
for i in $(seq "$ROUNDS"); do
  read -r f fn _ < <(round "$FLOOR" "$FPORT")
  read -r p pn w < <(round "$PROXY" "$PPORT")
  echo "round $i: floor $(us "$f") µs/request ($fn requests), proxy $(us "$p") µs/request ($pn requests; log writer $(us "$w"))"
  F+=("$f"); P+=("$p"); W+=("$w")
done
python3 - "${F[*]}" "${P[*]}" "${W[*]}" <<'PY'
import statistics, sys
f, p, w = ([float(x) / 1000 for x in a.split()] for a in sys.argv[1:4])
mf, mp, mw = statistics.median(f), statistics.median(p), statistics.median(w)
print(f"median: floor {mf:.1f} µs, proxy {mp:.1f} µs CPU per request ({mp / mf:.2f}x the floor; "
      f"log writer {mw:.1f} µs of it, request path {mp - mw:.1f} µs)")
PY
