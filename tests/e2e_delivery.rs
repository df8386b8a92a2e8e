//! Black-box delivery at scale: backpressure from a slow intake instead of
//! loss, late shard hand-overs merged into the next flush, and shard
//! counters visible at scrape time. Real binary, real sockets, real HTTPS
//! intake.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;

fn scrape(port: u16) -> String {
    http_call("GET", &format!("http://127.0.0.1:{port}/metrics")).1
}

/// Value of the first sample line starting with `name` (labels included).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Deterministic filler so tags compress like real ones (poorly).
fn filler(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"abcdefghijklmnopqrstuvwxyz0123456789"[(x % 36) as usize] as char
        })
        .collect()
}

/// Counter increments per metric name: DogStatsD counters flush as rates
/// (sum / interval), so each point counts value × interval.
fn sums(payloads: &[serde_json::Value], prefix: &str) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    for s in series_from(payloads) {
        if s.metric.starts_with(prefix) {
            *out.entry(s.metric).or_default() += s.points.iter().map(|p| p.1 * s.interval.max(1) as f64).sum::<f64>();
        }
    }
    out
}

/// 100,000 contexts of ~700 B lines, two increments each, into an intake
/// throttled far below what one flush produces, with a window and a retry
/// queue much smaller than one flush: the flusher must wait (backpressure),
/// and every increment must arrive exactly once with no drop counter moved.
#[test]
fn slow_intake_gets_every_context_exactly_once_through_backpressure() {
    const CONTEXTS: usize = 100_000;
    let intake = Intake::start_tls();
    intake.throttle(20_000_000);
    let tport = free_tcp_port();
    let tel = format!("127.0.0.1:{tport}");
    let agent = Agent::start(
        Some(&intake),
        &[
            ("EDGESTAT_FLUSH_INTERVAL", "1s"),
            ("EDGESTAT_TELEMETRY_ADDR", &tel),
            ("EDGESTAT_FORWARDER_WINDOW_BYTES", "1000000"),
            ("DD_FORWARDER_RETRY_QUEUE_PAYLOADS_MAX_SIZE", "500000"),
            ("EDGESTAT_SHUTDOWN_TIMEOUT", "60s"),
        ],
    );
    // Lines of ~1 KB packed into datagrams of up to 8 KB, sent on a blocking
    // Unix socket (a full queue blocks the sender: nothing lost before us).
    let sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let mut dgram = String::with_capacity(8192);
    let mut sent = 0usize;
    for _round in 0..2 {
        for i in 0..CONTEXTS {
            let tags: Vec<String> = (0..6).map(|j| format!("t{j}:{}", filler((i * 6 + j) as u64, 100))).collect();
            let line = format!("bp.{i:06}.{}:1|c|#{}\n", filler(i as u64, 40), tags.join(","));
            if dgram.len() + line.len() > 8000 {
                sock.send_to(dgram.as_bytes(), &agent.socket).unwrap();
                dgram.clear();
            }
            dgram.push_str(&line);
            sent += 1;
        }
    }
    if !dgram.is_empty() {
        sock.send_to(dgram.as_bytes(), &agent.socket).unwrap();
    }
    assert_eq!(sent, 2 * CONTEXTS);

    // Every context's bucket closes within 10 s; the slow intake then needs
    // several seconds for them.
    let end = Instant::now() + Duration::from_secs(120);
    let mut got: HashMap<String, f64> = HashMap::new();
    let mut seq = 0;
    while Instant::now() < end {
        let new = intake.payloads_since("/api/v2/series", seq);
        seq = new.iter().filter_map(|p| p["seq"].as_u64()).max().unwrap_or(seq);
        for (k, v) in sums(&new, "bp.") {
            *got.entry(k).or_default() += v;
        }
        if got.values().sum::<f64>() >= (2 * CONTEXTS) as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = scrape(tport);
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0, "{}", stderr.join("\n"));
    assert_eq!(got.len(), CONTEXTS, "contexts delivered");
    let wrong: Vec<_> = got.iter().filter(|(_, v)| **v != 2.0).take(5).collect();
    assert!(wrong.is_empty(), "every context must carry exactly its 2 increments: {wrong:?}");

    // The flusher did wait for the window: backpressure, not luck.
    let waits = metric(&text, "edgestat_flush_forwarder_waits_total").unwrap();
    assert!(waits > 0.0, "the window never filled; the test would not test anything:\n{text}");
    let fw = forwarder_stats(&stderr);
    for k in ["dropped", "dropped_retry_queue_full", "dropped_intake_too_slow", "errors"] {
        assert_eq!(fw[k], 0, "{k}: {}", stderr.join("\n"));
    }
    assert_eq!(fw["input"], fw["success"]);
    assert!(!stderr.iter().any(|l| l.contains("dropped since the last flush")), "{}", stderr.join("\n"));
    assert_eq!(metric(&text, "edgestat_dogstatsd_dropped_total{"), None, "no aggregation drops:\n{text}");
}

