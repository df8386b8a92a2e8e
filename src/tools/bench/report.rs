//! Turning a bench run into numbers: counting processed samples from the
//! intake's decoded payloads, the JSON report, the table and the SVG plot.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::workload::{Kind, KINDS, NAME_PREFIX};

/// Samples the target processed, by kind, recovered from its payloads.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Processed {
    /// Samples by kind (counter, gauge, distribution, set, histogram).
    pub samples: [u64; 5],
    /// Payload requests received.
    pub payloads: u64,
    /// Compressed body bytes received.
    pub compressed_bytes: u64,
    /// Uncompressed body bytes received.
    pub uncompressed_bytes: u64,
    /// Series and sketch contexts seen (distinct name+tags).
    pub contexts: u64,
}

fn kind_of(metric: &str) -> Option<(Kind, bool)> {
    let rest = metric.strip_prefix(NAME_PREFIX)?;
    let (label, rest) = rest.split_once('.')?;
    let kind = Kind::from_label(label)?;
    // Histograms: only the `.count` aggregate counts samples.
    let is_count = rest.ends_with(".count");
    Some((kind, is_count))
}

fn tags_key(metric: &str, tags: Option<&Vec<Value>>) -> String {
    let mut k = metric.to_string();
    for t in tags.into_iter().flatten() {
        k.push('|');
        k.push_str(t.as_str().unwrap_or_default());
    }
    k
}

/// Counts processed samples in stored intake records (the JSON of
/// `/intake/payloads`): series v1/v2 and sketches.
pub fn count_processed(records: &[Value]) -> Processed {
    let mut p = Processed::default();
    let mut gauges: HashMap<String, f64> = HashMap::new();
    let mut contexts: std::collections::HashSet<String> = Default::default();
    let mut sums = [0f64; 5];
    for r in records {
        p.payloads += 1;
        p.compressed_bytes += r["compressed_bytes"].as_u64().unwrap_or(0);
        p.uncompressed_bytes += r["uncompressed_bytes"].as_u64().unwrap_or(0);
        let path = r["path"].as_str().unwrap_or_default();
        let body = &r["body"];
        if path == "/api/v2/series" || path == "/api/v1/series" {
            for s in body["series"].as_array().into_iter().flatten() {
                let metric = s["metric"].as_str().unwrap_or_default();
                let Some((kind, is_count)) = kind_of(metric) else { continue };
                let interval = s["interval"].as_f64().filter(|i| *i > 0.0).unwrap_or(10.0);
                let key = tags_key(metric, s["tags"].as_array());
                if kind != Kind::Histogram || is_count {
                    contexts.insert(key.clone());
                }
                for pt in s["points"].as_array().into_iter().flatten() {
                    let v = if path == "/api/v1/series" { pt[1].as_f64() } else { pt["value"].as_f64() }.unwrap_or(0.0);
                    match kind {
                        Kind::Counter => sums[0] += v * interval,
                        Kind::Gauge => {
                            let e = gauges.entry(key.clone()).or_insert(0.0);
                            *e = e.max(v);
                        }
                        Kind::Set => sums[3] += v,
                        Kind::Histogram if is_count => sums[4] += v * interval,
                        _ => {}
                    }
                }
            }
        } else if path == "/api/beta/sketches" {
            for s in body["sketches"].as_array().into_iter().flatten() {
                let metric = s["metric"].as_str().unwrap_or_default();
                if !matches!(kind_of(metric), Some((Kind::Distribution, _))) {
                    continue;
                }
                contexts.insert(tags_key(metric, s["tags"].as_array()));
                for d in s["dogsketches"].as_array().into_iter().flatten() {
                    sums[2] += d["cnt"].as_f64().unwrap_or(0.0);
                }
            }
        }
    }
    sums[1] = gauges.values().sum();
    for (i, s) in sums.iter().enumerate() {
        p.samples[i] = s.round().max(0.0) as u64;
    }
    p.contexts = contexts.len() as u64;
    p
}

/// One point of the timeline (sampled every `sample_ms`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TimePoint {
    /// Seconds since the start of sending.
    pub t_s: f64,
    /// Lines sent in this interval, per second.
    pub sent_lines_per_s: f64,
    /// Datagrams dropped by the kernel in this interval, per second.
    pub kernel_drops_per_s: f64,
    /// Target CPU use in this interval (1.0 = one core).
    pub target_cpu_cores: f64,
    /// Target resident set size.
    pub target_rss_bytes: u64,
    /// Bytes waiting in the target's socket receive queues.
    pub rx_queue_bytes: u64,
}

