#!/usr/bin/env bash
# GeoDNS throughput and latency beside gdnsd, in one run: `meridian edge` and gdnsd (set up as
# the anchor of ../shared/bench/peers/dns/ does) serve the same zone and geo mapping from the same
# MaxMind test database, side by side; for each workload (the anchor's query files), dnsperf
# measures one server then the other: peak qps, p99 at peak, p99 at 70 % of the lower peak.
# Then the same workloads with both servers held to the same CPU cap (a cgroup v1 CPU quota,
# CAP_PCT % of one core, default 30), so that the servers, not the single dnsperf thread, are
# the bottleneck and qps measures how much each answers per CPU second.
# Usage: bash bench/dns/run.sh [DURATION_S=10] [CLIENTS=4] [OUTSTANDING=200] [ROUNDS=3]
# Needs (installed here if missing, as root): dnsperf gdnsd knot-dnsutils; for the capped
# section, a writable cgroup v1 `cpu` hierarchy at /sys/fs/cgroup/cpu (else it is skipped).
set -euo pipefail
DUR=${1:-10}; CL=${2:-4}; Q=${3:-200}; ROUNDS=${4:-3}
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
CGROUPS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for g in "${CGROUPS[@]}"; do rmdir "$g" 2>/dev/null || true; done
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
PIDS+=($!); EDGE_PID=$!
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
# gdnsd beside it, set up as the anchor script of $PEERS does (same config, zone, database,
# 1 UDP thread), so both servers run the same workloads in turn under the same machine load.
GD="$RUN/gdnsd"
mkdir -p "$GD/etc/zones" "$GD/etc/geoip" "$GD/run" "$GD/state"
sed -e "s#RUNDIR#$GD/run#" -e "s#STATEDIR#$GD/state#" "$PEERS/gdnsd/config" >"$GD/etc/config"
cp "$PEERS/gdnsd/zones/"* "$GD/etc/zones/"
cp "$RUN/GeoIP2-City-Test.mmdb" "$GD/etc/geoip/"
gdnsd -c "$GD/etc" checkconf >/dev/null 2>"$GD/checkconf.log" || { cat "$GD/checkconf.log"; exit 1; }
gdnsd -c "$GD/etc" start 2>"$GD/gdnsd.log" &
PIDS+=($!); GDNSD_PID=$!
for _ in $(seq 1 50); do kdig +short +time=1 +retry=0 @127.0.0.1 -p 15353 www.example.test A >/dev/null 2>&1 && break; sleep 0.1; done
declare -A PORT=([meridian]=15354 [gdnsd]=15353)
declare -A SERVER_PID=([meridian]=$EDGE_PID [gdnsd]=$GDNSD_PID)
cpu_ticks() { # CPU ticks (1/100 s, user + system) of a process and its direct children
  local t=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    [ -r "/proc/$p/stat" ] && t=$(( t + $(awk '{print $14+$15}' "/proc/$p/stat") ))
  done
  echo "$t"
}
echo "# machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
echo "## answers (meridian | gdnsd)"
for kv in none GB=81.2.69.160/27 US=216.160.83.56/29 SE=89.160.20.128/25 SG=214.0.0.0/24 CN=175.16.199.0/24; do
  ecs=(); [ "$kv" = none ] || ecs=(+subnet="${kv#*=}")
  m=$(kdig +short @127.0.0.1 -p 15354 "${ecs[@]}" geo.example.test A | tr '\n' ' ')
  g=$(kdig +short @127.0.0.1 -p 15353 "${ecs[@]}" geo.example.test A | tr '\n' ' ')
  echo "geo.example.test A ECS ${kv} -> ${m}| ${g}"
done
perf() { # server datafile [extra dnsperf args] -> dnsperf's report
  local port=${PORT[$1]} df=$2; shift 2
  dnsperf -s 127.0.0.1 -p "$port" -d "$df" -l "$DUR" -c "$CL" -T 1 -q "$Q" "$@" 2>&1
}
p99() { # dnsperf -v report on stdin -> "<qps> <p99 ms>": the 99th percentile of the answered
  # queries' latencies (dnsperf prints them in microseconds), counted in 1 µs buckets
  awk '/^> /{ us = int($NF * 1000000 + 0.5); h[us]++; n++; if (us > max) max = us }
       /Queries per second/{ q = $4 }
       END { c = 0; for (i = 0; i <= max; i++) { c += h[i]; if (c >= n * 0.99) break }
             printf "%d %.3f\n", q, (n ? i / 1000 : -1) }'
}
median() { # lines "<qps> ..." on stdin -> the line with the median qps
  sort -n | awk -v n="$ROUNDS" 'NR == int((n + 1) / 2)'
}
for s in meridian gdnsd; do
  dnsperf -s 127.0.0.1 -p "${PORT[$s]}" -d "$PEERS/queries-static-A.txt" -l 2 -c "$CL" -T 1 -q "$Q" >/dev/null 2>&1
