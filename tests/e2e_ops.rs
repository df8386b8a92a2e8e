//! Black-box: the Unix stream socket, raw packet forwarding, traffic
//! capture and replay, per-context statistics and `edgestat status`,
//! through the real binary, real sockets and a real HTTPS intake.

mod common;

use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Runs an operating command against the API at `api`; (status, stdout, stderr).
fn ops(api: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).env_clear().env("EDGESTAT_API_ADDR", api).output().expect("run edgestat");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `edgestat status --json`, polled until `pred` holds (bounded).
fn status_until(api: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, err) = ops(api, &["status", "--json"]);
        assert_eq!(code, 0, "status failed: {err}");
        let v: Value = serde_json::from_str(&out).expect("status JSON");
        if pred(&v) || Instant::now() > end {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sum of a counter over every flushed series named `metric` carrying `tag`.
fn counter_total(series: &[S], metric: &str, tag: &str) -> f64 {
    find(series, metric)
        .iter()
        .filter(|s| tag.is_empty() || s.tags.iter().any(|t| t == tag))
        .flat_map(|s| s.points.iter().map(move |p| p.1 * s.interval.max(1) as f64))
        .sum()
}

fn start_with_api(intake: &Intake, extra: &[(&str, &str)]) -> (Agent, String) {
    let api = format!("127.0.0.1:{}", free_tcp_port());
    let mut env: Vec<(&str, &str)> = vec![("EDGESTAT_API_ADDR", &api)];
    env.extend_from_slice(extra);
    (Agent::start(Some(intake), &env), api)
}

#[test]
fn stream_socket_serves_many_clients_split_frames_bad_frames_and_abrupt_disconnects() {
    let intake = Intake::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dsd-stream.socket");
    let p = path.to_str().unwrap().to_string();
    let (agent, api) = start_with_api(&intake, &[("DD_DOGSTATSD_STREAM_SOCKET", &p)]);

    const CLIENTS: usize = 8;
    const FRAMES: usize = 60;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let mut threads = Vec::new();
    for c in 0..CLIENTS {
        let (path, barrier) = (path.clone(), barrier.clone());
        threads.push(std::thread::spawn(move || {
            let mut s = UnixStream::connect(&path).unwrap();
            barrier.wait();
            let line = format!("stream.c:1|c|#client:{c}");
            // A third coalesced in one write, a third with the header split,
            // a third with the payload split.
            let mut batch = Vec::new();
            for _ in 0..FRAMES / 3 {
                batch.extend(frame(line.as_bytes()));
            }
            s.write_all(&batch).unwrap();
            for i in 0..FRAMES / 3 {
                let f = frame(line.as_bytes());
                let cut = if i % 2 == 0 { 2 } else { 4 + line.len() / 2 };
                s.write_all(&f[..cut]).unwrap();
                s.flush().unwrap();
                std::thread::sleep(Duration::from_micros(200));
                s.write_all(&f[cut..]).unwrap();
            }
            // Two lines in one frame, the datagram way.
            for _ in 0..FRAMES / 3 / 2 {
                s.write_all(&frame(format!("{line}\n{line}").as_bytes())).unwrap();
            }
        }));
    }
    // A client whose second frame is over dogstatsd_buffer_size (8192).
    let mut bad = UnixStream::connect(&path).unwrap();
    bad.write_all(&frame(b"stream.bad:1|c")).unwrap();
    bad.write_all(&100_000u32.to_le_bytes()).unwrap();
    let _ = bad.write_all(&vec![b'x'; 1000]);
    // A client that disconnects in the middle of a frame.
    let mut abrupt = UnixStream::connect(&path).unwrap();
    abrupt.write_all(&frame(b"stream.abrupt:1|c")).unwrap();
    abrupt.write_all(&frame(b"stream.lost:1|c")[..9]).unwrap();
    drop(abrupt);
    for t in threads {
        t.join().unwrap();
    }

    let want_frames = (CLIENTS * FRAMES - CLIENTS * FRAMES / 6 + 2) as u64;
    let st = status_until(&api, |v| {
        v["stream_socket"]["frames"].as_u64() == Some(want_frames) && v["stream_socket"]["truncated_frames"] == 1
    });
    let ss = &st["stream_socket"];
    assert_eq!(ss["frames"].as_u64(), Some(want_frames), "{st:#}");
    assert_eq!((ss["bad_frames"].as_u64(), ss["truncated_frames"].as_u64()), (Some(1), Some(1)), "{st:#}");
    assert_eq!(ss["connections_accepted"].as_u64(), Some(CLIENTS as u64 + 2));
    // The server closed the bad client's connection.
    bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut bad, &mut buf).unwrap_or(0), 0);
    assert!(agent
        .stderr
        .wait_for("bad frame; closing this connection", Duration::from_secs(5))
        .unwrap()
        .contains("over the 8192-byte limit"));
    assert!(agent.stderr.all().iter().any(|l| l.contains("in the middle of a frame")));

    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    let series = series_from(&intake.payloads(None));
    for c in 0..CLIENTS {
        assert_eq!(counter_total(&series, "stream.c", &format!("client:{c}")), FRAMES as f64, "client {c}");
    }
    assert_eq!(counter_total(&series, "stream.bad", ""), 1.0);
    assert_eq!(counter_total(&series, "stream.abrupt", ""), 1.0);
    assert!(find(&series, "stream.lost").is_empty());
}

