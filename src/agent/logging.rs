//! Logs go to stderr, one line per event, level from `DD_LOG_LEVEL`.

/// Installs the global subscriber (idempotent).
pub fn init(level: &str) {
    let filter = match level {
        "off" => "off".to_string(),
        l => format!("{l},hyper=warn,rustls=warn,glommio=warn"),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}