/// Shard 0 answers its first flush with data 7 s late (beyond the 5 s
/// reply timeout): the flush goes out with the other shard's data, the late
/// answer joins the next flush, nothing is lost or duplicated, and the late
/// hand-over is counted, logged and shown per shard.
#[test]
fn a_late_shard_flush_arrives_with_the_next_one() {
    let intake = Intake::start_tls();
    let tport = free_tcp_port();
    let tel = format!("127.0.0.1:{tport}");
    let agent = Agent::start(
        Some(&intake),
        &[
            ("EDGESTAT_FLUSH_INTERVAL", "1s"),
            ("EDGESTAT_TELEMETRY_ADDR", &tel),
            ("EDGESTAT_TEST_DELAY_SHARD_FLUSH", "0:7s"),
            ("EDGESTAT_UNIX_READERS", "1"),
        ],
    );
    avoid_bucket_edge(3);
    // The Unix socket is read by shard 0 only (one reader): these wait in
    // the delayed shard.
    for _ in 0..50 {
        agent.send_uds(b"late.uds:1|c");
    }
    // Sixteen client sockets: the kernel spreads them over both shards.
    for k in 0..16 {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..10 {
            s.send_to(format!("ontime.udp{k}:1|c").as_bytes(), ("127.0.0.1", agent.udp_port)).unwrap();
        }
    }
    let missed = agent.stderr.wait_for("did not answer the flush request in time", Duration::from_secs(30));
    assert!(missed.is_some(), "{}", agent.stderr.all().join("\n"));
    // The flush that went on without shard 0 delivered shard 1's data.
    let early = sums(&intake.payloads(Some("/api/v2/series")), "ontime.");
    assert!(!early.is_empty(), "the other shard's data must keep flowing");
    assert_eq!(sums(&intake.payloads(Some("/api/v2/series")), "late.").len(), 0, "shard 0 is still holding its answer");
    let merged = agent.stderr.wait_for("a late shard flush arrived; merged into this flush", Duration::from_secs(20));
    assert!(merged.is_some(), "{}", agent.stderr.all().join("\n"));
    intake.wait_until(Duration::from_secs(20), |p| sums(p, "late.").values().sum::<f64>() >= 50.0);
    let text = scrape(tport);
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0, "{}", stderr.join("\n"));

    let all = intake.payloads(Some("/api/v2/series"));
    assert_eq!(
        sums(&all, "late.").get("late.uds"),
        Some(&50.0),
        "every increment from the late shard, once:\n{}",
        stderr.join("\n")
    );
    let udp = sums(&all, "ontime.");
    assert_eq!(udp.len(), 16);
    assert!(udp.values().all(|v| *v == 10.0), "{udp:?}");
    assert!(metric(&text, "edgestat_late_shard_flushes_total").unwrap() >= 1.0, "{text}");
    assert!(metric(&text, "edgestat_shard_missed_flushes_total{shard=\"0\"}").unwrap() >= 1.0, "{text}");
    assert_eq!(metric(&text, "edgestat_shard_missed_flushes_total{shard=\"1\"}"), Some(0.0), "{text}");
    assert_eq!(metric(&text, "edgestat_shard_answering{shard=\"0\"}"), Some(1.0), "answering again:\n{text}");
    assert_eq!(forwarder_stats(&stderr)["dropped"], 0);
}

/// Shard counters move at scrape time, long before the first flush.
#[test]
fn metrics_show_packets_before_the_first_flush() {
    let tport = free_tcp_port();
    let tel = format!("127.0.0.1:{tport}");
    let agent = Agent::start(None, &[("EDGESTAT_TELEMETRY_ADDR", &tel)]);
    for i in 0..20 {
        agent.send_uds(format!("live.m{i}:1|c\nlive.g:{i}|g").as_bytes());
    }
    let end = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while Instant::now() < end {
        text = scrape(tport);
        if metric(&text, "edgestat_dogstatsd_packets_total") == Some(20.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(&text, "edgestat_dogstatsd_packets_total"), Some(20.0), "{text}");
    assert_eq!(metric(&text, "edgestat_dogstatsd_metric_lines_total"), Some(40.0), "{text}");
    assert_eq!(metric(&text, "edgestat_flush_total"), Some(0.0), "no flush has happened (interval 1h)");
    assert!(text.contains("# HELP edgestat_dogstatsd_packets_total Datagrams"), "{text}");
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
}

/// The kernel's drops of the UDP socket's datagrams, from /proc/net/udp.
fn kernel_udp_drops(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let p = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (p == port).then(|| f.get(12)?.parse::<u64>().ok()).flatten()
        })
        .sum()
}

