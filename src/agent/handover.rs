//! What passes between the shards and the rest of the process. Requests:
//! a bounded control channel per shard whose sender wakes the shard's
//! control task (no polling). Flushes: every shard
//! answers on one persistent channel, so an answer that misses its flush's
//! deadline is not thrown away: it is merged into the next flush and
//! counted (`late_shard_flushes`). A shard that stops answering is logged
//! and shown per shard (telemetry, [`ShardHealth`]); the others keep
//! flowing. Counters: each shard publishes them several times a second
//! ([`LiveShardStats`]) so `/metrics` moves before the first flush.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::core::shard::{ShardFlush, ShardStats};

/// A request from the flusher to a shard.
pub enum Control {
    /// Hand over closed buckets as of `now` (all buckets when `force`).
    Flush {
        /// Wall-clock Unix seconds of the flush.
        now: i64,
        /// Flush open buckets too.
        force: bool,
        /// Request number, echoed in the answer.
        seq: u64,
        /// Where the shard answers (the flusher's persistent channel).
        reply: Sender<ShardReply>,
    },
    /// The busiest contexts (`dogstatsd_metrics_stats_enable`); answered on
    /// its own channel, outside the flush hand-over.
    MetricStats {
        /// At most this many.
        limit: usize,
        /// Where the shard answers.
        reply: Sender<Vec<ContextRow>>,
    },
    /// Stop reading, drain the socket buffers, hand over everything, exit.
    Shutdown {
        /// Wall-clock Unix seconds of the stop.
        now: i64,
        /// Request number, echoed in the answer.
        seq: u64,
        /// Where the shard answers (the flusher's persistent channel).
        reply: Sender<ShardReply>,
    },
}

/// Sends requests to one shard and wakes it: the shard's control task
/// sleeps until a request (or the last sender's drop) arrives, instead of
/// polling the channel on a timer.
#[derive(Clone)]
pub struct ControlSender {
    inner: Arc<ControlInner>,
}

struct ControlInner {
    tx: Sender<Control>,
    wake: Arc<WakeSlot>,
}

impl Drop for ControlInner {
    fn drop(&mut self) {
        // The shard sees the channel disconnected only once `tx` is gone:
        // drop it first, then wake the shard to notice.
        let (tx, _) = crossbeam_channel::bounded(0);
        drop(std::mem::replace(&mut self.tx, tx));
        self.wake.wake();
    }
}

impl ControlSender {
    /// Queues `msg` (waiting at most `timeout` for room) and wakes the shard.
    pub fn send_timeout(
        &self,
        msg: Control,
        timeout: Duration,
    ) -> Result<(), crossbeam_channel::SendTimeoutError<Control>> {
        self.inner.tx.send_timeout(msg, timeout)?;
        self.inner.wake.wake();
        Ok(())
    }

    /// Queues `msg` (waiting for room) and wakes the shard.
    pub fn send(&self, msg: Control) -> Result<(), crossbeam_channel::SendError<Control>> {
        self.inner.tx.send(msg)?;
        self.inner.wake.wake();
        Ok(())
    }
}

/// The shard's end of its control channel.
pub struct ControlReceiver {
    rx: Receiver<Control>,
    wake: Arc<WakeSlot>,
}

/// A shard's control channel holding at most `capacity` requests.
pub fn control_channel(capacity: usize) -> (ControlSender, ControlReceiver) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let wake = Arc::new(WakeSlot::default());
    (ControlSender { inner: Arc::new(ControlInner { tx, wake: wake.clone() }) }, ControlReceiver { rx, wake })
}

/// The waker of a shard's control task, set while it waits. An async
/// runtime's wakers may be woken from any thread (glommio's then writes the
/// executor's eventfd), so this is the whole cross-thread bridge.
#[derive(Default)]
struct WakeSlot {
    waker: Mutex<Option<std::task::Waker>>,
}

impl WakeSlot {
    fn wake(&self) {
        let w = self.waker.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = w {
            w.wake();
        }
    }
}

impl ControlReceiver {
    /// The next request; `None` once every sender is gone.
    pub async fn next(&self) -> Option<Control> {
        std::future::poll_fn(|cx| {
            let poll = |rx: &Receiver<Control>| match rx.try_recv() {
                Ok(c) => Some(Some(c)),
                Err(crossbeam_channel::TryRecvError::Disconnected) => Some(None),
                Err(crossbeam_channel::TryRecvError::Empty) => None,
            };
            if let Some(r) = poll(&self.rx) {
                return std::task::Poll::Ready(r);
            }
            if let Ok(mut w) = self.wake.waker.lock() {
                *w = Some(cx.waker().clone());
            }
            // A request sent between the first look and the registration
            // found no waker to wake: look again.
            match poll(&self.rx) {
                Some(r) => std::task::Poll::Ready(r),
                None => std::task::Poll::Pending,
            }
        })
        .await
    }
}

