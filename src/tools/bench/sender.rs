//! The load generator's send loop: batches of datagrams per `sendmmsg(2)`,
//! paced to a line rate or unpaced, spread over several source sockets so
//! `SO_REUSEPORT` targets spread them over their shards.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::workload::{Generated, Workload};

/// Datagrams per `sendmmsg` call.
pub const BATCH: usize = 32;

/// How far a paced sender may fall behind its schedule and still catch up:
/// about two of its ~100 µs batches. A sender that lost its CPU for longer
/// (to the target's flusher, on a shared core) sends less, as the
/// application it stands for would, instead of a burst: at 20,000 datagrams/s
/// a 1 ms catch-up was 20 datagrams at once, 330 KB of socket memory against
/// the kernel's default 212,992 B buffer.
const MAX_BEHIND: Duration = Duration::from_micros(200);

/// Progress shared with the sampler thread.
#[derive(Default)]
pub struct Progress {
    /// Lines handed to the kernel.
    pub lines: AtomicU64,
    /// Datagrams handed to the kernel.
    pub packets: AtomicU64,
    /// Failed send calls.
    pub send_errors: AtomicU64,
    /// Set to stop early.
    pub stop: AtomicBool,
}

/// Opens `n` sockets connected to `target`.
pub fn connect(target: SocketAddr, n: usize) -> std::io::Result<Vec<UdpSocket>> {
    let local: SocketAddr =
        if target.is_ipv4() { "0.0.0.0:0".parse().expect("addr") } else { "[::]:0".parse().expect("addr") };
    (0..n.max(1))
        .map(|_| {
            let s = UdpSocket::bind(local)?;
            s.connect(target)?;
            // A large send buffer keeps sendmmsg from blocking on bursts.
            let _ = socket2::SockRef::from(&s).set_send_buffer_size(4 << 20);
            Ok(s)
        })
        .collect()
}

/// Opens `n` Unix datagram sockets connected to `path`, blocking: a full
/// receive queue makes the sender wait, so nothing is lost and the rate
/// reached is the receiver's no-loss maximum.
pub fn connect_unix(path: &std::path::Path, n: usize) -> std::io::Result<Vec<std::os::unix::net::UnixDatagram>> {
    (0..n.max(1))
        .map(|_| {
            let s = std::os::unix::net::UnixDatagram::unbound()?;
            s.connect(path)?;
            let _ = socket2::SockRef::from(&s).set_send_buffer_size(4 << 20);
            Ok(s)
        })
        .collect()
}

/// How fast to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Metric lines per second.
    Lines(f64),
    /// Datagrams per second.
    Datagrams(f64),
}

impl Rate {
    fn per_s(self) -> f64 {
        match self {
            Rate::Lines(r) | Rate::Datagrams(r) => r,
        }
    }
}

