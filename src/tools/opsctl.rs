//! The operating commands: `edgestat status`, `stats` and `capture` ask a
//! running agent through its local API (`EDGESTAT_API_ADDR`); `replay`
//! sends a capture file to a DogStatsD server. Each prints one clear line
//! on stderr and exits non-zero when it cannot do its job.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::core::capture_file::{check_header, decode_message, timestamp_unit_ns, MAX_RECORD_BYTES, ZSTD_MAGIC};

/// Default address of the local API (the agent's default).
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:5005";
/// Bound on an API answer.
const MAX_ANSWER_BYTES: u64 = 64 << 20;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a command failed (printed as one line).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The agent cannot be reached.
    #[error("cannot reach the agent at {addr} (EDGESTAT_API_ADDR): {detail}")]
    Unreachable {
        /// Address tried.
        addr: String,
        /// Why.
        detail: String,
    },
    /// The agent answered with an error.
    #[error("the agent answered {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its `error` field or body.
        message: String,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// The API address: `--api-addr`, else `EDGESTAT_API_ADDR`, else the default.
pub fn api_addr(flag: Option<String>) -> Result<String, OpsError> {
    let a = flag.or_else(|| std::env::var("EDGESTAT_API_ADDR").ok()).unwrap_or_else(|| DEFAULT_API_ADDR.to_string());
    if a.trim().is_empty() || a.trim().eq_ignore_ascii_case("off") {
        return Err(OpsError::Other(
            "the agent's local API is off (EDGESTAT_API_ADDR=off); these commands need it".into(),
        ));
    }
    Ok(a.trim().to_string())
}

/// One HTTP/1.1 request on a fresh connection; returns status and JSON body.
fn call(addr: &str, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Value), OpsError> {
    let unreachable = |detail: String| OpsError::Unreachable { addr: addr.to_string(), detail };
    let sa = addr
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("no address".into()))?;
    let mut s = TcpStream::connect_timeout(&sa, IO_TIMEOUT).map_err(|e| unreachable(e.to_string()))?;
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| unreachable(e.to_string()))?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER_BYTES).read_to_end(&mut raw).map_err(|e| unreachable(e.to_string()))?;
    let split =
        raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| unreachable("incomplete HTTP answer".into()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| unreachable("not an HTTP answer".into()))?;
    let json: Value = serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        let message = json["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&raw[split + 4..]).trim().to_string());
        return Err(OpsError::Refused { status, message });
    }
    Ok((status, json))
}

/// `edgestat status [--json]`.
pub fn status(addr: &str, as_json: bool) -> Result<String, OpsError> {
    let (_, v) = call(addr, "GET", "/v1/status", None)?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    Ok(status_text(&v))
}

