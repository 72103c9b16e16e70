#!/usr/bin/env bash
# GeoDNS throughput beside gdnsd, in one run: dnsperf (the workloads and query files of
# ../shared/bench/peers/dns/) against `meridian edge` serving the same zone and geo mapping with
# the same MaxMind test database, then the gdnsd anchor script itself.
# Usage: bash bench/dns/run.sh [DURATION_S=10] [CLIENTS=4] [OUTSTANDING=200]
# Needs (installed here if missing, as root): dnsperf gdnsd knot-dnsutils.
set -euo pipefail
DUR=${1:-10}; CL=${2:-4}; Q=${3:-200}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/bench/dns"
PEERS="$ROOT/../shared/bench/peers/dns"
[ -d "$PEERS" ] || PEERS="/work/shared/bench/peers/dns"
for b in dnsperf gdnsd kdig; do
  command -v "$b" >/dev/null || { apt-get update -qq && apt-get install -y -qq dnsperf gdnsd knot-dnsutils >/dev/null; }
done
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p meridian
BIN="$TARGET/release/meridian"
RUN=$(mktemp -d -t bench-dns.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT
cp "$HERE/topology.toml" "$RUN/"
cp "$PEERS/../../../data/geoip/GeoIP2-City-Test.mmdb" "$RUN/"
for port in 18190 18191 18192 18193; do
  python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()' "$port" &
  PIDS+=($!)
done
MERIDIAN_LOG=warn "$BIN" edge --config "$RUN/topology.toml" --edge bench 2>>"$RUN/edge.err" &
PIDS+=($!)
for _ in $(seq 1 100); do kdig +short +time=1 +retry=0 @127.0.0.1 -p 15354 www.example.test A >/dev/null 2>&1 && break; sleep 0.1; done
kdig +short +time=1 +retry=0 @127.0.0.1 -p 15354 www.example.test A | grep -q 192.0.2.2 \
  || { echo "meridian edge does not answer DNS:"; cat "$RUN/edge.err"; exit 1; }
sleep 1 # the first probes mark every region up
ecs_hex() { # a.b.c.d/len -> hex for dnsperf -E 8:<hex>
  local ip=${1%/*} len=${1#*/} IFS=. ; set -- $ip
  local nb=$(( (len + 7) / 8 )) out; out=$(printf '0001%02x00' "$len")
  local b=("$1" "$2" "$3" "$4") i
  for ((i=0;i<nb;i++)); do out+=$(printf '%02x' "${b[$i]}"); done
  echo "$out"
}
echo "# machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "## meridian answers"
for kv in GB=81.2.69.160/27 US=216.160.83.56/29 SE=89.160.20.128/25 SG=214.0.0.0/24 CN=175.16.199.0/24; do
  echo "geo.example.test A ECS ${kv} -> $(kdig +short @127.0.0.1 -p 15354 +subnet="${kv#*=}" geo.example.test A | tr '\n' ' ')"
done
run() { # label datafile [extra dnsperf args]
  local label=$1 df=$2; shift 2
  local out
  out=$(dnsperf -s 127.0.0.1 -p 15354 -d "$df" -l "$DUR" -c "$CL" -T 1 -q "$Q" "$@" 2>&1)
  printf '%s\t%s\t%s\t%s\t%s\n' "$label" \
    "$(awk '/Queries per second/{print $4}' <<<"$out")" \
    "$(awk '/Average Latency/{print $4*1000}' <<<"$out")" \
    "$(awk '/Latency StdDev/{print $4*1000}' <<<"$out")" \
    "$(awk '/Queries lost/{print $3}' <<<"$out")"
}
dnsperf -s 127.0.0.1 -p 15354 -d "$PEERS/queries-static-A.txt" -l 2 -c "$CL" -T 1 -q "$Q" >/dev/null 2>&1
echo "## meridian: dnsperf ${DUR}s, -c $CL -T 1 -q $Q"
printf 'workload\tqps\tavg_lat_ms\tstddev_ms\tlost\n'
run static-A   "$PEERS/queries-static-A.txt"
run mix6       "$PEERS/queries-mix.txt"
run geo-noECS  "$PEERS/queries-geo-A.txt"
run geo-ECS-GB "$PEERS/queries-geo-A.txt" -E "8:$(ecs_hex 81.2.69.160/27)"
run geo-ECS-SG "$PEERS/queries-geo-A.txt" -E "8:$(ecs_hex 214.0.0.0/24)"
echo "## gdnsd (the anchor of ../shared/bench/peers/dns/)"
bash "$PEERS/run_dns_anchor.sh" "$DUR" 1 "$CL" "$Q"
