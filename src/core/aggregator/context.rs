//! Contexts: (metric name, host, sorted de-duplicated tags), interned per
//! shard so the hot path looks a context up without allocating.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::growing::GrowingTable;

pub use crate::core::model::ContextKey;

impl ContextKey {
    /// Name as UTF-8 (lossy) for serialization.
    pub fn name_string(&self) -> String {
        String::from_utf8_lossy(self.name()).into_owned()
    }
    /// Host as UTF-8 (lossy).
    pub fn host_string(&self) -> String {
        String::from_utf8_lossy(self.host()).into_owned()
    }
    /// Tags as UTF-8 (lossy).
    pub fn tag_strings(&self) -> Vec<String> {
        self.tags().map(|t| String::from_utf8_lossy(t).into_owned()).collect()
    }
}

/// A borrowed context, built per sample from the datagram without allocating.
pub struct KeyView<'a> {
    /// Metric name, namespace included.
    pub name: &'a [u8],
    /// Resolved host.
    pub host: &'a [u8],
    /// Sorted, de-duplicated tags.
    pub tags: &'a [&'a [u8]],
}

/// One fixed hasher seed per process so keys hash the same in every shard
/// and in the flush merger.
fn hasher_builder() -> &'static foldhash::fast::FixedState {
    static STATE: std::sync::OnceLock<foldhash::fast::FixedState> = std::sync::OnceLock::new();
    STATE.get_or_init(|| foldhash::fast::FixedState::with_seed(fastrand::u64(..)))
}

impl KeyView<'_> {
    /// Hash of name, host and tags (tags must already be sorted).
    pub fn hash(&self) -> u64 {
        let mut h = hasher_builder().build_hasher();
        h.write_usize(self.name.len());
        h.write(self.name);
        h.write_usize(self.host.len());
        h.write(self.host);
        for t in self.tags {
            h.write_usize(t.len());
            h.write(t);
        }
        h.finish()
    }

    fn matches(&self, k: &ContextKey) -> bool {
        k.name() == self.name
            && k.host() == self.host
            && k.tag_count() == self.tags.len()
            && k.tags().zip(self.tags.iter()).all(|(a, b)| a == *b)
    }

    /// Owned copy; allocates (only done for a context's first sample).
    pub fn to_key(&self, hash: u64) -> ContextKey {
        ContextKey::new(hash, self.name, self.host, self.tags.iter().copied())
    }
}

/// Per-context bookkeeping kept by a shard.
#[derive(Debug)]
pub struct ContextSlot {
    /// Shared with flush entries; cloning it is a reference-count bump.
    pub key: Arc<ContextKey>,
    /// Unix seconds of the last sample.
    pub last_seen: i64,
}

/// The memory side of [`ContextBudget`]: contexts are admitted only while
/// their estimated bytes stay under `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteBound {
    /// Bytes all live contexts together may be estimated at
    /// (`usize::MAX`: no memory bound, the estimate is still kept).
    pub max_bytes: usize,
    /// Estimated bytes of one context besides its key's payload: table,
    /// cache and bucket entries and its share of the flush peak
    /// (`footprint::per_context_bytes`).
    pub per_context_bytes: usize,
}

impl ByteBound {
    /// No memory bound and no per-context overhead (the key alone is counted).
    pub const UNBOUNDED: Self = Self { max_bytes: usize::MAX, per_context_bytes: 0 };
}

/// The node-wide bound on live contexts (`EDGESTAT_MAX_CONTEXTS`) and on
/// their estimated bytes (`EDGESTAT_MEMORY_LIMIT` less the fixed costs),
/// shared by every shard's table. Touched only when a context is created
/// or forgotten, never for a known context, so the per-datagram path stays
/// free of shared state in steady state.
#[derive(Debug)]
pub struct ContextBudget {
    live: AtomicUsize,
    max: usize,
    bytes: AtomicUsize,
    bound: ByteBound,
}

impl ContextBudget {
    /// A budget of `max` live contexts for the whole node, no byte bound.
    pub fn new(max: usize) -> Arc<Self> {
        Self::with_bytes(max, ByteBound::UNBOUNDED)
    }

    /// A budget of `max` live contexts whose estimated bytes stay within `bound`.
    pub fn with_bytes(max: usize, bound: ByteBound) -> Arc<Self> {
        Arc::new(Self { live: AtomicUsize::new(0), max, bytes: AtomicUsize::new(0), bound })
    }

