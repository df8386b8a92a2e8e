//! `edgestat bench`: drives a DogStatsD server with a deterministic,
//! realistic load and reports what it sent, what the server processed
//! (counted from the payloads it shipped to an embedded intake), what the
//! kernel dropped, and the server's CPU time, memory and flush latency.
//!
//! Without `--target` the harness starts `edgestat run` itself (the current
//! executable) shipping to an in-process intake; with `--target ADDR` it
//! drives any DogStatsD server (point that server's `DD_DD_URL` at
//! `--intake-listen` to count what it processed).

pub mod burst;
pub mod procfs;
pub mod report;
pub mod sender;
pub mod workload;

use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use report::{FlushLatency, Report, TimePoint};
use sender::Progress;
use workload::{Shape, Workload, WorkloadConfig};

/// Traffic shape presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Lines packed into ~8 KB datagrams, 2–50 tags per context.
    Packed,
    /// One metric per datagram (~150 B), 8–12 tags per context.
    Single,
}

/// One command per row of the comparison table (see `Preset::settings`);
/// every setting a preset makes can still be overridden by its option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// No traffic: CPU of the whole idle process over --idle seconds
    /// (default 10), with the default 15 s flush interval.
    Idle,
    /// ~150 B lines packed in 8,192 B datagrams, 2,000 datagrams/s (~107k
    /// lines/s), 3,000 contexts, UDP, 4 MiB socket buffer.
    SmallPacked,
    /// ~2.1 KB lines packed in 8,192 B datagrams, 20,000 datagrams/s (~64k
    /// lines/s), 3,000 contexts, UDP, 4 MiB socket buffer.
    LargePacked,
    /// ~150 B lines, one per datagram, 20,000 datagrams/s, 3,000 contexts, UDP.
    SmallSingle,
    /// ~2.1 KB lines, one per datagram, 20,000 datagrams/s, 3,000 contexts, UDP.
    LargeSingle,
    /// No-loss maximum over the Unix socket: ~150 B lines packed, blocking
    /// sender as fast as it goes on the other core, 3,000 contexts.
    UdsSmallMax,
    /// Same with ~2.1 KB lines.
    UdsLargeMax,
    /// RSS and peak at 100,000 contexts: ~150 B lines packed, 4,000
    /// datagrams/s (~216k lines/s), UDP, 4 MiB socket buffer, 30 s.
    Mem100kSmall,
    /// RSS and peak at 100,000 contexts: ~2.1 KB lines packed, 20,000
    /// datagrams/s (~64k lines/s), UDP, 4 MiB socket buffer, 30 s.
    Mem100kLarge,
}

/// Which socket the load goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// UDP (kernel drops counted from /proc/net/udp).
    Udp,
    /// The Unix datagram socket (blocking sends: nothing is dropped, a
    /// slow reader slows the sender down).
    Unix,
}

/// What a preset sets (each `None` leaves the option's default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PresetSettings {
    /// Workload shape.
    pub shape: Option<Shape>,
    /// One line per datagram.
    pub single: bool,
    /// Datagrams per second (`None`: unpaced).
    pub datagram_rate: Option<f64>,
    /// Distinct contexts.
    pub contexts: usize,
    /// Transport.
    pub transport: Option<Transport>,
    /// Receive buffer of the started edgestat.
    pub so_rcvbuf: Option<usize>,
    /// Seconds of sending.
    pub duration: f64,
    /// Idle seconds measured before sending.
    pub idle: f64,
    /// Flush interval of the started edgestat.
    pub flush_interval: Option<&'static str>,
}

/// The issue-13 comparison table's receive buffer.
const PRESET_SO_RCVBUF: usize = 4 << 20;

