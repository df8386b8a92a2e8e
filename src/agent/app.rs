//! `edgestat run`: wires configuration, shards, flusher and forwarder
//! together and owns the process lifecycle (signals, ordered shutdown).

use std::path::Path;
use std::time::Duration;

use crate::agent::config::{Config, Endpoint, Sources};
use crate::agent::flusher::{FlushSummary, Flusher};
use crate::agent::forwarder::{Forwarder, ForwarderSettings};
use crate::agent::runtime::{self, ShardSockets};
use crate::core::shard::ShardSettings;

/// Exit status for a configuration error (docs/configuration.md).
pub const EXIT_CONFIG: i32 = 2;
/// Exit status for any other start-up failure.
pub const EXIT_START: i32 = 1;

/// Where `run` ships when neither `DD_API_KEY` nor `DD_DD_URL` is set.
///
/// The caller provides it (the command line starts the intake tool), so the
/// agent never depends on a tool; this is all the agent needs of it.
pub trait LocalIntake: Send {
    /// Base URL for the forwarder (`http://127.0.0.1:PORT`).
    fn base_url(&self) -> String;
    /// Stops it once delivery is over.
    fn shutdown(self: Box<Self>);
}

/// Starts a [`LocalIntake`] that keeps payloads under the given data folder,
/// in files that together hold at most the given number of bytes.
pub type StartLocalIntake<'a> =
    &'a dyn Fn(&Path, u64) -> Result<Box<dyn LocalIntake>, Box<dyn std::error::Error + Send + Sync>>;

