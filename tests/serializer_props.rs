//! Property tests: for random items, limits and compressors, every payload
//! decompresses, respects both limits, is valid JSON / protobuf, and every
//! item that fits alone arrives exactly once and in order; the others are
//! counted as dropped.

use std::io::Read;

use edgestat::core::model::{
    Dogsketch, Event, MetricType, Origin, Point, Series, SeriesId, ServiceCheck, SketchSeries,
};
use edgestat::core::serializer::{json, proto, Compression, Payload, Serializer, SerializerConfig};
use proptest::prelude::*;

// ---- prost-derived decoding structs (test only) ----

#[derive(Clone, PartialEq, prost::Message)]
struct MetricPayload {
    #[prost(message, repeated, tag = "1")]
    series: Vec<MetricSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MetricSeries {
    #[prost(message, repeated, tag = "1")]
    resources: Vec<Resource>,
    #[prost(string, tag = "2")]
    metric: String,
    #[prost(string, repeated, tag = "3")]
    tags: Vec<String>,
    #[prost(message, repeated, tag = "4")]
    points: Vec<MetricPoint>,
    #[prost(int32, tag = "5")]
    r#type: i32,
    #[prost(string, tag = "6")]
    unit: String,
    #[prost(string, tag = "7")]
    source_type_name: String,
    #[prost(int64, tag = "8")]
    interval: i64,
    #[prost(message, optional, tag = "9")]
    metadata: Option<Metadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Resource {
    #[prost(string, tag = "1")]
    r#type: String,
    #[prost(string, tag = "2")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MetricPoint {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Metadata {
    #[prost(message, optional, tag = "1")]
    origin: Option<OriginMsg>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OriginMsg {
    #[prost(uint32, tag = "3")]
    metric_type: u32,
    #[prost(uint32, tag = "4")]
    product: u32,
    #[prost(uint32, tag = "5")]
    category: u32,
    #[prost(uint32, tag = "6")]
    service: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SketchPayload {
    #[prost(message, repeated, tag = "1")]
    sketches: Vec<SketchMsg>,
    #[prost(message, optional, tag = "2")]
    metadata: Option<CommonMetadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CommonMetadata {
    #[prost(string, tag = "1")]
    agent_version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SketchMsg {
    #[prost(string, tag = "1")]
    metric: String,
    #[prost(string, tag = "2")]
    host: String,
    #[prost(string, repeated, tag = "4")]
    tags: Vec<String>,
    #[prost(message, repeated, tag = "7")]
    dogsketches: Vec<DogsketchMsg>,
    #[prost(message, optional, tag = "8")]
    metadata: Option<Metadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct DogsketchMsg {
    #[prost(int64, tag = "1")]
    ts: i64,
    #[prost(int64, tag = "2")]
    cnt: i64,
    #[prost(double, tag = "3")]
    min: f64,
    #[prost(double, tag = "4")]
    max: f64,
    #[prost(double, tag = "5")]
    avg: f64,
    #[prost(double, tag = "6")]
    sum: f64,
    #[prost(sint32, repeated, tag = "7")]
    k: Vec<i32>,
    #[prost(uint32, repeated, tag = "8")]
    n: Vec<u32>,
}

// ---- helpers ----

fn decompress(kind: Compression, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    match kind {
        Compression::Zstd { .. } => v = zstd::stream::decode_all(body).expect("zstd"),
        Compression::Zlib => {
            flate2::read::ZlibDecoder::new(body).read_to_end(&mut v).expect("zlib");
        }
        Compression::Gzip => {
            flate2::read::GzDecoder::new(body).read_to_end(&mut v).expect("gzip");
        }
        Compression::Lz4 => {
            lz4_flex::frame::FrameDecoder::new(body).read_to_end(&mut v).expect("lz4");
        }
        Compression::None => v = body.to_vec(),
    }
    v
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::Zstd { level: 1 }),
        Just(Compression::Zstd { level: 3 }),
        Just(Compression::Zlib),
        Just(Compression::Gzip),
        Just(Compression::Lz4),
        Just(Compression::None),
    ]
}

/// (compressed, uncompressed, points)
fn limits() -> impl Strategy<Value = (usize, usize, usize)> {
    (200usize..20_000, 200usize..20_000, 1usize..50)
}

fn config(c: Compression, l: (usize, usize, usize)) -> SerializerConfig {
    SerializerConfig {
        compression: c,
        max_payload_size: l.0,
        max_uncompressed_payload_size: l.1,
        max_series_payload_size: l.0,
        max_series_uncompressed_payload_size: l.1,
        max_series_points_per_payload: l.2,
    }
}

fn text(max: usize) -> impl Strategy<Value = String> {
    // Mostly random printable bytes (incompressible), with escapes and
    // non-ASCII mixed in. Generated from a seed so that large strings are
    // cheap to produce even in debug builds.
    (any::<u64>(), 0..max).prop_map(|(seed, len)| {
        let mut x = seed | 1;
        let mut s = String::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = (x >> 33) as u32;
            s.push(match r % 12 {
                0 => '"',
                1 => '\n',
                2 => 'é',
                3 => '\u{1}',
                _ => char::from(b' ' + (r / 12 % 95) as u8),
            });
        }
        s
    })
}

fn tags() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        prop_oneof![
            10 => text(40).prop_map(|t| format!("k:{t}")),
            1 => text(10).prop_map(|t| format!("device:{t}")),
            1 => text(10).prop_map(|t| format!("dd.internal.resource:t:{t}")),
        ],
        0..25,
    )
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |x| x.is_finite()),
        (-1000i64..1000).prop_map(|x| x as f64),
        Just(0.0),
    ]
}

