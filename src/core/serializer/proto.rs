//! Hand-written protobuf writer for series v2 (`MetricSeries`) and sketches
//! (`Sketch`), byte-identical to the Agent's molecule-based streaming writer
//! (`agent-payload` protobuf schemas): Agent field order, proto3 zero skipping, embedded
//! messages always written.
//!
//! Each item is encoded as a complete field-1 record of the enclosing
//! `MetricPayload` / `SketchPayload`, so payloads are plain concatenations.
//! Sizes are computed first, then bytes are written straight into the
//! caller's reused buffer (no intermediate allocations).

use std::borrow::Cow;

use crate::core::model::{lossy, ContextKey, Dogsketch, MetricType, Origin, Series, SeriesId, SketchSeries};

use super::json::{DEVICE_TAG, RESOURCE_TAG};

/// Protobuf wire types used here.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;

/// `Origin.origin_product` for everything the Agent sends.
const ORIGIN_PRODUCT_AGENT: u64 = 10;
/// `Origin.origin_category` for DogStatsD.
const ORIGIN_CATEGORY_DOGSTATSD: u64 = 10;
/// The "metric type agent hidden" value written in origin field 3 for
/// no-index series.
const METRIC_TYPE_AGENT_HIDDEN: u64 = 9;

/// The sketch payload footer: an empty `SketchPayload.metadata` (field 2).
pub const SKETCH_PAYLOAD_FOOTER: [u8; 2] = [0x12, 0x00];

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(buf, (field << 3) | wire);
}

fn key_len(field: u64) -> usize {
    varint_len(field << 3)
}

/// Size of a length-delimited field holding `n` bytes.
fn len_field(field: u64, n: usize) -> usize {
    key_len(field) + varint_len(n as u64) + n
}

fn put_len_header(buf: &mut Vec<u8>, field: u64, n: usize) {
    put_key(buf, field, LEN);
    put_varint(buf, n as u64);
}

/// Non-empty string field (proto3: empty strings are skipped).
fn str_len(field: u64, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        len_field(field, s.len())
    }
}

fn put_str(buf: &mut Vec<u8>, field: u64, s: &str) {
    put_bytes(buf, field, s.as_bytes());
}

/// `put_str` of bytes already checked to be valid UTF-8.
fn put_bytes(buf: &mut Vec<u8>, field: u64, s: &[u8]) {
    if !s.is_empty() {
        put_len_header(buf, field, s.len());
        buf.extend_from_slice(s);
    }
}

/// Non-zero int64/uint varint field.
fn int_len(field: u64, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(field) + varint_len(v)
    }
}

fn put_int(buf: &mut Vec<u8>, field: u64, v: u64) {
    if v != 0 {
        put_key(buf, field, VARINT);
        put_varint(buf, v);
    }
}

/// Non-zero double field (`0.0` and `-0.0` skipped, as Go's `v == 0`).
fn double_len(field: u64, v: f64) -> usize {
    if v == 0.0 {
        0
    } else {
        key_len(field) + 8
    }
}

fn put_double(buf: &mut Vec<u8>, field: u64, v: f64) {
    if v != 0.0 {
        put_key(buf, field, FIXED64);
        buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }
}

/// `Resource` body size.
fn resource_len(rtype: &str, name: &str) -> usize {
    str_len(1, rtype) + str_len(2, name)
}

fn put_resource(buf: &mut Vec<u8>, rtype: &str, name: &str) {
    put_resource_bytes(buf, rtype.as_bytes(), name.as_bytes());
}

/// `put_resource` of bytes already checked to be valid UTF-8.
fn put_resource_bytes(buf: &mut Vec<u8>, rtype: &[u8], name: &[u8]) {
    let len = |b: &[u8]| if b.is_empty() { 0 } else { len_field(1, b.len()) };
    put_len_header(buf, 1, len(rtype) + len(name));
    put_bytes(buf, 1, rtype);
    put_bytes(buf, 2, name);
}

