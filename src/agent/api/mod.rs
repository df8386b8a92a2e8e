//! The local submission API (`EDGESTAT_API_ADDR`, described in README.md):
//! HTTP/1.1 on its own thread, JSON validated with
//! simd-json.
//!
//! * `POST /v1/events`, `POST /v1/check_run`: validated, then queued in one
//!   bounded queue (`EDGESTAT_API_QUEUE_ITEMS`) that the flusher drains at
//!   every flush; they are sent exactly like DogStatsD events and checks.
//! * `POST /v1/orchestrator?type=N&cluster_id=ID`: framed at once and handed
//!   to the orchestrator sender (bounded, never waits): one payload per
//!   message, sent right away, not at the flush.
//! * `POST /v1/orchestrator/manifests?cluster_id=ID[&type=80|81|82]`: framed
//!   at once, buffered (bounded in bytes) and sent at the next flush.
//!
//! Answers: 202 accepted; 400 `{"error": "..."}` naming the problem; 413
//! over [`MAX_BODY_BYTES`] (by `Content-Length` or while streaming); 503 when
//! a queue is full or while shutting down; 404 / 405 otherwise.
//!
//! Items from the API do **not** get `DD_DOGSTATSD_TAGS`: in the Agent those
//! tags belong to the DogStatsD server only. A missing (or empty) `host` /
//! `host_name` becomes the agent's hostname; a missing or zero timestamp
//! becomes the time the request was accepted.
//!
//! Shutdown: [`ApiShared::close`] runs before the final flush. It flips a
//! flag under the queue lock, so every item answered 202 is already in the
//! queue the final flush drains, and every later request gets 503.

pub mod parse;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::agent::clock::unix_now;
use crate::agent::forwarder::Payload;
use crate::agent::http_server::{respond, ListenError, Resp, ServerHandle};
use crate::agent::orchestrator::{self, OrchestratorQueue, ProcessMessageEncoder, SendError};
use crate::core::model::{Event, ServiceCheck};

/// Largest request body accepted (413 over 4 MiB).
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// An oversized body is read and discarded up to this size so that the
/// client gets its 413 rather than a connection reset; beyond it we hang up.
const MAX_DRAIN_BYTES: usize = 64 << 20;
/// Time allowed for a request body to arrive.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the flusher waits for room in the orchestrator queue per manifest.
const MANIFEST_SEND_WAIT: Duration = Duration::from_secs(5);

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Host for items without one, and `X-Dd-Hostname`.
    pub hostname: String,
    /// `EDGESTAT_API_QUEUE_ITEMS`: events + service checks between flushes.
    pub queue_items: usize,
    /// `EDGESTAT_MANIFEST_BUFFER_BYTES`: framed manifests between flushes.
    pub manifest_buffer_bytes: usize,
    /// `DD_ORCHESTRATOR_EXPLORER_USE_LEGACY_ENDPOINT`.
    pub orchestrator_legacy_endpoint: bool,
    /// What `GET /health` reports; `None` answers 404.
    pub health: Option<Arc<crate::agent::health::Health>>,
}

struct Manifest {
    cluster_id: String,
    body: Bytes,
}

#[derive(Default)]
struct Queues {
    closed: bool,
    events: Vec<Event>,
    checks: Vec<ServiceCheck>,
    manifests: Vec<Manifest>,
    manifest_bytes: usize,
}

/// Counters of the API (read by telemetry; never on the DogStatsD path).
#[derive(Debug, Default)]
pub struct ApiStats {
    /// Requests by route and answered status.
    pub requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Items accepted by kind (`events`, `service_checks`, `orchestrator`, `manifests`).
    pub accepted: Mutex<BTreeMap<&'static str, u64>>,
    /// Items or requests refused by reason.
    pub dropped: Mutex<BTreeMap<&'static str, u64>>,
    /// Manifests sent at flushes.
    pub manifests_sent: AtomicU64,
}

