//! The flushed data model: what the aggregator hands to the serializer.
//!
//! These types are the boundary between aggregation (pure) and encoding
//! (pure); both sides depend on this module and on nothing of each other.

use std::borrow::Cow;
use std::sync::Arc;

/// Series type as the intake knows it (v2 `MetricType` enum values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// Internal monotonic count (e.g. `datadog.agent.started`).
    Count = 1,
    /// Per-second rate; DogStatsD counters are flushed as this.
    Rate = 2,
    /// Last value / computed aggregate.
    Gauge = 3,
}

impl MetricType {
    /// The v1 JSON `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Count => "count",
            MetricType::Rate => "rate",
            MetricType::Gauge => "gauge",
        }
    }
}

/// Where a series came from; written as v2 `Metadata.origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Aggregated DogStatsD traffic: product 10, category 10, service 0.
    DogStatsD,
    /// The Agent's own series and the no-aggregation pipeline: product 10, category 0.
    Internal,
    /// Internal and no-index (v2 origin field 3 = 9; skipped by v1 JSON).
    InternalNoIndex,
}

/// One `[timestamp, value]` pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Unix seconds.
    pub timestamp: i64,
    /// Never NaN or infinite: the aggregator rejects those.
    pub value: f64,
}

/// The identity of an aggregated context. Stored as raw bytes: the Agent
/// takes names and tags verbatim, and invalid UTF-8 is only made lossy when
/// serialized. Lives here so flushed series can share it with the shard
/// instead of copying it into owned strings.
#[derive(PartialEq, Eq)]
pub struct ContextKey {
    /// Precomputed hash of name, host and tags.
    hash: u64,
    /// One allocation per context instead of one per tag (memory at 100k
    /// contexts was dominated by small allocations): a header of
    /// little-endian `u32`s — tag count, then the end offsets of name,
    /// host and each tag within the payload — followed by the payload,
    /// the name, host and tags back to back.
    data: Box<[u8]>,
}

const WORD: usize = std::mem::size_of::<u32>();

impl ContextKey {
    /// Builds a key from its parts; `tags` must already be sorted and
    /// de-duplicated. Lengths are bounded by the datagram size, far below
    /// `u32::MAX`.
    pub fn new<'a>(hash: u64, name: &[u8], host: &[u8], tags: impl ExactSizeIterator<Item = &'a [u8]> + Clone) -> Self {
        let n = tags.len();
        let payload = name.len() + host.len() + tags.clone().map(<[u8]>::len).sum::<usize>();
        let mut data = Vec::with_capacity(WORD * (3 + n) + payload);
        data.extend_from_slice(&(n as u32).to_le_bytes());
        let mut end = name.len();
        data.extend_from_slice(&(end as u32).to_le_bytes());
        end += host.len();
        data.extend_from_slice(&(end as u32).to_le_bytes());
        for t in tags.clone() {
            end += t.len();
            data.extend_from_slice(&(end as u32).to_le_bytes());
        }
        data.extend_from_slice(name);
        data.extend_from_slice(host);
        for t in tags {
            data.extend_from_slice(t);
        }
        debug_assert_eq!(data.len(), WORD * (3 + n) + payload);
        Self { hash, data: data.into_boxed_slice() }
    }

    fn word(&self, i: usize) -> usize {
        let at = i * WORD;
        let mut w = [0u8; WORD];
        w.copy_from_slice(&self.data[at..at + WORD]);
        u32::from_le_bytes(w) as usize
    }

    /// The payload's `i`-th part (0 name, 1 host, 2.. tags).
    fn part(&self, i: usize) -> &[u8] {
        let base = WORD * (3 + self.tag_count());
        let start = if i == 0 { 0 } else { self.word(i) };
        let end = self.word(i + 1);
        &self.data[base + start..base + end]
    }

    /// Precomputed hash of name, host and tags.
    pub fn key_hash(&self) -> u64 {
        self.hash
    }

    /// Metric name, namespace included.
    pub fn name(&self) -> &[u8] {
        self.part(0)
    }

    /// Resolved host.
    pub fn host(&self) -> &[u8] {
        self.part(1)
    }

    /// Number of tags.
    pub fn tag_count(&self) -> usize {
        self.word(0)
    }

    /// Sorted, de-duplicated tags.
    pub fn tags(&self) -> impl ExactSizeIterator<Item = &[u8]> + DoubleEndedIterator + Clone + '_ {
        let n = self.tag_count();
        let base = WORD * (3 + n);
        // One header word per tag, read in order (the encoders walk every
        // tag of 100k contexts per flush; `part` reads three per tag).
        KeyTags { header: &self.data[..base], payload: &self.data[base..], front: 0, back: n }
    }

    /// Heap bytes owned by this key (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.data.len()
    }

    /// [`ContextKey::heap_bytes`] of a key with these parts, known before
    /// the key is built (a refused context must not allocate).
    pub fn heap_bytes_for(name_len: usize, host_len: usize, tag_bytes: usize, tag_count: usize) -> usize {
        WORD * (3 + tag_count) + name_len + host_len + tag_bytes
    }
}

