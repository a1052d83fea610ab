#!/usr/bin/env bash
# Prepare this machine for Synchronicity: Debian packages and a virtual environment in .venv.
#   bash deploy/setup-host.sh         what the main job needs (debootstrap, the [all] extra)
#   bash deploy/setup-host.sh --dev   also what the test suite needs (diffoscope, Chromium)
# Needs root for apt-get (as on this project's machines) and a running Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(debootstrap)
extra="all"
if [ "${1:-}" = "--dev" ]; then
  packages+=(diffoscope-minimal chromium chromium-driver)
  extra="dev"
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "setup: no Docker engine is reachable; builds (and their tests) need one" >&2
  exit 1
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# Exactly the versions the tests ran with (requirements/compile.sh pins them, with hashes),
# then the project itself from this work tree.
.venv/bin/pip install -q --require-hashes -r "requirements/$extra.lock"
.venv/bin/pip install -q --no-deps -e .
echo "setup: ready (.venv with the [$extra] extra, locked)" >&2
