//! The one module that knows about glommio: thread-per-core shard
//! executors, their sockets and their control loop. Everything it runs is
//! runtime-free (`core::shard`), so replacing glommio touches only this
//! module. Every task waits on an event (a datagram, a control request, the
//! stop signal); none polls on a timer, so an idle shard costs nothing.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use glommio::{LocalExecutorBuilder, Placement};

use crate::agent::batch_recv::BatchRecv;
use crate::agent::clock::{mono_nanos, unix_now};
pub use crate::agent::handover::{ContextRow, Control};
use crate::agent::handover::{ControlReceiver, ControlSender, LiveShardStats, ShardReply};
use crate::agent::tap::Tap;
use crate::agent::udp_standby::UdpStandby;
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
    /// The CPU the shard's thread is pinned to (`cpu_set::shard_cpu`).
    pub cpu: usize,
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
    /// The standby reader of `udp` (`udp_standby`), when there is one.
    pub udp_standby: Option<Arc<UdpStandby>>,
    /// The bound Unix datagram socket (from [`bind_unix`]; several shards
    /// may read it, each through its own clone of the fd).
    pub unix: Option<std::os::unix::net::UnixDatagram>,
    /// Beaten by the shard's control task at every request (`GET /health`).
    pub health: Option<Arc<crate::agent::health::Component>>,
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

/// Binds the Unix datagram socket at `path` (replacing a stale socket
/// file, see [`prepare_unix_path`]) with the Agent's mode: anyone may send.
pub fn bind_unix(path: &Path) -> Result<std::os::unix::net::UnixDatagram, RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    prepare_unix_path(path)?;
    let err = |e| RuntimeError::Bind { what: format!("unix socket {}", path.display()), source: e };
    let sock = std::os::unix::net::UnixDatagram::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o722)).map_err(err)?;
    Ok(sock)
}

/// Tells a shard's readers to stop (shard-local, no timer involved), and
/// whether a flush hand-over is in progress.
#[derive(Default)]
struct Stop {
    set: Cell<bool>,
    waiters: RefCell<Vec<std::task::Waker>>,
    /// A flush hand-over is being done in steps: a reader that keeps
    /// finding datagrams gives the control task a turn after every batch
    /// (glommio would preempt it only every 100 ms).
    handover: Cell<bool>,
}

