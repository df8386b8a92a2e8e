#!/usr/bin/env bash
# Builds the Debian package into target/debian/.
#
#   packaging/build-deb.sh                 release build + package (what you ship)
#   packaging/build-deb.sh --binary PATH   package an already built binary
#                                          (scripts/test.sh packages the suite's
#                                          own build to test the package mechanics)
#
# cargo-deb is installed into target/tools (never globally), once.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
tools=target/tools
if [ "$("$tools/bin/cargo-deb" --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  echo "build-deb: installing cargo-deb $CARGO_DEB_VERSION into $tools" >&2
  cargo install --quiet --locked --root "$tools" --version "$CARGO_DEB_VERSION" cargo-deb
fi

binary=
case "${1:-}" in
  --binary) binary=${2:?--binary needs a path} ;;
  "") ;;
  *) echo "usage: $0 [--binary PATH]" >&2; exit 2 ;;
esac

if [ -z "$binary" ]; then
  cargo build --release --locked
  args=()
else
  # cargo-deb takes the binary from target/<profile>/: give it its own
  # folder so a release build is never overwritten.
  mkdir -p target/deb-prebuilt
  cp "$binary" target/deb-prebuilt/edgestat
  args=(--profile deb-prebuilt --fast)
fi
out=$("$tools/bin/cargo-deb" --no-build --locked --output target/debian/ "${args[@]}")
echo "$out"