    /// The bound on live contexts.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The byte bound.
    pub fn byte_bound(&self) -> ByteBound {
        self.bound
    }

    /// Live contexts over all shards.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Estimated bytes of the live contexts over all shards.
    pub fn estimated_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Estimated bytes of one context whose key holds `key_heap_bytes`
    /// ([`ContextKey::heap_bytes`]).
    pub fn context_bytes(&self, key_heap_bytes: usize) -> usize {
        key_heap_bytes + self.bound.per_context_bytes
    }

    fn try_take(&self, bytes: usize) -> Result<(), ContextError> {
        if self.live.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < self.max).then_some(n + 1)).is_err() {
            return Err(ContextError::LimitReached);
        }
        let max_bytes = self.bound.max_bytes;
        let fits = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                b.checked_add(bytes).filter(|&total| total <= max_bytes)
            })
            .is_ok();
        if !fits {
            self.live.fetch_sub(1, Ordering::Relaxed);
            return Err(ContextError::MemoryLimit);
        }
        Ok(())
    }

    fn give_back(&self, bytes: usize) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// An index entry: the low 32 bits of the key's hash beside the context
/// id, so that moving entries to a larger index reads only the index
/// itself. Dereferencing 57,000 keys to rehash them stalled the read loop
/// for 4–6 ms at 100k contexts, longer than the kernel's default socket
/// buffer lasts at 20,000 datagrams/s.
#[derive(Clone, Copy)]
struct IndexEntry {
    hash32: u32,
    id: u32,
}

impl IndexEntry {
    /// The index's hash, spread from 32 bits: hashbrown takes the bucket
    /// from the low bits and the 7-bit tag from the top bits, so both come
    /// from the stored half (good for up to 2^25 buckets).
    fn table_hash(hash32: u32) -> u64 {
        let x = u64::from(hash32);
        x | (x << 32)
    }
}

/// Bounded interning table: context id (dense `u32`) ↔ key.
pub struct ContextTable {
    /// Grows incrementally (a rehash of 100k entries would stall the read loop).
    index: GrowingTable<IndexEntry>,
    slots: Vec<Option<ContextSlot>>,
    free: Vec<u32>,
    live: usize,
    budget: Arc<ContextBudget>,
}

/// Why a context could not be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextError {
    /// `EDGESTAT_MAX_CONTEXTS` reached; the sample is dropped and counted.
    LimitReached,
    /// The context would take the estimated footprint past
    /// `EDGESTAT_MEMORY_LIMIT`; the sample is dropped and counted.
    MemoryLimit,
}

impl ContextTable {
    /// An empty table drawing its contexts from `budget`.
    pub fn new(budget: Arc<ContextBudget>) -> Self {
        Self { index: GrowingTable::default(), slots: Vec::new(), free: Vec::new(), live: 0, budget }
    }

    /// Number of live contexts.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when no context is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Finds or creates the context and marks it seen at `now`.
    pub fn resolve(&mut self, view: &KeyView<'_>, now: i64) -> Result<u32, ContextError> {
        let hash = view.hash();
        let hash32 = hash as u32;
        let slots = &self.slots;
        if let Some(&IndexEntry { id, .. }) = self.index.find(IndexEntry::table_hash(hash32), |e| {
            e.hash32 == hash32
                && slots[e.id as usize].as_ref().is_some_and(|s| s.key.key_hash() == hash && view.matches(&s.key))
        }) {
            if let Some(slot) = self.slots[id as usize].as_mut() {
                slot.last_seen = slot.last_seen.max(now);
            }
            return Ok(id);
        }
        let tag_bytes = view.tags.iter().map(|t| t.len()).sum();
        let key_bytes = ContextKey::heap_bytes_for(view.name.len(), view.host.len(), tag_bytes, view.tags.len());
        self.budget.try_take(self.budget.context_bytes(key_bytes))?;
        let slot = ContextSlot { key: Arc::new(view.to_key(hash)), last_seen: now };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert_unique(IndexEntry::table_hash(hash32), IndexEntry { hash32, id }, |e| {
            IndexEntry::table_hash(e.hash32)
        });
        self.live += 1;
        Ok(id)
    }

    /// Marks a live context seen at `now` (the fast path of a cached line).
    pub fn touch(&mut self, id: u32, now: i64) {
        if let Some(slot) = self.slots.get_mut(id as usize).and_then(Option::as_mut) {
            slot.last_seen = slot.last_seen.max(now);
        }
    }

