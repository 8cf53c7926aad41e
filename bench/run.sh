#!/usr/bin/env bash
# The benchmark: the proxy against calling a fast fake upstream directly, on
# the same machine, in the same run. Prints one table (see BENCHMARKS.md).
#
#   bench/run.sh            full run (about 7 minutes)
#   bench/run.sh --smoke    seconds-long run that only checks that everything works
#   KEYS=10000 bench/run.sh cost against pool size instead: 1, 1,000 and 10,000 keys
#                           (bench/pool_size.sh)
#   DATABASE=postgres bench/run.sh  SQLite against PostgreSQL, same run (bench/pg.sh)
#
# Env: DURATION (s per wrk run, 10), ROUNDS (5), STREAMS (serial streams, 20),
#      CONCURRENT_STREAMS (1000), BIN (proxy binary; default: release build).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${KEYS:-}" ]; then exec bash bench/pool_size.sh "$@"; fi
if [ "${DATABASE:-}" = postgres ]; then exec bash bench/pg.sh "$@"; fi
SMOKE=0; [ "${1:-}" = "--smoke" ] && SMOKE=1
DUR=${DURATION:-10}; STREAMS=${STREAMS:-20}; CONC=${CONCURRENT_STREAMS:-1000}; ROUNDS=${ROUNDS:-5}
if [ "$SMOKE" = 1 ]; then DUR=1; STREAMS=3; CONC=50; ROUNDS=1; fi

source bench/common.sh
build_release bench_upstream
FAKE=$RELEASE/examples/bench_upstream

NPORT=$(port); SPORT=$(port); PPORT=$(port); QPORT=$(port)
start_nginx "$NPORT"
"$FAKE" "$SPORT" 64 20 & PIDS+=($!)
wait_up "http://127.0.0.1:$SPORT/v1/user/info"

echo "proxy: $BIN; fake upstreams: nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') (plain), bench_upstream (streams)"
start_proxy "$PPORT" "http://127.0.0.1:$NPORT" "$DIR/plain.db"; PROXY_A=$LAST
sleep 1; RSS_IDLE=$(rss_kb "$PROXY_A")

# Direct and proxied alternate, ROUNDS times each; the table takes the median
# of the per-round differences and ratios, so one noisy moment on a shared
# machine does not decide it.
echo "serial, 1 connection: $ROUNDS rounds of ${DUR}s, direct and proxied alternating ..."
S_DIRECT=""; S_PROXY=""
for _ in $(seq "$ROUNDS"); do
  S_DIRECT+="$(wrk_json -t1 -c1 -d"${DUR}s" --latency "http://127.0.0.1:$NPORT/v1/chat/completions");"
  S_PROXY+="$(wrk_json -t1 -c1 -d"${DUR}s" --latency "http://127.0.0.1:$PPORT/v1/chat/completions");"
done
echo "64 connections: $ROUNDS rounds of ${DUR}s ..."
T_DIRECT=""; T_PROXY=""
sample_rss "$PROXY_A" "$DIR/rss_load" & SAMPLER=$!
sample_queue "$PPORT" "$DIR/queue_load" & QSAMPLER=$!
for _ in $(seq "$ROUNDS"); do
  T_DIRECT+="$(wrk_json -t2 -c64 -d"${DUR}s" --latency "http://127.0.0.1:$NPORT/v1/chat/completions");"
  T_PROXY+="$(wrk_json -t2 -c64 -d"${DUR}s" --latency "http://127.0.0.1:$PPORT/v1/chat/completions");"
done
touch "$DIR/rss_load.stop" "$DIR/queue_load.stop"; wait $SAMPLER $QSAMPLER
RSS_LOAD=$(cat "$DIR/rss_load"); QUEUE_MAX=$(cat "$DIR/queue_load")
sleep 2; RSS_AFTER=$(rss_kb "$PROXY_A")

