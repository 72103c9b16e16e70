#!/usr/bin/env bash
# Checks the image that build.sh makes, with a real docker daemon: `--version`; `check` of the
# example topology (exit 0) and of a broken one (exit 2, naming file:line); a region node in a
# container, as the unprivileged user, serving PUT/GET on a published loopback port; `docker
# stop` ends it cleanly (exit 0) within the stop timeout; started again on the same volume, the
# acknowledged write is still there; an edge bound on the container's addresses, ready by its
# token-free health call, stopping cleanly.
# Usage: bash deploy/container/test.sh          (not part of .ci/run: it needs a docker daemon)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TAG="meridian:test-$$"
NAME="meridian-test-$$"
VOL="meridian-test-$$"
BAD=$(mktemp -d)
cleanup() {
  docker rm -f "$NAME" >/dev/null 2>&1 || true
  docker volume rm "$VOL" >/dev/null 2>&1 || true
  docker rmi "$TAG" >/dev/null 2>&1 || true
  rm -rf "$BAD"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

bash "$ROOT/deploy/container/build.sh" "$TAG" >/dev/null

v=$(docker run --rm "$TAG" --version)
[[ "$v" == meridian\ * ]] || fail "--version printed: $v"
ok "--version: $v"

docker run --rm -v "$ROOT/examples:/etc/meridian:ro" "$TAG" check --config /etc/meridian/meridian.toml >/dev/null \
  || fail "check of examples/meridian.toml"
ok "check of the example topology exits 0"
printf '[cluster]\nname = "x"\nnmae = "typo"\n' > "$BAD/bad.toml"
chmod 0755 "$BAD" && chmod 0644 "$BAD/bad.toml"  # readable by the image's user
set +e
err=$(docker run --rm -v "$BAD:/etc/meridian:ro" "$TAG" check --config /etc/meridian/bad.toml 2>&1)
rc=$?
set -e
[ "$rc" = 2 ] || fail "check of a broken topology exited $rc, not 2: $err"
grep -q 'bad.toml:3' <<<"$err" || fail "the error does not name bad.toml:3: $err"
ok "check of a broken topology exits 2 naming bad.toml:3"

docker volume create "$VOL" >/dev/null
start() {
  docker run -d --name "$NAME" -v "$ROOT/examples:/etc/meridian:ro" -v "$VOL:/var/lib/meridian" \
    -p 127.0.0.1::7601 "$TAG" region --config /etc/meridian/meridian.toml --region us-east-1 \
    --data /var/lib/meridian --listen 0.0.0.0:7601 --join-wait 1s >/dev/null
  addr=$(docker port "$NAME" 7601/tcp | head -1)
  for _ in $(seq 1 100); do
    curl -sf "http://$addr/health/ready" >/dev/null && return 0
    sleep 0.1
  done
  docker logs "$NAME" >&2
  fail "the region node in the container was not ready within 10 s"
}
start
uid=$(docker top "$NAME" -eo pid,uid,comm | awk '$3 == "meridian" {print $2}')
[ "$uid" = 65532 ] || fail "the node runs as uid '$uid', not 65532"
ok "region node ready on $addr, running as uid 65532"

code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data 'from a container' "http://$addr/v1/kv/scratch/k1")
[[ "$code" == 2* ]] || fail "PUT answered $code"
got=$(curl -sf "http://$addr/v1/kv/scratch/k1")
[ "$got" = "from a container" ] || fail "GET answered: $got"
ok "PUT then GET through the published port"

stopped_at=$(date +%s)
docker stop -t 10 "$NAME" >/dev/null
took=$(( $(date +%s) - stopped_at ))
rc=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
[ "$rc" = 0 ] || fail "the node exited $rc after docker stop (SIGTERM)"
[ "$took" -lt 10 ] || fail "docker stop took ${took}s: SIGTERM was not honoured"
ok "docker stop: exit 0 after ${took}s"

docker rm "$NAME" >/dev/null
start
got=$(curl -sf "http://$addr/v1/kv/scratch/k1")
[ "$got" = "from a container" ] || fail "after a restart on the same volume, GET answered: $got"
ok "the acknowledged write survives a restart on the same volume"
docker rm -f "$NAME" >/dev/null

# An edge: bound on the container's addresses (--listen, --admin-listen, --dns-listen) while
# the topology keeps its own; the admin API's health calls answer without a token, and the
# proxy answers (the example's app backends are not running: a JSON 502/503, not a hang).
docker run -d --name "$NAME" -v "$ROOT/examples:/etc/meridian:ro" -p 127.0.0.1::8080 \
  -p 127.0.0.1::9080 "$TAG" edge --config /etc/meridian/meridian.toml --edge edge-local \
  --listen 0.0.0.0:8080 --admin-listen 0.0.0.0:9080 --dns-listen 0.0.0.0:5353 >/dev/null
admin=$(docker port "$NAME" 9080/tcp | head -1)
proxy=$(docker port "$NAME" 8080/tcp | head -1)
ready=
for _ in $(seq 1 100); do
  ready=$(curl -sf "http://$admin/health/ready" || true)
  [ -n "$ready" ] && break
  sleep 0.1
done
grep -q '"edge":"edge-local"' <<<"$ready" || { docker logs "$NAME" >&2; fail "edge /health/ready answered: $ready"; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$proxy/")
[[ "$code" == 5* ]] || fail "the proxy answered $code with no backend up"
ok "edge ready on $admin (no token), proxy on $proxy answers $code without backends"
docker stop -t 10 "$NAME" >/dev/null
rc=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
[ "$rc" = 0 ] || fail "the edge exited $rc after docker stop"
ok "edge: docker stop, exit 0"
echo "container image: all checks passed"
