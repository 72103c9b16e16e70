#!/usr/bin/env bash
# Edge proxy throughput and latency beside the peers of ../shared/bench/peers/http/, in one run:
# wrk -t2 -c64 against nginx directly, haproxy -> nginx, nginx -> nginx and meridian edge ->
# nginx (same upstream, same configs as the harness), then direct, meridian and haproxy paced to
# 70 % of meridian's peak (pace.lua) for the added p99 — haproxy's as the reference for what
# this machine allows. CPU seconds of each proxy (and of the upstream) per run.
# WORKERS is nginx's worker_processes, haproxy's nbthread and the edge's --threads alike.
# Usage: bash bench/edge/run.sh [SECONDS=10] [WORKERS=1]
# Needs (installed here if missing, as root): wrk nginx haproxy.
set -euo pipefail
SECS=${1:-10}; W=${2:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/bench/edge"
export LUA_PATH="$ROOT/bench/lib/?.lua;;"  # bench/lib/pace.lua for the wrk scripts
PEERS="$ROOT/../shared/bench/peers/http"
[ -d "$PEERS" ] || PEERS="/work/shared/bench/peers/http"
need=()
for b in wrk nginx haproxy; do command -v "$b" >/dev/null || need+=("$b"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq wrk nginx haproxy >/dev/null
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p meridian
BIN="$TARGET/release/meridian"
RUN=$(mktemp -d -t bench-edge.XXXXXX)
mkdir -p "$RUN/up" "$RUN/px"
sed "s/WORKERS/$W/" "$PEERS/nginx-upstream.conf" > "$RUN/up/nginx.conf"
sed "s/WORKERS/$W/" "$PEERS/nginx-proxy.conf" > "$RUN/px/nginx.conf"
sed "s/NBTHREAD/$W/" "$PEERS/haproxy.cfg" > "$RUN/haproxy.cfg"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT

nginx -p "$RUN/up" -c "$RUN/up/nginx.conf" -g 'daemon off;' 2>>"$RUN/up.err" & UP=$!; PIDS+=("$UP")
nginx -p "$RUN/px" -c "$RUN/px/nginx.conf" -g 'daemon off;' 2>>"$RUN/px.err" & NPX=$!; PIDS+=("$NPX")
haproxy -db -f "$RUN/haproxy.cfg" 2>>"$RUN/hap.err" & HAP=$!; PIDS+=("$HAP")
MERIDIAN_LOG=warn "$BIN" edge --config "$HERE/topology.toml" --edge bench --threads "$W" \
  2>>"$RUN/edge.err" &
EDGE=$!; PIDS+=("$EDGE")
for port in 18081 18082 18083 18084; do
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:$port/" >/dev/null || { echo "port $port not answering"; cat "$RUN"/*.err; exit 1; }
done

cpu_ticks() { # CPU ticks (1/100 s) of processes and their direct children
  local t=0 p
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    [ -r "/proc/$p/stat" ] && t=$(( t + $(awk '{print $14+$15}' "/proc/$p/stat") ))
  done
  echo "$t"
}
run() { # name port rate pids... -> "rps p50 p99 errors proxy_cpu_s"
  local name=$1 port=$2 rate=$3; shift 3
  local c0 c1 out
  c0=$(cpu_ticks "$@")
  out=$(RATE=$rate THREADS=2 wrk -t2 -c64 -d"${SECS}s" -s "$HERE/pace.lua" "http://127.0.0.1:$port/")
  c1=$(cpu_ticks "$@")
  awk -v t=$((c1 - c0)) '/^RESULT/{for(i=2;i<=NF;i++){split($i,a,"="); printf "%s ", a[2]}
    printf "%.2f\n", t/100}' <<<"$out"
}

echo "# machine: $(nproc) cores, $(uname -r); wrk -t2 -c64, ${SECS}s per step; workers/nbthread $W"
for port in 18081 18082 18083 18084; do wrk -t2 -c64 -d2s "http://127.0.0.1:$port/" >/dev/null; done
declare -A R
R[direct]=$(run nginx-direct 18081 0 "$UP")
R[haproxy]=$(run haproxy-to-nginx 18082 0 "$HAP")
R[nginx]=$(run nginx-to-nginx 18083 0 "$NPX")
R[meridian]=$(run meridian-to-nginx 18084 0 "$EDGE")
peak=$(cut -d' ' -f1 <<<"${R[meridian]}")
rate=$((peak * 70 / 100))
R[direct70]=$(run nginx-direct 18081 "$rate" "$UP")
R[meridian70]=$(run meridian-to-nginx 18084 "$rate" "$EDGE")
R[haproxy70]=$(run haproxy-to-nginx 18082 "$rate" "$HAP")

printf '%-28s %10s %8s %8s %7s %12s %14s\n' target req/s p50_ms p99_ms errors proxy_cpu_s cpu_s/1k_rps
for k in direct haproxy nginx meridian direct70 meridian70 haproxy70; do
  read -r rps p50 p99 err cpu <<<"${R[$k]}"
  per=$(awk -v c="$cpu" -v r="$rps" -v s="$SECS" 'BEGIN{ if (r>0) printf "%.3f", c/s/(r/1000); else print "-" }')
  label=$k; [ "$k" = direct70 ] && label="direct@70%meridian($rate/s)"
  [ "$k" = meridian70 ] && label="meridian@70%($rate/s)"
  [ "$k" = haproxy70 ] && label="haproxy@70%meridian"
  printf '%-28s %10s %8s %8s %7s %12s %14s\n' "$label" "$rps" "$p50" "$p99" "$err" "$cpu" "$per"
done
m=$(cut -d' ' -f1 <<<"${R[meridian]}"); h=$(cut -d' ' -f1 <<<"${R[haproxy]}"); n=$(cut -d' ' -f1 <<<"${R[nginx]}")
awk -v m="$m" -v h="$h" -v n="$n" 'BEGIN{printf "meridian/haproxy throughput %.2fx, meridian/nginx-proxy %.2fx\n", m/h, m/n}'
d99=$(cut -d' ' -f3 <<<"${R[direct70]}"); m99=$(cut -d' ' -f3 <<<"${R[meridian70]}")
h99=$(cut -d' ' -f3 <<<"${R[haproxy70]}")
awk -v d="$d99" -v m="$m99" -v h="$h99" 'BEGIN{printf "added p99 at 70%% of meridian peak: meridian %.3f ms, haproxy at the same rate %.3f ms\n", m-d, h-d}'
echo "(proxy_cpu_s of nginx-direct is the upstream's own CPU; for proxies it is the proxy's only)"