echo "streams: $STREAMS serial on new connections, $STREAMS on one kept-alive connection, then $CONC at once ..."
start_proxy "$QPORT" "http://127.0.0.1:$SPORT" "$DIR/stream.db"; PROXY_B=$LAST
ST_DIRECT=$(python3 bench/stream_probe.py serial "http://127.0.0.1:$SPORT/v1/chat/completions" "$STREAMS")
ST_PROXY=$(python3 bench/stream_probe.py serial "http://127.0.0.1:$QPORT/v1/chat/completions" "$STREAMS")
KA_DIRECT=$(python3 bench/stream_probe.py keepalive "http://127.0.0.1:$SPORT/v1/chat/completions" "$STREAMS")
KA_PROXY=$(python3 bench/stream_probe.py keepalive "http://127.0.0.1:$QPORT/v1/chat/completions" "$STREAMS")
RSS_B_IDLE=$(rss_kb "$PROXY_B")
sample_rss "$PROXY_B" "$DIR/rss_streams" & SAMPLER=$!
CONC_RESULT=$(python3 bench/stream_probe.py concurrent "http://127.0.0.1:$QPORT/v1/chat/completions" "$CONC")
touch "$DIR/rss_streams.stop"; wait $SAMPLER; RSS_STREAMS=$(cat "$DIR/rss_streams")
sleep 2; RSS_B_AFTER=$(rss_kb "$PROXY_B")

# Stop the proxies (SIGTERM flushes the log), then count rows.
kill -TERM "$PROXY_A" "$PROXY_B"; wait "$PROXY_A" "$PROXY_B" 2>/dev/null || true
ROWS_A=$(sqlite3 "$DIR/plain.db" "select count(*), coalesce(sum(aborted = 0 and status = 200), 0) from request_logs")
ROWS_B=$(sqlite3 "$DIR/stream.db" "select count(*), coalesce(sum(aborted = 0 and status = 200 and total_tokens = 106), 0) from request_logs")

python3 - "$S_DIRECT" "$S_PROXY" "$T_DIRECT" "$T_PROXY" "$ST_DIRECT" "$ST_PROXY" "$CONC_RESULT" \
  "$RSS_IDLE" "$RSS_LOAD" "$RSS_AFTER" "$RSS_B_IDLE" "$RSS_STREAMS" "$RSS_B_AFTER" "$ROWS_A" "$ROWS_B" "$STREAMS" "$CONC" "$KA_DIRECT" "$KA_PROXY" "$QUEUE_MAX" <<'PY'
import json, sys
a = sys.argv[1:]
def rounds(text):
    runs = [json.loads(x) for x in text.split(";") if x.strip()]
    return runs
