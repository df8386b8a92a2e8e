//! The operating endpoints of the local API (`EDGESTAT_API_ADDR`), read by
//! `edgestat status`, `edgestat stats` and `edgestat capture`:
//!
//! * `GET /v1/status`: the pipeline's state as JSON, built from the same
//!   sources as `/metrics` (flusher snapshot, forwarder and API counters)
//!   plus listeners, stream socket, raw forwarding and capture;
//! * `GET /v1/stats[?limit=N]`: the busiest contexts from every shard
//!   (`dogstatsd_metrics_stats_enable`), 404 when off;
//! * `POST /v1/capture` `{"duration":"30s","path":"","compress":false}`:
//!   starts a capture (409 while one runs); `GET /v1/capture`: its state.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::agent::capture::CaptureHub;
use crate::agent::forwarder::ForwarderStats;
use crate::agent::runtime::{ContextRow, Control, StreamStats};
use crate::agent::tap::ForwardStats;

/// Bound on `edgestat stats` rows.
pub const MAX_STATS_ROWS: usize = 10_000;
/// How long a shard may take to answer a statistics request.
const SHARD_ANSWER_WAIT: Duration = Duration::from_secs(2);

/// One forwarder as `status` shows it.
pub struct ForwarderInfo {
    /// `metrics` or `orchestrator`.
    pub name: &'static str,
    /// Its counters.
    pub stats: Arc<ForwarderStats>,
    /// Endpoint URLs and how many API keys each has (never the keys).
    pub endpoints: Vec<(String, usize)>,
    /// Spill folder, if any (its size is shown).
    pub storage_path: Option<std::path::PathBuf>,
}

/// Reads the flusher's published counters as status JSON.
pub type FlushView = Box<dyn Fn() -> Value + Send + Sync>;

/// Everything the operating endpoints read.
pub struct Ops {
    started: Instant,
    started_unix: i64,
    /// Listener descriptions (`udp`, `unix`, `stream`, `api`, `telemetry`).
    pub listeners: Vec<(&'static str, String)>,
    /// The flusher's counters as status JSON (`dogstatsd`, `contexts`,
    /// `flush`, `payloads`): a closure so this module does not depend on
    /// the flusher.
    pub flush: FlushView,
    /// Forwarders.
    pub forwarders: Vec<ForwarderInfo>,
    /// Traffic capture.
    pub capture: Arc<CaptureHub>,
    /// Raw forwarding target and per-shard counters.
    pub forward: Option<(String, Vec<Arc<ForwardStats>>)>,
    /// Stream socket counters.
    pub stream: Option<Arc<StreamStats>>,
    /// Per-context statistics on.
    pub metric_stats: bool,
    /// Shard control channels (set once the shards run).
    pub shards: OnceLock<Vec<crate::agent::handover::ControlSender>>,
    /// The memory limit and context budget (set once at start).
    pub memory: OnceLock<Arc<crate::agent::memory_limit::MemoryPlan>>,
    /// The kernel's drop counts of the UDP sockets (set once they are bound).
    pub udp_drops: OnceLock<Arc<crate::agent::udp_drops::UdpKernelDrops>>,
}

impl Ops {
    /// Fresh state; the clock of `uptime` starts now.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        listeners: Vec<(&'static str, String)>,
        flush: FlushView,
        forwarders: Vec<ForwarderInfo>,
        capture: Arc<CaptureHub>,
        forward: Option<(String, Vec<Arc<ForwardStats>>)>,
        stream: Option<Arc<StreamStats>>,
        metric_stats: bool,
    ) -> Self {
        Self {
            started: Instant::now(),
            started_unix: crate::agent::clock::unix_now(),
            listeners,
            flush,
            forwarders,
            capture,
            forward,
            stream,
            metric_stats,
            shards: OnceLock::new(),
            memory: OnceLock::new(),
            udp_drops: OnceLock::new(),
        }
    }

