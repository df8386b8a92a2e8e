//! End to end: DogStatsD over UDP and a Unix socket into `edgestat run`,
//! HTTPS into `edgestat intake`, SIGTERM, then every value checked.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const TRAFFIC: &[&[u8]] = &[
    b"page.views:1|c|#b:2,a:1\npage.views:1|c|#a:1,b:2\n",
    b"page.views:1|c|@0.5|#a:1,b:2,a:1",
    b"temp:20|g\ntemp:21|g",
    b"users:alice|s\nusers:bob|s\nusers:alice|s",
    b"lat:1|h\nlat:2|h\nlat:3|ms\nlat:10|h",
    b"multi:1:2:3|c",
    b"this is not a metric\nok.after.garbage:5|g\n:1|c",
    b"hosted:1|g|#host:web-3,env:prod",
    b"_e{6,7}:Deploy|v1.2 ok|p:low|t:success|s:ci|#env:prod",
    b"_sc|db.can_connect|2|#env:prod|m:timeout after 5s",
];

fn send_all(agent: &Agent) {
    avoid_bucket_edge(3);
    for (i, d) in TRAFFIC.iter().enumerate() {
        // Alternate transports: both must feed the same aggregation.
        if i % 2 == 0 {
            agent.send_udp(d);
        } else {
            agent.send_uds(d);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
}

fn check_series(series: &[S]) {
    let pv = one(series, "page.views");
    assert_eq!(pv.kind, "rate");
    assert_eq!(pv.interval, 10);
    assert_eq!(pv.host, "h1");
    assert_eq!(pv.tags, vec!["a:1", "b:2"]);
    assert_eq!(pv.points.len(), 1);
    assert!((pv.points[0].1 - 0.4).abs() < 1e-9, "{pv:?}");
    assert_eq!(pv.points[0].0 % 10, 0, "timestamp is the bucket start");

    let t = one(series, "temp");
    assert_eq!((t.kind.as_str(), t.points[0].1, t.tags.len()), ("gauge", 21.0, 0));
    let u = one(series, "users");
    assert_eq!((u.kind.as_str(), u.points[0].1), ("gauge", 2.0));
    assert_eq!(one(series, "lat.max").points[0].1, 10.0);
    assert_eq!(one(series, "lat.median").points[0].1, 2.0);
    assert_eq!(one(series, "lat.avg").points[0].1, 4.0);
    let c = one(series, "lat.count");
    assert_eq!(c.kind, "rate");
    assert!((c.points[0].1 - 0.4).abs() < 1e-9);
    assert_eq!(one(series, "lat.95percentile").points[0].1, 10.0);
    assert!((one(series, "multi").points[0].1 - 0.6).abs() < 1e-9);
    assert_eq!(one(series, "ok.after.garbage").points[0].1, 5.0);
    let h = one(series, "hosted");
    assert_eq!((h.host.as_str(), h.tags.clone()), ("web-3", vec!["env:prod".to_string()]));

    let running = one(series, "datadog.agent.running");
    assert_eq!((running.kind.as_str(), running.interval, running.points[0].1), ("gauge", 0, 1.0));
    assert!(running.tags.iter().any(|t| t.starts_with("version:")));
    let names: Vec<&str> = series.iter().map(|s| s.metric.as_str()).collect();
    for bad in ["this is not a metric", ""] {
        assert!(!names.contains(&bad));
    }
}

fn check_events_and_checks(intake: &Intake) {
    let checks: Vec<serde_json::Value> = intake
        .payloads(Some("/api/v1/check_run"))
        .iter()
        .flat_map(|p| p["body"].as_array().cloned().unwrap_or_default())
        .collect();
    let db = checks.iter().find(|c| c["check"] == "db.can_connect").expect("service check");
    assert_eq!(db["status"], 2);
    assert_eq!(db["host_name"], "h1");
    assert_eq!(db["message"], "timeout after 5s");
    assert_eq!(db["tags"], json!(["env:prod"]));
    let up = checks.iter().find(|c| c["check"] == "datadog.agent.up").expect("agent.up");
    assert_eq!(up["status"], 0);
    assert_eq!(up["tags"], serde_json::Value::Null);

    let events = intake.payloads(Some("/intake/"));
    let ci = events.iter().find_map(|p| p["body"]["events"]["ci"].as_array().cloned()).expect("ci events group");
    assert_eq!(ci.len(), 1);
    let e = &ci[0];
    assert_eq!(e["msg_title"], "Deploy");
    assert_eq!(e["msg_text"], "v1.2 ok");
    assert_eq!(e["priority"], "low");
    assert_eq!(e["alert_type"], "success");
    assert_eq!(e["host"], "h1");
    assert_eq!(e["tags"], json!(["env:prod"]));
    // Host metadata also goes to /intake/: the events envelope is the one with `events`.
    let envelope = events.iter().find(|p| p["body"].get("events").is_some()).expect("events payload");
    assert_eq!(envelope["body"]["internalHostname"], "h1");
    assert_eq!(envelope["body"]["apiKey"], "");
}

#[test]
fn v1_json_over_udp_and_unix_socket_to_https_intake() {
    let intake = Intake::start_tls();
    let agent = Agent::start(Some(&intake), &[("DD_USE_V2_API_SERIES", "false")]);
    send_all(&agent);
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0, "stderr:\n{}", stderr.join("\n"));

    let payloads = intake.payloads(Some("/api/v1/series"));
    assert!(!payloads.is_empty());
    for p in &payloads {
        let h = &p["headers"];
        assert_eq!(h["dd-api-key"], "test-api-key");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["content-encoding"], "zstd");
        assert!(h["user-agent"].as_str().unwrap().starts_with("datadog-agent/"));
        assert!(h["dd-agent-version"].is_string());
    }
    let series = series_from(&payloads);
    check_series(&series);
    assert!(find(&series, "n_o_i_n_d_e_x.datadog.agent.payload.dropped").is_empty(), "v1 skips no-index series");
    check_events_and_checks(&intake);
}