fn series_strategy() -> impl Strategy<Value = Vec<Series>> {
    proptest::collection::vec(
        (text(20), text(10), tags(), proptest::collection::vec((0i64..2_000_000_000, finite()), 0..60), 0u8..3, 0u8..3),
        0..60,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (name, host, tags, pts, t, o))| Series {
                id: SeriesId::owned(format!("s{i}.{name}"), host, tags),
                points: pts.into_iter().map(|(timestamp, value)| Point { timestamp, value }).collect(),
                metric_type: [MetricType::Count, MetricType::Rate, MetricType::Gauge][t as usize],
                interval: if t == 1 { 10 } else { 0 },
                source_type_name: if o == 1 { "System".into() } else { String::new() },
                origin: [Origin::DogStatsD, Origin::Internal, Origin::InternalNoIndex][o as usize],
            })
            .collect()
    })
}

fn check_limits(cfg: &SerializerConfig, p: &Payload, max_c: usize, max_u: usize) -> Vec<u8> {
    assert!(p.body.len() <= max_c, "compressed {} > {max_c}", p.body.len());
    let raw = decompress(cfg.compression, &p.body);
    assert_eq!(raw.len(), p.uncompressed_len);
    assert!(raw.len() <= max_u, "uncompressed {} > {max_u}", raw.len());
    raw
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn series_v2_props(c in compression(), l in limits(), series in series_strategy()) {
        let cfg = config(c, l);
        let mut ser = Serializer::new(cfg).unwrap();
        let mut out = Vec::new();
        ser.series_v2(std::iter::empty(), &mut out);
        prop_assert!(out.is_empty());
        let mut expected = Vec::new();
        let mut too_big = 0;
        let mut buf = Vec::new();
        for s in &series {
            buf.clear();
            proto::encode_series(&mut buf, s);
            if ser.builder().fits_alone(buf.len(), s.points.len()) {
                expected.push(s.id.name().into_owned());
            } else {
                too_big += 1;
            }
        }
        ser.series_v2(series.iter(), &mut out);
        let mut got = Vec::new();
        for p in &out {
            let raw = check_limits(&cfg, p, cfg.max_series_payload_size, cfg.max_series_uncompressed_payload_size);
            prop_assert!(p.items > 0);
            prop_assert!(p.points <= cfg.max_series_points_per_payload);
            let m = <MetricPayload as prost::Message>::decode(&raw[..]).unwrap();
            prop_assert_eq!(m.series.len(), p.items);
            let pts: usize = m.series.iter().map(|s| s.points.len()).sum();
            prop_assert_eq!(pts, p.points);
            for s in m.series {
                prop_assert_eq!(&s.resources[0].r#type, "host");
                prop_assert!(s.metadata.and_then(|m| m.origin).map(|o| o.product) == Some(10));
                got.push(s.metric);
            }
        }
        prop_assert_eq!(got, expected);
        prop_assert_eq!(ser.stats().series_item_too_big, too_big);
        prop_assert_eq!(ser.stats().series_unexpected_item_drops, 0);
    }

    #[test]
    fn series_v1_props(c in compression(), l in limits(), series in series_strategy()) {
        let cfg = config(c, l);
        let mut ser = Serializer::new(cfg).unwrap();
        let mut out = Vec::new();
        ser.series_v1(std::iter::empty(), &mut out);
        prop_assert_eq!(out.len(), 1);
        out.clear();
        let mut expected = Vec::new();
        let mut too_big = 0;
        let mut buf = Vec::new();
        for s in series.iter().filter(|s| !json::v1_skips(s)) {
            buf.clear();
            json::render_series_v1(&mut buf, s).unwrap();
            if ser.builder().fits_alone(buf.len(), 0) {
                expected.push(s.id.name().into_owned());
            } else {
                too_big += 1;
            }
        }
        let drops_before = ser.stats().item_drops;
        ser.series_v1(series.iter(), &mut out);
        prop_assert!(!out.is_empty());
        let mut got = Vec::new();
        for p in &out {
            let raw = check_limits(&cfg, p, cfg.max_payload_size, cfg.max_uncompressed_payload_size);
            let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            let arr = v["series"].as_array().unwrap();
            prop_assert_eq!(arr.len(), p.items);
            for s in arr {
                got.push(s["metric"].as_str().unwrap().to_string());
            }
        }
        prop_assert_eq!(got, expected);
        prop_assert_eq!(ser.stats().item_drops - drops_before, too_big);
    }

    #[test]
    fn sketches_props(
        c in compression(),
        l in limits(),
        raw in proptest::collection::vec(
            (text(20), tags(), proptest::collection::vec(
                (0i64..2_000_000_000, 0i64..100, finite(),
                 proptest::collection::vec((any::<i32>(), any::<u32>()), 0..40)), 0..6)),
            0..40),
    ) {
        let cfg = config(c, l);
        let sketches: Vec<SketchSeries> = raw.into_iter().enumerate().map(|(i, (name, tags, ds))| SketchSeries {
            id: SeriesId::owned(format!("k{i}.{name}"), "h".into(), tags),
            dogsketches: ds.into_iter().map(|(ts, cnt, v, kv)| Dogsketch {
                ts, cnt, min: v, max: v, avg: v, sum: v,
                keys: kv.iter().map(|x| x.0).collect(),
                counts: kv.iter().map(|x| x.1).collect(),
            }).collect(),
        }).collect();
        let mut ser = Serializer::new(cfg).unwrap();
        let mut out = Vec::new();
        ser.sketches(std::iter::empty(), &mut out);
        prop_assert!(out.is_empty());
        let mut expected = Vec::new();
        let mut too_big = 0;
        let mut buf = Vec::new();
        for s in &sketches {
            buf.clear();
            proto::encode_sketch(&mut buf, s);
            if ser.builder().fits_alone(buf.len(), 0) { expected.push(s.id.name().into_owned()); } else { too_big += 1; }
        }
        ser.sketches(sketches.iter(), &mut out);
        let mut got = Vec::new();
        for p in &out {
            let raw = check_limits(&cfg, p, cfg.max_payload_size, cfg.max_uncompressed_payload_size);
            prop_assert!(raw.ends_with(&[0x12, 0x00]));
            let m = <SketchPayload as prost::Message>::decode(&raw[..]).unwrap();
            prop_assert!(m.metadata.is_some());
            prop_assert_eq!(m.sketches.len(), p.items);
            for s in m.sketches {
                let orig = sketches.iter().find(|o| o.id.name() == s.metric).unwrap();
                prop_assert_eq!(s.dogsketches.len(), orig.dogsketches.len());
                for (d, o) in s.dogsketches.iter().zip(&orig.dogsketches) {
                    prop_assert_eq!(&d.k, &o.keys);
                    prop_assert_eq!(&d.n, &o.counts);
                }
                got.push(s.metric);
            }
        }
        prop_assert_eq!(got, expected);
        prop_assert_eq!(ser.stats().sketch_too_big, too_big);
    }

    #[test]
    fn service_checks_props(
        c in compression(),
        l in limits(),
        raw in proptest::collection::vec((text(30), text(300), tags(), 0u8..4), 0..60),
    ) {
        let cfg = config(c, l);
        let checks: Vec<ServiceCheck> = raw.into_iter().enumerate().map(|(i, (name, msg, tags, st))| ServiceCheck {
            check: format!("c{i}.{name}"), host_name: "h".into(), timestamp: 1_700_000_000 + i as i64,
            status: st, message: msg, tags,
        }).collect();
        let mut ser = Serializer::new(cfg).unwrap();
        let mut out = Vec::new();
        ser.service_checks(std::iter::empty(), &mut out);
        prop_assert_eq!(out.len(), 1);
        out.clear();
        let mut expected = Vec::new();
        let mut too_big = 0;
        let mut buf = Vec::new();
        for s in &checks {
            buf.clear();
            json::render_service_check(&mut buf, s);
            if ser.builder().fits_alone(buf.len(), 0) { expected.push(s.check.clone()); } else { too_big += 1; }
        }
        ser.service_checks(checks.iter(), &mut out);
        let mut got = Vec::new();
        for p in &out {
            let raw = check_limits(&cfg, p, cfg.max_payload_size, cfg.max_uncompressed_payload_size);
            let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            for s in v.as_array().unwrap() {
                got.push(s["check"].as_str().unwrap().to_string());
            }
        }
        prop_assert_eq!(got, expected);
        prop_assert_eq!(ser.stats().item_drops, too_big);
    }

    #[test]
    fn events_props(
        c in compression(),
        l in limits(),
        raw in proptest::collection::vec(
            (text(30), text(1500), tags(), prop_oneof![Just(""), Just("api"), Just("ci"), Just("a\"b"), Just("zz")]),
            0..60),
        host in text(20),
    ) {
        let cfg = config(c, l);
        let mut events: Vec<Event> = raw.into_iter().enumerate().map(|(i, (title, txt, tags, src))| Event {
            title: format!("e{i}.{title}"), text: txt, timestamp: i as i64, host: "h".into(), tags,
            source_type_name: src.to_string(), ..Event::default()
        }).collect();
        let mut ser = Serializer::new(cfg).unwrap();
        let mut out = Vec::new();
        // Expected: stable sort by group key, keep those that fit alone.
        let mut sorted = events.clone();
        sorted.sort_by(|a, b| json::event_group(a).cmp(json::event_group(b)));
        // Prime the builder with the events framing (one tiny event).
        let mut prime = vec![Event::default()];
        ser.events(&mut prime, &host, &mut out);
        out.clear();
        let base = ser.stats();
        let mut expected = Vec::new();
        let mut dropped = 0;
        let mut buf = Vec::new();
        for e in &sorted {
            buf.clear();
            json::write_str(&mut buf, json::event_group(e));
            buf.extend_from_slice(b":[");
            json::render_event(&mut buf, e);
            if ser.builder().fits_alone(buf.len(), 0) { expected.push(e.title.clone()); } else { dropped += 1; }
        }
        ser.events(&mut events, &host, &mut out);
        let mut got = Vec::new();
        for p in &out {
            let raw = check_limits(&cfg, p, cfg.max_payload_size, cfg.max_uncompressed_payload_size);
            prop_assert!(p.items > 0);
            let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            prop_assert_eq!(v["internalHostname"].as_str().unwrap(), host.as_str());
            prop_assert_eq!(v["apiKey"].as_str().unwrap(), "");
            let mut n = 0;
            for (g, arr) in v["events"].as_object().unwrap() {
                for e in arr.as_array().unwrap() {
                    let src = e.get("source_type_name").and_then(|s| s.as_str()).unwrap_or("api");
                    prop_assert_eq!(src, g.as_str());
                    got.push(e["msg_title"].as_str().unwrap().to_string());
                    n += 1;
                }
            }
            prop_assert_eq!(n, p.items);
        }
        prop_assert_eq!(&got, &expected);
        prop_assert_eq!(ser.stats().events_dropped - base.events_dropped, dropped);
        prop_assert_eq!(ser.stats().events_sent - base.events_sent, expected.len() as u64);
    }
}