impl Preset {
    /// The settings of this preset.
    pub fn settings(self) -> PresetSettings {
        let base =
            PresetSettings { contexts: 3000, duration: 10.0, so_rcvbuf: Some(PRESET_SO_RCVBUF), ..Default::default() };
        match self {
            Preset::Idle => {
                PresetSettings { duration: 0.0, idle: 10.0, flush_interval: Some("15s"), so_rcvbuf: None, ..base }
            }
            Preset::SmallPacked => PresetSettings { shape: Some(Shape::Small), datagram_rate: Some(2000.0), ..base },
            Preset::LargePacked => PresetSettings { shape: Some(Shape::Large), datagram_rate: Some(20_000.0), ..base },
            Preset::SmallSingle => {
                PresetSettings { shape: Some(Shape::Small), single: true, datagram_rate: Some(20_000.0), ..base }
            }
            Preset::LargeSingle => {
                PresetSettings { shape: Some(Shape::Large), single: true, datagram_rate: Some(20_000.0), ..base }
            }
            Preset::UdsSmallMax => {
                PresetSettings { shape: Some(Shape::Small), transport: Some(Transport::Unix), so_rcvbuf: None, ..base }
            }
            Preset::UdsLargeMax => {
                PresetSettings { shape: Some(Shape::Large), transport: Some(Transport::Unix), so_rcvbuf: None, ..base }
            }
            Preset::Mem100kSmall => PresetSettings {
                shape: Some(Shape::Small),
                datagram_rate: Some(4000.0),
                contexts: 100_000,
                duration: 30.0,
                ..base
            },
            Preset::Mem100kLarge => PresetSettings {
                shape: Some(Shape::Large),
                datagram_rate: Some(20_000.0),
                contexts: 100_000,
                duration: 30.0,
                ..base
            },
        }
    }
}

/// Command-line arguments of `edgestat bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// DogStatsD server to drive (host:port). Default: start `edgestat run`.
    #[arg(long, value_name = "ADDR")]
    pub target: Option<String>,
    /// Pid of --target, for CPU and RSS (default: found from the UDP port when it is ours).
    #[arg(long, value_name = "PID")]
    pub target_pid: Option<u32>,
    /// A row of the comparison table in one command (its settings can be
    /// overridden by the options below).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Seconds of sending (default 10, or the preset's).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Metric lines per second; 0 sends as fast as possible.
    #[arg(long, conflicts_with = "datagram_rate")]
    pub rate: Option<f64>,
    /// Datagrams per second (instead of --rate).
    #[arg(long)]
    pub datagram_rate: Option<f64>,
    /// Distinct contexts (name + tags; default 3000, or the preset's).
    #[arg(long)]
    pub contexts: Option<usize>,
    /// Traffic shape preset.
    #[arg(long, value_enum, default_value_t = Profile::Packed)]
    pub profile: Profile,
    /// Sized line shape (small: ~150 B lines, large: ~2.1 KB lines) instead
    /// of the profile's; --profile single still sends one line per datagram.
    #[arg(long, value_enum)]
    pub shape: Option<Shape>,
    /// Socket the load goes to (unix: the started edgestat's Unix socket).
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,
    /// Seconds of idle CPU measured after start, before sending.
    #[arg(long)]
    pub idle: Option<f64>,
    /// Pin the sending thread to this CPU.
    #[arg(long)]
    pub sender_cpu: Option<usize>,
    /// The edgestat executable started (default: this one); pairs of runs
    /// compare two builds under the same load generator.
    #[arg(long, value_name = "PATH")]
    pub edgestat: Option<PathBuf>,
    /// Largest datagram (packed profile; default 8192).
    #[arg(long, value_name = "BYTES")]
    pub packet_bytes: Option<usize>,
    /// Fewest tags per context (default 2 packed, 8 single).
    #[arg(long)]
    pub min_tags: Option<usize>,
    /// Most tags per context (default 50 packed, 12 single).
    #[arg(long)]
    pub max_tags: Option<usize>,
    /// Percent of lines carrying 2–5 values.
    #[arg(long, default_value_t = 8)]
    pub multi_value_pct: u32,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Source sockets (the kernel spreads SO_REUSEPORT traffic by source).
    #[arg(long, default_value_t = 4)]
    pub sockets: usize,
    /// EDGESTAT_SHARDS of the started edgestat.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// DD_DOGSTATSD_SO_RCVBUF of the started edgestat (bytes; 0 leaves the
    /// kernel's default, the preset's when not given).
    #[arg(long, value_name = "BYTES")]
    pub so_rcvbuf: Option<usize>,
    /// EDGESTAT_FLUSH_INTERVAL of the started edgestat (default 1s, or the preset's).
    #[arg(long)]
    pub flush_interval: Option<String>,
    /// Extra environment for the started edgestat (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// With --target: run the intake on this address so the target can ship to it.
    #[arg(long, value_name = "ADDR")]
    pub intake_listen: Option<SocketAddr>,
    /// With --target: seconds to wait after sending for the target's flushes.
    #[arg(long, default_value_t = 25.0)]
    pub drain: f64,
    /// Where to write the JSON report.
    #[arg(long, value_name = "FILE", default_value = "bench-report.json")]
    pub json: PathBuf,
    /// Where to write the SVG plot (throughput, drops, CPU over time).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    pub no_progress: bool,
    /// Burst mode: per round, stop the target (SIGSTOP), fill its socket
    /// with this many datagrams, resume it and measure its CPU and wall
    /// time until the queue is empty (saturates the receiver even when the
    /// sender is slower; the socket must hold them: raise --so-rcvbuf and
    /// net.core.rmem_max). --duration and --rate are ignored. 0 = off.
    #[arg(long, value_name = "DATAGRAMS", default_value_t = 0)]
    pub burst: u64,
    /// Rounds of --burst.
    #[arg(long, default_value_t = 10)]
    pub rounds: u64,
}

