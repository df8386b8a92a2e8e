//! The pure pipeline: DogStatsD bytes in, Datadog payload bytes out.
//!
//! Nothing here does I/O, reads configuration or knows about the runtime:
//! each module takes a small settings struct built by the agent, so the
//! whole pipeline is testable and benchmarkable as plain functions.
//! Data flows `protocol` → `shard` (with `filter`) → `aggregator` →
//! `serializer`, sharing the types in `model`.

pub mod aggregator;
pub mod capture_file;
pub mod filter;
pub mod host_metadata;
pub mod host_tags;
pub mod mapper;
pub mod metric_stats;
pub mod model;
pub mod protocol;
pub mod redact;
pub mod serializer;
pub mod shard;
pub mod stream_frame;
