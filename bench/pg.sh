#!/usr/bin/env bash
# SQLite against PostgreSQL: the same plain-completion benchmark through two
# proxies, one on an SQLite file and one on a fresh PostgreSQL database, in
# front of the same nginx; direct, SQLite and PostgreSQL rounds alternate.
# The request path touches no database either way, so the two should match;
# and every request must be a row in PostgreSQL after the 64-connection runs.
# Then two instances on one new database take 64 connections between them
# (32 each, at once): the rows must be the requests of both, none lost.
#
#   DATABASE=postgres bench/run.sh      (or bench/pg.sh)
#   bench/pg.sh --smoke                 a quick check that it works
#
# Env: PG (postgres://postgres@127.0.0.1:5432), DURATION (5), ROUNDS (3), BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0; [ "${1:-}" = "--smoke" ] && SMOKE=1
DUR=${DURATION:-5}; ROUNDS=${ROUNDS:-3}
if [ "$SMOKE" = 1 ]; then DUR=1; ROUNDS=1; fi
PG=${PG:-postgres://postgres@127.0.0.1:5432}
source bench/common.sh
build_release bench_upstream
NPORT=$(port)
start_nginx "$NPORT"
UP="http://127.0.0.1:$NPORT"
PGDB="sfp_bench_$$"; PGDB2="sfp_bench_two_$$"
psql "$PG/postgres" -qc "CREATE DATABASE $PGDB"
psql "$PG/postgres" -qc "CREATE DATABASE $PGDB2"
drop_pg() {
  for d in "$PGDB" "$PGDB2"; do psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true; done
}
trap 'cleanup; drop_pg' EXIT

# The proxy on $2 (a DATABASE_URL); sets LAST (pid) and the port in $1's variable name;
# imports the bench key unless $3 is "noimport".
run_proxy() {
  local p; p=$(port)
  HOST=127.0.0.1 PORT=$p SILICONFLOW_BASE_URL=$UP DATABASE_URL="$2" API_KEY=bench-client-key \
    KEY_ENCRYPTION_KEY=${KEY_ENCRYPTION_KEY:-MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=} \
    ADMIN_PASSWORD=bench AUTO_REFRESH_INTERVAL=0 RUST_LOG=${RUST_LOG:-warn} "$BIN" >>"$DIR/$1.log" 2>&1 &
  PIDS+=($!); LAST=$!
  wait_up "http://127.0.0.1:$p/health"
  [ "${3:-}" = noimport ] || curl -fs -u admin:bench -H 'Content-Type: application/json' -d '{"keys":"sk-bench-000000000000000000000001"}' \
    "http://127.0.0.1:$p/import_keys" | grep -q '"added":1' || { echo "import failed ($1)"; exit 1; }
  printf -v "$1" '%s' "$p"
}
run_proxy SQ "sqlite://$DIR/bench.db"; SQ_PID=$LAST
run_proxy PGP "$PG/$PGDB"; PG_PID=$LAST
echo "SQLite vs PostgreSQL: ${ROUNDS} rounds of ${DUR}s per measurement"

# CPU time (ns) of every PostgreSQL server process: on this machine the database server
# competes with the proxy, nginx and wrk for the same cores.
pg_cpu_ns() { for p in $(pgrep -x postgres; pgrep -f '^postgres:'); do cpu_ns "$p"; done | awk '{s += $1} END {printf "%.0f\n", s}'; }
S_D=""; S_S=""; S_P=""; T_D=""; T_S=""; T_P=""; SENT_PG=0; CPU_S=0; CPU_P=0; CPU_DB=0
for _ in $(seq "$ROUNDS"); do
  S_D+="$(wrk_json -t1 -c1 -d"${DUR}s" --latency "$UP/v1/chat/completions");"
  S_S+="$(wrk_json -t1 -c1 -d"${DUR}s" --latency "http://127.0.0.1:$SQ/v1/chat/completions");"
  S_P+="$(wrk_json -t1 -c1 -d"${DUR}s" --latency "http://127.0.0.1:$PGP/v1/chat/completions");"
  T_D+="$(wrk_json -t2 -c64 -d"${DUR}s" --latency "$UP/v1/chat/completions");"
  c0=$(cpu_ns "$SQ_PID")
  T_S+="$(wrk_json -t2 -c64 -d"${DUR}s" --latency "http://127.0.0.1:$SQ/v1/chat/completions");"
  CPU_S=$(( CPU_S + $(cpu_ns "$SQ_PID") - c0 ))
  c0=$(cpu_ns "$PG_PID"); d0=$(pg_cpu_ns)
  T_P+="$(wrk_json -t2 -c64 -d"${DUR}s" --latency "http://127.0.0.1:$PGP/v1/chat/completions");"
  CPU_P=$(( CPU_P + $(cpu_ns "$PG_PID") - c0 )); CPU_DB=$(( CPU_DB + $(pg_cpu_ns) - d0 ))
done
# Every request to the PostgreSQL proxy is a row once it has shut down (SIGTERM flushes).
kill -TERM "$PG_PID"; wait "$PG_PID" 2>/dev/null || true
ROWS=$(psql "$PG/$PGDB" -Atc "select count(*) from request_logs")
kill -TERM "$SQ_PID"; wait "$SQ_PID" 2>/dev/null || true

# Two instances on one database, 32 connections each at once.
run_proxy TA "$PG/$PGDB2"; TA_PID=$LAST
run_proxy TB "$PG/$PGDB2" noimport; TB_PID=$LAST
# B learns A's key by NOTIFY: wait until it serves.
for _ in $(seq 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer bench-client-key' -H 'Content-Type: application/json' \
    -d '{"model":"m","messages":[]}' "http://127.0.0.1:$TB/v1/chat/completions")
  [ "$code" = 200 ] && break; sleep 0.05
done
[ "$code" = 200 ] || { echo "instance B never served A's key"; exit 1; }
TWO_A=""; TWO_B=""
for _ in $(seq "$ROUNDS"); do
  wrk_json -t1 -c32 -d"${DUR}s" "http://127.0.0.1:$TA/v1/chat/completions" >"$DIR/two_a.json" &
  WA=$!
  wrk_json -t1 -c32 -d"${DUR}s" "http://127.0.0.1:$TB/v1/chat/completions" >"$DIR/two_b.json"
  wait "$WA"
  TWO_A+="$(cat "$DIR/two_a.json");"; TWO_B+="$(cat "$DIR/two_b.json");"
done
kill -TERM "$TA_PID" "$TB_PID"; wait "$TA_PID" "$TB_PID" 2>/dev/null || true
ROWS2=$(psql "$PG/$PGDB2" -Atc "select count(*) from request_logs")

python3 - "$S_D" "$S_S" "$S_P" "$T_D" "$T_S" "$T_P" "$ROWS" "$TWO_A" "$TWO_B" "$ROWS2" "$ROUNDS" "$CPU_S" "$CPU_P" "$CPU_DB" <<'PY'
import json, sys
runs = lambda t: [json.loads(x) for x in t.split(";") if x.strip()]
sd, ss, sp, td, ts, tp = (runs(a) for a in sys.argv[1:7])
rows = int(sys.argv[7])
med = lambda xs: sorted(xs)[len(xs) // 2]
rps = lambda r: r["requests"] / (r["duration_us"] / 1e6)
add_s = med([s["p50_us"] - d["p50_us"] for d, s in zip(sd, ss)])
add_p = med([p["p50_us"] - d["p50_us"] for d, p in zip(sd, sp)])
ratio_s = med([rps(s) / rps(d) for d, s in zip(td, ts)])
ratio_p = med([rps(p) / rps(d) for d, p in zip(td, tp)])
sent = sum(r["requests"] for r in sp + tp)
errors = sum(r["socket_errors"] + r["non2xx"] for r in ss + sp + ts + tp)
print()
print("| database | added p50 (serial) | throughput at 64 conns vs direct | rounds: p50 µs; ratio |")
print("|---|---|---|---|")
print(f"| SQLite | +{add_s} µs | {ratio_s:.3f}x | " + ", ".join(f'+{s["p50_us"] - d["p50_us"]}' for d, s in zip(sd, ss)) + "; " + ", ".join(f"{rps(s) / rps(d):.3f}" for d, s in zip(td, ts)) + " |")
print(f"| PostgreSQL | +{add_p} µs | {ratio_p:.3f}x | " + ", ".join(f'+{p["p50_us"] - d["p50_us"]}' for d, p in zip(sd, sp)) + "; " + ", ".join(f"{rps(p) / rps(d):.3f}" for d, p in zip(td, tp)) + " |")
print(f"\nPostgreSQL against SQLite: added p50 {add_p - add_s:+d} µs, throughput {ratio_p / ratio_s - 1:+.1%}; errors {errors}")
print(f"rows in PostgreSQL: {rows} for {sent} requests counted by wrk (more: requests in flight at wrk's stops) -> {'ok' if rows >= sent else 'MISSING ROWS'}")
cpu_s, cpu_p, cpu_db = (int(x) for x in sys.argv[12:15])
req_s, req_p = sum(r["requests"] for r in ts), sum(r["requests"] for r in tp)
print(f"proxy CPU per request at 64 conns: SQLite {cpu_s / req_s / 1000:.1f} µs, PostgreSQL {cpu_p / req_p / 1000:.1f} µs "
      f"({cpu_p / req_p / (cpu_s / req_s) - 1:+.1%}); the PostgreSQL server on the same cores: {cpu_db / req_p / 1000:.1f} µs per request")
ta, tb, rows2, rounds = runs(sys.argv[8]), runs(sys.argv[9]), int(sys.argv[10]), int(sys.argv[11])
sent_a, sent_b = sum(r["requests"] for r in ta), sum(r["requests"] for r in tb)
errors2 = sum(r["socket_errors"] + r["non2xx"] for r in ta + tb)
extra = rows2 - (sent_a + sent_b)
ok = 0 <= extra <= 64 * rounds and errors2 == 0
print(f"two instances, one database, 32+32 connections at once: A {sent_a} + B {sent_b} = {sent_a + sent_b} requests counted by wrk, "
      f"{rows2} rows (+{extra} in flight at wrk's stops, at most 64 a round), errors {errors2} -> {'ok' if ok else 'ROWS DO NOT MATCH'}")
if not ok:
    sys.exit(1)
PY
