//! Delivery of finished payloads to every configured intake.
//!
//! One transaction per payload × endpoint × API key. Each endpoint has its
//! own worker (queue, concurrency limit, circuit breaker), so a failing
//! intake never delays another. Runs on a dedicated tokio thread; payload
//! bodies are `Bytes` shared by all transactions and handed to hyper
//! without copying.

pub mod tls;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{Endpoint, TlsSettings, AGENT_VERSION};

/// A finished request body and its headers.
#[derive(Debug, Clone)]
pub struct Payload {
    /// Short kind label for logs and telemetry (`series_v2`, `events`, ...).
    pub kind: &'static str,
    /// Request path (`/api/v2/series`).
    pub path: &'static str,
    /// Compressed body.
    pub body: Bytes,
    /// Serializer headers (`Content-Type`, `Content-Encoding`, `DD-Agent-Payload`).
    pub headers: Vec<(&'static str, String)>,
}

/// Forwarder settings.
#[derive(Debug, Clone)]
pub struct ForwarderSettings {
    /// Every destination (main first).
    pub endpoints: Vec<Endpoint>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Bytes of payloads kept per endpoint for retry.
    pub retry_queue_max_bytes: usize,
    /// Concurrent requests per endpoint.
    pub max_concurrent_requests: usize,
    /// Payloads waiting to enter an endpoint worker.
    pub queue_payloads: usize,
    /// TLS trust.
    pub tls: TlsSettings,
}

/// Counters shared with telemetry; not on the per-datagram path.
#[derive(Debug, Default)]
pub struct ForwarderStats {
    /// Transactions accepted by an intake (2xx/3xx).
    pub success: AtomicU64,
    /// Bytes of successful transactions.
    pub success_bytes: AtomicU64,
    /// Transactions dropped because the intake rejected them (400/403/413).
    pub dropped_rejected: AtomicU64,
    /// Transactions dropped because the retry queue was full (oldest first).
    pub dropped_retry_queue_full: AtomicU64,
    /// Transactions still pending when the shutdown timeout expired.
    pub dropped_shutdown: AtomicU64,
    /// Failed attempts that will be retried.
    pub errors: AtomicU64,
    /// Transactions created.
    pub input: AtomicU64,
}

/// Why the forwarder could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Thread or runtime creation failed.
    #[error("cannot start forwarder: {0}")]
    Start(std::io::Error),
}

/// Handle to the running forwarder thread.
pub struct Forwarder {
    inputs: Vec<mpsc::Sender<Arc<Payload>>>,
    deadline_tx: tokio::sync::watch::Sender<Option<Instant>>,
    thread: std::thread::JoinHandle<()>,
    /// Shared counters.
    pub stats: Arc<ForwarderStats>,
}

type HttpClient = Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>;

impl Forwarder {
    /// Starts the forwarder thread.
    pub fn start(settings: ForwarderSettings) -> Result<Self, ForwarderError> {
        let tls = tls::client_config(&settings.tls)?;
        let stats = Arc::new(ForwarderStats::default());
        let (deadline_tx, deadline_rx) = tokio::sync::watch::channel(None);
        let mut inputs = Vec::new();
        let mut receivers = Vec::new();
        for _ in &settings.endpoints {
            let (tx, rx) = mpsc::channel(settings.queue_payloads.max(1));
            inputs.push(tx);
            receivers.push(rx);
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ForwarderError::Start)?;
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("edgestat-forwarder".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
                    http.enforce_http(false);
                    http.set_nodelay(true);
                    let connector = hyper_rustls::HttpsConnectorBuilder::new()
                        .with_tls_config(tls)
                        .https_or_http()
                        .enable_http1()
                        .wrap_connector(http);
                    let client: HttpClient = Client::builder(TokioExecutor::new())
                        .pool_idle_timeout(Duration::from_secs(90))
                        .build(connector);
                    let mut workers = JoinSet::new();
                    for (ep, rx) in settings.endpoints.iter().cloned().zip(receivers) {
                        let w = EndpointWorker::new(ep, &settings, client.clone(), st.clone());
                        workers.spawn(w.run(rx, deadline_rx.clone()));
                    }
                    while workers.join_next().await.is_some() {}
                });
            })
            .map_err(ForwarderError::Start)?;
        Ok(Self { inputs, deadline_tx, thread, stats })
    }

    /// Queues a payload for every endpoint. Blocks (backpressure on the
    /// flusher) rather than dropping when the input queue is full.
    pub fn submit(&self, payload: Payload) {
        let p = Arc::new(payload);
        for tx in &self.inputs {
            if tx.blocking_send(p.clone()).is_err() {
                tracing::error!("forwarder is gone; payload lost");
            }
        }
    }

    /// Stops accepting payloads and delivers what is pending until
    /// `timeout`; what is left then is counted as dropped.
    pub fn shutdown(self, timeout: Duration) {
        let _ = self.deadline_tx.send(Some(Instant::now() + timeout));
        drop(self.inputs);
        let _ = self.thread.join();
    }
}