/// The options once a preset's settings are applied.
#[derive(Debug, Clone)]
struct Plan {
    duration: f64,
    rate: Option<sender::Rate>,
    contexts: usize,
    shape: Option<Shape>,
    single: bool,
    transport: Transport,
    /// `None`: the kernel's default receive buffer.
    so_rcvbuf: Option<usize>,
    idle: f64,
    flush_interval: String,
}

impl Plan {
    fn of(args: &BenchArgs) -> Plan {
        let p = args.preset.map(Preset::settings).unwrap_or(PresetSettings {
            contexts: 3000,
            duration: 10.0,
            ..Default::default()
        });
        let rate = match (args.rate, args.datagram_rate) {
            (Some(r), _) => (r > 0.0).then_some(sender::Rate::Lines(r)),
            (None, Some(d)) => (d > 0.0).then_some(sender::Rate::Datagrams(d)),
            (None, None) => p.datagram_rate.map(sender::Rate::Datagrams),
        };
        Plan {
            duration: args.duration.unwrap_or(p.duration),
            rate,
            contexts: args.contexts.unwrap_or(p.contexts),
            shape: args.shape.or(p.shape),
            single: args.profile == Profile::Single || (args.preset.is_some() && p.single),
            transport: args.transport.or(p.transport).unwrap_or(Transport::Udp),
            so_rcvbuf: args.so_rcvbuf.or(p.so_rcvbuf).filter(|b| *b > 0),
            idle: args.idle.unwrap_or(p.idle),
            flush_interval: args
                .flush_interval
                .clone()
                .or(p.flush_interval.map(String::from))
                .unwrap_or_else(|| "1s".into()),
        }
    }
}

/// Why a bench could not run; one line.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad argument.
    #[error("{0}")]
    Usage(String),
    /// Starting or talking to something failed.
    #[error("{0}")]
    Io(String),
}

const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Runs the bench; returns the process exit status.
pub fn run(args: BenchArgs) -> i32 {
    match run_inner(&args) {
        Ok(report) => {
            print!("{}", report.table());
            0
        }
        Err(BenchError::Usage(e)) => {
            eprintln!("edgestat bench: {e}");
            2
        }
        Err(e) => {
            eprintln!("edgestat bench: {e}");
            1
        }
    }
}

/// An `edgestat run` started by the harness.
struct Started {
    child: Child,
    flushes: Arc<Mutex<hdrhistogram::Histogram<u64>>>,
    stderr_tail: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
}

fn free_udp_port() -> Result<u16, BenchError> {
    let s =
        std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| BenchError::Io(format!("cannot pick a UDP port: {e}")))?;
    s.local_addr().map(|a| a.port()).map_err(|e| BenchError::Io(e.to_string()))
}

fn parse_flush_us(line: &str) -> Option<u64> {
    if !line.contains("flush done") {
        return None;
    }
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.trim_end_matches(',').parse::<u64>().ok())
    };
    field("elapsed_us=").or_else(|| field("elapsed_ms=").map(|ms| ms * 1000))
}

