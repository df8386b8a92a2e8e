//! `EDGESTAT_MEMORY_LIMIT`: a bound in bytes on the process's estimated
//! footprint. The limit comes from the configuration or the host (the
//! cgroup's memory limit, else the machine's memory); at start the fixed
//! costs of every configured buffer are checked against it, and what is
//! left becomes the byte budget new contexts are admitted from.

use std::sync::Arc;

use crate::agent::cgroup;
use crate::agent::config::Config;
pub use crate::agent::config::{parse_memory_limit as parse_setting, MemoryLimitSetting};
use crate::core::aggregator::footprint;
use crate::core::aggregator::{ByteBound, ContextBudget};

/// The default limit is this share of the host's (or cgroup's) memory.
/// The estimate bounds live heap, not RSS: allocator fragmentation and
/// the kernel's socket buffers come on top (with ~2 KB keys the RSS peak
/// went 6 % over the estimate, perf/memory-limit.md). Half leaves that
/// margin and the rest of the node's (or container's) memory to others.
pub const HOST_SHARE_PERCENT: u64 = 50;

/// The context budget must hold at least this many contexts of
/// [`TYPICAL_KEY_BYTES`] or the start is refused.
pub const MIN_CONTEXTS: usize = 1000;

/// Key payload of a typical ~150-byte line's context.
pub const TYPICAL_KEY_BYTES: usize = 160;

/// Estimated bytes of one API queue item (an event or service check):
/// the queue is bounded in items, not bytes.
pub const API_ITEM_BYTES: u64 = 512;

/// The process before any buffer: mapped executable text, thread stacks,
/// runtime state (an idle agent measured 13 MB RSS, 10 MB of it the
/// executable, perf/memory-limit.md).
pub const PROCESS_BASE_BYTES: u64 = 16 << 20;

/// Cgroup limits at or above this are "no limit" (v1 writes 2^63 rounded
/// down to a page).
const UNLIMITED_FROM: u64 = 1 << 60;

/// Memory the host gives this process, and where the number came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMemory {
    /// Bytes.
    pub bytes: u64,
    /// `cgroup v2 memory.max`, `cgroup v1 memory.limit_in_bytes` or `MemTotal`.
    pub source: &'static str,
}

