//! The one module that knows about glommio: thread-per-core shard
//! executors, their sockets and their control loop. Everything it runs is
//! runtime-free (`shard.rs`), so replacing glommio touches only this file.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use glommio::{LocalExecutorBuilder, Placement};

use crate::agent::clock::{mono_nanos, unix_now};
use crate::agent::handover::{LiveShardStats, ShardReply};
pub use crate::agent::handover::{Control, ContextRow};
use crate::agent::tap::Tap;
use crate::core::shard::{ShardSettings, ShardState, Transport};

mod stream;
pub use stream::{StreamSocket, StreamStats};

/// What a shard does besides parsing, and what it shares with the rest of
/// the process besides its sockets.
pub struct ShardHooks {
    /// Called with every datagram before parsing.
    pub tap: Tap,
    /// Contexts tracked by the statistics (0: off).
    pub metric_stats_capacity: usize,
    /// Where the shard publishes its counters several times a second.
    pub live: Arc<LiveShardStats>,
    /// Test-only fault (`EDGESTAT_TEST_DELAY_SHARD_FLUSH`): this shard
    /// answers its first flush request carrying data this much later.
    pub test_delay_flush: Option<Duration>,
}

/// Why the shards could not start; printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Socket creation or bind failed.
    #[error("cannot listen on {what}: {source}")]
    Bind {
        /// Which socket.
        what: String,
        /// OS error.
        source: std::io::Error,
    },
    /// `RLIMIT_MEMLOCK` is below what glommio requires; checked before
    /// anything starts.
    #[error(
        "RLIMIT_MEMLOCK is {limit_bytes} bytes but io_uring needs at least {MIN_MEMLOCK_BYTES} (512 KiB): raise it with `ulimit -l 512` or `LimitMEMLOCK=512K` in the systemd unit"
    )]
    Memlock {
        /// The soft limit found.
        limit_bytes: u64,
    },
    /// glommio could not create its io_uring executor.
    #[error("cannot start shard {shard}: {detail}")]
    Executor {
        /// Shard index.
        shard: usize,
        /// Why, with a hint.
        detail: String,
    },
}

/// The smallest soft `RLIMIT_MEMLOCK` with which glommio builds an executor
/// (it refuses below this).
pub const MIN_MEMLOCK_BYTES: u64 = 512 * 1024;

/// Refuses a soft `RLIMIT_MEMLOCK` below [`MIN_MEMLOCK_BYTES`] up front, so
/// the user reads what to raise instead of an executor failure after the
/// sockets are bound. A limit that cannot be read is left to glommio.
pub fn check_memlock() -> Result<(), RuntimeError> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes into the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Ok(());
    }
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < MIN_MEMLOCK_BYTES {
        return Err(RuntimeError::Memlock { limit_bytes: lim.rlim_cur });
    }
    Ok(())
}

/// The sockets handed to one shard, and its health beat.
pub struct ShardSockets {
    /// This shard's SO_REUSEPORT UDP socket.
    pub udp: Option<std::net::UdpSocket>,
    /// The Unix datagram socket path (only one shard reads it); any stale
    /// socket file was already removed by [`prepare_unix_path`].
    pub unix: Option<std::path::PathBuf>,
    /// Beaten by the shard's control loop (`GET /health`).
    pub health: Option<std::sync::Arc<crate::agent::health::Component>>,
    /// The Unix stream socket (`dogstatsd_stream_socket`; one shard).
    pub stream: Option<StreamSocket>,
}

/// Binds `n` UDP sockets on `addr` with SO_REUSEPORT so the kernel spreads
/// datagrams across shards. Done before spawning so errors are reported
/// at start.
pub fn bind_udp(
    addr: std::net::SocketAddr,
    n: usize,
    so_rcvbuf: usize,
) -> Result<Vec<std::net::UdpSocket>, RuntimeError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |e| RuntimeError::Bind { what: format!("UDP {addr}"), source: e };
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
        s.set_reuse_port(true).map_err(err)?;
        if so_rcvbuf > 0 {
            s.set_recv_buffer_size(so_rcvbuf).map_err(err)?;
        }
        s.bind(&addr.into()).map_err(err)?;
        out.push(s.into());
    }
    Ok(out)
}