impl Stop {
    fn fire(&self) {
        self.set.set(true);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    fn is_set(&self) -> bool {
        self.set.get()
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.set.get() {
                return std::task::Poll::Ready(());
            }
            let mut w = self.waiters.borrow_mut();
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// A running shard.
pub struct ShardHandle {
    /// Control channel (bounded; sending wakes the shard).
    pub control: ControlSender,
    join: glommio::ExecutorJoinHandle<()>,
}

impl ShardHandle {
    /// Waits for the shard thread to end.
    pub fn join(self) {
        let _ = self.join.join();
    }
}

/// How often at most a shard publishes its counters for `/metrics` while
/// they change (not at all while idle).
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
    unix_poll_us: u64,
    hooks: ShardHooks,
) -> Result<ShardHandle, RuntimeError> {
    let (control, control_rx) = crate::agent::handover::control_channel(4);
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), RuntimeError>>(1);
    let join = LocalExecutorBuilder::new(Placement::Fixed(hooks.cpu))
        .name(&format!("edgestat-shard-{id}"))
        .io_memory(io_memory)
        .spawn(move || async move {
            let recv = RecvSettings {
                buffer_size,
                batch: recv_batch.max(1),
                coalesce: Duration::from_micros(recv_coalesce_us),
                unix_poll: Duration::from_micros(unix_poll_us),
            };
            run_shard(id, settings, sockets, hooks, recv, control_rx, ready_tx).await;
        })
        .map_err(|e| RuntimeError::Executor { shard: id, detail: e.to_string() })?;
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(ShardHandle { control, join }),
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
    /// Datagrams per `recvmmsg`.
    batch: usize,
    /// Pause between drains while datagrams keep coming (UDP only).
    coalesce: Duration,
    /// How long the Unix reader keeps polling after a burst (see `ReadLoop::poll`).
    unix_poll: Duration,
}

/// Flush entries converted (or context slots swept) per step of a flush
/// hand-over; the readers get their turn between two steps. About 100 µs
/// of work on the reference machine.
const FLUSH_STEP_ENTRIES: usize = 2048;

/// What a shard's tasks share: one executor, so no locks.
struct ShardCtx {
    state: RefCell<ShardState>,
    /// Called with every datagram before parsing.
    tap: Tap,
    stop: Stop,
    /// Raised by the readers when the counters moved.
    changed: Signal,
}

async fn run_shard(
    id: usize,
    settings: ShardSettings,
    sockets: ShardSockets,
    hooks: ShardHooks,
    recv: RecvSettings,
    control: ControlReceiver,
    ready: Sender<Result<(), RuntimeError>>,
) {
    let mut state = ShardState::new(settings);
    if hooks.metric_stats_capacity > 0 {
        state.enable_metric_stats(hooks.metric_stats_capacity);
    }
    let ctx = Rc::new(ShardCtx {
        state: RefCell::new(state),
        tap: hooks.tap,
        stop: Stop::default(),
        changed: Signal::default(),
    });
    let ShardSockets { udp, udp_standby, unix, health, stream } = sockets;
    let mut readers = Vec::new();

    let RecvSettings { buffer_size, batch, coalesce, unix_poll } = recv;
    if let Some(std_sock) = udp {
        let fd = std_sock.as_raw_fd();
        let budget = drain_budget(socket2::SockRef::from(&std_sock).recv_buffer_size().ok(), buffer_size);
        let rcvbuf_bytes = (budget - buffer_size as u64) / 2;
        // Coalescing pauses keep the queue under an eighth of SO_RCVBUF.
        let queue_budget = rcvbuf_bytes / 8;
        let sock = glommio::net::UdpSocket::from(glommio_socket2::Socket::from(std_sock));
        let reader = ReadLoop {
            batch: BatchRecv::new(fd, batch, buffer_size),
            transport: Transport::Udp,
            drain_budget: budget,
            coalesce,
            poll: Duration::ZERO,
            queue_budget,
            rcvbuf_bytes,
            standby: udp_standby,
            errors_logged: 0,
            last_look: None,
            peak: PeakRate::default(),
            drains: 0,
        };
        readers.push(glommio::spawn_local(reader.run(Waiter::Udp(sock), ctx.clone())));
    }
    if let Some(std_sock) = unix {
        let fd = std_sock.as_raw_fd();
        let rcvbuf = socket2::SockRef::from(&std_sock).recv_buffer_size().ok();
        let waiter = match std_sock.try_clone() {
            // SAFETY: the clone is a fresh fd owned by nobody else; the
            // glommio stream takes it over and closes it.
            Ok(dup) => unsafe { glommio::net::UnixStream::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(dup)) },
            Err(e) => {
                let _ =
                    ready.send(Err(RuntimeError::Bind { what: "unix socket (the shard's wait)".into(), source: e }));
                return;
            }
        };
        // A Unix socket's queue is short (net.unix.max_dgram_qlen
        // datagrams): never pause to coalesce, drain at once.
        let reader = ReadLoop {
            batch: BatchRecv::new(fd, batch, buffer_size),
            transport: Transport::Uds,
            drain_budget: drain_budget(rcvbuf, buffer_size).max(UNIX_MIN_DRAIN_BYTES),
            coalesce: Duration::ZERO,
            poll: unix_poll,
            queue_budget: 0,
            rcvbuf_bytes: 0,
            standby: None,
            errors_logged: 0,
            last_look: None,
            peak: PeakRate::default(),
            drains: 0,
        };
        readers.push(glommio::spawn_local(reader.run(Waiter::Unix(waiter, std_sock), ctx.clone())));
    }
    let stream_path = stream.as_ref().map(|s| s.path.clone());
    if let Some(s) = stream {
        match stream::listen(s, ctx.clone()) {
            Ok(task) => readers.push(task),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
    }
    readers.push(glommio::spawn_local(publish_live(id, ctx.clone(), hooks.live.clone())));
    // The executor's first park is slow (16–35 ms here) and a reader's wait
    // armed before it did not wake for the datagrams that came meanwhile
    // (the default socket buffer overflowed at start-up: perf/session5.md).
    // Park once on a timer before reporting ready, so "running" (and
    // systemd's READY=1) means a datagram wakes its reader at once.
    glommio::timer::sleep(Duration::from_millis(1)).await;
    let _ = ready.send(Ok(()));

    let mut test_delay = hooks.test_delay_flush;
    while let Some(req) = control.next().await {
        if let Some(h) = &health {
            h.beat();
        }
        match req {
            Control::Flush { now, force, seq, reply } => {
                // O(1) for the read loop: swap the closed buckets out, then
                // convert them a slice at a time, letting the readers run
                // in between (their samples go to the open bucket).
                let mut job = ctx.state.borrow_mut().begin_flush(now, force);
                ctx.stop.handover.set(true);
                while !ctx.state.borrow_mut().flush_step(&mut job, FLUSH_STEP_ENTRIES) {
                    glommio::executor().yield_task_queue_now().await;
                }
                ctx.stop.handover.set(false);
                let f = ctx.state.borrow_mut().finish_flush(job);
                if !f.metrics.is_empty() || !f.sketches.is_empty() {
                    if let Some(d) = test_delay.take() {
                        tracing::warn!(
                            shard = id,
                            delay_ms = d.as_millis() as u64,
                            "EDGESTAT_TEST_DELAY_SHARD_FLUSH: delaying this flush answer (test-only fault)"
                        );
                        glommio::timer::sleep(d).await;
                    }
                }
                hooks.live.publish(id, &f.stats);
                // Never blocks: the channel has room for every request the
                // flusher can have outstanding (see `handover`).
                let _ = reply.send(ShardReply { shard: id, seq, flush: f });
            }
            Control::MetricStats { limit, reply } => {
                let _ = reply.send(ctx.state.borrow().metric_stats(limit).iter().map(context_row).collect());
            }
            Control::Shutdown { now, seq, reply } => {
                // The readers drain what is queued without waiting for more,
                // bounded by their drain budget, then end.
                stop_readers(&ctx, stream_path.as_deref(), &mut readers).await;
                let f = ctx.state.borrow_mut().take_flush(now.max(unix_now()), true);
                hooks.live.publish(id, &f.stats);
                let _ = reply.send(ShardReply { shard: id, seq, flush: f });
                return;
            }
        }
    }
    // Every sender is gone without a shutdown request (the process is
    // going down): stop reading.
    stop_readers(&ctx, stream_path.as_deref(), &mut readers).await;
}

/// Fires the stop signal and waits for every reader task to end.
async fn stop_readers(ctx: &ShardCtx, stream_path: Option<&Path>, readers: &mut Vec<glommio::Task<()>>) {
    ctx.stop.fire();
    if let Some(path) = stream_path {
        stream::wake_accept(path);
    }
    for r in readers.drain(..) {
        r.await;
    }
}

/// Publishes the shard's counters for `/metrics` at most every
/// [`LIVE_STATS_PERIOD`] while they change; waits without a timer while
/// they do not.
async fn publish_live(id: usize, ctx: Rc<ShardCtx>, live: Arc<LiveShardStats>) {
    while or_stop(ctx.changed.wait(), &ctx.stop).await.is_some() {
        live.publish(id, ctx.state.borrow().stats());
        if or_stop(glommio::timer::sleep(LIVE_STATS_PERIOD), &ctx.stop).await.is_none() {
            break;
        }
    }
}

fn context_row(s: &crate::core::metric_stats::ContextStat<Arc<crate::core::model::ContextKey>>) -> ContextRow {
    ContextRow {
        name: s.value.name_string(),
        tags: s.value.tag_strings(),
        host: s.value.host_string(),
        count: s.count,
        error: s.error,
        last_seen: s.last_seen,
    }
}

/// Floor of a Unix socket reader's drain budget at shutdown (its queue is
/// bounded by datagram count and the senders' buffers, not SO_RCVBUF).
const UNIX_MIN_DRAIN_BYTES: u64 = 16 << 20;

/// After SIGTERM a reader keeps going until the queue is empty, but at most
/// this many bytes, so a sender that never stops cannot hold shutdown
/// hostage: everything queued before the signal is at most SO_RCVBUF bytes.
fn drain_budget(rcvbuf: Option<usize>, buffer_size: usize) -> u64 {
    (rcvbuf.unwrap_or(1 << 20) as u64) * 2 + buffer_size as u64
}

/// What a reader awaits between drains: a datagram being queued. A peek
/// (MSG_PEEK) consumes nothing, so giving up the wait at shutdown (which
/// cancels the io_uring request) cannot lose a datagram; the datagrams
/// themselves are taken with `recvmmsg`.
enum Waiter {
    Udp(glommio::net::UdpSocket),
    /// glommio's Unix datagram socket can neither be made from a bound
    /// socket nor give its fd (both are needed: the socket may be shared
    /// by several shards, and is read with `recvmmsg`), so the wait is a
    /// peek through glommio's Unix stream type on a duplicate of the fd:
    /// at the syscall level the same `recv(MSG_PEEK)`. The std socket
    /// keeps the bound fd alive.
    Unix(glommio::net::UnixStream, std::os::unix::net::UnixDatagram),
}

impl Waiter {
    /// The wait's peek saw a 0-byte datagram. Harmless on UDP; on the Unix
    /// socket glommio's stream type takes it for the end of the stream and
    /// answers every later wait at once, so the wait is rebuilt on a fresh
    /// duplicate of the fd rather than spinning. (A wake-up whose datagram
    /// another reader took first saw a real byte: nothing to rebuild.)
    fn saw_empty_datagram(&mut self) {
        if let Waiter::Unix(stream, sock) = self {
            match sock.try_clone() {
                // SAFETY: a fresh fd owned by nobody else; the stream takes it over.
                Ok(dup) => {
                    *stream = unsafe { glommio::net::UnixStream::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(dup)) }
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the unix socket wait"),
            }
        }
    }

