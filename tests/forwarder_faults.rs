//! Black-box fault tests of the forwarder: the real `edgestat run` against a
//! real HTTPS `edgestat intake` with injected failures, killed and restarted
//! intakes, a CONNECT proxy and disk spill. Counters come from the
//! forwarder's shutdown line. Every wait is bounded.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

/// Fast flushes and a fast breaker (base 50 ms, max 400 ms).
const FAST: &[(&str, &str)] = &[
    ("EDGESTAT_FLUSH_INTERVAL", "500ms"),
    ("DD_FORWARDER_BACKOFF_BASE", "0.05"),
    ("DD_FORWARDER_BACKOFF_MAX", "0.4"),
    ("DD_FORWARDER_TIMEOUT", "3"),
    ("EDGESTAT_SHUTDOWN_TIMEOUT", "15s"),
];

fn env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v: Vec<(&str, &str)> = FAST.to_vec();
    for (k, val) in extra {
        v.retain(|(kk, _)| kk != k);
        v.push((k, val));
    }
    v
}

/// Starts `edgestat run` shipping to `url` (trusting `cert`) with `extra`.
fn agent_to(url: &str, cert: &std::path::Path, extra: &[(&str, &str)]) -> Agent {
    let cert = cert.display().to_string();
    let mut e = env(extra);
    e.push(("DD_DD_URL", url));
    if !e.iter().any(|(k, _)| *k == "DD_API_KEY") {
        e.push(("DD_API_KEY", "test-api-key"));
    }
    if !e.iter().any(|(k, _)| *k == "SSL_CERT_FILE" || *k == "DD_SKIP_SSL_VALIDATION") {
        e.push(("SSL_CERT_FILE", &cert));
    }
    Agent::start(None, &e)
}

/// Sends `n` counters `ff.<name>` tagged `i:<k>`, one datagram each.
fn send_marked(agent: &Agent, name: &str, n: usize) {
    for k in 0..n {
        agent.send_udp(format!("ff.{name}:1|c|#i:{k}").as_bytes());
    }
    std::thread::sleep(Duration::from_millis(300));
}

/// Accepted (202) payloads only.
fn accepted(intake: &Intake) -> Vec<Value> {
    intake.payloads(None).into_iter().filter(|p| p["answered"] == 202).collect()
}

/// How many points each `i:<k>` tag of `ff.<name>` got in accepted payloads.
fn marks(intake: &Intake, name: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for s in series_from(&accepted(intake)) {
        if s.metric == format!("ff.{name}") {
            for t in &s.tags {
                *out.entry(t.clone()).or_insert(0) += s.points.len();
            }
        }
    }
    out
}

fn assert_each_once(intake: &Intake, name: &str, n: usize) {
    let m = marks(intake, name);
    for k in 0..n {
        assert_eq!(m.get(&format!("i:{k}")), Some(&1), "ff.{name} i:{k} must arrive exactly once: {m:?}");
    }
}

fn answered(intake: &Intake, path: &str, status: u64) -> usize {
    intake.payloads(Some(path)).iter().filter(|p| p["answered"] == status).count()
}

fn stop_ok(agent: Agent) -> (HashMap<String, u64>, Vec<String>) {
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0, "stderr:\n{}", stderr.join("\n"));
    (forwarder_stats(&stderr), stderr)
}

fn wait_for(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    pred()
}

/// An intake on a fixed port that is down (its certificate already exists).
fn down_intake() -> Intake {
    let port = free_tcp_port();
    let mut i = Intake::start_tls_at(&format!("127.0.0.1:{port}"), tempfile::tempdir().unwrap());
    i.kill();
    i
}

#[test]
fn storm_of_5xx_then_recovery_loses_nothing() {
    let intake = Intake::start_tls();
    intake.fail(json!({"status": 503, "count": 6, "path": "/api/v2/series"}));
    intake.fail(json!({"status": 500, "count": 6, "path": "/api/v2/series"}));
    let agent = Agent::start(Some(&intake), &env(&[]));
    send_marked(&agent, "storm", 20);
    let (st, _) = stop_ok(agent);
    assert_each_once(&intake, "storm", 20);
    assert_eq!(answered(&intake, "/api/v2/series", 503), 6);
    assert_eq!(answered(&intake, "/api/v2/series", 500), 6);
    assert_eq!(st["errors_http"], 12, "{st:?}");
    assert_eq!(st["dropped"], 0, "{st:?}");
    assert_eq!(st["input"], st["success"], "{st:?}");
}

