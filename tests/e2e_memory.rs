//! `EDGESTAT_MEMORY_LIMIT` and CPU placement, through the real binary.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Small buffers so the fixed costs are a few MiB.
const SMALL: [(&str, &str); 6] = [
    ("EDGESTAT_SHARDS", "1"),
    ("EDGESTAT_RECV_BATCH_DATAGRAMS", "4"),
    ("EDGESTAT_IO_MEMORY_BYTES", "65536"),
    ("EDGESTAT_FORWARDER_WINDOW_BYTES", "1048576"),
    ("DD_FORWARDER_RETRY_QUEUE_PAYLOADS_MAX_SIZE", "1048576"),
    ("EDGESTAT_MAX_CONTEXTS", "100000"),
];

/// Runs `edgestat run` with the harness's settings plus `extra` and waits
/// for it to exit on its own; returns (status, stderr).
fn run_to_exit(intake: &Intake, extra: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .env_clear()
        .env("DD_HOSTNAME", "h1")
        .env("DD_DOGSTATSD_PORT", free_udp_port().to_string())
        .env("DD_DOGSTATSD_SOCKET", dir.path().join("dsd.socket"))
        .env("EDGESTAT_API_ADDR", "off")
        .env("EDGESTAT_DATA_DIR", dir.path().join("data"))
        .env("DD_DD_URL", &intake.url)
        .env("DD_API_KEY", "test-api-key")
        .env("SSL_CERT_FILE", &intake.cert)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run edgestat");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn field(line: &str, key: &str) -> u64 {
    let rest = line.split(&format!("{key}=")).nth(1).unwrap_or_else(|| panic!("no {key}= in {line}"));
    rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

fn gauge(metrics: &str, name: &str) -> u64 {
    let line = metrics.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}"));
    line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
}

