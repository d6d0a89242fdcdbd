#!/usr/bin/env bash
# Builds gantry's container image (dist/Dockerfile) from a built binary, pulling
# nothing: the context is the binary, the libraries `ldd` names (with their loader),
# this machine's CA certificates, and minimal /etc/passwd, /etc/group and /tmp.
#
#   dist/build-image.sh [BINARY [TAG [DOCKER BUILD OPTIONS...]]]
#
# BINARY defaults to target/release/gantry, TAG to gantry:VERSION (what
# `BINARY --version` says). Options after TAG go to `docker build` (--label, say).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
binary=${1:-target/release/gantry}
[ -x "$binary" ] || { echo "build-image: $binary is not an executable (cargo build --release first)" >&2; exit 2; }
version=$("$binary" --version | awk '{print $2}')
tag=${2:-gantry:$version}
shift $(( $# < 2 ? $# : 2 ))

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
root=$context/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/etc/gantry" "$root/var/lib/gantry" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$binary" "$root/usr/local/bin/gantry"
# Every path ldd prints: the libraries and the dynamic loader (none for a static binary).
for lib in $(ldd "$binary" 2>/dev/null | grep -o '/[^ ]*' || true); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/var/lib/gantry:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"

docker build --quiet -f "$here/Dockerfile" -t "$tag" --label "org.opencontainers.image.version=$version" "$@" "$context" >/dev/null
echo "$tag"
