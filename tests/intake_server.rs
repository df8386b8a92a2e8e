//! Drives the intake over real sockets (plain HTTP and HTTPS).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use edgestat::tools::intake::{self, IntakeConfig, IntakeHandle, TlsMode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

// ---------------------------------------------------------------- helpers

/// A series v2 payload as the Agent writes it (hex).
const SERIES_HEX: &str = "0a31 0a0a0a04686f737412026831 12016d 1a03613a62 2803 400a
    220f 1080e2cfaa06 09000000000000f03f 4a060a04200a280a";
/// A sketch payload as the Agent writes it (hex).
const SKETCH_HEX: &str = "0a4e 0a036c6174 12026831 2203613a62 3a36 0880e2cfaa06 1002
    19000000000000f03f 210000000000000840 290000000000000040 310000000000001040
    3a04f4148216 42020101 42060a04200a280a 1200";

fn unhex(h: &str) -> Vec<u8> {
    let h: String = h.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect()
}

fn expected_series() -> Value {
    json!({"series":[{"resources":[{"type":"host","name":"h1"}],"metric":"m","tags":["a:b"],
        "points":[{"timestamp":1700000000i64,"value":1.0}],"type":3,"type_name":"gauge",
        "unit":"","source_type_name":"","interval":10,
        "origin":{"product":10,"category":10,"service":0,"field3":0}}]})
}

fn zstd(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 1).unwrap()
}

fn compress(enc: &str, raw: &[u8]) -> Vec<u8> {
    match enc {
        "zstd" => zstd(raw),
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        "lz4" => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        _ => raw.to_vec(),
    }
}

/// Minimal HTTP/1.1 client: one connection per request unless reused.
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    tls: Option<(tokio_rustls::TlsConnector, String)>,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Client {
    fn plain(h: &IntakeHandle) -> Self {
        Client { addr: h.local_addr, tls: None }
    }

    async fn connect(&self) -> std::io::Result<Sender> {
        let tcp = TcpStream::connect(self.addr).await?;
        let io_err = |e: hyper::Error| std::io::Error::other(e);
        match &self.tls {
            None => {
                let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(io_err)?;
                tokio::spawn(conn);
                Ok(s)
            }
            Some((connector, name)) => {
                let sn = rustls::pki_types::ServerName::try_from(name.clone()).unwrap();
                let tls = connector.connect(sn, tcp).await?;
                let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(io_err)?;
                tokio::spawn(conn);
                Ok(s)
            }
        }
    }

    async fn send_on(
        s: &mut Sender,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(u16, Bytes), hyper::Error> {
        let mut b = http::Request::builder().method(method).uri(path).header("host", "localhost");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body))).unwrap();
        let resp = s.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    async fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Bytes) {
        let mut s = self.connect().await.expect("connect");
        Self::send_on(&mut s, method, path, headers, body).await.expect("request")
    }

    async fn post(&self, path: &str, enc: Option<&str>, body: Vec<u8>) -> u16 {
        let mut h = vec![("dd-api-key", "k1"), ("content-type", "application/x-protobuf")];
        if let Some(e) = enc {
            h.push(("content-encoding", e));
        }
        self.req("POST", path, &h, body).await.0
    }

    async fn get_json(&self, path: &str) -> Value {
        let (st, b) = self.req("GET", path, &[], vec![]).await;
        assert_eq!(st, 200, "GET {path}: {}", String::from_utf8_lossy(&b));
        serde_json::from_slice(&b).expect("json")
    }

    async fn payloads(&self, path: &str) -> Vec<Value> {
        let v = self.get_json(&format!("/intake/payloads?path={path}")).await;
        v.as_array().expect("array").clone()
    }

    async fn fail(&self, rule: Value) -> (u16, Value) {
        let (st, b) = self.req("POST", "/intake/fail", &[], serde_json::to_vec(&rule).unwrap()).await;
        (st, serde_json::from_slice(&b).expect("json answer"))
    }
}

async fn start_plain() -> IntakeHandle {
    intake::start(IntakeConfig::new("127.0.0.1:0".parse().unwrap())).await.expect("start")
}

