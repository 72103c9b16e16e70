#!/usr/bin/env bash
# A region that loses its disk: how long until its new store has joined its peers and serves.
# Three region nodes on loopback; KEYS registers of 256 B written at us-east-1 (wrk, the KV
# bench's fill script) and replicated; eu-west-1 SIGKILLed, its data directory deleted, started
# again; measured: seconds from the start to /health/ready 200, records copied (the node's
# log), and every key read back there.
# Usage: bash bench/join/run.sh [KEYS=200000]
# Needs (installed here if missing, as root): wrk.
set -euo pipefail
KEYS=${1:-200000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export LUA_PATH="$ROOT/bench/lib/?.lua;;"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p meridian
BIN="$ROOT/target/release/meridian"
RUN=$(mktemp -d -p "$ROOT/target" bench-join.XXXXXX)
declare -A PID PORT=([us-east-1]=17811 [eu-west-1]=17812 [ap-southeast-1]=17813)
cleanup() { for p in "${PID[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$RUN"; }
trap cleanup EXIT

{
  printf '[cluster]\nname = "bench-join"\n'
  for r in us-east-1 eu-west-1 ap-southeast-1; do
    printf '\n[[region]]\nname = "%s"\nnode = "http://127.0.0.1:%s"\n' "$r" "${PORT[$r]}"
  done
  printf '\n[[keyspace]]\nname = "bench"\ntype = "register"\n'
} > "$RUN/meridian.toml"

start() { # $1 = region
  MERIDIAN_LOG=info "$BIN" region --config "$RUN/meridian.toml" --region "$1" \
    --data "$RUN/data/$1" >> "$RUN/$1.log" 2>&1 &
  PID[$1]=$!
}
ready() { # $1 = region; waits at most 300 s
  for _ in $(seq 1 30000); do
    curl -fs "http://127.0.0.1:${PORT[$1]}/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.01
  done
  echo "$1 did not become ready:"; tail -n 20 "$RUN/$1.log"; exit 1
}
applied() { # $1 = region, $2 = origin: that origin's applied sequence there
  curl -fs "http://127.0.0.1:${PORT[$1]}/v1/admin/status" \
    | python3 -c "import json,sys; t=json.load(sys.stdin)['applied']; print(dict(p.rsplit(':', 1) for p in t.split(',') if p).get('$2', '0'))"
}

for r in us-east-1 eu-west-1 ap-southeast-1; do start "$r"; done
for r in us-east-1 eu-west-1 ap-southeast-1; do ready "$r"; done
echo "# machine: $(nproc) cores, $(uname -r); $(date -u +%F); $KEYS keys of 256 B"
fill_s=$(( KEYS / 10000 + 5 ))  # the fill writes about 17,000/s here; wrapping past KEYS is harmless
MODE=fill KEYS=$KEYS wrk -t2 -c64 -d"${fill_s}s" -s "$ROOT/bench/kv/wrk.lua" \
  "http://127.0.0.1:${PORT[us-east-1]}" >/dev/null
want=$(applied us-east-1 us-east-1)
for _ in $(seq 1 600); do
  [ "$(applied eu-west-1 us-east-1)" = "$want" ] && [ "$(applied ap-southeast-1 us-east-1)" = "$want" ] && break
  sleep 0.1
done
du_mb=$(du -sm "$RUN/data/eu-west-1" | cut -f1)
echo "written at us-east-1: $want ops, replicated; eu-west-1's data directory ${du_mb} MB"

kill -KILL "${PID[eu-west-1]}"; wait "${PID[eu-west-1]}" 2>/dev/null || true
rm -rf "$RUN/data/eu-west-1"
t0=$(date +%s.%N)
start eu-west-1
ready eu-west-1
t1=$(date +%s.%N)
copied=$(grep -o 'records=[0-9]*' "$RUN/eu-west-1.log" | tail -1 | cut -d= -f2)
missing=0
for i in $(seq 1 $(( KEYS / 1000 )) "$KEYS"); do
  curl -fs -o /dev/null "http://127.0.0.1:${PORT[eu-west-1]}/v1/kv/bench/k$i" || missing=$((missing + 1))
done
python3 - "$t0" "$t1" "$copied" "$missing" <<'PY'
import sys
t0, t1, copied, missing = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3] or 0), int(sys.argv[4])
s = t1 - t0
print(f"rejoin: ready {s:.2f} s after the start on an empty directory; {copied} records copied "
      f"({copied / s:,.0f} records/s); sampled keys missing: {missing}")
PY