/// Flush durations reported by the target (merge + encode + compress + hand-off).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlushLatency {
    /// Flushes observed.
    pub count: u64,
    /// Percentiles in microseconds.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl FlushLatency {
    /// Summary of a histogram of microseconds.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> FlushLatency {
        FlushLatency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }
}

/// The whole report (`--json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `edgestat` (started by the harness) or `external`.
    pub target: String,
    /// UDP address driven.
    pub address: String,
    /// Target pid when known.
    pub target_pid: Option<u32>,
    /// Workload parameters.
    pub workload: serde_json::Value,
    /// Sending time.
    pub duration_s: f64,
    /// Lines handed to the kernel.
    pub lines_sent: u64,
    /// Samples (values) handed to the kernel.
    pub samples_sent: u64,
    /// Datagrams handed to the kernel.
    pub packets_sent: u64,
    /// Datagram payload bytes sent.
    pub bytes_sent: u64,
    /// Average datagram size.
    pub avg_packet_bytes: f64,
    /// Lines sent per second of sending.
    pub lines_per_s_sent: f64,
    /// Samples processed (recovered from payloads; gauges estimated, see
    /// `by_kind`); `None` without an intake view.
    pub samples_processed: Option<u64>,
    /// Lines processed (per kind: samples processed × lines/samples sent).
    pub lines_processed: Option<u64>,
    /// Lines processed per second of sending.
    pub lines_per_s_processed: Option<f64>,
    /// Datagrams processed per second (packets × processed fraction).
    pub packets_per_s_processed: Option<f64>,
    /// 1 − processed / sent, over the exactly counted kinds (all but gauges).
    pub loss_ratio: Option<f64>,
    /// Datagrams the kernel dropped on the target's sockets during the run.
    pub kernel_drops: u64,
    /// Sent / processed samples by kind.
    pub by_kind: serde_json::Value,
    /// Target CPU time spent between start of sending and an empty receive queue.
    pub target_cpu_s: Option<f64>,
    /// CPU nanoseconds per processed line.
    pub cpu_ns_per_line: Option<f64>,
    /// CPU nanoseconds per processed datagram.
    pub cpu_ns_per_datagram: Option<f64>,
    /// CPU of the whole idle target before sending, % of one core.
    pub idle_cpu_pct: Option<f64>,
    /// Lines processed per CPU-second of the target (lines/s per core).
    pub lines_per_cpu_s: Option<f64>,
    /// Datagrams processed per CPU-second of the target.
    pub packets_per_cpu_s: Option<f64>,
    /// Target RSS at the end of sending.
    pub rss_bytes: Option<u64>,
    /// Peak target RSS (VmHWM) over the whole run, the final flush
    /// included when the harness started the target.
    pub rss_peak_bytes: Option<u64>,
    /// Flush durations reported by the target.
    pub flush_latency: Option<FlushLatency>,
    /// What the intake received.
    pub intake: Option<Processed>,
    /// Uncompressed / compressed payload bytes.
    pub compression_ratio: Option<f64>,
    /// Send calls that failed.
    pub send_errors: u64,
    /// Timeline.
    pub timeline: Vec<TimePoint>,
    /// Burst mode measurements (`--burst`).
    pub burst: Option<super::burst::BurstStats>,
}