/// A payload bound to one endpoint and one API key.
struct Transaction {
    payload: Arc<Payload>,
    api_key: Option<String>,
    attempts: u32,
}

enum Outcome {
    Success,
    /// 400/403/413: the intake will never take it.
    Rejected(u16),
    /// Anything else: try again later.
    Retry(String),
}

/// Circuit breaker with the Agent's defaults (forwarder.md §4).
struct Breaker {
    errors: u32,
    blocked_until: Option<Instant>,
}

const BACKOFF_BASE_S: f64 = 2.0;
const BACKOFF_MAX_S: f64 = 64.0;
const MAX_ERRORS: u32 = 6;
const RECOVERY_INTERVAL: u32 = 2;

impl Breaker {
    fn backoff(n: u32) -> Duration {
        if n == 0 {
            return Duration::ZERO;
        }
        let t = BACKOFF_BASE_S * 2f64.powi(n as i32);
        if t > BACKOFF_MAX_S {
            return Duration::from_secs_f64(BACKOFF_MAX_S);
        }
        let lo = t / 2.0;
        Duration::from_secs_f64(lo + fastrand::f64() * (t.min(BACKOFF_MAX_S) - lo))
    }

    fn on_error(&mut self, now: Instant) {
        self.errors = (self.errors + 1).min(MAX_ERRORS);
        self.blocked_until = Some(now + Self::backoff(self.errors));
    }

    fn on_success(&mut self, now: Instant) {
        self.errors = self.errors.saturating_sub(RECOVERY_INTERVAL);
        self.blocked_until = if self.errors == 0 { None } else { Some(now + Self::backoff(self.errors)) };
    }

    fn is_blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|t| now < t)
    }
}

struct EndpointWorker {
    endpoint: Endpoint,
    client: HttpClient,
    stats: Arc<ForwarderStats>,
    timeout: Duration,
    max_concurrent: usize,
    retry_max_bytes: usize,
    queue: VecDeque<Transaction>,
    queued_bytes: usize,
    breaker: Breaker,
    rejected_logged: [bool; 3],
}

impl EndpointWorker {
    fn new(endpoint: Endpoint, s: &ForwarderSettings, client: HttpClient, stats: Arc<ForwarderStats>) -> Self {
        Self {
            endpoint,
            client,
            stats,
            timeout: s.timeout,
            max_concurrent: s.max_concurrent_requests.max(1),
            retry_max_bytes: s.retry_queue_max_bytes,
            queue: VecDeque::new(),
            queued_bytes: 0,
            breaker: Breaker { errors: 0, blocked_until: None },
            rejected_logged: [false; 3],
        }
    }