#[test]
fn rejected_statuses_are_dropped_counted_and_logged_once() {
    let intake = Intake::start_tls();
    intake.fail(json!({"status": 400, "count": 3, "path": "/api/v2/series"}));
    intake.fail(json!({"status": 403, "count": 1, "path": "/api/v2/series"}));
    intake.fail(json!({"status": 413, "count": 1, "path": "/api/v2/series"}));
    let agent = Agent::start(Some(&intake), &env(&[]));
    // Periodic flushes (agent.running) meet the five rejections.
    assert!(wait_for(Duration::from_secs(15), || answered(&intake, "/api/v2/series", 202) >= 2));
    let (st, stderr) = stop_ok(agent);
    assert_eq!(st["dropped_rejected"], 5, "{st:?}");
    assert_eq!(st["errors"], 0, "rejections are not retried: {st:?}");
    for (code, n) in [(400, 3), (403, 1), (413, 1)] {
        assert_eq!(answered(&intake, "/api/v2/series", code), n, "status {code} seen once per rule use, never retried");
    }
    let logged = stderr.iter().filter(|l| l.contains("intake rejected a payload")).count();
    assert_eq!(logged, 3, "one line per status:\n{}", stderr.join("\n"));
    assert_eq!(st["input"], st["success"] + 5, "{st:?}");
}

#[test]
fn intake_down_at_start_then_up_delivers_everything() {
    let mut intake = down_intake();
    let agent = agent_to(&intake.url.clone(), &intake.cert.clone(), &[]);
    send_marked(&agent, "down", 10);
    std::thread::sleep(Duration::from_secs(2));
    intake.restart();
    // Recovery while running: periodic payloads arrive again.
    assert!(wait_for(Duration::from_secs(15), || answered(&intake, "/api/v1/check_run", 202) >= 1));
    let (st, _) = stop_ok(agent);
    assert_each_once(&intake, "down", 10);
    assert!(st["errors_connection"] > 0, "{st:?}");
    assert_eq!(st["dropped"], 0, "{st:?}");
    assert_eq!(st["input"], st["success"], "{st:?}");
}

#[test]
fn hanging_intake_times_out_and_is_retried() {
    let intake = Intake::start_tls();
    intake.fail(json!({"status": 0, "count": 2, "delay_ms": 4000, "path": "/api/v2/series"}));
    let agent = Agent::start(Some(&intake), &env(&[("DD_FORWARDER_TIMEOUT", "1")]));
    send_marked(&agent, "hang", 5);
    let (st, _) = stop_ok(agent);
    assert_each_once(&intake, "hang", 5);
    assert_eq!(st["errors_timeout"], 2, "{st:?}");
    assert_eq!(st["dropped"], 0, "{st:?}");
}

#[test]
fn untrusted_certificate_is_never_sent_and_skip_validation_works() {
    let intake = Intake::start_tls();
    // No SSL_CERT_FILE: the self-signed certificate is not trusted.
    let agent = Agent::start(
        None,
        &env(&[
            ("DD_DD_URL", &intake.url),
            ("DD_API_KEY", "k"),
            ("EDGESTAT_SHUTDOWN_TIMEOUT", "2s"),
            ("SSL_CERT_FILE", ""),
        ]),
    );
    send_marked(&agent, "tls", 3);
    std::thread::sleep(Duration::from_secs(1));
    let (st, stderr) = stop_ok(agent);
    assert!(intake.payloads(None).is_empty(), "nothing may reach an untrusted server");
    assert!(st["errors_tls"] > 0, "{st:?}\n{}", stderr.join("\n"));
    assert_eq!(st["success"], 0);
    assert_eq!(st["dropped_shutdown"], st["input"], "storage off: all counted at shutdown: {st:?}");

    let agent = Agent::start(
        None,
        &env(&[("DD_DD_URL", &intake.url), ("DD_API_KEY", "k"), ("DD_SKIP_SSL_VALIDATION", "true")]),
    );
    send_marked(&agent, "tls", 3);
    let (st, _) = stop_ok(agent);
    assert_each_once(&intake, "tls", 3);
    assert_eq!(st["errors_tls"], 0, "{st:?}");
}

