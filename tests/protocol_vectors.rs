//! Real client datagrams and the malformed corpus in `tests/data/vectors`,
//! checked against the parser (public API only).

use std::collections::{HashMap, HashSet};

use base64::Engine;
use edgestat::core::protocol::{
    lines, parse_line, AlertType, EventMessage, EventPriority, ExternalData, LocalData, Message, MetricKind,
    MetricSample, ParseError, ParseOptions, ServiceCheckMessage,
};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/vectors");

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap_or_else(|e| panic!("bad base64 {s:?}: {e}"))
}

fn show(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

/// One captured datagram.
struct Dgram {
    bytes: Vec<u8>,
    call: String,
}

fn load_dgrams(file: &str) -> Vec<Dgram> {
    let path = format!("{VECTORS}/{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            Dgram {
                bytes: b64(v["bytes_b64"].as_str().unwrap_or_default()),
                call: v["call"].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

/// `(file, lines after splitting)` from the README table.
const FILES: &[(&str, usize)] = &[
    ("datadogpy-0.56.0.dgrams", 452),
    ("hot-shots-17.1.1.dgrams", 116),
    ("cadence-1.8.0.dgrams", 67),
    ("dogstatsd-rs-0.12.4.dgrams", 58),
    ("pystatsd-4.0.1.dgrams", 100),
    ("node-statsd-0.1.1.dgrams", 16),
];

/// Every line from a real client that the Agent drops, with the reason we
/// report. Keyed by (file, exact line text after splitting). Everything else
/// in the `.dgrams` files must parse.
const EXPECTED_REJECTIONS: &[(&str, &str, ParseError)] = &[
    // datadogpy: Python bool, unsanitized names, invalid status.
    ("datadogpy-0.56.0.dgrams", "bool.value:True|g", ParseError::InvalidValue),
    // First ':' ends the name; "with" is not a float in the packed list.
    ("datadogpy-0.56.0.dgrams", "name:with:colons:1|c", ParseError::InvalidValue),
    // First '|' ends name:value, leaving "name" without ':'.
    ("datadogpy-0.56.0.dgrams", "name|with|pipes:1|c", ParseError::MissingColon),
    ("datadogpy-0.56.0.dgrams", "_sc|app.is_ok|7", ParseError::ServiceCheckStatus),
    // hot-shots: string value, raw newline in event title and check message.
    ("hot-shots-17.1.1.dgrams", "string.value:abc|g", ParseError::InvalidValue),
    ("hot-shots-17.1.1.dgrams", "_e{18,4}:Title", ParseError::EventTooShort),
    ("hot-shots-17.1.1.dgrams", "with newline|text", ParseError::MissingColon),
    ("hot-shots-17.1.1.dgrams", "line m:message | pipe", ParseError::UnknownType),
    ("hot-shots-17.1.1.dgrams", "_sc|app.is_ok|7", ParseError::ServiceCheckStatus),
    // cadence: meter type, T0, empty name, raw newline in a name.
    ("cadence-1.8.0.dgrams", "requests.meter:8|m", ParseError::UnknownType),
    ("cadence-1.8.0.dgrams", "ts.zero:5|c|T0", ParseError::NonPositiveTimestamp),
    ("cadence-1.8.0.dgrams", ":1|c", ParseError::EmptyName),
    ("cadence-1.8.0.dgrams", "name:with|bad", ParseError::UnknownType),
    // dogstatsd-rs: string values, empty name, raw newlines.
    ("dogstatsd-rs-0.12.4.dgrams", "not.a.number:abc|g", ParseError::InvalidValue),
    ("dogstatsd-rs-0.12.4.dgrams", "empty.value:|g", ParseError::EmptyValue),
    ("dogstatsd-rs-0.12.4.dgrams", ":1|c", ParseError::EmptyName),
    ("dogstatsd-rs-0.12.4.dgrams", "name:with|bad", ParseError::UnknownType),
    ("dogstatsd-rs-0.12.4.dgrams", "_e{10,17}:Multi-line|line one", ParseError::EventTooShort),
    ("dogstatsd-rs-0.12.4.dgrams", "line two", ParseError::MissingPipe),
    ("dogstatsd-rs-0.12.4.dgrams", "line m:message | pipe", ParseError::UnknownType),
    // node-statsd: raw newline in a name.
    ("node-statsd-0.1.1.dgrams", "name:with|bad", ParseError::UnknownType),
];

fn rejection_table() -> HashMap<(&'static str, &'static [u8]), ParseError> {
    EXPECTED_REJECTIONS.iter().map(|(f, l, e)| ((*f, l.as_bytes()), *e)).collect()
}

#[test]
fn every_client_line_has_the_agent_outcome() {
    let table = rejection_table();
    let mut used = HashSet::new();
    let opts = ParseOptions::default();
    for (file, expected_lines) in FILES {
        let mut count = 0;
        for d in load_dgrams(file) {
            for line in lines(&d.bytes) {
                count += 1;
                assert!(!line.is_empty() && !line.contains(&b'\n'));
                let res = parse_line(line, &opts);
                match table.get(&(*file, line)) {
                    Some(want) => {
                        used.insert((*file, line.to_vec()));
                        assert_eq!(
                            res.as_ref().err(),
                            Some(want),
                            "{file}: {} (call {}) should be rejected",
                            show(line),
                            d.call
                        );
                    }
                    None => {
                        if let Err(e) = res {
                            panic!("{file}: {} (call {}) failed: {e}", show(line), d.call);
                        }
                    }
                }
            }
        }
        assert_eq!(count, *expected_lines, "{file}: line count");
    }
    for (f, l, _) in EXPECTED_REJECTIONS {
        assert!(used.contains(&(*f, l.as_bytes().to_vec())), "table entry never seen: {f} {l:?}");
    }
}

/// All parsed lines of one file, keyed by their text (first occurrence).
struct Corpus {
    file: &'static str,
    lines: Vec<Vec<u8>>,
    datagrams: Vec<Vec<u8>>,
}

impl Corpus {
    fn load(file: &'static str) -> Corpus {
        let ds = load_dgrams(file);
        let mut lines_out = Vec::new();
        for d in &ds {
            for l in lines(&d.bytes) {
                lines_out.push(l.to_vec());
            }
        }
        Corpus { file, lines: lines_out, datagrams: ds.into_iter().map(|d| d.bytes).collect() }
    }
    fn line(&self, text: &[u8]) -> &[u8] {
        self.lines
            .iter()
            .find(|l| l.as_slice() == text)
            .unwrap_or_else(|| panic!("{}: no line {}", self.file, show(text)))
    }
    fn parse_with<'a>(&'a self, text: &[u8], o: &ParseOptions) -> Message<'a> {
        parse_line(self.line(text), o).unwrap_or_else(|e| panic!("{}: {}: {e}", self.file, show(text)))
    }
    fn metric(&self, text: &str) -> MetricSample<'_> {
        self.metric_b(text.as_bytes())
    }
    fn metric_b(&self, text: &[u8]) -> MetricSample<'_> {
        match self.parse_with(text, &ParseOptions::default()) {
            Message::Metric(m) => m,
            other => panic!("{}: not a metric: {other:?}", show(text)),
        }
    }
    fn metric_origin(&self, text: &str) -> MetricSample<'_> {
        let o = ParseOptions { origin_detection_client: true, ..ParseOptions::default() };
        match self.parse_with(text.as_bytes(), &o) {
            Message::Metric(m) => m,
            other => panic!("{text}: not a metric: {other:?}"),
        }
    }
    fn event(&self, text: &str) -> EventMessage<'_> {
        self.event_b(text.as_bytes())
    }
    fn event_b(&self, text: &[u8]) -> EventMessage<'_> {
        match self.parse_with(text, &ParseOptions::default()) {
            Message::Event(e) => e,
            other => panic!("{}: not an event: {other:?}", show(text)),
        }
    }
    fn check(&self, text: &str) -> ServiceCheckMessage<'_> {
        match self.parse_with(text.as_bytes(), &ParseOptions::default()) {
            Message::ServiceCheck(s) => s,
            other => panic!("{text}: not a service check: {other:?}"),
        }
    }
}

