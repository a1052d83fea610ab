#!/usr/bin/env bash
# Re-pin the locked environments from pyproject.toml (run after changing a dependency):
#   pip install pip-tools && bash requirements/compile.sh
# all.lock is what `deploy/setup-host.sh` installs for the main job, dev.lock what the tests run
# with (setup-host.sh --dev, and so CI). Every package is pinned by version and hash.
set -euo pipefail
cd "$(dirname "$0")/.."
for extra in all dev; do
  PIP_FIND_LINKS= pip-compile -q --extra "$extra" --generate-hashes --strip-extras --allow-unsafe \
    --no-emit-index-url --no-emit-find-links -o "requirements/$extra.lock" pyproject.toml
  # The project itself is installed from the work tree (pip install --no-deps -e .), not pinned.
  python3 - "requirements/$extra.lock" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
text = re.sub(r"(?m)^# WARNING: pip install will require.*\n(#.*\n)*synchronicity @ .*\n(    #.*\n)*", "", text)
open(path, "w").write(text)
PY
done
