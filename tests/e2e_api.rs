//! Black-box: the local submission API, orchestrator payloads, telemetry,
//! compressors, payload switches and the events fallback, through the real
//! `edgestat run` and a real HTTPS `edgestat intake`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn api_env(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Starts edgestat shipping to `intake` with the local API and telemetry on
/// free ports, a 1 s flush, plus `extra` settings: (agent, api port,
/// telemetry port).
fn start_with_api_and_telemetry(intake: &Intake, extra: &[(&str, &str)]) -> (Agent, u16, u16) {
    let (api_port, tel_port) = (free_tcp_port(), free_tcp_port());
    let (api, tel) = (api_env(api_port), api_env(tel_port));
    let mut env: Vec<(&str, &str)> =
        vec![("EDGESTAT_API_ADDR", &api), ("EDGESTAT_TELEMETRY_ADDR", &tel), ("EDGESTAT_FLUSH_INTERVAL", "1s")];
    env.extend_from_slice(extra);
    (Agent::start(Some(intake), &env), api_port, tel_port)
}

/// All events in `/intake/` payloads, flattened with their group name.
fn intake_events(intake: &Intake) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for p in intake.payloads(Some("/intake/")) {
        if let Some(groups) = p["body"]["events"].as_object() {
            for (g, list) in groups {
                for e in list.as_array().cloned().unwrap_or_default() {
                    out.push((g.clone(), e));
                }
            }
        }
    }
    out
}

