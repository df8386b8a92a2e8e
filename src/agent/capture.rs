//! Traffic capture (`edgestat capture`, the Agent's `dogstatsd-capture`):
//! while a capture runs, every shard copies each datagram it receives (UDP,
//! Unix datagram, Unix stream frame) with its receive time into its own
//! bounded buffer; a writer thread swaps those buffers out every
//! [`SWAP_INTERVAL`], orders the records by time and appends them to the
//! file (format: [`crate::capture_file`], docs/capture-format.md).
//!
//! Cheap on the shard: one relaxed load per datagram when idle; while
//! capturing, an uncontended per-shard lock and a copy into a preallocated
//! buffer, never an allocation. A full buffer drops the record from the
//! capture (counted), never the datagram. One capture at a time, bounded in
//! bytes (`EDGESTAT_CAPTURE_MAX_BYTES`) and duration
//! (`EDGESTAT_CAPTURE_MAX_DURATION`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::core::capture_file::{decode_message, encode_record, record_len_bound, HEADER, TRAILER};

/// How often the writer empties the shard buffers.
pub const SWAP_INTERVAL: Duration = Duration::from_millis(50);

/// Capture limits and defaults.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    /// `dogstatsd_capture_path`: directory used when the request names none.
    pub default_dir: PathBuf,
    /// `EDGESTAT_CAPTURE_MAX_BYTES`: uncompressed bytes written per capture.
    pub max_bytes: u64,
    /// `EDGESTAT_CAPTURE_MAX_DURATION`: longest capture accepted.
    pub max_duration: Duration,
    /// `EDGESTAT_CAPTURE_BUFFER_BYTES`: per-shard buffer between swaps.
    pub shard_buffer_bytes: usize,
}

/// A capture request (`POST /v1/capture`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct CaptureRequest {
    /// Duration such as `30s`.
    pub duration: String,
    /// A directory (a `datadog-capture-<unix>` file is created in it) or a
    /// file path; empty: the default directory.
    #[serde(default)]
    pub path: String,
    /// zstd-compress the file.
    #[serde(default)]
    pub compress: bool,
}

/// Why a capture cannot start (answered 400/409/500 by the API).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Another capture is running.
    #[error("a capture is already running (until it ends: {0})")]
    Busy(String),
    /// Bad request value.
    #[error("{0}")]
    Invalid(String),
    /// The file cannot be created.
    #[error("cannot create the capture file {path}: {source}")]
    Io {
        /// Path tried.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
}

/// What `GET /v1/capture` and `edgestat status` show.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CaptureStatus {
    /// A capture is being written.
    pub running: bool,
    /// File of the current or last capture.
    pub path: Option<String>,
    /// Records written.
    pub datagrams: u64,
    /// Uncompressed bytes written (header and records).
    pub bytes: u64,
    /// Datagrams not captured: a shard buffer was full between two swaps.
    pub dropped_buffer_full: u64,
    /// Datagrams not captured: `EDGESTAT_CAPTURE_MAX_BYTES` reached (the capture stops).
    pub dropped_size_limit: u64,
    /// Why the last capture ended (`duration`, `size_limit`, `shutdown`, or an error).
    pub ended: Option<String>,
    /// Captures started since the agent started.
    pub captures: u64,
}

#[derive(Default)]
struct Slot {
    buf: Vec<u8>,
    open: bool,
    dropped: u64,
}

/// Shared by the shards (recording), the API (start, status) and the writer.
pub struct CaptureHub {
    active: AtomicBool,
    slots: Vec<Mutex<Slot>>,
    status: Mutex<CaptureStatus>,
    stop: AtomicBool,
    settings: CaptureSettings,
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

impl CaptureHub {
    /// A hub for `shards` shards.
    pub fn new(shards: usize, settings: CaptureSettings) -> Arc<Self> {
        Arc::new(Self {
            active: AtomicBool::new(false),
            slots: (0..shards.max(1)).map(|_| Mutex::new(Slot::default())).collect(),
            status: Mutex::new(CaptureStatus::default()),
            stop: AtomicBool::new(false),
            settings,
        })
    }

