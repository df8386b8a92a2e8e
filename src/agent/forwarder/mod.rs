//! Delivery of finished payloads to every configured intake.
//!
//! One transaction per payload × endpoint × API key. Each endpoint has its
//! own worker (queue, concurrency limit, circuit breaker), so a failing
//! intake never delays another. Runs on a dedicated tokio thread; payload
//! bodies are `Bytes` shared by all transactions and handed to hyper
//! without copying.

pub mod backoff;
pub mod connect;
pub mod spill;
pub mod tls;
pub mod validate;
pub mod window;
mod worker;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::agent::config::{Endpoint, TlsSettings, AGENT_VERSION};
use connect::HttpClient;

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
    /// Circuit breaker / backoff knobs.
    pub backoff: backoff::BackoffSettings,
    /// Disk spill directory; `None` or a zero budget = storage off.
    pub storage_path: Option<std::path::PathBuf>,
    /// Disk spill budget in bytes, shared by all endpoints.
    pub storage_max_bytes: u64,
    /// CONNECT proxies.
    pub proxy: connect::ProxySettings,
    /// API key validation period; `None` turns validation off (orchestrator forwarder).
    pub apikey_validation_interval: Option<Duration>,
    /// Bound on payloads handed over and not yet settled.
    pub window: window::WindowSettings,
}

impl ForwarderSettings {
    /// Settings from the validated configuration, for `endpoints`.
    pub fn from_config(cfg: &crate::agent::config::Config, endpoints: Vec<Endpoint>) -> Self {
        let f = &cfg.forwarder;
        Self {
            endpoints,
            timeout: cfg.forwarder_timeout,
            retry_queue_max_bytes: cfg.retry_queue_max_bytes,
            max_concurrent_requests: f.max_concurrent_requests,
            queue_payloads: cfg.forwarder_queue_payloads,
            tls: cfg.tls.clone(),
            backoff: backoff::BackoffSettings {
                base_s: f.backoff_base_s,
                max_s: f.backoff_max_s,
                factor: f.backoff_factor,
                recovery_interval: f.recovery_interval,
                recovery_reset: f.recovery_reset,
            },
            // The Agent defaults to `<run_path>/transactions_to_retry`.
            storage_path: cfg
                .storage_path
                .clone()
                .or_else(|| (cfg.storage_max_bytes > 0).then(|| cfg.data_dir.join("transactions_to_retry"))),
            storage_max_bytes: cfg.storage_max_bytes,
            proxy: connect::ProxySettings {
                https: f.proxy_https.clone(),
                http: f.proxy_http.clone(),
                no_proxy: f.no_proxy.clone(),
            },
            apikey_validation_interval: Some(f.apikey_validation_interval),
            window: window::WindowSettings {
                max_bytes: cfg.forwarder_window_bytes,
                max_wait: cfg.forwarder_window_max_wait,
            },
        }
    }
}

/// Counters shared with telemetry (names follow the Agent's
/// `transactions.*`); not on the per-datagram path.
#[derive(Debug, Default)]
pub struct ForwarderStats {
    /// Transactions accepted by an intake (2xx/3xx).
    pub success: AtomicU64,
    /// Bytes of successful transactions.
    pub success_bytes: AtomicU64,
    /// Transactions dropped because the intake rejected them (400/403/413).
    pub dropped_rejected: AtomicU64,
    /// Transactions dropped because the retry queue was full and storage is off (oldest first).
    pub dropped_retry_queue_full: AtomicU64,
    /// Transactions still pending at the shutdown deadline with storage off.
    pub dropped_shutdown: AtomicU64,
    /// Unsent transactions dropped (storage off) because the flusher waited
    /// longer than `EDGESTAT_FORWARDER_WINDOW_MAX_WAIT` for room.
    pub dropped_intake_too_slow: AtomicU64,
    /// Unsent transactions written to disk (storage on) for the same reason
    /// (also counted in `spilled`).
    pub spilled_intake_too_slow: AtomicU64,
    /// Times the flusher waited past `EDGESTAT_FORWARDER_WINDOW_MAX_WAIT` and asked for shedding.
    pub window_shed_episodes: AtomicU64,
    /// Bytes of payloads handed over and not yet settled (gauge).
    pub window_bytes: AtomicU64,
    /// `EDGESTAT_FORWARDER_WINDOW_BYTES` (gauge).
    pub window_max_bytes: AtomicU64,
    /// Failed attempts that will be retried.
    pub errors: AtomicU64,
    /// Transactions created.
    pub input: AtomicU64,
    /// Bytes of transactions created.
    pub input_bytes: AtomicU64,
    /// Retryable failures: request timeout (`DD_FORWARDER_TIMEOUT`).
    pub errors_timeout: AtomicU64,
    /// Retryable failures: connect / DNS / I/O / proxy.
    pub errors_connection: AtomicU64,
    /// Retryable failures: TLS handshake or certificate.
    pub errors_tls: AtomicU64,
    /// Retryable failures: HTTP status other than 2xx/3xx/400/403/413.
    pub errors_http: AtomicU64,
    /// Failed transactions put back in the retry queue.
    pub requeued: AtomicU64,
    /// Sends of a transaction that had failed before.
    pub retried: AtomicU64,
    /// Bytes currently in the retry queues (gauge).
    pub retry_queue_bytes: AtomicU64,
    /// Transactions currently in the retry queues (gauge).
    pub retry_queue_payloads: AtomicU64,
    /// Transactions written to disk.
    pub spilled: AtomicU64,
    /// Transactions read back from disk.
    pub spill_replayed: AtomicU64,
    /// Transactions dropped because the disk budget was full (oldest files first) or a write failed.
    pub dropped_storage_full: AtomicU64,
    /// Spill files skipped because they were corrupt or truncated.
    pub dropped_spill_corrupt: AtomicU64,
    /// Spilled transactions whose API key index is no longer configured.
    pub dropped_spill_unknown_key: AtomicU64,
    /// API key checks answered 200.
    pub apikey_valid: AtomicU64,
    /// API key checks answered 403.
    pub apikey_invalid: AtomicU64,
    /// API key checks with another answer or none.
    pub apikey_unknown: AtomicU64,
}