    /// Waits for a datagram; returns the bytes peeked (0 or 1).
    async fn readable(&self) -> std::io::Result<usize> {
        let mut byte = [0u8; 1];
        match self {
            Waiter::Udp(s) => s.peek_from(&mut byte).await.map(|(n, _)| n).map_err(Into::into),
            Waiter::Unix(s, _) => s.peek(&mut byte).await.map_err(Into::into),
        }
    }
}

/// `f`'s output, or `None` once the shard stops (stop wins only while `f`
/// is not ready: a queued datagram is still read).
async fn or_stop<F: Future>(f: F, stop: &Stop) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut stopped = std::pin::pin!(stop.wait());
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(r) = f.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(r));
        }
        match stopped.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
    .await
}

/// A shard-local flag with one waiting task: raised by one task, awaited
/// (and lowered) by another, no timer involved.
#[derive(Default)]
struct Signal {
    set: Cell<bool>,
    waiter: RefCell<Option<std::task::Waker>>,
}

impl Signal {
    fn raise(&self) {
        if !self.set.replace(true) {
            if let Some(w) = self.waiter.borrow_mut().take() {
                w.wake();
            }
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.set.replace(false) {
                return std::task::Poll::Ready(());
            }
            *self.waiter.borrow_mut() = Some(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }
}

/// Shorter pauses than this are not worth a timer: drain right away.
const MIN_PAUSE: Duration = Duration::from_micros(5);

/// Datagrams a pause must be expected to gather to be worth its wake-up.
const MIN_PAUSE_DATAGRAMS: f64 = 2.0;

/// The pause before the next drain: long enough for `target` datagrams at
/// the rate the last drain saw (`got` datagrams in `elapsed`), never longer
/// than `max`, and never so long that the queue would hold more than
/// `queue_budget` bytes at `queue_per_us` (the queue's growth, bytes per µs:
/// [`queue_bytes_per_us`], held at its recent peak by [`PeakRate`]).
/// `None` when, at that rate, even `max` would gather fewer than
/// `MIN_PAUSE_DATAGRAMS`: then waiting for the next datagram costs less.
fn next_pause(
    max: Duration,
    elapsed: Duration,
    got: usize,
    target: usize,
    queue_budget: u64,
    queue_per_us: f64,
) -> Option<Duration> {
    let us = elapsed.as_secs_f64() * 1e6;
    if got == 0 {
        return None;
    }
    if us <= 0.0 {
        return Some(Duration::ZERO);
    }
    let per_us = got as f64 / us;
    let max_us = max.as_secs_f64() * 1e6;
    if per_us * max_us < MIN_PAUSE_DATAGRAMS {
        return None;
    }
    let by_count = target as f64 / per_us;
    let by_memory = queue_budget as f64 / queue_per_us.max(1e-9);
    Some(Duration::from_secs_f64(by_count.min(by_memory).min(max_us).max(0.0) / 1e6))
}

/// Kernel memory `got` datagrams of `bytes` take in the queue, each charged
/// 2 × its length + 768 B, a pessimistic skb truesize (8,448 B is measured
/// for a 6,900 B datagram on loopback).
fn queue_charge(got: usize, bytes: u64) -> f64 {
    (2 * bytes + 768 * got as u64) as f64
}

/// Kernel memory `got` datagrams of `bytes` take in the queue as measured
/// on loopback: 941 B for 154 B charged (842 measured), 8,530 B for 6,900
/// B (8,448 measured).
fn truesize(got: usize, bytes: u64) -> f64 {
    (bytes + bytes / 8 + 768 * got as u64) as f64
}

/// How fast the socket's queue grows (bytes per µs) at `got` datagrams of
/// `bytes` in `elapsed`.
#[cfg(test)]
fn queue_bytes_per_us(elapsed: Duration, got: usize, bytes: u64) -> f64 {
    queue_charge(got, bytes) / (elapsed.as_secs_f64() * 1e6).max(1e-3)
}

/// Half-life of a [`PeakRate`]: a sender that slowed down is trusted
/// after about a second.
const PEAK_HALF_LIFE: Duration = Duration::from_millis(250);

/// A [`PeakRate`] sample spans at least this much time: one drain's
/// interval is too short to be a rate (two datagrams in 30 µs are not
/// 66,000 a second).
const PEAK_WINDOW: Duration = Duration::from_millis(5);

/// The queue's growth rate over windows of [`PEAK_WINDOW`], held at its
/// recent peak. A sender paused for a moment (starved of CPU itself) makes
/// one drain see a low rate; pausing for that rate, and the sender's
/// catch-up at the full one, would overflow the kernel's default buffer,
/// which holds about a millisecond of 8 KB datagrams at 20,000 a second.
#[derive(Default)]
struct PeakRate {
    /// The held peak (bytes per µs) and when it was last folded.
    per_us: f64,
    at: Option<Instant>,
    /// The window being filled: bytes charged and its length.
    window_bytes: f64,
    window: Duration,
}

impl PeakRate {
    /// Adds `bytes` charged over `elapsed`, ending at `now`; returns the
    /// rate to plan with: the held peak once a window has closed, else
    /// this interval's own rate.
    fn update(&mut self, now: Instant, elapsed: Duration, bytes: f64) -> f64 {
        self.window_bytes += bytes;
        self.window += elapsed;
        if self.window >= PEAK_WINDOW {
            let sample = self.window_bytes / (self.window.as_secs_f64() * 1e6);
            let decayed = match self.at {
                Some(t) => {
                    let halves = now.duration_since(t).as_secs_f64() / PEAK_HALF_LIFE.as_secs_f64();
                    self.per_us * 0.5f64.powf(halves)
                }
                None => 0.0,
            };
            self.per_us = decayed.max(sample);
            self.at = Some(now);
            self.window_bytes = 0.0;
            self.window = Duration::ZERO;
        }
        match self.at {
            Some(_) => self.per_us,
            None => bytes / (elapsed.as_secs_f64() * 1e6).max(1e-3),
        }
    }
}

/// One socket's reader: waits (without a timer) until a datagram is
/// queued or the shard stops, then takes everything queued with `recvmmsg`
/// batches. While datagrams keep coming it pauses briefly between drains
/// (UDP only) so each wake-up takes a batch rather than one datagram.
struct ReadLoop {
    batch: BatchRecv,
    /// Which socket (for `dogstatsd_eol_required`).
    transport: Transport,
    /// Bytes taken at most after the stop signal.
    drain_budget: u64,
    /// Longest pause between drains (zero: no pauses).
    coalesce: Duration,
    /// Without pauses (the Unix socket, whose queue holds only
    /// `net.unix.max_dgram_qlen` datagrams): when a drain found more than
    /// one datagram queued, the sender outpaces a wake-up cycle, so keep
    /// polling until nothing has come for this long before going back to
    /// the wait; a burst then finds room in the short queue. Never while
    /// datagrams come one per wake-up (moderate rates), never when idle.
    poll: Duration,
    /// Pauses keep the queue under this many bytes.
    queue_budget: u64,
    /// The socket's receive buffer (the standby's arming uses it).
    rcvbuf_bytes: u64,
    /// The UDP socket's standby reader: armed while the rate could fill
    /// the buffer quickly; its batches are parsed before every drain.
    standby: Option<Arc<UdpStandby>>,
    /// Read errors logged so far (at most 10 are).
    errors_logged: u32,
    /// When the socket was last drained (the arrival rate's start).
    last_look: Option<Instant>,
    /// The queue's growth rate, held at its recent peak.
    peak: PeakRate,
    /// Reads of the socket so far (the standby's sign of life).
    drains: u64,
}

impl ReadLoop {
    async fn run(mut self, mut waiter: Waiter, ctx: Rc<ShardCtx>) {
        let (state, stop) = (&ctx.state, &ctx.stop);
        loop {
            match or_stop(readable_or_standby(&waiter, self.standby.as_deref()), stop).await {
                None => break,
                Some(Ok(0)) => waiter.saw_empty_datagram(),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    state.borrow_mut().count_read_error();
                    log_read_error(&mut self.errors_logged, &e);
                    // Not a poll: a failing socket must not spin.
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            }
            loop {
                let (got, bytes) = self.drain(&ctx).await;
                // The rate is what came since the last look (for the first
                // drain of a wake-up, the previous wake-up's last drain).
                let now = Instant::now();
                let elapsed = self.last_look.replace(now).map(|t| now.duration_since(t));
                if got == 0 || stop.is_set() {
                    break;
                }
                if self.coalesce.is_zero() {
                    if got > 1 && !self.poll.is_zero() {
                        self.poll_burst(&ctx).await;
                    }
                    break;
                }
                // Datagrams keep coming but the sender is slower than we
                // are: rather than waking up for each one, pause so a batch
                // builds up. The pause adapts to the arrival rate seen
                // since the last look, so the queue stays far below
                // SO_RCVBUF; a sender too sparse to fill the pause with a
                // few datagrams gets no pause (a wake-up each is cheapest).
                let Some(elapsed) = elapsed else { continue };
                let queue_per_us = self.peak.update(now, elapsed, queue_charge(got, bytes));
                if let Some(s) = &self.standby {
                    // The standby's checks follow the buffer's real fill
                    // time: the peak rate with the truesize measured, not
                    // the pauses' pessimistic charge.
                    let real_per_us = queue_per_us * truesize(got, bytes) / queue_charge(got, bytes).max(1.0);
                    s.set_fill_time((self.rcvbuf_bytes as f64 / real_per_us.max(1e-9)) as u64, mono_nanos());
                }
                let Some(pause) =
                    next_pause(self.coalesce, elapsed, got, 2 * self.batch.capacity(), self.queue_budget, queue_per_us)
                else {
                    break;
                };
                if pause < MIN_PAUSE {
                    continue;
                }
                glommio::timer::sleep(pause).await;
            }
        }
        if let Some(s) = &self.standby {
            // Everything the standby read before it stopped is in its
            // queue; then only the socket is left.
            s.stop();
            let t0 = Instant::now();
            while !s.is_stopped() && t0.elapsed() < STANDBY_STOP_WAIT {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            self.take_standby(&ctx);
        }
        self.drain_at_stop(&ctx);
    }

    /// Parses every batch the standby reader handed over (older than
    /// anything still in the socket); (datagrams, bytes).
    fn take_standby(&mut self, ctx: &ShardCtx) -> (usize, u64) {
        let Some(s) = &self.standby else { return (0, 0) };
        let (mut total, mut bytes) = (0, 0u64);
        while let Some(batch) = s.take() {
            let got = batch.filled();
            bytes += deliver(ctx, self.transport, &batch, got);
            total += got;
            s.recycle(batch);
        }
        if total > 0 {
            ctx.state.borrow_mut().count_standby(total as u64, s.pool_full());
        }
        (total, bytes)
    }

    /// Keeps draining while datagrams keep coming, until none has come for
    /// `self.poll` (or the shard stops); other tasks run between polls.
    async fn poll_burst(&mut self, ctx: &ShardCtx) {
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < self.poll && !ctx.stop.is_set() {
            glommio::executor().yield_if_needed().await;
            if self.drain(ctx).await.0 > 0 {
                quiet_since = Instant::now();
            }
        }
    }

    /// Takes every queued datagram (until a batch comes back short);
    /// returns how many and their bytes. Gives other tasks (a flush
    /// hand-over) their turn between batches.
    async fn drain(&mut self, ctx: &ShardCtx) -> (usize, u64) {
        let (mut total, mut bytes) = self.take_standby(ctx);
        loop {
            let (got, b) = self.batch_once(ctx);
            total += got;
            bytes += b;
            if ctx.stop.handover.get() {
                glommio::executor().yield_now().await;
            }
            if got < self.batch.capacity() {
                return (total, bytes);
            }
            glommio::executor().yield_if_needed().await;
        }
    }

    /// One `recvmmsg`, each datagram delivered; (datagrams, bytes).
    fn batch_once(&mut self, ctx: &ShardCtx) -> (usize, u64) {
        if let Some(s) = &self.standby {
            self.drains += 1;
            s.beat(self.drains);
        }
        let got = match self.batch.recv() {
            Ok(got) => got,
            Err(e) => {
                ctx.state.borrow_mut().count_read_error();
                log_read_error(&mut self.errors_logged, &e);
                return (0, 0);
            }
        };
        (got, deliver(ctx, self.transport, &self.batch, got))
    }

    /// After the stop signal: takes what is queued, without waiting for
    /// more, up to the drain budget (a sender that never stops cannot hold
    /// shutdown hostage).
    fn drain_at_stop(&mut self, ctx: &ShardCtx) {
        let mut drained = 0u64;
        while drained <= self.drain_budget {
            let (got, bytes) = self.batch_once(ctx);
            drained += bytes;
            if got < self.batch.capacity() {
                return;
            }
        }
    }
}

/// Parses the first `got` datagrams of `batch`; returns their bytes.
fn deliver(ctx: &ShardCtx, transport: Transport, batch: &BatchRecv, got: usize) -> u64 {
    let mut bytes = 0;
    if got > 0 {
        let (now, seq) = (unix_now(), mono_nanos());
        let mut st = ctx.state.borrow_mut();
        for i in 0..got {
            let d = batch.datagram(i);
            bytes += d.len() as u64;
            ctx.tap.datagram(d);
            st.handle_datagram_from(transport, d, now, seq);
        }
        ctx.changed.raise();
    }
    bytes
}

/// Longest wait at shutdown for the standby reader to finish its last read
/// (it checks for the stop at least every few milliseconds).
const STANDBY_STOP_WAIT: Duration = Duration::from_secs(1);

/// Waits until a datagram is queued on the socket (the peek's bytes, as
/// [`Waiter::readable`]) or the standby has handed batches over (`Ok(1)`).
async fn readable_or_standby(waiter: &Waiter, standby: Option<&UdpStandby>) -> std::io::Result<usize> {
    let Some(s) = standby else { return waiter.readable().await };
    let mut peek = std::pin::pin!(waiter.readable());
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(r) = peek.as_mut().poll(cx) {
            return std::task::Poll::Ready(r);
        }
        s.register(cx.waker());
        // A batch handed over before the registration found no waker.
        if s.has_batches() {
            return std::task::Poll::Ready(Ok(1));
        }
        std::task::Poll::Pending
    })
    .await
}

fn log_read_error(logged: &mut u32, e: &std::io::Error) {
    if *logged < 10 {
        *logged += 1;
        tracing::warn!(error = %e, "DogStatsD socket read error");
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
        let q = |elapsed, got, bytes| queue_bytes_per_us(elapsed, got, bytes);
        assert_eq!(next_pause(max, us(100), 10, 64, 1 << 20, q(us(100), 10, 1500)), Some(max));
        // 1 datagram/µs: 64 datagrams in 64 µs.
        let p = next_pause(max, us(100), 100, 64, 1 << 20, q(us(100), 100, 15_000)).unwrap();
        assert!(p >= us(63) && p <= us(65), "{p:?}");
        // Same rate, tiny queue budget: 10 datagrams charged 1068 B each fit 10 680 B.
        let p = next_pause(max, us(100), 100, 64, 10_680, q(us(100), 100, 15_000)).unwrap();
        assert!(p >= us(9) && p <= us(11), "{p:?}");
        // Nothing seen: no pause.
        assert_eq!(next_pause(max, us(100), 0, 64, 1 << 20, 0.0), None);
    }

    #[test]
    fn a_peak_rate_holds_through_a_lull_and_halves_every_half_life() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut p = PeakRate::default();
        // Before a window has closed: the interval's own rate.
        assert_eq!(p.update(t0, ms(1), 100_000.0), 100.0);
        // Four more at 100 B/µs close the first 5 ms window.
        for i in 2..=5 {
            p.update(t0 + ms(i), ms(1), 100_000.0);
        }
        // A lull: a whole window at 5 B/µs; the peak holds (decayed by 5 ms).
        let held = p.update(t0 + ms(10), ms(5), 25_000.0);
        assert!(held > 98.0 && held <= 100.0, "{held}");
        // Two half-lives of slow windows later: a quarter of it.
        let later = p.update(t0 + ms(10) + 2 * PEAK_HALF_LIFE, ms(5), 25_000.0);
        assert!((later - held / 4.0).abs() < 0.5, "{later}");
        // A faster window replaces it at once.
        assert_eq!(p.update(t0 + 3 * PEAK_HALF_LIFE, ms(5), 2_500_000.0), 500.0);
    }

    #[test]
    fn a_sender_too_sparse_to_fill_a_pause_gets_none() {
        let max = Duration::from_millis(5);
        let ms = Duration::from_millis;
        // One datagram in 10 ms: a 5 ms pause would gather half of one.
        assert_eq!(next_pause(max, ms(10), 1, 64, 1 << 20, queue_bytes_per_us(ms(10), 1, 8000)), None);
        // One in 2 ms: 2.5 per pause, worth it; the cap binds.
        assert_eq!(next_pause(max, ms(2), 1, 64, 1 << 20, queue_bytes_per_us(ms(2), 1, 8000)), Some(max));
    }
}