    fn enqueue(&mut self, t: Transaction, front: bool) {
        let len = t.payload.body.len();
        // Bounded in bytes: evict the oldest until the new one fits.
        while self.queued_bytes + len > self.retry_max_bytes && !self.queue.is_empty() {
            if let Some(old) = self.queue.pop_front() {
                self.queued_bytes -= old.payload.body.len();
                self.stats.dropped_retry_queue_full.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(endpoint = %self.endpoint.base_url, kind = old.payload.kind, "retry queue full: dropped the oldest payload");
            }
        }
        self.queued_bytes += len;
        if front {
            self.queue.push_front(t);
        } else {
            self.queue.push_back(t);
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Arc<Payload>>, mut deadline_rx: tokio::sync::watch::Receiver<Option<Instant>>) {
        let mut in_flight: JoinSet<(Transaction, Outcome)> = JoinSet::new();
        let mut input_open = true;
        let mut deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            // Half-open: while blocked nothing is sent; once the time has
            // passed one probe goes out alone.
            let limit = if self.breaker.errors > 0 { 1 } else { self.max_concurrent };
            while in_flight.len() < limit && !self.breaker.is_blocked(now) {
                let Some(t) = self.queue.pop_front() else { break };
                self.queued_bytes -= t.payload.body.len();
                let client = self.client.clone();
                let url = format!("{}{}", self.endpoint.base_url, t.payload.path);
                let timeout = self.timeout;
                in_flight.spawn(async move {
                    let outcome = send(&client, &url, &t, timeout).await;
                    (t, outcome)
                });
            }
            if !input_open && self.queue.is_empty() && in_flight.is_empty() {
                return;
            }
            if let Some(d) = deadline {
                if now >= d {
                    let left = self.queue.len() + in_flight.len();
                    if left > 0 {
                        self.stats.dropped_shutdown.fetch_add(left as u64, Ordering::Relaxed);
                        tracing::error!(endpoint = %self.endpoint.base_url, payloads = left, "shutdown timeout: payloads not delivered");
                    }
                    return;
                }
            }
            let wake = match (self.breaker.blocked_until, deadline) {
                (Some(b), Some(d)) => Some(b.min(d)),
                (b, d) => b.or(d),
            };
            tokio::select! {
                msg = rx.recv(), if input_open => match msg {
                    Some(p) => {
                        let keys: Vec<Option<String>> = if self.endpoint.api_keys.is_empty() {
                            vec![None]
                        } else {
                            self.endpoint.api_keys.iter().cloned().map(Some).collect()
                        };
                        for k in keys {
                            self.stats.input.fetch_add(1, Ordering::Relaxed);
                            self.enqueue(Transaction { payload: p.clone(), api_key: k, attempts: 0 }, false);
                        }
                    }
                    None => input_open = false,
                },
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    let Ok((mut t, outcome)) = done else { continue };
                    let now = Instant::now();
                    match outcome {
                        Outcome::Success => {
                            self.stats.success.fetch_add(1, Ordering::Relaxed);
                            self.stats.success_bytes.fetch_add(t.payload.body.len() as u64, Ordering::Relaxed);
                            self.breaker.on_success(now);
                        }
                        Outcome::Rejected(code) => {
                            self.stats.dropped_rejected.fetch_add(1, Ordering::Relaxed);
                            let slot = match code { 400 => 0, 403 => 1, _ => 2 };
                            if !self.rejected_logged[slot] {
                                self.rejected_logged[slot] = true;
                                tracing::error!(endpoint = %self.endpoint.base_url, status = code, kind = t.payload.kind, "intake rejected a payload; dropped (logged once per status)");
                            }
                            self.breaker.on_success(now);
                        }
                        Outcome::Retry(why) => {
                            self.stats.errors.fetch_add(1, Ordering::Relaxed);
                            t.attempts += 1;
                            tracing::warn!(endpoint = %self.endpoint.base_url, kind = t.payload.kind, attempt = t.attempts, error = %why, "send failed; will retry");
                            self.breaker.on_error(now);
                            self.enqueue(t, true);
                        }
                    }
                }
                _ = sleep_until_opt(wake) => {}
                changed = deadline_rx.changed(), if deadline.is_none() => {
                    if changed.is_ok() {
                        deadline = *deadline_rx.borrow();
                    } else {
                        deadline = Some(Instant::now());
                    }
                }
            }
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn send(client: &HttpClient, url: &str, t: &Transaction, timeout: Duration) -> Outcome {
    let mut req = hyper::Request::post(url)
        .header("DD-Agent-Version", AGENT_VERSION)
        .header("User-Agent", format!("datadog-agent/{AGENT_VERSION}"));
    if let Some(k) = &t.api_key {
        req = req.header("DD-Api-Key", k);
    }
    for (name, value) in &t.payload.headers {
        req = req.header(*name, value);
    }
    let req = match req.body(Full::new(t.payload.body.clone())) {
        Ok(r) => r,
        Err(e) => return Outcome::Rejected(classify_build_error(&e)),
    };
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Outcome::Retry(format!("timeout after {timeout:?}")),
        Ok(Err(e)) => Outcome::Retry(error_chain(&e)),
        Ok(Ok(resp)) => {
            let code = resp.status().as_u16();
            // Drain the body so the connection can be reused.
            let _ = tokio::time::timeout(timeout, http_body_util::BodyExt::collect(resp.into_body())).await;
            match code {
                c if c < 400 => Outcome::Success,
                400 | 403 | 413 => Outcome::Rejected(code),
                c => Outcome::Retry(format!("HTTP {c}")),
            }
        }
    }
}

fn classify_build_error(e: &http::Error) -> u16 {
    tracing::error!(error = %e, "cannot build request; dropped");
    400
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