fn bump<K: Ord>(m: &Mutex<BTreeMap<K, u64>>, k: K, n: u64) {
    if let Ok(mut g) = m.lock() {
        *g.entry(k).or_default() += n;
    }
}

impl ApiStats {
    /// Counts one refusal or drop.
    fn drop_reason(&self, reason: &'static str, n: u64) {
        bump(&self.dropped, reason, n);
    }
}

/// State shared by the server, the flusher and the signal thread.
pub struct ApiShared {
    settings: ApiSettings,
    queues: Mutex<Queues>,
    /// Counters.
    pub stats: ApiStats,
}

impl ApiShared {
    /// Fresh state.
    pub fn new(settings: ApiSettings) -> Arc<Self> {
        Arc::new(Self { settings, queues: Mutex::new(Queues::default()), stats: ApiStats::default() })
    }

    /// From now on every request is answered 503; everything accepted
    /// before stays queued for the final flush.
    pub fn close(&self) {
        if let Ok(mut q) = self.queues.lock() {
            q.closed = true;
        }
    }

    fn is_closed(&self) -> bool {
        self.queues.lock().map(|q| q.closed).unwrap_or(true)
    }

    /// Moves queued events and checks out (the flusher, at every flush).
    pub fn take(&self, events: &mut Vec<Event>, checks: &mut Vec<ServiceCheck>) {
        if let Ok(mut q) = self.queues.lock() {
            events.append(&mut q.events);
            checks.append(&mut q.checks);
        }
    }

    fn take_manifests(&self) -> Vec<Manifest> {
        match self.queues.lock() {
            Ok(mut q) => {
                q.manifest_bytes = 0;
                std::mem::take(&mut q.manifests)
            }
            Err(_) => Vec::new(),
        }
    }
}

/// What the flusher uses: the queues and the way to the orchestrator.
pub struct ApiFlushSide {
    shared: Arc<ApiShared>,
    orchestrator: OrchestratorQueue,
}

impl ApiFlushSide {
    /// Moves the API's events and checks into this flush.
    pub fn take(&self, events: &mut Vec<Event>, checks: &mut Vec<ServiceCheck>) {
        self.shared.take(events, checks);
    }

    /// Sends every buffered manifest (one payload each) to `/api/v2/orchmanif`.
    /// Returns how many were handed over.
    pub fn send_manifests(&self, now: i64) -> usize {
        let mut sent = 0;
        for m in self.shared.take_manifests() {
            let p = Payload {
                kind: "orchestrator_manifests",
                path: orchestrator::PATH_MANIFESTS,
                body: m.body,
                headers: orchestrator::headers(&self.shared.settings.hostname, &m.cluster_id, now),
            };
            match self.orchestrator.send_timeout(p, MANIFEST_SEND_WAIT) {
                Ok(()) => sent += 1,
                Err(_) => self.shared.stats.drop_reason("manifest_send_queue_full", 1),
            }
        }
        self.shared.stats.manifests_sent.fetch_add(sent as u64, Ordering::Relaxed);
        sent
    }
}

/// The running API.
pub struct Api {
    /// Shared state (close it at shutdown).
    pub shared: Arc<ApiShared>,
    server: ServerHandle,
    orchestrator: OrchestratorQueue,
}

struct Ctx {
    shared: Arc<ApiShared>,
    ops: Option<Arc<crate::agent::status::Ops>>,
    orchestrator: OrchestratorQueue,
    encoder: Mutex<ProcessMessageEncoder>,
}

/// Why the local API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The orchestrator payload compressor could not be created.
    #[error("cannot create the orchestrator compressor: {0}")]
    Compressor(crate::core::serializer::CompressError),
    /// The listening socket could not be bound.
    #[error(transparent)]
    Listen(#[from] ListenError),
}

