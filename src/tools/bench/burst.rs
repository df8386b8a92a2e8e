//! Burst mode (`edgestat bench --burst N`): saturates the receiver even
//! when the sender cannot. Each round stops the target (SIGSTOP), fills its
//! socket with `N` datagrams, resumes it (SIGCONT) and measures its CPU
//! time and wall time until the receive queue is empty. The target then
//! always finds a deep queue, which is the situation a faster sender on a
//! bigger machine would create; on this 2-core machine a sender on the
//! other core only reaches a fraction of the receiver's speed.
//!
//! The socket must hold `N` datagrams: each queued datagram costs its skb
//! truesize (≈ 1 KiB for a 150 B datagram on loopback) against twice the
//! target's SO_RCVBUF, which the kernel caps at `net.core.rmem_max`.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::procfs;
use super::sender::{self, Progress};
use super::workload::{Generated, Workload};
use super::BenchError;

/// What the rounds measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BurstStats {
    /// Rounds run.
    pub rounds: u64,
    /// Datagrams sent per round.
    pub datagrams_per_round: u64,
    /// Datagrams sent in all rounds.
    pub datagrams: u64,
    /// Largest receive queue seen right before a resume.
    pub peak_queue_bytes: u64,
    /// Queue bytes (skb truesize) per datagram.
    pub queue_bytes_per_datagram: f64,
    /// Kernel drops during the rounds (the socket was too small when > 0).
    pub kernel_drops: u64,
    /// Target CPU (all threads) from resume to empty queue, summed.
    pub cpu_s: f64,
    /// Same, shard threads only.
    pub shard_cpu_s: f64,
    /// Wall time from resume to empty queue, summed.
    pub wall_s: f64,
    /// Target CPU (all threads) per datagram.
    pub cpu_ns_per_datagram: f64,
    /// Shard-thread CPU per datagram.
    pub shard_cpu_ns_per_datagram: f64,
    /// Datagrams per CPU-second of the target (all threads).
    pub datagrams_per_cpu_s: f64,
    /// Datagrams per wall second while draining.
    pub datagrams_per_wall_s: f64,
}

/// Resumes the target when a round ends early (error or panic).
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory effects.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Result<(), BenchError> {
    let end = Instant::now() + limit;
    while !done() {
        if Instant::now() > end {
            return Err(BenchError::Io(format!("burst: {what} within {limit:?}")));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(())
}

/// Runs `rounds` bursts of `per_round` datagrams against `pid` listening
/// on UDP `port`.
pub fn run(
    pid: u32,
    port: u16,
    workload: &mut Workload,
    sockets: &[UdpSocket],
    per_round: u64,
    rounds: u64,
    progress: &Arc<Progress>,
) -> Result<(Generated, BurstStats), BenchError> {
    let mut total = Generated::default();
    let mut st = BurstStats { datagrams_per_round: per_round, ..Default::default() };
    let (drops0, _) = procfs::udp_counters(port);
    let (mut cpu_ns, mut shard_ns, mut queued_bytes) = (0u64, 0u64, 0u64);
    let mut wall = Duration::ZERO;
    for _ in 0..rounds {
        wait_until("the target did not empty its queue", Duration::from_secs(60), || {
            procfs::udp_counters(port).0.rx_queue_bytes == 0
        })?;
        let guard = Resume(pid);
        signal(pid, libc::SIGSTOP);
        wait_until("the target did not stop", Duration::from_secs(5), || procfs::all_stopped(pid))?;
        let g = sender::run(workload, sockets, None, Duration::from_secs(600), Some(per_round), progress);
        let (q, _) = procfs::udp_counters(port);
        st.peak_queue_bytes = st.peak_queue_bytes.max(q.rx_queue_bytes);
        queued_bytes += q.rx_queue_bytes;
        let (c0, s0) = procfs::task_cpu_ns(pid, "edgestat-shard")
            .ok_or_else(|| BenchError::Io("burst: cannot read the target's CPU time".into()))?;
        let t0 = Instant::now();
        drop(guard); // SIGCONT
        wait_until("the target did not drain its queue", Duration::from_secs(60), || {
            procfs::udp_counters(port).0.rx_queue_bytes == 0
        })?;
        wall += t0.elapsed();
        // The last batch taken off the queue is still being processed.
        std::thread::sleep(Duration::from_millis(2));
        let (c1, s1) = procfs::task_cpu_ns(pid, "edgestat-shard").unwrap_or((c0, s0));
        cpu_ns += c1.saturating_sub(c0);
        shard_ns += s1.saturating_sub(s0);
        st.rounds += 1;
        st.datagrams += g.packets;
        total.add(&g);
    }
    let (drops1, _) = procfs::udp_counters(port);
    st.kernel_drops = drops1.drops.saturating_sub(drops0.drops);
    let n = st.datagrams.max(1) as f64;
    st.queue_bytes_per_datagram = queued_bytes as f64 / n;
    st.cpu_s = cpu_ns as f64 / 1e9;
    st.shard_cpu_s = shard_ns as f64 / 1e9;
    st.wall_s = wall.as_secs_f64();
    st.cpu_ns_per_datagram = cpu_ns as f64 / n;
    st.shard_cpu_ns_per_datagram = shard_ns as f64 / n;
    st.datagrams_per_cpu_s = if cpu_ns > 0 { n * 1e9 / cpu_ns as f64 } else { 0.0 };
    st.datagrams_per_wall_s = if st.wall_s > 0.0 { n / st.wall_s } else { 0.0 };
    Ok((total, st))
}
