#!/usr/bin/env bash
# CPU time per request: the proxy against the floor of its own stack
# (examples/floor_proxy.rs: actix-web + awc forwarding with no features), both
# in front of the same nginx, under the same wrk load, alternating rounds.
# CPU time is what a request costs no matter how busy the shared host is, so
# this tells changes apart where wall-clock figures swing between runs.
# Each round also sends the same request as a Responses API call
# (/v1/responses, translated to chat and back), plain and, in front of
# bench_upstream's 20-chunk streams, streamed beside a chat stream: the
# translation's cost is the difference, in the same run.
#
#   bench/cpu.sh            5 rounds of 5 s at 16 connections
#   ROUNDS=9 SECS=5 CONNS=16 bench/cpu.sh
#   bench/cpu.sh --smoke    one short round: checks that it runs
#   BEFORE=/path/to/older/siliconflow-proxy bench/cpu.sh
#                           also runs that binary beside this one, in the same
#                           rounds, and prints this one's CPU per request
#                           against it (plain and streamed chat): a change's
#                           cost, before/after, in one run
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}; SECS=${SECS:-5}; CONNS=${CONNS:-16}
if [ "${1:-}" = "--smoke" ]; then ROUNDS=1; SECS=1; fi
source bench/common.sh
build_release floor_proxy
build_release bench_upstream
NPORT=$(port); PPORT=$(port); FPORT=$(port); SPORT=$(port); QPORT=$(port)
start_nginx "$NPORT"
start_proxy "$PPORT" "http://127.0.0.1:$NPORT" "$DIR/cpu.db"; PROXY=$LAST
"$RELEASE/examples/floor_proxy" "$FPORT" "http://127.0.0.1:$NPORT" >/dev/null 2>&1 & PIDS+=($!); FLOOR=$!
wait_up "http://127.0.0.1:$FPORT/v1/user/info"
"$RELEASE/examples/bench_upstream" "$SPORT" 20 0 & PIDS+=($!)
wait_up "http://127.0.0.1:$SPORT/v1/user/info"
start_proxy "$QPORT" "http://127.0.0.1:$SPORT" "$DIR/cpu-stream.db"; STREAMER=$LAST
if [ -n "${BEFORE:-}" ]; then
  OPORT=$(port); OSPORT=$(port)
  BIN=$BEFORE start_proxy "$OPORT" "http://127.0.0.1:$NPORT" "$DIR/before.db"; OLD=$LAST
  BIN=$BEFORE start_proxy "$OSPORT" "http://127.0.0.1:$SPORT" "$DIR/before-stream.db"; OLDS=$LAST
fi