/// Removes a stale socket file at `path` (never a regular file), so the
/// shard can bind it; done before spawning so errors surface at start.
pub fn prepare_unix_path(path: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::FileTypeExt;
    let err = |e| RuntimeError::Bind { what: format!("unix socket {}", path.display()), source: e };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(err),
        Ok(_) => Err(err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "path exists and is not a socket; refusing to replace it",
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// A running shard.
pub struct ShardHandle {
    /// Control channel (bounded).
    pub control: Sender<Control>,
    join: glommio::ExecutorJoinHandle<()>,
}

impl ShardHandle {
    /// Waits for the shard thread to end.
    pub fn join(self) {
        let _ = self.join.join();
    }
}


/// How often a shard publishes its counters for `/metrics`.
const LIVE_STATS_PERIOD: Duration = Duration::from_millis(250);

/// Starts shard `id` on its own pinned glommio executor.
#[allow(clippy::too_many_arguments)]
pub fn spawn_shard(
    id: usize,
    settings: ShardSettings,
    sockets: ShardSockets,
    buffer_size: usize,
    io_memory: usize,
    recv_batch: usize,
    recv_coalesce_us: u64,
    hooks: ShardHooks,
) -> Result<ShardHandle, RuntimeError> {
    let (control_tx, control_rx) = crossbeam_channel::bounded::<Control>(4);
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), RuntimeError>>(1);
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let udp = sockets.udp;
    let unix = sockets.unix;
    let health = sockets.health;
    let stream = sockets.stream;
    let join = LocalExecutorBuilder::new(Placement::Fixed(id % cpus))
        .name(&format!("edgestat-shard-{id}"))
        .io_memory(io_memory)
        .spawn(move || async move {
            let recv = RecvSettings { buffer_size, batch: recv_batch, coalesce: Duration::from_micros(recv_coalesce_us) };
            run_shard(id, settings, udp, unix, stream, hooks, recv, control_rx, ready_tx, health).await;
        })
        .map_err(|e| RuntimeError::Executor { shard: id, detail: e.to_string() })?;
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(ShardHandle { control: control_tx, join }),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            // The executor never ran our future: glommio failed to build it.
            let detail = match join.join() {
                Err(e) => explain_executor_error(&e.to_string()),
                Ok(()) => "executor exited before starting".to_string(),
            };
            Err(RuntimeError::Executor { shard: id, detail })
        }
    }
}

fn explain_executor_error(e: &str) -> String {
    let memlock = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|x| x.starts_with("Max locked memory"))
                .map(|x| x.split_whitespace().nth(3).unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".to_string());
    if e.to_ascii_lowercase().contains("memlock") || e.to_ascii_lowercase().contains("locked") {
        format!(
            "io_uring needs locked memory but RLIMIT_MEMLOCK is {memlock} bytes ({e}); raise it with `ulimit -l 65536` or LimitMEMLOCK= in the service unit"
        )
    } else {
        format!("{e} (RLIMIT_MEMLOCK {memlock} bytes)")
    }
}

/// How a shard reads its sockets.
#[derive(Clone, Copy)]
struct RecvSettings {
    /// Largest datagram read.
    buffer_size: usize,
    /// Datagrams per `recvmmsg` (1: no batching).
    batch: usize,
    /// Pause between drains while datagrams keep coming (UDP only).
    coalesce: Duration,
}