impl ForwarderStats {
    /// Every counter with its name (for logs and telemetry export).
    pub fn fields(&self) -> Vec<(&'static str, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("input", g(&self.input)),
            ("input_bytes", g(&self.input_bytes)),
            ("success", g(&self.success)),
            ("success_bytes", g(&self.success_bytes)),
            ("errors", g(&self.errors)),
            ("errors_timeout", g(&self.errors_timeout)),
            ("errors_connection", g(&self.errors_connection)),
            ("errors_tls", g(&self.errors_tls)),
            ("errors_http", g(&self.errors_http)),
            ("requeued", g(&self.requeued)),
            ("retried", g(&self.retried)),
            ("retry_queue_bytes", g(&self.retry_queue_bytes)),
            ("retry_queue_payloads", g(&self.retry_queue_payloads)),
            ("dropped", self.dropped_total()),
            ("dropped_rejected", g(&self.dropped_rejected)),
            ("dropped_retry_queue_full", g(&self.dropped_retry_queue_full)),
            ("dropped_storage_full", g(&self.dropped_storage_full)),
            ("dropped_spill_corrupt", g(&self.dropped_spill_corrupt)),
            ("dropped_spill_unknown_key", g(&self.dropped_spill_unknown_key)),
            ("dropped_shutdown", g(&self.dropped_shutdown)),
            ("dropped_intake_too_slow", g(&self.dropped_intake_too_slow)),
            ("spilled", g(&self.spilled)),
            ("spilled_intake_too_slow", g(&self.spilled_intake_too_slow)),
            ("window_shed_episodes", g(&self.window_shed_episodes)),
            ("window_bytes", g(&self.window_bytes)),
            ("window_max_bytes", g(&self.window_max_bytes)),
            ("spill_replayed", g(&self.spill_replayed)),
            ("apikey_valid", g(&self.apikey_valid)),
            ("apikey_invalid", g(&self.apikey_invalid)),
            ("apikey_unknown", g(&self.apikey_unknown)),
        ]
    }

    /// Transactions dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        g(&self.dropped_rejected)
            + g(&self.dropped_retry_queue_full)
            + g(&self.dropped_storage_full)
            + g(&self.dropped_spill_corrupt)
            + g(&self.dropped_spill_unknown_key)
            + g(&self.dropped_shutdown)
            + g(&self.dropped_intake_too_slow)
    }

    /// `name=value` pairs on one line.
    pub fn summary(&self) -> String {
        self.fields().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }
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
    /// The spill directory cannot be used.
    #[error("DD_FORWARDER_STORAGE_PATH {path}: {source}")]
    Storage {
        /// Directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Handle to the running forwarder thread.
pub struct Forwarder {
    inputs: Vec<mpsc::Sender<Input>>,
    window: Arc<window::Window>,
    deadline_tx: tokio::sync::watch::Sender<Option<Instant>>,
    thread: std::thread::JoinHandle<()>,
    /// The forwarder thread's runtime (for the health beat).
    runtime: tokio::runtime::Handle,
    /// Shared counters.
    pub stats: Arc<ForwarderStats>,
}

impl Forwarder {
    /// Starts the forwarder thread.
    pub fn start(settings: ForwarderSettings) -> Result<Self, ForwarderError> {
        let tls = tls::client_config(&settings.tls)?;
        let stats = Arc::new(ForwarderStats::default());
        let window = window::Window::new(settings.window, stats.clone());
        let (deadline_tx, deadline_rx) = tokio::sync::watch::channel(None);
        let mut spills = Vec::new();
        let storage_on = settings.storage_max_bytes > 0 && settings.storage_path.is_some();
        let budget = spill::DiskBudget::new(settings.storage_max_bytes);
        if let (Some(p), true) = (&settings.storage_path, storage_on) {
            tracing::info!(path = %p.display(), max_bytes = settings.storage_max_bytes, "disk spill on");
        }
        for ep in &settings.endpoints {
            let dir = match (&settings.storage_path, storage_on) {
                (Some(root), true) => Some(
                    spill::SpillDir::open(root, &ep.base_url, budget.clone())
                        .map_err(|e| ForwarderError::Storage { path: root.display().to_string(), source: e })?,
                ),
                _ => None,
            };
            if let Some(d) = &dir {
                if !d.is_empty() {
                    tracing::info!(endpoint = %ep.base_url, files = d.len(), "spilled payloads found on disk; they will be replayed");
                }
            }
            spills.push(dir);
        }
        let mut inputs = Vec::new();
        let mut receivers = Vec::new();
        for _ in &settings.endpoints {
            let (tx, rx) = mpsc::channel(settings.queue_payloads.max(1));
            inputs.push(tx);
            receivers.push(rx);
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ForwarderError::Start)?;
        let st = stats.clone();
        let runtime = rt.handle().clone();
        let win = window.clone();
        let thread = std::thread::Builder::new()
            .name("edgestat-forwarder".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut workers = JoinSet::new();
                    for ((ep, rx), spill) in settings.endpoints.iter().cloned().zip(receivers).zip(spills) {
                        let (client, proxy) = connect::client_for(&ep.base_url, tls.clone(), &settings.proxy);
                        if let Some(p) = proxy {
                            tracing::info!(endpoint = %ep.base_url, proxy = %p, "sending through a CONNECT proxy");
                        }
                        if let Some(interval) = settings.apikey_validation_interval {
                            tokio::spawn(validate::run(
                                client.clone(),
                                ep.base_url.clone(),
                                ep.api_keys.clone(),
                                interval,
                                st.clone(),
                            ));
                        }
                        let ws = worker::WorkerSettings {
                            timeout: settings.timeout,
                            max_concurrent: settings.max_concurrent_requests.max(1),
                            retry_max_bytes: settings.retry_queue_max_bytes,
                            backoff: settings.backoff,
                        };
                        let w = worker::Worker::new(ep, client, st.clone(), ws, spill, win.clone());
                        workers.spawn(w.run(rx, deadline_rx.clone()));
                    }
                    while workers.join_next().await.is_some() {}
                });
                // Do not wait for a resolver thread stuck in getaddrinfo.
                rt.shutdown_timeout(Duration::from_millis(200));
            })
            .map_err(ForwarderError::Start)?;
        Ok(Self { inputs, window, deadline_tx, thread, runtime, stats })
    }

    /// Beats `component` every `period` from the forwarder's own thread: a
    /// wedged or ended forwarder runtime stops beating and shows unhealthy.
    pub fn report_health(&self, component: Arc<crate::agent::health::Component>, period: Duration) {
        let period = period.max(Duration::from_millis(10));
        self.runtime.spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                component.beat();
            }
        });
    }

    /// Queues a payload for every endpoint. Blocks (backpressure on the
    /// flusher) rather than dropping while the in-flight window or an
    /// input queue is full.
    pub fn submit(&self, payload: Payload) {
        self.submit_inner(payload, true)
    }

    /// Like `submit` but never waits for the window (the final flush: its
    /// payloads are built already; the shutdown deadline bounds them).
    pub fn submit_no_wait(&self, payload: Payload) {
        self.submit_inner(payload, false)
    }

    /// A new flush starts: the window's stall clock restarts.
    pub fn new_batch(&self) {
        self.window.new_batch();
    }

    /// The window, so a stop request can end a wait for room.
    pub fn window(&self) -> Arc<window::Window> {
        self.window.clone()
    }

    fn submit_inner(&self, payload: Payload, wait: bool) {
        let share = Arc::new(self.window.acquire(payload.body.len(), wait));
        let p = Arc::new(TxPayload {
            kind: Cow::Borrowed(payload.kind),
            path: Cow::Borrowed(payload.path),
            body: payload.body,
            headers: payload.headers.into_iter().map(|(k, v)| (Cow::Borrowed(k), v)).collect(),
            created_ms: unix_ms(),
        });
        for tx in &self.inputs {
            if tx.blocking_send((p.clone(), share.clone())).is_err() {
                tracing::error!("forwarder is gone; payload lost");
            }
        }
    }

    /// Stops accepting payloads and delivers what is pending until
    /// `timeout`; what is left then is spilled to disk when storage is on,
    /// else counted as dropped. Logs every counter on one line.
    pub fn shutdown(self, timeout: Duration) {
        let _ = self.deadline_tx.send(Some(Instant::now() + timeout));
        drop(self.inputs);
        let _ = self.thread.join();
        tracing::info!("forwarder stopped: {}", self.stats.summary());
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A payload as the forwarder keeps it: shared by all its transactions,
/// and rebuildable from a spill file.
#[derive(Debug)]
pub(crate) struct TxPayload {
    kind: Cow<'static, str>,
    path: Cow<'static, str>,
    body: Bytes,
    headers: Vec<(Cow<'static, str>, String)>,
    created_ms: u64,
}

/// What the forwarder's input queues carry: a payload and its window share.
pub(crate) type Input = (Arc<TxPayload>, Arc<window::Share>);

/// A payload bound to one endpoint and one API key.
pub(crate) struct Transaction {
    payload: Arc<TxPayload>,
    /// Its payload's window share while it is unsent or in flight for the
    /// first time; `None` once it failed (the retry queue bounds it then).
    window: Option<Arc<window::Share>>,
    /// Index in the endpoint's key list; `None`: no key.
    key_index: Option<u32>,
    attempts: u32,
    /// Its file when it is also on disk.
    spill_file: Option<String>,
}

impl Transaction {
    fn len(&self) -> usize {
        self.payload.body.len()
    }
}

/// Class of a retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    Timeout,
    Connection,
    Tls,
    Http,
}

pub(crate) enum Outcome {
    Success,
    /// 400/403/413: the intake will never take it (status, start of the body).
    Rejected(u16, String),
    /// Anything else: try again later.
    Retry(ErrorKind, String),
}

/// `X-DD-Agent-Attempts`: present on process-like payloads (orchestrator);
/// the forwarder rewrites it with the number of this attempt, as the Agent.
const ATTEMPTS_HEADER: &str = "X-DD-Agent-Attempts";

async fn send(
    client: &HttpClient,
    url: &str,
    p: &TxPayload,
    api_key: Option<&str>,
    timeout: Duration,
    attempt: u32,
) -> Outcome {
    // Error texts end up in logs: an intake or a proxy echoing the key must
    // not put it there.
    let hide =
        |text: String| crate::core::redact::scrub(&text, &api_key.map(str::to_string).into_iter().collect::<Vec<_>>());
    let mut req = hyper::Request::post(url)
        .header("DD-Agent-Version", AGENT_VERSION)
        .header("User-Agent", format!("datadog-agent/{AGENT_VERSION}"));
    if let Some(k) = api_key {
        req = req.header("DD-Api-Key", k);
    }
    for (name, value) in &p.headers {
        if name.as_ref().eq_ignore_ascii_case(ATTEMPTS_HEADER) {
            req = req.header(name.as_ref(), attempt.to_string());
        } else {
            req = req.header(name.as_ref(), value);
        }
    }
    let req = match req.body(Full::new(p.body.clone())) {
        Ok(r) => r,
        Err(e) => return Outcome::Rejected(classify_build_error(&e), hide(e.to_string())),
    };
    let fut = async {
        let resp = client.request(req).await?;
        let code = resp.status().as_u16();
        // Read the body so the connection can be reused (and 4xx explained).
        let body = http_body_util::BodyExt::collect(resp.into_body()).await.map(|b| b.to_bytes()).unwrap_or_default();
        Ok::<_, hyper_util::client::legacy::Error>((code, body))
    };
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Outcome::Retry(ErrorKind::Timeout, format!("timeout after {timeout:?}")),
        Ok(Err(e)) => {
            let chain = error_chain(&e);
            let l = chain.to_ascii_lowercase();
            let kind = if l.contains("certificate") || l.contains("tls") || l.contains("handshake") {
                ErrorKind::Tls
            } else {
                ErrorKind::Connection
            };
            Outcome::Retry(kind, hide(chain))
        }
        Ok(Ok((code, body))) => match code {
            c if c < 400 => Outcome::Success,
            400 | 403 | 413 => {
                let text = String::from_utf8_lossy(&body[..body.len().min(1000)]).into_owned();
                Outcome::Rejected(code, hide(text))
            }
            c => Outcome::Retry(ErrorKind::Http, format!("HTTP {c}")),
        },
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