/// One context of the per-context statistics, as a shard reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContextRow {
    /// Metric name.
    pub name: String,
    /// Sorted tags (host excluded).
    pub tags: Vec<String>,
    /// Host of the context.
    pub host: String,
    /// Samples received (an over-estimate by at most `error` once the table was full).
    pub count: u64,
    /// Bound on the over-estimate.
    pub error: u64,
    /// Unix seconds of the last sample.
    pub last_seen: i64,
}

/// Each shard's newest cumulative counters, published by the shard itself
/// every 250 ms (and at its last flush): readable at scrape time without
/// touching the shards.
#[derive(Debug)]
pub struct LiveShardStats {
    slots: Vec<Mutex<ShardStats>>,
}

impl LiveShardStats {
    /// Slots for `n` shards.
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Self { slots: (0..n).map(|_| Mutex::new(ShardStats::default())).collect() })
    }

    /// Shard `shard` publishes its counters; skipped (next period) rather
    /// than waiting if a scrape holds the slot.
    pub fn publish(&self, shard: usize, stats: &ShardStats) {
        if let Some(Ok(mut g)) = self.slots.get(shard).map(|m| m.try_lock()) {
            g.clone_from(stats);
        }
    }

    /// Sum over shards.
    pub fn sum(&self) -> ShardStats {
        let mut out = ShardStats::default();
        for s in &self.slots {
            if let Ok(g) = s.lock() {
                out.add(&g);
            }
        }
        out
    }
}

/// One shard's answer to flush request `seq`.
pub struct ShardReply {
    /// Shard index.
    pub shard: usize,
    /// The request it answers.
    pub seq: u64,
    /// What it handed over.
    pub flush: ShardFlush,
}

/// How long a flush waits for the shards before going on without the
/// missing ones (their answers join a later flush).
pub const SHARD_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Slot {
    /// Unix ms of the oldest unanswered request (0: none).
    waiting_since_ms: AtomicU64,
    /// Unix ms of the last answer (0: never).
    last_answer_ms: AtomicU64,
    late: AtomicU64,
    missed: AtomicU64,
}

/// Per-shard hand-over state, readable at any time (telemetry, health).
#[derive(Debug)]
pub struct ShardHealth {
    slots: Vec<Slot>,
    timeout: Duration,
}

/// One shard as [`ShardHealth::snapshot`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStatus {
    /// Shard index.
    pub shard: usize,
    /// False when a flush request has waited longer than the reply timeout.
    pub answering: bool,
    /// Unix ms of its last answer (0: none yet).
    pub last_answer_unix_ms: u64,
    /// Unix ms since which a request waits unanswered (0: none).
    pub waiting_since_unix_ms: u64,
    /// Answers that came after their flush and joined a later one.
    pub late_flushes: u64,
    /// Flushes that went out without this shard's answer.
    pub missed_flushes: u64,
}

impl ShardHealth {
    fn new(n: usize, timeout: Duration) -> Self {
        Self { slots: (0..n).map(|_| Slot::default()).collect(), timeout }
    }

