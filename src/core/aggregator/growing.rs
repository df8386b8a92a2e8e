//! Hash tables that grow without stalling their caller.
//!
//! A hashbrown table doubles by rehashing every entry at once: at 100k
//! contexts that is a pause of one to several milliseconds in the shard's
//! read loop, longer than the kernel's default socket buffer lasts at
//! 20,000 datagrams/s. These tables start a table of twice the size instead
//! and keep the full one beside it; every later insert moves a bounded
//! number of entries across, so no call pays for more than
//! [`MOVE_PER_CALL`] of them. Lookups try the new table, then the old one.

use std::hash::{BuildHasher, Hash};

use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};

/// Entries moved from the old table per insert while a growth is in
/// progress: the old table empties long before the new one fills, and a
/// step costs a few microseconds.
pub const MOVE_PER_CALL: usize = 64;

/// Below this capacity a table grows in place: rehashing it costs less than
/// the bookkeeping.
const GROW_IN_PLACE_BELOW: usize = 4096;

/// A [`HashTable`] with incremental growth. Every entry lives in exactly
/// one of the two tables.
pub struct GrowingTable<T> {
    /// Where inserts go.
    cur: HashTable<T>,
    /// The full table being emptied into `cur` (empty when not growing).
    old: HashTable<T>,
}

impl<T> Default for GrowingTable<T> {
    fn default() -> Self {
        Self { cur: HashTable::new(), old: HashTable::new() }
    }
}

impl<T> GrowingTable<T> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.cur.len() + self.old.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True while entries are being moved to a larger table.
    pub fn is_growing(&self) -> bool {
        !self.old.is_empty()
    }

    /// The entry matching `eq` under `hash`.
    #[inline]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<&T> {
        match self.cur.find(hash, &mut eq) {
            Some(v) => Some(v),
            None if self.old.is_empty() => None,
            None => self.old.find(hash, eq),
        }
    }

    /// The entry matching `eq` under `hash`, mutably.
    pub fn find_mut(&mut self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<&mut T> {
        if let Some(v) = self.cur.find_mut(hash, &mut eq) {
            return Some(v);
        }
        if self.old.is_empty() {
            return None;
        }
        self.old.find_mut(hash, eq)
    }

    /// Inserts `value` (not present yet) under `hash`.
    pub fn insert_unique(&mut self, hash: u64, value: T, hasher: impl Fn(&T) -> u64) -> &mut T {
        self.step(&hasher);
        self.cur.insert_unique(hash, value, hasher).into_mut()
    }

    /// The entry matching `eq`, inserted from `make` when absent.
    #[inline]
    pub fn find_or_insert_with(
        &mut self,
        hash: u64,
        mut eq: impl FnMut(&T) -> bool,
        make: impl FnOnce() -> T,
        hasher: impl Fn(&T) -> u64,
    ) -> &mut T {
        let mut moved = None;
        if !self.old.is_empty() || self.cur.len() == self.cur.capacity() {
            // Growth first: it may move the sought entry into `old`.
            self.step(&hasher);
            if let Ok(e) = self.old.find_entry(hash, &mut eq) {
                moved = Some(e.remove().0);
            }
        }
        match self.cur.entry(hash, eq, hasher) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => v.insert(moved.unwrap_or_else(make)).into_mut(),
        }
    }

    /// Takes the entry matching `eq` out.
    pub fn remove(&mut self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<T> {
        if let Ok(e) = self.cur.find_entry(hash, &mut eq) {
            return Some(e.remove().0);
        }
        if self.old.is_empty() {
            return None;
        }
        self.old.find_entry(hash, eq).ok().map(|e| e.remove().0)
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.cur.iter().chain(self.old.iter())
    }

    /// Removes every entry, keeping the new table's capacity (the old
    /// table of a growth in progress is given back).
    pub fn clear(&mut self) {
        self.cur.clear();
        self.old = HashTable::new();
    }

    /// One bounded step of growth before an insert: moves up to
    /// [`MOVE_PER_CALL`] entries to the new table, or starts a growth when
    /// the next insert would rehash.
    fn step(&mut self, hasher: &impl Fn(&T) -> u64) {
        if !self.old.is_empty() {
            self.move_some(MOVE_PER_CALL, hasher);
        }
        let cap = self.cur.capacity();
        if self.cur.len() < cap || cap < GROW_IN_PLACE_BELOW {
            return;
        }
        if !self.old.is_empty() {
            // Unreachable with MOVE_PER_CALL > 1 (the old table empties
            // after len/MOVE_PER_CALL inserts, the new one fills after
            // len); finishing the move keeps the table right if it happens.
            self.move_some(usize::MAX, hasher);
        }
        let bigger = HashTable::with_capacity(cap.saturating_mul(2));
        self.old = std::mem::replace(&mut self.cur, bigger);
    }

    fn move_some(&mut self, n: usize, hasher: &impl Fn(&T) -> u64) {
        // `ExtractIf` stops where it is dropped: `take` bounds the work.
        for v in self.old.extract_if(|_| true).take(n) {
            self.cur.insert_unique(hasher(&v), v, hasher);
        }
        if self.old.is_empty() {
            // Give the emptied table's memory back now.
            self.old = HashTable::new();
        }
    }
}

