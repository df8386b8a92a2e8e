//! The `edgestat` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A thread-per-core DogStatsD agent compatible with the Datadog Agent.
#[derive(Parser)]
#[command(name = "edgestat", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once at start: the bench's many options make its variant large,
// which costs nothing here.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Receive DogStatsD, aggregate, serialize and forward (configured by DD_* / EDGESTAT_* variables).
    Run {
        /// A datadog.yaml-style file; environment variables win over it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// A local Datadog-compatible intake that stores and decodes every payload.
    Intake {
        /// Address to listen on (port 0 picks a free port; the URL is printed).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// PEM certificate (with --tls-key) to serve HTTPS.
        #[arg(long, value_name = "PEM", requires = "tls_key", conflicts_with = "tls_self_signed")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for --tls-cert.
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Serve HTTPS with a self-signed certificate kept in DIR (DIR/cert.pem is the one to trust).
        #[arg(long, value_name = "DIR")]
        tls_self_signed: Option<PathBuf>,
        /// Also append every stored payload as a JSON line to DIR/payloads.jsonl.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Bound in bytes on DIR/payloads.jsonl plus DIR/payloads.jsonl.1 (rotated at half of it).
        #[arg(long, value_name = "BYTES", default_value_t = edgestat::tools::intake::store::DEFAULT_DATA_MAX_BYTES,
              value_parser = clap::value_parser!(u64).range(edgestat::tools::intake::store::MIN_DATA_MAX_BYTES..))]
        data_max_bytes: u64,
        /// Bound on payloads kept in memory (oldest evicted first).
        #[arg(long, value_name = "N", default_value_t = 100_000)]
        max_stored_payloads: usize,
        /// Bandwidth of payload bodies in bytes/s shared by all connections (0: unlimited), to play a slow intake.
        #[arg(long, value_name = "N", default_value_t = 0)]
        throttle_bytes_per_sec: u64,
    },
    /// Benchmark harness: load generator + intake + report (JSON, table, SVG plot).
    Bench(edgestat::tools::bench::BenchArgs),
    /// Ask a running agent whether it is healthy (`GET /health`); prints its
    /// JSON, exits 0 when healthy and 1 when unhealthy or unreachable.
    Health {
        /// The agent's local API (`EDGESTAT_API_ADDR`).
        #[arg(long, value_name = "ADDR", env = "EDGESTAT_API_ADDR", default_value = "127.0.0.1:5005")]
        addr: String,
    },
    /// The running agent's pipeline state (through its local API).
    Status {
        /// Print JSON (for scripts) instead of text.
        #[arg(long)]
        json: bool,
        /// The agent's local API (default: EDGESTAT_API_ADDR, else 127.0.0.1:5005).
        #[arg(long, value_name = "ADDR")]
        api_addr: Option<String>,
    },
    /// The busiest contexts of the running agent (needs DD_DOGSTATSD_METRICS_STATS_ENABLE=true).
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// At most this many contexts.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
        /// The agent's local API (default: EDGESTAT_API_ADDR, else 127.0.0.1:5005).
        #[arg(long, value_name = "ADDR")]
        api_addr: Option<String>,
    },
    /// Record what the running agent receives into a capture file (the Agent's dogstatsd-capture format).
    Capture {
        /// How long, e.g. 30s.
        #[arg(long, value_name = "DURATION")]
        duration: String,
        /// Directory (a datadog-capture-<time> file is created in it) or file; default DD_DOGSTATSD_CAPTURE_PATH.
        #[arg(long, value_name = "FILE_OR_DIR")]
        path: Option<PathBuf>,
        /// zstd-compress the file.
        #[arg(long)]
        compress: bool,
        /// The agent's local API (default: EDGESTAT_API_ADDR, else 127.0.0.1:5005).
        #[arg(long, value_name = "ADDR")]
        api_addr: Option<String>,
    },
    /// Send a capture file again, with its timing.
    Replay {
        /// The capture file (plain or zstd).
        file: PathBuf,
        /// HOST:PORT (UDP) or unix:PATH (datagram or stream socket); default DD_DOGSTATSD_SOCKET, else 127.0.0.1:DD_DOGSTATSD_PORT.
        #[arg(long, value_name = "TARGET")]
        target: Option<String>,
        /// Times to replay the file (0: until interrupted).
        #[arg(long, value_name = "N", default_value_t = 1)]
        loops: u64,
        /// Send as fast as possible instead of with the recorded timing.
        #[arg(long)]
        fast: bool,
    },
}

