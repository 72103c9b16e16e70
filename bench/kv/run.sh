#!/usr/bin/env bash
# Durable KV throughput and latency: meridian region node vs redis-server (AOF fsync always and
# everysec), in one run on this machine, 256-byte values, 64 connections.
# Usage: bash bench/kv/run.sh [SECONDS=10]
# Needs (installed here if missing, as root): wrk redis-server redis-tools.
set -euo pipefail
SECS=${1:-10}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/bench/kv"
export LUA_PATH="$ROOT/bench/lib/?.lua;;"  # bench/lib/pace.lua for the wrk scripts
need=()
for b in wrk redis-server redis-benchmark; do command -v "$b" >/dev/null || need+=("$b"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq wrk redis-server redis-tools >/dev/null
fi
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p meridian
BIN="$ROOT/target/release/meridian"
# Both systems write to the same filesystem, next to the repository.
RUN=$(mktemp -d -p "$ROOT/target" bench-kv.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$RUN"; }
trap cleanup EXIT

echo "# machine: $(nproc) cores, $(uname -r); values 256 B; 64 connections; ${SECS}s per step"
declare -A R

redis_run() { # $1 = appendfsync mode
  local port=16380 dir="$RUN/redis-$1"
  mkdir -p "$dir"
  redis-server --bind 127.0.0.1 --port $port --save '' --appendonly yes --appendfsync "$1" \
    --dir "$dir" --daemonize no --logfile "$dir/log" & local pid=$!
  PIDS+=($pid)
  for _ in $(seq 1 50); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.1; done
  local n=$((SECS * 30000))
  local out
  out=$(redis-benchmark -h 127.0.0.1 -p $port -t set,get -n $n -c 64 -r 100000 -d 256 --csv)
  # CSV: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  R[redis_$1_set]=$(echo "$out" | awk -F'","' '/^"SET"/{print $2" "$5" "$7}')
  R[redis_$1_get]=$(echo "$out" | awk -F'","' '/^"GET"/{print $2" "$5" "$7}')
  kill -TERM $pid; wait $pid 2>/dev/null || true
}
redis_run always
redis_run everysec

"$BIN" region --config "$HERE/topology.toml" --region us-east-1 --data "$RUN/meridian" \
  --listen 127.0.0.1:17801 & MPID=$!
PIDS+=($MPID)
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:17801/health/ready >/dev/null && break; sleep 0.1; done

wrk_run() { # $1 = put|get, $2 = rate (0 = flat out)
  MODE=$1 RATE=$2 wrk -t2 -c64 -d"${SECS}s" -s "$HERE/wrk.lua" http://127.0.0.1:17801 \
    | awk '/^RESULT/{for(i=2;i<=NF;i++){split($i,a,"="); printf "%s ", a[2]}}'
}
# Fill every key once (so GETs find them), then measure.
MODE=fill wrk -t2 -c64 -d8s -s "$HERE/wrk.lua" http://127.0.0.1:17801 >/dev/null
R[m_put]=$(wrk_run put 0)
R[m_get]=$(wrk_run get 0)
put_peak=$(echo "${R[m_put]}" | cut -d' ' -f1)
get_peak=$(echo "${R[m_get]}" | cut -d' ' -f1)
R[m_put_half]=$(wrk_run put $((put_peak / 2)))
R[m_get_half]=$(wrk_run get $((get_peak / 2)))
fsyncs=$(curl -s http://127.0.0.1:17801/metrics | awk '/^meridian_store_fsyncs_total/{print $2}')
txns=$(curl -s http://127.0.0.1:17801/metrics | awk '/^meridian_store_transactions_total/{print $2}')

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
f() { echo "$1" | cut -d' ' -f"$2"; }
printf '\n| system | op | ops/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|\n'
printf '| redis appendfsync always | SET | %s | %s | %s | - |\n' ${R[redis_always_set]}
printf '| redis appendfsync always | GET | %s | %s | %s | - |\n' ${R[redis_always_get]}
printf '| redis appendfsync everysec | SET | %s | %s | %s | - |\n' ${R[redis_everysec_set]}
printf '| redis appendfsync everysec | GET | %s | %s | %s | - |\n' ${R[redis_everysec_get]}
printf '| meridian (fsync per group commit) | PUT | %s | %s | %s | %s |\n' $(f "${R[m_put]}" 1) $(f "${R[m_put]}" 2) $(f "${R[m_put]}" 3) $(f "${R[m_put]}" 4)
printf '| meridian | GET | %s | %s | %s | %s |\n' $(f "${R[m_get]}" 1) $(f "${R[m_get]}" 2) $(f "${R[m_get]}" 3) $(f "${R[m_get]}" 4)
printf '| meridian at half peak | PUT | %s | %s | %s | %s |\n' $(f "${R[m_put_half]}" 1) $(f "${R[m_put_half]}" 2) $(f "${R[m_put_half]}" 3) $(f "${R[m_put_half]}" 4)
printf '| meridian at half peak | GET | %s | %s | %s | %s |\n' $(f "${R[m_get_half]}" 1) $(f "${R[m_get_half]}" 2) $(f "${R[m_get_half]}" 3) $(f "${R[m_get_half]}" 4)
echo
echo "ratio durable writes, meridian PUT / redis SET (always):   $(ratio "$put_peak" "$(f "${R[redis_always_set]}" 1)")"
echo "ratio durable writes, meridian PUT / redis SET (everysec): $(ratio "$put_peak" "$(f "${R[redis_everysec_set]}" 1)")"
echo "ratio reads, meridian GET / redis GET (always):            $(ratio "$get_peak" "$(f "${R[redis_always_get]}" 1)")"
echo "meridian transactions per fsync (group commit): $(ratio "${txns:-0}" "${fsyncs:-0}")"
