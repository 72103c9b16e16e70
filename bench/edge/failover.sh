#!/usr/bin/env bash
# Failover under load: wrk -t2 -c32 GETs through meridian edge to region r1 (nginx); r1 is
# SIGKILLed mid-run. Reports the failed requests, when the edge stopped using r1 (passive
# ejection) and when probes marked it down (1 s probes, down_after = 3: target <= 3 s).
# Usage: bash bench/edge/failover.sh [SECONDS=12] [KILL_AT=4]
# Needs (installed here if missing, as root): wrk nginx.
set -euo pipefail
SECS=${1:-12}; KILL_AT=${2:-4}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/bench/edge"
export LUA_PATH="$ROOT/bench/lib/?.lua;;"  # bench/lib/pace.lua for the wrk scripts
PEERS="$ROOT/../shared/bench/peers/http"
[ -d "$PEERS" ] || PEERS="/work/shared/bench/peers/http"
for b in wrk nginx; do
  command -v "$b" >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk nginx >/dev/null; }
done
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p meridian
BIN="$TARGET/release/meridian"
RUN=$(mktemp -d -t bench-failover.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT
for r in 1 2; do
  mkdir -p "$RUN/r$r"
  sed "s/WORKERS/1/; s/18081/1809$r/" "$PEERS/nginx-upstream.conf" > "$RUN/r$r/nginx.conf"
  nginx -p "$RUN/r$r" -c "$RUN/r$r/nginx.conf" -g 'daemon off;' 2>>"$RUN/r$r.err" &
  PIDS+=($!); eval "R$r=$!"
done
MERIDIAN_LOG=warn "$BIN" edge --config "$HERE/failover.toml" --edge bench 2>>"$RUN/edge.err" &
PIDS+=($!)
for port in 18091 18092 18085; do
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
done
now() { date +%s.%N; }
wrk -t2 -c32 -d"${SECS}s" -s "$HERE/pace.lua" http://127.0.0.1:18085/ > "$RUN/wrk.out" &
WRK=$!
sleep "$KILL_AT"
t0=$(now)
kill -KILL "$R1" $(pgrep -P "$R1" || true)
ejected=""; down=""
while [ -z "$down" ] && awk -v a="$(now)" -v b="$t0" 'BEGIN{exit !(a-b < 10)}'; do
  st=$("$BIN" ctl --admin http://127.0.0.1:19085 status 2>/dev/null || true)
  line=$(grep -A1 '^r1 ' <<<"$st" | tail -1)
  [ -z "$ejected" ] && grep -q 'unavailable' <<<"$line" && ejected=$(now)
  grep -q ' down ' <<<"$line " && down=$(now)
  sleep 0.05
done
wait "$WRK"
echo "# machine: $(nproc) cores; wrk -t2 -c32 GET for ${SECS}s, r1 SIGKILLed at ${KILL_AT}s; probes 1s, down_after 3"
grep '^RESULT' "$RUN/wrk.out" | sed 's/^RESULT /wrk: /'
awk -v t0="$t0" -v e="${ejected:-0}" -v d="${down:-0}" 'BEGIN{
  if (e > 0) printf "r1 unavailable (passive ejection) after %.3f s\n", e - t0; else print "r1 never ejected";
  if (d > 0) printf "r1 marked down by probes after %.3f s\n", d - t0; else print "r1 not marked down within 10 s" }'