fn n(v: &Value) -> String {
    match v {
        Value::Number(x) => x.to_string(),
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn map_line(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m.iter().map(|(k, x)| format!("{k}={}", n(x))).collect::<Vec<_>>().join(", "),
        _ => "none".into(),
    }
}

/// The human rendering of `GET /v1/status`.
pub fn status_text(v: &Value) -> String {
    let mut o = String::new();
    let mut line = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    line(format!(
        "edgestat {} (pid {}), up {:.0} s",
        n(&v["version"]),
        n(&v["pid"]),
        v["uptime_seconds"].as_f64().unwrap_or(0.0)
    ));
    line(format!("Listeners: {}", map_line(&v["listeners"])));
    let d = &v["dogstatsd"];
    line("DogStatsD (as of the last flush)".into());
    line(format!("  packets {}  bytes {}  read errors {}", n(&d["packets"]), n(&d["bytes"]), n(&d["read_errors"])));
    if !v["udp_kernel_drops"].is_null() {
        line(format!("  UDP datagrams dropped by the kernel (socket buffer full, now) {}", n(&v["udp_kernel_drops"])));
    }
    line(format!(
        "  UDP datagrams read by the standby readers {}  standby pool exhausted {}",
        n(&d["udp_standby_datagrams"]),
        n(&d["udp_standby_pool_full"])
    ));
    line(format!(
        "  metric lines {}  samples {}  events {}  service checks {}",
        n(&d["metric_lines"]),
        n(&d["metric_samples"]),
        n(&d["events"]),
        n(&d["service_checks"])
    ));
    line(format!("  parse errors: {}", map_line(&d["parse_errors"])));
    line(format!("  drops: {}", map_line(&d["dropped"])));
    line(format!("  contexts {}", n(&v["contexts"])));
    if let Some(s) = v.get("stream_socket") {
        line(format!("Unix stream socket: {}", map_line(s)));
    }
    if let Some(s) = v.get("statsd_forward") {
        line(format!("Raw forwarding: {}", map_line(s)));
    }
    let f = &v["flush"];
    line(format!(
        "Flushes {}  last duration {:.3} s  last at {}",
        n(&f["count"]),
        f["last_duration_seconds"].as_f64().unwrap_or(0.0),
        n(&f["last_unix"])
    ));
    line("Payloads by kind:".into());
    match v["payloads"].as_object() {
        Some(m) if !m.is_empty() => {
            for (k, p) in m {
                line(format!(
                    "  {k}: {} payloads, {} bytes, {} items",
                    n(&p["payloads"]),
                    n(&p["bytes"]),
                    n(&p["items"])
                ));
            }
        }
        _ => line("  none yet".into()),
    }
    for fw in v["forwarders"].as_array().cloned().unwrap_or_default() {
        let c = &fw["counters"];
        line(format!("Forwarder {} (API key: {})", n(&fw["name"]), n(&fw["api_key"])));
        for e in fw["endpoints"].as_array().cloned().unwrap_or_default() {
            line(format!("  endpoint {} ({} API keys)", n(&e["url"]), n(&e["api_keys"])));
        }
        line(format!(
            "  successes {}  errors {}  retries {}  dropped {}",
            n(&c["success"]),
            n(&c["errors"]),
            n(&c["retried"]),
            n(&c["dropped"])
        ));
        line(format!(
            "  retry queue {} payloads / {} bytes  spill {} bytes on disk",
            n(&fw["retry_queue_payloads"]),
            n(&fw["retry_queue_bytes"]),
            n(&fw["spill_bytes"])
        ));
    }
    let c = &v["capture"];
    line(format!(
        "Capture: {} (last file {}, {} datagrams)",
        if c["running"].as_bool() == Some(true) { "running" } else { "idle" },
        n(&c["path"]),
        n(&c["datagrams"])
    ));
    o
}

/// `edgestat stats [--json] [--limit N]`.
pub fn stats(addr: &str, as_json: bool, limit: usize) -> Result<String, OpsError> {
    let (_, v) = call(addr, "GET", &format!("/v1/stats?limit={limit}"), None)?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    let rows = v["contexts"].as_array().cloned().unwrap_or_default();
    let mut o = format!("{:<40} | {:<30} | {:<10} | {}\n", "Metric", "Tags", "Count", "Last Seen");
    o.push_str(&format!("{}-|-{}-|-{}-|-{}\n", "-".repeat(40), "-".repeat(30), "-".repeat(10), "-".repeat(20)));
    for r in &rows {
        let tags = r["tags"]
            .as_array()
            .map(|t| t.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        o.push_str(&format!(
            "{:<40} | {:<30} | {:<10} | {}\n",
            n(&r["name"]),
            tags,
            n(&r["count"]),
            n(&r["last_seen"])
        ));
    }
    if rows.is_empty() {
        o.push_str("No metrics processed yet.\n");
    }
    Ok(o)
}

/// `edgestat capture`: starts a capture, waits for its end, returns the summary line.
pub fn capture(addr: &str, duration: &str, path: Option<&Path>, compress: bool) -> Result<String, OpsError> {
    let d = crate::agent::config::parse_duration("--duration", duration).map_err(|e| OpsError::Other(e.to_string()))?;
    // The agent runs elsewhere: a relative path is made absolute here.
    let path = match path {
        Some(p) => std::path::absolute(p)
            .map_err(|e| OpsError::Other(format!("--path {}: {e}", p.display())))?
            .display()
            .to_string(),
        None => String::new(),
    };
    let body = serde_json::json!({"duration": duration, "path": path, "compress": compress}).to_string();
    let (_, v) = call(addr, "POST", "/v1/capture", Some(&body))?;
    let file = v["path"].as_str().unwrap_or("").to_string();
    eprintln!("capture started: writing {file} for {duration}");
    let end = Instant::now() + d + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let (_, st) = call(addr, "GET", "/v1/capture", None)?;
        if st["running"].as_bool() != Some(true) && st["path"].as_str() == Some(file.as_str()) {
            let mut msg = format!("wrote {} datagrams ({} bytes) to {file}", n(&st["datagrams"]), n(&st["bytes"]));
            let dropped =
                st["dropped_buffer_full"].as_u64().unwrap_or(0) + st["dropped_size_limit"].as_u64().unwrap_or(0);
            if dropped > 0 {
                msg.push_str(&format!("; {dropped} datagrams not captured (buffer full or size limit)"));
            }
            if let Some(e) = st["ended"].as_str().filter(|e| *e != "duration") {
                msg.push_str(&format!("; ended early: {e}"));
            }
            return Ok(msg);
        }
        if Instant::now() > end {
            return Err(OpsError::Other(format!("the capture to {file} did not finish in time")));
        }
    }
}

/// Where `replay` sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `HOST:PORT` over UDP.
    Udp(String),
    /// `unix:PATH`: a Unix datagram socket, or a stream socket (framed).
    Unix(PathBuf),
}

impl Target {
    /// Parses `--target`.
    pub fn parse(s: &str) -> Self {
        match s.strip_prefix("unix:") {
            Some(p) => Target::Unix(PathBuf::from(p)),
            None => Target::Udp(s.to_string()),
        }
    }

    /// The default: the Unix socket of `DD_DOGSTATSD_SOCKET` when set (the
    /// Agent replays there), else UDP on `DD_DOGSTATSD_PORT` (8125).
    pub fn default_from_env() -> Self {
        match std::env::var("DD_DOGSTATSD_SOCKET") {
            Ok(p) if !p.trim().is_empty() => Target::Unix(PathBuf::from(p.trim())),
            _ => Target::Udp(format!(
                "127.0.0.1:{}",
                std::env::var("DD_DOGSTATSD_PORT").unwrap_or_else(|_| "8125".into()).trim()
            )),
        }
    }
}

