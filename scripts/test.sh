#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine with the Rust
# toolchain. Checks formatting and lints first (they fail fast), then runs
# every test from a copy of the repository in a temporary folder with
# nothing beside it, so a test that reads outside the repository fails here.
# Changes nothing outside the repository except, when they are missing, the
# system packages prlimit and Python come from; the Python client library
# goes into a virtual environment under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

apt_install() {
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "$@"
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "$@"
  fi
}

need_apt=()
command -v prlimit >/dev/null 2>&1 || need_apt+=(util-linux)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt_install "${need_apt[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

# The real Datadog Python client, for the client-library test
# (tests/e2e_clients.rs finds it through EDGESTAT_TEST_PYTHON).
venv=$repo/target/pyenv
if ! "$venv/bin/python" -c 'import datadog, sys; sys.exit(datadog.__version__ != "0.56.0")' >/dev/null 2>&1; then
  echo "== Python client into $venv"
  if ! python3 -m venv --clear "$venv" >/dev/null 2>&1; then
    apt_install python3-venv
    python3 -m venv --clear "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check datadog==0.56.0
fi
export EDGESTAT_TEST_PYTHON=$venv/bin/python

# The copy: every tracked and untracked-but-not-ignored file, modification
# times kept, at a fixed path (so unchanged sources are not rebuilt), built
# into this repository's target/ (so dependencies are compiled once).
copy_parent=${TMPDIR:-/tmp}/edgestat-suite-$(id -u)-$(printf '%s' "$repo" | cksum | cut -d' ' -f1)
copy=$copy_parent/edgestat
rm -rf "$copy_parent"
mkdir -p "$copy"
trap 'rm -rf "$copy_parent"' EXIT
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$repo" ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf - | tar -xf - -C "$copy"
else
  tar --exclude=./target -cf - . | tar -xf - -C "$copy"
fi

echo "== cargo test (from $copy)"
cd "$copy"
CARGO_TARGET_DIR=$repo/target cargo test --locked --all-targets "$@"

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
  cd "$repo"
  packaging/build-deb.sh --binary "$repo/target/debug/edgestat" >/dev/null
  packaging/test-deb.sh
fi