#[test]
fn v2_protobuf_is_the_default() {
    let intake = Intake::start_tls();
    let agent = Agent::start(Some(&intake), &[]);
    send_all(&agent);
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    let payloads = intake.payloads(Some("/api/v2/series"));
    assert!(!payloads.is_empty());
    assert!(intake.payloads(Some("/api/v1/series")).is_empty());
    for p in &payloads {
        assert_eq!(p["headers"]["content-type"], "application/x-protobuf");
        assert!(p["headers"]["dd-agent-payload"].is_string());
    }
    let series = series_from(&payloads);
    check_series(&series);
    assert_eq!(one(&series, "n_o_i_n_d_e_x.datadog.agent.payload.dropped").kind, "gauge");
    check_events_and_checks(&intake);
}

#[test]
fn payload_limits_hold_and_nothing_is_lost() {
    let intake = Intake::start_tls();
    let agent = Agent::start(
        Some(&intake),
        &[
            ("DD_USE_V2_API_SERIES", "false"),
            ("DD_SERIALIZER_MAX_PAYLOAD_SIZE", "3000"),
            ("DD_SERIALIZER_MAX_UNCOMPRESSED_PAYLOAD_SIZE", "6000"),
        ],
    );
    avoid_bucket_edge(3);
    let n = 600;
    for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
        let d: Vec<String> =
            chunk.iter().map(|i| format!("limit.test.metric.number.{i}:{i}|g|#shard:{}", i % 7)).collect();
        agent.send_udp(d.join("\n").as_bytes());
    }
    std::thread::sleep(Duration::from_millis(300));
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    let payloads = intake.payloads(Some("/api/v1/series"));
    assert!(payloads.len() > 3, "expected several payloads, got {}", payloads.len());
    for p in &payloads {
        assert!(p["compressed_bytes"].as_u64().unwrap() <= 3000, "{}", p["compressed_bytes"]);
        assert!(p["uncompressed_bytes"].as_u64().unwrap() <= 6000, "{}", p["uncompressed_bytes"]);
    }
    let series = series_from(&payloads);
    for i in 0..n {
        let s = one(&series, &format!("limit.test.metric.number.{i}"));
        assert_eq!(s.points[0].1, i as f64);
    }
}

