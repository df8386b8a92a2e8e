//! Bounded in-memory record store, optional JSONL mirror on disk, and the
//! queue of injected failures.
//!
//! Why records are kept pre-serialized: the query route is a plain
//! concatenation, and a serialized record is several times smaller than a
//! `serde_json::Value` tree, which matters when benchmarks push 100k payloads.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::tools::intake::IntakeError;

/// Upper bound on the bytes of serialized records kept in memory (oldest are
/// evicted first, like the count bound), so memory stays bounded even with
/// large payloads.
pub const MAX_STORED_BYTES: usize = 1024 * 1024 * 1024;
/// Distinct paths counted individually in `/intake/stats`; the rest are
/// counted under `"(other)"` so hostile clients cannot grow the map.
pub const MAX_DISTINCT_PATHS: usize = 1024;
/// Default bound on `payloads.jsonl` + `payloads.jsonl.1` (256 MiB).
pub const DEFAULT_DATA_MAX_BYTES: u64 = 256 << 20;
/// Smallest accepted bound on the JSONL files.
pub const MIN_DATA_MAX_BYTES: u64 = 4096;
/// Most failure rules queued at once.
pub const MAX_FAIL_RULES: usize = 1024;
/// Largest `count` of one failure rule.
pub const MAX_FAIL_COUNT: u64 = 1_000_000;
/// Longest `delay_ms` of one failure rule (10 minutes).
pub const MAX_FAIL_DELAY_MS: u64 = 600_000;

/// Everything known about one request, before it gets its sequence number.
#[derive(Debug, Default)]
pub struct RecordInput {
    /// Milliseconds since the Unix epoch when the request head arrived.
    pub received_at_ms: u64,
    /// HTTP method.
    pub method: String,
    /// URI path.
    pub path: String,
    /// Raw query string ("" when none).
    pub query: String,
    /// Lower-case header name → value (repeated headers joined with ", ").
    pub headers: Vec<(String, String)>,
    /// `Content-Encoding` as sent, `None` when absent.
    pub content_encoding: Option<String>,
    /// Body bytes as received (`None` when not read, e.g. refused as too big).
    pub compressed_bytes: Option<u64>,
    /// Body bytes after decompression (`None` when decompression failed).
    pub uncompressed_bytes: Option<u64>,
    /// Status answered (0 = connection closed without an answer).
    pub answered: u16,
    /// Why decoding failed, if it did.
    pub decode_error: Option<String>,
    /// Serialized JSON of the decoded body (`None` → `null`).
    pub body_json: Option<Vec<u8>>,
    /// Raw bytes to expose as `body_b64` (only when not decodable).
    pub body_raw: Option<Vec<u8>>,
}

impl RecordInput {
    /// Serializes every field after `seq` (the text starts with `,"received_at_ms"`).
    fn serialize_tail(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            256 + self.body_json.as_ref().map_or(0, |b| b.len())
                + self.body_raw.as_ref().map_or(0, |b| b.len() * 4 / 3 + 4),
        );
        out.extend_from_slice(b",\"received_at_ms\":");
        out.extend_from_slice(self.received_at_ms.to_string().as_bytes());
        push_kv_str(&mut out, "method", &self.method);
        push_kv_str(&mut out, "path", &self.path);
        push_kv_str(&mut out, "query", &self.query);
        out.extend_from_slice(b",\"headers\":{");
        for (i, (k, v)) in self.headers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_json_str(&mut out, k);
            out.push(b':');
            push_json_str(&mut out, v);
        }
        out.push(b'}');
        out.extend_from_slice(b",\"content_encoding\":");
        push_opt_str(&mut out, self.content_encoding.as_deref());
        out.extend_from_slice(b",\"compressed_bytes\":");
        push_opt_u64(&mut out, self.compressed_bytes);
        out.extend_from_slice(b",\"uncompressed_bytes\":");
        push_opt_u64(&mut out, self.uncompressed_bytes);
        out.extend_from_slice(b",\"answered\":");
        out.extend_from_slice(self.answered.to_string().as_bytes());
        out.extend_from_slice(b",\"decode_error\":");
        push_opt_str(&mut out, self.decode_error.as_deref());
        out.extend_from_slice(b",\"body\":");
        match &self.body_json {
            Some(b) => out.extend_from_slice(b),
            None => out.extend_from_slice(b"null"),
        }
        if let Some(raw) = &self.body_raw {
            out.extend_from_slice(b",\"body_b64\":\"");
            out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(raw).as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
        out
    }
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json never fails writing a str into a Vec.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