fn human(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

impl Report {
    /// The human table printed on stdout.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let opt = |v: Option<String>| v.unwrap_or_else(|| "n/a".into());
        rows.push((
            "target".into(),
            format!("{} {} (pid {})", self.target, self.address, opt(self.target_pid.map(|p| p.to_string()))),
        ));
        rows.push(("duration".into(), format!("{:.1} s", self.duration_s)));
        rows.push(("lines sent".into(), format!("{} ({}/s)", self.lines_sent, human(self.lines_per_s_sent))));
        rows.push(("datagrams sent".into(), format!("{} (avg {:.0} B)", self.packets_sent, self.avg_packet_bytes)));
        rows.push((
            "lines processed".into(),
            opt(self.lines_processed.map(|l| format!("{l} ({}/s)", human(self.lines_per_s_processed.unwrap_or(0.0))))),
        ));
        rows.push((
            "samples sent / processed".into(),
            format!("{} / {}", self.samples_sent, opt(self.samples_processed.map(|s| s.to_string()))),
        ));
        rows.push(("loss".into(), opt(self.loss_ratio.map(|l| format!("{:.4} %", l * 100.0)))));
        rows.push(("kernel drops".into(), self.kernel_drops.to_string()));
        rows.push(("target CPU".into(), opt(self.target_cpu_s.map(|c| format!("{c:.2} s")))));
        rows.push(("CPU per line".into(), opt(self.cpu_ns_per_line.map(|n| format!("{n:.0} ns")))));
        rows.push(("CPU per datagram".into(), opt(self.cpu_ns_per_datagram.map(|n| format!("{n:.0} ns")))));
        if let Some(idle) = self.idle_cpu_pct {
            rows.push(("idle CPU".into(), format!("{idle:.3} % of a core")));
        }
        rows.push(("lines/s per core".into(), opt(self.lines_per_cpu_s.map(human))));
        rows.push(("datagrams/s per core".into(), opt(self.packets_per_cpu_s.map(human))));
        rows.push((
            "RSS (end / peak)".into(),
            format!(
                "{} / {}",
                opt(self.rss_bytes.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0))),
                opt(self.rss_peak_bytes.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0)))
            ),
        ));
        rows.push((
            "flush latency p50/p90/p99/max".into(),
            opt(self.flush_latency.as_ref().map(|f| {
                format!(
                    "{:.1}/{:.1}/{:.1}/{:.1} ms ({} flushes)",
                    f.p50_us as f64 / 1e3,
                    f.p90_us as f64 / 1e3,
                    f.p99_us as f64 / 1e3,
                    f.max_us as f64 / 1e3,
                    f.count
                )
            })),
        ));
        rows.push((
            "payloads".into(),
            opt(self.intake.as_ref().map(|i| {
                format!(
                    "{} requests, {} B compressed, {} B raw, ratio {:.2}",
                    i.payloads,
                    i.compressed_bytes,
                    i.uncompressed_bytes,
                    self.compression_ratio.unwrap_or(0.0)
                )
            })),
        ));
        if let Some(b) = &self.burst {
            rows.push((
                "burst rounds × datagrams".into(),
                format!(
                    "{} × {} (queue {:.0} B/datagram, peak {} B, drops {})",
                    b.rounds, b.datagrams_per_round, b.queue_bytes_per_datagram, b.peak_queue_bytes, b.kernel_drops
                ),
            ));
            rows.push((
                "burst CPU per datagram".into(),
                format!(
                    "{:.0} ns all threads, {:.0} ns shard threads",
                    b.cpu_ns_per_datagram, b.shard_cpu_ns_per_datagram
                ),
            ));
            rows.push((
                "burst datagrams/s".into(),
                format!(
                    "{}/s per core, {}/s wall clock while draining",
                    human(b.datagrams_per_cpu_s),
                    human(b.datagrams_per_wall_s)
                ),
            ));
        }
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter().map(|(k, v)| format!("{k:<w$}  {v}\n")).collect()
    }

    /// The throughput / loss / CPU plot as a standalone SVG.
    pub fn svg(&self) -> String {
        let (w, h, ml, mr, mt, mb) = (900.0, 420.0, 70.0, 70.0, 40.0, 50.0);
        let pw = w - ml - mr;
        let ph = h - mt - mb;
        let tmax = self.timeline.iter().map(|p| p.t_s).fold(1.0f64, f64::max);
        let ymax =
            self.timeline.iter().map(|p| p.sent_lines_per_s.max(p.kernel_drops_per_s)).fold(1.0f64, f64::max) * 1.1;
        let cmax = self.timeline.iter().map(|p| p.target_cpu_cores).fold(1.0f64, f64::max);
        let x = |t: f64| ml + t / tmax * pw;
        let y = |v: f64| mt + ph - v / ymax * ph;
        let yc = |v: f64| mt + ph - v / cmax * ph;
        let line = |f: &dyn Fn(&TimePoint) -> (f64, f64)| -> String {
            self.timeline
                .iter()
                .map(|p| {
                    let (a, b) = f(p);
                    format!("{a:.1},{b:.1}")
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut s = String::new();
        s.push_str(&format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n"));
        s.push_str(&format!("<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"));
        s.push_str(&format!(
            "<text x=\"{ml}\" y=\"22\" font-size=\"14\">edgestat bench: {} — {} lines/s sent, loss {}</text>\n",
            self.address,
            human(self.lines_per_s_sent),
            self.loss_ratio.map(|l| format!("{:.3} %", l * 100.0)).unwrap_or_else(|| "n/a".into())
        ));
        s.push_str(&format!(
            "<rect x=\"{ml}\" y=\"{mt}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>\n"
        ));
        for i in 0..=4 {
            let v = ymax * i as f64 / 4.0;
            let yy = y(v);
            s.push_str(&format!(
                "<line x1=\"{ml}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#eee\"/>\n",
                ml + pw
            ));
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                ml - 6.0,
                yy + 4.0,
                human(v)
            ));
            let c = cmax * i as f64 / 4.0;
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{:.1}\" fill=\"#2a2\">{c:.2}</text>\n",
                ml + pw + 6.0,
                yc(c) + 4.0
            ));
            let t = tmax * i as f64 / 4.0;
            s.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{t:.1} s</text>\n",
                x(t),
                mt + ph + 18.0
            ));
        }
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/>\n",
            line(&|p| (x(p.t_s), y(p.sent_lines_per_s)))
        ));
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"{}\"/>\n",
            line(&|p| (x(p.t_s), y(p.kernel_drops_per_s)))
        ));
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"#2a2\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\" points=\"{}\"/>\n",
            line(&|p| (x(p.t_s), yc(p.target_cpu_cores)))
        ));
        let ly = h - 12.0;
        s.push_str(&format!("<text x=\"{ml}\" y=\"{ly}\" fill=\"#1f77b4\">— lines/s sent</text>\n"));
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{ly}\" fill=\"#d62728\">— kernel drops (datagrams/s)</text>\n",
            ml + 150.0
        ));
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{ly}\" fill=\"#2a2\">- - target CPU (cores, right axis)</text>\n",
            ml + 390.0
        ));
        s.push_str("</svg>\n");
        s
    }
}