enum Sink {
    Udp(std::net::UdpSocket),
    Dgram(std::os::unix::net::UnixDatagram),
    Stream(std::os::unix::net::UnixStream, Vec<u8>),
}

impl Sink {
    fn open(t: &Target) -> Result<Sink, OpsError> {
        let err = |e: std::io::Error| OpsError::Other(format!("cannot connect to {t:?}: {e}"));
        match t {
            Target::Udp(a) => {
                let sa = a
                    .to_socket_addrs()
                    .map_err(err)?
                    .next()
                    .ok_or_else(|| OpsError::Other(format!("{a}: no address")))?;
                let bind: std::net::SocketAddr =
                    if sa.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
                let s = std::net::UdpSocket::bind(bind).map_err(err)?;
                s.connect(sa).map_err(err)?;
                Ok(Sink::Udp(s))
            }
            Target::Unix(p) => {
                let d = std::os::unix::net::UnixDatagram::unbound().map_err(err)?;
                match d.connect(p) {
                    Ok(()) => Ok(Sink::Dgram(d)),
                    // A stream socket: send the Agent's length-prefixed frames.
                    Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
                        Ok(Sink::Stream(std::os::unix::net::UnixStream::connect(p).map_err(err)?, Vec::new()))
                    }
                    Err(e) => Err(err(e)),
                }
            }
        }
    }

    fn send(&mut self, payload: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Udp(s) => s.send(payload).map(|_| ()),
            Sink::Dgram(s) => s.send(payload).map(|_| ()),
            Sink::Stream(s, buf) => {
                buf.clear();
                crate::core::stream_frame::encode_frame(payload, buf);
                s.write_all(buf)
            }
        }
    }
}

/// Replay counters of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Datagrams sent.
    pub sent: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Sends that failed (UDP target refusing, ...).
    pub errors: u64,
}

fn open_capture(file: &Path) -> Result<Box<dyn Read>, OpsError> {
    let err = |e: std::io::Error| OpsError::Other(format!("cannot read {}: {e}", file.display()));
    let mut f = std::fs::File::open(file).map_err(err)?;
    let mut magic = [0u8; 4];
    let got = f.read(&mut magic).map_err(err)?;
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(0)).map_err(err)?;
    let buffered = std::io::BufReader::with_capacity(1 << 16, f);
    if got == 4 && magic == ZSTD_MAGIC {
        Ok(Box::new(zstd::stream::Decoder::with_buffer(buffered).map_err(err)?))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Sends every record of `file` to `target`, `loops` times (0: until
/// killed), keeping the recorded spacing unless `fast`. Streams the file:
/// memory stays bounded whatever its size.
pub fn replay(file: &Path, target: &Target, loops: u64, fast: bool) -> Result<ReplaySummary, OpsError> {
    let mut sink = Sink::open(target)?;
    let mut total = ReplaySummary::default();
    let mut body = Vec::new();
    let mut i = 0u64;
    while loops == 0 || i < loops {
        i += 1;
        let mut r = open_capture(file)?;
        let corrupt = |what: String| OpsError::Other(format!("{}: {what}", file.display()));
        let mut header = [0u8; 8];
        r.read_exact(&mut header).map_err(|e| corrupt(format!("cannot read the header: {e}")))?;
        let version = check_header(&header).map_err(|e| corrupt(e.to_string()))?;
        let unit = timestamp_unit_ns(version);
        let (mut first, start) = (None::<i64>, Instant::now());
        loop {
            let mut len = [0u8; 4];
            if r.read_exact(&mut len).is_err() {
                break; // End of file without a trailer: what was there is replayed.
            }
            let len = u32::from_le_bytes(len) as usize;
            if len == 0 {
                break; // The trailer.
            }
            if len > MAX_RECORD_BYTES {
                return Err(corrupt(format!("record of {len} bytes is over the {MAX_RECORD_BYTES}-byte limit")));
            }
            body.resize(len, 0);
            if r.read_exact(&mut body).is_err() {
                break; // A truncated last record.
            }
            let rec = decode_message(&body).map_err(|e| corrupt(e.to_string()))?;
            if !fast {
                let t0 = *first.get_or_insert(rec.timestamp_ns);
                let due = Duration::from_nanos(
                    (rec.timestamp_ns.saturating_sub(t0).max(0) as u64).saturating_mul(unit as u64),
                );
                let elapsed = start.elapsed();
                if due > elapsed {
                    std::thread::sleep(due - elapsed);
                }
            }
            match sink.send(rec.payload) {
                Ok(()) => {
                    total.sent += 1;
                    total.bytes += rec.payload.len() as u64;
                }
                Err(e) if matches!(sink, Sink::Stream(..)) => {
                    return Err(OpsError::Other(format!("the stream target closed the connection: {e}")))
                }
                Err(_) => total.errors += 1,
            }
        }
    }
    Ok(total)
}