    /// The slot of a live context.
    pub fn get(&self, id: u32) -> Option<&ContextSlot> {
        self.slots.get(id as usize).and_then(Option::as_ref)
    }

    /// Forgets every context for which `keep` returns false.
    pub fn retain(&mut self, keep: impl FnMut(u32, &ContextSlot) -> bool) {
        self.retain_ids(0, u32::MAX, keep);
    }

    /// One past the highest context id ever handed out (the id space a
    /// sweep walks).
    pub fn id_bound(&self) -> u32 {
        self.slots.len() as u32
    }

    /// [`ContextTable::retain`] over ids `from..to` only, so a sweep of a
    /// large table can be done a slice at a time; returns how many
    /// contexts were forgotten.
    pub fn retain_ids(&mut self, from: u32, to: u32, mut keep: impl FnMut(u32, &ContextSlot) -> bool) -> usize {
        let mut forgotten = 0;
        for id in from..to.min(self.slots.len() as u32) {
            let Some(slot) = self.slots[id as usize].as_ref() else { continue };
            if keep(id, slot) {
                continue;
            }
            let hash32 = slot.key.key_hash() as u32;
            let bytes = self.budget.context_bytes(slot.key.heap_bytes());
            self.index.remove(IndexEntry::table_hash(hash32), |e| e.id == id);
            self.slots[id as usize] = None;
            self.free.push(id);
            self.live -= 1;
            self.budget.give_back(bytes);
            forgotten += 1;
        }
        forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_view_same_id_and_limit() {
        let budget = ContextBudget::new(2);
        let mut t = ContextTable::new(budget.clone());
        let tags: [&[u8]; 2] = [b"a:1", b"b:2"];
        let v = KeyView { name: b"m", host: b"h", tags: &tags };
        let a = t.resolve(&v, 1).unwrap();
        assert_eq!(t.resolve(&v, 2).unwrap(), a);
        assert_eq!(t.get(a).unwrap().last_seen, 2);
        let v2 = KeyView { name: b"m", host: b"h2", tags: &tags };
        let b = t.resolve(&v2, 2).unwrap();
        assert_ne!(a, b);
        let v3 = KeyView { name: b"m3", host: b"h", tags: &[] };
        assert_eq!(t.resolve(&v3, 2), Err(ContextError::LimitReached));
        // The budget is per node: a second table cannot exceed it either.
        let mut other = ContextTable::new(budget.clone());
        assert_eq!(other.resolve(&v3, 2), Err(ContextError::LimitReached));
        t.retain(|id, _| id != a);
        assert_eq!(t.len(), 1);
        assert_eq!(budget.live(), 1);
        let c = t.resolve(&v3, 3).unwrap();
        assert_eq!(c, a, "freed id is reused");
        assert_eq!(t.resolve(&v2, 3).unwrap(), b);
    }

    /// Through the index's incremental growth (several doublings, with
    /// contexts forgotten and ids reused on the way) every live context
    /// keeps its id and nothing forgotten is found.
    #[test]
    fn ids_survive_incremental_growth_and_reuse() {
        let budget = ContextBudget::new(1_000_000);
        let mut t = ContextTable::new(budget.clone());
        let name = |i: u32| format!("m.{i}").into_bytes();
        let mut ids = std::collections::HashMap::new();
        for i in 0..60_000u32 {
            let n = name(i);
            let v = KeyView { name: &n, host: b"h", tags: &[b"t:1"] };
            ids.insert(i, t.resolve(&v, 1).unwrap());
            if i % 1000 == 999 {
                // Forget every third context created so far, mid-growth.
                let forget: std::collections::HashSet<u32> =
                    ids.iter().filter(|(k, _)| *k % 3 == 0).map(|(_, id)| *id).collect();
                t.retain(|id, _| !forget.contains(&id));
                ids.retain(|k, _| k % 3 != 0);
            }
        }
        assert_eq!(t.len(), ids.len());
        assert_eq!(budget.live(), ids.len());
        for (i, id) in &ids {
            let n = name(*i);
            let v = KeyView { name: &n, host: b"h", tags: &[b"t:1"] };
            assert_eq!(t.resolve(&v, 2).unwrap(), *id, "context {i} kept its id");
        }
        assert_eq!(t.len(), ids.len(), "re-resolving created nothing");
    }
}