/// The tags of a [`ContextKey`]: tag `i` ends at header word `3 + i` and
/// starts where the part before it ends (word `2 + i`).
#[derive(Clone)]
struct KeyTags<'a> {
    header: &'a [u8],
    payload: &'a [u8],
    front: usize,
    back: usize,
}

impl<'a> KeyTags<'a> {
    fn word(&self, i: usize) -> usize {
        let mut w = [0u8; WORD];
        w.copy_from_slice(&self.header[i * WORD..(i + 1) * WORD]);
        u32::from_le_bytes(w) as usize
    }

    fn tag(&self, i: usize) -> &'a [u8] {
        &self.payload[self.word(2 + i)..self.word(3 + i)]
    }
}

impl<'a> Iterator for KeyTags<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.front == self.back {
            return None;
        }
        self.front += 1;
        Some(self.tag(self.front - 1))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.back - self.front, Some(self.back - self.front))
    }
}

impl DoubleEndedIterator for KeyTags<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front == self.back {
            return None;
        }
        self.back -= 1;
        Some(self.tag(self.back))
    }
}

impl ExactSizeIterator for KeyTags<'_> {}

impl std::fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextKey")
            .field("name", &String::from_utf8_lossy(self.name()))
            .field("host", &String::from_utf8_lossy(self.host()))
            .field("tags", &self.tags().map(String::from_utf8_lossy).collect::<Vec<_>>())
            .finish()
    }
}

impl std::hash::Hash for ContextKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Name, host and tags of a flushed series: either owned strings (the
/// Agent's own series, passthrough series) or a shared context plus a
/// static-or-owned name suffix (aggregated series: no per-series copies,
/// which dominated the flush cost).
#[derive(Debug, Clone)]
pub enum SeriesId {
    /// Owned strings, boxed: rare (the Agent's own series, passthrough),
    /// so aggregated series do not pay for their size (40 B per rendered
    /// series at the flush peak).
    Owned(Box<OwnedId>),
    /// Borrowed from an aggregation context.
    Context {
        /// The shared context.
        key: Arc<ContextKey>,
        /// Appended to the context name (e.g. `.max`; empty for none).
        suffix: Cow<'static, str>,
    },
}

/// The strings of an owned [`SeriesId`].
#[derive(Debug, Clone)]
pub struct OwnedId {
    /// Metric name, suffix included.
    pub name: String,
    /// Host (may be empty).
    pub host: String,
    /// Sorted, de-duplicated tags.
    pub tags: Vec<String>,
}

impl SeriesId {
    /// An owned identity.
    pub fn owned(name: String, host: String, tags: Vec<String>) -> Self {
        SeriesId::Owned(Box::new(OwnedId { name, host, tags }))
    }

    /// An identity borrowed from `key`, name suffixed with `suffix`.
    pub fn context(key: Arc<ContextKey>, suffix: Cow<'static, str>) -> Self {
        SeriesId::Context { key, suffix }
    }

    /// The name as (base, suffix); the full name is their concatenation.
    /// Does not allocate for valid UTF-8.
    pub fn name_parts(&self) -> (Cow<'_, str>, &str) {
        match self {
            SeriesId::Owned(o) => (Cow::Borrowed(o.name.as_str()), ""),
            SeriesId::Context { key, suffix } => (lossy(key.name()), suffix),
        }
    }

    /// The full name (allocates only for a suffixed context name).
    pub fn name(&self) -> Cow<'_, str> {
        match self.name_parts() {
            (base, "") => base,
            (base, suffix) => Cow::Owned(format!("{base}{suffix}")),
        }
    }

    /// The host (lossy UTF-8).
    pub fn host(&self) -> Cow<'_, str> {
        match self {
            SeriesId::Owned(o) => Cow::Borrowed(o.host.as_str()),
            SeriesId::Context { key, .. } => lossy(key.host()),
        }
    }

    /// The tags in order (lossy UTF-8; no allocation for valid UTF-8).
    pub fn tags(&self) -> impl DoubleEndedIterator<Item = Cow<'_, str>> + Clone + '_ {
        self.tag_bytes().map(lossy)
    }

    /// The tags in order as stored (for prefix checks before converting:
    /// every prefix the encoders look for is ASCII, so checking the raw
    /// bytes gives the same answer as checking the lossy string).
    pub fn tag_bytes(&self) -> impl DoubleEndedIterator<Item = &[u8]> + Clone + '_ {
        let (owned, key): (&[String], Option<&ContextKey>) = match self {
            SeriesId::Owned(o) => (&o.tags, None),
            SeriesId::Context { key, .. } => (&[], Some(key)),
        };
        owned.iter().map(|t| t.as_bytes()).chain(key.into_iter().flat_map(|k| k.tags()))
    }

    /// Number of tags.
    pub fn tag_count(&self) -> usize {
        match self {
            SeriesId::Owned(o) => o.tags.len(),
            SeriesId::Context { key, .. } => key.tag_count(),
        }
    }
}

