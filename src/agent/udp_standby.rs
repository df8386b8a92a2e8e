//! A standby reader for each shard's UDP socket, so a shard that cannot run
//! for a few milliseconds does not cost datagrams.
//!
//! The kernel's default receive buffer (212,992 B) holds about 0.65 ms of
//! 8 KB datagrams at 20,000 a second. A shard loses its CPU for longer than
//! that now and then: a kernel thread that does not yield (this VM's DAMON
//! reclaim runs up to 4 ms at once), a burst of page faults while 100,000
//! new contexts are created (perf/session6.md §4). The standby is a plain
//! thread on the *other* CPUs: armed by its shard while datagrams arrive
//! fast enough to fill the buffer within [`ARM_BELOW_US`], it looks at the
//! socket's queue three times per fill time and, only when the queue holds
//! more than 15 % of the buffer (a shard that keeps up holds it under 10 %),
//! reads it into a bounded pool of batches which it hands to the shard.
//! The shard parses them before its next read of the socket, so nothing is
//! aggregated anywhere but in the shard that owns the socket.
//!
//! Costs: nothing while the rate is low or idle (the thread is parked);
//! while armed, one timed wake-up and one `getsockopt` per check. Memory:
//! the pool, `EDGESTAT_UDP_STANDBY_BYTES`, allocated batch by batch on
//! first use and then reused. When the
//! pool is exhausted (the shard has not run for that long) the standby
//! stops reading, the kernel's buffer fills and drops as before, counted
//! in `edgestat_dogstatsd_udp_kernel_drops_total`, and the exhaustion in
//! `edgestat_dogstatsd_udp_standby_pool_full_total`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::agent::batch_recv::BatchRecv;

/// Armed only while the socket's buffer would fill within this at the rate
/// seen: slower senders leave the shard far more time than any stall seen.
pub const ARM_BELOW_US: u64 = 20_000;

/// How long the standby stays armed after the shard last saw a fast rate.
/// Not disarmed the moment the shard goes idle: a shard that loses its CPU
/// while it waits for the next datagram is exactly the case to cover.
pub const ARMED_FOR: Duration = Duration::from_secs(1);

/// Checks of the queue per fill time: a stalled shard's queue is seen at
/// most a third of a fill time after it passes [`READ_ABOVE`], with half a
/// fill time to spare for the standby's own wake-up.
const CHECKS_PER_FILL: u64 = 3;

/// Queue fraction past which the standby reads. A shard that keeps up never
/// lets the queue come near it: its pauses plan for an eighth of the buffer
/// with a pessimistic charge per datagram: 7–10 % of the real buffer.
const READ_ABOVE: f64 = 0.15;

/// Bounds of the time between two checks.
const MIN_CHECK_US: u64 = 100;
const MAX_CHECK_US: u64 = ARM_BELOW_US / CHECKS_PER_FILL;

/// Datagrams per standby batch (one `recvmmsg`).
pub const BATCH_DATAGRAMS: usize = 16;

/// `SO_MEMINFO` (asm-generic/socket.h; `libc` does not export it): the
/// socket's memory counters, `SK_MEMINFO_RMEM_ALLOC` first, then the
/// receive buffer size.
const SO_MEMINFO: libc::c_int = 55;

/// What a shard and its standby share. Everything the shard touches per
/// drain is an atomic or a lock-free channel; the waker's mutex is taken
/// only when the shard goes idle and when the standby hands a batch over.
pub struct UdpStandby {
    /// The standby's own duplicate of the shard's socket.
    fd: OwnedFd,
    /// Time for the buffer to fill at the shard's last seen rate (µs);
    /// 0 = disarmed.
    fill_time_us: AtomicU64,
    /// Monotonic nanoseconds (`clock::mono_nanos`) until which a non-zero
    /// `fill_time_us` holds.
    armed_until_ns: AtomicU64,
    /// Moved by the shard at every read of its socket: moved since the last
    /// check means the shard reads again, so a partly filled batch is
    /// handed over rather than kept for more.
    shard_beat: AtomicU64,
    /// Batches read by the standby, oldest first.
    full_tx: Sender<BatchRecv>,
    full_rx: Receiver<BatchRecv>,
    /// Batches the shard has parsed, ready to be read into again.
    free_tx: Sender<BatchRecv>,
    free_rx: Receiver<BatchRecv>,
    /// The shard's reader while it waits for a datagram.
    waker: Mutex<Option<std::task::Waker>>,
    /// Set by the shard at shutdown; `stopped` answers it.
    stop: AtomicBool,
    stopped: AtomicBool,
    /// The pool's bound in batches: the standby allocates them on first use
    /// (an idle node never holds them), then reuses them.
    max_batches: usize,
    buffer_size: usize,
    /// Checks that had to read and found no free batch.
    pool_full: AtomicU64,
    thread: OnceLock<std::thread::Thread>,
}