fn bench_dir() -> Result<PathBuf, BenchError> {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("edgestat-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::Io(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

fn start_edgestat(
    args: &BenchArgs,
    plan: &Plan,
    dir: PathBuf,
    port: u16,
    unix: Option<&std::path::Path>,
    intake_url: &str,
) -> Result<Started, BenchError> {
    let exe = match &args.edgestat {
        Some(p) => p.clone(),
        None => {
            std::env::current_exe().map_err(|e| BenchError::Io(format!("cannot find the edgestat executable: {e}")))?
        }
    };
    let mut cmd = Command::new(&exe);
    cmd.arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DD_HOSTNAME", "bench-host")
        .env("DD_API_KEY", "bench")
        .env("DD_DD_URL", intake_url)
        .env("DD_DOGSTATSD_PORT", port.to_string())
        .env("EDGESTAT_API_ADDR", "off")
        .env("EDGESTAT_FLUSH_INTERVAL", &plan.flush_interval)
        .env("EDGESTAT_SHARDS", args.shards.to_string())
        .env("EDGESTAT_DATA_DIR", dir.join("data"))
        // Debug level for the flusher's "flush done elapsed_us=" lines.
        .env("DD_LOG_LEVEL", "debug")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(b) = plan.so_rcvbuf {
        cmd.env("DD_DOGSTATSD_SO_RCVBUF", b.to_string());
    }
    if let Some(path) = unix {
        cmd.env("DD_DOGSTATSD_SOCKET", path);
    }
    for kv in &args.env {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(BenchError::Usage(format!("--env {kv}: expected KEY=VALUE")));
        };
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| BenchError::Io(format!("cannot start {} run: {e}", exe.display())))?;
    let stderr = child.stderr.take().ok_or_else(|| BenchError::Io("no stderr pipe".into()))?;
    let flushes = Arc::new(Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
            .map_err(|e| BenchError::Io(e.to_string()))?,
    ));
    let tail = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<()>(1);
    {
        let flushes = flushes.clone();
        let tail = tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("edgestat running") {
                    let _ = ready_tx.try_send(());
                }
                if let Some(us) = parse_flush_us(&line) {
                    if let Ok(mut h) = flushes.lock() {
                        let _ = h.record(us.max(1));
                    }
                } else if !line.contains(" DEBUG ") {
                    if let Ok(mut t) = tail.lock() {
                        if t.len() >= 20 {
                            t.remove(0);
                        }
                        t.push(line);
                    }
                }
            }
        });
    }
    let mut started = Started { child, flushes, stderr_tail: tail, dir };
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = started.child.kill();
        let _ = started.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        let tail = started.stderr_tail.lock().map(|t| t.join(" | ")).unwrap_or_default();
        return Err(BenchError::Io(format!("edgestat run did not start: {tail}")));
    }
    Ok(started)
}

