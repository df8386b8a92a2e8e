//! HTTP/1.1 server (hyper 1, keep-alive, optional rustls) and routing.
//!
//! Routes:
//! * `GET /intake/health` → `{"status":"ok","payloads":N}`
//! * `GET /intake/payloads[?path=P][&answered=S][&since=SEQ]` → JSON array
//!   of records in arrival order; `DELETE /intake/payloads` clears them.
//! * `GET /intake/stats` → counters since start / last clear:
//!   `{"received":N,"stored":n,"stored_bytes":n,"evicted":n,"last_seq":n,
//!   "by_path":{"/api/v2/series":n},"by_answered":{"202":n,"503":n},
//!   "validate_requests":n,"jsonl_write_errors":n,"fail_rules":n}`.
//! * `POST /intake/fail` queues a failure rule
//!   `{"status":503,"count":10,"path":"/api/v2/series","delay_ms":0}`
//!   (`count` default 1, `path`/`delay_ms` optional; unknown keys → 400),
//!   answered 200 `{"queued":{...},"rules":n}`; `GET` lists the rules with
//!   their remaining counts, `DELETE` clears them. The oldest matching rule
//!   answers first. `status: 0` holds the connection `delay_ms`, then closes
//!   it without an answer. Rule answers carry `{"errors":["..."]}`.
//! * `GET /api/v1/validate` → 200 `{"valid":true}`, 403 when the key is
//!   `invalid`.
//! * any other `POST`/`PUT` → stored payload, 202 `{}` (or the injected
//!   failure); bodies over [`MAX_BODY_BYTES`] → 413 (stored, `answered`
//!   413). Other unknown routes → 404 / 405 with a JSON error.
//! * `POST /intake/throttle` `{"bytes_per_sec":N}` (0: off) paces payload
//!   bodies as one shared link of N bytes/s (the answer comes when the body
//!   would have arrived); `GET` shows the current rate.
//!
//! Every stored payload is recorded *before* an injected delay, so tests
//! can count attempts while the intake "hangs".

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::tools::intake::decode;
use crate::tools::intake::store::{FailRule, FailRules, Query, RecordInput, Store};

/// Largest request body accepted (compressed, as sent); larger → 413.
pub const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Oversized bodies are read and discarded up to this many bytes so the
/// client reliably gets its 413 instead of a reset; beyond it we hang up.
pub const MAX_DRAIN_BYTES: u64 = 256 * 1024 * 1024;
/// Largest `POST /intake/fail` body.
pub const MAX_CONTROL_BODY_BYTES: u64 = 64 * 1024;
/// Concurrent connections served; further accepts wait.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time allowed for a request body to arrive.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed for a TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for request headers to arrive.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for in-flight requests before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Bodies at least this large are decompressed/decoded on the blocking pool
/// so one big payload does not stall the (possibly single-threaded) runtime.
const BLOCKING_DECODE_THRESHOLD: usize = 256 * 1024;

/// Shared state of one intake.
pub struct State {
    /// Stored requests.
    pub store: Store,
    /// Injected failures.
    pub fail: FailRules,
    /// Bandwidth limit on payload bodies.
    pub throttle: crate::tools::intake::throttle::Throttle,
}

/// Error returned by the service to make hyper close the connection
/// without writing a response (injected `status: 0`, aborted bodies).
#[derive(Debug)]
enum HangUp {
    /// Deliberate close (injected failure, body timeout).
    Close(&'static str),
    /// The request body could not be read.
    Body(hyper::Error),
}

impl std::fmt::Display for HangUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HangUp::Close(m) => f.write_str(m),
            HangUp::Body(e) => write!(f, "request body: {e}"),
        }
    }
}
impl std::error::Error for HangUp {}

type Resp = Response<Full<Bytes>>;

/// Resolves once `rx` says stop (or its sender is gone).
pub use crate::agent::http_server::wait_stop as wait_shutdown;