done
UT=$(awk -F' *= *' '$1 == "udp_threads" {print $2}' "$HERE/topology.toml")
echo "## dnsperf ${DUR}s, -c $CL -T 1 -q $Q; UDP threads: meridian ${UT:-one per core}, gdnsd 1"
echo "# qps, avg_ms, lost, cpu_us_per_q (the server's CPU, user + system, per answered query):"
echo "# the peak runs, $ROUNDS per server taken in turns (the order flips each round), the run with"
echo "# the median qps. p99_peak_ms: a further run with -v (every answer's"
echo "# latency printed, which slows dnsperf itself: its qps is v_qps). p99_70_ms: a -v run paced"
echo "# with -Q at 70% of the lower of the two peaks (rate70), the same offered rate for both."
printf 'workload\tserver\tqps\tavg_ms\tlost\tcpu_us_per_q\tv_qps\tp99_peak_ms\trate70\tqps70\tp99_70_ms\truns_qps\n'
workload() { # label datafile [extra dnsperf args]
  local label=$1 df=$2; shift 2
  declare -A qps avg lost cpu vq p99p q70 p9970 runs
  local s out r order line c0 c1
  for ((r = 0; r < ROUNDS; r++)); do
    order="meridian gdnsd"; (( r % 2 )) && order="gdnsd meridian"
    for s in $order; do
      c0=$(cpu_ticks "${SERVER_PID[$s]}")
      out=$(perf "$s" "$df" "$@")
      c1=$(cpu_ticks "${SERVER_PID[$s]}")
      runs[$s]+="$(awk '/Queries per second/{printf "%d", $4}' <<<"$out") $(awk '/Average Latency/{print $4 * 1000}' <<<"$out") $(awk '/Queries lost/{print $3}' <<<"$out") $(awk -v t=$((c1 - c0)) '/Queries completed/{ if ($3 > 0) printf "%.2f", t * 10000 / $3; else print "-" }' <<<"$out")"$'\n'
    done
  done
  for s in meridian gdnsd; do
    line=$(median <<<"${runs[$s]%$'\n'}")
    read -r qps[$s] avg[$s] lost[$s] cpu[$s] <<<"$line"
    runs[$s]=$(awk '{print $1}' <<<"${runs[$s]%$'\n'}" | paste -sd,)
  done
  for s in meridian gdnsd; do
    read -r vq[$s] p99p[$s] < <(perf "$s" "$df" "$@" -v | p99)
  done
  local low=${qps[meridian]}
  [ "${qps[gdnsd]}" -lt "$low" ] && low=${qps[gdnsd]}
  local rate=$(( low * 7 / 10 ))
  for s in meridian gdnsd; do
    read -r q70[$s] p9970[$s] < <(perf "$s" "$df" "$@" -v -Q "$rate" | p99)
  done
  for s in meridian gdnsd; do
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$s" "${qps[$s]}" "${avg[$s]}" \
      "${lost[$s]}" "${cpu[$s]}" "${vq[$s]}" "${p99p[$s]}" "$rate" "${q70[$s]}" "${p9970[$s]}" "${runs[$s]}"
  done
  awk -v l="$label" -v m="${qps[meridian]}" -v g="${qps[gdnsd]}" -v mc="${cpu[meridian]}" \
    -v gc="${cpu[gdnsd]}" 'BEGIN { printf "%s\tratio\t%.2f\tCPU per query meridian/gdnsd %.2f\n", l, m / g, mc / gc }'
}
# The geo question with its letters' case drawn at random per query (fixed seed), as resolvers
# using 0x20 mixing send it: 20,000 queries, ~11,500 distinct spellings.
python3 -c '
import random
r = random.Random(20)
for _ in range(20000):
    print("".join(c.upper() if r.random() < 0.5 else c for c in "geo.example.test") + " A")' \
  >"$RUN/queries-geo-0x20.txt"
# The geo question with a Client Subnet per query, as a public resolver sends its clients'
# subnets: 100,000 queries (fixed seed), 60 % a random public /24, 40 % a random address (/32)
# in a network of the test database — few repeat, so an answer cache keyed by the exact
# subnet misses. dnsperf reads them as binary messages (-B: 2-byte length, then the query).
python3 -c '
import ipaddress, random, struct, sys
r = random.Random(7)
nets = [ipaddress.ip_network(n) for n in ("81.2.69.160/27", "216.160.83.56/29", "89.160.20.128/25",
        "175.16.199.0/24", "2.125.160.216/29", "67.43.156.0/24", "202.196.224.0/20", "214.0.0.0/16")]