impl Started {
    /// SIGTERM, then wait (bounded) for the final flush and exit.
    /// Returns the last peak RSS (VmHWM) read before exit: it includes the
    /// final flush, often the process's largest moment.
    fn stop(&mut self) -> Result<Option<u64>, BenchError> {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(90);
        let mut hwm = None;
        loop {
            if let Some((_, peak)) = procfs::rss(self.child.id()) {
                hwm = Some(peak);
            }
            match self.child.try_wait() {
                Ok(Some(st)) if st.success() => return Ok(hwm),
                Ok(Some(st)) => return Err(BenchError::Io(format!("edgestat run exited with {st}"))),
                Ok(None) if Instant::now() > end => {
                    let _ = self.child.kill();
                    return Err(BenchError::Io("edgestat run did not stop within 90 s".into()));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(BenchError::Io(e.to_string())),
            }
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run_inner(args: &BenchArgs) -> Result<Report, BenchError> {
    let plan = Plan::of(args);
    if (plan.duration <= 0.0 && args.burst == 0 && plan.idle <= 0.0) || plan.contexts == 0 || plan.idle < 0.0 {
        return Err(BenchError::Usage("--duration (or --idle) and --contexts must be positive".into()));
    }
    if args.rate.is_some_and(|r| r < 0.0) || args.datagram_rate.is_some_and(|r| r < 0.0) {
        return Err(BenchError::Usage("--rate and --datagram-rate must not be negative".into()));
    }
    if plan.transport == Transport::Unix && (args.target.is_some() || args.burst > 0) {
        return Err(BenchError::Usage(
            "--transport unix drives the started edgestat only (no --target, no --burst)".into(),
        ));
    }
    let single = plan.single;
    let profile = match plan.shape {
        Some(shape) => shape.config(plan.contexts, single),
        None => WorkloadConfig::standard(plan.contexts, single),
    };
    let wcfg = WorkloadConfig {
        min_tags: args.min_tags.unwrap_or(profile.min_tags).max(1),
        max_tags: args.max_tags.unwrap_or(profile.max_tags).max(2),
        packet_bytes: args.packet_bytes.unwrap_or(profile.packet_bytes).max(64),
        multi_value_pct: args.multi_value_pct.min(100),
        seed: args.seed,
        ..profile
    };
    let mut workload = Workload::new(wcfg.clone());

    // The intake: in-process, plain HTTP.
    let intake_addr = match (&args.target, args.intake_listen) {
        (_, Some(a)) => Some(a),
        (None, None) => Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        (Some(_), None) => None,
    };
    let intake = match intake_addr {
        Some(listen) => Some(
            crate::tools::intake::spawn_embedded(crate::tools::intake::IntakeConfig {
                listen,
                tls: crate::tools::intake::TlsMode::Plain,
                data_dir: None,
                data_max_bytes: crate::tools::intake::store::DEFAULT_DATA_MAX_BYTES,
                max_stored_payloads: 1_000_000,
                throttle_bytes_per_sec: 0,
            })
            .map_err(|e| BenchError::Io(e.to_string()))?,
        ),
        None => None,
    };
    if let (Some(i), Some(_)) = (&intake, &args.target) {
        eprintln!("edgestat bench: intake listening on {} (point the target's DD_DD_URL here)", i.base_url);
    }

    let mut unix_path = None;
    let (addr, mut started) = match &args.target {
        Some(t) => {
            let a = t
                .to_socket_addrs()
                .ok()
                .and_then(|mut it| it.next())
                .ok_or_else(|| BenchError::Usage(format!("--target {t}: not a host:port")))?;
            (a, None)
        }
        None => {
            let port = free_udp_port()?;
            let url = intake.as_ref().map(|i| i.base_url.clone()).unwrap_or_default();
            let dir = bench_dir()?;
            unix_path = (plan.transport == Transport::Unix).then(|| dir.join("dsd.socket"));
            let s = start_edgestat(args, &plan, dir, port, unix_path.as_deref(), &url)?;
            (SocketAddr::from(([127, 0, 0, 1], port)), Some(s))
        }
    };
    let pid = match &started {
        Some(s) => Some(s.child.id()),
        None => args.target_pid.or_else(|| procfs::pid_of_udp_port(addr.port())),
    };

    // Idle CPU: the whole process, after a settling second.
    let idle_cpu_pct = match (plan.idle > 0.0, pid) {
        (true, Some(pid)) => {
            std::thread::sleep(Duration::from_secs(1));
            let (c0, t0) = (procfs::cpu_time(pid), Instant::now());
            std::thread::sleep(Duration::from_secs_f64(plan.idle));
            match (c0, procfs::cpu_time(pid)) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() * 100.0 / t0.elapsed().as_secs_f64()),
                _ => None,
            }
        }
        _ => None,
    };

    // By default the load generator (sender, intake, sampler: every thread
    // of this process) runs beside the shards, on the first CPU without
    // one (where the started edgestat keeps its flusher and forwarders),
    // as clients on another core would. Left to the scheduler, the sender
    // or the intake's decompression sometimes lands on a shard's CPU for
    // a scheduler slice (milliseconds), longer than the kernel's default
    // receive buffer lasts at these rates: the generator, not the
    // receiver, would decide the kernel drops. Unpinned when every CPU
    // has a shard.
    let default_cpu = if args.target.is_none() { other_cpu(args.shards) } else { None };
    if let Some(cpu) = args.sender_cpu.or(default_cpu) {
        pin_this_process(cpu);
    }
    let sockets: Vec<std::os::fd::OwnedFd> = match &unix_path {
        Some(p) => sender::connect_unix(p, args.sockets).map(|v| v.into_iter().map(Into::into).collect()),
        None => sender::connect(addr, args.sockets).map(|v| v.into_iter().map(Into::into).collect()),
    }
    .map_err(|e| BenchError::Io(format!("cannot open sender sockets: {e}")))?;
    let progress = Arc::new(Progress::default());
    let (udp0, _) = procfs::udp_counters(addr.port());
    let cpu0 = pid.and_then(procfs::cpu_time);
    let duration = Duration::from_secs_f64(plan.duration.max(0.0));
    let rate = plan.rate;

    // Sampler: timeline + progress line.
    let timeline = Arc::new(Mutex::new(Vec::<TimePoint>::new()));
    let sampler = {
        let progress = progress.clone();
        let timeline = timeline.clone();
        let show = !args.no_progress;
        let port = addr.port();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let (mut last_t, mut last_lines, mut last_drops, mut last_cpu) = (0.0, 0u64, udp0.drops, cpu0);
            while !progress.stop.load(Ordering::Relaxed) {
                std::thread::sleep(SAMPLE_EVERY);
                let t = t0.elapsed().as_secs_f64();
                let lines = progress.lines.load(Ordering::Relaxed);
                let (udp, _) = procfs::udp_counters(port);
                let cpu = pid.and_then(procfs::cpu_time);
                let dt = (t - last_t).max(1e-6);
                let p = TimePoint {
                    t_s: t,
                    sent_lines_per_s: (lines - last_lines) as f64 / dt,
                    kernel_drops_per_s: udp.drops.saturating_sub(last_drops) as f64 / dt,
                    target_cpu_cores: match (cpu, last_cpu) {
                        (Some(c), Some(l)) => c.saturating_sub(l).as_secs_f64() / dt,
                        _ => 0.0,
                    },
                    target_rss_bytes: pid.and_then(procfs::rss).map(|r| r.0).unwrap_or(0),
                    rx_queue_bytes: udp.rx_queue_bytes,
                };
                if show {
                    let frac = (t / duration.as_secs_f64().max(1e-3)).min(1.0);
                    let bar: String = (0..30).map(|i| if (i as f64) < frac * 30.0 { '#' } else { '-' }).collect();
                    eprint!(
                        "\r[{bar}] {t:5.1}s  {:>10.0} lines/s  drops {:>8}  cpu {:.2}  rss {:>6.1} MiB ",
                        p.sent_lines_per_s,
                        udp.drops.saturating_sub(udp0.drops),
                        p.target_cpu_cores,
                        p.target_rss_bytes as f64 / 1048576.0
                    );
                    let _ = std::io::stderr().flush();
                }
                if let Ok(mut tl) = timeline.lock() {
                    tl.push(p);
                }
                (last_t, last_lines, last_drops, last_cpu) = (t, lines, udp.drops, cpu);
            }
            if show {
                eprintln!();
            }
        })
    };