fn tls_client(addr: SocketAddr, cert_pem: &Path, name: &str) -> Client {
    let mut roots = rustls::RootCertStore::empty();
    let data = std::fs::read(cert_pem).unwrap();
    for c in rustls_pemfile::certs(&mut &data[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Client { addr, tls: Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name.to_string())) }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn v2_series_zstd_is_decoded() {
    let h = start_plain().await;
    assert!(h.base_url.starts_with("http://127.0.0.1:"));
    let c = Client::plain(&h);
    let raw = unhex(SERIES_HEX);
    assert_eq!(raw.len(), 51);
    let body = zstd(&raw);
    let (st, resp) = c
        .req(
            "POST",
            "/api/v2/series?x=1",
            &[("DD-Api-Key", "k1"), ("Content-Encoding", "zstd"), ("DD-Agent-Payload", "v5.0.174")],
            body.clone(),
        )
        .await;
    assert_eq!(st, 202);
    assert_eq!(&resp[..], b"{}");
    let recs = c.payloads("/api/v2/series").await;
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r["seq"], 1);
    assert_eq!(r["method"], "POST");
    assert_eq!(r["path"], "/api/v2/series");
    assert_eq!(r["query"], "x=1");
    assert_eq!(r["headers"]["dd-api-key"], "k1");
    assert_eq!(r["headers"]["dd-agent-payload"], "v5.0.174");
    assert_eq!(r["content_encoding"], "zstd");
    assert_eq!(r["compressed_bytes"], body.len());
    assert_eq!(r["uncompressed_bytes"], 51);
    assert_eq!(r["answered"], 202);
    assert_eq!(r["decode_error"], Value::Null);
    assert!(r.get("body_b64").is_none());
    assert!(r["received_at_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(r["body"], expected_series());
    // In-process view agrees.
    assert_eq!(h.payloads(Some("/api/v2/series")).len(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn every_content_encoding() {
    let h = start_plain().await;
    let c = Client::plain(&h);
    let raw = unhex(SERIES_HEX);
    let encs = [Some("zstd"), Some("deflate"), Some("gzip"), Some("lz4"), Some("identity"), None];
    for enc in encs {
        let body = compress(enc.unwrap_or(""), &raw);
        assert_eq!(c.post("/api/v2/series", enc, body).await, 202, "{enc:?}");
    }
    let recs = c.payloads("/api/v2/series").await;
    assert_eq!(recs.len(), encs.len());
    for (r, enc) in recs.iter().zip(encs) {
        assert_eq!(r["decode_error"], Value::Null, "{enc:?}: {r}");
        assert_eq!(r["body"], expected_series(), "{enc:?}");
        assert_eq!(r["uncompressed_bytes"], 51);
        match enc {
            Some(e) => assert_eq!(r["content_encoding"], e),
            None => assert_eq!(r["content_encoding"], Value::Null),
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn sketch_payload_is_decoded() {
    let h = start_plain().await;
    let c = Client::plain(&h);
    assert_eq!(c.post("/api/beta/sketches", Some("zstd"), zstd(&unhex(SKETCH_HEX))).await, 202);
    let recs = c.payloads("/api/beta/sketches").await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["decode_error"], Value::Null);
    assert_eq!(
        recs[0]["body"],
        json!({"sketches":[{"metric":"lat","host":"h1","tags":["a:b"],"distributions":[],
            "dogsketches":[{"ts":1700000000i64,"cnt":2,"min":1.0,"max":3.0,"avg":2.0,"sum":4.0,
                "k":[1338,1409],"n":[1,1]}],
            "origin":{"product":10,"category":10,"service":0,"field3":0}}],
          "metadata":{"agent_version":"","timezone":"","current_epoch":0.0,"internal_ip":"",
            "public_ip":"","api_key":""}})
    );
    h.shutdown().await;
}

#[tokio::test]
async fn json_payloads_are_kept_verbatim() {
    let h = start_plain().await;
    let c = Client::plain(&h);
    let v1 = r#"{"series":[{"metric":"page.views","points":[[1700000000,0.4]],"tags":["a:1","b:2"],"host":"h1","type":"rate","interval":10},{"metric":"datadog.agent.running","points":[[1700000015,1]],"tags":["version:7.74.0"],"host":"h1","type":"gauge","interval":0,"source_type_name":"System"}]}"#;
    let checks =
        r#"[{"check":"datadog.agent.up","host_name":"h1","timestamp":1700000015,"status":0,"message":"","tags":null}]"#;
    let events = r#"{"apiKey":"","events":{"api":[{"msg_title":"Deploy","msg_text":"v1.2 ok","timestamp":1700000003,"priority":"low","host":"h1","tags":["env:prod"],"alert_type":"success"}]},"internalHostname":"h1"}"#;
    for (path, body) in [("/api/v1/series", v1), ("/api/v1/check_run", checks), ("/intake/", events)] {
        assert_eq!(c.post(path, Some("deflate"), compress("deflate", body.as_bytes())).await, 202);
        let recs = c.payloads(path).await;
        assert_eq!(recs.len(), 1, "{path}");
        assert_eq!(recs[0]["decode_error"], Value::Null);
        assert_eq!(recs[0]["body"], serde_json::from_str::<Value>(body).unwrap());
        // Byte-exact: the raw answer contains the original text (key order, `1` not `1.0`).
        let (_, raw) = c.req("GET", &format!("/intake/payloads?path={path}"), &[], vec![]).await;
        assert!(String::from_utf8_lossy(&raw).contains(body), "{path} not verbatim");
    }
    // Broken JSON on a JSON path: stored, flagged, raw kept.
    assert_eq!(c.post("/api/v1/check_run", None, b"[{\"check\":".to_vec()).await, 202);
    let recs = c.payloads("/api/v1/check_run").await;
    assert!(recs[1]["decode_error"].as_str().unwrap().starts_with("json:"));
    assert_eq!(recs[1]["body"], Value::Null);
    assert!(recs[1]["body_b64"].is_string());
    h.shutdown().await;
}

#[tokio::test]
async fn orchestrator_process_message_is_decoded() {
    let h = start_plain().await;
    let c = Client::plain(&h);
    // CollectorPod: hostName "n1", clusterName "c", clusterId "uid", groupId 1, groupSize 1.
    let inner = b"\x0a\x02n1\x12\x01c\x1a\x03uid\x20\x01\x28\x01".to_vec();
    let mut msg = vec![3u8, 4, 41, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    msg.extend(zstd(&inner));
    assert_eq!(c.post("/api/v2/orch", None, msg).await, 202);
    let r = &c.payloads("/api/v2/orch").await[0];
    assert_eq!(r["decode_error"], Value::Null);
    let b = &r["body"];
    assert_eq!((b["version"].clone(), b["encoding"].clone(), b["type"].clone()), (json!(3), json!(4), json!(41)));
    assert_eq!(b["type_name"], "CollectorPod");
    assert_eq!(b["decompressed"], true);
    let dec = base64::engine::general_purpose::STANDARD.decode(b["body_b64"].as_str().unwrap()).unwrap();
    assert_eq!(dec, inner);
    assert_eq!(
        b["collector"],
        json!({"host_name":"n1","cluster_name":"c","cluster_id":"uid","group_id":1,
            "group_size":1,"items":0,"tags":[]})
    );
    h.shutdown().await;
}

#[tokio::test]
async fn fail_injection_count_path_and_answered_filter() {
    let h = start_plain().await;
    let c = Client::plain(&h);
    let (st, ans) = c.fail(json!({"status": 503, "count": 3, "path": "/api/v2/series"})).await;
    assert_eq!(st, 200, "{ans}");
    assert_eq!(ans["rules"], 1);
    let raw = zstd(&unhex(SERIES_HEX));
    // Other paths are not affected by the path filter.
    assert_eq!(c.post("/api/beta/sketches", Some("zstd"), zstd(&unhex(SKETCH_HEX))).await, 202);
    let mut got = vec![];
    for _ in 0..4 {
        got.push(c.post("/api/v2/series", Some("zstd"), raw.clone()).await);
    }
    assert_eq!(got, vec![503, 503, 503, 202]);
    let recs = c.payloads("/api/v2/series").await;
    let answered: Vec<u64> = recs.iter().map(|r| r["answered"].as_u64().unwrap()).collect();
    assert_eq!(answered, vec![503, 503, 503, 202]);
    // Failed attempts are decoded too.
    assert_eq!(recs[0]["body"], expected_series());
    let only503 = c.get_json("/intake/payloads?path=/api/v2/series&answered=503").await;
    assert_eq!(only503.as_array().unwrap().len(), 3);
    let stats = c.get_json("/intake/stats").await;
    assert_eq!(stats["by_path"]["/api/v2/series"], 4);
    assert_eq!(stats["by_answered"]["503"], 3);
    assert_eq!(stats["by_answered"]["202"], 2);
    assert_eq!(stats["fail_rules"], 0);

    // A path-less rule applies to any payload path; rules queue in order.
    c.fail(json!({"status": 500, "count": 1})).await;
    c.fail(json!({"status": 429, "count": 1})).await;
    assert_eq!(c.post("/api/v1/series", None, b"{}".to_vec()).await, 500);
    assert_eq!(c.post("/intake/", None, b"{}".to_vec()).await, 429);
    assert_eq!(c.post("/intake/", None, b"{}".to_vec()).await, 202);

    // DELETE clears rules.
    c.fail(json!({"status": 503, "count": 100})).await;
    assert_eq!(c.get_json("/intake/fail").await.as_array().unwrap().len(), 1);
    let (st, _) = c.req("DELETE", "/intake/fail", &[], vec![]).await;
    assert_eq!(st, 200);
    assert_eq!(c.post("/api/v2/series", Some("zstd"), raw).await, 202);
    h.shutdown().await;
}

#[tokio::test]
async fn fail_rule_validation() {
    let h = start_plain().await;
    let c = Client::plain(&h);
    for bad in [
        b"not json".to_vec(),
        br#"{"status": 503, "cont": 3}"#.to_vec(),
        br#"{"status": 503, "count": 1000001}"#.to_vec(),
        br#"{"status": 503, "count": 0}"#.to_vec(),
        br#"{"status": 42}"#.to_vec(),
        br#"{"count": 3}"#.to_vec(),
        br#"{"status": 503, "path": "api"}"#.to_vec(),
    ] {
        let (st, b) = c.req("POST", "/intake/fail", &[], bad.clone()).await;
        assert_eq!(st, 400, "{}", String::from_utf8_lossy(&bad));
        let v: Value = serde_json::from_slice(&b).expect("JSON error body");
        assert!(v["errors"][0].is_string());
    }
    assert_eq!(c.get_json("/intake/stats").await["fail_rules"], 0);
    h.shutdown().await;
}

#[tokio::test]
async fn fail_injection_delay_and_hangup() {
    let h = start_plain().await;
    let c = Client::plain(&h);
    c.fail(json!({"status": 500, "count": 1, "delay_ms": 300})).await;
    let t = Instant::now();
    assert_eq!(c.post("/api/v1/series", None, b"{}".to_vec()).await, 500);
    assert!(t.elapsed() >= Duration::from_millis(300));

    // status 0: held, then closed without an answer.
    c.fail(json!({"status": 0, "count": 1, "delay_ms": 300, "path": "/api/v2/series"})).await;
    let mut s = c.connect().await.unwrap();
    let t = Instant::now();
    let r = Client::send_on(&mut s, "POST", "/api/v2/series", &[], unhex(SERIES_HEX)).await;
    assert!(r.is_err(), "expected no answer, got {:?}", r.map(|x| x.0));
    assert!(t.elapsed() >= Duration::from_millis(300));
    // The attempt is recorded while it hangs, answered 0.
    let recs = c.payloads("/api/v2/series").await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["answered"], 0);
    h.shutdown().await;
}

#[tokio::test]
async fn https_self_signed_trusted_by_rustls_client() {
    let dir = tempfile::tempdir().unwrap();
    let certdir = dir.path().join("tls");
    let cfg = IntakeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: TlsMode::SelfSigned { dir: certdir.clone() },
        data_dir: None,
        data_max_bytes: intake::store::DEFAULT_DATA_MAX_BYTES,
        max_stored_payloads: 1000,
        throttle_bytes_per_sec: 0,
    };
    let h = intake::start(cfg.clone()).await.unwrap();
    assert!(h.base_url.starts_with("https://127.0.0.1:"), "{}", h.base_url);
    let cert = h.cert_pem_path.clone().unwrap();
    assert_eq!(cert, certdir.join("cert.pem"));
    assert!(certdir.join("key.pem").is_file());
    let pem1 = std::fs::read(&cert).unwrap();

    for name in ["localhost", "127.0.0.1"] {
        let c = tls_client(h.local_addr, &cert, name);
        assert_eq!(c.post("/api/v2/series", Some("zstd"), zstd(&unhex(SERIES_HEX))).await, 202);
    }
    let c = tls_client(h.local_addr, &cert, "localhost");
    // Keep-alive over TLS: several requests on one connection.
    let mut s = c.connect().await.unwrap();
    for _ in 0..3 {
        let (st, _) = Client::send_on(&mut s, "GET", "/intake/health", &[], vec![]).await.unwrap();
        assert_eq!(st, 200);
    }
    let recs = c.payloads("/api/v2/series").await;
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["body"], expected_series());

    // A client trusting some other certificate is refused.
    let other = tempfile::tempdir().unwrap();
    let (other_cert, _) = intake::tls::ensure_self_signed(other.path(), None).unwrap();
    let bad = tls_client(h.local_addr, &other_cert, "localhost");
    assert!(bad.connect().await.is_err());
    h.shutdown().await;

    // Restart: the pair is reused; Files mode serves the same files.
    let h2 = intake::start(cfg).await.unwrap();
    assert_eq!(std::fs::read(&cert).unwrap(), pem1);
    let c = tls_client(h2.local_addr, &cert, "localhost");
    assert_eq!(c.get_json("/intake/health").await["status"], "ok");
    h2.shutdown().await;
    let h3 = intake::start(IntakeConfig {
        tls: TlsMode::Files { cert: cert.clone(), key: certdir.join("key.pem") },
        ..IntakeConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(h3.cert_pem_path.as_deref(), Some(cert.as_path()));
    let c = tls_client(h3.local_addr, &cert, "localhost");
    assert_eq!(c.post("/api/v1/series", None, b"{}".to_vec()).await, 202);
    h3.shutdown().await;
}

#[tokio::test]
async fn tls_files_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.pem");
    let err =
        intake::start(IntakeConfig { tls: TlsMode::Files { cert: p.clone(), key: p }, ..IntakeConfig::default() })
            .await
            .err()
            .expect("must fail");
    let s = err.to_string();
    assert!(s.starts_with("intake: TLS: cannot read certificate"), "{s}");
}

#[tokio::test]
async fn data_dir_gets_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data/sub");
    let h = intake::start(IntakeConfig { data_dir: Some(data.clone()), ..IntakeConfig::default() }).await.unwrap();
    let c = Client::plain(&h);
    assert_eq!(c.post("/api/v2/series", Some("gzip"), compress("gzip", &unhex(SERIES_HEX))).await, 202);
    assert_eq!(c.post("/api/v1/check_run", None, b"[]".to_vec()).await, 202);
    h.shutdown().await;
    let text = std::fs::read_to_string(data.join("payloads.jsonl")).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["path"], "/api/v2/series");
    assert_eq!(lines[0]["body"], expected_series());
    assert_eq!(lines[1]["body"], json!([]));
}

#[tokio::test]
async fn unknown_encoding_is_stored_raw() {
    let h = start_plain().await;
    let c = Client::plain(&h);
    let raw = b"\x0b\x01\x02brotli?".to_vec();
    assert_eq!(c.post("/api/v2/series", Some("br"), raw.clone()).await, 202);
    // Corrupt zstd too.
    assert_eq!(c.post("/api/v2/series", Some("zstd"), b"garbage".to_vec()).await, 202);
    let recs = c.payloads("/api/v2/series").await;
    let r = &recs[0];
    assert!(r["decode_error"].as_str().unwrap().contains("unsupported content-encoding"), "{r}");
    assert_eq!(r["body"], Value::Null);
    assert_eq!(r["uncompressed_bytes"], Value::Null);
    assert_eq!(r["body_b64"], base64::engine::general_purpose::STANDARD.encode(&raw));
    assert!(recs[1]["decode_error"].as_str().unwrap().starts_with("zstd"));
    h.shutdown().await;
}

#[tokio::test]
async fn oversized_body_gets_413() {
    let h = start_plain().await;
    let c = Client::plain(&h);
    let big = vec![b'x'; 64 * 1024 * 1024 + 1];
    assert_eq!(c.post("/api/v2/series", None, big).await, 413);
    let recs = c.payloads("/api/v2/series").await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["answered"], 413);
    assert!(recs[0]["decode_error"].as_str().unwrap().contains("exceeds"));
    // Server still fine afterwards.
    assert_eq!(c.post("/api/v2/series", None, unhex(SERIES_HEX)).await, 202);
    h.shutdown().await;
}

#[tokio::test]
async fn control_routes_health_stats_validate_clear() {
    let h = start_plain().await;
    let c = Client::plain(&h);
    assert_eq!(c.get_json("/intake/health").await, json!({"status":"ok","payloads":0}));
    // Keep-alive: several payloads over one plain connection.
    let mut s = c.connect().await.unwrap();
    for _ in 0..3 {
        let (st, _) = Client::send_on(&mut s, "POST", "/api/v2/series", &[], unhex(SERIES_HEX)).await.unwrap();
        assert_eq!(st, 202);
    }
    assert_eq!(c.get_json("/intake/health").await["payloads"], 3);
    let all = c.get_json("/intake/payloads").await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    let since = c.get_json("/intake/payloads?since=2").await;
    assert_eq!(since.as_array().unwrap().len(), 1);
    let encoded = c.get_json("/intake/payloads?path=%2Fapi%2Fv2%2Fseries").await;
    assert_eq!(encoded.as_array().unwrap().len(), 3);

    let (st, b) = c.req("GET", "/api/v1/validate", &[("DD-API-KEY", "good")], vec![]).await;
    assert_eq!((st, &b[..]), (200, &b"{\"valid\":true}"[..]));
    assert_eq!(c.req("GET", "/api/v1/validate", &[("DD-API-KEY", "invalid")], vec![]).await.0, 403);
    assert_eq!(c.req("GET", "/api/v1/validate?api_key=invalid", &[], vec![]).await.0, 403);
    assert_eq!(c.get_json("/intake/stats").await["validate_requests"], 3);

    assert_eq!(c.req("GET", "/nope", &[], vec![]).await.0, 404);
    assert_eq!(c.req("POST", "/intake/payloads", &[], vec![]).await.0, 405);

    let (st, _) = c.req("DELETE", "/intake/payloads", &[], vec![]).await;
    assert_eq!(st, 200);
    assert_eq!(c.get_json("/intake/health").await["payloads"], 0);
    h.shutdown().await;
}

#[tokio::test]
async fn stored_payloads_are_bounded() {
    let h = intake::start(IntakeConfig { max_stored_payloads: 3, ..IntakeConfig::default() }).await.unwrap();
    let c = Client::plain(&h);
    for _ in 0..5 {
        assert_eq!(c.post("/api/v1/series", None, b"{}".to_vec()).await, 202);
    }
    let all = c.get_json("/intake/payloads").await;
    let seqs: Vec<u64> = all.as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![3, 4, 5]);
    let st = c.get_json("/intake/stats").await;
    assert_eq!(st["evicted"], 2);
    assert_eq!(st["received"], 5);
    h.shutdown().await;
}

#[tokio::test]
async fn embedded_intake_on_its_own_thread() {
    let dir = tempfile::tempdir().unwrap();
    let e =
        intake::spawn_embedded(IntakeConfig { data_dir: Some(dir.path().to_path_buf()), ..IntakeConfig::default() })
            .unwrap();
    let c = Client { addr: e.local_addr, tls: None };
    assert_eq!(c.post("/api/v2/series", Some("lz4"), compress("lz4", &unhex(SERIES_HEX))).await, 202);
    assert_eq!(e.stored_payloads(), 1);
    assert_eq!(e.payloads(None)[0]["body"], expected_series());
    e.shutdown();
    assert!(TcpStream::connect(c.addr).await.is_err(), "listener closed after shutdown");
    assert!(std::fs::read_to_string(dir.path().join("payloads.jsonl")).unwrap().lines().count() == 1);
}

/// Rough throughput check (`cargo test --release -- --ignored --nocapture`).
#[tokio::test]
#[ignore]
async fn throughput_keep_alive() {
    let h = start_plain().await;
    let c = Client::plain(&h);
    let body = zstd(&unhex(SERIES_HEX));
    let n = 20_000;
    let t = Instant::now();
    let mut tasks = vec![];
    for _ in 0..4 {
        let c = c.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = c.connect().await.unwrap();
            for _ in 0..n / 4 {
                let r =
                    Client::send_on(&mut s, "POST", "/api/v2/series", &[("content-encoding", "zstd")], body.clone())
                        .await;
                assert_eq!(r.unwrap().0, 202);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let el = t.elapsed();
    eprintln!("{n} POSTs in {el:?} = {:.0}/s", n as f64 / el.as_secs_f64());
    let t = Instant::now();
    let all = c.payloads("/api/v2/series").await;
    eprintln!("query of {} records in {:?}", all.len(), t.elapsed());
    h.shutdown().await;
}
