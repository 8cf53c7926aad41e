#!/usr/bin/env bash
# Times the admin stats and log endpoints on a request log of a million rows.
# Usage: bench/stats_1m.sh [path/to/siliconflow-proxy]   (default: target/release/siliconflow-proxy)
# Needs sqlite3 and curl. Prints one line per endpoint: best and median of 5 runs.
set -euo pipefail
BIN=${1:-target/release/siliconflow-proxy}
ROWS=${ROWS:-1000000}
command -v sqlite3 >/dev/null || { echo "needs sqlite3 (apt-get install sqlite3)"; exit 1; }
[ -x "$BIN" ] || cargo build --release
DIR=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export HOST=127.0.0.1 PORT DATABASE_URL="sqlite://$DIR/bench.db" ADMIN_PASSWORD=bench API_KEY=bench \
  AUTO_REFRESH_INTERVAL=0 RUST_LOG=warn SILICONFLOW_BASE_URL=http://127.0.0.1:9
start() { "$BIN" & PID=$!; for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return; sleep 0.1; done; }
start; kill -TERM $PID; wait $PID || true        # creates and migrates the database

NOW_MS=$(($(date +%s) * 1000))
MONTH_START_MS=$(($(date -u -d "$(date -u +%Y-%m-01)" +%s) * 1000))
SPAN=$((NOW_MS - MONTH_START_MS))
echo "filling $ROWS rows over this month ..."
sqlite3 "$DIR/bench.db" <<SQL
PRAGMA journal_mode=WAL;
BEGIN;
WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < $ROWS - 1)
INSERT INTO request_logs (created_at, key_id, key_masked, model, endpoint, status, input_tokens, output_tokens,
                          total_tokens, latency_ms, ttfb_ms, stream, aborted, attempts, error)
SELECT $MONTH_START_MS + (i * $SPAN / $ROWS), 1 + i % 20, 'sk-bench...' || printf('%04d', 1 + i % 20),
       CASE i % 6 WHEN 0 THEN 'Qwen/Qwen3-8B' WHEN 1 THEN 'deepseek-ai/DeepSeek-V3' WHEN 2 THEN 'Qwen/QwQ-32B'
                  WHEN 3 THEN 'BAAI/bge-m3' WHEN 4 THEN 'THUDM/GLM-4-9B-0414' ELSE 'moonshotai/Kimi-K2-Instruct' END,
       CASE WHEN i % 6 = 3 THEN '/v1/embeddings' ELSE '/v1/chat/completions' END,
       CASE WHEN i % 97 = 0 THEN 429 ELSE 200 END, 120 + i % 300, 40 + i % 700, 160 + i % 300 + i % 700,
       200 + i % 900, 50 + i % 200, i % 2, 0, 1, NULL
FROM c;
DELETE FROM usage_hourly;
INSERT INTO usage_hourly (hour, model, key_id, calls, errors, input_tokens, output_tokens, latency_ms)
SELECT created_at / 3600000, model, COALESCE(key_id, 0), COUNT(*), SUM(status >= 400),
       SUM(input_tokens), SUM(output_tokens), SUM(latency_ms)
FROM request_logs GROUP BY 1, 2, 3;
COMMIT;
SQL
start
trap 'kill -TERM $PID 2>/dev/null; rm -rf "$DIR"' EXIT
printf '%-48s %10s %10s\n' "endpoint ($ROWS log rows)" "best ms" "median ms"
for path in /api/stats/overview /api/stats/daily /api/stats/monthly "/logs?page=1&page_size=50" \
            "/logs?page=100&page_size=50" "/logs?model=qwen&page_size=50" "/logs?status=429&page_size=50" \
            "/logs?endpoint=/v1/embeddings&page_size=50"; do
  times=$(for _ in 1 2 3 4 5; do curl -s -o /dev/null -w '%{time_total}\n' -u admin:bench "http://127.0.0.1:$PORT$path"; done | sort -n)
  best=$(echo "$times" | head -1); median=$(echo "$times" | sed -n 3p)
  printf '%-48s %10.1f %10.1f\n' "$path" "$(echo "$best * 1000" | bc)" "$(echo "$median * 1000" | bc)"
done