    let t_send = Instant::now();
    let mut burst_stats = None;
    let sent = if args.burst > 0 {
        let pid = pid.ok_or_else(|| BenchError::Usage("--burst needs the target's pid (--target-pid)".into()))?;
        let udp: Vec<std::net::UdpSocket> = sockets.into_iter().map(Into::into).collect();
        let (g, b) = burst::run(pid, addr.port(), &mut workload, &udp, args.burst, args.rounds.max(1), &progress)?;
        burst_stats = Some(b);
        g
    } else {
        sender::run(&mut workload, &sockets, rate, duration, None, &progress)
    };
    // Burst mode: the rate is over the drain time (target running, queue deep).
    let send_s =
        burst_stats.as_ref().map(|b| b.wall_s).filter(|w| *w > 0.0).unwrap_or_else(|| t_send.elapsed().as_secs_f64());

    // Let the target empty its receive queues before reading its CPU time.
    let drain_end = Instant::now() + Duration::from_secs(10);
    if unix_path.is_some() {
        // Blocking sends: at most a few datagrams are still queued.
        std::thread::sleep(Duration::from_millis(200));
    }
    loop {
        let (u, _) = procfs::udp_counters(addr.port());
        if u.rx_queue_bytes == 0 || Instant::now() > drain_end {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let cpu1 = pid.and_then(procfs::cpu_time);
    let mem = pid.and_then(procfs::rss);
    let (udp1, _) = procfs::udp_counters(addr.port());
    progress.stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();

    let mut flush_latency = None;
    let mut final_hwm = None;
    if let Some(s) = started.as_mut() {
        final_hwm = s.stop()?;
        // The stderr reader sees the final flush line just after exit.
        std::thread::sleep(Duration::from_millis(200));
        flush_latency = s.flushes.lock().ok().filter(|h| !h.is_empty()).map(|h| FlushLatency::of(&h));
    } else if intake.is_some() {
        std::thread::sleep(Duration::from_secs_f64(args.drain.max(0.0)));
    }
    let processed = intake.as_ref().map(|i| report::count_processed(&i.payloads(None)));
    if let Some(i) = intake {
        i.shutdown();
    }

    let mut r = Report {
        target: if started.is_some() { "edgestat".into() } else { "external".into() },
        address: addr.to_string(),
        target_pid: pid,
        workload: serde_json::json!({
            "profile": format!("{:?}", args.profile).to_lowercase(),
            "preset": args.preset.map(|p| format!("{p:?}")),
            "shape": plan.shape.map(|s| format!("{s:?}").to_lowercase()),
            "transport": format!("{:?}", plan.transport).to_lowercase(),
            "datagram_rate": match plan.rate { Some(sender::Rate::Datagrams(d)) => Some(d), _ => None },
            "edgestat": args.edgestat.as_ref().map(|p| p.display().to_string()),
            "max_values": wcfg.max_values,
            "contexts": wcfg.contexts,
            "contexts_by_kind": workload.contexts_by_kind(),
            "tags": [wcfg.min_tags, wcfg.max_tags],
            "packet_bytes": wcfg.packet_bytes,
            "single": wcfg.single,
            "multi_value_pct": wcfg.multi_value_pct,
            "seed": wcfg.seed,
            "rate_lines_per_s": match plan.rate { Some(sender::Rate::Lines(l)) => Some(l), _ => None },
            "sockets": args.sockets,
            "shards": if started.is_some() { Some(args.shards) } else { None },
            "so_rcvbuf": plan.so_rcvbuf,
            "flush_interval": plan.flush_interval,
            "env": args.env,
            "burst": args.burst,
            "rounds": if args.burst > 0 { Some(args.rounds) } else { None },
        }),
        duration_s: send_s,
        lines_sent: sent.total_lines(),
        samples_sent: sent.total_samples(),
        packets_sent: sent.packets,
        bytes_sent: sent.bytes,
        avg_packet_bytes: if sent.packets > 0 { sent.bytes as f64 / sent.packets as f64 } else { 0.0 },
        lines_per_s_sent: sent.total_lines() as f64 / send_s,
        kernel_drops: udp1.drops.saturating_sub(udp0.drops),
        by_kind: report::by_kind(&sent.lines, &sent.samples, processed.as_ref()),
        send_errors: progress.send_errors.load(Ordering::Relaxed),
        rss_bytes: mem.map(|m| m.0),
        rss_peak_bytes: mem.map(|m| m.1).max(final_hwm),
        flush_latency,
        burst: burst_stats.clone(),
        idle_cpu_pct,
        ..Default::default()
    };
    if let Some(p) = &processed {
        // Counters, distributions, sets and histograms are counted exactly;
        // a gauge's last value says how many samples were *sent* to it, so
        // it cannot see loss: gauges are credited with the loss ratio of the
        // exact kinds (same packets, randomly interleaved) and checked only
        // for "nothing lost" (last values sum to the samples sent).
        let g = workload::Kind::Gauge.index();
        let (mut exact_sent, mut exact_done, mut lines) = (0u64, 0u64, 0f64);
        for k in 0..5 {
            if k == g || sent.samples[k] == 0 {
                continue;
            }
            exact_sent += sent.samples[k];
            exact_done += p.samples[k].min(sent.samples[k]);
            lines += p.samples[k].min(sent.samples[k]) as f64 * sent.lines[k] as f64 / sent.samples[k] as f64;
        }
        let kept = if exact_sent > 0 { exact_done as f64 / exact_sent as f64 } else { 1.0 };
        let gauge_samples = if p.samples[g] >= sent.samples[g] && kept >= 1.0 {
            sent.samples[g]
        } else {
            (sent.samples[g] as f64 * kept).round() as u64
        };
        lines += if sent.samples[g] > 0 {
            gauge_samples as f64 * sent.lines[g] as f64 / sent.samples[g] as f64
        } else {
            0.0
        };
        let lines = lines.round() as u64;
        let samples = exact_done + gauge_samples;
        r.samples_processed = Some(samples);
        r.lines_processed = Some(lines);
        r.lines_per_s_processed = Some(lines as f64 / send_s);
        let frac = if r.lines_sent > 0 { lines as f64 / r.lines_sent as f64 } else { 0.0 };
        r.packets_per_s_processed = Some(sent.packets as f64 * frac / send_s);
        r.loss_ratio = Some(1.0 - kept);
        r.compression_ratio =
            if p.compressed_bytes > 0 { Some(p.uncompressed_bytes as f64 / p.compressed_bytes as f64) } else { None };
    }
    let cpu = match (&burst_stats, cpu0, cpu1) {
        // Only the drains: the target's idle time while stopped and filled does not count.
        (Some(b), _, _) => Some(b.cpu_s),
        (None, Some(c0), Some(c1)) => Some(c1.saturating_sub(c0).as_secs_f64()),
        _ => None,
    };
    if let Some(cpu) = cpu {
        r.target_cpu_s = Some(cpu);
        let lines = r.lines_processed.unwrap_or(r.lines_sent) as f64;
        let packets = sent.packets as f64 * if r.lines_sent > 0 { lines / r.lines_sent as f64 } else { 0.0 };
        if cpu > 0.0 && lines > 0.0 {
            r.cpu_ns_per_line = Some(cpu * 1e9 / lines);
            r.cpu_ns_per_datagram = Some(cpu * 1e9 / packets);
            r.lines_per_cpu_s = Some(lines / cpu);
            r.packets_per_cpu_s = Some(packets / cpu);
        }
    }
    r.intake = processed;
    r.timeline = timeline.lock().map(|t| t.clone()).unwrap_or_default();

    let json = serde_json::to_vec_pretty(&r).map_err(|e| BenchError::Io(e.to_string()))?;
    std::fs::write(&args.json, json)
        .map_err(|e| BenchError::Io(format!("cannot write {}: {e}", args.json.display())))?;
    if let Some(p) = &args.plot {
        std::fs::write(p, r.svg()).map_err(|e| BenchError::Io(format!("cannot write {}: {e}", p.display())))?;
    }
    Ok(r)
}

/// The first CPU the started edgestat leaves without a shard (where it
/// runs its flusher and forwarders).
fn other_cpu(shards: usize) -> Option<usize> {
    use crate::agent::cpu_set;
    cpu_set::allowed_cpus().and_then(|cpus| cpu_set::spare_cpus(&cpus, shards).first().copied())
}

/// Pins every thread of this process to `cpu` (threads started later
/// inherit it from the thread that starts them).
fn pin_this_process(cpu: usize) {
    use crate::agent::cpu_set;
    let tids: Vec<i32> = std::fs::read_dir("/proc/self/task")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    // A thread that ended meanwhile only makes its call fail.
    for tid in tids {
        let _ = cpu_set::restrict_thread(tid, &[cpu]);
    }
    if let Err(e) = cpu_set::restrict_this_thread(&[cpu]) {
        eprintln!("edgestat bench: cannot pin the load generator to CPU {cpu}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_set_the_table_rows_and_options_override_them() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            b: BenchArgs,
        }
        let plan = |a: &[&str]| Plan::of(&Cli::parse_from([&["bench"], a].concat()).b);
        let p = plan(&["--preset", "small-packed"]);
        assert_eq!(
            (p.shape, p.single, p.rate, p.contexts),
            (Some(Shape::Small), false, Some(sender::Rate::Datagrams(2000.0)), 3000)
        );
        assert_eq!(p.so_rcvbuf, Some(4 << 20));
        let p = plan(&["--preset", "large-packed", "--so-rcvbuf", "0", "--contexts", "100000"]);
        assert_eq!(
            (p.shape, p.so_rcvbuf, p.contexts, p.rate),
            (Some(Shape::Large), None, 100_000, Some(sender::Rate::Datagrams(20_000.0)))
        );
        let p = plan(&["--preset", "uds-small-max"]);
        assert_eq!((p.transport, p.rate), (Transport::Unix, None));
        let p = plan(&["--preset", "idle"]);
        assert_eq!((p.duration, p.idle, p.flush_interval.as_str()), (0.0, 10.0, "15s"));
        let p = plan(&["--preset", "small-single", "--rate", "5000"]);
        assert_eq!((p.single, p.rate), (true, Some(sender::Rate::Lines(5000.0))));
        let p = plan(&[]);
        assert_eq!(
            (p.shape, p.rate, p.contexts, p.so_rcvbuf, p.flush_interval.as_str()),
            (None, None, 3000, None, "1s")
        );
    }

    #[test]
    fn flush_lines_are_parsed() {
        assert_eq!(parse_flush_us("2024 DEBUG flush done elapsed_ms=3 elapsed_us=3120 payloads=2"), Some(3120));
        assert_eq!(parse_flush_us("2024 DEBUG flush done elapsed_ms=3 payloads=2"), Some(3000));
        assert_eq!(parse_flush_us("2024 INFO edgestat running"), None);
    }
}