/// Per-kind sent/processed as JSON.
pub fn by_kind(lines: &[u64; 5], samples: &[u64; 5], processed: Option<&Processed>) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for k in KINDS {
        let i = k.index();
        m.insert(
            k.label().to_string(),
            serde_json::json!({
                "lines_sent": lines[i],
                "samples_sent": samples[i],
                "samples_processed": processed.map(|p| p.samples[i]),
                "counted": if k == Kind::Gauge { "sum of last values (equals samples_sent when nothing was lost; blind to loss)" } else { "exact" },
            }),
        );
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_every_kind() {
        let recs = vec![
            json!({"path":"/api/v2/series","compressed_bytes":10,"uncompressed_bytes":40,"body":{"series":[
                {"metric":"bench.c.m1","interval":10,"tags":["a"],"points":[{"timestamp":0,"value":0.5},{"timestamp":10,"value":0.0}]},
                {"metric":"bench.g.m1","interval":0,"tags":["a"],"points":[{"timestamp":0,"value":3.0},{"timestamp":10,"value":7.0}]},
                {"metric":"bench.g.m1","interval":0,"tags":["b"],"points":[{"timestamp":0,"value":2.0}]},
                {"metric":"bench.s.m0","interval":0,"tags":["a"],"points":[{"timestamp":0,"value":4.0}]},
                {"metric":"bench.h.m0.count","interval":10,"tags":["a"],"points":[{"timestamp":0,"value":0.3}]},
                {"metric":"bench.h.m0.max","interval":0,"tags":["a"],"points":[{"timestamp":0,"value":99.0}]},
                {"metric":"datadog.agent.running","interval":0,"points":[{"timestamp":0,"value":1.0}]}
            ]}}),
            json!({"path":"/api/beta/sketches","compressed_bytes":5,"uncompressed_bytes":20,"body":{"sketches":[
                {"metric":"bench.d.m2","tags":["x"],"dogsketches":[{"cnt":6},{"cnt":2}]}
            ]}}),
        ];
        let p = count_processed(&recs);
        assert_eq!(p.samples, [5, 9, 8, 4, 3]);
        assert_eq!((p.payloads, p.compressed_bytes, p.uncompressed_bytes), (2, 15, 60));
        assert_eq!(p.contexts, 6);
    }
}