#[allow(clippy::too_many_arguments)]
async fn run_shard(
    id: usize,
    settings: ShardSettings,
    udp: Option<std::net::UdpSocket>,
    unix: Option<PathBuf>,
    stream: Option<StreamSocket>,
    hooks: ShardHooks,
    recv: RecvSettings,
    control: Receiver<Control>,
    ready: Sender<Result<(), RuntimeError>>,
    health: Option<std::sync::Arc<crate::agent::health::Component>>,
) {
    let mut shard_state = ShardState::new(settings);
    if hooks.metric_stats_capacity > 0 {
        shard_state.enable_metric_stats(hooks.metric_stats_capacity);
    }
    let state = Rc::new(RefCell::new(shard_state));
    let tap = Rc::new(hooks.tap);
    let stopping = Rc::new(Cell::new(false));
    let mut readers = Vec::new();
    // Queued behind every datagram already in the Unix socket at shutdown,
    // it tells the reader it has drained the queue.
    let marker: [u8; 16] = fastrand::u128(..).to_le_bytes();

    let RecvSettings { buffer_size, batch: recv_batch, coalesce } = recv;
    if let Some(std_sock) = udp {
        let fd = std_sock.as_raw_fd();
        let budget = drain_budget(&std_sock, buffer_size);
        // Coalescing pauses keep the queue under an eighth of SO_RCVBUF.
        let queue_budget = (budget - buffer_size as u64) / 16;
        let mut sock = glommio::net::UdpSocket::from(glommio_socket2::Socket::from(std_sock));
        sock.set_buffer_size(buffer_size);
        // An idle read wakes up now and then so shutdown can end the loop
        // without cancelling a read (glommio panics on a 0-byte recvmsg
        // after shutdown(2), so that cannot be used to wake it).
        if let Err(e) = sock.set_read_timeout(Some(IDLE_READ_TIMEOUT)) {
            tracing::warn!(error = %e, "cannot set the UDP read timeout");
        }
        let batch = (recv_batch > 1).then(|| BatchRecv::new(fd, recv_batch, buffer_size));
        readers.push(glommio::spawn_local(read_loop(
            Reader::Udp(sock),
            state.clone(),
            tap.clone(),
            stopping.clone(),
            ReaderLimits { buffer_size, drain_budget: budget, marker: None, coalesce, queue_budget },
            batch,
        )));
    }
    if let Some(path) = &unix {
        match glommio::net::UnixDatagram::bind(path) {
            Ok(mut sock) => {
                use std::os::unix::fs::PermissionsExt;
                // The Agent's mode: anyone may send.
                if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o722)) {
                    tracing::warn!(error = %e, path = %path.display(), "cannot set the unix socket mode");
                }
                sock.set_buffer_size(buffer_size);
                readers.push(glommio::spawn_local(read_loop(
                    Reader::Unix(sock),
                    state.clone(),
                    tap.clone(),
                    stopping.clone(),
                    ReaderLimits {
                        buffer_size,
                        drain_budget: u64::MAX,
                        marker: Some(marker),
                        coalesce: Duration::ZERO,
                        queue_budget: 0,
                    },
                    None,
                )));
            }
            Err(e) => {
                let _ = ready.send(Err(RuntimeError::Bind {
                    what: format!("unix socket {}", path.display()),
                    source: e.into(),
                }));
                return;
            }
        }
    }
    let stream_path = stream.as_ref().map(|s| s.path.clone());
    if let Some(s) = stream {
        match stream::listen(s, state.clone(), tap.clone(), stopping.clone()) {
            Ok(task) => readers.push(task),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
    }
    let _ = ready.send(Ok(()));

    let mut test_delay = hooks.test_delay_flush;
    let mut published = Instant::now();
    loop {
        if let Some(h) = &health {
            h.beat();
        }
        if published.elapsed() >= LIVE_STATS_PERIOD {
            published = Instant::now();
            hooks.live.publish(id, state.borrow().stats());
        }
        match control.try_recv() {
            Ok(Control::Flush { now, force, seq, reply }) => {
                let f = state.borrow_mut().take_flush(now, force);
                if !f.metrics.is_empty() || !f.sketches.is_empty() {
                    if let Some(d) = test_delay.take() {
                        tracing::warn!(shard = id, delay_ms = d.as_millis() as u64, "EDGESTAT_TEST_DELAY_SHARD_FLUSH: delaying this flush answer (test-only fault)");
                        glommio::timer::sleep(d).await;
                    }
                }
                // Never blocks: the channel has room for every request the
                // flusher can have outstanding (see `handover`).
                let _ = reply.send(ShardReply { shard: id, seq, flush: f });
            }
            Ok(Control::MetricStats { limit, reply }) => {
                let _ = reply.send(state.borrow().metric_stats(limit).iter().map(context_row).collect());
            }
            Ok(Control::Shutdown { now, seq, reply }) => {
                stopping.set(true);
                if let Some(path) = &unix {
                    send_marker(path, &marker).await;
                }
                if let Some(path) = &stream_path {
                    stream::wake_accept(path);
                }
                for r in readers.drain(..) {
                    // Bounded: a reader that cannot finish its drain (marker
                    // never delivered) must not keep the process alive.
                    if glommio::timer::timeout(READER_DRAIN_TIMEOUT, async {
                        r.await;
                        Ok(())
                    })
                    .await
                    .is_err()
                    {
                        tracing::warn!("a socket reader did not finish draining in time");
                    }
                }
                let f = state.borrow_mut().take_flush(now.max(unix_now()), true);
                hooks.live.publish(id, &f.stats);
                let _ = reply.send(ShardReply { shard: id, seq, flush: f });
                return;
            }
            Err(TryRecvError::Empty) => glommio::timer::sleep(Duration::from_millis(5)).await,
            Err(TryRecvError::Disconnected) => return,
        }
    }
}

