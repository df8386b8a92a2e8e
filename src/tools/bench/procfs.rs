//! What the harness reads from `/proc`: a process's CPU time and memory,
//! and the kernel's per-socket UDP counters (queue and drops).

use std::time::Duration;

/// CPU time (user + system) of `pid`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 here.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// Current and peak resident set size of `pid`, in bytes.
pub fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:").unwrap_or(0)))
}

/// Kernel counters of every UDP socket bound to a port (summed over
/// `SO_REUSEPORT` sockets and IPv4/IPv6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounters {
    /// Sockets found.
    pub sockets: u32,
    /// Bytes waiting in receive queues.
    pub rx_queue_bytes: u64,
    /// Datagrams the kernel dropped (receive buffer full).
    pub drops: u64,
}

/// Counters of the UDP sockets on `port`, and their inodes.
pub fn udp_counters(port: u16) -> (UdpCounters, Vec<u64>) {
    let mut acc = UdpCounters::default();
    let mut inodes = Vec::new();
    for row in crate::agent::udp_drops::read_udp_tables().into_iter().filter(|r| r.port == port) {
        acc.sockets += 1;
        acc.rx_queue_bytes += row.rx_queue_bytes;
        acc.drops += row.drops;
        inodes.push(row.inode);
    }
    (acc, inodes)
}

/// The process owning a UDP socket on `port` (only processes we may
/// inspect, i.e. our user's), for targets the harness did not start.
pub fn pid_of_udp_port(port: u16) -> Option<u32> {
    let (_, inodes) = udp_counters(port);
    let wanted: Vec<String> = inodes.iter().filter(|i| **i != 0).map(|i| format!("socket:[{i}]")).collect();
    if wanted.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if wanted.iter().any(|w| link.as_os_str() == w.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// CPU time of every thread of `pid` in nanoseconds (`schedstat`'s
/// `sum_exec_runtime`, exact, unlike the 10 ms ticks of `stat`): the whole
/// process, and the threads whose name starts with `prefix`.
pub fn task_cpu_ns(pid: u32, prefix: &str) -> Option<(u64, u64)> {
    let (mut all, mut matched) = (0u64, 0u64);
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("schedstat")) else { continue };
        let ns = stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        all += ns;
        if std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix)) {
            matched += ns;
        }
    }
    Some((all, matched))
}

/// Whether every thread of `pid` is stopped (state `T`).
pub fn all_stopped(pid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    dir.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rfind(')').and_then(|i| s[i + 1..].split_whitespace().next().map(|st| st == "T" || st == "t"))
            })
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(cpu_time(pid).is_some());
        let (rss, hwm) = rss(pid).unwrap();
        assert!(rss > 0 && hwm >= rss);
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        assert_eq!(udp_counters(port).0.sockets, 1);
        assert_eq!(pid_of_udp_port(port), Some(pid));
        let (all, _) = task_cpu_ns(pid, "none").unwrap();
        assert!(all > 0);
        assert!(!all_stopped(pid));
    }
}