#[test]
fn memory_limit_admits_what_fits_and_counts_the_rest() {
    let intake = Intake::start_tls();

    // Below the fixed costs: exit 2, one line naming the key, the limit and the total.
    let (code, stderr) = run_to_exit(&intake, &[SMALL.as_slice(), &[("EDGESTAT_MEMORY_LIMIT", "2000000")]].concat());
    assert_eq!(code, 2, "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains("EDGESTAT_MEMORY_LIMIT=2000000 bytes"), "{stderr}");
    let fixed: u64 =
        lines[0].split("fixed total is ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
    assert!(fixed > 2_000_000, "{stderr}");

    // Room for exactly 2,000 contexts named mem.NNNNN (no tags, host h1):
    // the key's payload is 3 u32 offsets + 9 + 2 bytes.
    let per = edgestat::core::aggregator::footprint::per_context_bytes() as u64;
    let cost = per + 12 + 9 + 2;
    let admitted = 2000u64;
    let limit = (fixed + admitted * cost).to_string();
    let port = free_tcp_port();
    let telemetry = format!("127.0.0.1:{port}");
    let agent = Agent::start(
        Some(&intake),
        &[SMALL.as_slice(), &[("EDGESTAT_MEMORY_LIMIT", &limit), ("EDGESTAT_TELEMETRY_ADDR", &telemetry)]].concat(),
    );
    avoid_bucket_edge(4);
    for chunk in (0..3000).collect::<Vec<_>>().chunks(50) {
        let lines: Vec<String> = chunk.iter().map(|i| format!("mem.{i:05}:1|c")).collect();
        agent.send_udp_pinned(lines.join("\n").as_bytes());
        std::thread::sleep(Duration::from_millis(2));
    }
    // Known contexts keep working at the limit.
    agent.send_udp_pinned(b"mem.00000:1|c\nmem.01999:1|c");
    let (_, metrics) = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            http_call("GET", &format!("http://{telemetry}/metrics"))
        })
        .find(|(_, m)| m.contains("edgestat_dogstatsd_metric_samples_total 2002\n"))
        .unwrap_or_else(|| panic!("samples never reached 2002: {}", agent.stderr.all().join("\n")));
    assert_eq!(gauge(&metrics, "edgestat_memory_limit_bytes"), fixed + admitted * cost);
    assert_eq!(gauge(&metrics, "edgestat_memory_estimated_bytes"), fixed + admitted * cost);
    assert!(metrics.contains("edgestat_dogstatsd_dropped_total{reason=\"memory_limit\"} 1000\n"), "{metrics}");

    let (code, stderr) = agent.stop();
    assert_eq!(code, 0);
    let budget_line = stderr.iter().find(|l| l.contains("memory limit:")).expect("the budget is logged at start");
    assert_eq!(field(budget_line, "context_budget_bytes"), admitted * cost, "{budget_line}");
    assert_eq!(field(budget_line, "fixed_bytes"), fixed, "{budget_line}");
    let series = series_from(&intake.payloads(Some("/api/v2/series")));
    let mem: Vec<&S> = series.iter().filter(|s| s.metric.starts_with("mem.")).collect();
    assert_eq!(mem.len() as u64, admitted, "exactly the contexts that fit are delivered");
    assert!(mem.iter().all(|s| s.metric.as_str() < "mem.02000"), "the first ones to arrive");
    let dropped: u64 = stderr
        .iter()
        .filter_map(|l| l.split("memory_limit=").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(dropped, 1000, "every refused sample is counted once");
    assert_eq!(stderr.iter().filter(|l| l.contains("would pass EDGESTAT_MEMORY_LIMIT")).count(), 1, "logged once");
}

/// `edgestat run` under `taskset -c cpus` with `extra` env; calls `look`
/// with its pid once it is running, then stops it. Returns its start line.
fn run_on_cpus(cpus: &str, extra: &[(&str, &str)], look: impl FnOnce(u32)) -> String {
    if Command::new("taskset").arg("-V").output().is_err() {
        panic!("taskset (util-linux) is needed for this test");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("taskset")
        .args(["-c", cpus, BIN, "run"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DD_HOSTNAME", "h1")
        .env("DD_DOGSTATSD_PORT", free_udp_port().to_string())
        .env("EDGESTAT_API_ADDR", "off")
        .env("EDGESTAT_DATA_DIR", dir.path().join("data"))
        .envs(extra.iter().copied())
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Lines::follow(child.stderr.take().unwrap());
    let line = stderr.wait_for("edgestat running", Duration::from_secs(20));
    if line.is_some() {
        look(child.id());
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    line.unwrap_or_else(|| panic!("did not start: {}", stderr.all().join("\n")))
}

#[test]
fn shards_default_to_the_allowed_cpus() {
    let line = run_on_cpus("0", &[], |_| {});
    assert!(line.contains("shards=1 cpus=[0]"), "{line}");
}

/// With a CPU left over by the shards, the flusher and the forwarder run
/// there, so a flush's compression never delays a shard's reads.
#[test]
fn background_threads_run_on_the_cpus_without_a_shard() {
    assert!(
        std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2,
        "this test needs two CPUs (CI and the reference machine have two)"
    );
    let mut allowed = std::collections::BTreeMap::<&str, Vec<String>>::new();
    let line = run_on_cpus("0,1", &[("EDGESTAT_SHARDS", "1")], |pid| {
        for name in ["edgestat-shard", "edgestat-flushe", "edgestat-forwar"] {
            for tid in threads_named(pid, name) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
                let cpus = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap_or("");
                allowed.entry(name).or_default().push(cpus.trim().to_string());
            }
        }
    });
    assert!(line.contains("shards=1 cpus=[0, 1] background_cpus=[1]"), "{line}");
    for (name, cpu) in [("edgestat-shard", "0"), ("edgestat-flushe", "1"), ("edgestat-forwar", "1")] {
        let seen = allowed.get(name).cloned().unwrap_or_default();
        assert!(!seen.is_empty() && seen.iter().all(|c| c == cpu), "{name}: {allowed:?}");
    }
}
