#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and the local servers need (only what is missing).
set -euo pipefail
PKGS=(redis-server redis-tools postgresql librdkafka-dev libhiredis-dev libpq-dev libnghttp2-dev
      libprotobuf-c-dev protobuf-c-compiler libzstd-dev zlib1g-dev zstd prometheus python3-venv)
missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
