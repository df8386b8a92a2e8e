//! The systemd unit of the Debian package passes `systemd-analyze verify`
//! (with the binary under test in place of /usr/bin/edgestat) and gives a
//! stop more time than edgestat's own stop bounds.

use std::process::Command;

const UNIT: &str = include_str!("../packaging/edgestat.service");

#[test]
fn the_unit_verifies_and_outlives_the_stop_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgestat.service");
    std::fs::write(&path, UNIT.replace("/usr/bin/edgestat", env!("CARGO_BIN_EXE_edgestat"))).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd; scripts/test.sh installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Warnings (unknown keys, bad values) exit 0 but print: none allowed.
    assert!(out.status.success() && text.trim().is_empty(), "systemd-analyze verify:\n{text}");

    // SIGKILL must not cut the stop short: shard drain and final flush
    // (bounded at 20 s) plus the default EDGESTAT_SHUTDOWN_TIMEOUT (10 s).
    let stop_s: u64 = UNIT
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim().trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec=<n>s");
    assert!(stop_s > 20 + 10, "TimeoutStopSec={stop_s}s");
}