# CPU time (ns) of the log writer's thread (named log-writer) of pid $1.
writer_ns() {
  local t v=0
  for t in /proc/"$1"/task/*; do [ "$(cat "$t/comm")" = log-writer ] && v=$(cut -d' ' -f1 "$t/schedstat"); done
  echo "$v"
}
# One round against pid $1 at URL $2 with wrk script $3 (BENCH_STREAM as
# set): prints "ns_per_request requests writer_ns_per_request".
round() {
  local pid=$1 url=$2 a b n wa wb
  export WRK_SCRIPT=$3
  wrk -t1 -c"$CONNS" -d1s -s "$WRK_SCRIPT" "$url" >/dev/null        # warm up
  sleep 1.2                                                         # the log writer's flush interval
  a=$(cpu_ns "$pid"); wa=$(writer_ns "$pid")
  n=$(wrk_json -t1 -c"$CONNS" -d"${SECS}s" "$url" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  sleep 1.2                                                         # so the rows are written, and paid for
  b=$(cpu_ns "$pid"); wb=$(writer_ns "$pid")
  echo "$(( (b - a) / n )) $n $(( (wb - wa) / n ))"
}
us() { echo "$(($1 / 1000)).$(( ($1 % 1000) / 100 ))"; }   # ns -> µs with one decimal
echo "floor: examples/floor_proxy; proxy: $BIN; $ROUNDS rounds of ${SECS}s at $CONNS connections, alternating"
F=(); P=(); W=(); R=(); SC=(); SR=(); OP=(); OW=(); OSC=(); P2=(); NW=()
chat=bench/chat.lua; resp=bench/responses.lua
for i in $(seq "$ROUNDS"); do
  export BENCH_STREAM=0
  read -r f fn _ < <(round "$FLOOR" "http://127.0.0.1:$FPORT/v1/chat/completions" "$chat")
  read -r p pn w < <(round "$PROXY" "http://127.0.0.1:$PPORT/v1/chat/completions" "$chat")
  read -r r rn _ < <(round "$PROXY" "http://127.0.0.1:$PPORT/v1/responses" "$resp")
  export BENCH_STREAM=1
  read -r sc scn _ < <(round "$STREAMER" "http://127.0.0.1:$QPORT/v1/chat/completions" "$chat")
  read -r sr srn _ < <(round "$STREAMER" "http://127.0.0.1:$QPORT/v1/responses" "$resp")
  if [ -n "${BEFORE:-}" ]; then
    # The older binary, then this one again, so that each is measured between the other's rounds.
    export BENCH_STREAM=0
    read -r op opn ow < <(round "$OLD" "http://127.0.0.1:$OPORT/v1/chat/completions" "$chat")
    read -r p2 _ w2 < <(round "$PROXY" "http://127.0.0.1:$PPORT/v1/chat/completions" "$chat")
    export BENCH_STREAM=1
    read -r osc _ _ < <(round "$OLDS" "http://127.0.0.1:$OSPORT/v1/chat/completions" "$chat")
    echo "round $i, before: $BEFORE plain $(us "$op") µs/request ($opn requests; log writer $(us "$ow")), this one again $(us "$p2") µs; streams: before $(us "$osc") µs"
    OP+=("$op"); OW+=("$ow"); OSC+=("$osc"); P2+=("$p2"); NW+=("$w2")
  fi
  echo "round $i: floor $(us "$f") µs/request ($fn requests), proxy $(us "$p") µs/request ($pn requests; log writer $(us "$w")), responses $(us "$r") µs ($rn); streams of 20 chunks: chat $(us "$sc") µs ($scn), responses $(us "$sr") µs ($srn)"
  F+=("$f"); P+=("$p"); W+=("$w"); R+=("$r"); SC+=("$sc"); SR+=("$sr")
done
python3 - "${F[*]}" "${P[*]}" "${W[*]}" "${R[*]}" "${SC[*]}" "${SR[*]}" "${OP[*]:-}" "${OW[*]:-}" "${OSC[*]:-}" "${P2[*]:-}" "${NW[*]:-}" <<'PY'
import statistics, sys
f, p, w, r, sc, sr = ([float(x) / 1000 for x in a.split()] for a in sys.argv[1:7])
mf, mp, mw = statistics.median(f), statistics.median(p), statistics.median(w)
print(f"median: floor {mf:.1f} µs, proxy {mp:.1f} µs CPU per request ({mp / mf:.2f}x the floor; "
      f"log writer {mw:.1f} µs of it, request path {mp - mw:.1f} µs)")
# Per round, the Responses call against the chat call just before it on the same proxy.
plain = statistics.median(b / a for a, b in zip(p, r))
streamed = statistics.median(b / a for a, b in zip(sc, sr))
print(f"/v1/responses against /v1/chat/completions, same request, same run (median of the per-round ratios): "
      f"plain {statistics.median(r):.1f} µs = {plain:.3f}x chat, "
      f"streamed (20 chunks) {statistics.median(sr):.1f} µs = {streamed:.3f}x chat {statistics.median(sc):.1f} µs "
      f"(target: within 1.15x)")
op, ow, osc, p2, nw = ([float(x) / 1000 for x in a.split()] for a in sys.argv[7:12])
if op:
    # This binary's two plain rounds of each round bracket the older one's.
    now = [(a + b) / 2 for a, b in zip(p, p2)]
    now_path = [(a - wa + b - wb) / 2 for a, wa, b, wb in zip(p, w, p2, nw)]
    plain = statistics.median(n / o for n, o in zip(now, op))
    path = statistics.median(n / (o - wo) for n, o, wo in zip(now_path, op, ow))
    streamed = statistics.median(n / o for n, o in zip(sc, osc))
    print(f"against the older binary, same rounds (median of the per-round ratios): plain chat "
          f"{statistics.median(now):.1f} µs vs {statistics.median(op):.1f} µs = {plain:.3f}x; request path "
          f"alone (log writer left out) {path:.3f}x; streamed chat {statistics.median(sc):.1f} µs vs "
          f"{statistics.median(osc):.1f} µs = {streamed:.3f}x")
PY
