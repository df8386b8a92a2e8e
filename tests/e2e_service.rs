//! The agent as a service, black-box: `GET /health` and `edgestat health`
//! (healthy, a frozen thread, agent down), systemd's readiness protocol
//! over `$NOTIFY_SOCKET`, JSON logs and `DD_LOG_LEVEL`.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn health_cli(addr: &str) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["health", "--addr", addr])
        .env_remove("EDGESTAT_API_ADDR")
        .output()
        .expect("run edgestat health");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `GET /health` until it answers `want` (bounded); returns the body.
fn health_until(addr: &str, want: u16, timeout: Duration) -> String {
    let end = Instant::now() + timeout;
    loop {
        let (code, body) = http_call("GET", &format!("http://{addr}/health"));
        if code == want {
            return body;
        }
        assert!(Instant::now() < end, "GET /health stayed {code} (wanted {want}): {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn health_answers_200_when_alive_503_with_the_reason_when_a_thread_stalls_and_the_cli_follows() {
    let intake = Intake::start_tls();
    let addr = format!("127.0.0.1:{}", free_tcp_port());
    let agent = Agent::start(Some(&intake), &[("EDGESTAT_API_ADDR", &addr), ("EDGESTAT_FLUSH_INTERVAL", "1s")]);

    let (code, body) = http_call("GET", &format!("http://{addr}/health"));
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok", "{body}");
    for c in ["shard-0", "shard-1", "flusher", "forwarder", "forwarder-orchestrator"] {
        assert_eq!(v["components"][c], "ok", "{c} in {body}");
    }
    let (code, out, err) = health_cli(&addr);
    assert_eq!(code, 0, "stdout {out} stderr {err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["status"], "ok");
    assert_eq!(http_call("POST", &format!("http://{addr}/health")).0, 405);

    // The flusher thread stops: no flush within two intervals.
    let flusher = threads_named(agent.child.id(), "edgestat-flushe");
    assert_eq!(flusher.len(), 1, "one flusher thread");
    let frozen = Frozen::new(&flusher);
    let body = health_until(&addr, 503, Duration::from_secs(30));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "unhealthy", "{body}");
    assert!(
        v["reasons"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().starts_with("flusher: no progress for")),
        "{body}"
    );
    assert_eq!(v["components"]["shard-0"], "ok", "{body}");
    let (code, out, err) = health_cli(&addr);
    assert_eq!(code, 1, "stdout {out} stderr {err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["status"], "unhealthy");
    assert_eq!(err.trim(), "edgestat health: unhealthy (HTTP 503)");
    drop(frozen);
    health_until(&addr, 200, Duration::from_secs(30));

    // The shards stop (their executors and helper threads share the name):
    // their loops go silent and they miss flush requests.
    let shards = threads_named(agent.child.id(), "edgestat-shard");
    assert!(shards.len() >= 2, "at least one thread per shard");
    let frozen = Frozen::new(&shards);
    // The flusher, waiting for their answers, may be reported first.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let body = health_until(&addr, 503, Duration::from_secs(60));
        let v: Value = serde_json::from_str(&body).unwrap();
        let reasons: Vec<&str> = v["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        if reasons.iter().any(|r| r.starts_with("shard-") && r.contains(": no progress for")) {
            break;
        }
        assert!(Instant::now() < end, "no shard reported: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(frozen);
    health_until(&addr, 200, Duration::from_secs(60));

    let (code, stderr) = agent.stop();
    assert_eq!(code, 0, "{}", stderr.join("\n"));

    // Nobody listens any more.
    let (code, out, err) = health_cli(&addr);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("edgestat health: cannot reach the agent's local API at {addr}")), "{err}");
}

#[test]
fn notify_socket_gets_ready_once_sockets_are_bound_and_stopping_at_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let listener = UnixDatagram::bind(&path).unwrap();
    listener.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let agent = Agent::start(None, &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).expect("READY=1 within 30 s");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means bound: the DogStatsD port and the Unix socket are taken.
    assert!(std::net::UdpSocket::bind(("127.0.0.1", agent.udp_port)).is_err(), "UDP port not bound at READY=1");
    assert!(agent.socket.exists());

    let mut agent = agent;
    agent.signal(libc::SIGTERM);
    let n = listener.recv(&mut buf).expect("STOPPING=1 within 30 s");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert_eq!(wait_exit(&mut agent.child), 0, "{}", agent.stderr.all().join("\n"));
}

/// `edgestat run` with only `env` (plus a free port and a temp data dir),
/// started and known ready through `$NOTIFY_SOCKET`, whatever the log level.
fn run_until_ready(env: &[(&str, &str)]) -> (std::process::Child, Lines, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let port = free_udp_port();
    let mut child = Command::new(BIN)
        .arg("run")
        .env_clear()
        .env("DD_HOSTNAME", "h1")
        .env("DD_DOGSTATSD_PORT", port.to_string())
        .env("EDGESTAT_API_ADDR", "off")
        .env("EDGESTAT_SHARDS", "1")
        .env("EDGESTAT_FLUSH_INTERVAL", "1h")
        .env("EDGESTAT_DATA_DIR", dir.path().join("data"))
        .env("NOTIFY_SOCKET", &notify)
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Lines::follow(child.stderr.take().unwrap());
    let mut buf = [0u8; 64];
    let n = listener.recv(&mut buf).expect("READY=1");
    assert_eq!(&buf[..n], b"READY=1");
    (child, stderr, port, dir)
}

fn terminate(child: &mut std::process::Child) -> i32 {
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    wait_exit(child)
}

/// Waits (bounded) for the exit status after a SIGTERM was sent.
fn wait_exit(child: &mut std::process::Child) -> i32 {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            // Let the reader thread take the last lines.
            std::thread::sleep(Duration::from_millis(100));
            return st.code().unwrap_or(-1);
        }
        assert!(Instant::now() < end, "edgestat did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn parse_json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON object ({e}): {l}"));
            assert!(v.is_object(), "{l}");
            assert!(v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(), "{l}");
            v
        })
        .collect()
}