    /// Records one datagram received by `shard` (a no-op unless capturing).
    #[inline]
    pub fn record(&self, shard: usize, payload: &[u8]) {
        if !self.active.load(Ordering::Relaxed) {
            return;
        }
        self.record_slow(shard, payload);
    }

    #[cold]
    fn record_slow(&self, shard: usize, payload: &[u8]) {
        let ts = now_ns();
        let Some(slot) = self.slots.get(shard) else {
            return;
        };
        let Ok(mut s) = slot.lock() else { return };
        if !s.open {
            return;
        }
        if s.buf.len() + record_len_bound(payload.len()) > s.buf.capacity() {
            s.dropped += 1;
            return;
        }
        encode_record(&mut s.buf, ts, payload);
    }

    /// The current or last capture.
    pub fn status(&self) -> CaptureStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Ends a running capture early (agent shutdown); the file is completed.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Starts a capture; returns the file path. The capture ends by itself.
    pub fn start(self: &Arc<Self>, req: &CaptureRequest) -> Result<PathBuf, CaptureError> {
        let duration = crate::agent::config::parse_duration("duration", &req.duration)
            .map_err(|e| CaptureError::Invalid(e.to_string()))?;
        if duration.is_zero() || duration > self.settings.max_duration {
            return Err(CaptureError::Invalid(format!(
                "duration must be above 0 and at most {}s (EDGESTAT_CAPTURE_MAX_DURATION)",
                self.settings.max_duration.as_secs()
            )));
        }
        let mut st = self.status.lock().map_err(|_| CaptureError::Invalid("capture state unavailable".into()))?;
        if st.running {
            return Err(CaptureError::Busy(st.path.clone().unwrap_or_default()));
        }
        let path = self.file_path(&req.path, req.compress);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| CaptureError::Io { path: path.display().to_string(), source: e })?;
        for slot in &self.slots {
            if let Ok(mut s) = slot.lock() {
                s.buf = Vec::with_capacity(self.settings.shard_buffer_bytes);
                s.open = true;
                s.dropped = 0;
            }
        }
        *st = CaptureStatus {
            running: true,
            path: Some(path.display().to_string()),
            captures: st.captures + 1,
            ..CaptureStatus::default()
        };
        drop(st);
        self.stop.store(false, Ordering::Release);
        self.active.store(true, Ordering::Release);
        let hub = self.clone();
        let compress = req.compress;
        let spawned = std::thread::Builder::new().name("edgestat-capture".into()).spawn(move || {
            let ended = match hub.write(file, compress, duration) {
                Ok(reason) => reason.to_string(),
                Err(e) => format!("error: {e}"),
            };
            hub.finish(&ended);
        });
        if let Err(e) = spawned {
            self.finish(&format!("error: {e}"));
            return Err(CaptureError::Io { path: path.display().to_string(), source: e });
        }
        tracing::info!(path = %path.display(), duration_s = duration.as_secs_f64(), compress, "traffic capture started");
        Ok(path)
    }

    fn file_path(&self, requested: &str, compress: bool) -> PathBuf {
        let name = format!("datadog-capture-{}{}", now_ns() / 1_000_000_000, if compress { ".zstd" } else { "" });
        let p = if requested.is_empty() { self.settings.default_dir.clone() } else { PathBuf::from(requested) };
        if p.is_dir() || requested.is_empty() {
            let _ = std::fs::create_dir_all(&p);
            p.join(name)
        } else {
            p
        }
    }

    /// Closes every slot and records why the capture ended.
    fn finish(&self, ended: &str) {
        self.active.store(false, Ordering::Release);
        let mut dropped = 0;
        for slot in &self.slots {
            if let Ok(mut s) = slot.lock() {
                s.open = false;
                dropped += s.dropped;
                s.buf = Vec::new();
            }
        }
        if let Ok(mut st) = self.status.lock() {
            st.running = false;
            st.dropped_buffer_full += dropped;
            st.ended = Some(ended.to_string());
            tracing::info!(
                path = st.path.as_deref().unwrap_or(""),
                datagrams = st.datagrams,
                bytes = st.bytes,
                dropped_buffer_full = st.dropped_buffer_full,
                dropped_size_limit = st.dropped_size_limit,
                ended,
                "traffic capture finished"
            );
        }
    }

