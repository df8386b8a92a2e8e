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
use workload::{Workload, WorkloadConfig};

/// Traffic shape presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Lines packed into ~8 KB datagrams, 2–50 tags per context.
    Packed,
    /// One metric per datagram (~150 B), 8–12 tags per context.
    Single,
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
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Metric lines per second; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Distinct contexts (name + tags).
    #[arg(long, default_value_t = 3000)]
    pub contexts: usize,
    /// Traffic shape preset.
    #[arg(long, value_enum, default_value_t = Profile::Packed)]
    pub profile: Profile,
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
    /// DD_DOGSTATSD_SO_RCVBUF of the started edgestat (bytes).
    #[arg(long, value_name = "BYTES")]
    pub so_rcvbuf: Option<usize>,
    /// EDGESTAT_FLUSH_INTERVAL of the started edgestat.
    #[arg(long, default_value = "1s")]
    pub flush_interval: String,
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

fn start_edgestat(args: &BenchArgs, port: u16, intake_url: &str) -> Result<Started, BenchError> {
    let exe =
        std::env::current_exe().map_err(|e| BenchError::Io(format!("cannot find the edgestat executable: {e}")))?;
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("edgestat-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DD_HOSTNAME", "bench-host")
        .env("DD_API_KEY", "bench")
        .env("DD_DD_URL", intake_url)
        .env("DD_DOGSTATSD_PORT", port.to_string())
        .env("EDGESTAT_API_ADDR", "off")
        .env("EDGESTAT_FLUSH_INTERVAL", &args.flush_interval)
        .env("EDGESTAT_SHARDS", args.shards.to_string())
        .env("EDGESTAT_DATA_DIR", dir.join("data"))
        // Debug level for the flusher's "flush done elapsed_us=" lines.
        .env("DD_LOG_LEVEL", "debug")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(b) = args.so_rcvbuf {
        cmd.env("DD_DOGSTATSD_SO_RCVBUF", b.to_string());
    }
    for kv in &args.env {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(BenchError::Usage(format!("--env {kv}: expected KEY=VALUE")));
        };
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| BenchError::Io(format!("cannot start edgestat run: {e}")))?;
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
    if (args.duration <= 0.0 && args.burst == 0) || args.rate < 0.0 || args.contexts == 0 {
        return Err(BenchError::Usage("--duration and --contexts must be positive, --rate not negative".into()));
    }
    let single = args.profile == Profile::Single;
    let profile = WorkloadConfig::standard(args.contexts, single);
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
            let s = start_edgestat(args, port, &url)?;
            (SocketAddr::from(([127, 0, 0, 1], port)), Some(s))
        }
    };
    let pid = match &started {
        Some(s) => Some(s.child.id()),
        None => args.target_pid.or_else(|| procfs::pid_of_udp_port(addr.port())),
    };

    let sockets =
        sender::connect(addr, args.sockets).map_err(|e| BenchError::Io(format!("cannot open sender sockets: {e}")))?;
    let progress = Arc::new(Progress::default());
    let (udp0, _) = procfs::udp_counters(addr.port());
    let cpu0 = pid.and_then(procfs::cpu_time);
    let duration = Duration::from_secs_f64(args.duration);
    let rate = if args.rate > 0.0 { Some(args.rate) } else { None };

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
                    let frac = (t / duration.as_secs_f64()).min(1.0);
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
        let (g, b) = burst::run(pid, addr.port(), &mut workload, &sockets, args.burst, args.rounds.max(1), &progress)?;
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
            "contexts": wcfg.contexts,
            "contexts_by_kind": workload.contexts_by_kind(),
            "tags": [wcfg.min_tags, wcfg.max_tags],
            "packet_bytes": wcfg.packet_bytes,
            "single": wcfg.single,
            "multi_value_pct": wcfg.multi_value_pct,
            "seed": wcfg.seed,
            "rate_lines_per_s": args.rate,
            "sockets": args.sockets,
            "shards": if started.is_some() { Some(args.shards) } else { None },
            "so_rcvbuf": args.so_rcvbuf,
            "flush_interval": args.flush_interval,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_lines_are_parsed() {
        assert_eq!(parse_flush_us("2024 DEBUG flush done elapsed_ms=3 elapsed_us=3120 payloads=2"), Some(3120));
        assert_eq!(parse_flush_us("2024 DEBUG flush done elapsed_ms=3 payloads=2"), Some(3000));
        assert_eq!(parse_flush_us("2024 INFO edgestat running"), None);
    }
}
