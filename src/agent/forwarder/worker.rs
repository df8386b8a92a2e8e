//! The worker of one endpoint: turns payloads into transactions (one per
//! API key), sends up to `max_concurrent_requests` at a time through the
//! circuit breaker, keeps failed ones in a retry queue bounded in bytes
//! (oldest evicted first, to disk when storage is on), replays spilled
//! files when the queue is empty, and at shutdown delivers until the
//! deadline and spills what is left.
//!
//! New transactions wait in an unsent queue bounded by the in-flight
//! window (not by the retry queue: they have not failed) and go out before
//! retries, as the Agent's high-priority queue. While the endpoint is
//! failing (breaker not clear) they join the retry queue at once, as the
//! Agent requeues transactions for a blocked endpoint, so one failing
//! endpoint never holds the window the others need.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::backoff::{Breaker, Permit};
use super::connect::HttpClient;
use super::spill::{SpillDir, SpillHeader};
use super::window::Window;
use super::{send, ErrorKind, ForwarderStats, Input, Outcome, Transaction, TxPayload};
use crate::agent::config::Endpoint;

/// Settings a worker needs.
pub(crate) struct WorkerSettings {
    pub timeout: Duration,
    pub max_concurrent: usize,
    pub retry_max_bytes: usize,
    pub backoff: super::backoff::BackoffSettings,
}

pub(crate) struct Worker {
    endpoint: Endpoint,
    client: HttpClient,
    stats: Arc<ForwarderStats>,
    s: WorkerSettings,
    /// Retry queue: failed transactions (bounded by `retry_max_bytes`).
    queue: VecDeque<Transaction>,
    queued_bytes: usize,
    /// Unsent new transactions (bounded by the window), oldest first.
    fresh: VecDeque<Transaction>,
    window: Arc<Window>,
    shed_wake: Arc<tokio::sync::Notify>,
    shed_logged: bool,
    breaker: Breaker,
    spill: Option<SpillDir>,
    rejected_logged: HashSet<u16>,
    overflow_logged: bool,
    in_flight: HashMap<u64, Transaction>,
    next_id: u64,
}

impl Worker {
    pub fn new(
        endpoint: Endpoint,
        client: HttpClient,
        stats: Arc<ForwarderStats>,
        s: WorkerSettings,
        spill: Option<SpillDir>,
        window: Arc<Window>,
    ) -> Self {
        Self {
            fresh: VecDeque::new(),
            shed_wake: window.register_worker(),
            window,
            shed_logged: false,
            endpoint,
            client,
            stats,
            breaker: Breaker::new(s.backoff),
            s,
            queue: VecDeque::new(),
            queued_bytes: 0,
            spill,
            rejected_logged: HashSet::new(),
            overflow_logged: false,
            in_flight: HashMap::new(),
            next_id: 0,
        }
    }

    fn push_queue(&mut self, mut t: Transaction, front: bool) {
        // In the retry queue a transaction is bounded by the queue, no
        // longer by the window.
        t.window = None;
        let len = t.len();
        self.queued_bytes += len;
        self.stats.retry_queue_bytes.fetch_add(len as u64, Ordering::Relaxed);
        self.stats.retry_queue_payloads.fetch_add(1, Ordering::Relaxed);
        if front {
            self.queue.push_front(t);
        } else {
            self.queue.push_back(t);
        }
    }

    fn pop_queue(&mut self) -> Option<Transaction> {
        let t = self.queue.pop_front()?;
        self.queued_bytes -= t.len();
        self.stats.retry_queue_bytes.fetch_sub(t.len() as u64, Ordering::Relaxed);
        self.stats.retry_queue_payloads.fetch_sub(1, Ordering::Relaxed);
        Some(t)
    }

    /// Adds to the retry queue; while it is over its byte bound the oldest
    /// transactions leave memory (to disk, or dropped and counted).
    fn enqueue(&mut self, t: Transaction, front: bool) {
        self.push_queue(t, front);
        while self.queued_bytes > self.s.retry_max_bytes {
            let Some(old) = self.pop_queue() else { break };
            self.evict(old);
        }
    }

    /// A transaction that does not fit in memory.
    fn evict(&mut self, t: Transaction) {
        self.evict_for(t, false)
    }

