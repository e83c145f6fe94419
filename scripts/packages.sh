#!/usr/bin/env bash
# Install the Debian packages Sidelight builds and tests with, if any is missing.
# Idempotent: a second run only asks dpkg. Needs root (or sudo) the first time.
set -euo pipefail
pkgs=(clang llvm libbpf-dev libelf-dev zlib1g-dev bpftool pkg-config make g++ python3 curl
      nginx-light iproute2 ca-certificates dnsmasq-base bind9-dnsutils openssl util-linux)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "packages: installing ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# nginx is a test peer, started by the tests on their own ports: keep the system service off.
if [[ " ${missing[*]} " == *" nginx-light "* ]] && command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
fi