/// Why a standby could not start; the shard then runs without one.
#[derive(Debug, thiserror::Error)]
pub enum StandbyError {
    /// The socket could not be duplicated.
    #[error("cannot duplicate the UDP socket for its standby reader: {0}")]
    Dup(std::io::Error),
    /// The thread could not be spawned.
    #[error("cannot start the UDP standby reader thread: {0}")]
    Spawn(std::io::Error),
}

impl UdpStandby {
    /// Starts the standby of `shard`'s `socket` on `cpus` (never the
    /// shard's), with a pool of `pool_bytes` in batches of
    /// [`BATCH_DATAGRAMS`] datagrams of `buffer_size` bytes (at least one
    /// batch).
    pub fn start(
        shard: usize,
        socket: &std::net::UdpSocket,
        cpus: Vec<usize>,
        pool_bytes: usize,
        buffer_size: usize,
    ) -> Result<Arc<Self>, StandbyError> {
        let fd: OwnedFd = socket.try_clone().map_err(StandbyError::Dup)?.into();
        let batches = (pool_bytes / (BATCH_DATAGRAMS * buffer_size)).max(1);
        let (full_tx, full_rx) = crossbeam_channel::bounded(batches);
        let (free_tx, free_rx) = crossbeam_channel::bounded(batches);
        let link = Arc::new(UdpStandby {
            fd,
            fill_time_us: AtomicU64::new(0),
            armed_until_ns: AtomicU64::new(0),
            shard_beat: AtomicU64::new(0),
            full_tx,
            full_rx,
            free_tx,
            free_rx,
            waker: Mutex::new(None),
            stop: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            pool_full: AtomicU64::new(0),
            max_batches: batches,
            buffer_size,
            thread: OnceLock::new(),
        });
        let run = link.clone();
        let handle = std::thread::Builder::new()
            .name(format!("edgestat-standby-{shard}"))
            .spawn(move || {
                if let Err(e) = crate::agent::cpu_set::restrict_this_thread(&cpus) {
                    tracing::warn!(shard, error = %e, "cannot keep the UDP standby reader off its shard's CPU");
                }
                run.run();
            })
            .map_err(StandbyError::Spawn)?;
        let _ = link.thread.set(handle.thread().clone());
        Ok(link)
    }

    /// The shard saw datagrams arrive, at `now_ns` (`clock::mono_nanos`),
    /// fast enough to fill the buffer in `fill_time_us`: arms (or re-times)
    /// the standby for [`ARMED_FOR`] when that is under [`ARM_BELOW_US`],
    /// else disarms it.
    pub fn set_fill_time(&self, fill_time_us: u64, now_ns: u64) {
        let v = if fill_time_us < ARM_BELOW_US { fill_time_us.max(1) } else { 0 };
        if v != 0 {
            self.armed_until_ns.store(now_ns + ARMED_FOR.as_nanos() as u64, Ordering::Relaxed);
        }
        let was = self.fill_time_us.swap(v, Ordering::Relaxed);
        if was == 0 && v != 0 {
            self.unpark();
        }
    }

    /// The shard is about to read: it is alive (see `shard_beat`).
    pub fn beat(&self, n: u64) {
        self.shard_beat.store(n, Ordering::Relaxed);
    }

    /// The oldest batch the standby read (`BatchRecv::filled` datagrams).
    pub fn take(&self) -> Option<BatchRecv> {
        self.full_rx.try_recv().ok()
    }

