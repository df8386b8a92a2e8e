//! TCP connections for one endpoint: direct, or through an HTTP CONNECT
//! proxy (`DD_PROXY_HTTPS` / `DD_PROXY_HTTP`, skipped for `DD_NO_PROXY`
//! hosts). TLS (rustls, SNI of the endpoint host) is layered on top by
//! `hyper-rustls`, so a proxied TLS session is end to end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tower_service::Service;

/// Boxed connector error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Direct or tunnelled TCP.
#[derive(Clone)]
pub enum EndpointConnector {
    /// Straight to the endpoint.
    Direct(HttpConnector),
    /// Through a CONNECT proxy.
    Tunnel(Tunnel<HttpConnector>),
}

impl Service<Uri> for EndpointConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Self::Direct(c) => c.poll_ready(cx).map_err(Into::into),
            Self::Tunnel(t) => t.poll_ready(cx).map_err(|e| format!("proxy: {e:?}").into()),
        }
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self {
            Self::Direct(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            Self::Tunnel(t) => {
                let f = t.call(dst);
                Box::pin(async move { f.await.map_err(|e| format!("proxy CONNECT failed: {e:?}").into()) })
            }
        }
    }
}

/// The HTTP client of one endpoint.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<EndpointConnector>, Full<Bytes>>;

/// Proxy settings (`proxy.*`).
#[derive(Debug, Clone, Default)]
pub struct ProxySettings {
    /// Proxy for https endpoints.
    pub https: Option<String>,
    /// Proxy for http endpoints.
    pub http: Option<String>,
    /// Hosts (and domains, `.example.com`) reached directly.
    pub no_proxy: Vec<String>,
}

/// Builds the client for `base_url`; returns it and the proxy used, if any.
pub fn client_for(base_url: &str, tls: rustls::ClientConfig, proxy: &ProxySettings) -> (HttpClient, Option<String>) {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(30)));
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let matcher = Matcher::builder()
        .https(proxy.https.clone().unwrap_or_default())
        .http(proxy.http.clone().unwrap_or_default())
        .no(proxy.no_proxy.join(","))
        .build();
    let mut used = None;
    let inner = match base_url.parse::<Uri>().ok().and_then(|u| matcher.intercept(&u)) {
        Some(i) => {
            used = Some(i.uri().to_string());
            let mut t = Tunnel::new(i.uri().clone(), http);
            if let Some(auth) = i.basic_auth() {
                t = t.with_auth(auth.clone());
            }
            EndpointConnector::Tunnel(t)
        }
        None => EndpointConnector::Direct(http),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(inner);
    let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).build(connector);
    (client, used)
}
