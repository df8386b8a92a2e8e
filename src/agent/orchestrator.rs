//! Orchestrator payloads: the agent-payload process-message framing, the
//! Agent's orchestrator headers and the sender thread that owns the
//! separate orchestrator forwarder (the Agent runs a second forwarder for
//! the orchestrator host too).
//!
//! Framing: 16-byte header, version 3, encoding **4** (a standard zstd
//! frame of the protobuf body). The Agent writes encoding 2 (legacy
//! pre-1.0 zstd), which no maintained Rust zstd can produce; agent-payload's
//! decoder accepts 4. The zstd frame is produced by the
//! same streaming [`PayloadBuilder`] every other payload kind uses.
//!
//! Every message becomes exactly one payload: orchestrator messages are
//! already chunked by their producer, the Agent does not re-cut them.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::agent::config::AGENT_VERSION;
use crate::agent::forwarder::{Forwarder, Payload};
use crate::core::serializer::{AddError, Compression, Limits, PayloadBuilder};

/// Process-message header length.
pub const HEADER_LEN: usize = 16;
/// Header version written (`MessageV3`).
pub const MESSAGE_VERSION: u8 = 3;
/// Encoding written: zstd 1.x frame of the protobuf body.
pub const ENCODING_ZSTD_PB: u8 = 4;
/// `CollectorManifest` message type id, the default for manifests.
pub const TYPE_MANIFEST: u8 = 80;

/// Path of orchestrator metadata (current endpoint).
pub const PATH_METADATA: &str = "/api/v2/orch";
/// Path of orchestrator metadata with `use_legacy_endpoint: true`.
pub const PATH_METADATA_LEGACY: &str = "/api/v1/orchestrator";
/// Path of orchestrator manifests.
pub const PATH_MANIFESTS: &str = "/api/v2/orchmanif";

/// Whether `t` is an orchestrator metadata message type (agent-payload
/// message type ids).
pub fn is_metadata_type(t: u8) -> bool {
    matches!(t, 41..=52 | 54..=59 | 61 | 83..=88 | 200)
}

/// Whether `t` is a manifest message type (80, 81, 82).
pub fn is_manifest_type(t: u8) -> bool {
    matches!(t, 80..=82)
}

/// Why a message could not be framed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Larger than the limits allow.
    #[error("message too large: {0} bytes")]
    TooLarge(usize),
    /// zstd failed.
    #[error("compression failed: {0}")]
    Compress(String),
}

/// Frames protobuf bodies as process messages. Long-lived: the zstd context
/// and buffers are reused for every message.
#[derive(Debug)]
pub struct ProcessMessageEncoder {
    builder: PayloadBuilder,
    max_body_bytes: usize,
}

impl ProcessMessageEncoder {
    /// An encoder accepting bodies up to `max_body_bytes` (the API limit).
    pub fn new(max_body_bytes: usize) -> Result<Self, crate::core::serializer::CompressError> {
        let mut builder = PayloadBuilder::new(Compression::Zstd { level: 1 })?;
        // Room for the worst-case zstd expansion of the largest accepted
        // body: messages are never cut, only refused when over the API limit.
        let bound = Compression::Zstd { level: 1 }.bound(max_body_bytes).saturating_add(4096);
        builder.configure(&[], &[], &[], Limits { max_compressed: bound, max_uncompressed: bound, max_weight: None });
        Ok(Self { builder, max_body_bytes })
    }

    /// Header + zstd(body) for message type `msg_type`.
    pub fn encode(&mut self, msg_type: u8, body: &[u8]) -> Result<Bytes, EncodeError> {
        if body.len() > self.max_body_bytes {
            return Err(EncodeError::TooLarge(body.len()));
        }
        self.builder.discard();
        match self.builder.add_item(body, 0) {
            Ok(()) => {}
            Err(AddError::Compress(e)) => return Err(EncodeError::Compress(e.to_string())),
            Err(_) => {
                self.builder.discard();
                return Err(EncodeError::TooLarge(body.len()));
            }
        }
        let p = self.builder.close().map_err(|e| EncodeError::Compress(e.to_string()))?;
        let mut out = BytesMut::with_capacity(HEADER_LEN + p.body.len());
        out.put_u8(MESSAGE_VERSION);
        out.put_u8(ENCODING_ZSTD_PB);
        out.put_u8(msg_type);
        out.put_u8(0); // subscription id
        out.put_i32_le(0); // org id
        out.put_i64_le(0); // timestamp (the Agent leaves it 0)
        out.extend_from_slice(&p.body);
        Ok(out.freeze())
    }
}