    /// The writer loop; returns why it ended.
    fn write(&self, file: std::fs::File, compress: bool, duration: Duration) -> std::io::Result<&'static str> {
        let buffered = std::io::BufWriter::with_capacity(1 << 16, file);
        let mut out: Box<dyn Write> = if compress {
            Box::new(zstd::stream::Encoder::new(buffered, 3)?.auto_finish())
        } else {
            Box::new(buffered)
        };
        out.write_all(&HEADER)?;
        let mut written = HEADER.len() as u64;
        let mut spares: Vec<Vec<u8>> =
            (0..self.slots.len()).map(|_| Vec::with_capacity(self.settings.shard_buffer_bytes)).collect();
        let mut order: Vec<(i64, usize, usize, usize)> = Vec::new();
        let end = Instant::now() + duration;
        let reason = loop {
            let last = Instant::now() >= end || self.stop.load(Ordering::Acquire);
            if last {
                // No record enters a slot after this: each is closed under its lock.
                self.active.store(false, Ordering::Release);
            }
            for (slot, spare) in self.slots.iter().zip(spares.iter_mut()) {
                spare.clear();
                if let Ok(mut s) = slot.lock() {
                    std::mem::swap(&mut s.buf, spare);
                    if last {
                        s.open = false;
                    }
                }
            }
            order.clear();
            for (i, chunk) in spares.iter().enumerate() {
                let mut pos = 0;
                while pos + 4 <= chunk.len() {
                    let len = u32::from_le_bytes([chunk[pos], chunk[pos + 1], chunk[pos + 2], chunk[pos + 3]]) as usize;
                    let ts = decode_message(&chunk[pos + 4..pos + 4 + len]).map(|r| r.timestamp_ns).unwrap_or(0);
                    order.push((ts, i, pos, pos + 4 + len));
                    pos += 4 + len;
                }
            }
            order.sort_by_key(|r| r.0);
            let mut full = false;
            let (mut n, mut over) = (0u64, 0u64);
            for &(_, i, a, b) in &order {
                if full || written + (b - a) as u64 + TRAILER.len() as u64 > self.settings.max_bytes {
                    full = true;
                    over += 1;
                    continue;
                }
                out.write_all(&spares[i][a..b])?;
                written += (b - a) as u64;
                n += 1;
            }
            if let Ok(mut st) = self.status.lock() {
                st.datagrams += n;
                st.bytes = written;
                st.dropped_size_limit += over;
            }
            if full {
                self.active.store(false, Ordering::Release);
                break "size_limit";
            }
            if last {
                break if self.stop.load(Ordering::Acquire) { "shutdown" } else { "duration" };
            }
            std::thread::sleep(SWAP_INTERVAL.min(end.saturating_duration_since(Instant::now())));
        };
        out.write_all(&TRAILER)?;
        out.flush()?;
        if let Ok(mut st) = self.status.lock() {
            st.bytes = written + TRAILER.len() as u64;
        }
        Ok(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_writes_every_datagram_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let hub = CaptureHub::new(
            2,
            CaptureSettings {
                default_dir: dir.path().into(),
                max_bytes: 1 << 20,
                max_duration: Duration::from_secs(60),
                shard_buffer_bytes: 1 << 16,
            },
        );
        hub.record(0, b"ignored: not capturing");
        let path =
            hub.start(&CaptureRequest { duration: "300ms".into(), path: String::new(), compress: false }).unwrap();
        assert!(matches!(
            hub.start(&CaptureRequest { duration: "1s".into(), path: String::new(), compress: false }),
            Err(CaptureError::Busy(_))
        ));
        for i in 0..100 {
            hub.record(i % 2, format!("m{i}:1|c").as_bytes());
        }
        while hub.status().running {
            std::thread::sleep(Duration::from_millis(20));
        }
        let bytes = std::fs::read(&path).unwrap();
        let recs = crate::core::capture_file::records(&bytes).unwrap();
        assert_eq!(recs.len(), 100);
        assert!(recs.windows(2).all(|w| w[0].timestamp_ns <= w[1].timestamp_ns));
        let st = hub.status();
        assert_eq!((st.datagrams, st.bytes, st.ended.as_deref()), (100, bytes.len() as u64, Some("duration")));
    }
}