/// Splits a `dd.internal.resource:<type>:<name>` tag; `None` when it is not
/// one, `Some(None)` when it is one but malformed (discarded).
fn resource_tag(tag: &str) -> Option<Option<(&str, &str)>> {
    let rest = tag.strip_prefix(RESOURCE_TAG)?;
    Some(match rest.split_once(':') {
        Some((t, n)) if !t.is_empty() && !n.is_empty() => Some((t, n)),
        _ => None,
    })
}

/// Tags kept as `MetricSeries.tags` (device and resource tags removed).
fn plain_tags(s: &Series) -> impl Iterator<Item = Cow<'_, str>> {
    s.id.tag_bytes()
        .filter(|t| !t.starts_with(DEVICE_TAG.as_bytes()) && !t.starts_with(RESOURCE_TAG.as_bytes()))
        .map(lossy)
}

fn device_of(s: &Series) -> Option<Cow<'_, str>> {
    s.id.tag_bytes().rev().find_map(|t| t.strip_prefix(DEVICE_TAG.as_bytes())).map(lossy)
}

/// `dd.internal.resource:` tags (checked on bytes, converted only when one).
fn resource_tags(s: &Series) -> impl Iterator<Item = Cow<'_, str>> {
    s.id.tag_bytes().filter(|t| t.starts_with(RESOURCE_TAG.as_bytes())).map(lossy)
}

