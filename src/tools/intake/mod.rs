//! Local Datadog-compatible intake (`edgestat intake`).
//!
//! Why it exists: tests, benchmarks and `edgestat run` without a real
//! Datadog endpoint need somewhere to send payloads that accepts them like
//! the Datadog intake (202 `{}`), keeps them decoded into JSON, and can be
//! told to fail. See `server.rs` for the routes, `decode.rs` for the JSON
//! shapes of decoded payloads and `store.rs` for the stored record format:
//!
//! ```json
//! {"seq":1,"received_at_ms":1700000000123,"method":"POST","path":"/api/v2/series",
//!  "query":"","headers":{"content-encoding":"zstd","dd-api-key":"..."},
//!  "content_encoding":"zstd","compressed_bytes":60,"uncompressed_bytes":51,
//!  "answered":202,"decode_error":null,"body":{...}}
//! ```
//! plus `"body_b64"` (the decompressed bytes, or the raw bytes when
//! decompression failed) only when the body could not be decoded.

pub mod decode;
pub mod server;
pub mod store;
pub mod throttle;
pub mod tls;

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::tools::intake::server::State;
use crate::tools::intake::store::{FailRules, Query, Store};

/// Default bound on payload records kept in memory.
pub const DEFAULT_MAX_STORED_PAYLOADS: usize = 100_000;

/// Errors of the intake; each displays as one line naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The listen address could not be bound.
    #[error("intake: cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Certificate or key problem (unreadable, unparsable, rejected).
    #[error("intake: TLS: {0}")]
    Tls(String),
    /// Other I/O failure (data dir, payload file...).
    #[error("intake: {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Runtime / thread / signal setup failure.
    #[error("intake: {0}")]
    Runtime(String),
}

/// How the intake speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP.
    Plain,
    /// HTTPS with the given PEM certificate chain and private key.
    Files {
        /// PEM certificate chain (leaf first).
        cert: PathBuf,
        /// PEM private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// HTTPS with a self-signed certificate kept in `dir/cert.pem` and
    /// `dir/key.pem` (generated when missing, reused otherwise); clients
    /// trust it with `SSL_CERT_FILE=dir/cert.pem`.
    SelfSigned {
        /// Directory holding (or receiving) the pair.
        dir: PathBuf,
    },
}

/// Configuration of one intake instance.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Plain or TLS.
    pub tls: TlsMode,
    /// When set, every stored record is also appended as one JSON line to
    /// `data_dir/payloads.jsonl` (the directory is created).
    pub data_dir: Option<PathBuf>,
    /// Bound on `payloads.jsonl` + its rotated `payloads.jsonl.1` in
    /// `data_dir` (at least 4096 bytes).
    pub data_max_bytes: u64,
    /// Records kept in memory; the oldest are evicted (and counted in
    /// `/intake/stats`) beyond it. `0` keeps none in memory (the JSONL file
    /// and counters still see everything).
    pub max_stored_payloads: usize,
    /// Bandwidth of payload bodies in bytes/s, shared by all connections
    /// (0: unlimited); `POST /intake/throttle` changes it at run time.
    pub throttle_bytes_per_sec: u64,
}

impl IntakeConfig {
    /// Plain HTTP on `listen`, no data dir, default bounds.
    pub fn new(listen: SocketAddr) -> Self {
        IntakeConfig {
            listen,
            tls: TlsMode::Plain,
            data_dir: None,
            data_max_bytes: store::DEFAULT_DATA_MAX_BYTES,
            max_stored_payloads: DEFAULT_MAX_STORED_PAYLOADS,
            throttle_bytes_per_sec: 0,
        }
    }
}

impl Default for IntakeConfig {
    /// Plain HTTP on `127.0.0.1:0` (a free port).
    fn default() -> Self {
        Self::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }
}

