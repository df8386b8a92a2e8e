//! The estimated memory of one context, for the byte side of
//! [`ContextBudget`](super::ContextBudget): derived from the sizes of the
//! structures a context occupies, so it follows the code when they change.
//!
//! The estimate is an upper bound on live bytes in steady state, not RSS:
//! tables are charged as if just grown (twice their entries), and each
//! context pays its share of the flush peak (its shard flush entry, the
//! merger's index, zero-fill record and rendered series). What it leaves
//! out, per sample rather than per context: histogram samples, set members
//! and sketch bins, which grow with the values received in a bucket.

use std::mem::size_of;

use super::context::ContextSlot;
use super::merge::COUNTER_STATE_BYTES;
use super::sampler::{Agg, FlushEntry, RawKey};
use super::sketch::Sketch;
use crate::core::model::{ContextKey, Point, Series};

/// Bytes the allocator adds to each allocation (glibc: an 8-byte header
/// rounded to 16-byte chunks).
pub const ALLOC_OVERHEAD_BYTES: usize = 16;

/// Open buckets per context in steady state: the current one and the one
/// closing at the next flush.
const OPEN_BUCKETS: usize = 2;

/// Bytes per entry of a hashbrown table holding `entry` bytes, just after
/// it grew: one control byte per slot, load factor 7/8 halved by the growth.
const fn table_entry(entry: usize) -> usize {
    (entry + 1) * 16 / 7
}

/// Bytes per element of a vector that grows by doubling, just after it grew.
const fn vec_entry(elem: usize) -> usize {
    elem * 2
}

/// The shared key: the `Arc` block (two counts + the key) and the data
/// block's allocator overhead (the data itself is charged by length).
pub const KEY_BYTES: usize = 2 * size_of::<usize>() + size_of::<ContextKey>() + 2 * ALLOC_OVERHEAD_BYTES;

/// The shard's interning table: index entry plus slot.
pub const TABLE_BYTES: usize = table_entry(2 * size_of::<u32>()) + vec_entry(size_of::<Option<ContextSlot>>());

/// One raw-line cache entry (a context reached by one tag order).
pub const RAW_CACHE_BYTES: usize = table_entry(size_of::<(RawKey, u32)>());

/// The context's aggregate in each open bucket (the larger of a plain
/// aggregate and a sketch, as the kind is not known when admitting).
pub const BUCKET_BYTES: usize = OPEN_BUCKETS * table_entry(max(size_of::<(u32, Agg)>(), size_of::<(u32, Sketch)>()));

/// The context's share of the flush peak: its shard flush entry, the
/// merger's grouping (index, head, chain), its zero-fill record and one
/// rendered series with one point. The encoded bytes are not charged per
/// context: compressed payloads wait in the forwarder window and the
/// builder's buffers are bounded by the payload limits, both fixed costs.
pub const FLUSH_BYTES: usize = vec_entry(size_of::<FlushEntry>())
    + table_entry(size_of::<(u32, u32)>())
    + 2 * size_of::<u32>()
    + table_entry(COUNTER_STATE_BYTES)
    + vec_entry(size_of::<Series>())
    + size_of::<Point>()
    + ALLOC_OVERHEAD_BYTES;

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Estimated bytes of one context besides its key's payload
/// ([`ContextKey::heap_bytes`]).
pub const fn per_context_bytes() -> usize {
    KEY_BYTES + TABLE_BYTES + RAW_CACHE_BYTES + BUCKET_BYTES + FLUSH_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::aggregator::{ByteBound, ContextBudget, KeyView, SampleDrop, SampleKind, ShardSampler};

    #[test]
    fn constants_follow_the_struct_sizes() {
        // A layout change moves the estimate with it; this pins the order
        // of magnitude the docs quote (a few hundred bytes).
        let per = per_context_bytes();
        assert!(per > size_of::<FlushEntry>() + size_of::<Series>(), "{per}");
        assert!(per < 2048, "{per}");
    }

    #[test]
    fn admission_stops_at_the_byte_bound_and_counts_memory_limit() {
        let tags: [&[u8]; 2] = [b"env:prod", b"service:web"];
        let key_bytes = ContextKey::heap_bytes_for(b"metric.0".len(), 1, 19, 2);
        let per = per_context_bytes();
        let room = 10;
        let budget =
            ContextBudget::with_bytes(1000, ByteBound { max_bytes: room * (key_bytes + per), per_context_bytes: per });
        let mut s = ShardSampler::new(budget.clone());
        let mut refused = 0;
        for i in 0..15 {
            let name = format!("metric.{i}");
            let v = KeyView { name: name.as_bytes(), host: b"h", tags: &tags };
            match s.add(&v, SampleKind::Counter, 1.0, None, 1.0, 100, 0) {
                Ok(()) => {}
                Err(SampleDrop::MemoryLimit) => refused += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(s.context_count(), room, "exactly the contexts that fit");
        assert_eq!(refused, 5);
        assert_eq!(budget.live(), room);
        assert_eq!(budget.estimated_bytes(), room * (key_bytes + per));
        // A known context keeps working at the limit.
        let v = KeyView { name: b"metric.0", host: b"h", tags: &tags };
        assert_eq!(s.add(&v, SampleKind::Counter, 1.0, None, 1.0, 100, 0), Ok(()));
        // Forgotten contexts give their bytes back, and new ones fit again.
        let (mut m, mut k) = (Vec::new(), Vec::new());
        s.take_closed(200, true, 200, 1, &mut m, &mut k);
        assert_eq!(budget.live(), 0);
        assert_eq!(budget.estimated_bytes(), 0);
        let v = KeyView { name: b"metric.9", host: b"h", tags: &tags };
        assert_eq!(s.add(&v, SampleKind::Counter, 1.0, None, 1.0, 300, 0), Ok(()));
    }
}
