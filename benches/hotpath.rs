//! The per-line hot path and the flush path, on the `edgestat bench`
//! workload (seed 1): parser, shard insert (parse + enrich + aggregate),
//! flush of 100k contexts (merge + encode + compress) and each compressor.
//! Throughput is reported per line (ns/line = 1e9 / elements/s) or per
//! uncompressed byte (MB/s).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use edgestat::core::aggregator::FlushMerger;
use edgestat::core::protocol::{lines, parse_line, Message, ParseOptions};
use edgestat::core::serializer::{proto, Compression, Serializer, SerializerConfig, StreamEncoder};
use edgestat::core::shard::ShardState;
use edgestat::tools::bench::workload::{Workload, WorkloadConfig};

fn corpus(contexts: usize, packets: usize, single: bool) -> (Vec<Vec<u8>>, u64, u64) {
    let mut w = Workload::new(WorkloadConfig::standard(contexts, single));
    let out = w.packets(packets);
    (out, w.generated.total_lines(), w.generated.bytes)
}

fn shard() -> ShardState {
    ShardState::new(edgestat::tools::bench::workload::bench_shard_settings(1_000_000))
}

const NOW: i64 = 1_700_000_001;

fn parse_and_insert(c: &mut Criterion) {
    for (label, single, packets) in [("packed8k", false, 300), ("single150b", true, 20_000)] {
        let (pk, nlines, nbytes) = corpus(3000, packets, single);
        let opts = ParseOptions::default();
        let mut g = c.benchmark_group(format!("parse_{label}"));
        g.throughput(Throughput::Elements(nlines));
        g.bench_function("lines", |b| {
            b.iter(|| {
                let mut n = 0u64;
                for p in &pk {
                    for l in lines(p) {
                        if let Ok(Message::Metric(m)) = parse_line(l, &opts) {
                            n += m.values().count() as u64;
                        }
                    }
                }
                black_box(n)
            })
        });
        g.finish();
        let mut g = c.benchmark_group(format!("parse_bytes_{label}"));
        g.throughput(Throughput::Bytes(nbytes));
        g.bench_function("bytes", |b| {
            b.iter(|| {
                let mut n = 0usize;
                for p in &pk {
                    for l in lines(p) {
                        n += parse_line(l, &opts).is_ok() as usize;
                    }
                }
                black_box(n)
            })
        });
        g.finish();

        // Steady state: every context already exists in the open bucket.
        let mut s = shard();
        for p in &pk {
            s.handle_datagram(p, NOW, 1);
        }
        let mut g = c.benchmark_group(format!("shard_insert_{label}"));
        g.throughput(Throughput::Elements(nlines));
        g.bench_function("handle_datagram", |b| {
            let mut seq = 2;
            b.iter(|| {
                for p in &pk {
                    seq += 1;
                    s.handle_datagram(p, NOW, seq);
                }
            })
        });
        g.finish();
    }
}

fn flush_100k(c: &mut Criterion) {
    // ~100k contexts touched (uniform choice: 400k lines reach ~98%).
    let (pk, _, _) = corpus(100_000, 12_000, false);
    let settings = edgestat::tools::bench::workload::bench_flush_settings();
    let mut ser = Serializer::new(SerializerConfig::default()).expect("serializer");
    let mut g = c.benchmark_group("flush_100k");
    g.sample_size(10);
    let mut reported = false;
    g.bench_function("merge_encode_compress", |b| {
        b.iter_batched(
            || {
                let mut s = shard();
                for p in &pk {
                    s.handle_datagram(p, NOW, 1);
                }
                s.take_flush(NOW + 20, false)
            },
            |f| {
                let contexts = f.metrics.len() + f.sketches.len();
                let mut merger = FlushMerger::new(settings.clone(), 10_000_000);
                let out = merger.flush(f.metrics, f.sketches, NOW + 20);
                let mut payloads = Vec::new();
                ser.series_v2(out.series.iter(), &mut payloads);
                ser.sketches(out.sketches.iter(), &mut payloads);
                if !reported {
                    reported = true;
                    let bytes: usize = payloads.iter().map(|p| p.body.len()).sum();
                    eprintln!(
                        "flush_100k: {contexts} contexts -> {} series, {} sketches, {} payloads, {bytes} bytes",
                        out.series.len(),
                        out.sketches.len(),
                        payloads.len()
                    );
                }
                black_box(payloads.len())
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn compressors(c: &mut Criterion) {
    // A realistic series v2 body: what 20k contexts of the workload render to.
    let (pk, _, _) = corpus(20_000, 3_000, false);
    let mut s = shard();
    for p in &pk {
        s.handle_datagram(p, NOW, 1);
    }
    let f = s.take_flush(NOW + 20, false);
    let settings = edgestat::tools::bench::workload::bench_flush_settings();
    let out = FlushMerger::new(settings, 10_000_000).flush(f.metrics, f.sketches, NOW + 20);
    let mut raw = Vec::new();
    for s in &out.series {
        proto::encode_series(&mut raw, s);
    }
    let mut g = c.benchmark_group("compress_series_body");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.sample_size(10);
    for (name, kind) in [
        ("zstd1", Compression::Zstd { level: 1 }),
        ("zstd3", Compression::Zstd { level: 3 }),
        ("zlib", Compression::Zlib),
        ("gzip", Compression::Gzip),
        ("lz4", Compression::Lz4),
        ("none", Compression::None),
    ] {
        let mut enc = StreamEncoder::new(kind).expect("encoder");
        let mut dst = Vec::with_capacity(raw.len() + 1024);
        g.bench_function(name, |b| {
            b.iter(|| {
                dst.clear();
                enc.begin(&mut dst).expect("begin");
                for chunk in raw.chunks(64 * 1024) {
                    enc.write(chunk, &mut dst).expect("write");
                }
                enc.finish(&mut dst).expect("finish");
                black_box(dst.len())
            })
        });
        eprintln!(
            "compress {name}: {} -> {} bytes (ratio {:.2})",
            raw.len(),
            dst.len(),
            raw.len() as f64 / dst.len().max(1) as f64
        );
    }
    g.finish();
}

criterion_group!(benches, parse_and_insert, flush_100k, compressors);
criterion_main!(benches);
