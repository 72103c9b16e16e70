#!/usr/bin/env bash
# Replication benchmark: three real `meridian region` processes (release build) replicating
# through `meridian wan` relays with one-way delays us-east-1↔eu-west-1 40 ms,
# eu-west-1↔ap-southeast-1 85 ms, us-east-1↔ap-southeast-1 115 ms. The driver
# (crates/meridian-lab/examples/repl_bench.rs) measures async lag, sync write latency, wire bytes
# per op and convergence after a partition of ap-southeast-1.
# Usage: bash bench/repl/run.sh [RATE_PER_REGION=1000] [SECS=20] [SYNC_SECS=10] [PARTITION_SECS=30]
# Everything listens on 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail
RATE=${1:-1000}
SECS=${2:-20}
SYNC_SECS=${3:-10}
PARTITION_SECS=${4:-30}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p meridian
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p meridian-lab --example repl_bench
BIN="$TARGET/release/meridian"
DRIVER="$TARGET/release/examples/repl_bench"
RUN=$(mktemp -d)
PIDS=()
cleanup() {
  # Nodes first (newest first), the emulator last, so no link sees its relay vanish.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[$i]}" 2>/dev/null || true
    wait "${PIDS[$i]}" 2>/dev/null || true
  done
  [ -n "${KEEP:-}" ] && echo "kept $RUN" || rm -rf "$RUN"
}
trap cleanup EXIT

REGIONS=(us-east-1 eu-west-1 ap-southeast-1)
declare -A PORT=([us-east-1]=17811 [eu-west-1]=17812 [ap-southeast-1]=17813)
declare -A IDX=([us-east-1]=1 [eu-west-1]=2 [ap-southeast-1]=3)
CONTROL=127.0.0.1:17899
DELAYS=(us-east-1:eu-west-1:40 eu-west-1:ap-southeast-1:85 us-east-1:ap-southeast-1:115)

head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RUN/cluster.secret"
cat > "$RUN/meridian.toml" <<TOML
[cluster]
name = "bench-repl"
secret_file = "cluster.secret"

[[region]]
name = "us-east-1"
node = "http://127.0.0.1:${PORT[us-east-1]}"

[[region]]
name = "eu-west-1"
node = "http://127.0.0.1:${PORT[eu-west-1]}"

[[region]]
name = "ap-southeast-1"
node = "http://127.0.0.1:${PORT[ap-southeast-1]}"

[[keyspace]]
name = "notes"
type = "register"

[[keyspace]]
name = "orders"
type = "register"
replication = "sync"
quorum = 2
sync_timeout = "2s"
TOML

# A relay per directed link: region P pulls from S through 127.0.0.1:179PS.
LINKS=()
declare -A PEERS
for p in "${REGIONS[@]}"; do
  for s in "${REGIONS[@]}"; do
    [ "$p" = "$s" ] && continue
    lport=179${IDX[$p]}${IDX[$s]}
    LINKS+=(--link "$p:$s:$lport:${PORT[$s]}")
    PEERS[$p]+=" --peer $s=http://127.0.0.1:$lport"
  done
done
DELAY_ARGS=()
for d in "${DELAYS[@]}"; do DELAY_ARGS+=(--delay "$d"); done

MERIDIAN_LOG=warn "$BIN" wan "${DELAY_ARGS[@]}" "${LINKS[@]}" --control "$CONTROL" \
  > "$RUN/wan.out" 2> "$RUN/wan.log" &
PIDS+=($!)
for _ in $(seq 1 100); do  # relays listen before the control port opens
  (exec 3<>"/dev/tcp/${CONTROL%:*}/${CONTROL#*:}") 2>/dev/null && break
  sleep 0.1
done
for r in "${REGIONS[@]}"; do
  # shellcheck disable=SC2086
  MERIDIAN_LOG=warn "$BIN" region --config "$RUN/meridian.toml" --region "$r" \
    --data "$RUN/data/$r" ${PEERS[$r]} 2> "$RUN/$r.log" &
  PIDS+=($!)
done
for r in "${REGIONS[@]}"; do
  up=
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:${PORT[$r]}/health/ready" >/dev/null 2>&1 && { up=1; break; }
    sleep 0.1
  done
  [ -n "$up" ] || { echo "$r did not become ready:"; tail -n 20 "$RUN/$r.log"; exit 1; }
done
sleep 1  # links up

echo "# machine: $(nproc) cores, $(uname -r); $(date -u +%F); rate $RATE/s per region"
NODE_ARGS=()
for r in "${REGIONS[@]}"; do NODE_ARGS+=(--node "$r=http://127.0.0.1:${PORT[$r]}"); done
"$DRIVER" "${NODE_ARGS[@]}" "${DELAY_ARGS[@]}" --control "$CONTROL" --rate "$RATE" \
  --secs "$SECS" --sync-secs "$SYNC_SECS" --partition-secs "$PARTITION_SECS" --isolate ap-southeast-1 \
  --secret-file "$RUN/cluster.secret"
for r in "${REGIONS[@]}"; do
  if grep -qE " ERROR |panicked" "$RUN/$r.log"; then
    echo "## $r log (errors):"; grep -E " ERROR |panicked" "$RUN/$r.log" | tail -5
  fi
done