/// The Agent's orchestrator payload headers (no `Content-Encoding`: the
/// body carries its own zstd). `X-DD-Agent-Attempts` starts at `1`; the
/// forwarder rewrites it on every retry.
pub fn headers(hostname: &str, cluster_id: &str, now_unix: i64) -> Vec<(&'static str, String)> {
    vec![
        ("X-Dd-Hostname", hostname.to_string()),
        ("X-Dd-Orchestrator-ClusterID", cluster_id.to_string()),
        ("X-DD-Agent-Timestamp", now_unix.to_string()),
        ("DD-EVP-ORIGIN", "agent".to_string()),
        ("DD-EVP-ORIGIN-VERSION", AGENT_VERSION.to_string()),
        ("Content-Type", "application/x-protobuf".to_string()),
        ("X-DD-Agent-Attempts", "1".to_string()),
    ]
}

/// Why a payload was not handed to the orchestrator forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The bounded queue is full.
    Full,
    /// The sender thread is gone (shutting down).
    Closed,
}

/// Hands payloads to the orchestrator forwarder on its own thread, so the
/// API and the flusher never wait on the forwarder's backpressure.
pub struct OrchestratorSender {
    tx: Sender<Payload>,
    /// Dropped to stop the thread (it waits on this and the queue, no timer).
    stop: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// A cloneable, non-blocking way into the orchestrator sender.
#[derive(Clone)]
pub struct OrchestratorQueue {
    tx: Sender<Payload>,
}

impl OrchestratorQueue {
    /// Queues without waiting.
    pub fn try_send(&self, p: Payload) -> Result<(), SendError> {
        self.tx.try_send(p).map_err(|e| match e {
            TrySendError::Full(_) => SendError::Full,
            TrySendError::Disconnected(_) => SendError::Closed,
        })
    }

    /// Queues, waiting at most `wait` for room.
    pub fn send_timeout(&self, p: Payload, wait: Duration) -> Result<(), SendError> {
        self.tx.send_timeout(p, wait).map_err(|e| match e {
            crossbeam_channel::SendTimeoutError::Timeout(_) => SendError::Full,
            crossbeam_channel::SendTimeoutError::Disconnected(_) => SendError::Closed,
        })
    }
}

impl OrchestratorSender {
    /// Starts the thread owning `forwarder`; `capacity` bounds the queue.
    pub fn start(forwarder: Forwarder, capacity: usize, shutdown_timeout: Duration) -> std::io::Result<Self> {
        let (tx, rx): (Sender<Payload>, Receiver<Payload>) = crossbeam_channel::bounded(capacity.max(1));
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new().name("edgestat-orchestrator".into()).spawn(move || {
            loop {
                crossbeam_channel::select! {
                    recv(rx) -> p => match p {
                        Ok(p) => forwarder.submit(p),
                        Err(_) => break,
                    },
                    recv(stopped) -> _ => break,
                }
            }
            // Whatever was queued before the stop still goes out.
            while let Ok(p) = rx.try_recv() {
                forwarder.submit(p);
            }
            drop(rx);
            forwarder.shutdown(shutdown_timeout);
        })?;
        Ok(Self { tx, stop, thread })
    }

    /// A queue handle for producers.
    pub fn queue(&self) -> OrchestratorQueue {
        OrchestratorQueue { tx: self.tx.clone() }
    }

    /// Call after the API is closed and the final flush queued its
    /// manifests: delivers what is queued, waits for the forwarder (bounded
    /// by the shutdown timeout), joins. A producer that still sends later
    /// gets [`SendError::Closed`] (the API answers 503), never a silent loss.
    pub fn shutdown(self) {
        drop(self.stop);
        drop(self.tx);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_zstd_body() {
        let mut enc = ProcessMessageEncoder::new(4 << 20).unwrap();
        let body = b"\x12\x04uid1\x18\x01".repeat(50);
        let m = enc.encode(41, &body).unwrap();
        assert_eq!(&m[..HEADER_LEN], &[3, 4, 41, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(zstd::stream::decode_all(&m[HEADER_LEN..]).unwrap(), body);
        // The encoder is reusable.
        let m2 = enc.encode(80, b"\x0a\x01c").unwrap();
        assert_eq!(m2[2], 80);
        assert_eq!(zstd::stream::decode_all(&m2[HEADER_LEN..]).unwrap(), b"\x0a\x01c");
        assert!(matches!(enc.encode(41, &vec![0u8; (4 << 20) + 1]), Err(EncodeError::TooLarge(_))));
    }

    #[test]
    fn type_ranges() {
        assert!(is_metadata_type(41) && is_metadata_type(200) && is_metadata_type(88));
        assert!(!is_metadata_type(80) && !is_metadata_type(12) && !is_metadata_type(53));
        assert!(is_manifest_type(81) && !is_manifest_type(41));
    }
}