/// Address information of a running intake, shared by [`IntakeHandle`] and
/// [`EmbeddedIntake`].
#[derive(Debug, Clone)]
pub struct IntakeInfo {
    /// Address actually bound.
    pub local_addr: SocketAddr,
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT` (loopback when
    /// listening on an unspecified address), no trailing slash.
    pub base_url: String,
    /// PEM certificate clients should trust (TLS only).
    pub cert_pem_path: Option<PathBuf>,
}

/// A running intake on the caller's tokio runtime. Dropping it stops the
/// server (without waiting); [`IntakeHandle::shutdown`] stops and waits.
pub struct IntakeHandle {
    /// Address actually bound.
    pub local_addr: SocketAddr,
    /// Base URL to give clients (see [`IntakeInfo::base_url`]).
    pub base_url: String,
    /// PEM certificate clients should trust (TLS only).
    pub cert_pem_path: Option<PathBuf>,
    state: Arc<State>,
    shutdown_tx: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl IntakeHandle {
    /// Address information (cloneable, for handing to other components).
    pub fn info(&self) -> IntakeInfo {
        IntakeInfo {
            local_addr: self.local_addr,
            base_url: self.base_url.clone(),
            cert_pem_path: self.cert_pem_path.clone(),
        }
    }

    /// Stops accepting, lets in-flight requests finish (bounded grace), and
    /// waits for the server task.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Records currently held in memory.
    pub fn stored_payloads(&self) -> usize {
        self.state.store.len()
    }

    /// Stored records (same JSON as `GET /intake/payloads`), optionally only
    /// those for `path`; for in-process users that do not want HTTP.
    pub fn payloads(&self, path: Option<&str>) -> Vec<serde_json::Value> {
        payloads_of(&self.state, path)
    }
}

impl Drop for IntakeHandle {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
    }
}

fn payloads_of(state: &State, path: Option<&str>) -> Vec<serde_json::Value> {
    let q = Query { path: path.map(str::to_string), ..Default::default() };
    serde_json::from_slice(&state.store.query(&q)).unwrap_or_default()
}

fn base_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    match ip {
        IpAddr::V4(v4) => format!("{scheme}://{v4}:{}", addr.port()),
        IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{}", addr.port()),
    }
}

/// Starts the intake on the current tokio runtime; returns once listening.
/// Why async: tests and `edgestat bench` already run inside a runtime.
pub async fn start(cfg: IntakeConfig) -> Result<IntakeHandle, IntakeError> {
    let (acceptor, cert_pem_path) = match &cfg.tls {
        TlsMode::Plain => (None, None),
        TlsMode::Files { cert, key } => {
            let sc = tls::server_config(cert, key)?;
            (Some(tokio_rustls::TlsAcceptor::from(sc)), Some(cert.clone()))
        }
        TlsMode::SelfSigned { dir } => {
            let (cert, key) = tls::ensure_self_signed(dir, Some(cfg.listen.ip()))?;
            let sc = tls::server_config(&cert, &key)?;
            (Some(tokio_rustls::TlsAcceptor::from(sc)), Some(cert))
        }
    };
    let store = Store::new(cfg.max_stored_payloads, cfg.data_dir.as_deref(), cfg.data_max_bytes)?;
    let listener =
        TcpListener::bind(cfg.listen).await.map_err(|e| IntakeError::Bind { addr: cfg.listen, source: e })?;
    let local_addr = listener.local_addr().map_err(|e| IntakeError::Bind { addr: cfg.listen, source: e })?;
    let state = Arc::new(State {
        store,
        fail: FailRules::default(),
        throttle: throttle::Throttle::new(cfg.throttle_bytes_per_sec),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let tls_on = acceptor.is_some();
    let task = tokio::spawn(server::serve(listener, acceptor, state.clone(), shutdown_rx));
    let base_url = base_url(local_addr, tls_on);
    tracing::info!("intake listening on {base_url}");
    Ok(IntakeHandle { local_addr, base_url, cert_pem_path, state, shutdown_tx, task: Some(task) })
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime, IntakeError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("edgestat-intake")
        .build()
        .map_err(|e| IntakeError::Runtime(format!("cannot build tokio runtime: {e}")))
}

/// Runs `edgestat intake`: a current-thread runtime on the calling thread,
/// prints `edgestat intake listening on <base_url>` (one line, flushed) once
/// listening, serves until SIGTERM/SIGINT, then returns `Ok(())`.
/// Must not be called from inside a tokio runtime.
pub fn run_blocking(cfg: IntakeConfig) -> Result<(), IntakeError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(IntakeError::Runtime("run_blocking called from inside a tokio runtime; use start()".into()));
    }
    let rt = current_thread_runtime()?;
    rt.block_on(async move {
        let signals = Signals::new()?;
        let handle = start(cfg).await?;
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "edgestat intake listening on {}", handle.base_url);
            let _ = out.flush();
        }
        signals.wait().await;
        tracing::info!("intake: signal received, shutting down");
        handle.shutdown().await;
        Ok(())
    })
}

/// SIGTERM + SIGINT, registered before the "listening" line is printed so a
/// signal sent right after it is never missed.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, IntakeError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let err = |e: std::io::Error| IntakeError::Runtime(format!("cannot watch signals: {e}"));
            Ok(Signals {
                term: signal(SignalKind::terminate()).map_err(err)?,
                int: signal(SignalKind::interrupt()).map_err(err)?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// An intake running on its own thread and runtime, for `edgestat run`
/// without a real Datadog endpoint. [`EmbeddedIntake::shutdown`] (or drop)
/// stops it and joins the thread.
pub struct EmbeddedIntake {
    /// Address actually bound.
    pub local_addr: SocketAddr,
    /// Base URL to give the forwarder.
    pub base_url: String,
    /// PEM certificate the forwarder should trust (TLS only).
    pub cert_pem_path: Option<PathBuf>,
    state: Arc<State>,
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedIntake {
    /// Address information.
    pub fn info(&self) -> IntakeInfo {
        IntakeInfo {
            local_addr: self.local_addr,
            base_url: self.base_url.clone(),
            cert_pem_path: self.cert_pem_path.clone(),
        }
    }

    /// Records currently held in memory.
    pub fn stored_payloads(&self) -> usize {
        self.state.store.len()
    }

    /// Stored records as JSON values, optionally only those for `path`.
    pub fn payloads(&self, path: Option<&str>) -> Vec<serde_json::Value> {
        payloads_of(&self.state, path)
    }

    /// Stops the server (bounded grace for in-flight requests) and joins
    /// its thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("intake: embedded intake thread panicked");
            }
        }
    }
}

impl Drop for EmbeddedIntake {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl crate::agent::app::LocalIntake for EmbeddedIntake {
    fn base_url(&self) -> String {
        self.base_url.clone()
    }

    fn shutdown(self: Box<Self>) {
        EmbeddedIntake::shutdown(*self);
    }
}

/// The intake `edgestat run` embeds when no endpoint is configured: plain
/// HTTP on a free loopback port, decoded payloads appended under `data_dir`.
pub fn start_for_agent(
    data_dir: &std::path::Path,
    data_max_bytes: u64,
) -> Result<Box<dyn crate::agent::app::LocalIntake>, Box<dyn std::error::Error + Send + Sync>> {
    let intake = spawn_embedded(IntakeConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        tls: TlsMode::Plain,
        data_dir: Some(data_dir.to_path_buf()),
        data_max_bytes,
        max_stored_payloads: 10_000,
        throttle_bytes_per_sec: 0,
    })?;
    Ok(Box::new(intake))
}

/// Starts the intake on a dedicated thread with its own current-thread
/// runtime and returns once it is listening (or failed to start).
pub fn spawn_embedded(cfg: IntakeConfig) -> Result<EmbeddedIntake, IntakeError> {
    type Ready = Result<(IntakeInfo, Arc<State>), IntakeError>;
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Ready>(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("edgestat-intake".into())
        .spawn(move || {
            let rt = match current_thread_runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                match start(cfg).await {
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                    Ok(h) => {
                        let _ = ready_tx.send(Ok((h.info(), h.state.clone())));
                        // Either an explicit stop or the EmbeddedIntake vanishing.
                        let _ = stop_rx.await;
                        h.shutdown().await;
                    }
                }
            });
        })
        .map_err(|e| IntakeError::Runtime(format!("cannot spawn intake thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok((info, state))) => Ok(EmbeddedIntake {
            local_addr: info.local_addr,
            base_url: info.base_url,
            cert_pem_path: info.cert_pem_path,
            state,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(IntakeError::Runtime("intake thread exited before listening".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(base_url("0.0.0.0:80".parse().unwrap(), false), "http://127.0.0.1:80");
        assert_eq!(base_url("[::]:443".parse().unwrap(), true), "https://[::1]:443");
        assert_eq!(base_url("10.1.2.3:9".parse().unwrap(), true), "https://10.1.2.3:9");
    }

    #[test]
    fn errors_are_one_line() {
        let e = IntakeError::Bind {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        };
        assert_eq!(e.to_string(), "intake: cannot listen on 127.0.0.1:1: denied");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn embedded_starts_and_stops() {
        let e = spawn_embedded(IntakeConfig::default()).unwrap();
        assert!(e.base_url.starts_with("http://127.0.0.1:"));
        assert_eq!(e.stored_payloads(), 0);
        e.shutdown();
    }

    #[test]
    fn embedded_bind_error_is_reported() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let err = spawn_embedded(IntakeConfig::new(addr)).err().expect("must fail");
        assert!(err.to_string().contains("cannot listen"), "{err}");
    }
}
