//! A small HTTP/1.1 server on its own thread (tokio current-thread runtime,
//! hyper 1) for the local submission API and the telemetry endpoint.
//!
//! Why a thread of its own: neither server may share a runtime with the
//! forwarder or touch a shard; a slow or hostile local client can only
//! delay this thread. Connections are bounded and every request has a
//! header-read timeout, so nothing here grows without limit.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Concurrent connections per server; further accepts wait.
pub const MAX_CONNECTIONS: usize = 256;
/// Time allowed for request headers to arrive.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A server that could not bind; names the setting that chose the address.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {setting}={addr}: {source}")]
pub struct ListenError {
    /// The configuration key that chose the address.
    pub setting: &'static str,
    /// The address asked for.
    pub addr: SocketAddr,
    /// The OS error.
    pub source: std::io::Error,
}

/// What every handler returns.
pub type Resp = Response<Full<Bytes>>;

/// A running server.
pub struct ServerHandle {
    /// The bound address (the real port when `:0` was asked).
    pub local_addr: SocketAddr,
    stop_tx: watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

impl ServerHandle {
    /// Stops accepting, lets in-flight requests finish (bounded), joins.
    pub fn stop(self) {
        let _ = self.stop_tx.send(true);
        let _ = self.thread.join();
    }
}

/// Binds `addr` now (so a bad address fails start-up) and serves `handler`
/// on a new thread named `name`.
pub fn spawn<H, F>(name: &str, addr: SocketAddr, handler: H) -> std::io::Result<ServerHandle>
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local_addr = std_listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let handler = Arc::new(handler);
    let thread_name = name.to_string();
    let thread = std::thread::Builder::new().name(thread_name.clone()).spawn(move || {
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(std_listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(server = %thread_name, "cannot serve: {e}");
                    return;
                }
            };
            serve(listener, handler, stop_rx).await;
        });
    })?;
    Ok(ServerHandle { local_addr, stop_tx, thread })
}

/// Resolves once `rx` says stop (or its sender is gone).
pub async fn wait_stop(mut rx: watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The accept loop shared by every HTTP server here (local API, telemetry,
/// intake): at most `max_connections` at once (further accepts wait),
/// accept errors backed off, `on_conn` run per connection; once `stop_rx`
/// fires, connections get `grace` to finish and are then aborted.
pub async fn accept_loop<C, Fut>(
    listener: tokio::net::TcpListener,
    max_connections: usize,
    stop_rx: watch::Receiver<bool>,
    grace: Duration,
    on_conn: C,
) where
    C: Fn(tokio::net::TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(max_connections));
    let mut conns: JoinSet<()> = JoinSet::new();
    let stop = wait_stop(stop_rx);
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            p = sem.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = on_conn(stream, peer);
        conns.spawn(async move {
            let _permit = permit;
            conn.await;
        });
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drain).await.is_err() {
        conns.abort_all();
    }
}

async fn serve<H, F>(listener: tokio::net::TcpListener, handler: Arc<H>, stop_rx: watch::Receiver<bool>)
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    accept_loop(listener, MAX_CONNECTIONS, stop_rx.clone(), SHUTDOWN_GRACE, |stream, _peer| {
        let h = handler.clone();
        let conn_stop = stop_rx.clone();
        async move {
            let svc = hyper::service::service_fn(move |req| {
                let fut = h(req);
                async move { Ok::<_, std::convert::Infallible>(fut.await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = wait_stop(conn_stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                }
            }
        }
    })
    .await;
}

/// A response with a body and content type.
pub fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}
