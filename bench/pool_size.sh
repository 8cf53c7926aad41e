#!/usr/bin/env bash
# Cost against pool size: the same plain-completion benchmark as run.sh with
# 1, 1,000 and $KEYS keys in the pool (each its own account, balances unknown,
# as with SiliconFlow China today), and with $KEYS keys of which every tenth
# account is cooling for the benchmark's model. Direct (nginx) and proxied
# rounds alternate; each row is the median of its per-round differences.
#
#   KEYS=10000 bench/run.sh        (or bench/pool_size.sh; KEYS defaults to 10000)
#   bench/pool_size.sh --smoke     a quick check that it works
#
# Env: KEYS (10000), DURATION (s per wrk run, 5), ROUNDS (3), BIN, KEY_STRATEGY
# (balance), COOL_EVERY (10: every tenth account cools).
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0; [ "${1:-}" = "--smoke" ] && SMOKE=1
KEYS=${KEYS:-10000}; DUR=${DURATION:-5}; ROUNDS=${ROUNDS:-3}
if [ "$SMOKE" = 1 ]; then KEYS=200; DUR=1; ROUNDS=1; fi
MID=$(( KEYS >= 1000 ? 1000 : KEYS / 10 ))
MODEL="Qwen/Qwen3-8B"

source bench/common.sh
build_release bench_upstream

# nginx without /v1/user/info (410, as SiliconFlow China), with /v1/models for the key checks.
NPORT=$(port)
start_nginx "$NPORT" gone
UP="http://127.0.0.1:$NPORT"

# Starts the proxy on a database; sets LAST (pid) and PPORT.
run_proxy() {
  PPORT=$(port)
  HOST=127.0.0.1 PORT=$PPORT SILICONFLOW_BASE_URL=$UP DATABASE_URL="sqlite://$1" API_KEY=bench-client-key \
    ADMIN_PASSWORD=bench AUTO_REFRESH_INTERVAL=0 REFRESH_CONCURRENCY=32 KEY_STRATEGY=${KEY_STRATEGY:-balance} RUST_LOG=${RUST_LOG:-warn} "$BIN" >>"$1.log" 2>&1 &
  PIDS+=($!); LAST=$!
  wait_up "http://127.0.0.1:$PPORT/health"
}

# A database with $2 keys imported (each its own account); prints the import's time.
make_pool() {
  run_proxy "$1"
  python3 - "$2" > "$DIR/keys.json" <<'PY'
import json, sys
print(json.dumps({"keys": "\n".join(f"sk-bench-{i:026d}" for i in range(int(sys.argv[1])))}))
PY
  local t0 t1
  t0=$(date +%s.%N)
  curl -fs -u admin:bench -H 'Content-Type: application/json' --data-binary @"$DIR/keys.json" \
    "http://127.0.0.1:$PPORT/import_keys" | python3 -c "import json,sys; r=json.load(sys.stdin); assert r['added']==$2, {k:r[k] for k in ('added','failed','invalid','duplicates')}"
  t1=$(date +%s.%N)
  echo "  imported $2 keys in $(python3 -c "print(f'{$t1 - $t0:.2f}')") s"
  kill -TERM "$LAST"; wait "$LAST" 2>/dev/null || true
}

echo "pool-size benchmark: 1, $MID, $KEYS keys; ${ROUNDS} rounds of ${DUR}s per measurement; KEY_STRATEGY=${KEY_STRATEGY:-balance}"
make_pool "$DIR/k1.db" 1
make_pool "$DIR/kmid.db" "$MID"
make_pool "$DIR/kmax.db" "$KEYS"
# A consistent copy (the database is in WAL mode: the -wal file holds recent pages).
sqlite3 "$DIR/kmax.db" ".backup '$DIR/kcool.db'"
# With the key its keys are sealed with (the key file beside the database).
cp "$DIR/kmax.db.key" "$DIR/kcool.db.key"
UNTIL=$(( ($(date +%s) + 7200) * 1000 ))
sqlite3 "$DIR/kcool.db" "INSERT INTO cooldowns (account, model, until_ms, strikes, reason)
  SELECT 'key:' || id, '$MODEL', $UNTIL, 1, 'bench: cooling' FROM api_keys WHERE id % ${COOL_EVERY:-10} = 0"
COOLING=$(sqlite3 "$DIR/kcool.db" "select count(*) from cooldowns")

RESULTS=""
for cfg in "k1:1" "kmid:$MID" "kmax:$KEYS" "kcool:$KEYS ($COOLING cooling)"; do
  db=${cfg%%:*}; label=${cfg#*:}
  run_proxy "$DIR/$db.db"; P=$LAST
  sleep 0.5; RSS=$(rss_kb "$P")
  echo "  $label keys: idle RSS $((RSS / 1024)) MB; measuring ..."
  S_D=""; S_P=""; T_D=""; T_P=""
  for _ in $(seq "$ROUNDS"); do
    S_D+="$(wrk_json -t1 -c1 -d"${DUR}s" --latency "$UP/v1/chat/completions");"
    S_P+="$(wrk_json -t1 -c1 -d"${DUR}s" --latency "http://127.0.0.1:$PPORT/v1/chat/completions");"
    T_D+="$(wrk_json -t2 -c64 -d"${DUR}s" --latency "$UP/v1/chat/completions");"
    T_P+="$(wrk_json -t2 -c64 -d"${DUR}s" --latency "http://127.0.0.1:$PPORT/v1/chat/completions");"
  done
  RESULTS+="$label|$S_D|$S_P|$T_D|$T_P|$RSS"$'\n'
  kill -TERM "$P"; wait "$P" 2>/dev/null || true
done

python3 - "$RESULTS" <<'PY'
import json, sys
med = lambda xs: sorted(xs)[len(xs) // 2]
rows = []
for line in sys.argv[1].strip().split("\n"):
    label, sd, sp, td, tp, rss = line.split("|")
    runs = lambda t: [json.loads(x) for x in t.split(";") if x.strip()]
    sd, sp, td, tp = runs(sd), runs(sp), runs(td), runs(tp)
    rps = lambda r: r["requests"] / (r["duration_us"] / 1e6)
    d50 = med([p["p50_us"] - d["p50_us"] for d, p in zip(sd, sp)])
    ratio = med([rps(p) / rps(d) for d, p in zip(td, tp)])
    errors = sum(r["socket_errors"] + r["non2xx"] for r in sp + tp)
    rows.append((label, d50, ratio, errors, int(rss) / 1024,
                 ", ".join(f'+{p["p50_us"] - d["p50_us"]}' for d, p in zip(sd, sp)),
                 ", ".join(f'{rps(p) / rps(d):.3f}' for d, p in zip(td, tp))))
base_p50, base_ratio = rows[0][1], rows[0][2]
print()
print("| keys in the pool | added p50 (serial) | vs 1 key | throughput at 64 conns vs direct | vs 1 key | errors | idle RSS | rounds: p50 µs; ratio |")
print("|---|---|---|---|---|---|---|---|")
for label, d50, ratio, errors, rss, p50s, ratios in rows:
    print(f"| {label} | +{d50} µs | {d50 - base_p50:+d} µs | {ratio:.3f}x | {ratio / base_ratio - 1:+.1%} | {errors} | {rss:.1f} MB | {p50s}; {ratios} |")
PY
