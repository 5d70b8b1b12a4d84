#!/usr/bin/env bash
# Set up and run hb's tests on a fresh Debian 12 machine (as root, or with sudo).
# Installs what the tests call besides Rust: GNU tar/gzip, python3 (loopback HTTP server),
# binutils; then runs the whole workspace's tests with cargo-nextest (cargo test without it).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests call: GNU tar/gzip and binutils (archive checks), hostname,
# faketime (verify-repro's clock variation on the host environment), chromium (the HTML
# report is rendered in a real browser), apt (hb lock).
packages=(tar gzip binutils hostname faketime chromium apt)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v python3 >/dev/null || { echo "python3 is needed (loopback HTTP server, XML checks)" >&2; exit 1; }

scripts/install-sign-tools.sh  # gpg, sqv, openssl, SBOM validators for tests/it/sign.rs
eval "$(scripts/fetch-test-binaries.sh)"  # exports HB_TEST_QEMU_AARCH64, HB_TEST_AARCH64_PROGRAM

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