    /// `GET /v1/status`.
    pub fn status(&self) -> Value {
        let listeners: Map<String, Value> = self.listeners.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let forwarders: Vec<Value> = self.forwarders.iter().map(forwarder_json).collect();
        let mut out = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "started_unix": self.started_unix,
            "listeners": listeners,
            "forwarders": forwarders,
            "capture": self.capture.status(),
            "metrics_stats_enabled": self.metric_stats,
        });
        if let (Value::Object(o), Value::Object(f)) = (&mut out, (self.flush)()) {
            o.extend(f);
        }
        if let Some(d) = self.udp_drops.get() {
            out["udp_kernel_drops"] = json!(d.total());
        }
        if let Some(m) = self.memory.get() {
            out["memory"] = json!({
                "limit_bytes": m.limit_bytes,
                "limit_source": m.source,
                "fixed_bytes": m.fixed.total(),
                "estimated_bytes": m.estimated_bytes(),
                "context_budget_bytes": m.limit_bytes.map(|_| m.budget.byte_bound().max_bytes),
            });
        }
        if let Some(st) = &self.stream {
            let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            out["stream_socket"] = json!({
                "connections_open": g(&st.open),
                "connections_accepted": g(&st.accepted),
                "frames": g(&st.frames),
                "bad_frames": g(&st.bad_frames),
                "truncated_frames": g(&st.truncated),
                "connection_limit_waits": g(&st.connection_limit_waits),
            });
        }
        if let Some((target, shards)) = &self.forward {
            let sum = |f: fn(&ForwardStats) -> u64| shards.iter().map(|s| f(s)).sum::<u64>();
            out["statsd_forward"] = json!({
                "target": target,
                "sent": sum(|s| s.sent.load(Ordering::Relaxed)),
                "bytes": sum(|s| s.bytes.load(Ordering::Relaxed)),
                "errors": sum(|s| s.errors.load(Ordering::Relaxed)),
            });
        }
        out
    }

    /// `GET /v1/stats`: the busiest contexts over all shards (blocking: ask
    /// from a blocking thread). `None` when statistics are off.
    pub fn metric_stats(&self, limit: usize) -> Option<Vec<ContextRow>> {
        if !self.metric_stats {
            return None;
        }
        let limit = limit.clamp(1, MAX_STATS_ROWS);
        let mut rows = Vec::new();
        let mut waiting = Vec::new();
        for c in self.shards.get().map(|v| v.as_slice()).unwrap_or_default() {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if c.send_timeout(Control::MetricStats { limit, reply: tx }, SHARD_ANSWER_WAIT).is_ok() {
                waiting.push(rx);
            }
        }
        for rx in waiting {
            if let Ok(r) = rx.recv_timeout(SHARD_ANSWER_WAIT) {
                rows.extend(r);
            }
        }
        // A context lives in one shard; rows never need merging.
        rows.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_seen.cmp(&a.last_seen)));
        rows.truncate(limit);
        Some(rows)
    }
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn forwarder_json(f: &ForwarderInfo) -> Value {
    let fields: Map<String, Value> = f.stats.fields().into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let (valid, invalid, unknown) = (g(&f.stats.apikey_valid), g(&f.stats.apikey_invalid), g(&f.stats.apikey_unknown));
    // Counters only tell what was ever answered; an invalid answer wins.
    let api_key = match (valid, invalid, unknown) {
        (0, 0, 0) => "not checked",
        (_, i, _) if i > 0 => "invalid",
        (v, _, _) if v > 0 => "valid",
        _ => "unknown",
    };
    let endpoints: Vec<Value> = f.endpoints.iter().map(|(u, k)| json!({"url": u, "api_keys": k})).collect();
    json!({
        "name": f.name,
        "endpoints": endpoints,
        "api_key": api_key,
        "retry_queue_bytes": g(&f.stats.retry_queue_bytes),
        "retry_queue_payloads": g(&f.stats.retry_queue_payloads),
        "spill_bytes": f.storage_path.as_deref().map(dir_bytes).unwrap_or(0),
        "counters": fields,
    })
}

/// Largest `POST /v1/capture` body.
const MAX_REQUEST_BYTES: usize = 64 << 10;

fn json_resp(status: u16, v: &Value) -> crate::agent::http_server::Resp {
    crate::agent::http_server::respond(status, "application/json", v.to_string())
}

/// Serves the operating routes; hands any other request back.
pub async fn handle(
    ops: &Arc<Ops>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<crate::agent::http_server::Resp, http::Request<hyper::body::Incoming>> {
    use http::Method;
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (path.as_str(), method) {
        ("/v1/status", Method::GET) => Ok(json_resp(200, &ops.status())),
        ("/v1/stats", Method::GET) => {
            let limit = req
                .uri()
                .query()
                .and_then(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "limit")
                        .and_then(|(_, v)| v.parse::<usize>().ok())
                })
                .unwrap_or(100);
            let ops = ops.clone();
            let rows = tokio::task::spawn_blocking(move || ops.metric_stats(limit)).await.ok().flatten();
            Ok(match rows {
                Some(rows) => json_resp(200, &json!({ "contexts": rows })),
                None => json_resp(
                    404,
                    &json!({"error": "per-context statistics are off; set DD_DOGSTATSD_METRICS_STATS_ENABLE=true"}),
                ),
            })
        }
        ("/v1/capture", Method::GET) => Ok(json_resp(200, &json!(ops.capture.status()))),
        ("/v1/capture", Method::POST) => {
            use http_body_util::BodyExt;
            let body = match http_body_util::Limited::new(req.into_body(), MAX_REQUEST_BYTES).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return Ok(json_resp(400, &json!({"error": format!("cannot read the request body: {e}")}))),
            };
            let creq: crate::agent::capture::CaptureRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return Ok(json_resp(
                        400,
                        &json!({"error": format!("expected {{\"duration\": \"30s\", \"path\": \"...\", \"compress\": false}}: {e}")}),
                    ))
                }
            };
            let ops = ops.clone();
            let started = tokio::task::spawn_blocking(move || ops.capture.start(&creq)).await;
            Ok(match started {
                Ok(Ok(p)) => json_resp(200, &json!({"path": p.display().to_string()})),
                Ok(Err(e @ crate::agent::capture::CaptureError::Busy(_))) => {
                    json_resp(409, &json!({"error": e.to_string()}))
                }
                Ok(Err(e @ crate::agent::capture::CaptureError::Invalid(_))) => {
                    json_resp(400, &json!({"error": e.to_string()}))
                }
                Ok(Err(e)) => json_resp(500, &json!({"error": e.to_string()})),
                Err(e) => json_resp(500, &json!({"error": e.to_string()})),
            })
        }
        ("/v1/status" | "/v1/stats" | "/v1/capture", m) => {
            Ok(json_resp(405, &json!({"error": format!("method {m} not allowed")})))
        }
        _ => Err(req),
    }
}