fn context_row(s: &crate::core::metric_stats::ContextStat<std::sync::Arc<crate::core::model::ContextKey>>) -> ContextRow {
    ContextRow {
        name: s.value.name_string(),
        tags: s.value.tag_strings(),
        host: s.value.host_string(),
        count: s.count,
        error: s.error,
        last_seen: s.last_seen,
    }
}

/// Upper bound on one reader's drain at shutdown.
const READER_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an idle UDP read waits before checking for shutdown.
const IDLE_READ_TIMEOUT: Duration = Duration::from_millis(50);

/// After SIGTERM a reader keeps going until the queue is empty, but at most
/// this many bytes, so a sender that never stops cannot hold shutdown
/// hostage. Everything queued before the signal is at most the receive
/// buffer the kernel reports, which is double the value set
/// (`DD_DOGSTATSD_SO_RCVBUF`); the budget is twice the reported size (four
/// times the set value) plus one datagram, leaving room for what arrives
/// during the drain.
fn drain_budget(sock: &std::net::UdpSocket, buffer_size: usize) -> u64 {
    let rcvbuf = socket2::SockRef::from(sock).recv_buffer_size().unwrap_or(1 << 20);
    (rcvbuf as u64) * 2 + buffer_size as u64
}

/// Sends the drain marker to our own Unix socket (non-blocking, retried
/// briefly while the queue is full).
async fn send_marker(path: &Path, marker: &[u8]) {
    let Ok(sender) = std::os::unix::net::UnixDatagram::unbound() else { return };
    let _ = sender.set_nonblocking(true);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match sender.send_to(marker, path) {
            Ok(_) => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                glommio::timer::sleep(Duration::from_millis(1)).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot send the unix drain marker");
                return;
            }
        }
    }
}

enum Reader {
    Udp(glommio::net::UdpSocket),
    Unix(glommio::net::UnixDatagram),
}

impl Reader {
    fn transport(&self) -> Transport {
        match self {
            Reader::Udp(_) => Transport::Udp,
            Reader::Unix(_) => Transport::Uds,
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            // `recv` insists on a connected socket; `recv_from` does not.
            Reader::Udp(s) => s.recv_from(buf).await.map(|(n, _)| n).map_err(Into::into),
            Reader::Unix(s) => s.recv(buf).await.map_err(Into::into),
        }
    }
}

/// Single reads before trying a batch again after one found nothing queued.
const BATCH_SKIP_AFTER_EMPTY: u32 = 16;