/// Prints the outcome of an operating command; 0 or 1.
fn ops_outcome(cmd: &str, r: Result<String, edgestat::tools::opsctl::OpsError>) -> i32 {
    match r {
        Ok(text) => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            0
        }
        Err(e) => {
            eprintln!("edgestat {cmd}: {e}");
            1
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run { config } => {
            edgestat::agent::app::run(config.as_deref(), &edgestat::tools::intake::start_for_agent)
        }
        Command::Intake {
            listen,
            tls_cert,
            tls_key,
            tls_self_signed,
            data_dir,
            data_max_bytes,
            max_stored_payloads,
            throttle_bytes_per_sec,
        } => {
            edgestat::agent::logging::init(
                &std::env::var("DD_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
                edgestat::agent::logging::LogFormat::from_env(),
            );
            let tls = match (tls_cert, tls_key, tls_self_signed) {
                (Some(cert), Some(key), _) => edgestat::tools::intake::TlsMode::Files { cert, key },
                (_, _, Some(dir)) => edgestat::tools::intake::TlsMode::SelfSigned { dir },
                _ => edgestat::tools::intake::TlsMode::Plain,
            };
            let cfg = edgestat::tools::intake::IntakeConfig {
                listen,
                tls,
                data_dir,
                data_max_bytes,
                max_stored_payloads,
                throttle_bytes_per_sec,
            };
            match edgestat::tools::intake::run_blocking(cfg) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("edgestat intake: {e}");
                    1
                }
            }
        }
        Command::Bench(args) => edgestat::tools::bench::run(args),
        Command::Health { addr } => health(&addr),
        Command::Status { json, api_addr } => ops_outcome(
            "status",
            edgestat::tools::opsctl::api_addr(api_addr).and_then(|a| edgestat::tools::opsctl::status(&a, json)),
        ),
        Command::Stats { json, limit, api_addr } => ops_outcome(
            "stats",
            edgestat::tools::opsctl::api_addr(api_addr).and_then(|a| edgestat::tools::opsctl::stats(&a, json, limit)),
        ),
        Command::Capture { duration, path, compress, api_addr } => ops_outcome(
            "capture",
            edgestat::tools::opsctl::api_addr(api_addr)
                .and_then(|a| edgestat::tools::opsctl::capture(&a, &duration, path.as_deref(), compress)),
        ),
        Command::Replay { file, target, loops, fast } => {
            let target = target
                .map(|t| edgestat::tools::opsctl::Target::parse(&t))
                .unwrap_or_else(edgestat::tools::opsctl::Target::default_from_env);
            let started = std::time::Instant::now();
            let r = edgestat::tools::opsctl::replay(&file, &target, loops, fast).map(|s| {
                format!(
                    "replayed {} datagrams ({} bytes, {} send errors) to {target:?} in {:.1} s",
                    s.sent,
                    s.bytes,
                    s.errors,
                    started.elapsed().as_secs_f64()
                )
            });
            ops_outcome("replay", r)
        }
    };
    ExitCode::from(code as u8)
}

/// `edgestat health`: 0 healthy; 1 unhealthy or unreachable, with one line on stderr.
fn health(addr: &str) -> i32 {
    let Ok(sock) = addr.trim().parse::<std::net::SocketAddr>() else {
        eprintln!("edgestat health: --addr / EDGESTAT_API_ADDR={addr:?} is not host:port (is the local API off?)");
        return 1;
    };
    match edgestat::agent::health::probe(sock) {
        edgestat::agent::health::Probe::Answered { healthy, status, body } => {
            println!("{body}");
            if !healthy {
                eprintln!("edgestat health: unhealthy (HTTP {status})");
            }
            i32::from(!healthy)
        }
        edgestat::agent::health::Probe::Unreachable(line) => {
            eprintln!("edgestat health: {line}");
            1
        }
    }
}