/// A key → value map over a [`GrowingTable`].
pub struct GrowingMap<K, V> {
    table: GrowingTable<(K, V)>,
    hasher: DefaultHashBuilder,
}

impl<K, V> Default for GrowingMap<K, V> {
    fn default() -> Self {
        Self { table: GrowingTable::default(), hasher: DefaultHashBuilder::default() }
    }
}

/// Keys are small and `Copy` (context ids, raw-line hashes), which keeps
/// lookups and inserts free of borrows of the key.
impl<K: Copy + Eq + Hash, V> GrowingMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The value of `key`.
    #[inline]
    pub fn get(&self, key: &K) -> Option<&V> {
        self.table.find(self.hasher.hash_one(key), |(k, _)| k == key).map(|(_, v)| v)
    }

    /// True when `key` has a value.
    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Sets the value of `key`.
    pub fn insert(&mut self, key: K, value: V) {
        let hash = self.hasher.hash_one(key);
        if let Some((_, v)) = self.table.find_mut(hash, |(k, _)| *k == key) {
            *v = value;
            return;
        }
        let hasher = &self.hasher;
        self.table.insert_unique(hash, (key, value), |(k, _)| hasher.hash_one(k));
    }

    /// The value of `key`, created by `make` when absent.
    #[inline]
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(key);
        let (_, v) =
            self.table.find_or_insert_with(hash, |(k, _)| *k == key, || (key, make()), |(k, _)| hasher.hash_one(k));
        v
    }

    /// Takes the value of `key` out.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.table.remove(self.hasher.hash_one(key), |(k, _)| k == key).map(|(_, v)| v)
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.table.iter().map(|(k, _)| k)
    }

    /// Removes every entry (see [`GrowingTable::clear`]).
    pub fn clear(&mut self) {
        self.table.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_map_through_several_growths() {
        let mut g: GrowingMap<u32, u64> = GrowingMap::new();
        let mut reference = std::collections::HashMap::new();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut steps_while_growing = 0;
        for i in 0..300_000u32 {
            // Keys from a range that widens, so the map keeps growing.
            let k = rng.u32(..(i / 2).max(1));
            match i % 7 {
                0 => assert_eq!(g.remove(&k), reference.remove(&k)),
                1 => {
                    g.insert(k, u64::from(i));
                    reference.insert(k, u64::from(i));
                }
                _ => {
                    *g.get_or_insert_with(k, || 0) += 1;
                    *reference.entry(k).or_insert(0) += 1;
                }
            }
            if g.table.is_growing() {
                steps_while_growing += 1;
            }
            assert_eq!(g.len(), reference.len());
            assert_eq!(g.get(&k), reference.get(&k));
        }
        assert!(steps_while_growing > 0, "the map grew incrementally");
        let mut keys: Vec<u32> = g.keys().copied().collect();
        keys.sort_unstable();
        let mut want: Vec<u32> = reference.keys().copied().collect();
        want.sort_unstable();
        assert_eq!(keys, want, "every key once");
        assert!(reference.iter().all(|(k, v)| g.get(k) == Some(v)));
        g.clear();
        assert!(g.is_empty() && g.get(&1).is_none());
    }

    #[test]
    fn no_insert_moves_more_than_its_share_or_rehashes() {
        let mut g: GrowingMap<u32, u32> = GrowingMap::new();
        let mut growths = 0;
        for k in 0..200_000u32 {
            let old_before = g.table.old.len();
            let cap_before = g.table.cur.capacity();
            g.insert(k, k);
            if old_before > 0 {
                assert!(old_before - g.table.old.len() <= MOVE_PER_CALL);
                assert_eq!(g.table.cur.capacity(), cap_before, "no rehash while growing");
            } else if g.table.is_growing() {
                growths += 1;
            }
        }
        assert!(growths >= 4, "grew {growths} times");
        assert_eq!(g.len(), 200_000);
        assert!((0..200_000u32).all(|k| g.get(&k) == Some(&k)));
    }
}
