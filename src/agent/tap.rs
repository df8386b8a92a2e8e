//! The per-shard tap: what happens to every datagram besides parsing —
//! raw forwarding to another StatsD server (`statsd_forward_host`,
//! `statsd_forward_port`) and traffic capture. The read loops call
//! [`Tap::datagram`] with each datagram (or stream frame) before handing it
//! to the shard, so these features stay out of the read path's code.
//!
//! Forwarding never blocks the shard: a non-blocking `send` on a connected
//! UDP socket; a full socket buffer or a dead target (ICMP refused) only
//! bumps `errors`. Unlike the Agent, which forwards its assembled packets,
//! each datagram is forwarded exactly as received.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::agent::capture::CaptureHub;

/// Counters of one shard's forwarder (summed by `edgestat status` and telemetry).
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Datagrams sent.
    pub sent: AtomicU64,
    /// Bytes sent.
    pub bytes: AtomicU64,
    /// Datagrams not sent (socket buffer full, target refusing, other errors).
    pub errors: AtomicU64,
}

/// The forwarding target, resolved once at start.
#[derive(Debug, Clone, Copy)]
pub struct ForwardTarget(pub SocketAddr);

impl ForwardTarget {
    /// Resolves `host:port`; `None` (logged, like the Agent) when it cannot.
    pub fn resolve(host: &str, port: u16) -> Option<Self> {
        match (host, port).to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => Some(Self(a)),
            Ok(None) | Err(_) => {
                tracing::warn!(host, port, "could not resolve the statsd forward host; packets are not forwarded");
                None
            }
        }
    }
}

struct Forward {
    sock: UdpSocket,
    stats: Arc<ForwardStats>,
}

/// One shard's tap.
pub struct Tap {
    shard: usize,
    capture: Option<Arc<CaptureHub>>,
    forward: Option<Forward>,
}

impl Tap {
    /// A tap that does nothing.
    pub fn none() -> Self {
        Self { shard: 0, capture: None, forward: None }
    }

    /// The tap of `shard`: forwarding to `target` (counted in `stats`) and
    /// recording into `capture`.
    pub fn new(
        shard: usize,
        capture: Option<Arc<CaptureHub>>,
        target: Option<ForwardTarget>,
        stats: Arc<ForwardStats>,
    ) -> Self {
        let forward = target.and_then(|t| {
            let bind: SocketAddr = if t.0.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
            let sock = UdpSocket::bind(bind).and_then(|s| s.connect(t.0).map(|_| s)).and_then(|s| s.set_nonblocking(true).map(|_| s));
            match sock {
                Ok(sock) => Some(Forward { sock, stats }),
                Err(e) => {
                    tracing::warn!(target = %t.0, error = %e, "could not connect to the statsd forward host; packets are not forwarded");
                    None
                }
            }
        });
        Self { shard, capture, forward }
    }

    /// Called with every datagram this shard receives.
    #[inline]
    pub fn datagram(&self, d: &[u8]) {
        if let Some(c) = &self.capture {
            c.record(self.shard, d);
        }
        if let Some(f) = &self.forward {
            match f.sock.send(d) {
                Ok(n) => {
                    f.stats.sent.fetch_add(1, Ordering::Relaxed);
                    f.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    f.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_unchanged_and_counts_failures() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let stats = Arc::new(ForwardStats::default());
        let tap = Tap::new(0, None, Some(ForwardTarget(rx.local_addr().unwrap())), stats.clone());
        tap.datagram(b"a:1|c\nb:2|g");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"a:1|c\nb:2|g");
        assert_eq!(stats.sent.load(Ordering::Relaxed), 1);
        // A dead target: the kernel reports the refusal on a later send.
        let port = rx.local_addr().unwrap().port();
        drop(rx);
        let dead = Arc::new(ForwardStats::default());
        let tap = Tap::new(0, None, Some(ForwardTarget(([127, 0, 0, 1], port).into())), dead.clone());
        for _ in 0..20 {
            tap.datagram(b"x:1|c");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(dead.errors.load(Ordering::Relaxed) > 0);
        assert_eq!(dead.sent.load(Ordering::Relaxed) + dead.errors.load(Ordering::Relaxed), 20);
    }
}