qname = b"".join(bytes([len(l)]) + l.encode() for l in "geo.example.test".split(".")) + b"\0"
out = sys.stdout.buffer
for i in range(100000):
    if r.random() < 0.6:
        while True:
            a = r.getrandbits(32) & 0xFFFFFF00
            if 1 <= a >> 24 <= 223 and a >> 24 not in (10, 127):
                break
        plen = 24
    else:
        n = r.choice(nets)
        a, plen = int(n.network_address) + r.randrange(n.num_addresses), 32
    opt = struct.pack(">HBB", 1, plen, 0) + a.to_bytes(4, "big")[: (plen + 7) // 8]
    ecs = struct.pack(">HH", 8, len(opt)) + opt
    msg = (struct.pack(">6H", i & 0xFFFF, 0, 1, 0, 0, 1) + qname + struct.pack(">HH", 1, 1)
           + b"\0" + struct.pack(">HHIH", 41, 1232, 0, len(ecs)) + ecs)
    out.write(struct.pack(">H", len(msg)) + msg)' >"$RUN/queries-geo-ecs-many.bin"
# label|query file|ECS option for every query (dnsperf -E)|more dnsperf flags
WORKLOADS=(
  "static-A|$PEERS/queries-static-A.txt|"
  "mix6|$PEERS/queries-mix.txt|"
  "geo-noECS|$PEERS/queries-geo-A.txt|"
  "geo-ECS-GB|$PEERS/queries-geo-A.txt|8:$(ecs_hex 81.2.69.160/27)"
  "geo-ECS-SG|$PEERS/queries-geo-A.txt|8:$(ecs_hex 214.0.0.0/24)"
  "geo-0x20|$RUN/queries-geo-0x20.txt|"
  "geo-ECS-many|$RUN/queries-geo-ecs-many.bin||-B"
)
for w in "${WORKLOADS[@]}"; do
  IFS='|' read -r label df ecs flags <<<"$w"
  workload "$label" "$df" ${ecs:+-E "$ecs"} $flags
done

# Saturated: each server in its own cgroup with the same CFS quota (CAP_PCT % of one core per
# 100 ms period), every thread of it moved there, so both run out of CPU well below dnsperf's
# ceiling; qps is then answers per CPU share.
CAP_PCT=${CAP_PCT:-30}
CG=/sys/fs/cgroup/cpu
cap() { # server -> its threads (and its children's) in a new capped cgroup; fails if not writable
  local g="$CG/bench-dns-$1-$$" p t
  mkdir "$g" 2>/dev/null || return 1
  CGROUPS+=("$g")
  echo 100000 >"$g/cpu.cfs_period_us" && echo $((CAP_PCT * 1000)) >"$g/cpu.cfs_quota_us" || return 1
  for p in "${SERVER_PID[$1]}" $(pgrep -P "${SERVER_PID[$1]}" || true); do
    for t in /proc/"$p"/task/*; do echo "${t##*/}" >"$g/tasks" || return 1; done
  done
}
if [ -d "$CG" ] && cap meridian 2>/dev/null && cap gdnsd 2>/dev/null; then
  echo "## saturated: both servers capped at ${CAP_PCT}% of one core (cgroup v1 cpu.cfs_quota_us"
  echo "# $((CAP_PCT * 1000)) per cfs_period_us 100000), dnsperf ${DUR}s as above; qps and lost: the"
  echo "# median of $ROUNDS runs per server in turns; ratio: meridian/gdnsd qps (> 1: meridian answers"
  echo "# more with the same CPU)"
  printf 'workload\tmeridian_qps\tgdnsd_qps\tratio\tmeridian_lost\tgdnsd_lost\truns_qps (meridian; gdnsd)\n'
  for w in "${WORKLOADS[@]}"; do
    IFS='|' read -r label df ecs flags <<<"$w"
    declare -A cq=() cl=() cr=()
    for ((r = 0; r < ROUNDS; r++)); do
      order="meridian gdnsd"; (( r % 2 )) && order="gdnsd meridian"
      for s in $order; do
        out=$(perf "$s" "$df" ${ecs:+-E "$ecs"} $flags)
        cr[$s]+="$(awk '/Queries per second/{printf "%d", $4}' <<<"$out") $(awk '/Queries lost/{print $3}' <<<"$out")"$'\n'
      done
    done
    for s in meridian gdnsd; do
      read -r cq[$s] cl[$s] < <(median <<<"${cr[$s]%$'\n'}")
      cr[$s]=$(awk '{print $1}' <<<"${cr[$s]%$'\n'}" | paste -sd,)
    done
    awk -v l="$label" -v m="${cq[meridian]}" -v g="${cq[gdnsd]}" -v ml="${cl[meridian]}" \
      -v gl="${cl[gdnsd]}" -v runs="${cr[meridian]}; ${cr[gdnsd]}" \
      'BEGIN { printf "%s\t%d\t%d\t%.2f\t%s\t%s\t%s\n", l, m, g, m / g, ml, gl, runs }'
  done
else
  echo "## saturated: skipped — cannot create cgroups under $CG (needs root and a cgroup v1 cpu"
  echo "# hierarchy mounted there)"
fi
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