    /// Every shard's hand-over state now.
    pub fn snapshot(&self) -> Vec<ShardStatus> {
        let now = unix_ms();
        self.slots
            .iter()
            .enumerate()
            .map(|(shard, s)| {
                let waiting = s.waiting_since_ms.load(Ordering::Relaxed);
                ShardStatus {
                    shard,
                    answering: waiting == 0 || now.saturating_sub(waiting) <= self.timeout.as_millis() as u64,
                    last_answer_unix_ms: s.last_answer_ms.load(Ordering::Relaxed),
                    waiting_since_unix_ms: waiting,
                    late_flushes: s.late.load(Ordering::Relaxed),
                    missed_flushes: s.missed.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Late answers over all shards.
    pub fn late_shard_flushes(&self) -> u64 {
        self.slots.iter().map(|s| s.late.load(Ordering::Relaxed)).sum()
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What one collection gathered.
#[derive(Default)]
pub struct Collected {
    /// Every answer received (late ones included), oldest request first.
    pub parts: Vec<ShardFlush>,
    /// Each shard's newest cumulative counters, summed (a shard that did
    /// not answer contributes its last known ones, so totals never drop).
    pub stats: ShardStats,
    /// Live contexts, newest known per shard.
    pub contexts: usize,
    /// Shards whose answer did not come in time (it joins a later flush).
    pub missing: usize,
}

/// The flusher's side of the hand-over.
pub struct Handover {
    shards: Vec<ControlSender>,
    tx: Sender<ShardReply>,
    rx: Receiver<ShardReply>,
    seq: u64,
    /// Unanswered requests per shard, with when the oldest was sent.
    pending: Vec<(u32, Option<(u64, Instant)>)>,
    /// Newest counters per shard and the request they answered.
    last_stats: Vec<(u64, ShardStats, usize)>,
    health: Arc<ShardHealth>,
    timeout: Duration,
}

impl Handover {
    /// A hand-over for these shards' control channels.
    pub fn new(shards: Vec<ControlSender>) -> Self {
        let n = shards.len();
        // At most one request per shard is unanswered, plus the shutdown
        // request: the shards' sends can never block.
        let (tx, rx) = crossbeam_channel::bounded(2 * n.max(1));
        Self {
            shards,
            tx,
            rx,
            seq: 0,
            pending: vec![(0, None); n],
            last_stats: vec![(0, ShardStats::default(), 0); n],
            health: Arc::new(ShardHealth::new(n, SHARD_REPLY_TIMEOUT)),
            timeout: SHARD_REPLY_TIMEOUT,
        }
    }

    /// Shards handed over to.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Shared per-shard state.
    pub fn health(&self) -> Arc<ShardHealth> {
        self.health.clone()
    }

    /// Asks every shard for its closed buckets (all of them and stop, when
    /// `final_flush`) and gathers the answers until they are all in or the
    /// timeout passes. A shard whose previous request is still unanswered
    /// is not asked again (that answer is awaited instead; it will carry
    /// everything up to its own request, the rest stays in the shard).
    pub fn collect(&mut self, now: i64, final_flush: bool) -> Collected {
        self.seq += 1;
        let seq = self.seq;
        for (i, s) in self.shards.iter().enumerate() {
            if !final_flush && self.pending[i].0 > 0 {
                continue;
            }
            let msg = if final_flush {
                Control::Shutdown { now, seq, reply: self.tx.clone() }
            } else {
                Control::Flush { now, force: false, seq, reply: self.tx.clone() }
            };
            if s.send_timeout(msg, self.timeout).is_ok() {
                let p = &mut self.pending[i];
                p.0 += 1;
                if p.1.is_none() {
                    p.1 = Some((seq, Instant::now()));
                    self.health.slots[i].waiting_since_ms.store(unix_ms(), Ordering::Relaxed);
                }
            } else {
                tracing::error!(shard = i, "a shard did not accept the flush request (its control queue is full)");
            }
        }
        // The final flush waits longer: shards drain their sockets first.
        let wait = if final_flush { self.timeout * 4 } else { self.timeout };
        let deadline = Instant::now() + wait;
        let mut out = Collected::default();
        while self.pending.iter().any(|p| p.0 > 0) {
            match self.rx.recv_deadline(deadline) {
                Ok(r) => self.accept(r, seq, &mut out),
                Err(_) => break,
            }
        }
        // Answers that arrived meanwhile from shards we did not wait for.
        while let Ok(r) = self.rx.try_recv() {
            self.accept(r, seq, &mut out);
        }
        for (i, p) in self.pending.iter().enumerate() {
            if let (n, Some((asked, since))) = (p.0, p.1) {
                if n == 0 {
                    continue;
                }
                out.missing += 1;
                let missed = self.health.slots[i].missed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    shard = i,
                    request = asked,
                    waited_ms = since.elapsed().as_millis() as u64,
                    missed_flushes = missed + 1,
                    "a shard did not answer the flush request in time; flushing the other shards, its data joins a later flush when it answers"
                );
            }
        }
        for (_, stats, contexts) in &self.last_stats {
            out.stats.add(stats);
            out.contexts += contexts;
        }
        out
    }

    fn accept(&mut self, r: ShardReply, seq: u64, out: &mut Collected) {
        let i = r.shard;
        let Some(p) = self.pending.get_mut(i) else {
            return;
        };
        p.0 = p.0.saturating_sub(1);
        let asked_at = p.1.map(|(_, t)| t);
        p.1 = if p.0 > 0 { Some((seq, Instant::now())) } else { None };
        let slot = &self.health.slots[i];
        slot.last_answer_ms.store(unix_ms(), Ordering::Relaxed);
        slot.waiting_since_ms.store(if p.0 > 0 { unix_ms() } else { 0 }, Ordering::Relaxed);
        if r.seq < seq {
            let late = slot.late.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                shard = i,
                request = r.seq,
                answered_after_ms = asked_at.map(|t| t.elapsed().as_millis() as u64).unwrap_or(0),
                late_shard_flushes = late,
                "a late shard flush arrived; merged into this flush"
            );
        }
        if r.seq >= self.last_stats[i].0 {
            self.last_stats[i] = (r.seq, r.flush.stats.clone(), r.flush.contexts);
        }
        out.parts.push(r.flush);
    }
}
