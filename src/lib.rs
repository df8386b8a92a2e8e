//! edgestat: a thread-per-core DogStatsD agent that aggregates, serializes
//! and forwards exactly like the Datadog Agent.
//!
//! Pure layers (no runtime, no I/O): [`protocol`], [`aggregator`],
//! [`serializer`], [`model`]. I/O layers: [`runtime`] (glommio shards),
//! [`flusher`], [`forwarder`], [`intake`], [`app`].
#![deny(missing_docs)]

pub mod aggregator;
pub mod api;
pub mod app;
pub mod bench;
pub mod config;
pub mod filter;
pub mod flusher;
pub mod forwarder;
pub mod hostname;
pub mod http_server;
pub mod intake;
pub mod logging;
pub mod model;
pub mod orchestrator;
pub mod protocol;
pub mod runtime;
pub mod serializer;
pub mod shard;
pub mod telemetry;