fn push_kv_str(out: &mut Vec<u8>, k: &str, v: &str) {
    out.push(b',');
    push_json_str(out, k);
    out.push(b':');
    push_json_str(out, v);
}

fn push_opt_str(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => push_json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn push_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

struct StoredRecord {
    seq: u64,
    path: String,
    answered: u16,
    json: Bytes,
}

#[derive(Default)]
struct Counters {
    received: u64,
    evicted: u64,
    by_path: BTreeMap<String, u64>,
    by_answered: BTreeMap<u16, u64>,
    validate_requests: u64,
    jsonl_write_errors: u64,
    jsonl_rotations: u64,
    jsonl_dropped_too_large: u64,
}

struct Inner {
    records: VecDeque<StoredRecord>,
    bytes: usize,
    next_seq: u64,
    counters: Counters,
    jsonl: Option<Jsonl>,
}

/// The on-disk mirror of the records: `payloads.jsonl`, renamed to
/// `payloads.jsonl.1` (replacing the previous one) when the next record
/// would take it past half the bound, so the two files together never
/// exceed `max_bytes` however long the intake runs.
struct Jsonl {
    path: PathBuf,
    file: BufWriter<File>,
    size: u64,
    max_bytes: u64,
}

/// What [`Jsonl::append`] did besides writing.
#[derive(Debug, PartialEq, Eq)]
enum Appended {
    Written,
    Rotated,
    /// The record alone is larger than half the bound; not written.
    TooLarge,
}

impl Jsonl {
    fn open(dir: &Path, max_bytes: u64) -> Result<Self, IntakeError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| IntakeError::Io { context: format!("cannot create data dir {}", dir.display()), source: e })?;
        let path = dir.join("payloads.jsonl");
        let file = Self::open_file(&path)
            .map_err(|e| IntakeError::Io { context: format!("cannot open {}", path.display()), source: e })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Jsonl { path, file: BufWriter::new(file), size, max_bytes: max_bytes.max(MIN_DATA_MAX_BYTES) })
    }

    fn open_file(path: &Path) -> std::io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }

    /// Appends one record and its newline, rotating first when needed.
    fn append(&mut self, json: &[u8]) -> std::io::Result<Appended> {
        let half = self.max_bytes / 2;
        let len = json.len() as u64 + 1;
        if len > half {
            return Ok(Appended::TooLarge);
        }
        let mut done = Appended::Written;
        if self.size + len > half {
            self.file.flush()?;
            std::fs::rename(&self.path, self.path.with_extension("jsonl.1"))?;
            self.file = BufWriter::new(Self::open_file(&self.path)?);
            self.size = 0;
            done = Appended::Rotated;
        }
        self.file.write_all(json)?;
        self.file.write_all(b"\n")?;
        self.file.flush()?;
        self.size += len;
        Ok(done)
    }
}

/// Filter for [`Store::query`].
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// Only records whose path equals this.
    pub path: Option<String>,
    /// Only records answered with this status.
    pub answered: Option<u16>,
    /// Only records with `seq` greater than this (for polling).
    pub since: Option<u64>,
}

/// The record store shared by every connection.
pub struct Store {
    inner: Mutex<Inner>,
    max_records: usize,
    max_bytes: usize,
}

