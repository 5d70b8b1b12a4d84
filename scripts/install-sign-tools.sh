#!/usr/bin/env bash
# Install the real programs that hb's signing tests check interoperability against
# (idempotent; run as root, or with sudo available):
#   gpg (gnupg), sqv (Sequoia's signature verifier), openssl, sha256sum (coreutils), git
#   (the provenance records the recipe set's commit),
#   and, in a Python virtual environment under $HB_SIGN_TOOLS (default /opt/hb-sign-tools):
#   pyspdxtools (PyPI spdx-tools: parses and validates SPDX 2.3 JSON) and
#   cyclonedx-python-lib[json-validation] (validates CycloneDX 1.6 JSON against the official
#   schema shipped inside the package: nothing is fetched at test time).
# tests/it/sign.rs finds the Python tools through the same HB_SIGN_TOOLS default.
set -euo pipefail

tools_dir="${HB_SIGN_TOOLS:-/opt/hb-sign-tools}"
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"

need=()
for tool in gpg sqv openssl sha256sum base64 git; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
python_ok=1
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || python_ok=0
if [ ${#need[@]} -gt 0 ] || [ "$python_ok" -eq 0 ]; then
  echo "install-sign-tools: installing Debian packages for: ${need[*]:-python3-venv}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  packages=(gnupg sqv openssl coreutils git)
  [ "$python_ok" -eq 1 ] || packages+=(python3 python3-venv)
  $sudo_cmd apt-get install -y -qq "${packages[@]}" >/dev/null
fi

if ! "$tools_dir/bin/python" -c 'import spdx_tools, cyclonedx.validation.json' >/dev/null 2>&1 \
  || [ ! -x "$tools_dir/bin/pyspdxtools" ]; then
  echo "install-sign-tools: installing spdx-tools and cyclonedx-python-lib into $tools_dir" >&2
  $sudo_cmd mkdir -p "$tools_dir"
  $sudo_cmd python3 -m venv "$tools_dir"
  $sudo_cmd "$tools_dir/bin/pip" install -q --disable-pip-version-check \
    'spdx-tools>=0.8,<0.9' 'cyclonedx-python-lib[json-validation]>=8,<12'
fi

# Say what the tests will use.
for tool in gpg sqv openssl sha256sum "$tools_dir/bin/pyspdxtools"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-sign-tools: $tool is still missing" >&2; exit 1; }
done
echo "install-sign-tools: gpg, sqv, openssl, sha256sum, pyspdxtools and the CycloneDX validator are ready ($tools_dir)" >&2