/// A cgroup memory limit file's value; `None` for `max` or "unlimited".
pub fn parse_cgroup_limit(s: &str) -> Option<u64> {
    s.trim().parse::<u64>().ok().filter(|&n| n > 0 && n < UNLIMITED_FROM)
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo_total(s: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The smallest value of `file` in this process's cgroup `path` under
/// `root` and its ancestors (a limit set higher up applies too).
fn cgroup_min(root: &str, path: &str, file: &str, parse: impl Fn(&str) -> Option<u64>) -> Option<u64> {
    cgroup::ancestors(root, path)
        .iter()
        .filter_map(|dir| std::fs::read_to_string(dir.join(file)).ok().as_deref().and_then(&parse))
        .min()
}

/// The memory this process may use: its cgroup's limit when one is set,
/// else the machine's total.
pub fn detect_host_memory() -> Option<HostMemory> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if let Some(path) = cgroup::v2_path(&cgroup) {
        if let Some(bytes) = cgroup_min("/sys/fs/cgroup", path, "memory.max", parse_cgroup_limit) {
            return Some(HostMemory { bytes, source: "cgroup v2 memory.max" });
        }
    }
    if let Some(path) = cgroup::v1_path(&cgroup, "memory") {
        if let Some(bytes) = cgroup_min("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes", parse_cgroup_limit) {
            return Some(HostMemory { bytes, source: "cgroup v1 memory.limit_in_bytes" });
        }
    }
    let total = parse_meminfo_total(&std::fs::read_to_string("/proc/meminfo").ok()?)?;
    Some(HostMemory { bytes: total, source: "MemTotal" })
}

/// The configured buffers whose bytes are reserved before any context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FixedCosts {
    /// (what, bytes), in the order the start line lists them.
    pub parts: Vec<(&'static str, u64)>,
}

impl FixedCosts {
    /// Their sum.
    pub fn total(&self) -> u64 {
        self.parts.iter().map(|(_, b)| b).sum()
    }

    fn add(&mut self, what: &'static str, bytes: u64) {
        if bytes > 0 {
            self.parts.push((what, bytes));
        }
    }
}

/// The bounded buffers of `cfg`, at their bounds. `embedded_intake`: the
/// local intake runs in this process.
pub fn fixed_costs(cfg: &Config, embedded_intake: bool) -> FixedCosts {
    let mut f = FixedCosts::default();
    let n = |x: usize| x as u64;
    f.add("process base", PROCESS_BASE_BYTES);
    let datagram_batch = n(cfg.recv_batch_datagrams) * n(cfg.buffer_size_bytes);
    let udp_readers = if cfg.udp_addr.is_some() { n(cfg.shards) } else { 0 };
    let unix_readers = if cfg.unix_socket.is_some() { n(cfg.unix_readers) } else { 0 };
    f.add("receive batches", datagram_batch * (udp_readers + unix_readers));
    if cfg.ops.stream_socket.is_some() {
        f.add("stream frames", n(cfg.ops.stream_max_connections) * n(cfg.buffer_size_bytes));
    }
    f.add("io memory", n(cfg.io_memory_bytes) * n(cfg.shards));
    let s = &cfg.serializer;
    let builder = n(s.max_series_uncompressed_payload_size.max(s.max_uncompressed_payload_size))
        + n(s.max_series_payload_size.max(s.max_payload_size));
    f.add("payload builders", builder * n(cfg.flush_encode_threads));
    let endpoints = 1 + n(cfg.additional_endpoints.len());
    f.add("forwarder window", n(cfg.forwarder_window_bytes));
    f.add("retry queues", n(cfg.retry_queue_max_bytes) * endpoints);
    if cfg.api_addr.is_some() {
        f.add("api queue", n(cfg.api_queue_items) * API_ITEM_BYTES);
        f.add("manifest buffer", n(cfg.manifest_buffer_bytes));
        // The orchestrator forwarder has its own window and retry queue.
        f.add("orchestrator forwarder", n(cfg.forwarder_window_bytes) + n(cfg.retry_queue_max_bytes));
        // Captures are started through the API.
        f.add("capture buffers", n(cfg.ops.capture_buffer_bytes) * n(cfg.shards));
    }
    if cfg.ops.metrics_stats_enable {
        f.add(
            "context statistics",
            n(cfg.ops.metrics_stats_max_contexts) * n(cfg.shards) * n(TYPICAL_KEY_BYTES + footprint::KEY_BYTES),
        );
    }
    if embedded_intake {
        // It holds one request's body and its decompressed copy at a time.
        f.add("embedded intake", builder);
    }
    f
}

/// Why the memory limit cannot be met; printed as the one line before
/// exiting with status 2.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid configuration: EDGESTAT_MEMORY_LIMIT={limit} bytes{derived} leaves no room for contexts: the configured buffers' fixed total is {fixed} bytes ({parts}) and {MIN_CONTEXTS} contexts need {min_room} more; raise EDGESTAT_MEMORY_LIMIT or lower those buffers"
)]
pub struct MemoryLimitError {
    /// The limit.
    pub limit: u64,
    /// ` (50 % of ...)` when derived from the host.
    pub derived: String,
    /// Fixed total.
    pub fixed: u64,
    /// The fixed parts, `what=bytes` joined.
    pub parts: String,
    /// Bytes [`MIN_CONTEXTS`] contexts need.
    pub min_room: u64,
}

/// The memory plan of a run, shared with telemetry and status.
#[derive(Debug)]
pub struct MemoryPlan {
    /// The limit in bytes; `None` when off.
    pub limit_bytes: Option<u64>,
    /// Where the limit came from (`EDGESTAT_MEMORY_LIMIT`, or the host source).
    pub source: String,
    /// Fixed costs.
    pub fixed: FixedCosts,
    /// The node-wide context budget (count and bytes).
    pub budget: Arc<ContextBudget>,
    /// Set when the host-derived default leaves too little room for the
    /// configured buffers: logged once at start (an explicit limit exits
    /// instead).
    pub warning: Option<String>,
}

impl MemoryPlan {
    /// Fixed costs plus the live contexts' estimate.
    pub fn estimated_bytes(&self) -> u64 {
        self.fixed.total() + self.budget.estimated_bytes() as u64
    }
}