impl Store {
    /// Creates a store; with `data_dir`, opens (appends to)
    /// `data_dir/payloads.jsonl`, creating the directory, and keeps it and
    /// its rotated predecessor within `data_max_bytes` together (at least
    /// [`MIN_DATA_MAX_BYTES`]).
    pub fn new(max_records: usize, data_dir: Option<&Path>, data_max_bytes: u64) -> Result<Self, IntakeError> {
        let jsonl = match data_dir {
            None => None,
            Some(dir) => {
                let j = Jsonl::open(dir, data_max_bytes)?;
                tracing::info!(
                    path = %j.path.display(),
                    max_bytes = j.max_bytes,
                    "intake: payloads mirrored to disk; rotated to payloads.jsonl.1 at half the bound, older ones deleted"
                );
                Some(j)
            }
        };
        Ok(Store {
            inner: Mutex::new(Inner {
                records: VecDeque::new(),
                bytes: 0,
                next_seq: 1,
                counters: Counters::default(),
                jsonl,
            }),
            max_records,
            max_bytes: MAX_STORED_BYTES,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot corrupt the store's
        // invariants badly enough to stop serving; keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores one request; returns its sequence number (starting at 1).
    pub fn push(&self, rec: &RecordInput) -> u64 {
        let tail = rec.serialize_tail();
        let mut g = self.lock();
        let seq = g.next_seq;
        g.next_seq += 1;
        let mut json = Vec::with_capacity(tail.len() + 24);
        json.extend_from_slice(b"{\"seq\":");
        json.extend_from_slice(seq.to_string().as_bytes());
        json.extend_from_slice(&tail);
        drop(tail);

        let c = &mut g.counters;
        c.received += 1;
        if c.by_path.contains_key(&rec.path) || c.by_path.len() < MAX_DISTINCT_PATHS {
            *c.by_path.entry(rec.path.clone()).or_insert(0) += 1;
        } else {
            *c.by_path.entry("(other)".to_string()).or_insert(0) += 1;
        }
        *c.by_answered.entry(rec.answered).or_insert(0) += 1;

        let appended = g.jsonl.as_mut().map(|w| w.append(&json));
        match appended {
            None | Some(Ok(Appended::Written)) => {}
            Some(Ok(Appended::Rotated)) => g.counters.jsonl_rotations += 1,
            Some(Ok(Appended::TooLarge)) => {
                if g.counters.jsonl_dropped_too_large == 0 {
                    tracing::warn!("intake: a record larger than half the data dir bound was not written to payloads.jsonl (logged once; see jsonl_dropped_too_large)");
                }
                g.counters.jsonl_dropped_too_large += 1;
            }
            Some(Err(e)) => {
                tracing::warn!("intake: cannot append to payloads.jsonl: {e}");
                g.counters.jsonl_write_errors += 1;
            }
        }

        let len = json.len();
        while !g.records.is_empty() && (g.records.len() >= self.max_records || g.bytes + len > self.max_bytes) {
            if let Some(old) = g.records.pop_front() {
                g.bytes -= old.json.len();
                g.counters.evicted += 1;
            }
        }
        if self.max_records == 0 {
            g.counters.evicted += 1;
        } else {
            g.bytes += len;
            g.records.push_back(StoredRecord {
                seq,
                path: rec.path.clone(),
                answered: rec.answered,
                json: Bytes::from(json),
            });
        }
        seq
    }

    /// Counts one `GET /api/v1/validate`.
    pub fn count_validate(&self) {
        self.lock().counters.validate_requests += 1;
    }

    /// Matching records as a JSON array, in arrival order.
    pub fn query(&self, q: &Query) -> Vec<u8> {
        let picked: Vec<Bytes> = {
            let g = self.lock();
            g.records
                .iter()
                .filter(|r| q.path.as_deref().is_none_or(|p| r.path == p))
                .filter(|r| q.answered.is_none_or(|a| r.answered == a))
                .filter(|r| q.since.is_none_or(|s| r.seq > s))
                .map(|r| r.json.clone())
                .collect()
        };
        let total: usize = picked.iter().map(|b| b.len() + 1).sum();
        let mut out = Vec::with_capacity(total + 2);
        out.push(b'[');
        for (i, b) in picked.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b);
        }
        out.push(b']');
        out
    }

    /// Number of records currently held in memory.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether no record is held in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every record and resets the counters (sequence numbers keep
    /// growing so a poller never sees a number twice).
    pub fn clear(&self) -> usize {
        let mut g = self.lock();
        let n = g.records.len();
        g.records.clear();
        g.bytes = 0;
        g.counters = Counters::default();
        n
    }

    /// `/intake/stats` body.
    pub fn stats_json(&self, fail_rules: usize) -> Vec<u8> {
        #[derive(Serialize)]
        struct Stats<'a> {
            received: u64,
            stored: usize,
            stored_bytes: usize,
            evicted: u64,
            last_seq: u64,
            by_path: &'a BTreeMap<String, u64>,
            by_answered: BTreeMap<String, u64>,
            validate_requests: u64,
            jsonl_write_errors: u64,
            jsonl_rotations: u64,
            jsonl_dropped_too_large: u64,
            fail_rules: usize,
        }
        let g = self.lock();
        let s = Stats {
            received: g.counters.received,
            stored: g.records.len(),
            stored_bytes: g.bytes,
            evicted: g.counters.evicted,
            last_seq: g.next_seq - 1,
            by_path: &g.counters.by_path,
            by_answered: g.counters.by_answered.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            validate_requests: g.counters.validate_requests,
            jsonl_write_errors: g.counters.jsonl_write_errors,
            jsonl_rotations: g.counters.jsonl_rotations,
            jsonl_dropped_too_large: g.counters.jsonl_dropped_too_large,
            fail_rules,
        };
        serde_json::to_vec(&s).unwrap_or_else(|_| b"{}".to_vec())
    }
}

