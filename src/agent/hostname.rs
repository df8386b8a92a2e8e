//! The host name used when `DD_HOSTNAME` is not set.

/// The kernel's host name (the Agent's last fallback), or `localhost`.
///
/// Read from `/proc` so no `unsafe` FFI call is needed.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