/// Why the agent could not start; printed as the one line on stderr.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The embedded local intake did not start.
    #[error("cannot start the embedded intake: {0}")]
    LocalIntake(Box<dyn std::error::Error + Send + Sync>),
    /// A forwarder did not start.
    #[error(transparent)]
    Forwarder(#[from] crate::agent::forwarder::ForwarderError),
    /// The local API did not start.
    #[error(transparent)]
    Api(#[from] crate::agent::api::ApiError),
    /// The telemetry endpoint did not start.
    #[error(transparent)]
    Telemetry(#[from] crate::agent::http_server::ListenError),
    /// Sockets or shards did not start.
    #[error(transparent)]
    Runtime(#[from] crate::agent::runtime::RuntimeError),
    /// The flusher's compressor could not be created.
    #[error("cannot create the payload compressor: {0}")]
    Compressor(crate::core::serializer::CompressError),
    /// A thread could not be spawned.
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The flusher thread panicked (the panic hook aborts first; kept for completeness).
    #[error("the flusher thread panicked")]
    FlusherPanicked,
}

/// Shortest silence that makes a shard or forwarder loop unhealthy (they
/// turn every few milliseconds; this leaves room for a loaded machine).
const LOOP_SILENCE_MIN: Duration = Duration::from_secs(5);

/// Runs the agent until SIGTERM/SIGINT; returns the process exit status.
pub fn run(config_file: Option<&Path>, local_intake: StartLocalIntake) -> i32 {
    let cfg = match Sources::load(config_file).and_then(|s| Config::from_sources(&s)) {
        Ok(c) => c,
        Err(e) => {
            crate::agent::logging::fatal(&format!("edgestat: {e}"));
            return EXIT_CONFIG;
        }
    };
    let memory = match memory_plan(&cfg) {
        Ok(p) => std::sync::Arc::new(p),
        Err(e) => {
            crate::agent::logging::fatal(&format!("edgestat: {e}"));
            return EXIT_CONFIG;
        }
    };
    crate::agent::logging::init(&cfg.log_level, cfg.log_format);
    abort_on_panic();
    set_malloc_arenas(cfg.malloc_arenas);
    match start_and_wait(cfg, memory, local_intake) {
        Ok(()) => 0,
        Err(e) => {
            crate::agent::logging::fatal(&format!("edgestat: {e}"));
            EXIT_START
        }
    }
}

/// Resolves `EDGESTAT_MEMORY_LIMIT` against the host and checks the fixed
/// costs of the configured buffers against it.
fn memory_plan(
    cfg: &Config,
) -> Result<crate::agent::memory_limit::MemoryPlan, crate::agent::memory_limit::MemoryLimitError> {
    use crate::agent::memory_limit as m;
    let host = match cfg.memory_limit {
        m::MemoryLimitSetting::Host => m::detect_host_memory(),
        _ => None,
    };
    m::plan(cfg.memory_limit, host, m::fixed_costs(cfg, cfg.endpoint.is_none()), cfg.max_contexts)
}

/// Applies `EDGESTAT_MALLOC_ARENAS` (glibc only) before any thread starts.
fn set_malloc_arenas(n: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if n > 0 {
        // SAFETY: mallopt only changes allocator parameters; called before
        // any other thread exists.
        if unsafe { libc::mallopt(libc::M_ARENA_MAX, n.min(i32::MAX as usize) as i32) } != 1 {
            tracing::warn!(arenas = n, "cannot set EDGESTAT_MALLOC_ARENAS");
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = n;
}

/// A panic is a bug. A shard that died would leave its socket receiving
/// into a buffer nobody reads, silently losing data, so the whole process
/// stops instead (a supervisor restarts it) after printing the panic.
fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!("edgestat: internal error (this is a bug), aborting");
        std::process::abort();
    }));
}

fn start_and_wait(
    mut cfg: Config,
    memory: std::sync::Arc<crate::agent::memory_limit::MemoryPlan>,
    local_intake: StartLocalIntake,
) -> Result<(), StartError> {
    runtime::check_memlock()?;
    if let Some(w) = &memory.warning {
        tracing::warn!("{w}");
    }
    match memory.limit_bytes {
        Some(limit) => tracing::info!(
            limit_bytes = limit,
            source = %memory.source,
            fixed_bytes = memory.fixed.total(),
            context_budget_bytes = memory.budget.byte_bound().max_bytes,
            per_context_bytes = memory.budget.byte_bound().per_context_bytes,
            "memory limit: new contexts are admitted while their estimate fits the context budget"
        ),
        None => tracing::info!(
            fixed_bytes = memory.fixed.total(),
            "memory limit off (EDGESTAT_MEMORY_LIMIT=off or host memory unknown): contexts bounded by EDGESTAT_MAX_CONTEXTS only"
        ),
    }
    // Shard i runs on the i-th CPU of the affinity mask (wrapping). The
    // threads started from here on (forwarders, embedded intake, API,
    // flusher) run on the CPUs left without a shard, when there are any;
    // the shards pin themselves.
    let allowed_cpus = crate::agent::cpu_set::allowed_cpus()
        .unwrap_or_else(|| (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect());
    let spare_cpus = crate::agent::cpu_set::spare_cpus(&allowed_cpus, cfg.shards);
    if !spare_cpus.is_empty() {
        if let Err(e) = crate::agent::cpu_set::restrict_this_thread(&spare_cpus) {
            tracing::warn!(error = %e, "cannot keep the flusher and forwarders off the shards' CPUs");
        }
    }
    // Signals first, so a SIGTERM during start-up is not lost.
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(StartError::Signals)?;

    let mut embedded = None;
    let mut summary_target = String::new();
    if cfg.endpoint.is_none() {
        let intake = local_intake(&cfg.data_dir, cfg.intake_data_max_bytes).map_err(StartError::LocalIntake)?;
        let url = intake.base_url();
        summary_target = format!("{url} (payloads in {})", cfg.data_dir.join("payloads.jsonl").display());
        tracing::info!(url = %url, data_dir = %cfg.data_dir.display(), data_max_bytes = cfg.intake_data_max_bytes, "no DD_API_KEY or DD_DD_URL: shipping to the embedded local intake");
        cfg.endpoint = Some(Endpoint { base_url: url, api_keys: Vec::new() });
        embedded = Some(intake);
    }

    // Liveness for `GET /health`: the flusher must finish a flush every two
    // intervals; shards and forwarders only have to keep their loops turning.
    let health = crate::agent::health::Health::new();
    let loop_bound = (cfg.flush_interval * 2).max(LOOP_SILENCE_MIN);

    let mut endpoints: Vec<Endpoint> = cfg.endpoint.iter().cloned().collect();
    endpoints.extend(cfg.additional_endpoints.iter().cloned());
    let endpoint_list = endpoints.clone();
    let forwarder = Forwarder::start(ForwarderSettings::from_config(&cfg, endpoints))?;
    forwarder.report_health(health.register("forwarder", loop_bound), loop_bound / 4);

    // What `edgestat status/stats/capture` read through the local API.
    let recorder_shared = crate::agent::flusher::stats::FlushRecorder::new();
    let capture = crate::agent::capture::CaptureHub::new(
        cfg.shards,
        crate::agent::capture::CaptureSettings {
            default_dir: cfg.ops.capture_path.clone(),
            max_bytes: cfg.ops.capture_max_bytes,
            max_duration: cfg.ops.capture_max_duration,
            shard_buffer_bytes: cfg.ops.capture_buffer_bytes,
        },
    );
    let forward_target = cfg.ops.forward.as_ref().and_then(|(h, p)| crate::agent::tap::ForwardTarget::resolve(h, *p));
    let forward_stats: Vec<std::sync::Arc<crate::agent::tap::ForwardStats>> =
        (0..cfg.shards).map(|_| Default::default()).collect();
    let stream_stats = cfg.ops.stream_socket.as_ref().map(|_| std::sync::Arc::new(runtime::StreamStats::default()));
    let mut listeners: Vec<(&'static str, String)> = Vec::new();
    if let Some(a) = cfg.udp_addr {
        listeners.push(("udp", a.to_string()));
    }
    if let Some(p) = &cfg.unix_socket {
        listeners.push(("unix", p.display().to_string()));
    }
    if let Some(p) = &cfg.ops.stream_socket {
        listeners.push(("unix_stream", p.display().to_string()));
    }
    if let Some(a) = cfg.api_addr {
        listeners.push(("api", a.to_string()));
    }
    if let Some(a) = cfg.telemetry_addr {
        listeners.push(("telemetry", a.to_string()));
    }
    let ops_forwarders = vec![crate::agent::status::ForwarderInfo {
        name: "metrics",
        stats: forwarder.stats.clone(),
        endpoints: endpoint_list.iter().map(|e| (e.base_url.clone(), e.api_keys.len())).collect(),
        storage_path: cfg.storage_path.clone(),
    }];
    let ops = std::sync::Arc::new(crate::agent::status::Ops::new(
        listeners,
        {
            let snap = recorder_shared.shared();
            Box::new(move || snap.lock().map(|g| g.status_json()).unwrap_or_default())
        },
        ops_forwarders,
        capture.clone(),
        forward_target.map(|t| (t.0.to_string(), forward_stats.clone())),
        stream_stats.clone(),
        cfg.ops.metrics_stats_enable,
    ));

    // Local submission API + the orchestrator forwarder it feeds (a second
    // forwarder, as in the Agent: own host, no version prefix).
    let mut api_parts = None;
    if let Some(addr) = cfg.api_addr {
        let main = cfg.endpoint.clone().unwrap_or(Endpoint { base_url: String::new(), api_keys: Vec::new() });
        let orch_url = cfg.orchestrator_base_url.clone().unwrap_or_else(|| main.base_url.clone());
        let mut orch_settings = ForwarderSettings::from_config(
            &cfg,
            vec![Endpoint { base_url: orch_url.trim_end_matches('/').to_string(), api_keys: main.api_keys.clone() }],
        );
        // Like the Agent's orchestrator forwarder: no API key validation, and
        // its own spill folder so the metrics forwarder never replays its files.
        orch_settings.apikey_validation_interval = None;
        orch_settings.storage_path = orch_settings.storage_path.map(|p| p.join("orchestrator"));
        let orch_forwarder = Forwarder::start(orch_settings)?;
        orch_forwarder.report_health(health.register("forwarder-orchestrator", loop_bound), loop_bound / 4);
        let orch_stats = orch_forwarder.stats.clone();
        let sender = crate::agent::orchestrator::OrchestratorSender::start(
            orch_forwarder,
            cfg.orchestrator_queue_payloads,
            cfg.shutdown_timeout,
        )
        .map_err(|source| StartError::Thread { what: "orchestrator sender", source })?;
        let api = crate::agent::api::Api::start(
            addr,
            crate::agent::api::ApiSettings {
                hostname: cfg.hostname.clone(),
                queue_items: cfg.api_queue_items,
                manifest_buffer_bytes: cfg.manifest_buffer_bytes,
                orchestrator_legacy_endpoint: cfg.orchestrator_use_legacy_endpoint,
                health: Some(health.clone()),
            },
            sender.queue(),
            Some(ops.clone()),
        )?;
        api_parts = Some((api, sender, orch_stats));
    }
    let api_shared = api_parts.as_ref().map(|(a, _, _)| a.shared.clone());
    let live = crate::agent::handover::LiveShardStats::new(cfg.shards);

    let mut udp = match cfg.udp_addr {
        Some(addr) => runtime::bind_udp(addr, cfg.shards, cfg.so_rcvbuf_bytes)?,
        None => Vec::new(),
    };
    let udp_drops = crate::agent::udp_drops::UdpKernelDrops::new(&udp);
    let _ = ops.udp_drops.set(udp_drops.clone());
    let mut stream = match (&cfg.ops.stream_socket, &stream_stats) {
        (Some(p), Some(stats)) => {
            runtime::prepare_unix_path(p)?;
            tracing::warn!(path = %p.display(), "dogstatsd_stream_socket is experimental in the Datadog Agent; edgestat supports it with the Agent's framing");
            Some(runtime::StreamSocket {
                path: p.clone(),
                max_connections: cfg.ops.stream_max_connections,
                max_frame_bytes: cfg.buffer_size_bytes,
                log_too_big: cfg.ops.stream_log_too_big,
                stats: stats.clone(),
            })
        }
        _ => None,
    };
    let unix = match &cfg.unix_socket {
        Some(p) => Some(runtime::bind_unix(p)?),
        None => None,
    };
    let shard_settings = ShardSettings {
        hostname: cfg.hostname.clone(),
        extra_tags: cfg.dogstatsd_tags.clone(),
        namespace: cfg.metric_namespace.clone(),
        namespace_blacklist: cfg.metric_namespace_blacklist.clone(),
        context_budget: memory.budget.clone(),
        blocklist: std::sync::Arc::new(crate::core::filter::MetricFilter::new(
            &cfg.metric_blocklist,
            cfg.metric_blocklist_match_prefix,
        )),
        max_queued: cfg.max_queued_events,
        context_expiry_seconds: cfg.context_expiry_seconds,
        parse: crate::core::protocol::ParseOptions::default(),
        mapper: cfg.mapper.clone(),
        histogram_copy_to_distribution: cfg.histogram_copy_to_distribution.clone(),
        eol_required: cfg.eol_required,
    };
    let mut shards = Vec::with_capacity(cfg.shards);
    udp.reverse();
    for id in 0..cfg.shards {
        // The first EDGESTAT_UNIX_READERS shards also read the Unix socket
        // (it cannot be port-balanced: they share it); the last shard reads
        // the stream socket.
        let unix =
            match &unix {
                Some(s) if id < cfg.unix_readers => Some(s.try_clone().map_err(|e| runtime::RuntimeError::Bind {
                    what: "unix socket (a shard's copy)".into(),
                    source: e,
                })?),
                _ => None,
            };
        let udp = udp.pop();
        let udp_standby = match &udp {
            Some(sock) if cfg.udp_standby_bytes > 0 => {
                // Never on the shard's own CPU: the standby is there for
                // when that CPU is taken.
                let cpu = crate::agent::cpu_set::shard_cpu(&allowed_cpus, id);
                let others: Vec<usize> = allowed_cpus.iter().copied().filter(|&c| c != cpu).collect();
                if others.is_empty() {
                    None
                } else {
                    match crate::agent::udp_standby::UdpStandby::start(
                        id,
                        sock,
                        others,
                        cfg.udp_standby_bytes,
                        cfg.buffer_size_bytes,
                    ) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            tracing::warn!(shard = id, error = %e, "running without a UDP standby reader");
                            None
                        }
                    }
                }
            }
            _ => None,
        };
        let sockets = ShardSockets {
            udp,
            udp_standby,
            unix,
            health: Some(health.register(format!("shard-{id}"), loop_bound)),
            stream: if id + 1 == cfg.shards { stream.take() } else { None },
        };
        let hooks = runtime::ShardHooks {
            tap: crate::agent::tap::Tap::new(
                id,
                Some(capture.clone()),
                forward_target,
                forward_stats.get(id).cloned().unwrap_or_default(),
            ),
            metric_stats_capacity: if cfg.ops.metrics_stats_enable { cfg.ops.metrics_stats_max_contexts } else { 0 },
            live: live.clone(),
            test_delay_flush: cfg.test_delay_shard_flush.filter(|(s, _)| *s == id).map(|(_, d)| d),
            cpu: crate::agent::cpu_set::shard_cpu(&allowed_cpus, id),
        };
        let h = runtime::spawn_shard(
            id,
            shard_settings.clone(),
            sockets,
            cfg.buffer_size_bytes,
            cfg.io_memory_bytes,
            cfg.recv_batch_datagrams,
            cfg.recv_coalesce_us,
            cfg.unix_poll_us,
            hooks,
        )?;

        shards.push(h);
    }
    let _ = ops.shards.set(shards.iter().map(|s| s.control.clone()).collect());
    let _ = ops.memory.set(memory.clone());
    tracing::info!(
        shards = cfg.shards,
        cpus = ?allowed_cpus,
        background_cpus = ?spare_cpus,
        udp = ?cfg.udp_addr,
        unix = ?cfg.unix_socket,
        flush_interval_ms = cfg.flush_interval.as_millis() as u64,
        "edgestat running"
    );

    let on_flush: Box<dyn FnMut(&FlushSummary) + Send> = if embedded.is_some() {
        Box::new(move |s: &FlushSummary| {
            println!(
                "flush: {} series, {} sketches, {} service checks, {} events -> {} payloads, {} bytes; {} contexts; {} packets, {} parse errors -> {}",
                s.series,
                s.sketches,
                s.service_checks,
                s.events,
                s.payloads,
                s.bytes,
                s.contexts,
                s.stats.packets,
                s.stats.parse_errors.values().sum::<u64>(),
                summary_target
            );
        })
    } else {
        Box::new(|_s: &FlushSummary| {})
    };
    let on_flush: Box<dyn FnMut(&FlushSummary) + Send> = {
        let (mut inner, drops) = (on_flush, udp_drops.clone());
        Box::new(move |s: &FlushSummary| {
            inner(s);
            drops.warn_once_if_dropping();
        })
    };
    let shutdown_timeout = cfg.shutdown_timeout;
    let cfg_flush_interval = cfg.flush_interval;
    let telemetry_addr = cfg.telemetry_addr;
    let window = forwarder.window();
    let metrics_stats = forwarder.stats.clone();
    let mut flusher = Flusher::new(cfg, shards.iter().map(|s| s.control.clone()).collect(), forwarder, on_flush)
        .map_err(StartError::Compressor)?;
    if let Some((api, _, _)) = &api_parts {
        flusher.attach_api(api.flush_side());
    }
    let mut telemetry = None;
    if let Some(addr) = telemetry_addr {
        let mut forwarders = vec![("metrics", metrics_stats)];
        if let Some((_, _, s)) = &api_parts {
            forwarders.push(("orchestrator", s.clone()));
        }
        let sources = crate::agent::telemetry::Sources {
            flush: recorder_shared.shared(),
            forwarders,
            api: api_shared.clone(),
            ops: Some(ops.clone()),
            live: Some(live.clone()),
            shards: Some(flusher.shard_health()),
            memory: Some(memory.clone()),
            udp_drops: Some(udp_drops.clone()),
        };
        telemetry = Some(crate::agent::telemetry::start_server(addr, sources)?);
    }
    // Always recorded: `edgestat status` reads it too.
    flusher.attach_telemetry(recorder_shared);
    flusher.attach_health(health.register("flusher", cfg_flush_interval * 2));
    let api_closer = api_shared.clone();
    let health_closer = health.clone();
    let capture_closer = capture.clone();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let flusher_thread = std::thread::Builder::new()
        .name("edgestat-flusher".into())
        .spawn(move || flusher.run(stop_rx))
        .map_err(|source| StartError::Thread { what: "flusher", source })?;
    // Every socket is bound and every thread runs: tell systemd (Type=notify).
    crate::agent::sd_notify::notify_or_warn("READY=1");

    // First signal: orderly shutdown. Second: leave at once.
    let signal_thread = std::thread::Builder::new()
        .name("edgestat-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen == 1 {
                    tracing::info!(signal = sig, "stopping: draining sockets and flushing every bucket");
                    crate::agent::sd_notify::notify_or_warn("STOPPING=1");
                    health_closer.set_stopping();
                    // The API answers 503 from here on; what it accepted is
                    // in the queues the final flush drains.
                    if let Some(api) = &api_closer {
                        api.close();
                    }
                    capture_closer.shutdown();
                    // A flush waiting for room in the forwarder's window
                    // goes on at once; the shutdown deadline bounds delivery.
                    window.stop_waiting();
                    let _ = stop_tx.send(());
                } else {
                    crate::agent::logging::fatal("edgestat: second signal, exiting immediately");
                    std::process::exit(1);
                }
            }
        })
        .map_err(|source| StartError::Thread { what: "signal", source })?;
    let _ = signal_thread;

    let forwarder = flusher_thread.join().map_err(|_| StartError::FlusherPanicked)?;
    // The orchestrator forwarder drains in parallel with the main one.
    // The API keeps answering 503 until delivery is over.
    let (api, orch_done) = match api_parts {
        Some((api, sender, _)) => (Some(api), Some(std::thread::spawn(move || sender.shutdown()))),
        None => (None, None),
    };
    forwarder.shutdown(shutdown_timeout);
    if let Some(t) = orch_done {
        let _ = t.join();
    }
    if let Some(api) = api {
        api.stop();
    }
    // Shards end on their own after answering `Shutdown`; their threads are
    // not joined so a wedged one cannot keep the process alive.
    drop(shards);
    if let Some(i) = embedded {
        i.shutdown();
    }
    if let Some(t) = telemetry {
        t.stop();
    }
    // A capture stopped by the signal completes its file (bounded).
    let capture_end = std::time::Instant::now() + Duration::from_secs(2);
    while capture.status().running && std::time::Instant::now() < capture_end {
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::info!("edgestat stopped");
    Ok(())
}
