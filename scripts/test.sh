#!/usr/bin/env bash
# Set up and run hb's tests on a fresh Debian 12 machine (as root, or with sudo).
# Installs what the tests call besides Rust: GNU tar/gzip, python3 (loopback HTTP server),
# binutils; then runs the whole workspace's tests with cargo-nextest (cargo test without it).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in tar gzip python3 nm hostname; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing packages for: ${need[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq tar gzip python3 binutils hostname >/dev/null
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
