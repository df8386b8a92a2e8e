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
            let cfg =
                edgestat::tools::intake::IntakeConfig { listen, tls, data_dir, data_max_bytes, max_stored_payloads };
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
