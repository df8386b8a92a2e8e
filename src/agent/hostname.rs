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

/// Machine facts for the host metadata payload, read from `/proc`, `/sys`
/// and `/etc` (missing files leave a field empty).
pub fn host_facts() -> crate::core::host_metadata::HostFacts {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let socket_hostname = system_hostname();
    crate::core::host_metadata::HostFacts {
        os: std::env::consts::OS.to_string(),
        socket_fqdn: socket_hostname.clone(),
        socket_hostname,
        timezone: std::env::var("TZ")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| read("/etc/timezone"))
            .unwrap_or_else(|| "UTC".into()),
        uuid: read("/sys/class/dmi/id/product_uuid")
            .map(|s| s.to_ascii_lowercase())
            .or_else(|| read("/etc/machine-id").and_then(|m| uuid_from_hex(&m)))
            .unwrap_or_default(),
        cpu_cores: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
        machine: std::env::consts::ARCH.to_string(),
        kernel_release: read("/proc/sys/kernel/osrelease").unwrap_or_default(),
    }
}

/// `/etc/machine-id` (32 hex digits) written as a UUID.
fn uuid_from_hex(h: &str) -> Option<String> {
    if h.len() != 32 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let h = h.to_ascii_lowercase();
    Some(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn machine_id_becomes_a_uuid() {
        assert_eq!(
            super::uuid_from_hex("0123456789ABCDEF0123456789abcdef").as_deref(),
            Some("01234567-89ab-cdef-0123-456789abcdef")
        );
        assert_eq!(super::uuid_from_hex("xyz"), None);
    }
}