/// Accept loop: runs until shutdown, then gives connections
/// [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
) {
    let grace = SHUTDOWN_GRACE + Duration::from_millis(500);
    crate::agent::http_server::accept_loop(listener, MAX_CONNECTIONS, shutdown.clone(), grace, |stream, peer| {
        let state = state.clone();
        let rx = shutdown.clone();
        let tls = tls.clone();
        async move {
            match tls {
                None => serve_conn(stream, state, rx).await,
                Some(acc) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acc.accept(stream)).await {
                    Ok(Ok(s)) => serve_conn(s, state, rx).await,
                    Ok(Err(e)) => tracing::debug!("intake: TLS handshake with {peer}: {e}"),
                    Err(_) => tracing::debug!("intake: TLS handshake with {peer} timed out"),
                },
            }
        }
    })
    .await;
}

async fn serve_conn<IO>(io: IO, state: Arc<State>, shutdown: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { handle(state, req).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("intake: connection ended: {e}");
            }
        }
        _ = wait_shutdown(shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
        }
    }
}

fn json_resp(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

fn error_resp(status: StatusCode, msg: &str) -> Resp {
    let body = serde_json::to_vec(&serde_json::json!({ "errors": [msg] })).unwrap_or_else(|_| b"{}".to_vec());
    json_resp(status, body)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Query parameters (form-urlencoded), at most 64.
fn query_params(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes()).into_owned().take(64).collect()
}

fn header_list(h: &HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for name in h.keys() {
        let vals: Vec<String> =
            h.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        out.push((name.as_str().to_string(), vals.join(", ")));
    }
    out
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Resp, HangUp> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let resp = match (&method, path.as_str()) {
        (&Method::GET, "/intake/health") => {
            let body = serde_json::json!({"status": "ok", "payloads": state.store.len()});
            json_resp(StatusCode::OK, body.to_string())
        }
        (&Method::GET, "/intake/payloads") => match parse_query(req.uri().query()) {
            Ok(q) => json_resp(StatusCode::OK, state.store.query(&q)),
            Err(e) => error_resp(StatusCode::BAD_REQUEST, &e),
        },
        (&Method::DELETE, "/intake/payloads") => {
            let n = state.store.clear();
            json_resp(StatusCode::OK, serde_json::json!({ "cleared": n }).to_string())
        }
        (&Method::GET, "/intake/stats") => json_resp(StatusCode::OK, state.store.stats_json(state.fail.len())),
        (&Method::POST, "/intake/fail") => add_fail_rule(&state, req).await,
        (&Method::GET, "/intake/fail") => json_resp(StatusCode::OK, state.fail.to_json()),
        (&Method::POST, "/intake/throttle") => set_throttle(&state, req).await,
        (&Method::GET, "/intake/throttle") => {
            json_resp(StatusCode::OK, serde_json::json!({ "bytes_per_sec": state.throttle.rate() }).to_string())
        }
        (&Method::DELETE, "/intake/fail") => {
            let n = state.fail.clear();
            json_resp(StatusCode::OK, serde_json::json!({ "cleared": n }).to_string())
        }
        (_, "/intake/health" | "/intake/payloads" | "/intake/stats" | "/intake/fail" | "/intake/throttle") => {
            error_resp(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this control route")
        }
        (&Method::GET, "/api/v1/validate") => {
            state.store.count_validate();
            validate(&req)
        }
        (&Method::POST | &Method::PUT, _) => return payload(state, req).await,
        (&Method::GET | &Method::HEAD, _) => error_resp(StatusCode::NOT_FOUND, "not found"),
        _ => error_resp(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    };
    Ok(resp)
}

fn parse_query(q: Option<&str>) -> Result<Query, String> {
    let mut out = Query::default();
    for (k, v) in query_params(q) {
        match k.as_str() {
            "path" => out.path = Some(v),
            "answered" => out.answered = Some(v.parse().map_err(|_| format!("bad answered={v:?}"))?),
            "since" => out.since = Some(v.parse().map_err(|_| format!("bad since={v:?}"))?),
            _ => {}
        }
    }
    Ok(out)
}

fn validate(req: &Request<Incoming>) -> Resp {
    let header_key = req.headers().get("dd-api-key").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let query_key = query_params(req.uri().query()).into_iter().find(|(k, _)| k == "api_key").map(|(_, v)| v);
    if header_key.as_deref() == Some("invalid") || query_key.as_deref() == Some("invalid") {
        error_resp(StatusCode::FORBIDDEN, "Forbidden")
    } else {
        json_resp(StatusCode::OK, &b"{\"valid\":true}"[..])
    }
}

/// Reads a body up to `limit` bytes; beyond it, keeps draining (discarding)
/// up to [`MAX_DRAIN_BYTES`] and reports `Ok(Err(total_seen))`.
async fn read_body(mut body: Incoming, limit: u64) -> Result<Result<Vec<u8>, u64>, hyper::Error> {
    let mut buf: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    let mut too_big = false;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            total = total.saturating_add(data.len() as u64);
            if total > limit {
                if !too_big {
                    too_big = true;
                    buf = Vec::new();
                }
                if total > MAX_DRAIN_BYTES {
                    break;
                }
            } else {
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(if too_big { Err(total) } else { Ok(buf) })
}

async fn set_throttle(state: &State, req: Request<Incoming>) -> Resp {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rate {
        bytes_per_sec: u64,
    }
    let body = match tokio::time::timeout(BODY_READ_TIMEOUT, read_body(req.into_body(), MAX_CONTROL_BODY_BYTES)).await {
        Ok(Ok(Ok(b))) => b,
        Ok(Ok(Err(_))) => return error_resp(StatusCode::PAYLOAD_TOO_LARGE, "throttle body too large"),
        Ok(Err(e)) => return error_resp(StatusCode::BAD_REQUEST, &format!("body: {e}")),
        Err(_) => return error_resp(StatusCode::REQUEST_TIMEOUT, "body read timed out"),
    };
    match serde_json::from_slice::<Rate>(&body) {
        Ok(r) => {
            state.throttle.set(r.bytes_per_sec);
            json_resp(StatusCode::OK, serde_json::json!({ "bytes_per_sec": r.bytes_per_sec }).to_string())
        }
        Err(e) => {
            error_resp(StatusCode::BAD_REQUEST, &format!("bad throttle JSON (want {{\"bytes_per_sec\":N}}): {e}"))
        }
    }
}

async fn add_fail_rule(state: &State, req: Request<Incoming>) -> Resp {
    let body = match tokio::time::timeout(BODY_READ_TIMEOUT, read_body(req.into_body(), MAX_CONTROL_BODY_BYTES)).await {
        Ok(Ok(Ok(b))) => b,
        Ok(Ok(Err(_))) => return error_resp(StatusCode::PAYLOAD_TOO_LARGE, "rule body too large"),
        Ok(Err(e)) => return error_resp(StatusCode::BAD_REQUEST, &format!("body: {e}")),
        Err(_) => return error_resp(StatusCode::REQUEST_TIMEOUT, "body read timed out"),
    };
    let rule: FailRule = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error_resp(StatusCode::BAD_REQUEST, &format!("bad rule JSON: {e}")),
    };
    match state.fail.add(rule.clone()) {
        Ok(n) => json_resp(
            StatusCode::OK,
            serde_json::to_vec(&serde_json::json!({ "queued": rule, "rules": n })).unwrap_or_else(|_| b"{}".to_vec()),
        ),
        Err(e) => error_resp(StatusCode::BAD_REQUEST, &e),
    }
}

/// Decompression + decoding result, computed off the request path.
struct Processed {
    uncompressed_bytes: Option<u64>,
    decode_error: Option<String>,
    body_json: Option<Vec<u8>>,
    body_raw: Option<Vec<u8>>,
}

fn process(path: &str, encoding: Option<&str>, raw: Vec<u8>) -> Processed {
    match decode::decompress(encoding, &raw) {
        Err(e) => Processed {
            uncompressed_bytes: None,
            decode_error: Some(e.to_string()),
            body_json: None,
            body_raw: Some(raw),
        },
        Ok(data) => {
            drop(raw);
            let d = decode::decode_body(path, &data);
            Processed {
                uncompressed_bytes: Some(data.len() as u64),
                decode_error: d.error,
                body_json: d.body_json,
                body_raw: if d.keep_b64 { Some(data) } else { None },
            }
        }
    }
}

async fn payload(state: Arc<State>, req: Request<Incoming>) -> Result<Resp, HangUp> {
    let received_at_ms = now_ms();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let mut rec = RecordInput {
        received_at_ms,
        method: parts.method.as_str().to_string(),
        path: path.clone(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: header_list(&parts.headers),
        content_encoding: parts
            .headers
            .get(http::header::CONTENT_ENCODING)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        ..Default::default()
    };

    let declared: Option<u64> = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    if declared.is_some_and(|n| n > MAX_DRAIN_BYTES) {
        return Ok(too_large(&state, rec, declared));
    }
    let raw = match tokio::time::timeout(BODY_READ_TIMEOUT, read_body(body, MAX_BODY_BYTES)).await {
        Ok(Ok(Ok(b))) => b,
        Ok(Ok(Err(seen))) => return Ok(too_large(&state, rec, declared.or(Some(seen)))),
        Ok(Err(e)) => return Err(HangUp::Body(e)),
        Err(_) => return Err(HangUp::Close("request body read timed out")),
    };
    rec.compressed_bytes = Some(raw.len() as u64);
    if let Some(until) = state.throttle.reserve(raw.len() as u64) {
        tokio::time::sleep_until(until.into()).await;
    }

    let action = state.fail.take(&path);
    let enc = rec.content_encoding.clone();
    let processed = if raw.len() >= BLOCKING_DECODE_THRESHOLD {
        let p = path.clone();
        match tokio::task::spawn_blocking(move || process(&p, enc.as_deref(), raw)).await {
            Ok(p) => p,
            Err(e) => Processed {
                uncompressed_bytes: None,
                decode_error: Some(format!("decoder task failed: {e}")),
                body_json: None,
                body_raw: None,
            },
        }
    } else {
        process(&path, enc.as_deref(), raw)
    };
    rec.uncompressed_bytes = processed.uncompressed_bytes;
    rec.decode_error = processed.decode_error;
    rec.body_json = processed.body_json;
    rec.body_raw = processed.body_raw;
    rec.answered = action.map_or(202, |a| a.status);
    state.store.push(&rec);

    match action {
        None => Ok(json_resp(StatusCode::ACCEPTED, &b"{}"[..])),
        Some(a) => {
            if a.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(a.delay_ms)).await;
            }
            match StatusCode::from_u16(a.status) {
                Ok(s) if a.status != 0 => Ok(error_resp(s, "edgestat intake: injected failure")),
                _ => Err(HangUp::Close("injected failure: connection closed")),
            }
        }
    }
}

fn too_large(state: &State, mut rec: RecordInput, size: Option<u64>) -> Resp {
    rec.answered = 413;
    rec.decode_error = Some(format!(
        "body of {} bytes exceeds the {MAX_BODY_BYTES}-byte limit",
        size.map_or_else(|| "unknown".to_string(), |n| n.to_string())
    ));
    state.store.push(&rec);
    let mut r = error_resp(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large");
    r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        let q = query_params(Some("path=%2Fapi%2fv2%2Fseries&x=a+b%&y=%zz%4&flag"));
        assert_eq!(q[0], ("path".to_string(), "/api/v2/series".to_string()));
        assert_eq!(q[1].1, "a b%");
        assert_eq!(q[2].1, "%zz%4");
        assert_eq!(q[3], ("flag".to_string(), String::new()));
        let q = parse_query(Some("path=%2Fapi%2Fv2%2Fseries&answered=202&x")).unwrap();
        assert_eq!(q.path.as_deref(), Some("/api/v2/series"));
        assert_eq!(q.answered, Some(202));
        assert!(parse_query(Some("answered=abc")).is_err());
    }
}