/// Sends `workload` to the connected `sockets` for `duration` at `rate`
/// (`None`: as fast as possible), stopping early after `max_packets`
/// datagrams when given. Returns what was sent (datagrams the kernel
/// refused are not counted).
pub fn run<S: AsRawFd>(
    workload: &mut Workload,
    sockets: &[S],
    rate: Option<Rate>,
    duration: Duration,
    max_packets: Option<u64>,
    progress: &Arc<Progress>,
) -> Generated {
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(16 * 1024)).collect();
    let mut sent = Generated::default();
    let start = Instant::now();
    let mut which = 0usize;
    let mut batch_lines = [0u64; BATCH];
    let mut batch_gen: Vec<Generated> = vec![Generated::default(); BATCH];
    // Pacing granularity: a paced batch is what a fleet of clients sends in
    // about 100 µs, never a burst bigger than the kernel's default receive
    // buffer (a 32 × 8 KB sendmmsg alone overflows it, which measures the
    // generator, not the receiver).
    let per_batch = match rate {
        Some(Rate::Datagrams(d)) => ((d / 10_000.0).ceil() as usize).clamp(1, BATCH),
        Some(Rate::Lines(l)) if l < 50_000.0 => 1,
        Some(Rate::Lines(l)) if l < 500_000.0 => 8,
        _ => BATCH,
    };
    if rate.is_some() {
        // Sleeps of tens of microseconds need a timer slack below the
        // default 50 µs, or every batch comes late and the next one doubles.
        // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread's slack.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000u64, 0u64, 0u64, 0u64) };
    }
    // Seconds of the schedule forgiven (see MAX_BEHIND).
    let mut credit_s = 0.0f64;
    while !progress.stop.load(Ordering::Relaxed) {
        let elapsed = start.elapsed();
        if elapsed >= duration || max_packets.is_some_and(|m| sent.packets >= m) {
            break;
        }
        if let Some(rate) = rate {
            let r = rate.per_s();
            let done = match rate {
                Rate::Lines(_) => sent.total_lines(),
                Rate::Datagrams(_) => sent.packets,
            };
            // A sender kept off the CPU (its core is shared with the
            // target's flusher) does not make up for it with a burst at
            // full speed, as an application would not: more than
            // MAX_BEHIND late, the schedule moves on instead.
            let behind_s = (elapsed.as_secs_f64() - credit_s) - done as f64 / r;
            if behind_s > MAX_BEHIND.as_secs_f64() {
                credit_s += behind_s - MAX_BEHIND.as_secs_f64();
            }
            let due = (elapsed.as_secs_f64() - credit_s) * r;
            let ahead = done as f64 - due;
            if ahead > 0.0 {
                let wait = Duration::from_secs_f64(ahead / r);
                std::thread::sleep(wait.min(Duration::from_millis(20)));
                continue;
            }
        }
        let per_batch = match max_packets {
            Some(m) => per_batch.min((m - sent.packets) as usize),
            None => per_batch,
        };
        for i in 0..per_batch {
            let before = workload.generated.clone();
            workload.next_packet(&mut bufs[i]);
            let g = &workload.generated;
            let mut d = Generated { packets: 1, bytes: bufs[i].len() as u64, ..Default::default() };
            for k in 0..5 {
                d.lines[k] = g.lines[k] - before.lines[k];
                d.samples[k] = g.samples[k] - before.samples[k];
            }
            batch_lines[i] = d.total_lines();
            batch_gen[i] = d;
        }
        let sock = &sockets[which % sockets.len()];
        which = which.wrapping_add(1);
        let mut done = 0;
        let mut retries = 0;
        while done < per_batch {
            match sendmmsg(sock, &bufs[done..per_batch]) {
                Ok(n) => {
                    for d in &batch_gen[done..done + n] {
                        sent.add(d);
                    }
                    let lines: u64 = batch_lines[done..done + n].iter().sum();
                    progress.lines.fetch_add(lines, Ordering::Relaxed);
                    progress.packets.fetch_add(n as u64, Ordering::Relaxed);
                    done += n;
                }
                Err(_) => {
                    progress.send_errors.fetch_add(1, Ordering::Relaxed);
                    retries += 1;
                    if retries > 100 {
                        // Give up on this batch; what was not sent is not counted.
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        }
    }
    sent
}

/// One `sendmmsg(2)` of `bufs` on a connected socket; returns how many
/// datagrams the kernel took.
fn sendmmsg<S: AsRawFd>(sock: &S, bufs: &[Vec<u8>]) -> std::io::Result<usize> {
    let mut iov: [libc::iovec; BATCH] = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
    // SAFETY: mmsghdr is plain old data; all-zero is a valid empty header.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let n = bufs.len().min(BATCH);
    for i in 0..n {
        iov[i].iov_base = bufs[i].as_ptr() as *mut libc::c_void;
        iov[i].iov_len = bufs[i].len();
        msgs[i].msg_hdr.msg_iov = &mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `msgs` points at `n` initialised headers whose iovecs point
    // into `bufs`, all alive for the duration of the call.
    let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, 0) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}