/// `String::from_utf8_lossy`, with the faster validity check first (the
/// common case: valid UTF-8, borrowed as is).
pub fn lossy(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// Compares what goes on the wire, whichever way it is stored.
impl PartialEq for SeriesId {
    fn eq(&self, o: &Self) -> bool {
        self.name() == o.name() && self.host() == o.host() && self.tags().eq(o.tags())
    }
}

/// One series as sent to `/api/v1/series` or `/api/v2/series`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Name (histogram suffix included), host, and sorted, de-duplicated
    /// context tags (raw: `device:` and `dd.internal.resource:` are turned
    /// into resources by the encoder).
    pub id: SeriesId,
    /// Points in ascending timestamp order.
    pub points: Vec<Point>,
    /// Wire type.
    pub metric_type: MetricType,
    /// 10 for DogStatsD series, 0 for the Agent's own.
    pub interval: i64,
    /// `System` for the Agent's own series, else empty.
    pub source_type_name: String,
    /// Origin metadata.
    pub origin: Origin,
}

/// One DDSketch bucket (v1 `Dogsketch`).
#[derive(Debug, Clone, PartialEq)]
pub struct Dogsketch {
    /// Bucket start, Unix seconds.
    pub ts: i64,
    /// Number of samples (weighted, truncated).
    pub cnt: i64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Running average.
    pub avg: f64,
    /// Sum of samples.
    pub sum: f64,
    /// Bin keys, ascending.
    pub keys: Vec<i32>,
    /// Bin counts, same length as `keys`.
    pub counts: Vec<u32>,
}

/// One distribution context with its closed buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct SketchSeries {
    /// Name, host and sorted, de-duplicated tags.
    pub id: SeriesId,
    /// One per closed bucket, ascending `ts`.
    pub dogsketches: Vec<Dogsketch>,
}

/// A service check ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCheck {
    /// Check name.
    pub check: String,
    /// Host name (may be empty).
    pub host_name: String,
    /// Unix seconds (0 already replaced by the queue time).
    pub timestamp: i64,
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub status: u8,
    /// Free text (may be empty).
    pub message: String,
    /// Sorted, de-duplicated; empty serializes as JSON `null`.
    pub tags: Vec<String>,
}

/// An event ready to send.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    /// Title.
    pub title: String,
    /// Text.
    pub text: String,
    /// Unix seconds (0 already replaced by the queue time).
    pub timestamp: i64,
    /// `normal` / `low`, or empty to omit.
    pub priority: String,
    /// Host.
    pub host: String,
    /// Sorted, de-duplicated tags.
    pub tags: Vec<String>,
    /// `error` / `warning` / `info` / `success`, or empty to omit.
    pub alert_type: String,
    /// Aggregation key, empty to omit.
    pub aggregation_key: String,
    /// Source type name; events are grouped by it (`api` when empty).
    pub source_type_name: String,
    /// Agent-internal event type, empty to omit.
    pub event_type: String,
}

#[cfg(test)]
mod size_tests {
    /// Rendered series live all at once at the flush peak (100k contexts):
    /// keep the identity to a pointer plus the suffix.
    #[test]
    fn series_identity_stays_small() {
        assert!(std::mem::size_of::<super::SeriesId>() <= 32, "{}", std::mem::size_of::<super::SeriesId>());
    }
}

#[cfg(test)]
mod context_key_tests {
    use super::ContextKey;

    #[test]
    fn parts_round_trip_through_the_single_allocation() {
        let tags: [&[u8]; 3] = [b"a:1", b"", b"\xffz"];
        let k = ContextKey::new(7, b"metric.name", b"host-1", tags.iter().copied());
        assert_eq!(k.key_hash(), 7);
        assert_eq!(k.name(), b"metric.name");
        assert_eq!(k.host(), b"host-1");
        assert_eq!(k.tag_count(), 3);
        assert_eq!(k.tags().collect::<Vec<_>>(), tags.to_vec());
        assert_eq!(k.tags().next_back(), Some(&b"\xffz"[..]));
        // Both ends of the tag iterator meet without overlap.
        let mut it = k.tags();
        assert_eq!((it.len(), it.next(), it.next_back(), it.len()), (3, Some(&b"a:1"[..]), Some(&b"\xffz"[..]), 1));
        assert_eq!((it.next(), it.next(), it.next_back()), (Some(&b""[..]), None, None));
        assert_eq!(k.tags().rev().collect::<Vec<_>>(), tags.iter().rev().copied().collect::<Vec<_>>());
        let empty = ContextKey::new(0, b"", b"", std::iter::empty());
        assert_eq!((empty.name(), empty.host(), empty.tag_count()), (&b""[..], &b""[..], 0));
        assert_eq!(empty.heap_bytes(), 12);
    }
}