#[test]
fn periodic_flush_sends_closed_buckets_only() {
    let intake = Intake::start_tls();
    let agent = Agent::start(Some(&intake), &[("EDGESTAT_FLUSH_INTERVAL", "500ms")]);
    avoid_bucket_edge(4);
    agent.send_udp(b"periodic.counter:10|c");
    // The agent's own series arrive every flush, without any shutdown...
    let all = intake.wait_until(Duration::from_secs(10), |p| {
        series_from(p).iter().filter(|s| s.metric == "datadog.agent.running").count() >= 2
    });
    let series = series_from(&all);
    assert!(find(&series, "datadog.agent.running").len() >= 2);
    // ...while the counter's bucket is still open it is not sent.
    let bucket_open = {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        now % 10 < 9
    };
    if bucket_open {
        assert!(find(&series, "periodic.counter").is_empty(), "open bucket flushed early");
    }
    // Once it closes it arrives, as a rate.
    let all = intake.wait_until(Duration::from_secs(15), |p| !find(&series_from(p), "periodic.counter").is_empty());
    let series = series_from(&all);
    let c = find(&series, "periodic.counter");
    assert!(!c.is_empty());
    assert_eq!(c[0].points[0].1, 1.0);
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
}

#[test]
fn embedded_intake_is_the_default() {
    let mut agent = Agent::start(None, &[]);
    agent.send_udp(b"embedded.gauge:3|g");
    std::thread::sleep(Duration::from_millis(200));
    let (code, stderr) = agent.terminate();
    assert_eq!(code, 0, "{}", stderr.join("\n"));
    let data = agent.dir.path().join("data").join("payloads.jsonl");
    let text = std::fs::read_to_string(&data).unwrap_or_default();
    assert!(text.contains("embedded.gauge"), "payloads.jsonl: {text}");
    assert!(agent.stdout.all().iter().any(|l| l.starts_with("flush:")), "a summary line per flush");
}

#[test]
fn the_embedded_intake_keeps_its_files_within_the_bound() {
    // Every flush ships the agent's own series and check, so frequent
    // flushes fill 16 KiB quickly.
    let mut agent =
        Agent::start(None, &[("EDGESTAT_INTAKE_DATA_MAX_BYTES", "16384"), ("EDGESTAT_FLUSH_INTERVAL", "100ms")]);
    let stderr = agent.stderr.all();
    assert!(
        stderr.iter().any(|l| l.contains("payloads.jsonl") && l.contains("max_bytes=16384")),
        "the bound is logged at start: {stderr:?}"
    );
    let data = agent.dir.path().join("data");
    let (cur, old) = (data.join("payloads.jsonl"), data.join("payloads.jsonl.1"));
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < end && !(old.exists() && size(&cur) > 0) {
        agent.send_udp(b"rotating.gauge:1|g");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, stderr) = agent.terminate();
    assert_eq!(code, 0, "{}", stderr.join("\n"));
    assert!(old.exists(), "payloads.jsonl was rotated");
    assert!(size(&cur) + size(&old) <= 16384, "{} + {} bytes", size(&cur), size(&old));
}

#[test]
fn the_intake_tool_takes_and_checks_its_data_bound() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["intake", "--listen", "127.0.0.1:0", "--data-max-bytes", "100", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "below the minimum is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data-max-bytes"));
}

#[test]
fn bad_configuration_exits_2_naming_the_key() {
    for (k, v) in [
        ("DD_DOGSTATSD_PORT", "eighty"),
        ("DD_SERIALIZER_COMPRESSOR_KIND", "brotli"),
        ("EDGESTAT_FLUSH_INTERVAL", "often"),
        ("EDGESTAT_INTAKE_DATA_MAX_BYTES", "1000"),
    ] {
        let out =
            std::process::Command::new(BIN).arg("run").env(k, v).env("EDGESTAT_API_ADDR", "off").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{k}={v}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(k) && err.contains(v), "{err}");
    }
}

#[test]
fn a_malformed_additional_endpoints_never_prints_its_keys() {
    let key = "0123456789abcdef0123456789abcdef";
    let other = "another-secret-api-key";
    let value = format!(r#"{{"https://intake.example.com": ["{key}", "{other}"]"#);
    let out = std::process::Command::new(BIN)
        .arg("run")
        .env("DD_API_KEY", key)
        .env("DD_ADDITIONAL_ENDPOINTS", &value)
        .env("EDGESTAT_API_ADDR", "off")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("DD_ADDITIONAL_ENDPOINTS") && err.contains("https://intake.example.com"), "{err}");
    assert!(!err.contains(key) && !err.contains(other), "keys redacted: {err}");
    assert!(err.contains(&format!("{}bcdef", "*".repeat(27))), "last 5 characters kept: {err}");
}