fn intake_checks(intake: &Intake) -> Vec<Value> {
    intake
        .payloads(Some("/api/v1/check_run"))
        .iter()
        .flat_map(|p| p["body"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Polls `/metrics` until `pred` holds (bounded); returns the last text.
fn metrics_until(port: u16, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + timeout;
    loop {
        let (code, text) = http_call("GET", &format!("http://127.0.0.1:{port}/metrics"));
        assert_eq!(code, 200);
        if pred(&text) || Instant::now() > end {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.parse().ok()))
}

/// POSTs `n` bytes with chunked transfer encoding over a raw socket and
/// returns the status code answered.
fn chunked_post_status(port: u16, path: &str, n: usize) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < n {
        if write!(s, "{:x}\r\n", chunk.len())
            .and_then(|_| s.write_all(&chunk))
            .and_then(|_| s.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status line: {resp:?}"))
}

fn error_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body}"));
    v["error"].as_str().unwrap_or_else(|| panic!("no \"error\" key: {body}")).to_string()
}

#[test]
fn api_events_and_checks_arrive_like_dogstatsd_and_bad_input_is_refused() {
    let intake = Intake::start_tls();
    let (agent, api_port, tel_port) = start_with_api_and_telemetry(&intake, &[("DD_DOGSTATSD_TAGS", "team:edge")]);
    let api = format!("http://127.0.0.1:{api_port}");
    let ev = format!("{api}/v1/events");
    let cr = format!("{api}/v1/check_run");

    // Happy paths: one object, an array.
    let (code, body) = http_post(
        &ev,
        "application/json",
        br#"{"title":"Deploy","text":"v2 ok","tags":["env:prod","a:1","env:prod"],"priority":"low","alert_type":"success",
            "source_type_name":"ci","aggregation_key":"dep-1","date_happened":1700000003,"host":"web-1","unknown_field":true}"#,
    );
    assert_eq!(code, 202, "{body}");
    let (code, body) =
        http_post(&ev, "application/json", br#"[{"title":"A"},{"title":"B","text":"b","alert_type":"error"}]"#);
    assert_eq!((code, serde_json::from_str::<Value>(&body).unwrap()["items"].clone()), (202, json!(2)), "{body}");
    let (code, body) = http_post(
        &cr,
        "application/json",
        br#"[{"check":"db.ok","status":1,"message":"slow","tags":["z:1","a:1"],"timestamp":1700000005},{"check":"plain","status":0}]"#,
    );
    assert_eq!(code, 202, "{body}");
    agent.send_udp(b"api.side.gauge:1|g");

    // Every refusal is a 400 with a JSON error naming the problem.
    for (url, body, needle) in [
        (&ev, &br#"{"text":"no title"}"#[..], "title"),
        (&ev, b"{not json", "invalid JSON"),
        (&ev, b"", "empty body"),
        (&ev, br#"[{"title":"ok"},{"title":"x","tags":"a,b"}]"#, "event[1].tags"),
        (&ev, br#"{"title":"x","priority":"urgent"}"#, "priority"),
        (&ev, br#"{"title":"x","date_happened":"yesterday"}"#, "date_happened"),
        (&cr, br#"{"check":"c","status":7}"#, "status"),
        (&cr, br#"{"status":0}"#, "check.check"),
        (&cr, b"42", "expected a JSON check object"),
    ] {
        let (code, resp) = http_post(url, "application/json", body);
        assert_eq!(code, 400, "{}: {resp}", String::from_utf8_lossy(body));
        let err = error_of(&resp);
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    }
    // Orchestrator requests with bad parameters or a body that is not protobuf.
    for (q, body, needle) in [
        ("type=41", &b"\x0a\x01x"[..], "cluster_id"),
        ("cluster_id=c", b"\x0a\x01x", "type"),
        ("type=pod&cluster_id=c", b"\x0a\x01x", "type"),
        ("type=12&cluster_id=c", b"\x0a\x01x", "not an orchestrator"),
        ("type=41&cluster_id=c", b"{\"json\":1}", "protobuf"),
        ("type=41&cluster_id=c", b"", "empty body"),
    ] {
        let (code, resp) = http_post(&format!("{api}/v1/orchestrator?{q}"), "application/x-protobuf", body);
        assert_eq!(code, 400, "{q}: {resp}");
        assert!(error_of(&resp).contains(needle), "{q}: {resp}");
    }
    let (code, resp) = http_post(
        &format!("{api}/v1/orchestrator/manifests?cluster_id=c&type=41"),
        "application/x-protobuf",
        b"\x0a\x01x",
    );
    assert_eq!(code, 400, "{resp}");
    // 404, 405, 413.
    let (code, resp) = http_post(&format!("{api}/v1/nothing"), "application/json", b"{}");
    assert_eq!(code, 404);
    error_of(&resp);
    let (code, resp) = http_call("GET", &ev);
    assert_eq!(code, 405);
    error_of(&resp);
    let big = vec![b' '; 4 * 1024 * 1024 + 1];
    let (code, resp) = http_post(&ev, "application/json", &big);
    assert_eq!(code, 413, "{resp}");
    error_of(&resp);
    // Without Content-Length the streamed size is checked too.
    assert_eq!(chunked_post_status(api_port, "/v1/events", 5 * 1024 * 1024), 413);
    // Exactly at the limit is fine size-wise (and then judged as JSON).
    let mut at_limit = br#"{"title":"padded"}"#.to_vec();
    at_limit.resize(4 * 1024 * 1024, b' ');
    let (code, resp) = http_post(&ev, "application/json", &at_limit);
    assert_eq!(code, 202, "{resp}");

    // Everything accepted arrives, shaped like DogStatsD events and checks.
    let all = intake.wait_until(Duration::from_secs(15), |_| {
        let ev = intake_events(&intake);
        let names: Vec<&str> = ev.iter().filter_map(|(_, e)| e["msg_title"].as_str()).collect();
        ["Deploy", "A", "B", "padded"].iter().all(|t| names.contains(t))
            && intake_checks(&intake).iter().any(|c| c["check"] == "plain")
    });
    assert!(!all.is_empty());
    let events = intake_events(&intake);
    let deploy: Vec<_> = events.iter().filter(|(_, e)| e["msg_title"] == "Deploy").collect();
    assert_eq!(deploy.len(), 1, "accepted once, sent once");
    let (group, e) = deploy[0];
    assert_eq!(group, "ci");
    assert_eq!(
        e,
        &json!({"msg_title":"Deploy","msg_text":"v2 ok","timestamp":1700000003,"priority":"low","host":"web-1",
            "tags":["a:1","env:prod"],"alert_type":"success","aggregation_key":"dep-1","source_type_name":"ci"})
    );
    let (group, a) = events.iter().find(|(_, e)| e["msg_title"] == "A").unwrap();
    assert_eq!(group, "api");
    assert_eq!(a["host"], "h1", "host defaults to the agent hostname");
    assert_eq!((a["priority"].clone(), a["alert_type"].clone()), (json!("normal"), json!("info")));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((a["timestamp"].as_i64().unwrap() - now).abs() < 60, "missing date_happened becomes now: {a}");
    assert!(a.get("tags").is_none(), "DD_DOGSTATSD_TAGS are DogStatsD-only: {a}");

    let checks = intake_checks(&intake);
    let db = checks.iter().find(|c| c["check"] == "db.ok").expect("db.ok");
    assert_eq!(
        db,
        &json!({"check":"db.ok","host_name":"h1","timestamp":1700000005,"status":1,"message":"slow","tags":["a:1","z:1"]})
    );
    let plain = checks.iter().find(|c| c["check"] == "plain").unwrap();
    assert_eq!((plain["tags"].clone(), plain["message"].clone()), (Value::Null, json!("")));
    assert_eq!(checks.iter().filter(|c| c["check"] == "db.ok").count(), 1);

    // Telemetry reflects the traffic.
    let text = metrics_until(tel_port, Duration::from_secs(10), |t| {
        metric_value(t, "edgestat_serializer_payloads_total{kind=\"events\"}").unwrap_or(0.0) >= 1.0
            && metric_value(t, "edgestat_forwarder_transactions_success_total{forwarder=\"metrics\"}").unwrap_or(0.0)
                >= 1.0
            && metric_value(t, "edgestat_dogstatsd_packets_total").unwrap_or(0.0) >= 1.0
    });
    assert_eq!(metric_value(&text, "edgestat_api_requests_total{route=\"events\",code=\"202\"}"), Some(3.0), "{text}");
    assert_eq!(metric_value(&text, "edgestat_api_requests_total{route=\"events\",code=\"400\"}"), Some(6.0), "{text}");
    assert_eq!(metric_value(&text, "edgestat_api_requests_total{route=\"events\",code=\"413\"}"), Some(2.0), "{text}");
    assert_eq!(metric_value(&text, "edgestat_api_requests_total{route=\"unknown\",code=\"404\"}"), Some(1.0), "{text}");
    assert_eq!(metric_value(&text, "edgestat_api_accepted_total{kind=\"events\"}"), Some(4.0), "{text}");
    assert_eq!(metric_value(&text, "edgestat_api_accepted_total{kind=\"service_checks\"}"), Some(2.0), "{text}");
    assert!(metric_value(&text, "edgestat_flush_total").unwrap() >= 1.0);
    assert!(metric_value(&text, "edgestat_flush_duration_seconds_count").unwrap() >= 1.0);
    assert!(metric_value(&text, "edgestat_serializer_items_total{kind=\"service_checks\"}").unwrap() >= 3.0, "{text}");
    assert!(
        metric_value(&text, "edgestat_serializer_payload_bytes_total{kind=\"series_v2\"}").unwrap() > 0.0,
        "{text}"
    );
    assert!(text.contains("# TYPE edgestat_flush_duration_seconds summary"));
    let (code, _) = http_call("GET", &format!("http://127.0.0.1:{tel_port}/nope"));
    assert_eq!(code, 404);

    let (code, stderr) = agent.stop();
    assert_eq!(code, 0, "{}", stderr.join("\n"));
}

// --- protobuf helpers (orchestrator messages are opaque to edgestat) ---

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
fn pb_bytes(field: u64, b: &[u8], out: &mut Vec<u8>) {
    varint(field << 3 | 2, out);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}
fn pb_int(field: u64, v: u64, out: &mut Vec<u8>) {
    varint(field << 3, out);
    varint(v, out);
}

/// `CollectorPod` with `pods` pod entries.
fn collector_pod(host: &str, cluster_id: &str, pods: usize) -> Vec<u8> {
    let mut m = Vec::new();
    pb_bytes(1, host.as_bytes(), &mut m);
    pb_bytes(2, b"prod-cluster", &mut m);
    pb_bytes(3, cluster_id.as_bytes(), &mut m);
    pb_int(4, 1, &mut m);
    pb_int(5, 1, &mut m);
    for i in 0..pods {
        let mut meta = Vec::new();
        pb_bytes(1, format!("pod-{i}").as_bytes(), &mut meta);
        let mut pod = Vec::new();
        pb_bytes(1, &meta, &mut pod);
        pb_bytes(6, &pod, &mut m);
    }
    pb_bytes(8, b"kube_cluster:prod", &mut m);
    m
}

/// `CollectorDeployment` (common envelope) with one deployment.
fn collector_deployment(cluster_id: &str) -> Vec<u8> {
    let mut m = Vec::new();
    pb_bytes(1, b"prod-cluster", &mut m);
    pb_bytes(2, cluster_id.as_bytes(), &mut m);
    pb_int(3, 2, &mut m);
    pb_int(4, 3, &mut m);
    pb_bytes(5, b"\x0a\x02\x0a\x00", &mut m);
    m
}

/// `CollectorManifest` with one Deployment manifest.
fn collector_manifest(cluster_id: &str, uid: &str) -> Vec<u8> {
    let mut man = Vec::new();
    pb_int(1, 18, &mut man);
    pb_bytes(2, b"42", &mut man);
    pb_bytes(3, uid.as_bytes(), &mut man);
    pb_bytes(4, br#"{"kind":"Deployment"}"#, &mut man);
    pb_bytes(5, b"json", &mut man);
    pb_bytes(6, b"v1", &mut man);
    pb_bytes(9, b"apps/v1", &mut man);
    pb_bytes(11, b"Deployment", &mut man);
    let mut m = Vec::new();
    pb_bytes(1, b"prod-cluster", &mut m);
    pb_bytes(2, cluster_id.as_bytes(), &mut m);
    pb_int(3, 1, &mut m);
    pb_int(4, 1, &mut m);
    pb_bytes(5, &man, &mut m);
    pb_bytes(7, b"node-1", &mut m);
    m
}

fn check_orchestrator_headers(p: &Value, cluster_id: &str) {
    let h = &p["headers"];
    assert_eq!(h["x-dd-hostname"], "h1", "{h}");
    assert_eq!(h["x-dd-orchestrator-clusterid"], cluster_id);
    let ts: i64 = h["x-dd-agent-timestamp"].as_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - ts).abs() < 120, "{ts}");
    assert_eq!(h["dd-evp-origin"], "agent");
    assert!(h["dd-evp-origin-version"].as_str().unwrap().starts_with('7'));
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(h["x-dd-agent-attempts"], "1");
    assert_eq!(h["dd-api-key"], "test-api-key");
    assert!(h.get("content-encoding").is_none(), "orchestrator bodies carry their own zstd: {h}");
    assert_eq!(p["body"]["version"], 3);
    assert_eq!(p["body"]["encoding"], 4);
    assert_eq!(p["body"]["decompressed"], true, "{}", p["body"]);
    assert_eq!(p["body"]["collector_error"], Value::Null);
}

#[test]
fn orchestrator_metadata_goes_out_at_once_one_request_per_message_and_manifests_at_flush() {
    let metrics_intake = Intake::start_tls();
    let orch_intake = Intake::start_tls();
    let api_port = free_tcp_port();
    let agent = Agent::start(
        Some(&metrics_intake),
        &[
            ("EDGESTAT_API_ADDR", &api_env(api_port)),
            ("DD_ORCHESTRATOR_EXPLORER_ORCHESTRATOR_DD_URL", &orch_intake.url),
            // Two self-signed intakes; SSL_CERT_FILE names only the first.
            ("DD_SKIP_SSL_VALIDATION", "true"),
        ],
    );
    let api = format!("http://127.0.0.1:{api_port}");
    let pods = collector_pod("node-1", "uid-1", 2);
    for (t, body) in
        [("41", pods.clone()), ("43", collector_deployment("uid-1")), ("41", collector_pod("node-2", "uid-1", 3))]
    {
        let (code, resp) =
            http_post(&format!("{api}/v1/orchestrator?type={t}&cluster_id=uid-1"), "application/x-protobuf", &body);
        assert_eq!(code, 202, "{resp}");
    }
    let (code, resp) = http_post(
        &format!("{api}/v1/orchestrator/manifests?cluster_id=uid-1"),
        "application/x-protobuf",
        &collector_manifest("uid-1", "m-1"),
    );
    assert_eq!(code, 202, "{resp}");

    // Flush interval is 1h: metadata must arrive without any flush.
    orch_intake.wait_until(Duration::from_secs(15), |_| orch_intake.payloads(Some("/api/v2/orch")).len() >= 3);
    let orch = orch_intake.payloads(Some("/api/v2/orch"));
    assert_eq!(orch.len(), 3, "one request per message");
    for p in &orch {
        check_orchestrator_headers(p, "uid-1");
    }
    let mut seen: Vec<(i64, i64, Option<String>)> = orch
        .iter()
        .map(|p| {
            let c = &p["body"]["collector"];
            assert_eq!(c["cluster_id"], "uid-1");
            assert_eq!(c["cluster_name"], "prod-cluster");
            (
                p["body"]["type"].as_i64().unwrap(),
                c["items"].as_i64().unwrap(),
                c["host_name"].as_str().map(String::from),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(seen, vec![(41, 2, Some("node-1".into())), (41, 3, Some("node-2".into())), (43, 1, None)]);
    // The body is the message exactly as posted.
    let pod1 = orch.iter().find(|p| p["body"]["collector"]["items"] == 2).unwrap();
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(pod1["body"]["body_b64"].as_str().unwrap()).unwrap();
    assert_eq!(raw, pods);
    // Manifests wait for the flush; nothing went to the metrics intake.
    std::thread::sleep(Duration::from_millis(500));
    assert!(orch_intake.payloads(Some("/api/v2/orchmanif")).is_empty(), "manifests are sent at the flush");
    assert!(metrics_intake.payloads(Some("/api/v2/orch")).is_empty());

    let (code, stderr) = agent.stop();
    assert_eq!(code, 0, "{}", stderr.join("\n"));
    let man = orch_intake.payloads(Some("/api/v2/orchmanif"));
    assert_eq!(man.len(), 1, "{man:?}");
    check_orchestrator_headers(&man[0], "uid-1");
    let c = &man[0]["body"]["collector"];
    assert_eq!(man[0]["body"]["type"], 80);
    assert_eq!(c["host_name"], "node-1");
    assert_eq!(c["manifests"][0]["kind"], "Deployment");
    assert_eq!(c["manifests"][0]["uid"], "m-1");
    assert_eq!(c["manifests"][0]["type"], 18);
    assert!(metrics_intake.payloads(Some("/api/v2/orchmanif")).is_empty());
}

#[test]
fn orchestrator_legacy_endpoint_defaults_to_the_main_url() {
    let intake = Intake::start_tls();
    let api_port = free_tcp_port();
    let agent = Agent::start(
        Some(&intake),
        &[("EDGESTAT_API_ADDR", &api_env(api_port)), ("DD_ORCHESTRATOR_EXPLORER_USE_LEGACY_ENDPOINT", "true")],
    );
    let url = format!("http://127.0.0.1:{api_port}/v1/orchestrator?type=41&cluster_id=uid-9");
    let (code, resp) = http_post(&url, "application/x-protobuf", &collector_pod("n", "uid-9", 1));
    assert_eq!(code, 202, "{resp}");
    intake.wait_until(Duration::from_secs(15), |_| !intake.payloads(Some("/api/v1/orchestrator")).is_empty());
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    let legacy = intake.payloads(Some("/api/v1/orchestrator"));
    assert_eq!(legacy.len(), 1);
    check_orchestrator_headers(&legacy[0], "uid-9");
    assert!(intake.payloads(Some("/api/v2/orch")).is_empty());
}

#[test]
fn every_compressor_sets_its_content_encoding_and_decodes() {
    let intake = Intake::start_tls();
    for (kind, encoding) in
        [("zstd", "zstd"), ("zlib", "deflate"), ("gzip", "gzip"), ("lz4", "lz4"), ("none", "identity")]
    {
        // v1 JSON series once, so both series encoders meet a compressor other than zstd.
        let v2 = if kind == "gzip" { "false" } else { "true" };
        let agent =
            Agent::start(Some(&intake), &[("DD_SERIALIZER_COMPRESSOR_KIND", kind), ("DD_USE_V2_API_SERIES", v2)]);
        let metric = format!("compressor.{kind}");
        agent.send_udp(format!("{metric}:7|g\n_e{{2,{}}}:ev|{kind}\n_sc|sc.{kind}|0", kind.len()).as_bytes());
        agent.send_udp(format!("dist.{kind}:3|d").as_bytes());
        std::thread::sleep(Duration::from_millis(200));
        let (code, stderr) = agent.stop();
        assert_eq!(code, 0, "{kind}: {}", stderr.join("\n"));
        let all = intake.payloads(None);
        // Host metadata payloads (also on /intake/) are every agent's, not this one's.
        let mine: Vec<&Value> = all
            .iter()
            .filter(|p| p["body"].get("host-tags").is_none() && p["body"].to_string().contains(kind))
            .collect();
        let paths: Vec<&str> = mine.iter().map(|p| p["path"].as_str().unwrap()).collect();
        let series_path = if v2 == "true" { "/api/v2/series" } else { "/api/v1/series" };
        for want in [series_path, "/api/beta/sketches", "/api/v1/check_run", "/intake/"] {
            assert!(paths.contains(&want), "{kind}: no {want} in {paths:?}");
        }
        for p in &mine {
            assert_eq!(p["headers"]["content-encoding"], encoding, "{kind} {}", p["path"]);
            assert_eq!(p["decode_error"], Value::Null, "{kind} {}", p["path"]);
        }
        let series = series_from(&all);
        assert_eq!(one(&series, &metric).points[0].1, 7.0, "{kind}");
    }
}

#[test]
fn payload_switches_turn_kinds_off() {
    for (off, gone, kept) in [
        (
            [("DD_ENABLE_PAYLOADS_SERIES", "false"), ("DD_ENABLE_PAYLOADS_EVENTS", "false")],
            ["/api/v2/series", "/intake/"],
            ["/api/beta/sketches", "/api/v1/check_run"],
        ),
        (
            [("DD_ENABLE_PAYLOADS_SERVICE_CHECKS", "false"), ("DD_ENABLE_PAYLOADS_SKETCHES", "false")],
            ["/api/v1/check_run", "/api/beta/sketches"],
            ["/api/v2/series", "/intake/"],
        ),
    ] {
        let intake = Intake::start_tls();
        // Host metadata also goes to /intake/ and no `enable_payloads` switch
        // stops it (as in the Agent): turned off here so /intake/ is events only.
        let env = [off[0], off[1], ("DD_ENABLE_METADATA_COLLECTION", "false")];
        let agent = Agent::start(Some(&intake), &env);
        agent.send_udp(b"sw.gauge:1|g\nsw.dist:2|d\n_e{2,2}:ev|tx\n_sc|sw.check|1");
        std::thread::sleep(Duration::from_millis(200));
        let (code, _) = agent.stop();
        assert_eq!(code, 0);
        for p in gone {
            assert!(intake.payloads(Some(p)).is_empty(), "{off:?}: {p} should be off");
        }
        for p in kept {
            assert!(!intake.payloads(Some(p)).is_empty(), "{off:?}: {p} should still be sent");
        }
    }
}

/// Deterministic, poorly compressible text.
fn noise(n: usize) -> String {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'!' + (x % 90) as u8) as char
        })
        .filter(|c| *c != '"' && *c != '\\')
        .collect()
}

#[test]
fn an_oversized_event_is_dropped_and_counted_the_others_arrive() {
    let intake = Intake::start_tls();
    let (agent, api_port, tel_port) = start_with_api_and_telemetry(
        &intake,
        &[("DD_SERIALIZER_MAX_PAYLOAD_SIZE", "2000"), ("DD_SERIALIZER_MAX_UNCOMPRESSED_PAYLOAD_SIZE", "4000")],
    );
    let mut batch: Vec<Value> = (0..30)
        .map(|i| json!({"title": format!("normal-{i}"), "text": format!("event number {i} {}", noise(40)), "source_type_name": if i % 2 == 0 { "even" } else { "odd" }}))
        .collect();
    batch.insert(13, json!({"title": "huge", "text": noise(12_000), "source_type_name": "even"}));
    let (code, resp) = http_post(
        &format!("http://127.0.0.1:{api_port}/v1/events"),
        "application/json",
        batch_bytes(&batch).as_slice(),
    );
    assert_eq!(code, 202, "{resp}");
    intake.wait_until(Duration::from_secs(15), |_| {
        intake_events(&intake)
            .iter()
            .filter(|(_, e)| e["msg_title"].as_str().is_some_and(|t| t.starts_with("normal-")))
            .count()
            >= 30
    });
    let text = metrics_until(tel_port, Duration::from_secs(10), |t| {
        metric_value(t, "edgestat_serializer_events_dropped_total").unwrap_or(0.0) >= 1.0
    });
    let (code, _) = agent.stop();
    assert_eq!(code, 0);

    let events = intake_events(&intake);
    let mut titles: Vec<String> =
        events.iter().filter_map(|(_, e)| e["msg_title"].as_str().map(String::from)).collect();
    assert!(!titles.iter().any(|t| t == "huge"), "the oversized event is dropped");
    titles.retain(|t| t.starts_with("normal-"));
    titles.sort();
    let mut want: Vec<String> = (0..30).map(|i| format!("normal-{i}")).collect();
    want.sort();
    assert_eq!(titles, want, "every normal event arrives exactly once");
    for (g, e) in &events {
        if let Some(t) = e["msg_title"].as_str().filter(|t| t.starts_with("normal-")) {
            let i: usize = t["normal-".len()..].parse().unwrap();
            assert_eq!(g, if i % 2 == 0 { "even" } else { "odd" });
        }
    }
    let payloads = intake.payloads(Some("/intake/"));
    assert!(payloads.len() >= 2, "the limits force several payloads");
    for p in &payloads {
        assert!(p["compressed_bytes"].as_u64().unwrap() <= 2000);
        assert!(p["uncompressed_bytes"].as_u64().unwrap() <= 4000);
    }
    assert_eq!(metric_value(&text, "edgestat_serializer_events_dropped_total"), Some(1.0), "{text}");
}

fn batch_bytes(v: &[Value]) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[test]
fn api_answers_503_while_shutting_down() {
    // An intake that takes connections and never answers keeps the agent
    // in its delivery wait after SIGTERM (one that refuses them lets it
    // give up within milliseconds, too fast to observe the 503).
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_url = format!("http://{}", hang.local_addr().unwrap());
    let api_port = free_tcp_port();
    let mut agent = Agent::start(
        None,
        &[
            ("EDGESTAT_API_ADDR", &api_env(api_port)),
            ("DD_DD_URL", &hang_url),
            ("DD_API_KEY", "k"),
            ("EDGESTAT_SHUTDOWN_TIMEOUT", "3s"),
        ],
    );
    let url = format!("http://127.0.0.1:{api_port}/v1/events");
    let (code, _) = http_post(&url, "application/json", br#"{"title":"before"}"#);
    assert_eq!(code, 202);
    agent.signal(libc::SIGTERM);
    let end = Instant::now() + Duration::from_secs(3);
    let mut got = None;
    while Instant::now() < end {
        let (code, body) = http_post(&url, "application/json", br#"{"title":"after"}"#);
        if code == 503 {
            got = Some(body);
            break;
        }
        assert_eq!(code, 202, "{body}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let body = got.expect("503 during shutdown");
    assert!(error_of(&body).contains("shutting down"));
    // Wait for the exit without a second signal (that one exits at once).
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = agent.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < end, "did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", agent.stderr.all().join("\n"));
    drop(hang);
}

#[test]
fn orchestrator_retries_count_up_the_attempts_header() {
    let intake = Intake::start_tls();
    intake.fail(serde_json::json!({"status": 503, "count": 2, "path": "/api/v2/orch"}));
    let api_port = free_tcp_port();
    let agent = Agent::start(
        Some(&intake),
        &[
            ("EDGESTAT_API_ADDR", &api_env(api_port)),
            ("DD_FORWARDER_BACKOFF_BASE", "0.1"),
            ("DD_FORWARDER_BACKOFF_MAX", "0.4"),
        ],
    );
    let url = format!("http://127.0.0.1:{api_port}/v1/orchestrator?type=41&cluster_id=uid-3");
    let (code, resp) = http_post(&url, "application/x-protobuf", &collector_pod("n", "uid-3", 1));
    assert_eq!(code, 202, "{resp}");
    intake.wait_until(Duration::from_secs(20), |_| intake.payloads(Some("/api/v2/orch")).len() >= 3);
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    let attempts: Vec<(String, i64)> = intake
        .payloads(Some("/api/v2/orch"))
        .iter()
        .map(|p| {
            (p["headers"]["x-dd-agent-attempts"].as_str().unwrap_or("").to_string(), p["answered"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(attempts, vec![("1".into(), 503), ("2".into(), 503), ("3".into(), 202)]);
}

#[test]
fn a_full_api_queue_answers_503_and_keeps_what_it_accepted() {
    let intake = Intake::start_tls();
    let api_port = free_tcp_port();
    let agent =
        Agent::start(Some(&intake), &[("EDGESTAT_API_ADDR", &api_env(api_port)), ("EDGESTAT_API_QUEUE_ITEMS", "3")]);
    let url = format!("http://127.0.0.1:{api_port}/v1/events");
    let (code, body) = http_post(&url, "application/json", br#"[{"title":"q1"},{"title":"q2"}]"#);
    assert_eq!(code, 202, "{body}");
    // Two more do not fit in the remaining room of one: refused as a whole.
    let (code, body) = http_post(&url, "application/json", br#"[{"title":"q3"},{"title":"q4"}]"#);
    assert_eq!(code, 503, "{body}");
    let (code, body) = http_post(&url, "application/json", br#"{"title":"q5"}"#);
    assert_eq!(code, 202, "{body}");
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    let titles: Vec<String> = intake_events(&intake)
        .iter()
        .filter_map(|(_, e)| e["msg_title"].as_str().map(String::from))
        .filter(|t| t.starts_with('q'))
        .collect();
    let mut sorted = titles.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["q1", "q2", "q5"], "accepted events arrive exactly once, refused ones never");
}
