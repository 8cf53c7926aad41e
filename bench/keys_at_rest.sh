#!/usr/bin/env bash
# What sealing the pool keys at rest costs where it happens: importing
# $KEYS keys (each checked against an nginx upstream, then stored), a
# refresh of every key, and a restart (every row read and opened). Two
# binaries alternate round by round (BEFORE, e.g. a build from before keys
# were sealed, and BIN), each on a new database; prints the median of each
# figure and the ratio BIN / BEFORE.
#
#   BEFORE=/tmp/before/siliconflow-proxy bench/keys_at_rest.sh
#   bench/keys_at_rest.sh --smoke      one small round of BIN alone
#
# Env: KEYS (10000), ROUNDS (3), BIN (this checkout's release build),
# BEFORE, DB (sqlite | postgres; postgres uses PG, default
# postgres://postgres@127.0.0.1:5432, one new database per run).
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0; [ "${1:-}" = "--smoke" ] && SMOKE=1
KEYS=${KEYS:-10000}; ROUNDS=${ROUNDS:-3}; DB=${DB:-sqlite}
if [ "$SMOKE" = 1 ]; then KEYS=200; ROUNDS=1; BEFORE=""; fi
PG=${PG:-postgres://postgres@127.0.0.1:5432}
KEK=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=

source bench/common.sh
build_release bench_upstream

NPORT=$(port)
start_nginx "$NPORT" gone
UP="http://127.0.0.1:$NPORT"

python3 - "$KEYS" > "$DIR/keys.json" <<'PY'
import json, sys
print(json.dumps({"keys": "\n".join(f"sk-bench-{i:026d}" for i in range(int(sys.argv[1])))}))
PY

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }

# The proxy $1 (a binary) on database $2; sets LAST and PPORT.
run_proxy() {
  PPORT=$(port)
  HOST=127.0.0.1 PORT=$PPORT SILICONFLOW_BASE_URL=$UP DATABASE_URL="$2" API_KEY=bench-client-key \
    KEY_ENCRYPTION_KEY=$KEK ADMIN_PASSWORD=bench AUTO_REFRESH_INTERVAL=0 REFRESH_CONCURRENCY=32 \
    REFRESH_RATE=0 RUST_LOG=${RUST_LOG:-warn} "$1" >>"$DIR/proxy.log" 2>&1 &
  PIDS+=($!); LAST=$!
  wait_up "http://127.0.0.1:$PPORT/health"
}

new_database() {
  if [ "$DB" = postgres ]; then
    local name="sfp_bench_$RANDOM$RANDOM"
    psql "$PG/postgres" -qc "CREATE DATABASE $name" >/dev/null
    CREATED+=("$name")
    echo "$PG/$name"
  else
    echo "sqlite://$DIR/db-$RANDOM$RANDOM.db"
  fi
}
CREATED=()
drop_databases() { for d in "${CREATED[@]}"; do psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true; done; }
trap 'cleanup; drop_databases' EXIT

# One round of binary $1: prints "import refresh restart" in seconds.
round() {
  local url t import refresh restart
  url=$(new_database)
  run_proxy "$1" "$url"
  t=$(now)
  curl -fs -u admin:bench -H 'Content-Type: application/json' --data-binary @"$DIR/keys.json" \
    "http://127.0.0.1:$PPORT/import_keys" | python3 -c "import json,sys; r=json.load(sys.stdin); assert r['added']==$KEYS, {k:r[k] for k in ('added','failed','invalid','duplicates')}"
  import=$(since "$t")
  t=$(now)
  curl -fs -u admin:bench -X POST "http://127.0.0.1:$PPORT/refresh?wait=300" >/dev/null
  refresh=$(since "$t")
  kill -TERM "$LAST"; wait "$LAST" 2>/dev/null || true
  t=$(now)
  run_proxy "$1" "$url"
  restart=$(since "$t")
  kill -TERM "$LAST"; wait "$LAST" 2>/dev/null || true
  echo "$import $refresh $restart"
}

echo "keys at rest: $KEYS keys on $DB, $ROUNDS rounds; BEFORE=${BEFORE:-none} BIN=$BIN"
A=""; B=""
for r in $(seq "$ROUNDS"); do
  if [ -n "${BEFORE:-}" ]; then b=$(round "$BEFORE"); B+="$b;"; echo "  round $r before: $b"; fi
  a=$(round "$BIN"); A+="$a;"; echo "  round $r after:  $a"
done
python3 - "$A" "$B" <<'PY'
import statistics, sys
def parse(s):
    rows = [list(map(float, r.split())) for r in s.split(";") if r.strip()]
    return [statistics.median(col) for col in zip(*rows)] if rows else None
after, before = parse(sys.argv[1]), parse(sys.argv[2])
for i, name in enumerate(["import", "refresh of every key", "restart (load every key)"]):
    line = f"{name:26s} after {after[i]:7.3f} s"
    if before:
        line += f"   before {before[i]:7.3f} s   after/before {after[i] / before[i]:.2f}x"
    print(line)
PY