#[test]
fn two_endpoints_fail_and_recover_independently() {
    let a = Intake::start_tls();
    let mut b = down_intake();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle.pem");
    let pem = [std::fs::read(&a.cert).unwrap(), std::fs::read(&b.cert).unwrap()].concat();
    std::fs::write(&bundle, pem).unwrap();
    let extra = format!(r#"{{"{}": ["k2", "k3"]}}"#, b.url);
    let agent = agent_to(&a.url, &bundle, &[("DD_ADDITIONAL_ENDPOINTS", &extra)]);
    send_marked(&agent, "two", 5);
    // A is not delayed by B being down.
    assert!(wait_for(Duration::from_secs(10), || answered(&a, "/api/v1/check_run", 202) >= 3));
    b.restart();
    assert!(wait_for(Duration::from_secs(15), || answered(&b, "/api/v1/check_run", 202) >= 2));
    let (st, _) = stop_ok(agent);
    assert_each_once(&a, "two", 5);
    // B gets one transaction per key.
    let m = marks(&b, "two");
    for k in 0..5 {
        assert_eq!(m.get(&format!("i:{k}")), Some(&2), "{m:?}");
    }
    let keys: std::collections::BTreeSet<String> =
        accepted(&b).iter().filter_map(|p| p["headers"]["dd-api-key"].as_str().map(str::to_string)).collect();
    assert_eq!(keys.into_iter().collect::<Vec<_>>(), vec!["k2", "k3"]);
    assert_eq!(st["dropped"], 0, "{st:?}");
    assert!(st["errors_connection"] > 0, "{st:?}");
}

#[test]
fn sigterm_with_intake_down_spills_then_restart_delivers_once() {
    let mut intake = down_intake();
    let spill = tempfile::tempdir().unwrap();
    let spill_path = spill.path().display().to_string();
    let storage = [
        ("DD_FORWARDER_STORAGE_PATH", spill_path.as_str()),
        ("DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES", "10000000"),
        ("EDGESTAT_SHUTDOWN_TIMEOUT", "2s"),
    ];
    let agent = agent_to(&intake.url.clone(), &intake.cert.clone(), &storage);
    send_marked(&agent, "spill", 10);
    let (st1, _) = stop_ok(agent);
    assert!(st1["spilled"] > 0, "{st1:?}");
    assert_eq!(st1["dropped"], 0, "{st1:?}");
    assert_eq!(st1["success"], 0, "{st1:?}");

    intake.restart();
    let agent = agent_to(&intake.url.clone(), &intake.cert.clone(), &storage);
    assert!(wait_for(Duration::from_secs(15), || marks(&intake, "spill").len() == 10));
    let (st2, _) = stop_ok(agent);
    assert_each_once(&intake, "spill", 10);
    assert_eq!(st2["spill_replayed"], st1["spilled"], "{st1:?} {st2:?}");
    assert_eq!(st2["dropped"], 0, "{st2:?}");
    let left: Vec<_> = walk(spill.path()).into_iter().filter(|p| p.ends_with(".tx")).collect();
    assert!(left.is_empty(), "delivered files are deleted: {left:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn corrupt_and_truncated_spill_files_are_skipped_and_counted() {
    use edgestat::agent::forwarder::spill::{encode, folder_for, SpillHeader};
    let intake = Intake::start_tls();
    let spill = tempfile::tempdir().unwrap();
    let dir = spill.path().join(folder_for(&intake.url));
    std::fs::create_dir_all(&dir).unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let body =
        json!([{"check": "ff.spilled", "host_name": "h1", "status": 0, "timestamp": now, "message": ""}]).to_string();
    let header = SpillHeader {
        kind: "service_checks".into(),
        path: "/api/v1/check_run".into(),
        headers: vec![("Content-Type".into(), "application/json".into())],
        key_index: Some(0),
        created_ms: now * 1000,
    };
    let good = encode(&header, body.as_bytes());
    std::fs::write(dir.join("0000000000000001-1-00000001.tx"), b"not a spill file at all").unwrap();
    std::fs::write(dir.join("0000000000000002-1-00000002.tx"), &good[..good.len() - 7]).unwrap();
    std::fs::write(dir.join("0000000000000003-1-00000003.tx"), &good).unwrap();
    let sp = spill.path().display().to_string();
    let agent = Agent::start(
        Some(&intake),
        &env(&[("DD_FORWARDER_STORAGE_PATH", &sp), ("DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES", "1000000")]),
    );
    let replayed = || {
        accepted(&intake)
            .iter()
            .filter(|p| p["path"] == "/api/v1/check_run")
            .filter(|p| p["body"].as_array().is_some_and(|a| a.iter().any(|c| c["check"] == "ff.spilled")))
            .count()
    };
    assert!(wait_for(Duration::from_secs(10), || replayed() == 1));
    let (st, stderr) = stop_ok(agent);
    assert_eq!(replayed(), 1);
    assert_eq!(st["dropped_spill_corrupt"], 2, "{st:?}");
    assert_eq!(st["spill_replayed"], 1, "{st:?}");
    assert_eq!(stderr.iter().filter(|l| l.contains("skipped an unreadable spill file")).count(), 2);
    assert!(walk(spill.path()).iter().all(|p| !p.ends_with(".tx")));
}

#[test]
fn retry_queue_overflow_drops_oldest_with_exact_counts() {
    let mut intake = down_intake();
    let t0 = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let agent =
        agent_to(&intake.url.clone(), &intake.cert.clone(), &[("DD_FORWARDER_RETRY_QUEUE_PAYLOADS_MAX_SIZE", "1500")]);
    // ~10 flushes (2 payloads each) pile up against a 1500-byte queue.
    std::thread::sleep(Duration::from_secs(5));
    intake.restart();
    assert!(wait_for(Duration::from_secs(15), || answered(&intake, "/api/v1/check_run", 202) >= 3));
    let (st, stderr) = stop_ok(agent);
    assert!(st["dropped_retry_queue_full"] > 0, "{st:?}");
    assert_eq!(
        st["input"],
        st["success"] + st["dropped_retry_queue_full"],
        "every transaction is delivered or counted: {st:?}"
    );
    assert_eq!(st["dropped"], st["dropped_retry_queue_full"], "{st:?}");
    let delivered = intake.payloads(None).iter().filter(|p| p["answered"] == 202).count() as u64;
    assert_eq!(delivered, st["success"], "no duplicates");
    assert_eq!(stderr.iter().filter(|l| l.contains("retry queue full")).count(), 1, "logged once");
    // Oldest first: the first flushes of the outage are gone.
    let first = series_from(&accepted(&intake))
        .iter()
        .filter(|s| s.metric == "datadog.agent.running")
        .map(|s| s.points[0].0)
        .min()
        .unwrap();
    assert!(first >= t0 + 2, "oldest payloads should have been dropped: first delivered {first}, start {t0}");
}

/// A minimal HTTP CONNECT proxy on 127.0.0.1 that records its targets.
fn connect_proxy() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut c = c;
                let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if c.read(&mut b).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let target = text.split_whitespace().nth(1).unwrap_or("").to_string();
                if !text.starts_with("CONNECT ") {
                    let _ = c.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n");
                    return;
                }
                s.lock().unwrap().push(target.clone());
                let Ok(up) = TcpStream::connect(&target) else {
                    let _ = c.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                    return;
                };
                let _ = c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                let _ = c.set_read_timeout(None);
                let (mut c2, mut up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
                let (mut c1, mut up1) = (c, up);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut up2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut c1, &mut up1);
                let _ = up1.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, seen)
}

