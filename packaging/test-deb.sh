#!/usr/bin/env bash
# Installs a built edgestat .deb on this machine with dpkg, checks what it
# put where (files, modes, owners, the system user, the unit, `edgestat
# --version` from PATH, an edited conffile surviving a reinstall), then
# purges it and checks that it is gone. Needs root and dpkg; refuses to run
# when edgestat is already installed (it would replace it).
#
#   packaging/test-deb.sh [target/debian/edgestat_*.deb]
set -euo pipefail
cd "$(dirname "$0")/.."

deb=${1:-$(ls -t target/debian/edgestat_*.deb 2>/dev/null | head -n1)}
[ -n "$deb" ] && [ -f "$deb" ] || { echo "test-deb: no package; run packaging/build-deb.sh first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "test-deb: needs root (dpkg -i)" >&2; exit 1; }

# One package test at a time on a shared machine.
exec 9>/var/lock/edgestat-test-deb.lock
flock 9

if dpkg-query -W -f '${Status}' edgestat 2>/dev/null | grep -q 'installed'; then
  echo "test-deb: edgestat is already installed here; not touching it" >&2
  exit 1
fi

fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
installed=0
cleanup() { if [ "$installed" = 1 ]; then dpkg --purge edgestat >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT

# stat: mode owner group
check() {
  local path=$1 want=$2 got
  got=$(stat -c '%a %U %G' "$path" 2>/dev/null) || fail "$path missing"
  [ "$got" = "$want" ] || fail "$path is '$got', want '$want'"
}

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)

installed=1
dpkg -i "$deb" </dev/null >/dev/null

check /usr/bin/edgestat "755 root root"
[ "$(command -v edgestat)" = /usr/bin/edgestat ] || fail "edgestat on PATH is $(command -v edgestat)"
[ "$(edgestat --version)" = "edgestat $version" ] || fail "edgestat --version says '$(edgestat --version)'"
check /etc/edgestat "750 root edgestat"
check /etc/edgestat/edgestat.env "640 root edgestat"
check /etc/edgestat/datadog.yaml "640 root edgestat"
check /var/lib/edgestat "750 edgestat edgestat"
unit=/lib/systemd/system/edgestat.service
[ -f "$unit" ] || unit=/usr/lib/systemd/system/edgestat.service
check "$unit" "644 root root"
[ -f /usr/share/doc/edgestat/deployment.md ] || fail "no deployment.md in /usr/share/doc/edgestat"
# Enabled (started by hand once configured).
wants=/etc/systemd/system/multi-user.target.wants/edgestat.service
[ -L "$wants" ] || fail "edgestat.service is not enabled ($wants missing)"

# The dedicated system user: no login, no home of its own.
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd edgestat) || fail "no edgestat user"
[ "$uid" -lt 1000 ] || fail "edgestat uid $uid is not a system uid"
[ "$shell" = /usr/sbin/nologin ] || fail "edgestat shell is $shell"
[ "$home" = /var/lib/edgestat ] || fail "edgestat home is $home"
# The service user can read its configuration (the unit passes --config).
runuser -u edgestat -- test -r /etc/edgestat/datadog.yaml || fail "edgestat cannot read datadog.yaml"
runuser -u edgestat -- edgestat --version >/dev/null || fail "edgestat cannot run as its user"

# Both /etc files are conffiles.
conffiles=$(dpkg-query -W -f '${Conffiles}' edgestat)
for f in /etc/edgestat/edgestat.env /etc/edgestat/datadog.yaml; do
  grep -q " $f " <<<"$conffiles" || fail "$f is not a conffile"
done

# The installed unit is valid for systemd (no warning at all).
if command -v systemd-analyze >/dev/null; then
  out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $out"
  [ -z "$out" ] || fail "systemd-analyze verify: $out"
else
  echo "test-deb: systemd-analyze not installed; unit not verified" >&2
fi

# An edited conffile survives an upgrade (a reinstall is one for dpkg),
# with its mode and group.
echo "DD_API_KEY=kept-on-upgrade" >> /etc/edgestat/edgestat.env
dpkg -i "$deb" </dev/null >/dev/null
grep -q '^DD_API_KEY=kept-on-upgrade$' /etc/edgestat/edgestat.env || fail "edited edgestat.env was replaced on upgrade"
check /etc/edgestat/edgestat.env "640 root edgestat"

dpkg --purge edgestat </dev/null >/dev/null
installed=0
for p in /usr/bin/edgestat "$unit" "$wants" /etc/edgestat /var/lib/edgestat /usr/share/doc/edgestat; do
  [ ! -e "$p" ] && [ ! -L "$p" ] || fail "$p left after purge"
done
if dpkg-query -W -f '${Status}' edgestat 2>/dev/null | grep -q 'installed'; then fail "still installed after purge"; fi

echo "test-deb: ok ($deb: installed, files/modes/user/unit checked, conffile kept on upgrade, purged)"