    /// Gives a parsed batch back to the pool.
    pub fn recycle(&self, batch: BatchRecv) {
        // Never full: the pool's batches are either here or in `full`.
        let _ = self.free_tx.try_send(batch);
    }

    /// Batches are waiting for the shard.
    pub fn has_batches(&self) -> bool {
        !self.full_rx.is_empty()
    }

    /// Wakes `waker` when the standby hands a batch over.
    pub fn register(&self, waker: &std::task::Waker) {
        if let Ok(mut w) = self.waker.lock() {
            match w.as_ref() {
                Some(old) if old.will_wake(waker) => {}
                _ => *w = Some(waker.clone()),
            }
        }
    }

    /// Checks that found the standby's pool exhausted.
    pub fn pool_full(&self) -> u64 {
        self.pool_full.load(Ordering::Relaxed)
    }

    /// Asks the standby to stop reading; [`Self::is_stopped`] tells when it
    /// has (every batch it read is then in the queue).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.unpark();
    }

    /// The standby has stopped and will read nothing more.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn unpark(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    fn run(&self) {
        let mut errors_logged = false;
        // The batch being filled: handed over once full, or once the shard
        // is reading again, so a long stall fills whole batches and the
        // pool holds what it says.
        let mut open: Option<BatchRecv> = None;
        // Batches allocated so far (at most `max_batches`).
        let mut made = 0usize;
        let mut last_beat = u64::MAX;
        loop {
            if self.stop.load(Ordering::Acquire) {
                self.hand_over(&mut open);
                self.stopped.store(true, Ordering::Release);
                return;
            }
            let fill = self.fill_time_us.load(Ordering::Relaxed);
            if fill != 0 && crate::agent::clock::mono_nanos() > self.armed_until_ns.load(Ordering::Relaxed) {
                // No fast traffic for ARMED_FOR: stand down (unless the
                // shard re-armed it meanwhile).
                let _ = self.fill_time_us.compare_exchange(fill, 0, Ordering::Relaxed, Ordering::Relaxed);
                self.hand_over(&mut open);
                continue;
            }
            if fill == 0 {
                std::thread::park();
                continue;
            }
            // A park with a timeout rather than a sleep: `stop` and a
            // re-arm end it early.
            std::thread::park_timeout(Duration::from_micros(check_interval_us(fill)));
            let beat = self.shard_beat.load(Ordering::Relaxed);
            let shard_alive = std::mem::replace(&mut last_beat, beat) != beat;
            match queue_fraction(self.fd.as_raw_fd()) {
                Ok(q) if q >= READ_ABOVE => self.read_queue(&mut open, &mut made),
                Ok(_) => {}
                Err(e) => {
                    if !errors_logged {
                        errors_logged = true;
                        tracing::warn!(error = %e, "UDP standby reader cannot read its socket's queue length");
                    }
                }
            }
            if shard_alive {
                self.hand_over(&mut open);
            }
        }
    }

    /// Reads the socket until it is empty or the pool runs out, handing
    /// every batch it fills to the shard.
    fn read_queue(&self, open: &mut Option<BatchRecv>, made: &mut usize) {
        let mut handed = false;
        loop {
            let b = match open {
                Some(b) => b,
                None => match self.free_batch(made) {
                    Some(b) => open.insert(b),
                    None => {
                        self.pool_full.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                },
            };
            let got = b.recv_more().unwrap_or(0);
            if !b.is_full() {
                // The queue is empty.
                break;
            }
            if let Some(full) = open.take() {
                let _ = self.full_tx.try_send(full);
                handed = true;
            }
            if got == 0 {
                break;
            }
        }
        if handed {
            self.wake_shard();
        }
    }

    /// A batch to read into: a recycled one, else a new one while fewer
    /// than `max_batches` are `made`; `None` when all are with the shard.
    fn free_batch(&self, made: &mut usize) -> Option<BatchRecv> {
        if let Ok(mut b) = self.free_rx.try_recv() {
            b.clear();
            return Some(b);
        }
        if *made >= self.max_batches {
            return None;
        }
        *made += 1;
        Some(BatchRecv::new(self.fd.as_raw_fd(), BATCH_DATAGRAMS, self.buffer_size))
    }

    /// Hands the batch being filled to the shard, if it holds anything.
    fn hand_over(&self, open: &mut Option<BatchRecv>) {
        if let Some(b) = open.take_if(|b| b.filled() > 0) {
            let _ = self.full_tx.try_send(b);
            self.wake_shard();
        }
    }

    fn wake_shard(&self) {
        let w = self.waker.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// Time between two checks of the queue for a buffer that fills in
/// `fill_time_us`.
fn check_interval_us(fill_time_us: u64) -> u64 {
    (fill_time_us / CHECKS_PER_FILL).clamp(MIN_CHECK_US, MAX_CHECK_US)
}

/// How full the socket's receive buffer is (0.0–1.0+), from `SO_MEMINFO`.
fn queue_fraction(fd: std::os::fd::RawFd) -> std::io::Result<f64> {
    let mut info = [0u32; 9];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which
    // lives across the call; `len` is its size.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, SO_MEMINFO, info.as_mut_ptr().cast(), &mut len) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (alloc, rcvbuf) = (info[libc::SK_MEMINFO_RMEM_ALLOC as usize], info[1]);
    Ok(if rcvbuf == 0 { 0.0 } else { f64::from(alloc) / f64::from(rcvbuf) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_come_three_times_per_fill_within_bounds() {
        assert_eq!(check_interval_us(1_260), 420);
        assert_eq!(check_interval_us(30), MIN_CHECK_US);
        assert_eq!(check_interval_us(19_999), 6_666);
    }

    #[test]
    fn arming_follows_the_fill_time() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = UdpStandby::start(0, &sock, vec![0], 1 << 20, 8192).unwrap();
        let now = crate::agent::clock::mono_nanos();
        s.set_fill_time(500, now);
        assert_eq!(s.fill_time_us.load(Ordering::Relaxed), 500);
        s.set_fill_time(ARM_BELOW_US, now);
        assert_eq!(s.fill_time_us.load(Ordering::Relaxed), 0, "a slow sender disarms it");
        // Armed by a rate seen long ago: it stands down by itself.
        s.set_fill_time(500, now.saturating_sub(2 * ARMED_FOR.as_nanos() as u64));
        let t0 = std::time::Instant::now();
        while s.fill_time_us.load(Ordering::Relaxed) != 0 {
            assert!(t0.elapsed() < Duration::from_secs(5), "never stood down");
            std::thread::sleep(Duration::from_millis(1));
        }
        s.stop();
        let t0 = std::time::Instant::now();
        while !s.is_stopped() {
            assert!(t0.elapsed() < Duration::from_secs(5), "the standby never stopped");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_queue_past_its_threshold_is_read_into_batches_in_order() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket2::SockRef::from(&sock).set_recv_buffer_size(65_536).unwrap();
        let s = UdpStandby::start(0, &sock, vec![0], 64 * 1024, 1024).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(sock.local_addr().unwrap()).unwrap();
        // Far past 15 % of the buffer, well within the pool (4 batches of 16).
        for i in 0..40u32 {
            tx.send(format!("m:{i}|c").as_bytes()).unwrap();
        }
        assert!(queue_fraction(sock.as_raw_fd()).unwrap() >= READ_ABOVE);
        s.set_fill_time(300, crate::agent::clock::mono_nanos());
        let mut seen = Vec::new();
        let t0 = std::time::Instant::now();
        while seen.len() < 40 {
            assert!(t0.elapsed() < Duration::from_secs(5), "standby read {} of 40", seen.len());
            match s.take() {
                Some(b) => {
                    for i in 0..b.filled() {
                        seen.push(String::from_utf8(b.datagram(i).to_vec()).unwrap());
                    }
                    s.recycle(b);
                }
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        let want: Vec<String> = (0..40).map(|i| format!("m:{i}|c")).collect();
        assert_eq!(seen, want);
        assert_eq!(s.pool_full(), 0);
        s.stop();
    }
}