/// Datagrams the kernel drops at a full socket buffer (before edgestat can
/// read them) are not silent: `/metrics` counts them at scrape time and the
/// first flush that follows logs them, once.
#[test]
fn kernel_drops_are_counted_and_logged_once() {
    let tport = free_tcp_port();
    let tel = format!("127.0.0.1:{tport}");
    let agent = Agent::start(
        None,
        &[
            ("EDGESTAT_TELEMETRY_ADDR", &tel),
            ("EDGESTAT_SHARDS", "1"),
            ("DD_DOGSTATSD_SO_RCVBUF", "4096"),
            ("EDGESTAT_FLUSH_INTERVAL", "1s"),
        ],
    );
    let before = metric(&scrape(tport), "edgestat_dogstatsd_udp_kernel_drops_total");
    assert_eq!(before, Some(0.0), "nothing dropped yet");
    for round in 0..2 {
        // Stopped, the shard reads nothing: the tiny buffer fills and the
        // kernel drops the rest.
        agent.signal(libc::SIGSTOP);
        for i in 0..300 {
            agent.send_udp_pinned(format!("kd.m{round}:{i}|c").as_bytes());
        }
        let dropped = kernel_udp_drops(agent.udp_port);
        agent.signal(libc::SIGCONT);
        assert!(dropped > 0, "a 4 KiB buffer cannot hold 300 datagrams");
        let text = scrape(tport);
        assert_eq!(metric(&text, "edgestat_dogstatsd_udp_kernel_drops_total"), Some(dropped as f64), "{text}");
        assert!(text.contains("# HELP edgestat_dogstatsd_udp_kernel_drops_total Datagrams the kernel dropped"));
        assert!(
            agent.stderr.wait_for("the kernel dropped UDP datagrams", Duration::from_secs(10)).is_some(),
            "logged after a flush"
        );
        // Two more flushes: still logged only once.
        std::thread::sleep(Duration::from_millis(2500));
    }
    let (code, stderr) = agent.stop();
    assert_eq!(code, 0);
    let warnings = stderr.iter().filter(|l| l.contains("the kernel dropped UDP datagrams")).count();
    assert_eq!(warnings, 1, "logged once: {stderr:?}");
    assert!(stderr.iter().any(|l| l.contains("DD_DOGSTATSD_SO_RCVBUF")), "says what to raise");
}

/// One run of a shard stalled mid-stream (all its threads stopped with
/// ptrace, as a kernel thread or another process taking its CPU would)
/// while a sender keeps going at ~2,000 datagrams of ~6.6 KB a second:
/// (counts delivered, kernel drops, datagrams read by the standby).
fn stall_the_shard(standby_bytes: &str) -> (f64, u64, f64) {
    let intake = Intake::start_tls();
    let tport = free_tcp_port();
    let tel = format!("127.0.0.1:{tport}");
    let agent = Agent::start(
        Some(&intake),
        &[
            ("EDGESTAT_TELEMETRY_ADDR", &tel),
            ("EDGESTAT_SHARDS", "1"),
            // The kernel doubles it: 262,144 B, about 31 of these datagrams,
            // ~14 ms of this traffic (the standby arms below 20 ms).
            ("DD_DOGSTATSD_SO_RCVBUF", "131072"),
            ("EDGESTAT_FLUSH_INTERVAL", "1s"),
            ("EDGESTAT_UDP_STANDBY_BYTES", standby_bytes),
        ],
    );
    let line = format!("standby.c:1|c|#pad:{}\n", filler(7, 60));
    let datagram = line.repeat(80);
    let send = |n: usize| {
        for _ in 0..n {
            agent.send_udp_pinned(datagram.as_bytes());
            std::thread::sleep(Duration::from_micros(400));
        }
    };
    // The shard sees a rate that would fill its buffer in a few ms: it
    // arms its standby.
    send(250);
    let frozen = Frozen::new(&threads_named(agent.child.id(), "edgestat-shard"));
    // ~2 MB while the shard cannot run.
    send(300);
    let drops = kernel_udp_drops(agent.udp_port);
    drop(frozen);
    std::thread::sleep(Duration::from_millis(500));
    let standby = metric(&scrape(tport), "edgestat_dogstatsd_udp_standby_datagrams_total").unwrap_or(-1.0);
    let (code, _) = agent.stop();
    assert_eq!(code, 0);
    let total = series_from(&intake.payloads(None))
        .iter()
        .filter(|s| s.metric == "standby.c")
        // A DogStatsD counter ships as a rate per second of its interval.
        .flat_map(|s| s.points.iter().map(move |p| p.1 * s.interval.max(1) as f64))
        .sum();
    (total, drops, standby)
}

/// A shard that cannot run for a while loses nothing: its standby reader,
/// a thread on another CPU, reads the socket past a quarter of its buffer
/// and the shard parses those datagrams once it runs again. Without the
/// standby the same stall overflows the buffer, so this test can fail.
#[test]
fn a_stalled_shard_loses_nothing_its_standby_reader_reads_the_socket() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cpus >= 2, "the standby runs on a CPU other than its shard's: this test needs two");
    let expected = 550.0 * 80.0;
    let (total, drops, standby) = stall_the_shard("4194304");
    assert_eq!(drops, 0, "no kernel drops with the standby");
    assert!(standby >= 280.0, "the standby read what came during the stall: {standby}");
    assert_eq!(total, expected, "every count delivered exactly once");

    let (total, drops, standby) = stall_the_shard("0");
    assert_eq!(standby, 0.0, "no standby reader");
    assert!(drops > 0, "without it the stall overflows the buffer");
    assert!(total < expected, "and counts are lost: {total}");
}
