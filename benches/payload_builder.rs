//! Series v2 payload building from ~100k series versus compressing the same
//! raw protobuf bytes in one shot with the bare compressor. Throughput is in
//! uncompressed bytes, so builder/raw MB/s can be compared directly.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use edgestat::core::model::{MetricType, Origin, Point, Series, SeriesId};
use edgestat::core::serializer::builder::{AddError, PayloadBuilder};
use edgestat::core::serializer::{proto, Compression, Serializer, SerializerConfig};

fn make_series(n: usize) -> Vec<Series> {
    (0..n)
        .map(|i| Series {
            id: SeriesId::owned(
                format!("app.request.latency.{}", i % 300),
                format!("host-{}", i % 7),
                vec![
                    "env:prod".to_string(),
                    format!("service:svc-{}", i % 40),
                    format!("endpoint:/api/v{}/item/{}", i % 3, i % 1000),
                    format!("pod:pod-{}", i),
                ],
            ),
            points: vec![Point { timestamp: 1_700_000_000 + (i as i64 % 10), value: (i as f64) * 0.37 }],
            metric_type: if i % 2 == 0 { MetricType::Gauge } else { MetricType::Rate },
            interval: 10,
            source_type_name: String::new(),
            origin: Origin::DogStatsD,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let series = make_series(100_000);
    let mut raw = Vec::new();
    let mut items = Vec::with_capacity(series.len());
    for s in &series {
        let start = raw.len();
        proto::encode_series(&mut raw, s);
        items.push(start..raw.len());
    }
    let mut g = c.benchmark_group("series_v2_100k");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.sample_size(10);

    g.bench_function("encode_only", |b| {
        let mut buf = Vec::with_capacity(raw.len());
        b.iter(|| {
            buf.clear();
            for s in &series {
                proto::encode_series(&mut buf, s);
            }
            black_box(buf.len())
        })
    });

    for (name, comp) in [("zstd1", Compression::Zstd { level: 1 }), ("zlib", Compression::Zlib)] {
        let cfg = SerializerConfig { compression: comp, ..SerializerConfig::default() };
        let mut ser = Serializer::new(cfg).expect("serializer");
        let mut out = Vec::with_capacity(256);
        g.bench_function(format!("builder_{name}"), |b| {
            b.iter(|| {
                out.clear();
                ser.series_v2(series.iter(), &mut out);
                black_box(out.len())
            })
        });
        out.clear();
        ser.series_v2(series.iter(), &mut out);
        let total: usize = out.iter().map(|p| p.body.len()).sum();
        eprintln!(
            "builder_{name}: {} payloads, {} -> {} bytes (ratio {:.2})",
            out.len(),
            raw.len(),
            total,
            raw.len() as f64 / total as f64
        );
    }

    // The builder alone on the same bytes (items already encoded): what the
    // size-limit bookkeeping and chunked flushes cost over one-shot compression.
    for (name, comp) in [("zstd1", Compression::Zstd { level: 1 }), ("zlib", Compression::Zlib)] {
        let limits = SerializerConfig::default().series_limits();
        let mut b = PayloadBuilder::new(comp).expect("builder");
        b.configure(b"", b"", b"", limits);
        let mut payloads = 0usize;
        g.bench_function(format!("builder_items_{name}"), |bench| {
            bench.iter(|| {
                payloads = 0;
                for r in &items {
                    let item = &raw[r.clone()];
                    match b.add_item(item, 1) {
                        Ok(()) => {}
                        Err(AddError::PayloadFull) => {
                            black_box(b.close().expect("close").body.len());
                            payloads += 1;
                            b.add_item(item, 1).expect("fits in an empty payload");
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                black_box(b.close().expect("close").body.len());
                payloads + 1
            })
        });
    }

    {
        let mut comp = zstd::bulk::Compressor::new(1).expect("zstd");
        let mut dst = Vec::with_capacity(zstd::zstd_safe::compress_bound(raw.len()));
        g.bench_function("raw_zstd1", |b| {
            b.iter(|| {
                dst.clear();
                black_box(comp.compress_to_buffer(&raw, &mut dst).expect("zstd"))
            })
        });
        eprintln!("raw_zstd1: {} -> {} bytes", raw.len(), dst.len());
    }
    {
        let mut c = flate2::Compress::new(flate2::Compression::new(6), true);
        let mut dst = Vec::with_capacity(raw.len() + raw.len() / 1000 + 64);
        g.bench_function("raw_zlib", |b| {
            b.iter(|| {
                c.reset();
                dst.clear();
                c.compress_vec(&raw, &mut dst, flate2::FlushCompress::Finish).expect("zlib");
                black_box(dst.len())
            })
        });
        eprintln!("raw_zlib: {} -> {} bytes", raw.len(), dst.len());
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