#[test]
fn json_log_format_makes_every_stderr_line_one_json_object() {
    let (mut child, stderr, port, _dir) =
        run_until_ready(&[("EDGESTAT_LOG_FORMAT", "json"), ("DD_LOG_LEVEL", "debug")]);
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"ok.metric:1|c\nbroken line without a type\n", ("127.0.0.1", port)).unwrap();
    assert_eq!(terminate(&mut child), 0);
    let lines = stderr.all();
    let objs = parse_json_lines(&lines);
    let levels: Vec<&str> = objs.iter().map(|v| v["level"].as_str().unwrap()).collect();
    for want in ["DEBUG", "INFO", "WARN"] {
        assert!(levels.contains(&want), "no {want} line in:\n{}", lines.join("\n"));
    }
    let running = objs.iter().find(|v| v["message"] == "edgestat running").expect("the start line");
    assert_eq!(running["shards"], 1, "fields are top-level keys: {running}");

    // A configuration error is one JSON line too, naming the key.
    let out = Command::new(BIN)
        .arg("run")
        .env_clear()
        .env("EDGESTAT_LOG_FORMAT", "json")
        .env("DD_DOGSTATSD_PORT", "eighty")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).lines().map(str::to_string).collect::<Vec<_>>();
    let objs = parse_json_lines(&err);
    assert_eq!(objs.len(), 1, "{err:?}");
    assert_eq!(objs[0]["level"], "ERROR");
    assert!(objs[0]["message"].as_str().unwrap().contains("DD_DOGSTATSD_PORT"), "{err:?}");
}

#[test]
fn log_level_takes_the_agents_values() {
    // `warning` (the Agent's spelling): warnings only, no info lines.
    let (mut child, stderr, port, _dir) =
        run_until_ready(&[("DD_LOG_LEVEL", "WARNING"), ("EDGESTAT_LOG_FORMAT", "json")]);
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"broken line without a type\n", ("127.0.0.1", port)).unwrap();
    assert_eq!(terminate(&mut child), 0);
    let lines = stderr.all();
    let levels: Vec<String> =
        parse_json_lines(&lines).iter().map(|v| v["level"].as_str().unwrap().to_string()).collect();
    assert!(levels.iter().any(|l| l == "WARN"), "{lines:?}");
    assert!(levels.iter().all(|l| l == "WARN" || l == "ERROR"), "{lines:?}");

    // `off`: nothing at all on stderr.
    let (mut child, stderr, _port, _dir) = run_until_ready(&[("DD_LOG_LEVEL", "off")]);
    assert_eq!(terminate(&mut child), 0);
    assert!(stderr.all().is_empty(), "{:?}", stderr.all());

    // Anything else: exit 2 naming the key.
    let out = Command::new(BIN).arg("run").env_clear().env("DD_LOG_LEVEL", "verbose").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DD_LOG_LEVEL") && err.contains("critical"), "{err}");
}