// ---------------------------------------------------------------------------
// failure injection
// ---------------------------------------------------------------------------

/// Body of `POST /intake/fail`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FailRule {
    /// Status to answer; 0 = hold the connection `delay_ms` then close it
    /// without an answer.
    pub status: u16,
    /// How many matching POSTs this rule answers (default 1).
    #[serde(default = "one")]
    pub count: u64,
    /// Only POSTs to this exact path (any payload path when absent).
    #[serde(default)]
    pub path: Option<String>,
    /// Sleep this long before answering (simulates a hanging intake).
    #[serde(default)]
    pub delay_ms: u64,
}

fn one() -> u64 {
    1
}

impl FailRule {
    /// Checks the bounds; the error text goes back to the client as a 400.
    pub fn validate(&self) -> Result<(), String> {
        if self.status != 0 && !(200..=599).contains(&self.status) {
            return Err(format!("status must be 0 or 200..=599, got {}", self.status));
        }
        if self.count == 0 || self.count > MAX_FAIL_COUNT {
            return Err(format!("count must be 1..={MAX_FAIL_COUNT}, got {}", self.count));
        }
        if self.delay_ms > MAX_FAIL_DELAY_MS {
            return Err(format!("delay_ms must be <= {MAX_FAIL_DELAY_MS}, got {}", self.delay_ms));
        }
        if let Some(p) = &self.path {
            if !p.starts_with('/') || p.len() > 1024 {
                return Err(format!("path must start with '/' (max 1024 bytes), got {p:?}"));
            }
        }
        Ok(())
    }
}

/// What to do with one request matched by a failure rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailAction {
    /// Status to answer (0 = close without answer).
    pub status: u16,
    /// Delay before answering.
    pub delay_ms: u64,
}

/// Queue of failure rules; the oldest matching rule answers first.
#[derive(Default)]
pub struct FailRules {
    rules: Mutex<VecDeque<FailRule>>,
}

impl FailRules {
    fn lock(&self) -> MutexGuard<'_, VecDeque<FailRule>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a validated rule; returns the number of queued rules.
    pub fn add(&self, rule: FailRule) -> Result<usize, String> {
        rule.validate()?;
        let mut g = self.lock();
        if g.len() >= MAX_FAIL_RULES {
            return Err(format!("too many failure rules queued (max {MAX_FAIL_RULES})"));
        }
        g.push_back(rule);
        Ok(g.len())
    }

    /// Consumes one use of the first rule matching `path`.
    pub fn take(&self, path: &str) -> Option<FailAction> {
        let mut g = self.lock();
        let idx = g.iter().position(|r| r.path.as_deref().is_none_or(|p| p == path))?;
        let r = g.get_mut(idx)?;
        let action = FailAction { status: r.status, delay_ms: r.delay_ms };
        r.count = r.count.saturating_sub(1);
        if r.count == 0 {
            g.remove(idx);
        }
        Some(action)
    }

