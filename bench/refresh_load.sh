#!/usr/bin/env bash
# Does a refresh of a large pool disturb the request path? 100,000 keys (written
# into the database before the start), nginx as the upstream (410 on user info,
# 200 on the model list, the canned completion). Measures serial p50 and
# 64-connection throughput through the proxy without a refresh, then while
# POST /refresh re-checks every key (REFRESH_RATE checks/s, REFRESH_CONCURRENCY
# at a time).
#
#   bench/refresh_load.sh            (KEYS=100000, DURATION=8, ROUNDS=3, REFRESH_RATE=50)
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-100000}; DUR=${DURATION:-8}
source bench/common.sh
build_release bench_upstream
NPORT=$(port); PPORT=$(port)
start_nginx "$NPORT" gone
DB="$DIR/refresh.db"
start() {
  HOST=127.0.0.1 PORT=$PPORT SILICONFLOW_BASE_URL="http://127.0.0.1:$NPORT" DATABASE_URL="sqlite://$DB" \
    API_KEY=bench-client-key ADMIN_PASSWORD=bench AUTO_REFRESH_INTERVAL=0 REFRESH_RATE=${REFRESH_RATE:-50} RUST_LOG=warn "$BIN" >>"$DB.log" 2>&1 &
  PIDS+=($!); LAST=$!
  wait_up "http://127.0.0.1:$PPORT/health"
}
start; kill -TERM "$LAST"; wait "$LAST" 2>/dev/null || true
python3 - "$DB" "$KEYS" <<'PY'
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1]); now = int(time.time() * 1000)
c.executemany("INSERT INTO api_keys (sealed_key, state, created_at, last_checked) VALUES (?, 'active', ?, ?)",
              [(f"sk-bench-{i:040d}", now, now) for i in range(int(sys.argv[2]))])
c.commit()
PY
start; P=$LAST
URL="http://127.0.0.1:$PPORT/v1/chat/completions"
echo "$KEYS keys; idle RSS $(( $(rss_kb "$P") / 1024 )) MB"
# Quiet rounds first, then the same rounds while a refresh of every key runs
# (paced at REFRESH_RATE checks/s, default 50; REFRESH_RATE=0 checks as fast as
# REFRESH_CONCURRENCY allows, and is restarted whenever it ends). A paced
# refresh of 100,000 keys outlasts the busy rounds, so the rounds cannot
# alternate: the quiet ones come first (ROUNDS each, default 3).
refreshes() { while [ ! -e "$DIR/stop" ]; do curl -fs -m 400 -u admin:bench -X POST "http://127.0.0.1:$PPORT/refresh?wait=300" > "$DIR/refresh.json" || true; done; }
progress() { curl -fs "http://127.0.0.1:$PPORT/health" | python3 -c 'import json,sys; r=json.load(sys.stdin)["auto_refresh"]; print((r["running"] or {}).get("checked", "done"), r["last_run"])'; }
Q=""; B=""
for _ in $(seq "${ROUNDS:-3}"); do
  Q+="$(wrk_json -t1 -c1 -d"${DUR}s" --latency "$URL")|$(wrk_json -t2 -c64 -d"${DUR}s" --latency "$URL");"
done
# What the refresh costs on its own: the proxy's CPU over 10 s with no traffic,
# before and after it starts (after a pause for the log writer to catch up).
share() { python3 -c "print(f'{($2 - $1) / 1e10 * 100:.1f}')"; }
sleep 3; c0=$(cpu_ns "$P"); sleep 10; c1=$(cpu_ns "$P")
rm -f "$DIR/stop"; refreshes & R=$!
sleep 1; echo "  refresh started: checked/last_run $(progress)"
c2=$(cpu_ns "$P"); sleep 10; c3=$(cpu_ns "$P")
echo "  proxy CPU with no traffic: $(share "$c0" "$c1")% of one core before the refresh, $(share "$c2" "$c3")% while it runs"
for _ in $(seq "${ROUNDS:-3}"); do
  B+="$(wrk_json -t1 -c1 -d"${DUR}s" --latency "$URL")|$(wrk_json -t2 -c64 -d"${DUR}s" --latency "$URL");"
done
echo "  after the busy rounds: checked/last_run $(progress) (REFRESH_RATE=${REFRESH_RATE:-50})"
touch "$DIR/stop"; kill "$R" 2>/dev/null || true
python3 - "$Q" "$B" <<'PY2'
import json, sys
rounds = lambda t: [tuple(json.loads(x) for x in r.split("|")) for r in t.split(";") if r.strip()]
q, b = rounds(sys.argv[1]), rounds(sys.argv[2])
rps = lambda r: r["requests"] / (r["duration_us"] / 1e6)
med = lambda xs: sorted(xs)[len(xs) // 2]
d50 = med([bs["p50_us"] for bs, _ in b]) - med([qs["p50_us"] for qs, _ in q])
ratio = med([rps(bt) for _, bt in b]) / med([rps(qt) for _, qt in q])
print("serial p50 quiet rounds / busy rounds (µs): " + ", ".join(str(qs["p50_us"]) for qs, _ in q) + " / " + ", ".join(str(bs["p50_us"]) for bs, _ in b))
print("64-conn rps quiet rounds / busy rounds: " + ", ".join(f'{rps(qt):,.0f}' for _, qt in q) + " / " + ", ".join(f'{rps(bt):,.0f}' for _, bt in b))
print(f"median: serial p50 {d50:+d} µs, throughput {ratio - 1:+.1%} while refreshing; errors {sum(bt['socket_errors'] + bt['non2xx'] for _, bt in b)}")
PY2