fn vals(m: &MetricSample<'_>) -> Vec<f64> {
    m.values().collect()
}
fn tags<'a>(m: &MetricSample<'a>) -> Vec<&'a [u8]> {
    m.tags.iter().collect()
}
fn bl(v: &[&'static str]) -> Vec<&'static [u8]> {
    v.iter().map(|s| s.as_bytes()).collect()
}

#[test]
fn spot_check_hot_shots() {
    let c = Corpus::load("hot-shots-17.1.1.dgrams");
    let m = c.metric("page.views:1|c|#env:test,role:web");
    assert_eq!((m.name, m.kind, vals(&m)), (&b"page.views"[..], MetricKind::Counter, vec![1.0]));
    assert_eq!(tags(&m), bl(&["env:test", "role:web"]));
    assert_eq!(vals(&c.metric("connections:+5|g")), vec![5.0]);
    assert_eq!(vals(&c.metric("connections:-10|g")), vec![-10.0]);
    assert_eq!(vals(&c.metric("big.float:1e+21|g")), vec![1e21]);
    assert_eq!(vals(&c.metric("small.float:1e-7|g")), vec![1e-7]);
    assert_eq!(vals(&c.metric("big.int:9007199254740994|g")), vec![9007199254740994.0]);
    assert!(vals(&c.metric("nan.value:NaN|g"))[0].is_nan());
    assert_eq!(vals(&c.metric("inf.value:Infinity|g")), vec![f64::INFINITY]);
    assert_eq!(vals(&c.metric("neg.inf.value:-Infinity|g")), vec![f64::NEG_INFINITY]);
    assert_eq!(vals(&c.metric("bigint.value:12345678901234567890|g")), vec![12345678901234567890.0]);
    let m = c.metric("db.query:0.123|ms");
    assert_eq!((m.kind, vals(&m)), (MetricKind::Timing, vec![0.123]));
    let m = c.metric("visitors.uniques:value:with:colons|s");
    assert_eq!(m.set_member(), Some(&b"value:with:colons"[..]));
    assert_eq!(m.values().count(), 0);
    let m = c.metric("tagged:1|c|#novalue:undefined,nullvalue:null,num:5,bool:true");
    assert_eq!(tags(&m), bl(&["novalue:undefined", "nullvalue:null", "num:5", "bool:true"]));
    assert_eq!(tags(&c.metric("tagged:1|c|#novalue")), bl(&["novalue"]));
    assert_eq!(tags(&c.metric("tagged:1|c|#city:Zürich,emoji:✓")), bl(&["city:Zürich", "emoji:✓"]));
    assert_eq!(
        tags(&c.metric("tagged:1|c|#with space:a b,comma_in:t_ag,pipe_in:t_ag,at_hash_:x_y_z,new_line:v__"))[0],
        b"with space:a b"
    );
    let m = c.metric("ts.count:5|c|T1700000000|#a:b");
    assert_eq!((m.timestamp, tags(&m)), (Some(1_700_000_000), bl(&["a:b"])));
    assert_eq!(c.metric("ts.hist:1|h|T1700000001").timestamp, Some(1_700_000_001));
    let m = c.metric("sampled.gauge:3|g|@0.125|#a:b");
    assert_eq!((m.kind, m.sample_rate), (MetricKind::Gauge, 0.125));
    assert_eq!(c.metric("sampled.hist:3|h|@0.25|#a:b").sample_rate, 0.25);
    assert_eq!(c.metric("rate.above.one:1|c").sample_rate, 1.0);
    assert_eq!(c.metric("ünïcödé.metric:1|c").name, "ünïcödé.metric".as_bytes());
    assert_eq!(c.metric("name with space:1|c").name, b"name with space");
    assert_eq!(c.metric("telegraf.counter,env=prod,a=b,novalue:1|c").name, b"telegraf.counter,env=prod,a=b,novalue");

    let line = "with.origin.fields:1|c|#a:b|c:0123456789abcdef0123456789abcdef|e:it-false,cn-app,pu-0a1b2c3d|card:low";
    let m = c.metric(line);
    assert_eq!((m.container_id, m.external_data, m.cardinality), (None, None, None));
    assert_eq!(tags(&m), bl(&["a:b"]));
    let m = c.metric_origin(line);
    assert_eq!(m.container_id, Some(&b"0123456789abcdef0123456789abcdef"[..]));
    assert_eq!(
        LocalData::parse(m.container_id.unwrap_or_default()).container_id,
        Some(&b"0123456789abcdef0123456789abcdef"[..])
    );
    let ext = ExternalData::parse(m.external_data.unwrap_or_default());
    assert_eq!((ext.init, ext.container_name, ext.pod_uid), (Some(false), Some(&b"app"[..]), Some(&b"0a1b2c3d"[..])));
    assert_eq!(m.cardinality, Some(&b"low"[..]));

    let e = c.event("_e{13,11}:Deploy failed|Rolled back|d:1700000000|h:web-01|k:deploy-42|p:low|s:jenkins|t:error|#env:test,team:core");
    assert_eq!((&*e.title, &*e.text), (&b"Deploy failed"[..], &b"Rolled back"[..]));
    assert_eq!(e.timestamp, 1_700_000_000);
    assert_eq!(e.hostname, Some(&b"web-01"[..]));
    assert_eq!(e.aggregation_key, Some(&b"deploy-42"[..]));
    assert_eq!(e.priority, Some(EventPriority::Low));
    assert_eq!(e.source_type, Some(&b"jenkins"[..]));
    assert_eq!(e.alert_type, Some(AlertType::Error));
    assert_eq!(e.tags.iter().collect::<Vec<_>>(), bl(&["env:test", "team:core"]));
    let e = c.event("_e{10,33}:Multi-line|line one\\nline two\\n\\nline four\\n");
    assert_eq!(&*e.text, b"line one\nline two\n\nline four\n");
    let e = c.event("_e{10,10}:Title only|Title only");
    assert_eq!((&*e.title, &*e.text), (&b"Title only"[..], &b"Title only"[..]));
    // UTF-16 lengths: sliced at the wrong byte, no error.
    let e = c.event("_e{13,24}:Déploiement ✓|Texte accentué: éàü — ok");
    assert_eq!(&*e.title, "Déploiement ".as_bytes());
    assert_eq!(String::from_utf8_lossy(&e.text), "\u{fffd}\u{fffd}|Texte accentué: éà");
    let e = c.event("_e{8,15}:Emoji 😀|astral plane 😀");
    assert_eq!(&*e.title, b"Emoji \xf0\x9f");
    assert_eq!(&*e.text, b"\x80|astral plane ");
    let e = c.event("_e{13,12}:pipe|in|title|pipe|in|text");
    assert_eq!((&*e.title, &*e.text), (&b"pipe|in|title"[..], &b"pipe|in|text"[..]));
    let e = c.event("_e{24,4}:Event with origin fields|text|t:info|#a:b|c:0123456789abcdef0123456789abcdef|e:it-false,cn-app,pu-0a1b2c3d|card:low");
    assert_eq!((e.alert_type, e.container_id), (Some(AlertType::Info), None));
    assert_eq!(&*c.event("_e{14,11}:buffered event|multi\\nline").text, b"multi\nline");

    let s = c.check("_sc|app.is_ok|2|d:1700000000|h:db-01|#a:b|m:Connection refused");
    assert_eq!((s.name, s.status, s.timestamp), (&b"app.is_ok"[..], 2, 1_700_000_000));
    assert_eq!((s.hostname, s.message), (Some(&b"db-01"[..]), Some(&b"Connection refused"[..])));
    assert_eq!(s.tags.raw(), b"a:b");
    // Raw newline in the message: the first half is a valid check.
    let s = c.check("_sc|app.is_ok|3|m:multi");
    assert_eq!((s.status, s.message), (3, Some(&b"multi"[..])));
    let s = c.check("_sc|check.with.origin.fields|0|#a:b|c:0123456789abcdef0123456789abcdef|e:it-false,cn-app,pu-0a1b2c3d|card:low|m:msg");
    assert_eq!((s.message, s.container_id), (Some(&b"msg"[..]), None));
    assert_eq!(c.check("_sc|app.is_ok|1|#env:test").status, 1);

    // A buffered datagram: '\n'-joined, no trailing newline, mixed types.
    let d = c
        .datagrams
        .iter()
        .find(|d| d.starts_with(b"buffered.counter:1|c|#i:7"))
        .unwrap_or_else(|| panic!("buffered datagram missing"));
    let kinds: Vec<&str> = lines(d)
        .map(|l| parse_line(l, &ParseOptions::default()).map(|m| m.message_type()).unwrap_or("error"))
        .collect();
    assert_eq!(kinds, vec!["metrics", "metrics", "metrics", "metrics", "metrics", "events", "service_checks"]);
}

#[test]
fn spot_check_cadence() {
    let c = Corpus::load("cadence-1.8.0.dgrams");
    assert_eq!(vals(&c.metric("big.count:9223372036854775807|c")), vec![9223372036854775807.0]);
    assert_eq!(tags(&c.metric("tagged:1|c|#:value,")), bl(&[":value", ""]));
    assert_eq!(tags(&c.metric("tagged:1|c|#novalue,key:")), bl(&["novalue", "key:"]));
    assert_eq!(tags(&c.metric("tagged:1|c|#pipe|key:comma,value,hash#:at@")), bl(&["pipe"]));
    let max = c.lines.iter().find(|l| l.starts_with(b"max.f64:")).unwrap_or_else(|| panic!("max.f64 missing"));
    assert_eq!(vals(&c.metric_b(max)), vec![f64::MAX]);
    assert_eq!(vals(&c.metric("max.u64:18446744073709551615|g")), vec![18446744073709551615.0]);
    assert_eq!(vals(&c.metric("big.float:1000000000000000000000|g")), vec![1e21]);
    assert_eq!(vals(&c.metric("small.float:0.0000001|g")), vec![1e-7]);
    let z = vals(&c.metric("neg.zero:-0|g"))[0];
    assert!(z == 0.0 && z.is_sign_negative());
    assert_eq!(vals(&c.metric("inf.value:inf|g")), vec![f64::INFINITY]);
    assert_eq!(vals(&c.metric("neg.inf.value:-inf|g")), vec![f64::NEG_INFINITY]);
    let m = c.metric("packed.dist:10:20:30|d");
    assert_eq!((m.kind, vals(&m), m.value_count()), (MetricKind::Distribution, vec![10.0, 20.0, 30.0], 3));
    let v = vals(&c.metric("packed.hist:1.5:2.5:NaN|h"));
    assert_eq!((v.len(), v[0], v[1], v[2].is_nan()), (3, 1.5, 2.5, true));
    let m = c.metric("packed.timer:1:2|ms");
    assert_eq!((m.kind, vals(&m)), (MetricKind::Timing, vec![1.0, 2.0]));
    let m = c.metric("packed.dist:0.5:1|d|#a:b");
    assert_eq!((vals(&m), tags(&m)), (vec![0.5, 1.0], bl(&["a:b"])));
    assert_eq!(c.metric("visitors.uniques:-42|s").set_member(), Some(&b"-42"[..]));
    assert_eq!(c.metric("rate.zero:1|c|@0").sample_rate, 0.0);
    assert_eq!(c.metric("rate.above.one:1|c|@2").sample_rate, 2.0);
    assert_eq!(c.metric("rate.one:1|c|@1").sample_rate, 1.0);
    let m = c.metric("ts.count:5|c|#a:b|T1700000000");
    assert_eq!((m.timestamp, tags(&m)), (Some(1_700_000_000), bl(&["a:b"])));
    let line = "everything:1|c|@0.5|#a:b,c|c:container-456|T1700000000";
    let m = c.metric(line);
    assert_eq!((m.sample_rate, m.timestamp, m.container_id), (0.5, Some(1_700_000_000), None));
    assert_eq!(tags(&m), bl(&["a:b", "c"]));
    let m = c.metric_origin(line);
    assert_eq!(m.container_id, Some(&b"container-456"[..]));
    assert_eq!(LocalData::parse(b"container-456").container_id, Some(&b"container-456"[..]));
    assert_eq!(c.metric_origin("cid.dist:1|d|c:0123456789abcdef").container_id, Some(&b"0123456789abcdef"[..]));
    // The tail of "name:with|bad\nchars:1|c" becomes a metric of its own.
    let m = c.metric("chars:1|c");
    assert_eq!((m.name, vals(&m)), (&b"chars"[..], vec![1.0]));
    // Buffered sink: every line '\n'-terminated.
    let d = c
        .datagrams
        .iter()
        .find(|d| d.starts_with(b"buffered.gauge:0|g"))
        .unwrap_or_else(|| panic!("buffered datagram missing"));
    let got: Vec<(Vec<f64>, Vec<u8>)> = lines(d)
        .map(|l| match parse_line(l, &ParseOptions::default()) {
            Ok(Message::Metric(m)) => (vals(&m), m.tags.raw().to_vec()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got.len(), 5);
    assert_eq!(got[4], (vec![4.0], b"i:4".to_vec()));
}

#[test]
fn spot_check_dogstatsd_rs() {
    let c = Corpus::load("dogstatsd-rs-0.12.4.dgrams");
    let e = c.event("_e{16,30}:Déploiement ✓|Texte accentué: éàü — ok|#env:test");
    assert_eq!(&*e.title, "Déploiement ✓".as_bytes());
    assert_eq!(&*e.text, "Texte accentué: éàü — ok".as_bytes());
    assert_eq!(e.tags.raw(), b"env:test");
    let e = c.event("_e{8,4}:Defaults|text");
    assert_eq!((e.priority, e.alert_type, e.timestamp, e.hostname), (None, None, 0, None));
    assert_eq!(&*c.event("_e{13,4}:batched event|text").title, b"batched event");
    let s = c.check("_sc|app.is_ok|2|d:1700000000|h:db-01|m:Connection refused|#a:b");
    assert_eq!((s.status, s.message, s.tags.raw()), (2, Some(&b"Connection refused"[..]), &b"a:b"[..]));
    assert_eq!(s.hostname, Some(&b"db-01"[..]));
    assert_eq!(c.check("_sc|app.is_ok|3|m:multi").message, Some(&b"multi"[..]));
    assert_eq!(tags(&c.metric("tagged:1|c|#novalue,key:,:value,")), bl(&["novalue", "key:", ":value", ""]));
    assert_eq!(
        tags(&c.metric("tagged:1|c|#url:https://example.com:8080/a/b,city:Zürich")),
        bl(&["url:https://example.com:8080/a/b", "city:Zürich"])
    );
    assert_eq!(vals(&c.metric("packed.dist:1:2:3|d")), vec![1.0, 2.0, 3.0]);
    assert_eq!(c.metric("visitors.uniques:value:with:colons|s").set_member(), Some(&b"value:with:colons"[..]));
    assert_eq!(vals(&c.metric("negative.count:-7|c")), vec![-7.0]);
    let m = c.metric("with.env.tags:1|g|#call:tag,env:explicit,service:checkout,version:1.2.3");
    assert_eq!(m.tags.len(), 4);
}

#[test]
fn spot_check_datadogpy() {
    let c = Corpus::load("datadogpy-0.56.0.dgrams");
    let z = vals(&c.metric("neg.zero:-0.0|g"))[0];
    assert!(z == 0.0 && z.is_sign_negative());
    // 2^53 + 1 rounds to even.
    assert_eq!(vals(&c.metric("big.int:9007199254740993|g")), vec![9007199254740992.0]);
    assert_eq!(vals(&c.metric("huge.int:1000000000000000000000000000000|g")), vec![1e30]);
    assert_eq!(vals(&c.metric("small.float:1e-07|g")), vec![1e-7]);
    assert!(vals(&c.metric("nan.value:nan|g"))[0].is_nan());
    assert_eq!(tags(&c.metric("tagged:1|c|#dup:1,dup:1,dup:2")), bl(&["dup:1", "dup:1", "dup:2"]));
    // The parser keeps host: in the tags; extraction is enrichment.
    assert_eq!(tags(&c.metric("tagged:1|c|#host:web-01")), bl(&["host:web-01"]));
    assert_eq!(tags(&c.metric("tagged:1|c|#:value")), bl(&[":value"]));
    assert_eq!(c.metric("rate.above.one:1|c|@2").sample_rate, 2.0);
    assert_eq!(c.metric("agg.hist:8|h|@0.3").sample_rate, 0.3);
    let m = c.metric("card.metric:1|g|#a:b|card:high");
    assert_eq!((m.cardinality, tags(&m)), (None, bl(&["a:b"])));
    let m = c.metric_origin(
        "with.origin.fields.ts:2|c|c:ci-0123456789abcdef,in-12345|e:it-false,cn-app,pu-0a1b2c3d|card:none|T1700000000",
    );
    assert_eq!(m.timestamp, Some(1_700_000_000));
    let ld = LocalData::parse(m.container_id.unwrap_or_default());
    assert_eq!((ld.container_id, ld.inode), (Some(&b"0123456789abcdef"[..]), Some(12345)));
    assert_eq!(m.cardinality, Some(&b"none"[..]));
    let m = c.metric("with.container.id.ts:1|g|c:0123456789abcdef0123456789abcdef|T1700000000");
    assert_eq!((m.timestamp, m.container_id), (Some(1_700_000_000), None));
    let e = c.event("_e{19,4}:Title\\nwith newline|text");
    assert_eq!(&*e.title, b"Title\nwith newline");
    assert_eq!(&*c.event("_e{10,0}:Empty text|").text, b"");
    assert_eq!(&*c.event("_e{19,4}:Backslash n literal|a\\nb").text, b"a\nb");
    let e = c.event("_e{16,30}:Déploiement ✓|Texte accentué: éàü — ok");
    assert_eq!((e.title.len(), e.text.len()), (16, 30));
    let e = c.event("_e{16,1}:With cardinality|x|card:orchestrator");
    assert_eq!(e.cardinality, None);
    let e = c.event("_e{13,11}:Deploy failed|Rolled back|d:1700000000|h:web-01|k:deploy-42|p:low|s:jenkins|t:error|#env:test,team:core");
    assert_eq!((e.priority, e.alert_type), (Some(EventPriority::Low), Some(AlertType::Error)));
    let s = c.check("_sc|app.is_ok|3|#a:b|m:multi\\nline m\\:message");
    assert_eq!(s.message, Some(&b"multi\\nline m\\:message"[..]));
    assert_eq!(c.check("_sc|app.is_ok|0|m:pipe | in message").message, Some(&b"pipe "[..]));
    let s = c.check("_sc|app.is_ok|2|d:1700000000|h:db-01|m:Connection refused");
    assert_eq!((s.timestamp, s.hostname), (1_700_000_000, Some(&b"db-01"[..])));
    assert_eq!(c.check("_sc|app.is_ok|0|card:low").cardinality, None);
    // Every datadogpy datagram ends with '\n'; telemetry is an 11-line datagram.
    let tele = c
        .datagrams
        .iter()
        .find(|d| d.starts_with(b"datadog.dogstatsd.client.metrics:1|c|#client:py"))
        .unwrap_or_else(|| panic!("telemetry datagram missing"));
    assert_eq!(lines(tele).count(), 11);
    for l in lines(tele) {
        assert!(
            matches!(parse_line(l, &ParseOptions::default()), Ok(Message::Metric(m)) if m.kind == MetricKind::Counter)
        );
    }
}

#[test]
fn spot_check_pystatsd_and_node_statsd() {
    let c = Corpus::load("pystatsd-4.0.1.dgrams");
    let m = c.metric("db.query:12.000000|ms");
    assert_eq!((m.kind, vals(&m)), (MetricKind::Timing, vec![12.0]));
    assert_eq!(vals(&c.metric("float.count:1.5|c")), vec![1.5]);
    assert_eq!(vals(&c.metric("temperature:0|g")), vec![0.0]);
    assert_eq!(vals(&c.metric("temperature:-12.5|g")), vec![-12.5]);
    assert_eq!(vals(&c.metric("pipelined.c:3.000000|ms")), vec![3.0]);
    assert_eq!(c.metric("sampled.counter:1|c|@0.5").sample_rate, 0.5);

    let c = Corpus::load("node-statsd-0.1.1.dgrams");
    let m = c.metric("sampled.counter:1|c|@0.5|#a:b");
    assert_eq!((m.sample_rate, tags(&m)), (0.5, bl(&["a:b"])));
    assert_eq!(tags(&c.metric("tagged:1|c|#pipe|in:tag,comma,in:tag")), bl(&["pipe"]));
    assert_eq!(vals(&c.metric("chars:1|c")), vec![1.0]);
}

// ---------------------------------------------------------------------------
// malformed.jsonl

/// Cases where this parser deliberately differs from the Agent, with the
/// reason. Empty: every case matches the Agent's per-line verdict.
/// (`name-9000` is "ok" at parse level; the Agent drops it only because the
/// listener truncates datagrams at 8192 bytes, which is not the parser's job.)
const DELIBERATE_DIFFERENCES: &[(&str, &str)] = &[];

struct Case {
    id: String,
    bytes: Vec<u8>,
    packet: bool,
    agent_parse: Vec<String>,
    behaviour: String,
}

fn load_cases() -> Vec<Case> {
    let path = format!("{VECTORS}/malformed.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            Case {
                id: v["id"].as_str().unwrap_or_default().to_string(),
                bytes: b64(v["line_b64"].as_str().unwrap_or_default()),
                packet: v["packet"].as_bool().unwrap_or(false),
                agent_parse: v["agent_parse"]
                    .as_array()
                    .map(|a| a.iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect())
                    .unwrap_or_default(),
                behaviour: v["datadog_agent_behaviour"].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

/// The pieces the Agent's line scanner visits: for a packet, every
/// `\n`-terminated piece plus a non-empty unterminated tail; a non-packet
/// case is exactly one piece (even when empty).
fn pieces(c: &Case) -> Vec<&[u8]> {
    if !c.packet {
        return vec![&c.bytes[..]];
    }
    let mut v: Vec<&[u8]> = c.bytes.split(|&b| b == b'\n').collect();
    if v.last().is_some_and(|l| l.is_empty()) {
        v.pop();
    }
    v
}

#[test]
fn malformed_corpus_matches_agent_verdicts() {
    let cases = load_cases();
    assert_eq!(cases.len(), 176);
    let diffs: HashMap<&str, &str> = DELIBERATE_DIFFERENCES.iter().copied().collect();
    let opts = ParseOptions::default();
    let mut concrete = 0;
    for c in &cases {
        if !c.packet {
            assert!(!c.bytes.contains(&b'\n'), "{}: line case with a newline", c.id);
        }
        let mut outcomes = Vec::new();
        let mut produced: Vec<&[u8]> = Vec::new();
        let mut results = Vec::new();
        for p in pieces(c) {
            let line = p.strip_suffix(b"\r").unwrap_or(p);
            if line.is_empty() {
                outcomes.push("skipped".to_string());
                continue;
            }
            produced.push(line);
            let r = parse_line(line, &opts);
            outcomes.push(if r.is_ok() { "ok" } else { "error" }.to_string());
            results.push(r);
        }
        // lines() yields exactly the non-skipped pieces, in order.
        let from_lines: Vec<&[u8]> = lines(&c.bytes).collect();
        assert_eq!(from_lines, produced, "{}: lines() output", c.id);
        if let Some(reason) = diffs.get(c.id.as_str()) {
            assert_ne!(outcomes, c.agent_parse, "{}: listed as a deliberate difference ({reason})", c.id);
            continue;
        }
        assert_eq!(outcomes, c.agent_parse, "{}: {} ({})", c.id, show(&c.bytes), c.behaviour);
        if check_concrete(&c.id, &c.bytes, &results) {
            concrete += 1;
        }
    }
    assert!(concrete >= 100, "only {concrete} cases had concrete value checks");
}

fn metric_of<'a, 'b>(id: &str, r: &'b [Result<Message<'a>, ParseError>], i: usize) -> &'b MetricSample<'a> {
    match r.get(i) {
        Some(Ok(Message::Metric(m))) => m,
        other => panic!("{id}: result {i} is not a metric: {other:?}"),
    }
}
fn event_of<'a, 'b>(id: &str, r: &'b [Result<Message<'a>, ParseError>]) -> &'b EventMessage<'a> {
    match r.first() {
        Some(Ok(Message::Event(e))) => e,
        other => panic!("{id}: not an event: {other:?}"),
    }
}
fn check_of<'a, 'b>(id: &str, r: &'b [Result<Message<'a>, ParseError>]) -> &'b ServiceCheckMessage<'a> {
    match r.first() {
        Some(Ok(Message::ServiceCheck(s))) => s,
        other => panic!("{id}: not a service check: {other:?}"),
    }
}

/// Assert the concrete values named in `datadog_agent_behaviour`. Returns
/// whether the case had any.
fn check_concrete(id: &str, raw: &[u8], r: &[Result<Message<'_>, ParseError>]) -> bool {
    let m = |i: usize| metric_of(id, r, i);
    let one = |name: &[u8], kind: MetricKind, v: &[f64]| {
        let s = m(0);
        assert_eq!((s.name, s.kind), (name, kind), "{id}");
        assert_eq!(vals(s), v.to_vec(), "{id}");
    };
    let tg = |want: &[&'static str]| assert_eq!(tags(m(0)), bl(want), "{id}");
    let pv = b"page.views";
    use MetricKind::*;
    match id {
        "leading-space-name" => one(b" page.views", Counter, &[1.0]),
        "double-pipe-in-fields" => {
            one(pv, Counter, &[1.0]);
            tg(&["a:b"]);
        }
        "trailing-pipe" | "unknown-field" | "tags-without-hash" => {
            one(pv, Counter, &[1.0]);
            tg(&[]);
        }
        "unknown-field-m" => one(pv, Gauge, &[1.0]),
        "name-with-space" => one(b"name with space", Counter, &[1.0]),
        "name-unicode" => one("ünïcödé.metric".as_bytes(), Counter, &[1.0]),
        "name-bom" => one(b"\xef\xbb\xbfpage.views", Counter, &[1.0]),
        "name-1000" => assert_eq!(m(0).name, vec![b'a'; 1000].as_slice()),
        "name-9000" => assert_eq!(m(0).name, vec![b'b'; 9000].as_slice()),
        "value-hex-float" => one(pv, Gauge, &[0.25]),
        "value-underscores" => one(pv, Gauge, &[1000.0]),
        "value-leading-dot" => one(pv, Gauge, &[0.5]),
        "value-trailing-dot" => one(pv, Gauge, &[5.0]),
        "value-exponent-upper" => one(pv, Gauge, &[1000.0]),
        "value-plus-sign-gauge" => one(b"connections", Gauge, &[5.0]),
        "value-minus-sign-gauge" => one(b"connections", Gauge, &[-10.0]),
        "value-negative-count" => one(pv, Counter, &[-7.0]),
        "value-nan" | "value-nan-lower" => assert!(vals(m(0))[0].is_nan(), "{id}"),
        "value-inf" => one(b"inf.value", Gauge, &[f64::INFINITY]),
        "value-neg-infinity" => one(b"inf.value", Gauge, &[f64::NEG_INFINITY]),
        "value-underflow" => one(b"small.value", Gauge, &[0.0]),
        "value-huge-integer" => one(b"huge.int", Gauge, &[1e30]),
        "value-u64-max" => one(b"max.u64", Gauge, &[1.8446744073709552e19]),
        "value-f64-max-digits" => one(b"max.f64", Gauge, &[1.7976931348623157e308]),
        "value-python-exponent" => one(b"big.float", Gauge, &[1e21]),
        "value-fixed-6" => one(b"db.query", Timing, &[12.0]),
        "value-packed" => one(b"packed.dist", Distribution, &[10.0, 20.0, 30.0]),
        "value-packed-empty-item" => one(b"packed.dist", Distribution, &[1.0, 2.0]),
        "value-packed-trailing-colon" => one(b"packed.dist", Distribution, &[1.0]),
        "value-packed-nan" => {
            let v = vals(m(0));
            assert_eq!((v.len(), v[0], v[1], v[2].is_nan()), (3, 1.5, 2.5, true), "{id}");
        }
        "set-value-with-colons" => assert_eq!(m(0).set_member(), Some(&b"value:with:colons"[..])),
        "set-value-number-like" => assert_eq!(m(0).set_member(), Some(&b"1.0"[..])),
        "rate-zero" => assert_eq!(m(0).sample_rate, 0.0),
        "rate-above-one" => assert_eq!(m(0).sample_rate, 2.0),
        "rate-negative" => assert_eq!(m(0).sample_rate, -0.5),
        "rate-nan" => assert!(m(0).sample_rate.is_nan()),
        "rate-twice" => assert_eq!(m(0).sample_rate, 0.25),
        "rate-on-gauge" => {
            one(pv, Gauge, &[1.0]);
            assert_eq!(m(0).sample_rate, 0.5);
        }
        "rate-one-explicit" => assert_eq!(m(0).sample_rate, 1.0),
        "tags-empty" | "tags-then-empty-hash" => tg(&[]),
        "tags-only-comma" => tg(&["", ""]),
        "tags-empty-middle" => tg(&["a", "", "b"]),
        "tags-trailing-comma" => tg(&["a:b", ""]),
        "tag-no-value" => tg(&["novalue"]),
        "tag-empty-value" => tg(&["key:"]),
        "tag-empty-key" => tg(&[":value"]),
        "tag-colons-in-value" => tg(&["url:https://example.com:8080/a"]),
        "tags-two-fields" => tg(&["c:d"]),
        "tags-double-hash" => tg(&["#a"]),
        "tags-spaces" => tg(&[" a ", " b "]),
        "tags-pipe-comma-raw" => tg(&["pipe"]),
        // host:, dd.internal.* are extracted at enrichment, not by the parser.
        "tag-host" => tg(&["host:web-01", "a:b"]),
        "tag-host-empty" => tg(&["host:"]),
        "tag-entity-id" => tg(&["dd.internal.entity_id:5e6f7a8b-pod-uid"]),
        "tag-card" => tg(&["dd.internal.card:high"]),
        "tag-tab" => tg(&["a:b\t"]),
        "tags-truncated" => tg(&["env:te"]),
        "ts-valid" => {
            one(b"ts.gauge", Gauge, &[10.0]);
            assert_eq!(m(0).timestamp, Some(1_700_000_000));
        }
        "ts-on-histogram" => {
            one(b"ts.hist", Histogram, &[1.0]);
            assert_eq!(m(0).timestamp, Some(1_700_000_001));
        }
        "ts-before-tags" => {
            one(b"ts.count", Counter, &[5.0]);
            assert_eq!(m(0).timestamp, Some(1_700_000_000));
            tg(&["a:b"]);
        }
        "container-empty" | "card-bogus" => {
            let s = m(0);
            assert_eq!((s.container_id, s.cardinality), (None, None), "{id}");
        }
        "extension-order" => {
            one(b"with.origin.fields", Counter, &[1.0]);
            tg(&["a:b"]);
        }
        "event-valid" | "event-bad-priority" | "event-bad-alert-type" | "event-bad-date" | "event-empty-fields" => {
            let e = event_of(id, r);
            assert_eq!((&*e.title, &*e.text), (&b"title"[..], &b"text"[..]), "{id}");
            assert_eq!((e.priority, e.alert_type, e.timestamp), (None, None, 0), "{id}");
            assert!(e.tags.is_empty(), "{id}");
        }
        "event-lengths-too-small" => {
            let e = event_of(id, r);
            assert_eq!((&*e.title, &*e.text), (&b"title"[..], &b"tex"[..]));
        }
        "event-title-length-off" => {
            let e = event_of(id, r);
            assert_eq!((&*e.title, &*e.text), (&b"titl"[..], &b"|tex"[..]));
        }
        "event-empty-text" => {
            let e = event_of(id, r);
            assert_eq!((&*e.title, &*e.text), (&b"title"[..], &b""[..]));
        }
        "event-escaped-newline" => {
            assert_eq!(&*event_of(id, r).text, b"line one\nline two\n\nline four\n");
        }
        "event-literal-backslash-n" => assert_eq!(&*event_of(id, r).text, b"a\nb"),
        "event-utf16-lengths" => {
            let e = event_of(id, r);
            assert_eq!(&*e.title, "Déploiement ".as_bytes());
            assert_eq!(String::from_utf8_lossy(&e.text), "\u{fffd}\u{fffd}|Texte accentué: éà");
        }
        "event-duplicate-alert" => assert_eq!(event_of(id, r).alert_type, Some(AlertType::Success)),
        "event-e-without-brace" => one(b"_e", Counter, &[1.0]),
        "sc-valid" | "sc-trailing-pipe" => {
            let s = check_of(id, r);
            assert_eq!((s.name, s.status, s.message), (&b"app.is_ok"[..], 0, None), "{id}");
        }
        "sc-bad-date" => {
            let s = check_of(id, r);
            assert_eq!((s.status, s.timestamp), (0, 0));
        }
        "sc-message-before-tags" => {
            let s = check_of(id, r);
            assert_eq!((s.status, s.message, s.tags.raw()), (2, Some(&b"Connection refused"[..]), &b"a:b"[..]));
            assert_eq!((s.timestamp, s.hostname), (1_700_000_000, Some(&b"db-01"[..])));
        }
        "sc-message-with-pipe" => assert_eq!(check_of(id, r).message, Some(&b"pipe "[..])),
        "sc-escaped-message" => {
            let s = check_of(id, r);
            assert_eq!((s.status, s.message), (3, Some(&b"multi\\nline m\\:message"[..])));
        }
        "utf8-invalid-name" | "utf8-surrogate" | "latin1-name" | "nul-in-name" => {
            let colon = raw.iter().position(|&b| b == b':').unwrap_or(0);
            one(&raw[..colon], Counter, &[1.0]);
        }
        "utf8-invalid-tag" => tg_raw(id, m(0), b"env:\xc3("),
        "telegraf-dialect" => one(b"telegraf.counter,env=prod,a=b", Counter, &[1.0]),
        "crlf-ending" | "cr-at-end" | "trailing-newline" => one(pv, Counter, &[1.0]),
        "crlf-lines" | "blank-line-between" => {
            one(b"a", Counter, &[1.0]);
            let b = m(1);
            assert_eq!((b.name, b.kind, vals(b)), (&b"b"[..], Gauge, vec![2.0]), "{id}");
        }
        "mixed-good-bad" => {
            one(b"good", Counter, &[1.0]);
            assert_eq!(r.get(1).and_then(|x| x.as_ref().err()), Some(&ParseError::MissingPipe));
            let g = m(2);
            assert_eq!((g.name, g.kind, vals(g)), (&b"good2"[..], Gauge, vec![2.0]));
        }
        "truncated-last-line" => one(pv, Counter, &[1.0]),
        "truncated-event" => {
            one(b"a", Counter, &[1.0]);
            assert_eq!(r.get(1).and_then(|x| x.as_ref().err()), Some(&ParseError::EventTooShort));
        }
        "raw-newline-in-name" => {
            let s = m(1);
            assert_eq!((s.name, vals(s)), (&b"chars"[..], vec![1.0]));
        }
        "raw-newline-in-sc-message" => {
            let s = check_of(id, r);
            assert_eq!((s.status, s.message), (3, Some(&b"multi"[..])));
        }
        "negative-gauge-pair" => {
            one(b"temperature", Gauge, &[0.0]);
            assert_eq!(vals(m(1)), vec![-12.5]);
        }
        _ => return false,
    }
    true
}

fn tg_raw(id: &str, m: &MetricSample<'_>, want: &[u8]) {
    assert_eq!(m.tags.iter().collect::<Vec<_>>(), vec![want], "{id}");
}

/// The specific error for the rejected line cases, so a reader sees why
/// each one is dropped.
const MALFORMED_ERRORS: &[(&str, ParseError)] = &[
    ("empty-name", ParseError::EmptyName),
    ("missing-value", ParseError::EmptyValue),
    ("missing-colon", ParseError::MissingColon),
    ("missing-type", ParseError::MissingPipe),
    ("empty-type", ParseError::UnknownType),
    ("unknown-type", ParseError::UnknownType),
    ("uppercase-type", ParseError::UnknownType),
    ("meter-type", ParseError::UnknownType),
    ("long-type-name", ParseError::UnknownType),
    ("type-trailing-space", ParseError::UnknownType),
    ("double-pipe-before-type", ParseError::UnknownType),
    ("name-with-colons", ParseError::InvalidValue),
    ("name-with-pipes", ParseError::MissingColon),
    ("value-not-number", ParseError::InvalidValue),
    ("value-python-bool", ParseError::InvalidValue),
    ("value-leading-space", ParseError::InvalidValue),
    ("value-trailing-space", ParseError::InvalidValue),
    ("value-comma-decimal", ParseError::InvalidValue),
    ("value-two-dots", ParseError::InvalidValue),
    ("value-hex-int", ParseError::InvalidValue),
    ("value-overflow", ParseError::InvalidValue),
    ("value-neg-overflow", ParseError::InvalidValue),
    ("value-packed-only-colons", ParseError::EmptyValueList),
    ("value-packed-bad-item", ParseError::InvalidValue),
    ("set-value-empty", ParseError::EmptyValue),
    ("rate-text", ParseError::InvalidSampleRate),
    ("rate-empty", ParseError::InvalidSampleRate),
    ("rate-space", ParseError::InvalidSampleRate),
    ("ts-zero", ParseError::NonPositiveTimestamp),
    ("ts-negative", ParseError::NonPositiveTimestamp),
    ("ts-fraction", ParseError::InvalidTimestamp),
    ("ts-text", ParseError::InvalidTimestamp),
    ("ts-empty", ParseError::InvalidTimestamp),
    ("ts-overflow", ParseError::InvalidTimestamp),
    ("event-text-too-short", ParseError::EventTooShort),
    ("event-empty-title", ParseError::EventEmptyTitle),
    ("event-negative-length", ParseError::EventLength),
    ("event-letters-length", ParseError::EventLength),
    ("event-one-length", ParseError::EventHeader),
    ("event-unclosed-header", ParseError::EventHeader),
    ("event-no-colon", ParseError::EventHeader),
    ("event-space-in-length", ParseError::EventLength),
    ("event-no-text", ParseError::EventTooShort),
    ("event-empty-text-no-pipe", ParseError::EventTooShort),
    ("event-huge-length", ParseError::EventLength),
    ("event-maxint-length", ParseError::EventTooShort),
    ("event-first-line-of-raw-newline", ParseError::EventTooShort),
    ("event-prefix-only", ParseError::EventHeader),
    ("sc-status-4", ParseError::ServiceCheckStatus),
    ("sc-status-7", ParseError::ServiceCheckStatus),
    ("sc-status-negative", ParseError::ServiceCheckStatus),
    ("sc-status-word", ParseError::ServiceCheckStatus),
    ("sc-status-00", ParseError::ServiceCheckStatus),
    ("sc-status-empty", ParseError::ServiceCheckStatus),
    ("sc-no-status", ParseError::ServiceCheckFormat),
    ("sc-empty-name", ParseError::ServiceCheckName),
    ("sc-no-pipe-after-prefix", ParseError::ServiceCheckFormat),
    ("sc-prefix-only", ParseError::ServiceCheckFormat),
    ("utf8-invalid-value", ParseError::InvalidValue),
    ("binary-garbage", ParseError::MissingPipe),
    ("binary-garbage-separators", ParseError::MissingColon),
    ("graphite-line", ParseError::MissingPipe),
    ("json-line", ParseError::MissingPipe),
    ("http-request-line", ParseError::MissingPipe),
];

#[test]
fn malformed_line_errors_are_specific() {
    let cases = load_cases();
    let by_id: HashMap<&str, &Case> = cases.iter().map(|c| (c.id.as_str(), c)).collect();
    let opts = ParseOptions::default();
    for (id, want) in MALFORMED_ERRORS {
        let c = by_id.get(id).unwrap_or_else(|| panic!("no case {id}"));
        assert!(!c.packet);
        assert_eq!(c.agent_parse, vec!["error".to_string()], "{id}");
        let line = lines(&c.bytes).next().unwrap_or_else(|| panic!("{id}: no line"));
        assert_eq!(parse_line(line, &opts).err(), Some(*want), "{id}: {}", show(line));
    }
    // Every rejected non-packet case is listed above.
    for c in &cases {
        if !c.packet && c.agent_parse == ["error"] {
            assert!(MALFORMED_ERRORS.iter().any(|(id, _)| *id == c.id), "{} missing from MALFORMED_ERRORS", c.id);
        }
    }
}

#[test]
fn malformed_txt_lines_agree_with_jsonl() {
    // malformed.txt is the same line cases as raw lines (not valid UTF-8).
    let path = format!("{VECTORS}/malformed.txt");
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut pieces: Vec<&[u8]> = raw.split(|&b| b == b'\n').collect();
    if pieces.last().is_some_and(|l| l.is_empty()) {
        pieces.pop();
    }
    assert_eq!(pieces.len(), 156);
    let cases = load_cases();
    let in_txt: Vec<&Case> = cases.iter().filter(|c| !c.packet && !c.bytes.contains(&0)).collect();
    assert_eq!(in_txt.len(), 156);
    for (piece, c) in pieces.iter().zip(in_txt) {
        assert_eq!(*piece, c.bytes.as_slice(), "{}", c.id);
    }
}

/// The data files are exactly the recorded ones: sizes and counts agree
/// with `manifest.json` (a checkout that rewrote line endings fails here).
#[test]
fn vector_files_match_the_manifest() {
    let path = format!("{VECTORS}/manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    let files = manifest["files"].as_object().expect("files");
    assert_eq!(files.len(), FILES.len() + 2, "every capture and both malformed files are listed");
    for (name, entry) in files {
        let path = format!("{VECTORS}/{name}");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(bytes.len() as u64, entry["bytes"].as_u64().unwrap(), "{name}: size");
        if let Some(n) = entry["datagrams"].as_u64() {
            assert_eq!(load_dgrams(name).len() as u64, n, "{name}: datagrams");
        }
    }
    assert_eq!(load_cases().len() as u64, files["malformed.jsonl"]["cases"].as_u64().unwrap());
}