    /// Removes every rule; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut g = self.lock();
        let n = g.len();
        g.clear();
        n
    }

    /// Number of queued rules.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no rule is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queued rules as JSON (remaining counts).
    pub fn to_json(&self) -> Vec<u8> {
        let g = self.lock();
        let v: Vec<&FailRule> = g.iter().collect();
        serde_json::to_vec(&v).unwrap_or_else(|_| b"[]".to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str, answered: u16) -> RecordInput {
        RecordInput {
            method: "POST".into(),
            path: path.into(),
            answered,
            headers: vec![("x-a".into(), "1\"2".into())],
            body_json: Some(b"{\"a\":1}".to_vec()),
            ..Default::default()
        }
    }

    #[test]
    fn the_jsonl_files_stay_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let cur = dir.path().join("payloads.jsonl");
        let old = dir.path().join("payloads.jsonl.1");
        std::fs::write(&cur, vec![b'x'; 3000]).unwrap(); // left by an earlier run
        let s = Store::new(10, Some(dir.path()), 8192).unwrap();
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        for i in 0..500 {
            s.push(&rec(&format!("/p{i}"), 202));
            assert!(size(&cur) + size(&old) <= 8192, "bound kept after record {i}");
            assert!(size(&cur) <= 4096);
        }
        let text = std::fs::read_to_string(&cur).unwrap();
        assert!(text.ends_with("\n") && text.contains("\"/p499\""), "the newest record is in the current file");
        let older = std::fs::read_to_string(&old).unwrap();
        assert!(older.starts_with('{') && !older.contains("xxxx"), "the earlier run's bytes rotated away");
        let stats: serde_json::Value = serde_json::from_slice(&s.stats_json(0)).unwrap();
        assert!(stats["jsonl_rotations"].as_u64().unwrap() >= 2, "{stats}");
        assert_eq!(stats["jsonl_write_errors"], 0);
        // A record larger than half the bound is counted, not written.
        let mut big = rec("/big", 202);
        big.body_json = Some(format!("\"{}\"", "y".repeat(5000)).into_bytes());
        s.push(&big);
        assert!(size(&cur) + size(&old) <= 8192);
        let stats: serde_json::Value = serde_json::from_slice(&s.stats_json(0)).unwrap();
        assert_eq!(stats["jsonl_dropped_too_large"], 1);
    }

    #[test]
    fn records_are_valid_json_and_bounded() {
        let s = Store::new(2, None, DEFAULT_DATA_MAX_BYTES).unwrap();
        s.push(&rec("/a", 202));
        s.push(&rec("/b", 503));
        let mut r = rec("/a", 202);
        r.body_json = None;
        r.body_raw = Some(vec![0, 1, 2]);
        s.push(&r);
        assert_eq!(s.len(), 2);
        let all: serde_json::Value = serde_json::from_slice(&s.query(&Query::default())).unwrap();
        assert_eq!(all[0]["seq"], 2);
        assert_eq!(all[1]["body_b64"], "AAEC");
        assert_eq!(all[1]["body"], serde_json::Value::Null);
        assert_eq!(all[0]["headers"]["x-a"], "1\"2");
        let q = Query { path: Some("/a".into()), ..Default::default() };
        let a: serde_json::Value = serde_json::from_slice(&s.query(&q)).unwrap();
        assert_eq!(a.as_array().unwrap().len(), 1);
        let st: serde_json::Value = serde_json::from_slice(&s.stats_json(0)).unwrap();
        assert_eq!(st["received"], 3);
        assert_eq!(st["evicted"], 1);
        assert_eq!(st["by_answered"]["202"], 2);
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let s = Store::new(0, None, DEFAULT_DATA_MAX_BYTES).unwrap();
        s.push(&rec("/a", 202));
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn fail_rules_queue_in_order() {
        let f = FailRules::default();
        f.add(FailRule { status: 503, count: 2, path: Some("/x".into()), delay_ms: 0 }).unwrap();
        f.add(FailRule { status: 500, count: 1, path: None, delay_ms: 0 }).unwrap();
        assert_eq!(f.take("/y").map(|a| a.status), Some(500));
        assert_eq!(f.take("/y"), None);
        assert_eq!(f.take("/x").map(|a| a.status), Some(503));
        assert_eq!(f.take("/x").map(|a| a.status), Some(503));
        assert_eq!(f.take("/x"), None);
        assert!(f.add(FailRule { status: 100, count: 1, path: None, delay_ms: 0 }).is_err());
        assert!(f.add(FailRule { status: 503, count: 0, path: None, delay_ms: 0 }).is_err());
        assert!(f.add(FailRule { status: 503, count: MAX_FAIL_COUNT + 1, path: None, delay_ms: 0 }).is_err());
    }
}
