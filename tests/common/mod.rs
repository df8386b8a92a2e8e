//! Black-box harness: the real `edgestat` binary, real sockets, a real
//! HTTPS `edgestat intake`. Every wait is bounded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_edgestat");

/// A free UDP port on loopback (bound then released; edgestat binds it next).
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind ephemeral");
    s.local_addr().expect("addr").port()
}

/// Collects a child's output lines in the background.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    pub fn follow(stream: impl Read + Send + 'static) -> Self {
        let lines = Lines::default();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                l.0.lock().unwrap().push(line);
            }
        });
        lines
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(l) = self.all().into_iter().find(|l| l.contains(needle)) {
                return Some(l);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// `edgestat intake` over HTTPS with a self-signed certificate.
pub struct Intake {
    child: Child,
    pub url: String,
    pub cert: PathBuf,
    pub dir: tempfile::TempDir,
    agent: ureq::Agent,
}

impl Intake {
    /// HTTPS intake on a fixed `listen` address; the self-signed pair lives
    /// in `dir/tls` (reused on restart, so one `SSL_CERT_FILE` stays valid).
    pub fn start_tls_at(listen: &str, dir: tempfile::TempDir) -> Intake {
        let tls_dir = dir.path().join("tls");
        let (child, url) = spawn_intake(listen, &tls_dir);
        let cert = tls_dir.join("cert.pem");
        let agent = tls_agent(&cert);
        Intake { child, url, cert, dir, agent }
    }

    /// Port the intake listens on.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Kills the intake (the port stops answering).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port with the same certificate.
    pub fn restart(&mut self) {
        self.kill();
        let listen = format!("127.0.0.1:{}", self.port());
        let (child, url) = spawn_intake(&listen, &self.dir.path().join("tls"));
        self.child = child;
        assert_eq!(url, self.url);
    }

    pub fn start_tls() -> Intake {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        let mut child = Command::new(BIN)
            .args(["intake", "--listen", "127.0.0.1:0", "--tls-self-signed"])
            .arg(&tls_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn intake");
        let out = Lines::follow(child.stdout.take().unwrap());
        let line = out.wait_for("listening on", Duration::from_secs(20)).expect("intake did not start");
        let url = line.rsplit(' ').next().unwrap().trim().to_string();
        let cert = tls_dir.join("cert.pem");
        let agent = tls_agent(&cert);
        Intake { child, url, cert, dir, agent }
    }

    /// Stored requests for `path` (all when `None`).
    pub fn payloads(&self, path: Option<&str>) -> Vec<Value> {
        let mut req = self.agent.get(&format!("{}/intake/payloads", self.url));
        if let Some(p) = path {
            req = req.query("path", p);
        }
        let v: Value = req.call().expect("query intake").into_json().expect("json");
        v.as_array().cloned().unwrap_or_default()
    }

    pub fn fail(&self, body: Value) {
        self.agent.post(&format!("{}/intake/fail", self.url)).send_json(body).expect("inject failure");
    }

    /// Stored requests for `path` with a sequence number above `since`
    /// (incremental polling of large runs; generous timeout).
    pub fn payloads_since(&self, path: &str, since: u64) -> Vec<Value> {
        let req = self
            .agent
            .get(&format!("{}/intake/payloads", self.url))
            .query("path", path)
            .query("since", &since.to_string());
        let req = req.timeout(Duration::from_secs(120));
        let v: Value = req.call().expect("query intake").into_json().expect("json");
        v.as_array().cloned().unwrap_or_default()
    }

    /// Limits payload bodies to `bytes_per_sec` over all connections (0: off).
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.agent
            .post(&format!("{}/intake/throttle", self.url))
            .send_json(serde_json::json!({ "bytes_per_sec": bytes_per_sec }))
            .expect("set throttle");
    }

    /// Waits until `pred` holds for the stored payloads.
    pub fn wait_until(&self, timeout: Duration, mut pred: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let end = Instant::now() + timeout;
        loop {
            let all = self.payloads(None);
            if pred(&all) || Instant::now() > end {
                return all;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_intake(listen: &str, tls_dir: &Path) -> (Child, String) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let mut child = Command::new(BIN)
            .args(["intake", "--listen", listen, "--tls-self-signed"])
            .arg(tls_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn intake");
        let out = Lines::follow(child.stdout.take().unwrap());
        if let Some(line) = out.wait_for("listening on", Duration::from_secs(5)) {
            return (child, line.rsplit(' ').next().unwrap().trim().to_string());
        }
        // The port may still be held briefly by the previous instance.
        let _ = child.kill();
        let _ = child.wait();
        assert!(Instant::now() < end, "intake did not start on {listen}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A free TCP port on loopback (bound then released).
pub fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind ephemeral");
    l.local_addr().expect("addr").port()
}

/// Counters from the forwarder's shutdown line (`forwarder stopped: k=v ...`).
pub fn forwarder_stats(stderr: &[String]) -> std::collections::HashMap<String, u64> {
    let line = stderr
        .iter()
        .find(|l| l.contains("forwarder stopped:"))
        .unwrap_or_else(|| panic!("no forwarder summary in stderr:\n{}", stderr.join("\n")));
    let tail = line.split("forwarder stopped:").nth(1).unwrap();
    tail.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

fn tls_agent(cert: &Path) -> ureq::Agent {
    let pem = std::fs::read(cert).expect("read cert");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ureq::AgentBuilder::new().tls_config(Arc::new(cfg)).timeout(Duration::from_secs(10)).build()
}

/// A running `edgestat run`.
pub struct Agent {
    pub child: Child,
    pub stderr: Lines,
    pub stdout: Lines,
    pub udp_port: u16,
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `edgestat run` shipping to `intake` with `extra` env on top.
    pub fn start(intake: Option<&Intake>, extra: &[(&str, &str)]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let udp_port = free_udp_port();
        let socket = dir.path().join("dsd.socket");
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DD_HOSTNAME", "h1")
            .env("DD_DOGSTATSD_PORT", udp_port.to_string())
            .env("DD_DOGSTATSD_SOCKET", &socket)
            .env("EDGESTAT_API_ADDR", "off")
            .env("EDGESTAT_FLUSH_INTERVAL", "1h")
            .env("EDGESTAT_SHARDS", "2")
            .env("EDGESTAT_DATA_DIR", dir.path().join("data"))
            .env("DD_LOG_LEVEL", "info")
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(i) = intake {
            cmd.env("DD_DD_URL", &i.url).env("DD_API_KEY", "test-api-key").env("SSL_CERT_FILE", &i.cert);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn edgestat run");
        let stderr = Lines::follow(child.stderr.take().unwrap());
        let stdout = Lines::follow(child.stdout.take().unwrap());
        let agent = Agent { child, stderr, stdout, udp_port, socket, dir };
        if agent.stderr.wait_for("edgestat running", Duration::from_secs(20)).is_none() {
            panic!("edgestat did not start; stderr:\n{}", agent.stderr.all().join("\n"));
        }
        agent
    }

    pub fn send_udp(&self, datagram: &[u8]) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(datagram, ("127.0.0.1", self.udp_port)).unwrap();
    }

    /// Sends from one long-lived socket, like a real client: the kernel's
    /// SO_REUSEPORT hash then always picks the same shard.
    pub fn send_udp_pinned(&self, datagram: &[u8]) {
        thread_local! {
            static SOCK: UdpSocket = UdpSocket::bind("127.0.0.1:0").unwrap();
        }
        SOCK.with(|s| s.send_to(datagram, ("127.0.0.1", self.udp_port)).unwrap());
    }

    pub fn send_uds(&self, datagram: &[u8]) {
        let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
        s.send_to(datagram, &self.socket).unwrap();
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn stop(mut self) -> (i32, Vec<String>) {
        self.terminate()
    }

    /// SIGTERM and wait (bounded), keeping the temp dir alive.
    pub fn terminate(&mut self) -> (i32, Vec<String>) {
        self.signal(libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return (st.code().unwrap_or(-1), self.stderr.all());
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("edgestat did not exit after SIGTERM; stderr:\n{}", self.stderr.all().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sleeps until at least `margin` seconds remain in the current 10 s
/// bucket, so a burst of samples lands in one bucket.
pub fn avoid_bucket_edge(margin: u64) {
    loop {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let into = now.as_secs_f64() % 10.0;
        if 10.0 - into > margin as f64 {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A series normalised from either `/api/v1/series` JSON or `/api/v2/series`.
#[derive(Debug, Clone, PartialEq)]
pub struct S {
    pub metric: String,
    pub host: String,
    pub tags: Vec<String>,
    pub kind: String,
    pub interval: i64,
    pub points: Vec<(i64, f64)>,
}

pub fn series_from(payloads: &[Value]) -> Vec<S> {
    let mut out = Vec::new();
    for p in payloads {
        let path = p["path"].as_str().unwrap_or_default();
        let Some(list) = p["body"]["series"].as_array() else {
            continue;
        };
        for s in list {
            if path == "/api/v1/series" {
                out.push(S {
                    metric: s["metric"].as_str().unwrap().to_string(),
                    host: s["host"].as_str().unwrap_or_default().to_string(),
                    tags: s["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect(),
                    kind: s["type"].as_str().unwrap().to_string(),
                    interval: s["interval"].as_i64().unwrap(),
                    points: s["points"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
                        .collect(),
                });
            } else if path == "/api/v2/series" {
                let host = s["resources"]
                    .as_array()
                    .and_then(|r| r.iter().find(|r| r["type"] == "host"))
                    .and_then(|r| r["name"].as_str())
                    .unwrap_or_default()
                    .to_string();
                let kind = match s["type"].as_i64().unwrap_or(0) {
                    1 => "count",
                    2 => "rate",
                    3 => "gauge",
                    _ => "unspecified",
                };
                out.push(S {
                    metric: s["metric"].as_str().unwrap().to_string(),
                    host,
                    tags: s["tags"]
                        .as_array()
                        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
                        .unwrap_or_default(),
                    kind: kind.to_string(),
                    interval: s["interval"].as_i64().unwrap_or(0),
                    points: s["points"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| (p["timestamp"].as_i64().unwrap_or(0), p["value"].as_f64().unwrap_or(0.0)))
                        .collect(),
                });
            }
        }
    }
    out
}

pub fn find<'a>(series: &'a [S], metric: &str) -> Vec<&'a S> {
    series.iter().filter(|s| s.metric == metric).collect()
}

pub fn one<'a>(series: &'a [S], metric: &str) -> &'a S {
    let f = find(series, metric);
    assert_eq!(f.len(), 1, "expected exactly one series {metric}, got {f:#?}");
    f[0]
}

/// Plain-HTTP POST (local API); returns status and body, whatever the status.
pub fn http_post(url: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    match agent.post(url).set("Content-Type", content_type).send_bytes(body) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("POST {url}: {e}"),
    }
}

/// Plain-HTTP request with any method; returns status and body.
pub fn http_call(method: &str, url: &str) -> (u16, String) {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    match agent.request(method, url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// Thread ids of `pid` whose name starts with `prefix` (names are cut at 15 bytes).
pub fn threads_named(pid: u32, prefix: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(prefix) {
            out.push(e.file_name().to_string_lossy().parse().unwrap());
        }
    }
    out
}

/// Threads of the agent stopped with ptrace (the others keep running),
/// resumed when dropped: a real stall, provoked from outside.
pub struct Frozen(Vec<i32>);

impl Frozen {
    pub fn new(tids: &[i32]) -> Frozen {
        for &tid in tids {
            // SAFETY: ptrace/waitpid on a thread of our own child process,
            // with null or valid pointers only.
            unsafe {
                assert_eq!(
                    libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0),
                    0,
                    "PTRACE_SEIZE: {}",
                    std::io::Error::last_os_error()
                );
                assert_eq!(
                    libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0),
                    0,
                    "PTRACE_INTERRUPT: {}",
                    std::io::Error::last_os_error()
                );
                let mut status = 0;
                assert_eq!(
                    libc::waitpid(tid, &mut status, libc::__WALL),
                    tid,
                    "waitpid: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        Frozen(tids.to_vec())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &tid in &self.0 {
            // SAFETY: as above; detaching resumes the thread.
            unsafe {
                libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0);
            }
        }
    }
}
