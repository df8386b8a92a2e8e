#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine with the Rust
# toolchain: installs what the tests need, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v prlimit >/dev/null 2>&1 || need_apt+=(util-linux)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "${need_apt[@]}"
  fi
fi

# The real Datadog Python client, for the client-library test.
if ! python3 -c 'import datadog' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check datadog==0.56.0 \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages datadog==0.56.0
fi

cargo test --locked --all-targets "$@"

# The Debian package, installed with dpkg on this machine, checked and
# purged (packaging/test-deb.sh). It packages the binary the tests above
# just built, so no release build is added: this checks the package's
# mechanics; packaging/build-deb.sh alone builds the release package.
if [ $# -gt 0 ]; then
  echo "deb package test: skipped (arguments given to cargo test)"
elif [ "${EDGESTAT_SKIP_DEB_TEST:-0}" = 1 ]; then
  echo "deb package test: skipped (EDGESTAT_SKIP_DEB_TEST=1)"
elif [ "$(id -u)" != 0 ] || ! command -v dpkg >/dev/null 2>&1; then
  echo "deb package test: skipped (needs root and dpkg: packaging/build-deb.sh && sudo packaging/test-deb.sh)"
else
  packaging/build-deb.sh --binary target/debug/edgestat >/dev/null
  packaging/test-deb.sh
fi