/// `str_len` of a name stored as base + suffix.
fn name_len(field: u64, (base, suffix): (Cow<'_, str>, &str)) -> usize {
    let n = base.len() + suffix.len();
    if n == 0 {
        0
    } else {
        len_field(field, n)
    }
}

/// `put_str` of a name stored as base + suffix.
fn put_name(buf: &mut Vec<u8>, field: u64, (base, suffix): (Cow<'_, str>, &str)) {
    let n = base.len() + suffix.len();
    if n != 0 {
        put_len_header(buf, field, n);
        buf.extend_from_slice(base.as_bytes());
        buf.extend_from_slice(suffix.as_bytes());
    }
}

/// `(product, category, hidden)` for an origin.
fn origin_values(o: Origin) -> (u64, u64, bool) {
    match o {
        Origin::DogStatsD => (ORIGIN_PRODUCT_AGENT, ORIGIN_CATEGORY_DOGSTATSD, false),
        Origin::Internal => (ORIGIN_PRODUCT_AGENT, 0, false),
        Origin::InternalNoIndex => (ORIGIN_PRODUCT_AGENT, 0, true),
    }
}

fn origin_len(o: Origin) -> usize {
    let (p, c, hidden) = origin_values(o);
    (if hidden { int_len(3, METRIC_TYPE_AGENT_HIDDEN) } else { 0 }) + int_len(4, p) + int_len(5, c)
}

/// Writes `Metadata{origin{...}}` as field `field` of the parent.
fn put_metadata(buf: &mut Vec<u8>, field: u64, o: Origin) {
    let ol = origin_len(o);
    put_len_header(buf, field, len_field(1, ol));
    put_len_header(buf, 1, ol);
    let (p, c, hidden) = origin_values(o);
    if hidden {
        put_int(buf, 3, METRIC_TYPE_AGENT_HIDDEN);
    }
    put_int(buf, 4, p);
    put_int(buf, 5, c);
}

fn metadata_len(field: u64, o: Origin) -> usize {
    len_field(field, len_field(1, origin_len(o)))
}

fn metric_type_value(t: MetricType) -> u64 {
    t as u64
}

fn point_len(ts: i64, v: f64) -> usize {
    int_len(2, ts as u64) + double_len(1, v)
}

fn series_body_len(s: &Series) -> usize {
    let mut n = len_field(1, resource_len("host", &s.id.host()));
    if let Some(d) = device_of(s) {
        n += len_field(1, resource_len("device", &d));
    }
    for t in resource_tags(s) {
        if let Some(Some((rt, rn))) = resource_tag(&t) {
            n += len_field(1, resource_len(rt, rn));
        }
    }
    n += name_len(2, s.id.name_parts());
    for t in plain_tags(s) {
        n += str_len(3, &t);
    }
    n += int_len(5, metric_type_value(s.metric_type));
    n += str_len(7, &s.source_type_name);
    n += int_len(8, s.interval as u64);
    for p in &s.points {
        n += len_field(4, point_len(p.timestamp, p.value));
    }
    n + metadata_len(9, s.origin)
}

/// Appends one series as a `MetricPayload.series` (field 1) record, fields in
/// the Agent's order 1, 2, 3, 5, 7, 8, 4, 9.
pub fn encode_series(buf: &mut Vec<u8>, s: &Series) {
    if let SeriesId::Context { key, suffix } = &s.id {
        if put_record(buf, |b| series_body_from_context(b, key, suffix, s)) {
            return;
        }
    }
    let body = series_body_len(s);
    buf.reserve(body + 6);
    put_len_header(buf, 1, body);
    put_resource(buf, "host", &s.id.host());
    if let Some(d) = device_of(s) {
        put_resource(buf, "device", &d);
    }
    for t in resource_tags(s) {
        if let Some(Some((rt, rn))) = resource_tag(&t) {
            put_resource(buf, rt, rn);
        }
    }
    put_name(buf, 2, s.id.name_parts());
    for t in plain_tags(s) {
        put_str(buf, 3, &t);
    }
    put_series_tail(buf, s);
}

/// Series fields after the tags: 5, 7, 8, 4 (points), 9.
fn put_series_tail(buf: &mut Vec<u8>, s: &Series) {
    put_int(buf, 5, metric_type_value(s.metric_type));
    put_str(buf, 7, &s.source_type_name);
    put_int(buf, 8, s.interval as u64);
    for p in &s.points {
        put_len_header(buf, 4, point_len(p.timestamp, p.value));
        put_int(buf, 2, p.timestamp as u64);
        put_double(buf, 1, p.value);
    }
    put_metadata(buf, 9, s.origin);
}

/// Room left in front of a record body for its header: the field-1 key
/// byte and a varint length (5 bytes cover any `u32`).
const RECORD_HEAD_ROOM: usize = 6;

/// Appends a field-1 record whose body `body` writes in one pass (no
/// sizing pass): the body is written after a gap, then moved back to
/// follow its header. When `body` returns false, nothing is appended.
fn put_record(buf: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
    let start = buf.len();
    buf.extend_from_slice(&[0; RECORD_HEAD_ROOM]);
    let body_start = buf.len();
    if !body(buf) {
        buf.truncate(start);
        return false;
    }
    let n = buf.len() - body_start;
    let mut h = [0u8; RECORD_HEAD_ROOM];
    let mut hl = 0;
    let mut push = |b: u8| {
        h[hl] = b;
        hl += 1;
    };
    push(((1u64 << 3) | LEN) as u8);
    let mut v = n as u64;
    while v >= 0x80 {
        push((v as u8) | 0x80);
        v >>= 7;
    }
    push(v as u8);
    buf[start..start + hl].copy_from_slice(&h[..hl]);
    buf.copy_within(body_start.., start + hl);
    buf.truncate(start + hl + n);
    true
}

/// Whether `b` is output unchanged by the lossy UTF-8 conversion the
/// generic path applies (ASCII checked first: the common case, faster).
fn verbatim(b: &[u8]) -> bool {
    b.is_ascii() || std::str::from_utf8(b).is_ok()
}

/// Whether a tag starts with `device:` or `dd.internal.resource:` (both
/// start with `d`: one byte compare for most tags).
fn special_tag(t: &[u8]) -> bool {
    t.first() == Some(&b'd') && (t.starts_with(DEVICE_TAG.as_bytes()) || t.starts_with(RESOURCE_TAG.as_bytes()))
}

/// The series body written straight from the context bytes, in one pass
/// over the tags for the output plus one prefix scan. Returns false (the
/// caller falls back to the generic path, which makes invalid UTF-8 lossy)
/// as soon as a written part is not valid UTF-8: the bytes written are then
/// exactly what the generic path writes.
fn series_body_from_context(buf: &mut Vec<u8>, key: &ContextKey, suffix: &str, s: &Series) -> bool {
    let (name, host) = (key.name(), key.host());
    if !verbatim(name) || !verbatim(host) {
        return false;
    }
    let (mut device, mut resources) = (None, false);
    for t in key.tags() {
        if special_tag(t) {
            match t.strip_prefix(DEVICE_TAG.as_bytes()) {
                Some(d) => device = Some(d),
                None => resources = true,
            }
        }
    }
    put_resource_bytes(buf, b"host", host);
    if let Some(d) = device {
        if !verbatim(d) {
            return false;
        }
        put_resource_bytes(buf, b"device", d);
    }
    if resources {
        for t in key.tags() {
            if let Some(rest) = t.strip_prefix(RESOURCE_TAG.as_bytes()) {
                if !verbatim(rest) {
                    return false;
                }
                if let Some(i) = rest.iter().position(|&c| c == b':') {
                    let (rt, rn) = (&rest[..i], &rest[i + 1..]);
                    if !rt.is_empty() && !rn.is_empty() {
                        put_resource_bytes(buf, rt, rn);
                    }
                }
            }
        }
    }
    if !name.is_empty() || !suffix.is_empty() {
        put_len_header(buf, 2, name.len() + suffix.len());
        buf.extend_from_slice(name);
        buf.extend_from_slice(suffix.as_bytes());
    }
    for t in key.tags() {
        if special_tag(t) {
            continue;
        }
        if !verbatim(t) {
            return false;
        }
        put_bytes(buf, 3, t);
    }
    put_series_tail(buf, s);
    true
}

/// The sketch body written straight from the context bytes (see
/// `series_body_from_context`).
fn sketch_body_from_context(buf: &mut Vec<u8>, key: &ContextKey, suffix: &str, s: &SketchSeries) -> bool {
    let (name, host) = (key.name(), key.host());
    if !verbatim(name) || !verbatim(host) {
        return false;
    }
    if !name.is_empty() || !suffix.is_empty() {
        put_len_header(buf, 1, name.len() + suffix.len());
        buf.extend_from_slice(name);
        buf.extend_from_slice(suffix.as_bytes());
    }
    put_bytes(buf, 2, host);
    for t in key.tags() {
        if !verbatim(t) {
            return false;
        }
        put_bytes(buf, 4, t);
    }
    put_dogsketches(buf, s);
    true
}

fn zigzag32(k: i32) -> u64 {
    (((k as u32) << 1) ^ ((k >> 31) as u32)) as u64
}

fn packed_keys_len(keys: &[i32]) -> usize {
    keys.iter().map(|&k| varint_len(zigzag32(k))).sum()
}

fn packed_counts_len(counts: &[u32]) -> usize {
    counts.iter().map(|&c| varint_len(c as u64)).sum()
}

fn dogsketch_len(d: &Dogsketch) -> usize {
    let mut n = int_len(1, d.ts as u64)
        + int_len(2, d.cnt as u64)
        + double_len(3, d.min)
        + double_len(4, d.max)
        + double_len(5, d.avg)
        + double_len(6, d.sum);
    if !d.keys.is_empty() {
        n += len_field(7, packed_keys_len(&d.keys));
    }
    if !d.counts.is_empty() {
        n += len_field(8, packed_counts_len(&d.counts));
    }
    n
}

fn sketch_body_len(s: &SketchSeries) -> usize {
    let mut n = name_len(1, s.id.name_parts()) + str_len(2, &s.id.host());
    for t in s.id.tags() {
        n += str_len(4, &t);
    }
    for d in &s.dogsketches {
        n += len_field(7, dogsketch_len(d));
    }
    n + metadata_len(8, Origin::DogStatsD)
}

/// Appends one sketch as a `SketchPayload.sketches` (field 1) record: fields
/// 1, 2, 4, 7…, 8; dogsketch fields 1–8 with packed zig-zag keys.
pub fn encode_sketch(buf: &mut Vec<u8>, s: &SketchSeries) {
    if let SeriesId::Context { key, suffix } = &s.id {
        if put_record(buf, |b| sketch_body_from_context(b, key, suffix, s)) {
            return;
        }
    }
    let body = sketch_body_len(s);
    buf.reserve(body + 6);
    put_len_header(buf, 1, body);
    put_name(buf, 1, s.id.name_parts());
    put_str(buf, 2, &s.id.host());
    for t in s.id.tags() {
        put_str(buf, 4, &t);
    }
    put_dogsketches(buf, s);
}

fn put_dogsketches(buf: &mut Vec<u8>, s: &SketchSeries) {
    for d in &s.dogsketches {
        put_len_header(buf, 7, dogsketch_len(d));
        put_int(buf, 1, d.ts as u64);
        put_int(buf, 2, d.cnt as u64);
        put_double(buf, 3, d.min);
        put_double(buf, 4, d.max);
        put_double(buf, 5, d.avg);
        put_double(buf, 6, d.sum);
        if !d.keys.is_empty() {
            put_len_header(buf, 7, packed_keys_len(&d.keys));
            for &k in &d.keys {
                put_varint(buf, zigzag32(k));
            }
        }
        if !d.counts.is_empty() {
            put_len_header(buf, 8, packed_counts_len(&d.counts));
            for &c in &d.counts {
                put_varint(buf, c as u64);
            }
        }
    }
    put_metadata(buf, 8, Origin::DogStatsD);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Point;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
    }

    #[test]
    fn series_worked_example() {
        let s = Series {
            id: SeriesId::owned("m".into(), "h1".into(), vec!["a:b".into()]),
            points: vec![Point { timestamp: 1700000000, value: 1.0 }],
            metric_type: MetricType::Gauge,
            interval: 10,
            source_type_name: String::new(),
            origin: Origin::DogStatsD,
        };
        let mut b = Vec::new();
        encode_series(&mut b, &s);
        let want = hex("0a 31 0a 0a 0a 04 68 6f 73 74 12 02 68 31 12 01 6d 1a 03 61 3a 62 28 03 40 0a
             22 0f 10 80 e2 cf aa 06 09 00 00 00 00 00 00 f0 3f 4a 06 0a 04 20 0a 28 0a");
        assert_eq!(b, want);
    }

    #[test]
    fn sketch_worked_example() {
        let s = SketchSeries {
            id: SeriesId::owned("lat".into(), "h1".into(), vec!["a:b".into()]),
            dogsketches: vec![Dogsketch {
                ts: 1700000000,
                cnt: 2,
                min: 1.0,
                max: 3.0,
                avg: 2.0,
                sum: 4.0,
                keys: vec![1338, 1409],
                counts: vec![1, 1],
            }],
        };
        let mut b = Vec::new();
        encode_sketch(&mut b, &s);
        b.extend_from_slice(&SKETCH_PAYLOAD_FOOTER);
        let want = hex("0a 4e 0a 03 6c 61 74 12 02 68 31 22 03 61 3a 62 3a 36
             08 80 e2 cf aa 06 10 02 19 00 00 00 00 00 00 f0 3f 21 00 00 00 00 00 00 08 40
             29 00 00 00 00 00 00 00 40 31 00 00 00 00 00 00 10 40 3a 04 f4 14 82 16 42 02 01 01
             42 06 0a 04 20 0a 28 0a 12 00");
        assert_eq!(b, want);
    }

    #[test]
    fn resources_and_zero_skipping() {
        let s = Series {
            id: SeriesId::owned(
                "m".into(),
                String::new(),
                vec![
                    "device:sda".into(),
                    "dd.internal.resource:database_instance:db1".into(),
                    "dd.internal.resource:bad".into(),
                    "dd.internal.resource::x".into(),
                    "device:sdb".into(),
                    "z:1".into(),
                ],
            ),
            points: vec![Point { timestamp: 0, value: -0.0 }],
            metric_type: MetricType::Count,
            interval: 0,
            source_type_name: "System".into(),
            origin: Origin::InternalNoIndex,
        };
        let mut b = Vec::new();
        encode_series(&mut b, &s);
        let mut want = vec![0x0a, 0];
        want.extend(hex("0a 06 0a 04 68 6f 73 74")); // host, empty name
        want.extend(hex("0a 0d 0a 06 64 65 76 69 63 65 12 03 73 64 62")); // device sdb
        want.extend_from_slice(&[0x0a, 0x18, 0x0a, 0x11]);
        want.extend_from_slice(b"database_instance");
        want.extend_from_slice(&[0x12, 0x03]);
        want.extend_from_slice(b"db1");
        want.extend(hex("12 01 6d 1a 03 7a 3a 31 28 01 3a 06 53 79 73 74 65 6d"));
        want.extend(hex("22 00")); // empty point still written
        want.extend(hex("4a 06 0a 04 18 09 20 0a")); // metadata, no category
        want[1] = (want.len() - 2) as u8;
        assert_eq!(b, want);
    }

    #[test]
    fn negative_values() {
        assert_eq!(zigzag32(-1), 1);
        assert_eq!(zigzag32(i32::MIN), u32::MAX as u64);
        let mut b = Vec::new();
        put_int(&mut b, 8, (-1i64) as u64);
        assert_eq!(b.len(), 11);
    }

    /// The one-pass context encoders (taken when every part is valid UTF-8)
    /// write exactly the generic path's bytes, for valid names, hosts and
    /// tags of every kind, and fall back (same bytes) when one part is not.
    #[test]
    fn context_fast_path_matches_generic_path() {
        use crate::core::model::ContextKey;
        use std::borrow::Cow;
        use std::sync::Arc;
        /// (name, host, tags)
        type Case<'a> = (&'a [u8], &'a [u8], Vec<&'a [u8]>);
        let cases: Vec<Case> = vec![
            (b"m", b"h1", vec![b"a:b"]),
            (b"", b"", vec![]),
            (
                b"caf\xc3\xa9.x",
                b"h\xc3\xa9",
                vec![b"", b"a:\xc3\xa9", b"device:sda", b"device:", b"device:sdb", b"d", b"dev:x"],
            ),
            (
                b"m",
                b"h",
                vec![
                    b"dd.internal.resource:db:x",
                    b"dd.internal.resource:bad",
                    b"dd.internal.resource::x",
                    b"dd.internal.resource:t:",
                    b"dd.internal.resource:a:b:c",
                    b"z:1",
                ],
            ),
            (b"m", b"h", vec![b"a", b"device:\xff"]),
            (b"m", b"h", vec![b"a", b"dd.internal.resource:\xff:x"]),
            (b"m", b"h", vec![b"\xfe", b"b"]),
            (b"m\xff", b"h", vec![b"b"]),
            (b"m", b"h\xff", vec![b"b"]),
        ];
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        for (name, host, tags) in cases {
            let key = Arc::new(ContextKey::new(0, name, host, tags.iter().copied()));
            let owned_tags: Vec<String> = tags.iter().map(|t| lossy(t)).collect();
            for suffix in ["", ".95percentile"] {
                for points in
                    [vec![], vec![Point { timestamp: 1_700_000_000, value: 0.5 }, Point { timestamp: 0, value: 0.0 }]]
                {
                    let mk = |id: SeriesId| Series {
                        id,
                        points: points.clone(),
                        metric_type: MetricType::Gauge,
                        interval: 10,
                        source_type_name: String::new(),
                        origin: Origin::DogStatsD,
                    };
                    let ctx = mk(SeriesId::context(key.clone(), Cow::Borrowed(suffix)));
                    let own = mk(SeriesId::owned(format!("{}{suffix}", lossy(name)), lossy(host), owned_tags.clone()));
                    let (mut a, mut b) = (vec![7u8], vec![7u8]);
                    encode_series(&mut a, &ctx);
                    encode_series(&mut b, &own);
                    assert_eq!(a, b, "series {name:?} {tags:?} {suffix:?}");
                    let all_valid = std::str::from_utf8(name).is_ok()
                        && std::str::from_utf8(host).is_ok()
                        && tags.iter().all(|t| std::str::from_utf8(t).is_ok());
                    let fast = put_record(&mut Vec::new(), |b| series_body_from_context(b, &key, suffix, &ctx));
                    assert_eq!(fast, all_valid, "fast path taken iff all parts are valid UTF-8");
                }
                let d = Dogsketch {
                    ts: 1,
                    cnt: 2,
                    min: 1.0,
                    max: 2.0,
                    avg: 1.5,
                    sum: 3.0,
                    keys: vec![-1, 3],
                    counts: vec![1, 1],
                };
                let ctx = SketchSeries {
                    id: SeriesId::context(key.clone(), Cow::Borrowed(suffix)),
                    dogsketches: vec![d.clone()],
                };
                let own = SketchSeries {
                    id: SeriesId::owned(format!("{}{suffix}", lossy(name)), lossy(host), owned_tags.clone()),
                    dogsketches: vec![d],
                };
                let (mut a, mut b) = (vec![7u8], vec![7u8]);
                encode_sketch(&mut a, &ctx);
                encode_sketch(&mut b, &own);
                assert_eq!(a, b, "sketch {name:?} {tags:?} {suffix:?}");
            }
        }
        // A body longer than 127 bytes needs a two-byte length varint.
        let long = vec![b'x'; 300];
        let key = Arc::new(ContextKey::new(0, b"m", b"h", [&long[..]].into_iter()));
        let mk = |id: SeriesId| Series {
            id,
            points: vec![],
            metric_type: MetricType::Rate,
            interval: 10,
            source_type_name: String::new(),
            origin: Origin::DogStatsD,
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode_series(&mut a, &mk(SeriesId::context(key, Cow::Borrowed(""))));
        encode_series(&mut b, &mk(SeriesId::owned("m".into(), "h".into(), vec![String::from_utf8(long).unwrap()])));
        assert_eq!(a, b);
    }

    /// A series borrowing a context encodes byte for byte like the same
    /// series with owned (lossy) strings, in proto and v1 JSON, including
    /// invalid UTF-8, escapes, device and resource tags and a name suffix.
    #[test]
    fn context_identity_encodes_like_owned_strings() {
        use crate::core::model::{ContextKey, Dogsketch};
        use std::borrow::Cow;
        use std::sync::Arc;
        let raw_tags: Vec<&[u8]> = vec![
            b"a:\xff\"q\"",
            b"dd.internal.resource:db:x",
            b"dd.internal.resource:bad",
            b"device:sd\xfe",
            b"device:sdb",
            b"z:\n1",
        ];
        let key = Arc::new(ContextKey::new(0, b"m\xc3.x\t", b"h\x80", raw_tags.iter().copied()));
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let owned_tags: Vec<String> = raw_tags.iter().map(|t| lossy(t)).collect();
        for suffix in ["", ".95percentile"] {
            let mk = |id: SeriesId| Series {
                id,
                points: vec![
                    Point { timestamp: 1_700_000_000, value: 0.5 },
                    Point { timestamp: 1_700_000_010, value: 0.0 },
                ],
                metric_type: MetricType::Rate,
                interval: 10,
                source_type_name: String::new(),
                origin: Origin::DogStatsD,
            };
            let ctx = mk(SeriesId::context(key.clone(), Cow::Borrowed(suffix)));
            let own =
                mk(SeriesId::owned(format!("{}{suffix}", lossy(key.name())), lossy(key.host()), owned_tags.clone()));
            assert_eq!(ctx, own);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            encode_series(&mut a, &ctx);
            encode_series(&mut b, &own);
            assert_eq!(a, b, "proto, suffix {suffix:?}");
            let (mut a, mut b) = (Vec::new(), Vec::new());
            crate::core::serializer::json::render_series_v1(&mut a, &ctx).unwrap();
            crate::core::serializer::json::render_series_v1(&mut b, &own).unwrap();
            assert_eq!(a, b, "json, suffix {suffix:?}");
        }
        let d =
            Dogsketch { ts: 1, cnt: 2, min: 1.0, max: 2.0, avg: 1.5, sum: 3.0, keys: vec![-1, 3], counts: vec![1, 1] };
        let ctx = SketchSeries { id: SeriesId::context(key.clone(), Cow::Borrowed("")), dogsketches: vec![d.clone()] };
        let own = SketchSeries {
            id: SeriesId::owned(lossy(key.name()), lossy(key.host()), owned_tags),
            dogsketches: vec![d],
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode_sketch(&mut a, &ctx);
        encode_sketch(&mut b, &own);
        assert_eq!(a, b);
    }
}