/// Non-blocking `recvmmsg` into preallocated buffers: one syscall for up to
/// `capacity` datagrams. Used after the io_uring read returned one datagram,
/// while the socket keeps having more.
struct BatchRecv {
    fd: RawFd,
    size: usize,
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl BatchRecv {
    fn new(fd: RawFd, capacity: usize, size: usize) -> Self {
        let mut bufs = vec![0u8; capacity * size];
        // The iovecs point into `bufs`, whose heap block never moves: it is
        // never resized, and moving the Vec does not move its contents.
        let iovs: Vec<libc::iovec> =
            bufs.chunks_mut(size).map(|c| libc::iovec { iov_base: c.as_mut_ptr().cast(), iov_len: c.len() }).collect();
        // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
        let hdrs = (0..capacity).map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() }).collect();
        Self { fd, size, bufs, iovs, hdrs }
    }

    fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Datagrams read (0 when none is queued).
    fn recv(&mut self) -> std::io::Result<usize> {
        for (h, iov) in self.hdrs.iter_mut().zip(self.iovs.iter_mut()) {
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_name = std::ptr::null_mut();
            h.msg_hdr.msg_namelen = 0;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points at its own iovec, every iovec at a
        // disjoint `size`-byte slice of `bufs`; all live as long as `self`,
        // which this `&mut` borrow keeps in place for the call.
        let r = unsafe {
            libc::recvmmsg(
                self.fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        Ok(r as usize)
    }

    fn datagram(&self, i: usize) -> &[u8] {
        let len = (self.hdrs[i].msg_len as usize).min(self.size);
        &self.bufs[i * self.size..i * self.size + len]
    }
}

/// Shorter pauses than this are not worth a timer: drain right away.
const MIN_PAUSE: Duration = Duration::from_micros(5);

/// The pause before the next drain: long enough for `target` datagrams at
/// the rate the last drain saw (`got` datagrams of `bytes` in `elapsed`),
/// never longer than `max`, and never so long that the queue would hold
/// more than `queue_budget` bytes (each datagram charged 2 × its length +
/// 768 B, a pessimistic skb truesize: 842 B for a 154 B datagram here).
fn next_pause(max: Duration, elapsed: Duration, got: usize, bytes: u64, target: usize, queue_budget: u64) -> Duration {
    let us = elapsed.as_secs_f64() * 1e6;
    if got == 0 || us <= 0.0 {
        return max;
    }
    let per_us = got as f64 / us;
    let queue_per_us = (2 * bytes + 768 * got as u64) as f64 / us;
    let by_count = target as f64 / per_us;
    let by_memory = queue_budget as f64 / queue_per_us;
    Duration::from_secs_f64(by_count.min(by_memory).min(max.as_secs_f64() * 1e6).max(0.0) / 1e6)
}

/// Takes every queued datagram with `recvmmsg` batches (until one comes
/// back short); returns how many. Gives other tasks their turn between
/// batches, and stops at the shutdown drain budget.
async fn drain(
    b: &mut BatchRecv,
    state: &RefCell<ShardState>,
    tap: &Tap,
    stopping: &Cell<bool>,
    drained: &mut u64,
    drain_budget: u64,
    errors_logged: &mut u32,
) -> (usize, u64) {
    let (mut total, mut bytes) = (0, 0u64);
    loop {
        let got = match b.recv() {
            Ok(got) => got,
            Err(e) => {
                state.borrow_mut().count_read_error();
                if *errors_logged < 10 {
                    *errors_logged += 1;
                    tracing::warn!(error = %e, "DogStatsD socket batch read error");
                }
                0
            }
        };
        if got > 0 {
            let (now, seq) = (unix_now(), mono_nanos());
            let mut st = state.borrow_mut();
            for i in 0..got {
                let d = b.datagram(i);
                *drained += if stopping.get() { d.len() as u64 } else { 0 };
                bytes += d.len() as u64;
                tap.datagram(d);
                st.handle_datagram_from(Transport::Udp, d, now, seq);
            }
        }
        total += got;
        glommio::executor().yield_if_needed().await;
        if got < b.capacity() || (stopping.get() && *drained > drain_budget) {
            return (total, bytes);
        }
    }
}

/// One reader's limits, fixed when it starts.
struct ReaderLimits {
    /// Largest datagram read.
    buffer_size: usize,
    /// Bytes read at most after shutdown starts.
    drain_budget: u64,
    /// The Unix drain marker (`None` on UDP).
    marker: Option<[u8; 16]>,
    /// Longest pause between drains while datagrams keep coming.
    coalesce: Duration,
    /// Bytes the coalescing pause may let queue up.
    queue_budget: u64,
}

async fn read_loop(
    sock: Reader,
    state: Rc<RefCell<ShardState>>,
    tap: Rc<Tap>,
    stopping: Rc<Cell<bool>>,
    limits: ReaderLimits,
    mut batch: Option<BatchRecv>,
) {
    let ReaderLimits { buffer_size, drain_budget, marker, coalesce, queue_budget } = limits;
    let mut buf = vec![0u8; buffer_size];
    let mut skip_batches = 0u32;
    let mut drained: u64 = 0;
    let mut errors_logged = 0u32;
    loop {
        match sock.recv(&mut buf).await {
            Ok(n) => {
                if stopping.get() {
                    if n == 0 || marker.is_some_and(|m| buf[..n] == m) {
                        return;
                    }
                    drained += n as u64;
                }
                if n > 0 {
                    tap.datagram(&buf[..n]);
                    state.borrow_mut().handle_datagram_from(sock.transport(), &buf[..n], unix_now(), mono_nanos());
                }
                // Under load more datagrams are queued: take them in
                // batches with one recvmmsg each instead of one read each.
                // When a batch finds the queue empty, the next few reads
                // skip it (an empty recvmmsg is a wasted syscall).
                if skip_batches > 0 {
                    skip_batches -= 1;
                } else if let Some(b) = batch.as_mut() {
                    // Datagrams keep coming but the sender is slower than
                    // we are: rather than waking up for each one (an
                    // io_uring round trip, ≈ 1 µs of CPU), pause so a
                    // batch builds up and take it with one recvmmsg. The
                    // pause adapts to the arrival rate seen by the last
                    // one, so the queue stays far below SO_RCVBUF.
                    // The first drain's rate is unknown (it took what came
                    // during the wake-up): start with a quarter of the cap.
                    let mut pause = coalesce / 4;
                    let mut since: Option<Instant> = None;
                    loop {
                        let (got, bytes) =
                            drain(b, &state, &tap, &stopping, &mut drained, drain_budget, &mut errors_logged).await;
                        if got == 0 {
                            skip_batches = BATCH_SKIP_AFTER_EMPTY;
                            break;
                        }
                        if coalesce.is_zero() || stopping.get() {
                            break;
                        }
                        if let Some(t) = since {
                            pause = next_pause(coalesce, t.elapsed(), got, bytes, 2 * b.capacity(), queue_budget);
                        }
                        since = Some(Instant::now());
                        if pause >= MIN_PAUSE {
                            glommio::timer::sleep(pause).await;
                        }
                    }
                }
                // A saturated socket always has a datagram ready, so the
                // read never suspends: give the control task (flush
                // requests) its turn when the task quota is used up.
                glommio::executor().yield_if_needed().await;
                if stopping.get() && drained > drain_budget {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                // Idle for IDLE_READ_TIMEOUT: after a stop request the queue is drained.
                if stopping.get() {
                    return;
                }
            }
            Err(e) => {
                if stopping.get() {
                    return;
                }
                state.borrow_mut().count_read_error();
                if errors_logged < 10 {
                    errors_logged += 1;
                    tracing::warn!(error = %e, "DogStatsD socket read error");
                }
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_targets_a_batch_and_respects_the_cap_and_the_queue_budget() {
        let max = Duration::from_micros(200);
        let us = Duration::from_micros;
        // 0.1 datagram/µs of 150 B: 64 datagrams take 640 µs, capped at 200.
        assert_eq!(next_pause(max, us(100), 10, 1500, 64, 1 << 20), max);
        // 1 datagram/µs: 64 datagrams in 64 µs.
        let p = next_pause(max, us(100), 100, 15_000, 64, 1 << 20);
        assert!(p >= us(63) && p <= us(65), "{p:?}");
        // Same rate, tiny queue budget: 10 datagrams charged 1068 B each fit 10 680 B.
        let p = next_pause(max, us(100), 100, 15_000, 64, 10_680);
        assert!(p >= us(9) && p <= us(11), "{p:?}");
        // Nothing seen: the cap.
        assert_eq!(next_pause(max, us(100), 0, 0, 64, 1 << 20), max);
    }
}
