//! edgestat: a thread-per-core DogStatsD agent that aggregates, serializes
//! and forwards exactly like the Datadog Agent.
//!
//! Three layers, each importing only the ones before it:
//!
//! 1. [`core`]: the pure pipeline — parse a datagram, aggregate it in a
//!    shard, merge shards at a flush, encode payloads. No I/O, no runtime,
//!    no configuration reader; every module takes its own settings struct.
//! 2. [`agent`]: the `edgestat run` process — configuration, glommio shards
//!    and sockets, the flusher, forwarders, local API and telemetry.
//! 3. [`tools`]: the other commands — the local intake and the benchmark.
//!
//! `tests/layers.rs` fails the build's tests when an import breaks this order
//! or creates a cycle between modules.
#![deny(missing_docs)]

pub mod agent;
pub mod core;
pub mod tools;