    /// Sheds the oldest unsent transactions while the flusher, stalled past
    /// the window's max wait, still lacks room.
    fn shed(&mut self) {
        while self.window.needs_shedding() {
            let Some(t) = self.fresh.pop_front() else { break };
            if !self.shed_logged {
                self.shed_logged = true;
                let to = if self.spill.is_some() { "writing them to disk" } else { "dropping them" };
                tracing::warn!(endpoint = %self.endpoint.base_url, kind = %t.payload.kind,
                    "the intake stayed slower than the data for longer than EDGESTAT_FORWARDER_WINDOW_MAX_WAIT: {to}, oldest unsent first (logged once; see dropped_intake_too_slow / spilled_intake_too_slow)");
            }
            self.evict_for(t, true);
        }
    }

    /// Moves `t` out of memory: to disk when storage is on, else dropped
    /// and counted (`too_slow`: shed by the window, else retry queue full).
    fn evict_for(&mut self, t: Transaction, too_slow: bool) {
        let Some(spill) = self.spill.as_mut() else {
            if too_slow {
                self.stats.dropped_intake_too_slow.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.stats.dropped_retry_queue_full.fetch_add(1, Ordering::Relaxed);
            if !self.overflow_logged {
                self.overflow_logged = true;
                tracing::warn!(endpoint = %self.endpoint.base_url, max_bytes = self.s.retry_max_bytes, kind = %t.payload.kind,
                    "retry queue full: dropping the oldest payloads (logged once; see the dropped_retry_queue_full counter)");
            }
            return;
        };
        if let Some(name) = &t.spill_file {
            // Already on disk: just leave memory.
            spill.check_in(name);
            return;
        }
        match spill.store(&header_of(&t), &t.payload.body) {
            Ok(r) => {
                self.stats.dropped_storage_full.fetch_add(r.evicted, Ordering::Relaxed);
                if r.stored.is_some() {
                    self.stats.spilled.fetch_add(1, Ordering::Relaxed);
                    if too_slow {
                        self.stats.spilled_intake_too_slow.fetch_add(1, Ordering::Relaxed);
                    }
                    // The file is the copy now; memory forgets it.
                    if let Some(name) = r.stored {
                        spill.check_in(&name);
                    }
                } else {
                    self.stats.dropped_storage_full.fetch_add(1, Ordering::Relaxed);
                }
                if r.evicted > 0 || self.stats.dropped_storage_full.load(Ordering::Relaxed) == 1 {
                    tracing::warn!(endpoint = %self.endpoint.base_url, "disk spill budget full: dropping the oldest spilled payloads");
                }
            }
            Err(e) => {
                self.stats.dropped_storage_full.fetch_add(1, Ordering::Relaxed);
                tracing::error!(endpoint = %self.endpoint.base_url, error = %e, "cannot write spill file; payload dropped");
            }
        }
    }

    /// Next transaction to send: new ones first, then retries, then
    /// (unless draining) disk.
    fn next_transaction(&mut self, draining: bool) -> Option<Transaction> {
        if let Some(t) = self.fresh.pop_front() {
            return Some(t);
        }
        if let Some(t) = self.pop_queue() {
            return Some(t);
        }
        if draining {
            return None;
        }
        let spill = self.spill.as_mut()?;
        while let Some((name, res)) = spill.load_oldest() {
            match res {
                Ok((h, body)) => {
                    let key_index = h.key_index;
                    if let Some(i) = key_index {
                        if i as usize >= self.endpoint.api_keys.len() {
                            spill.remove(&name);
                            self.stats.dropped_spill_unknown_key.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(endpoint = %self.endpoint.base_url, file = %name, "spilled payload's API key is no longer configured; dropped");
                            continue;
                        }
                    }
                    self.stats.spill_replayed.fetch_add(1, Ordering::Relaxed);
                    let payload = Arc::new(TxPayload {
                        kind: h.kind.into(),
                        path: h.path.into(),
                        body,
                        headers: h.headers.into_iter().map(|(k, v)| (k.into(), v)).collect(),
                        created_ms: h.created_ms,
                    });
                    return Some(Transaction { payload, window: None, key_index, attempts: 0, spill_file: Some(name) });
                }
                Err(e) => {
                    self.stats.dropped_spill_corrupt.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(endpoint = %self.endpoint.base_url, file = %name, error = %e, "skipped an unreadable spill file (deleted)");
                }
            }
        }
        None
    }

    fn has_work(&self, draining: bool) -> bool {
        !self.fresh.is_empty()
            || !self.queue.is_empty()
            || (!draining && self.spill.as_ref().is_some_and(|s| s.has_pending()))
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Input>, mut deadline_rx: watch::Receiver<Option<Instant>>) {
        let mut tasks: JoinSet<(u64, bool, Outcome)> = JoinSet::new();
        let mut draining = false;
        let mut deadline: Option<Instant> = None;
        loop {
            // Dispatch as much as the concurrency limit and the breaker allow.
            let mut wait_breaker = None;
            while self.in_flight.len() < self.s.max_concurrent && self.has_work(draining) {
                let now = Instant::now();
                let probe = match self.breaker.permit(now) {
                    Permit::Send => false,
                    Permit::Probe => true,
                    Permit::Wait(until) => {
                        wait_breaker = until;
                        break;
                    }
                };
                let Some(t) = self.next_transaction(draining) else {
                    if probe {
                        self.breaker.probe_abandoned(now);
                    }
                    break;
                };
                if t.attempts > 0 {
                    self.stats.retried.fetch_add(1, Ordering::Relaxed);
                }
                let id = self.next_id;
                self.next_id += 1;
                let client = self.client.clone();
                let url = format!("{}{}", self.endpoint.base_url, t.payload.path);
                let key = t.key_index.and_then(|i| self.endpoint.api_keys.get(i as usize).cloned());
                let payload = t.payload.clone();
                let timeout = self.s.timeout;
                let attempt = t.attempts + 1;
                self.in_flight.insert(id, t);
                tasks.spawn(async move {
                    let outcome = send(&client, &url, &payload, key.as_deref(), timeout, attempt).await;
                    (id, probe, outcome)
                });
                if probe {
                    break;
                }
            }

            if draining && self.fresh.is_empty() && self.queue.is_empty() && self.in_flight.is_empty() {
                return;
            }
            if let Some(d) = deadline {
                let now = Instant::now();
                // Give up at the deadline, or earlier when the breaker will
                // not let anything out before it.
                let hopeless = self.in_flight.is_empty() && self.breaker.blocked_until().is_some_and(|u| u >= d);
                if now >= d || hopeless {
                    tasks.abort_all();
                    self.finish_at_deadline();
                    return;
                }
            }
            let wake = match (wait_breaker.or(self.breaker.blocked_until()), deadline) {
                (Some(b), Some(d)) => Some(b.min(d)),
                (b, d) => b.or(d),
            };
            tokio::select! {
                msg = rx.recv(), if !draining => match msg {
                    Some(p) => self.accept(p),
                    None => draining = true,
                },
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok((id, probe, outcome)) = done {
                        if let Some(t) = self.in_flight.remove(&id) {
                            self.complete(t, probe, outcome);
                        }
                    }
                }
                _ = sleep_until_opt(wake) => {}
                _ = self.shed_wake.notified() => self.shed(),
                changed = deadline_rx.changed(), if deadline.is_none() => {
                    deadline = if changed.is_ok() { *deadline_rx.borrow() } else { Some(Instant::now()) };
                }
            }
        }
    }