impl Api {
    /// Binds `addr` and starts serving.
    pub fn start(
        addr: std::net::SocketAddr,
        settings: ApiSettings,
        orchestrator: OrchestratorQueue,
        ops: Option<Arc<crate::agent::status::Ops>>,
    ) -> Result<Api, ApiError> {
        let shared = ApiShared::new(settings);
        let encoder = ProcessMessageEncoder::new(MAX_BODY_BYTES).map_err(ApiError::Compressor)?;
        let ctx = Arc::new(Ctx {
            shared: shared.clone(),
            ops,
            orchestrator: orchestrator.clone(),
            encoder: Mutex::new(encoder),
        });
        let server = crate::agent::http_server::spawn("edgestat-api", addr, move |req| {
            let ctx = ctx.clone();
            async move { handle(&ctx, req).await }
        })
        .map_err(|source| ApiError::Listen(ListenError { setting: "EDGESTAT_API_ADDR", addr, source }))?;
        tracing::info!(addr = %server.local_addr, "local submission API listening");
        Ok(Api { shared, server, orchestrator })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr
    }

    /// The flusher's handle.
    pub fn flush_side(&self) -> ApiFlushSide {
        ApiFlushSide { shared: self.shared.clone(), orchestrator: self.orchestrator.clone() }
    }

    /// Stops the server (after [`ApiShared::close`] and the final flush).
    pub fn stop(self) {
        self.server.stop();
    }
}

fn json_error(status: u16, msg: &str) -> Resp {
    let body = serde_json::json!({ "error": msg }).to_string();
    respond(status, "application/json", body)
}

fn accepted(items: usize) -> Resp {
    respond(202, "application/json", format!("{{\"status\":\"accepted\",\"items\":{items}}}"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Events,
    Checks,
    Orchestrator,
    Manifests,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Events => "events",
            Route::Checks => "check_run",
            Route::Orchestrator => "orchestrator",
            Route::Manifests => "orchestrator_manifests",
        }
    }
}

async fn handle(ctx: &Ctx, req: Request<Incoming>) -> Resp {
    if req.uri().path() == "/health" {
        return health(ctx, req.method());
    }
    // The operating routes (status, stats, capture) live in `status`.
    let req = match &ctx.ops {
        Some(ops) => match crate::agent::status::handle(ops, req).await {
            Ok(resp) => return resp,
            Err(req) => req,
        },
        None => req,
    };
    let route = match req.uri().path() {
        "/v1/events" => Route::Events,
        "/v1/check_run" => Route::Checks,
        "/v1/orchestrator" => Route::Orchestrator,
        "/v1/orchestrator/manifests" => Route::Manifests,
        p => {
            let r = json_error(404, &format!("no such endpoint: {p}"));
            bump(&ctx.shared.stats.requests, ("unknown", 404), 1);
            return r;
        }
    };
    let resp = handle_route(ctx, route, req).await;
    bump(&ctx.shared.stats.requests, (route.label(), resp.status().as_u16()), 1);
    resp
}

async fn handle_route(ctx: &Ctx, route: Route, req: Request<Incoming>) -> Resp {
    if req.method() != Method::POST {
        let mut r = json_error(405, &format!("method {} not allowed; use POST", req.method()));
        r.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
        return r;
    }
    let stats = &ctx.shared.stats;
    if ctx.shared.is_closed() {
        stats.drop_reason("shutting_down", 1);
        return json_error(503, "shutting down; not accepting new data");
    }
    let query = parse_query(req.uri().query().unwrap_or(""));
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        stats.drop_reason("body_too_large", 1);
        let too_big = json_error(
            413,
            &format!("body of {} bytes is over the {MAX_BODY_BYTES}-byte limit", declared.unwrap_or(0)),
        );
        drain(req.into_body()).await;
        return too_big;
    }
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            stats.drop_reason("body_too_large", 1);
            return json_error(413, &format!("body is over the {MAX_BODY_BYTES}-byte limit"));
        }
        Err(BodyError::Read(e)) => {
            stats.drop_reason("body_read_error", 1);
            return json_error(400, &format!("cannot read the request body: {e}"));
        }
    };
    match route {
        Route::Events | Route::Checks => submit_json(ctx, route, body),
        Route::Orchestrator | Route::Manifests => submit_orchestrator(ctx, route, &query, body),
    }
}