#[test]
fn connect_proxy_is_used_and_no_proxy_bypasses_it() {
    let intake = Intake::start_tls();
    let (pport, seen) = connect_proxy();
    let proxy = format!("http://127.0.0.1:{pport}");
    let agent = Agent::start(Some(&intake), &env(&[("DD_PROXY_HTTPS", &proxy)]));
    send_marked(&agent, "proxy", 3);
    let (st, _) = stop_ok(agent);
    assert_each_once(&intake, "proxy", 3);
    assert_eq!(st["dropped"], 0);
    let targets = seen.lock().unwrap().clone();
    assert!(!targets.is_empty(), "the proxy saw no CONNECT");
    let want = format!("127.0.0.1:{}", intake.port());
    assert!(targets.iter().all(|t| *t == want), "{targets:?}");
    let n = targets.len();

    let agent = Agent::start(Some(&intake), &env(&[("DD_PROXY_HTTPS", &proxy), ("DD_NO_PROXY", "127.0.0.1")]));
    send_marked(&agent, "direct", 3);
    stop_ok(agent);
    assert_each_once(&intake, "direct", 3);
    assert_eq!(seen.lock().unwrap().len(), n, "DD_NO_PROXY hosts go direct");
}

#[test]
fn api_key_validation_is_logged_and_never_blocks() {
    let intake = Intake::start_tls();
    let agent = Agent::start(Some(&intake), &env(&[("DD_API_KEY", "invalid")]));
    assert!(agent.stderr.wait_for("API key is invalid", Duration::from_secs(10)).is_some());
    send_marked(&agent, "key", 2);
    let (st, _) = stop_ok(agent);
    assert_each_once(&intake, "key", 2);
    assert_eq!(st["apikey_invalid"], 1, "{st:?}");

    let agent = Agent::start(Some(&intake), &env(&[]));
    assert!(agent.stderr.wait_for("API key is valid", Duration::from_secs(10)).is_some());
    let (st, _) = stop_ok(agent);
    assert_eq!(st["apikey_valid"], 1, "{st:?}");
}

#[test]
fn second_signal_exits_at_once() {
    let intake = down_intake();
    let mut agent = agent_to(&intake.url.clone(), &intake.cert.clone(), &[("EDGESTAT_SHUTDOWN_TIMEOUT", "60s")]);
    send_marked(&agent, "sig", 2);
    agent.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    agent.signal(libc::SIGTERM);
    let end = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(st) = agent.child.try_wait().unwrap() {
            break st.code();
        }
        assert!(Instant::now() < end, "a second signal must exit at once");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(code, Some(1));
}
