//! Datagrams the kernel dropped before a shard could read them: a UDP
//! socket's receive buffer was full. The kernel counts them per socket in
//! `/proc/net/udp` and `/proc/net/udp6`; edgestat finds its own sockets
//! there by inode, at every scrape of `/metrics` and after every flush, so
//! this loss is counted and logged (once) instead of silent.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One socket's row of `/proc/net/udp` (or `udp6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRow {
    /// Local port.
    pub port: u16,
    /// Socket inode (`fstat(fd).st_ino` of the socket).
    pub inode: u64,
    /// Bytes waiting in the receive queue.
    pub rx_queue_bytes: u64,
    /// Datagrams dropped since the socket was created.
    pub drops: u64,
}

/// The rows of `/proc/net/udp`-format text (the header and short lines are
/// skipped).
pub fn parse_udp_table(text: &str) -> impl Iterator<Item = UdpRow> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 13 {
            return None;
        }
        Some(UdpRow {
            port: f[1].rsplit(':').next().and_then(|h| u16::from_str_radix(h, 16).ok())?,
            inode: f[9].parse().ok()?,
            rx_queue_bytes: f[4].split(':').nth(1).and_then(|h| u64::from_str_radix(h, 16).ok()).unwrap_or(0),
            drops: f[12].parse().unwrap_or(0),
        })
    })
}

/// Every row of the IPv4 and IPv6 UDP tables (empty where unreadable).
pub fn read_udp_tables() -> Vec<UdpRow> {
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| parse_udp_table(&t).collect::<Vec<_>>())
        .collect()
}

/// The kernel's drop counters of the shards' UDP sockets.
#[derive(Debug)]
pub struct UdpKernelDrops {
    inodes: Vec<u64>,
    warned: AtomicBool,
}

impl UdpKernelDrops {
    /// Watches `sockets` (the shards' `SO_REUSEPORT` sockets).
    pub fn new(sockets: &[std::net::UdpSocket]) -> Arc<Self> {
        let inodes = sockets
            .iter()
            .filter_map(|s| {
                // SAFETY: fstat on a valid open fd into a zeroed stat.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                (unsafe { libc::fstat(s.as_raw_fd(), &mut st) } == 0).then_some(st.st_ino)
            })
            .collect();
        Arc::new(Self { inodes, warned: AtomicBool::new(false) })
    }

    /// Datagrams dropped so far on the watched sockets.
    pub fn total(&self) -> u64 {
        self.sum(&read_udp_tables())
    }

    fn sum(&self, rows: &[UdpRow]) -> u64 {
        rows.iter().filter(|r| self.inodes.contains(&r.inode)).map(|r| r.drops).sum()
    }

    /// Logs the first time the kernel has dropped anything (after a flush).
    pub fn warn_once_if_dropping(&self) {
        if self.warned.load(Ordering::Relaxed) || self.inodes.is_empty() {
            return;
        }
        let dropped = self.total();
        if dropped > 0 && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                dropped,
                "the kernel dropped UDP datagrams: a socket receive buffer was full (counted in \
                 edgestat_dogstatsd_udp_kernel_drops_total); raise DD_DOGSTATSD_SO_RCVBUF and net.core.rmem_max, \
                 see tuning/README.md"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  312: 0100007F:1FA5 00000000:0000 07 00000000:00000A00 00:00000000 00000000  1000        0 4242 2 0000000000000000 17\n\
  313: 0100007F:1FA5 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 4243 2 0000000000000000 3\n\
  314: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 99 2 0000000000000000 5\n\
  bad line\n";

    #[test]
    fn parses_rows() {
        let rows: Vec<UdpRow> = parse_udp_table(TABLE).collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], UdpRow { port: 0x1FA5, inode: 4242, rx_queue_bytes: 0xA00, drops: 17 });
        assert_eq!(rows[2].port, 0x35);
    }

    #[test]
    fn sums_only_its_own_sockets() {
        let d = UdpKernelDrops { inodes: vec![4243, 99], warned: AtomicBool::new(false) };
        assert_eq!(d.sum(&parse_udp_table(TABLE).collect::<Vec<_>>()), 8);
    }

    #[test]
    fn finds_a_real_socket_and_its_zero_drops() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let d = UdpKernelDrops::new(std::slice::from_ref(&s));
        let rows = read_udp_tables();
        let port = s.local_addr().unwrap().port();
        assert!(rows.iter().any(|r| r.port == port && d.inodes.contains(&r.inode)), "{rows:?}");
        assert_eq!(d.total(), 0);
    }
}