/// `GET /health`: 200 with `{"status":"ok",...}`, or 503 with the reasons.
fn health(ctx: &Ctx, method: &Method) -> Resp {
    if method != Method::GET && method != Method::HEAD {
        let mut r = json_error(405, &format!("method {method} not allowed; use GET"));
        r.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(h) = &ctx.shared.settings.health else {
        return json_error(404, "no such endpoint: /health");
    };
    let report = h.check();
    let status = if report.healthy { 200 } else { 503 };
    bump(&ctx.shared.stats.requests, ("health", status), 1);
    respond(status, "application/json", report.to_json())
}

fn submit_json(ctx: &Ctx, route: Route, body: BytesMut) -> Resp {
    let stats = &ctx.shared.stats;
    let mut body = body;
    let now = unix_now();
    let host = &ctx.shared.settings.hostname;
    let parsed = match route {
        Route::Events => parse::events(&mut body, host, now).map(|e| (e, Vec::new())),
        _ => parse::service_checks(&mut body, host, now).map(|c| (Vec::new(), c)),
    };
    let (mut events, mut checks) = match parsed {
        Ok(x) => x,
        Err(e) => {
            stats.drop_reason("invalid_json", 1);
            return json_error(400, &e.0);
        }
    };
    let n = events.len() + checks.len();
    let Ok(mut q) = ctx.shared.queues.lock() else {
        return json_error(503, "internal queue unavailable");
    };
    if q.closed {
        drop(q);
        stats.drop_reason("shutting_down", n as u64);
        return json_error(503, "shutting down; not accepting new data");
    }
    if q.events.len() + q.checks.len() + n > ctx.shared.settings.queue_items {
        drop(q);
        stats.drop_reason("queue_full", n as u64);
        return json_error(
            503,
            &format!("queue full ({} items until the next flush); retry later", ctx.shared.settings.queue_items),
        );
    }
    q.events.append(&mut events);
    q.checks.append(&mut checks);
    drop(q);
    bump(&stats.accepted, if route == Route::Events { "events" } else { "service_checks" }, n as u64);
    accepted(n)
}

fn submit_orchestrator(ctx: &Ctx, route: Route, query: &BTreeMap<String, String>, body: BytesMut) -> Resp {
    let stats = &ctx.shared.stats;
    let refuse = |msg: String| {
        stats.drop_reason("invalid_request", 1);
        json_error(400, &msg)
    };
    let cluster_id = match query.get("cluster_id") {
        Some(c) if !c.is_empty() => c.clone(),
        _ => return refuse("cluster_id: required query parameter (the Kubernetes cluster UID)".into()),
    };
    if http::HeaderValue::from_str(&cluster_id).is_err() {
        return refuse("cluster_id: must be printable ASCII (it is sent as a header)".into());
    }
    let msg_type = match (route, query.get("type")) {
        (Route::Manifests, None) => orchestrator::TYPE_MANIFEST,
        (_, None) => {
            return refuse(
                "type: required query parameter (the agent-payload message type id, e.g. 41 for CollectorPod)".into(),
            )
        }
        (_, Some(t)) => match t.parse::<u8>() {
            Ok(n) => n,
            Err(_) => return refuse(format!("type: expected an integer message type id, got {t:?}")),
        },
    };
    let type_ok = match route {
        Route::Manifests => orchestrator::is_manifest_type(msg_type),
        _ => orchestrator::is_metadata_type(msg_type),
    };
    if !type_ok {
        let expected = if route == Route::Manifests {
            "80, 81 or 82 (CollectorManifest, CollectorManifestCRD, CollectorManifestCR)"
        } else {
            "an orchestrator metadata type (41-52, 54-59, 61, 83-88, 200)"
        };
        return refuse(format!("type: {msg_type} is not {expected}"));
    }
    if let Err(e) = parse::protobuf_message(&body) {
        return refuse(e.0);
    }
    let framed = match ctx.encoder.lock() {
        Ok(mut enc) => enc.encode(msg_type, &body),
        Err(_) => return json_error(503, "orchestrator encoder unavailable"),
    };
    let framed = match framed {
        Ok(f) => f,
        Err(orchestrator::EncodeError::TooLarge(n)) => {
            stats.drop_reason("body_too_large", 1);
            return json_error(413, &format!("message of {n} bytes is too large"));
        }
        Err(e) => {
            stats.drop_reason("encode_error", 1);
            return json_error(503, &format!("cannot frame the message: {e}"));
        }
    };
    if route == Route::Manifests {
        let Ok(mut q) = ctx.shared.queues.lock() else {
            return json_error(503, "internal queue unavailable");
        };
        if q.closed {
            drop(q);
            stats.drop_reason("shutting_down", 1);
            return json_error(503, "shutting down; not accepting new data");
        }
        if q.manifest_bytes + framed.len() > ctx.shared.settings.manifest_buffer_bytes {
            drop(q);
            stats.drop_reason("manifest_buffer_full", 1);
            return json_error(503, "manifest buffer full until the next flush; retry later");
        }
        q.manifest_bytes += framed.len();
        q.manifests.push(Manifest { cluster_id, body: framed });
        drop(q);
        bump(&stats.accepted, "manifests", 1);
        return accepted(1);
    }
    let path = if ctx.shared.settings.orchestrator_legacy_endpoint {
        orchestrator::PATH_METADATA_LEGACY
    } else {
        orchestrator::PATH_METADATA
    };
    let p = Payload {
        kind: "orchestrator",
        path,
        body: framed,
        headers: orchestrator::headers(&ctx.shared.settings.hostname, &cluster_id, unix_now()),
    };
    match ctx.orchestrator.try_send(p) {
        Ok(()) => {
            bump(&stats.accepted, "orchestrator", 1);
            accepted(1)
        }
        Err(SendError::Full) => {
            stats.drop_reason("orchestrator_queue_full", 1);
            json_error(503, "orchestrator queue full; retry later")
        }
        Err(SendError::Closed) => {
            stats.drop_reason("shutting_down", 1);
            json_error(503, "shutting down; not accepting new data")
        }
    }
}

/// Query parameters (form-urlencoded); the last occurrence of a key wins.
fn parse_query(q: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(q.as_bytes()).into_owned().take(64).collect()
}

enum BodyError {
    TooLarge,
    Read(String),
}

async fn read_body(mut body: Incoming) -> Result<BytesMut, BodyError> {
    let mut out = BytesMut::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > MAX_BODY_BYTES {
                    drain(body).await;
                    return Err(BodyError::TooLarge);
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(out),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BodyError::Read(format!("body not received within {BODY_READ_TIMEOUT:?}"))),
    }
}

/// Reads and discards the rest of a body (bounded) so the client reads its answer.
async fn drain(mut body: Incoming) {
    let mut seen = 0usize;
    let _ = tokio::time::timeout(BODY_READ_TIMEOUT, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(d) = frame.into_data() {
                seen += d.len();
                if seen > MAX_DRAIN_BYTES {
                    return;
                }
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("type=41&cluster_id=abc%2D1&x&y=a+b&bad=%zz");
        assert_eq!(q["type"], "41");
        assert_eq!(q["cluster_id"], "abc-1");
        assert_eq!(q["x"], "");
        assert_eq!(q["y"], "a b");
        assert_eq!(q["bad"], "%zz");
        assert_eq!(parse_query("a=%4")["a"], "%4");
    }
}