#[test]
fn low_memlock_fails_clearly_without_panic() {
    // prlimit is in util-linux on Debian; without it this test cannot run.
    let have = std::process::Command::new("prlimit").arg("--version").output().is_ok();
    assert!(have, "prlimit (util-linux) is required");
    let out = std::process::Command::new("prlimit")
        .args(["--memlock=65536:65536", BIN, "run"])
        .env("DD_DOGSTATSD_PORT", free_udp_port().to_string())
        .env("EDGESTAT_API_ADDR", "off")
        .env("DD_DD_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    // The pre-check's line, not glommio's executor failure explained after
    // the fact: nothing was started.
    assert_eq!(
        err.trim(),
        "edgestat: RLIMIT_MEMLOCK is 65536 bytes but io_uring needs at least 524288 (512 KiB): \
         raise it with `ulimit -l 512` or `LimitMEMLOCK=512K` in the systemd unit"
    );
}

#[test]
fn unix_socket_replaces_a_stale_socket_and_uses_the_agents_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    // A socket file left behind by a previous run (nobody listens on it).
    drop(std::os::unix::net::UnixDatagram::bind(&path).unwrap());
    assert!(path.exists());
    let intake = Intake::start_tls();
    let path_s = path.to_str().unwrap();
    let agent = Agent::start(Some(&intake), &[("DD_DOGSTATSD_SOCKET", path_s), ("DD_DOGSTATSD_PORT", "0")]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o722);
    let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
    s.send_to(b"stale.replaced:1|g", &path).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    let series = series_from(&intake.payloads(Some("/api/v2/series")));
    assert_eq!(one(&series, "stale.replaced").points[0].1, 1.0);
}

#[test]
fn a_regular_file_at_the_socket_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, b"keep me").unwrap();
    let out = std::process::Command::new(BIN)
        .arg("run")
        .env("DD_DOGSTATSD_SOCKET", &path)
        .env("DD_DOGSTATSD_PORT", "0")
        .env("EDGESTAT_API_ADDR", "off")
        .env("DD_DD_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
}

#[test]
fn sigterm_right_after_a_burst_loses_nothing() {
    let intake = Intake::start_tls();
    let agent = Agent::start(Some(&intake), &[]);
    let line = "drain.count:1|c\n".repeat(20);
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let uds = std::os::unix::net::UnixDatagram::unbound().unwrap();
    for i in 0..100 {
        sender.send_to(line.as_bytes(), ("127.0.0.1", agent.udp_port)).unwrap();
        if i % 4 == 0 {
            uds.send_to(line.as_bytes(), &agent.socket).unwrap();
        }
    }
    // No pause: whatever the sockets hold when the signal lands must count.
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    let series = series_from(&intake.payloads(Some("/api/v2/series")));
    let total: f64 = find(&series, "drain.count").iter().flat_map(|s| s.points.iter()).map(|p| p.1 * 10.0).sum();
    assert!((total - 2500.0).abs() < 1e-6, "every line sent before SIGTERM is counted: {total}");
}

#[test]
fn empty_datagrams_on_the_unix_socket_do_not_stop_reading() {
    let intake = Intake::start_tls();
    let agent = Agent::start(Some(&intake), &[]);
    let uds = std::os::unix::net::UnixDatagram::unbound().unwrap();
    for _ in 0..3 {
        uds.send_to(b"", &agent.socket).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    for _ in 0..50 {
        uds.send_to(b"after.empty:1|c", &agent.socket).unwrap();
        uds.send_to(b"", &agent.socket).unwrap();
    }
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    let series = series_from(&intake.payloads(Some("/api/v2/series")));
    let total: f64 = find(&series, "after.empty").iter().flat_map(|s| s.points.iter()).map(|p| p.1 * 10.0).sum();
    assert!((total - 50.0).abs() < 1e-6, "every line after empty datagrams is counted: {total}");
}
