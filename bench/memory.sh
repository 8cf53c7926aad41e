#!/usr/bin/env bash
# Peak memory (VmHWM) of the release binary under what a tenant may send
# (issue 30): six 48 MB count_tokens bodies at once must stay under 400 MB;
# six streamed Responses calls with 40 MB of instructions must peak under
# twice what six streamed chat calls with a 40 MB system message do (the
# baseline, measured in the same run). Each scenario runs in a process of
# its own, so that each peak is its own. Fails past either bound.
#
#   bench/memory.sh           (about a minute once built)
#   bench/memory.sh --smoke   the same: the bounds are the check
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
build_release bench_upstream
SPORT=$(port)
"$RELEASE/examples/bench_upstream" "$SPORT" 20 0 & PIDS+=($!)
wait_up "http://127.0.0.1:$SPORT/v1/user/info"
declare -A PEAK
for scenario in count_tokens chat responses; do
  p=$(port)
  start_proxy "$p" "http://127.0.0.1:$SPORT" "$DIR/$scenario.db"
  line=$(python3 bench/memory.py "$scenario" "http://127.0.0.1:$p" "$LAST")
  echo "$line"
  PEAK[$scenario]=$(echo "$line" | sed -n 's/.*peak_mb=\([0-9]*\).*/\1/p')
  kill -TERM "$LAST"; wait "$LAST" 2>/dev/null || true
done
ratio=$(python3 -c "print(f'{${PEAK[responses]} / ${PEAK[chat]}:.2f}')")
echo "count_tokens 6 x 48 MB: peak ${PEAK[count_tokens]} MB (bound 400 MB)"
echo "responses / chat peak (40 MB each, 6 at once): ${PEAK[responses]} / ${PEAK[chat]} MB = ${ratio}x (bound 2x)"
fail=0
[ "${PEAK[count_tokens]}" -lt 400 ] || { echo "FAIL: count_tokens peak ${PEAK[count_tokens]} MB >= 400 MB"; fail=1; }
python3 -c "import sys; sys.exit(0 if ${PEAK[responses]} < 2 * ${PEAK[chat]} else 1)" \
  || { echo "FAIL: streamed Responses peak is ${ratio}x the chat route's"; fail=1; }
exit $fail
