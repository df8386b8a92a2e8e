//! Logs go to stderr, one line per event, level from `DD_LOG_LEVEL`;
//! `EDGESTAT_LOG_FORMAT=json` makes every line one JSON object for log
//! shippers.

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00.000000Z  INFO message key=value`.
    #[default]
    Text,
    /// `{"timestamp":"...","level":"INFO","message":"...","key":"value"}`.
    Json,
}

impl LogFormat {
    /// `text` or `json` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" | "" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }

    /// `EDGESTAT_LOG_FORMAT`, text when unset or invalid (for lines printed
    /// before the configuration is validated, and for the tools).
    pub fn from_env() -> Self {
        std::env::var("EDGESTAT_LOG_FORMAT").ok().and_then(|v| Self::parse(&v)).unwrap_or_default()
    }
}

/// Installs the global subscriber (idempotent).
pub fn init(level: &str, format: LogFormat) {
    let filter = match level {
        "off" => "off".to_string(),
        l => format!("{l},hyper=warn,rustls=warn,glommio=warn"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init(),
    };
}

/// Prints the one line a failing command ends with, as a JSON log line when
/// `EDGESTAT_LOG_FORMAT=json` (whatever the level), else as plain text.
pub fn fatal(line: &str) {
    match LogFormat::from_env() {
        LogFormat::Text => eprintln!("{line}"),
        LogFormat::Json => {
            let sub = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_target(false)
                .with_writer(std::io::stderr)
                .finish();
            tracing::subscriber::with_default(sub, || tracing::error!("{line}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_case_insensitively_and_refuse_others() {
        assert_eq!(LogFormat::parse("JSON"), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse("text"), Some(LogFormat::Text));
        assert_eq!(LogFormat::parse("logfmt"), None);
    }
}