/// Checks `fixed` against the limit and builds the context budget from
/// what is left. `host`: the host's memory when the setting is
/// [`MemoryLimitSetting::Host`] (`None`: undetectable, no limit).
pub fn plan(
    setting: MemoryLimitSetting,
    host: Option<HostMemory>,
    fixed: FixedCosts,
    max_contexts: usize,
) -> Result<MemoryPlan, MemoryLimitError> {
    let (limit, source, derived) = match (setting, host) {
        (MemoryLimitSetting::Off, _) | (MemoryLimitSetting::Host, None) => (None, "off".to_string(), String::new()),
        (MemoryLimitSetting::Bytes(b), _) => (Some(b), "EDGESTAT_MEMORY_LIMIT".to_string(), String::new()),
        (MemoryLimitSetting::Host, Some(h)) => (
            Some(h.bytes / 100 * HOST_SHARE_PERCENT),
            format!("{HOST_SHARE_PERCENT}% of {} ({} bytes)", h.source, h.bytes),
            format!(" (default: {HOST_SHARE_PERCENT}% of {} {} bytes)", h.source, h.bytes),
        ),
    };
    let per_context = footprint::per_context_bytes();
    let mut warning = None;
    let max_bytes = match limit {
        None => usize::MAX,
        Some(limit) => {
            let min_room = (MIN_CONTEXTS * (per_context + TYPICAL_KEY_BYTES)) as u64;
            let mut room = limit.saturating_sub(fixed.total());
            if room < min_room {
                let parts = fixed.parts.iter().map(|(w, b)| format!("{w}={b}")).collect::<Vec<_>>().join(", ");
                if derived.is_empty() {
                    return Err(MemoryLimitError { limit, derived, fixed: fixed.total(), parts, min_room });
                }
                // The default must never stop an agent from starting on a
                // small node: the fixed bounds are maxima that are rarely
                // all reached at once. Contexts get a quarter of the limit,
                // and the operator reads what to lower.
                room = (limit / 4).max(min_room);
                warning = Some(format!(
                    "the default memory limit{derived} is below the configured buffers' fixed total of {} bytes ({parts}); contexts get {room} bytes; set EDGESTAT_MEMORY_LIMIT or lower those buffers",
                    fixed.total()
                ));
            }
            usize::try_from(room).unwrap_or(usize::MAX)
        }
    };
    let budget = ContextBudget::with_bytes(max_contexts, ByteBound { max_bytes, per_context_bytes: per_context });
    Ok(MemoryPlan { limit_bytes: limit, source, fixed, budget, warning })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_parses_bytes_and_off() {
        assert_eq!(parse_setting("268435456"), Some(MemoryLimitSetting::Bytes(268_435_456)));
        assert_eq!(parse_setting(" off "), Some(MemoryLimitSetting::Off));
        assert_eq!(parse_setting("OFF"), Some(MemoryLimitSetting::Off));
        assert_eq!(parse_setting("0"), Some(MemoryLimitSetting::Off));
        assert_eq!(parse_setting("256M"), None, "bytes only");
        assert_eq!(parse_setting("-1"), None);
        assert_eq!(parse_setting(""), None);
    }

    #[test]
    fn cgroup_limits_and_meminfo() {
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("536870912\n"), Some(536_870_912));
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), None, "v1's unlimited");
        assert_eq!(parse_cgroup_limit("0"), None);
        let meminfo = "MemTotal:       24684512 kB\nMemFree:          823000 kB\n";
        assert_eq!(parse_meminfo_total(meminfo), Some(24_684_512 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
    }

    fn fixed(bytes: u64) -> FixedCosts {
        FixedCosts { parts: vec![("forwarder window", bytes)] }
    }

    #[test]
    fn plan_leaves_the_rest_to_contexts_or_refuses() {
        let p = plan(MemoryLimitSetting::Bytes(100 << 20), None, fixed(30 << 20), 500_000).unwrap();
        assert_eq!(p.limit_bytes, Some(100 << 20));
        assert_eq!(p.budget.byte_bound().max_bytes, 70 << 20);
        assert_eq!(p.budget.byte_bound().per_context_bytes, footprint::per_context_bytes());
        assert_eq!(p.estimated_bytes(), 30 << 20);

        let e = plan(MemoryLimitSetting::Bytes(10 << 20), None, fixed(10 << 20), 10).unwrap_err();
        let line = e.to_string();
        assert!(line.contains("EDGESTAT_MEMORY_LIMIT=10485760 bytes"), "{line}");
        assert!(line.contains("fixed total is 10485760 bytes (forwarder window=10485760)"), "{line}");
        assert!(!line.contains('\n'));

        let host = HostMemory { bytes: 1 << 30, source: "cgroup v2 memory.max" };
        let p = plan(MemoryLimitSetting::Host, Some(host.clone()), fixed(0), 10).unwrap();
        assert_eq!(p.limit_bytes, Some((1u64 << 30) / 100 * 50));
        // The default never refuses to start: contexts get a quarter of it.
        let p = plan(MemoryLimitSetting::Host, Some(host), fixed(1 << 30), 10).unwrap();
        assert_eq!(p.budget.byte_bound().max_bytes, (1usize << 30) / 100 * 50 / 4);
        let w = p.warning.unwrap();
        assert!(w.contains("default: 50% of cgroup v2 memory.max") && w.contains("EDGESTAT_MEMORY_LIMIT"), "{w}");

        let p = plan(MemoryLimitSetting::Off, None, fixed(1 << 40), 10).unwrap();
        assert_eq!(p.limit_bytes, None);
        assert_eq!(p.budget.byte_bound().max_bytes, usize::MAX);
    }
}