    fn accept(&mut self, (p, share): Input) {
        let n_keys = self.endpoint.api_keys.len();
        let keys: Vec<Option<u32>> = if n_keys == 0 { vec![None] } else { (0..n_keys as u32).map(Some).collect() };
        for k in keys {
            self.stats.input.fetch_add(1, Ordering::Relaxed);
            self.stats.input_bytes.fetch_add(p.body.len() as u64, Ordering::Relaxed);
            let t = Transaction {
                payload: p.clone(),
                window: Some(share.clone()),
                key_index: k,
                attempts: 0,
                spill_file: None,
            };
            if self.breaker.errors() > 0 {
                self.enqueue(t, false);
            } else {
                self.fresh.push_back(t);
            }
        }
    }

    /// The endpoint is failing: its unsent transactions join the retry
    /// queue (and leave the window), after the failed one.
    fn demote_fresh(&mut self) {
        while let Some(t) = self.fresh.pop_front() {
            self.enqueue(t, false);
        }
    }

    fn complete(&mut self, mut t: Transaction, probe: bool, outcome: Outcome) {
        let now = Instant::now();
        match outcome {
            Outcome::Success => {
                self.stats.success.fetch_add(1, Ordering::Relaxed);
                self.stats.success_bytes.fetch_add(t.payload.body.len() as u64, Ordering::Relaxed);
                self.done(&t);
                let was_failing = self.breaker.errors() > 0;
                self.breaker.report(true, probe, now, fastrand::f64());
                if was_failing && self.breaker.errors() == 0 {
                    tracing::info!(endpoint = %self.endpoint.base_url, "endpoint recovered");
                }
            }
            Outcome::Rejected(code, body) => {
                self.stats.dropped_rejected.fetch_add(1, Ordering::Relaxed);
                self.done(&t);
                if self.rejected_logged.insert(code) {
                    tracing::error!(endpoint = %self.endpoint.base_url, status = code, kind = %t.payload.kind, response = %body,
                        "intake rejected a payload; dropped, not retried (logged once per status; see dropped_rejected)");
                }
                self.breaker.report(true, probe, now, fastrand::f64());
            }
            Outcome::Retry(kind, why) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let c = match kind {
                    ErrorKind::Timeout => &self.stats.errors_timeout,
                    ErrorKind::Connection => &self.stats.errors_connection,
                    ErrorKind::Tls => &self.stats.errors_tls,
                    ErrorKind::Http => &self.stats.errors_http,
                };
                c.fetch_add(1, Ordering::Relaxed);
                t.attempts += 1;
                let before = self.breaker.errors();
                self.breaker.report(false, probe, now, fastrand::f64());
                if before == 0 || probe {
                    tracing::warn!(endpoint = %self.endpoint.base_url, kind = %t.payload.kind, attempt = t.attempts, error = %why,
                        backoff_errors = self.breaker.errors(), "send failed; will retry");
                } else {
                    tracing::debug!(endpoint = %self.endpoint.base_url, error = %why, "send failed; will retry");
                }
                self.stats.requeued.fetch_add(1, Ordering::Relaxed);
                self.enqueue(t, true);
                if self.breaker.errors() > 0 {
                    self.demote_fresh();
                }
            }
        }
    }

    /// The transaction reached a final state: forget its disk copy.
    fn done(&mut self, t: &Transaction) {
        if let (Some(spill), Some(name)) = (self.spill.as_mut(), &t.spill_file) {
            spill.remove(name);
        }
    }

    /// Deadline reached: spill (or count as dropped) everything pending,
    /// including requests still in flight (they may have been delivered:
    /// at-least-once).
    fn finish_at_deadline(&mut self) {
        let mut pending: Vec<Transaction> = self.in_flight.drain().map(|(_, t)| t).collect();
        pending.extend(self.fresh.drain(..));
        while let Some(t) = self.pop_queue() {
            pending.push(t);
        }
        if pending.is_empty() {
            return;
        }
        let n = pending.len();
        let mut kept = 0u64;
        let mut lost = 0u64;
        for t in pending {
            match self.spill.as_mut() {
                None => lost += 1,
                Some(spill) => {
                    if let Some(name) = &t.spill_file {
                        spill.check_in(name);
                        kept += 1;
                        continue;
                    }
                    match spill.store(&header_of(&t), &t.payload.body) {
                        Ok(r) if r.stored.is_some() => {
                            self.stats.dropped_storage_full.fetch_add(r.evicted, Ordering::Relaxed);
                            self.stats.spilled.fetch_add(1, Ordering::Relaxed);
                            kept += 1;
                        }
                        Ok(r) => {
                            self.stats.dropped_storage_full.fetch_add(r.evicted + 1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            self.stats.dropped_storage_full.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(endpoint = %self.endpoint.base_url, error = %e, "cannot write spill file at shutdown");
                        }
                    }
                }
            }
        }
        self.stats.dropped_shutdown.fetch_add(lost, Ordering::Relaxed);
        if lost > 0 {
            tracing::error!(endpoint = %self.endpoint.base_url, payloads = lost, "shutdown timeout: payloads not delivered and storage is off; dropped");
        }
        if kept > 0 {
            tracing::warn!(endpoint = %self.endpoint.base_url, payloads = kept, pending = n, "shutdown timeout: undelivered payloads kept on disk for the next start");
        }
    }
}

fn header_of(t: &Transaction) -> SpillHeader {
    SpillHeader {
        kind: t.payload.kind.to_string(),
        path: t.payload.path.to_string(),
        headers: t.payload.headers.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        key_index: t.key_index,
        created_ms: t.payload.created_ms,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