#[test]
fn raw_forwarding_sends_every_datagram_unchanged_and_a_dead_target_costs_a_counter() {
    let intake = Intake::start_tls();
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = rx.local_addr().unwrap().port().to_string();
    let tel = format!("127.0.0.1:{}", free_tcp_port());
    let (agent, api) = start_with_api(
        &intake,
        &[
            ("DD_STATSD_FORWARD_HOST", "127.0.0.1"),
            ("DD_STATSD_FORWARD_PORT", &port),
            ("EDGESTAT_TELEMETRY_ADDR", &tel),
        ],
    );
    let mut sent = Vec::new();
    for i in 0..20 {
        let d = format!("fwd.m:{i}|c|#i:{i}\nfwd.g:{i}|g");
        if i % 2 == 0 {
            agent.send_udp(d.as_bytes());
        } else {
            agent.send_uds(d.as_bytes());
        }
        sent.push(d);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 9000];
    while got.len() < sent.len() {
        let n = rx.recv(&mut buf).expect("forwarded datagram");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    got.sort();
    sent.sort();
    assert_eq!(got, sent, "every datagram forwarded byte for byte");
    let st = status_until(&api, |v| v["statsd_forward"]["sent"] == 20);
    assert_eq!((st["statsd_forward"]["sent"].as_u64(), st["statsd_forward"]["errors"].as_u64()), (Some(20), Some(0)));
    let (code, metrics) = http_call("GET", &format!("http://{tel}/metrics"));
    assert_eq!(code, 200);
    assert!(metrics.contains("edgestat_statsd_forward_packets_total 20\n"), "{metrics}");
    assert!(metrics.contains("edgestat_statsd_forward_errors_total 0\n"));
    let (code, _) = agent.stop();
    assert_eq!(code, 0);

    // A dead target: datagrams are still aggregated, failures only counted.
    drop(rx);
    let (agent, api) =
        start_with_api(&intake, &[("DD_STATSD_FORWARD_HOST", "127.0.0.1"), ("DD_STATSD_FORWARD_PORT", &port)]);
    for _ in 0..40 {
        agent.send_udp_pinned(b"dead.fwd:1|c");
        std::thread::sleep(Duration::from_millis(2));
    }
    let st = status_until(&api, |v| {
        v["statsd_forward"]["sent"].as_u64().unwrap_or(0) + v["statsd_forward"]["errors"].as_u64().unwrap_or(0) == 40
    });
    assert!(st["statsd_forward"]["errors"].as_u64().unwrap() > 0, "{st:#}");
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    assert_eq!(counter_total(&series_from(&intake.payloads(None)), "dead.fwd", ""), 40.0);
}

#[test]
fn capture_then_replay_into_a_second_agent_gives_the_same_metrics() {
    let (intake_a, intake_b) = (Intake::start_tls(), Intake::start_tls());
    let dir = tempfile::tempdir().unwrap();
    let stream_a = dir.path().join("a-stream.socket");
    let stream_b = dir.path().join("b-stream.socket");
    let (sa, sb) = (stream_a.to_str().unwrap().to_string(), stream_b.to_str().unwrap().to_string());
    let (agent_a, api) = start_with_api(&intake_a, &[("DD_DOGSTATSD_STREAM_SOCKET", &sa)]);
    let agent_b = Agent::start(Some(&intake_b), &[("DD_DOGSTATSD_STREAM_SOCKET", &sb)]);

    for (i, compress) in [(0, false), (1, true)] {
        let out = dir.path().join(format!("cap{i}"));
        std::fs::create_dir(&out).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["capture", "--duration", "2s", "--path", out.to_str().unwrap()])
            .args(compress.then_some("--compress"))
            .env_clear()
            .env("EDGESTAT_API_ADDR", &api);
        // Traffic arrives while the capture runs (the command waits for its end).
        let capture = std::thread::scope(|sc| {
            let h = sc.spawn(move || cmd.output());
            std::thread::sleep(Duration::from_millis(500));
            let mut stream = UnixStream::connect(&stream_a).unwrap();
            for k in 0..30 {
                agent_a.send_udp_pinned(format!("cap.udp:{k}|c|#run:{i}").as_bytes());
                agent_a.send_uds(format!("cap.uds:2|c|#run:{i}\ncap.gauge:{k}|g|#run:{i}").as_bytes());
                stream.write_all(&frame(format!("cap.stream:3|c|#run:{i}").as_bytes())).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
            h.join().unwrap().unwrap()
        });
        let stdout = String::from_utf8_lossy(&capture.stdout).into_owned();
        assert_eq!(capture.status.code(), Some(0), "{}", String::from_utf8_lossy(&capture.stderr));
        assert!(stdout.starts_with("wrote 90 datagrams"), "{stdout}");
        let file = std::fs::read_dir(&out).unwrap().next().unwrap().unwrap().path();
        assert_eq!(file.extension().is_some_and(|e| e == "zstd"), compress);

        // Replay into B: UDP for the plain file, B's stream socket for the compressed one.
        let target = if compress { format!("unix:{sb}") } else { format!("127.0.0.1:{}", agent_b.udp_port) };
        let r = Command::new(BIN).args(["replay", file.to_str().unwrap(), "--target", &target]).output().unwrap();
        let msg = String::from_utf8_lossy(&r.stdout);
        assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
        assert!(msg.starts_with("replayed 90 datagrams"), "{msg}");
    }
    // B sees every replayed frame before it stops (it flushes everything at SIGTERM).
    std::thread::sleep(Duration::from_millis(500));
    let (ca, _) = agent_a.stop();
    let (cb, _) = agent_b.stop();
    assert_eq!((ca, cb), (0, 0));
    let (a, b) = (series_from(&intake_a.payloads(None)), series_from(&intake_b.payloads(None)));
    for i in 0..2 {
        let run = format!("run:{i}");
        for m in ["cap.udp", "cap.uds", "cap.stream"] {
            let (ta, tb) = (counter_total(&a, m, &run), counter_total(&b, m, &run));
            assert!(ta > 0.0, "{m} {run}");
            assert_eq!(ta, tb, "{m} {run}: captured agent and replayed agent agree");
        }
    }
}

#[test]
fn stats_lists_the_busiest_contexts_and_says_when_off() {
    let intake = Intake::start_tls();
    let (agent, api) = start_with_api(&intake, &[("DD_DOGSTATSD_METRICS_STATS_ENABLE", "true")]);
    for _ in 0..30 {
        agent.send_udp_pinned(b"busy.ctx:1|c|#b:2,a:1");
    }
    agent.send_udp_pinned(b"quiet.ctx:1:2:3|h");
    let end = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let (code, out, err) = ops(&api, &["stats", "--json"]);
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let rows = v["contexts"].as_array().cloned().unwrap_or_default();
        if rows.first().is_some_and(|r| r["count"] == 30) && rows.len() == 2 || Instant::now() > end {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(rows[0]["name"], "busy.ctx");
    assert_eq!(rows[0]["tags"], serde_json::json!(["a:1", "b:2"]));
    assert_eq!(rows[0]["count"], 30);
    assert!(rows[0]["last_seen"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(
        (rows[1]["name"].as_str(), rows[1]["count"].as_u64()),
        (Some("quiet.ctx"), Some(3)),
        "one count per sample"
    );
    let (code, text, _) = ops(&api, &["stats"]);
    assert_eq!(code, 0);
    assert!(text.starts_with("Metric") && text.contains("busy.ctx") && text.contains("a:1 b:2"), "{text}");
    let (code, _) = agent.stop();
    assert_eq!(code, 0);

    let (agent, api) = start_with_api(&intake, &[]);
    let (code, out, err) = ops(&api, &["stats"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("DD_DOGSTATSD_METRICS_STATS_ENABLE"), "{err}");
    drop(agent);
}

#[test]
fn status_shows_the_pipeline_and_every_command_fails_cleanly_without_an_agent() {
    let intake = Intake::start_tls();
    let (agent, api) = start_with_api(&intake, &[("EDGESTAT_FLUSH_INTERVAL", "1s")]);
    agent.send_udp(b"st.ok:1|c\nst.bad:x|c\nnot a line");
    agent.send_uds(b"st.ok:1|c");
    let v = status_until(&api, |v| {
        v["dogstatsd"]["packets"] == 2 && v["forwarders"][0]["counters"]["success"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(v["dogstatsd"]["packets"], 2, "{v:#}");
    assert_eq!(v["dogstatsd"]["metric_lines"], 2);
    assert_eq!(
        v["dogstatsd"]["parse_errors"].as_object().unwrap().values().map(|x| x.as_u64().unwrap()).sum::<u64>(),
        2
    );
    assert_eq!(v["listeners"]["udp"], format!("127.0.0.1:{}", agent.udp_port));
    assert_eq!(v["listeners"]["api"], api);
    assert!(v["flush"]["count"].as_u64().unwrap() >= 1 && v["flush"]["last_duration_seconds"].as_f64().unwrap() > 0.0);
    assert!(v["payloads"]["series_v2"]["payloads"].as_u64().unwrap() >= 1, "{v:#}");
    let fw = &v["forwarders"][0];
    assert_eq!(fw["endpoints"][0]["url"], intake.url.trim_end_matches('/'));
    assert_eq!(fw["endpoints"][0]["api_keys"], 1);
    assert!(fw["api_key"].is_string() && fw["retry_queue_bytes"].is_u64() && fw["spill_bytes"].is_u64());
    assert!(!v.to_string().contains("test-api-key"), "never the key itself");
    assert!(v["uptime_seconds"].as_f64().unwrap() > 0.0);
    // The memory limit: derived from the host by default, the live
    // context (st.ok) on top of the fixed buffers.
    let mem = &v["memory"];
    assert!(mem["limit_bytes"].as_u64().unwrap() > 0, "{mem:#}");
    assert!(mem["limit_source"].as_str().unwrap().starts_with("50% of "), "{mem:#}");
    assert!(mem["estimated_bytes"].as_u64().unwrap() > mem["fixed_bytes"].as_u64().unwrap(), "{mem:#}");
    assert_eq!(v["udp_kernel_drops"], 0, "nothing dropped by the kernel: {v:#}");
    let (code, text, _) = ops(&api, &["status"]);
    assert_eq!(code, 0);
    assert!(text.contains("packets 2") && text.contains("Forwarder metrics") && text.contains("series_v2"), "{text}");
    assert!(text.contains("UDP datagrams dropped by the kernel (socket buffer full, now) 0"), "{text}");
    let (code, _) = agent.stop();
    assert_eq!(code, 0);

    let nobody = format!("127.0.0.1:{}", free_tcp_port());
    for args in [&["status"][..], &["status", "--json"], &["stats"], &["capture", "--duration", "1s"]] {
        let (code, out, err) = ops(&nobody, args);
        assert_eq!(code, 1, "{args:?}");
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("cannot reach the agent") && err.contains(&nobody), "{err}");
    }
}
