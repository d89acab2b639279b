#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
  fi
fi
bash scripts/setup.sh
# Ray binds to the outward address unless told otherwise; tests stay on 127.0.0.1.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# As if activated: tests call tools the venv installs (hadolint, midmix, ray).
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest -q -rs "$@"
