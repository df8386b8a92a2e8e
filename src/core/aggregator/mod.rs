//! Aggregation with the Datadog Agent's semantics (docs/dogstatsd-compat.md).
//!
//! Pure code: shards own a [`ShardSampler`] each; at flush the closed
//! buckets are handed to one [`FlushMerger`] which renders series/sketches.

pub mod context;
pub mod footprint;
pub mod growing;
pub mod merge;
pub mod sampler;
pub mod sketch;

pub use context::{ByteBound, ContextBudget, ContextKey, KeyView};
pub use merge::{render_sketches, FlushMerger, FlushOutput, FlushSettings, HistogramAggregate};
pub use sampler::{
    bucket_start, Agg, ClosedBuckets, FlushEntry, SampleDrop, SampleKind, ShardSampler, SketchEntry, BUCKET_SECONDS,
};
