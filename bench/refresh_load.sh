#!/usr/bin/env bash
# Does a refresh of a large pool disturb the request path? 100,000 keys (written
# into the database before the start), nginx as the upstream (410 on user info,
# 200 on the model list, the canned completion). Measures serial p50 and
# 64-connection throughput through the proxy without a refresh, then while
# POST /refresh re-checks every key (REFRESH_CONCURRENCY at a time).
#
#   bench/refresh_load.sh            (KEYS=100000, DURATION=8)
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
    API_KEY=bench-client-key ADMIN_PASSWORD=bench AUTO_REFRESH_INTERVAL=0 RUST_LOG=warn "$BIN" >>"$DB.log" 2>&1 &
  PIDS+=($!); LAST=$!
  wait_up "http://127.0.0.1:$PPORT/health"
}
start; kill -TERM "$LAST"; wait "$LAST" 2>/dev/null || true
python3 - "$DB" "$KEYS" <<'PY'
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1]); now = int(time.time() * 1000)
c.executemany("INSERT INTO api_keys (key, state, created_at, last_checked) VALUES (?, 'active', ?, ?)",
              [(f"sk-bench-{i:040d}", now, now) for i in range(int(sys.argv[2]))])
c.commit()
PY
start; P=$LAST
URL="http://127.0.0.1:$PPORT/v1/chat/completions"
echo "$KEYS keys; idle RSS $(( $(rss_kb "$P") / 1024 )) MB"
# Refreshes back to back for as long as the load runs, so every measured
# request meets one; quiet and busy rounds alternate (ROUNDS, default 3).
refreshes() { local n=0; while [ ! -e "$DIR/stop" ]; do curl -fs -u admin:bench -X POST "http://127.0.0.1:$PPORT/refresh" > "$DIR/refresh.json"; n=$((n + 1)); done; echo "$n" > "$DIR/refreshes"; }
Q=""; B=""
for _ in $(seq "${ROUNDS:-3}"); do
  Q+="$(wrk_json -t1 -c1 -d"${DUR}s" --latency "$URL")|$(wrk_json -t2 -c64 -d"${DUR}s" --latency "$URL");"
  rm -f "$DIR/stop"; t0=$(date +%s.%N); refreshes & R=$!
  B+="$(wrk_json -t1 -c1 -d"${DUR}s" --latency "$URL")|$(wrk_json -t2 -c64 -d"${DUR}s" --latency "$URL");"
  touch "$DIR/stop"; wait $R; t1=$(date +%s.%N)
  echo "  $(cat "$DIR/refreshes") refreshes of $KEYS keys in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s: $(cat "$DIR/refresh.json")"
done
python3 - "$Q" "$B" <<'PY'
import json, sys
rounds = lambda t: [tuple(json.loads(x) for x in r.split("|")) for r in t.split(";") if r.strip()]
q, b = rounds(sys.argv[1]), rounds(sys.argv[2])
rps = lambda r: r["requests"] / (r["duration_us"] / 1e6)
med = lambda xs: sorted(xs)[len(xs) // 2]
d50 = med([bs["p50_us"] - qs["p50_us"] for (qs, _), (bs, _) in zip(q, b)])
ratio = med([rps(bt) / rps(qt) for (_, qt), (_, bt) in zip(q, b)])
print("serial p50 quiet/busy per round (µs): " + ", ".join(f'{qs["p50_us"]}/{bs["p50_us"]}' for (qs, _), (bs, _) in zip(q, b)))
print("64-conn rps quiet/busy per round: " + ", ".join(f'{rps(qt):,.0f}/{rps(bt):,.0f}' for (_, qt), (_, bt) in zip(q, b)))
print(f"median: serial p50 {d50:+d} µs, throughput {ratio - 1:+.1%} while refreshing; errors {sum(bt['socket_errors'] + bt['non2xx'] for _, bt in b)}")
PY
