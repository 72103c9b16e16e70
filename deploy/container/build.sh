#!/usr/bin/env bash
# Builds the Meridian container image from this checkout, with no registry: the release binary
# is built here (cargo), and the image is assembled FROM scratch with the shared libraries that
# binary loads (as `ldd` lists them, from this machine), the CA bundle and an unprivileged user
# (uid/gid 65532, `meridian`). So the image runs wherever this machine's C library would, and an
# air-gapped site builds it with what it already has.
# Usage: bash deploy/container/build.sh [TAG=meridian:<git describe>]   build the image
#        bash deploy/container/build.sh --context DIR   only assemble its build context in DIR
#        (empty or new): DIR/Dockerfile, DIR/rootfs/, DIR/data/
# MERIDIAN_BIN=FILE takes that binary instead of building target/release/meridian.
# Needs: cargo (unless MERIDIAN_BIN), ldd, strip; docker with a running daemon to build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ "${1:-}" = "--context" ]; then
  [ -n "${2:-}" ] || { echo "build.sh: --context needs a directory" >&2; exit 2; }
  CTX=$2
  mkdir -p "$CTX"
  [ -z "$(ls -A "$CTX")" ] || { echo "build.sh: $CTX is not empty" >&2; exit 2; }
  TAG=
else
  TAG=${1:-meridian:$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo dev)}
  command -v docker >/dev/null || { echo "build.sh: docker is not installed" >&2; exit 1; }
  docker info >/dev/null 2>&1 || { echo "build.sh: no docker daemon answers (start dockerd)" >&2; exit 1; }
  CTX=$(mktemp -d)
  trap 'rm -rf "$CTX"' EXIT
fi

BIN=${MERIDIAN_BIN:-}
if [ -z "$BIN" ]; then
  echo "building the release binary" >&2
  cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p meridian
  BIN="$ROOT/target/release/meridian"
fi

FS="$CTX/rootfs"
mkdir -p "$FS/usr/local/bin" "$FS/etc/ssl/certs" "$FS/tmp" "$CTX/data"
chmod 1777 "$FS/tmp"
install -m 0755 "$BIN" "$FS/usr/local/bin/meridian"
# Debug line tables stay in target/; symbols stay for readable backtraces.
strip --strip-debug "$FS/usr/local/bin/meridian"
# Each library at the path the binary's loader looks for it (the loader itself included).
libs=$(ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
[ -n "$libs" ] || { echo "build.sh: ldd listed no libraries for $BIN" >&2; exit 1; }
for lib in $libs; do
  mkdir -p "$FS$(dirname "$lib")"
  cp -L "$lib" "$FS$lib"
done
bundle=/etc/ssl/certs/ca-certificates.crt
if [ -f "$bundle" ]; then
  cp -L "$bundle" "$FS$bundle"
else
  echo "build.sh: no $bundle here: https backends need --backend-ca" >&2
fi
printf 'root:x:0:0:root:/root:/sbin/nologin\nmeridian:x:65532:65532:meridian:/var/lib/meridian:/sbin/nologin\n' > "$FS/etc/passwd"
printf 'root:x:0:\nmeridian:x:65532:\n' > "$FS/etc/group"
printf 'hosts: files dns\n' > "$FS/etc/nsswitch.conf"

cp "$ROOT/deploy/container/Dockerfile" "$CTX/Dockerfile"
[ -n "$TAG" ] || exit 0

version=$("$BIN" --version | awk '{print $2}')
echo "assembling $TAG ($(du -sh "$FS" | cut -f1) in the image)" >&2
revision=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
# The image id goes to /dev/null, what docker says to `said` (shown only on failure).
said=$(docker build --quiet -t "$TAG" --label org.opencontainers.image.title=meridian \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.revision="$revision" "$CTX" 2>&1 >/dev/null) \
  || { echo "$said" >&2; exit 1; }
echo "$TAG"