def median_by(runs, key):
    runs = sorted(runs, key=lambda r: r[key])
    return runs[len(runs) // 2]
sd_r, sp_r, td_r, tp_r = rounds(a[0]), rounds(a[1]), rounds(a[2]), rounds(a[3])
rps = lambda r: r["requests"] / (r["duration_us"] / 1e6)
for r in td_r + tp_r:
    r["rps"] = rps(r)
sd, sp = median_by(sd_r, "p50_us"), median_by(sp_r, "p50_us")
sd99, sp99 = median_by(sd_r, "p99_us"), median_by(sp_r, "p99_us")
td, tp = median_by(td_r, "rps"), median_by(tp_r, "rps")
# Each proxied round runs right after its direct round, so the pair saw the
# same host; the differences and ratios are taken per pair, then the median.
med = lambda xs: sorted(xs)[len(xs) // 2]
d50 = med([p["p50_us"] - d["p50_us"] for d, p in zip(sd_r, sp_r)])
d99 = med([p["p99_us"] - d["p99_us"] for d, p in zip(sd_r, sp_r)])
ratios = [p["rps"] / d["rps"] for d, p in zip(td_r, tp_r)]
ratio = med(ratios)
std, stp, conc = (json.loads(x) for x in a[4:7])
rss = [int(x) / 1024 for x in a[7:13]]
rows_a = [int(x) for x in a[13].split("|")]
rows_b = [int(x) for x in a[14].split("|")]
streams, conc_n = int(a[15]), int(a[16])
kad, kap = json.loads(a[17]), json.loads(a[18])
queue_max = int(a[19])
ok = lambda good: "yes" if good else "NO"
lines = [
  ("serial p50 latency", f'{sd["p50_us"]} µs', f'{sp["p50_us"]} µs', f'+{d50} µs', "≤ +50 µs", d50 <= 50),
  ("serial p99 latency", f'{sd99["p99_us"]} µs', f'{sp99["p99_us"]} µs', f'+{d99} µs', "≤ +100 µs", d99 <= 100),
  ("throughput, 64 connections", f'{rps(td):,.0f} rps', f'{rps(tp):,.0f} rps', f'{ratio:.3f}x', "≥ 0.25x", ratio >= 0.25),
  ("p99 latency, 64 connections", f'{td["p99_us"] / 1000:.2f} ms', f'{tp["p99_us"] / 1000:.2f} ms', "", "< 20 ms", tp["p99_us"] < 20000),
  ("errors / non-2xx (all runs)", f'{sum(r["socket_errors"] for r in sd_r + td_r)} / {sum(r["non2xx"] for r in sd_r + td_r)}',
   f'{sum(r["socket_errors"] for r in sp_r + tp_r)} / {sum(r["non2xx"] for r in sp_r + tp_r)}', "", "0 / 0",
   sum(r["socket_errors"] + r["non2xx"] for r in sp_r + tp_r) == 0),
  ("stream: first chunk, kept-alive conn.", f'{kad["ttfc_p50_us"]:.0f} µs', f'{kap["ttfc_p50_us"]:.0f} µs', f'+{kap["ttfc_p50_us"] - kad["ttfc_p50_us"]:.0f} µs', "≤ +300 µs", kap["ttfc_p50_us"] - kad["ttfc_p50_us"] <= 300),
  ("stream: first chunk, new conn. each", f'{std["ttfc_p50_us"]:.0f} µs', f'{stp["ttfc_p50_us"]:.0f} µs', f'+{stp["ttfc_p50_us"] - std["ttfc_p50_us"]:.0f} µs', "≤ +300 µs", stp["ttfc_p50_us"] - std["ttfc_p50_us"] <= 300),
  ("stream: gap between chunks (p50)", f'{std["gap_p50_us"]:.0f} µs', f'{stp["gap_p50_us"]:.0f} µs', f'{stp["gap_p50_us"] - std["gap_p50_us"]:+.0f} µs', "≤ +100 µs", stp["gap_p50_us"] - std["gap_p50_us"] <= 100),
  ("proxy RSS idle", "", f'{rss[0]:.1f} MB', "", "≤ 30 MB", rss[0] <= 30),
  ("proxy RSS under load (64 conns)", "", f'{rss[1]:.1f} MB', "", "", True),
  ("proxy RSS after load", "", f'{rss[2]:.1f} MB', "", "near idle", rss[2] <= rss[0] * 2 + 5),
  (f"proxy RSS with {conc_n} streams open", "", f'{rss[4]:.1f} MB', f'{conc["completed"]}/{conc_n} completed', "≤ 100 MB", rss[4] <= 100 and conc["completed"] == conc_n),
  ("proxy RSS after the streams", "", f'{rss[5]:.1f} MB', "", "near idle", rss[5] <= rss[3] * 2 + 5),
]
lines.append(("log queue, largest during 64-conn load", "", f"{queue_max:,} rows", "sampled every 200 ms",
              "≤ 8,192", queue_max <= 8192))
sent_a = sum(r["requests"] for r in sp_r + tp_r)
# wrk counts only answers that arrived before its timer stopped; the requests
# still in flight then (at most one per connection) were served and logged too.
extra = rows_a[0] - sent_a
lines.append(("log rows, plain (one per request)", f"{sent_a} counted by wrk", f"{rows_a[0]} rows ({rows_a[1]} ok)",
              f"+{extra} in flight at wrk's stops", "≥ sent, ≤ +65/run", 0 <= extra <= 65 * len(sp_r + tp_r) and rows_a[1] >= sent_a))
sent_b = streams + (streams + 1) + conc_n   # serial, kept-alive (+1 to open the connection), concurrent
lines.append(("log rows, streams (usage exact)", f"{sent_b} sent", f"{rows_b[1]} rows with 106 tokens", f"{rows_b[0]} in all", "= sent", rows_b[0] == sent_b and rows_b[1] == sent_b))
w = [38, 16, 26, 26, 12, 4]
print()
print(f"{len(sp_r)} rounds, each direct then proxied; columns: the median round; differences and ratio: the median of the per-round ones")
print("  serial p50 per round (direct/proxied µs): " + ", ".join(f'{d["p50_us"]}/{p["p50_us"]}' for d, p in zip(sd_r, sp_r)))
print("  64 connections per round (direct/proxied rps): " + ", ".join(f'{d["rps"]:,.0f}/{p["rps"]:,.0f} = {p["rps"] / d["rps"]:.3f}x' for d, p in zip(td_r, tp_r)))
print("| " + " | ".join(h.ljust(n) for h, n in zip(["metric", "direct", "proxied", "difference", "target", "met"], w)) + " |")
print("|" + "|".join("-" * (n + 2) for n in w) + "|")
for m, d, p, diff, t, good in lines:
    print("| " + " | ".join(str(x).ljust(n) for x, n in zip([m, d, p, diff, t, ok(good)], w)) + " |")
PY
