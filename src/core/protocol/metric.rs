//! Metric lines: `<name>:<value>[:<value>...]|<type>[|<field>]...` (spec §3).

use crate::core::protocol::error::ParseError;
use crate::core::protocol::float::{parse_go_float, parse_go_int};
use crate::core::protocol::tags::Tags;
use crate::core::protocol::{next_field, ParseOptions};

/// DogStatsD metric type, from the type field (matched case-sensitively).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// `c`: count, flushed as a rate.
    Counter,
    /// `g`: gauge, last value wins.
    Gauge,
    /// `h`: histogram.
    Histogram,
    /// `ms`: timing; aggregated exactly like a histogram by the Agent.
    Timing,
    /// `s`: set; the value is an opaque member string.
    Set,
    /// `d`: distribution (DDSketch).
    Distribution,
}

impl MetricKind {
    /// Map a raw type field to a kind; `None` for anything the Agent rejects
    /// (`m`, `C`, `c `, `gauge`, empty, ...).
    pub fn from_wire(raw: &[u8]) -> Option<MetricKind> {
        Some(match raw {
            b"c" => MetricKind::Counter,
            b"g" => MetricKind::Gauge,
            b"h" => MetricKind::Histogram,
            b"ms" => MetricKind::Timing,
            b"s" => MetricKind::Set,
            b"d" => MetricKind::Distribution,
            _ => return None,
        })
    }

    /// The wire symbol (`c`, `g`, `h`, `ms`, `s`, `d`), for rendering and
    /// for the Agent's `metric_type` telemetry tag.
    pub fn as_str(&self) -> &'static str {
        match self {
            MetricKind::Counter => "c",
            MetricKind::Gauge => "g",
            MetricKind::Histogram => "h",
            MetricKind::Timing => "ms",
            MetricKind::Set => "s",
            MetricKind::Distribution => "d",
        }
    }
}

/// One parsed metric line, borrowing everything from the input datagram.
///
/// A packed line (`lat:1:2:3|h`) is one `MetricSample` whose [`values`]
/// yields every value; all of them were validated at parse time, so a
/// sample either exists with only good values or the line was rejected.
///
/// [`values`]: MetricSample::values
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample<'a> {
    /// Metric name, verbatim (no trimming, case folding or UTF-8 check).
    pub name: &'a [u8],
    /// Metric type.
    pub kind: MetricKind,
    /// `@` sample rate; 1.0 when absent. Not range-checked (0, 2, -1, NaN
    /// all parse), exactly like the Agent.
    pub sample_rate: f64,
    /// The last `#` field's tags (special tags such as `host:` are left in;
    /// extracting them is enrichment, not parsing).
    pub tags: Tags<'a>,
    /// `T` Unix timestamp; only `Some` when timestamps are honoured.
    pub timestamp: Option<i64>,
    /// Raw `c:` origin value (`ci-…,in-…` or a legacy id, see
    /// [`LocalData::parse`](crate::core::protocol::LocalData::parse)); only with
    /// origin detection from the client enabled.
    pub container_id: Option<&'a [u8]>,
    /// Raw `e:` external data (see
    /// [`ExternalData::parse`](crate::core::protocol::ExternalData::parse));
    /// gated like `container_id`.
    pub external_data: Option<&'a [u8]>,
    /// Raw `card:` tag cardinality; gated like `container_id`.
    pub cardinality: Option<&'a [u8]>,
    raw_value: &'a [u8],
    value_count: usize,
    /// Bits of the first value, decoded once at validation (most lines
    /// carry exactly one value, so `values` rarely re-parses anything).
    first_value_bits: u64,
    /// The value text after the first value's `:`, if any.
    more_values: Option<&'a [u8]>,
}

impl<'a> MetricSample<'a> {
    /// Every numeric value of the line in wire order (empty packed items
    /// skipped); empty for sets. The first value was decoded during
    /// validation; further packed values are re-parsed from the validated
    /// text, so the sample stays allocation-free.
    pub fn values(&self) -> Values<'a> {
        if self.kind == MetricKind::Set {
            Values { first: None, rest: None }
        } else {
            Values { first: Some(f64::from_bits(self.first_value_bits)), rest: self.more_values }
        }
    }

    /// Number of samples this line produces: the number of values
    /// [`values`](MetricSample::values) yields for numeric types, and 1 for a
    /// set (one member). Lets callers count samples (telemetry, batching)
    /// without iterating.
    pub fn value_count(&self) -> usize {
        self.value_count
    }

    /// The set member (everything after the first `:`, colons included);
    /// `Some` only for sets.
    pub fn set_member(&self) -> Option<&'a [u8]> {
        if self.kind == MetricKind::Set {
            Some(self.raw_value)
        } else {
            None
        }
    }

    /// The raw value text after the first `:` (all packed values), for
    /// logging or re-rendering a line.
    pub fn raw_value(&self) -> &'a [u8] {
        self.raw_value
    }
}

/// Iterator over the values of a [`MetricSample`].
#[derive(Debug, Clone)]
pub struct Values<'a> {
    first: Option<f64>,
    rest: Option<&'a [u8]>,
}

impl Iterator for Values<'_> {
    type Item = f64;
    fn next(&mut self) -> Option<f64> {
        if let Some(v) = self.first.take() {
            return Some(v);
        }
        loop {
            let item = crate::core::protocol::next_piece(&mut self.rest, b':')?;
            if item.is_empty() {
                continue;
            }
            // Validated at parse time, so this never skips a value.
            if let Ok(v) = parse_go_float(item) {
                return Some(v);
            }
        }
    }
}

/// A validated value list: how many values, the first one, and the text
/// after it.
struct ValueList<'a> {
    count: usize,
    first: f64,
    more: Option<&'a [u8]>,
}

/// Validate the value part of a non-set line and count its values, like the
/// Agent's `parseFloat64` / `parseFloat64List`.
fn validate_values(raw: &[u8]) -> Result<ValueList<'_>, ParseError> {
    let mut list = ValueList { count: 0, first: 0.0, more: None };
    let mut rest = Some(raw);
    while let Some(item) = crate::core::protocol::next_piece(&mut rest, b':') {
        if item.is_empty() {
            continue;
        }
        let v = parse_go_float(item).map_err(|_| ParseError::InvalidValue)?;
        if list.count == 0 {
            list.first = v;
            list.more = rest;
        }
        list.count += 1;
    }
    if list.count == 0 {
        return Err(ParseError::EmptyValueList);
    }
    Ok(list)
}

/// `next_field` for the type field, which is one or two bytes in every
/// valid line: its `|` is checked in place rather than searched for.
#[inline]
fn type_field(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    match s {
        [a, b'|', ..] if *a != b'|' => (&s[..1], Some(&s[2..])),
        [a, b, b'|', ..] if *a != b'|' && *b != b'|' => (&s[..2], Some(&s[3..])),
        _ => next_field(s),
    }
}

/// Parse a metric line (anything that is not an event or service check).
pub(crate) fn parse_metric<'a>(line: &'a [u8], opts: &ParseOptions) -> Result<MetricSample<'a>, ParseError> {
    // Each byte of the line is searched once (SIMD): up to the first `|`,
    // then field by field.
    let (name_value, rest) = next_field(line);
    let rest = rest.ok_or(ParseError::MissingPipe)?;
    let colon = memchr::memchr(b':', name_value).ok_or(ParseError::MissingColon)?;
    let name = &name_value[..colon];
    let raw_value = &name_value[colon + 1..];
    if name.is_empty() {
        return Err(ParseError::EmptyName);
    }
    if raw_value.is_empty() {
        return Err(ParseError::EmptyValue);
    }
    let (raw_type, mut rest) = type_field(rest);
    let kind = MetricKind::from_wire(raw_type).ok_or(ParseError::UnknownType)?;
    let values = if kind == MetricKind::Set {
        ValueList { count: 1, first: 0.0, more: None }
    } else {
        validate_values(raw_value)?
    };

    let mut sample = MetricSample {
        name,
        kind,
        sample_rate: 1.0,
        tags: Tags::NONE,
        timestamp: None,
        container_id: None,
        external_data: None,
        cardinality: None,
        raw_value,
        value_count: values.count,
        first_value_bits: values.first.to_bits(),
        more_values: values.more,
    };
    while let Some(fields) = rest {
        let (field, next) = next_field(fields);
        rest = next;
        if let Some(t) = field.strip_prefix(b"#") {
            sample.tags = Tags::new(t);
        } else if let Some(r) = field.strip_prefix(b"@") {
            sample.sample_rate = parse_go_float(r).map_err(|_| ParseError::InvalidSampleRate)?;
        } else if let Some(ts) = field.strip_prefix(b"T") {
            if !opts.honor_timestamps {
                continue;
            }
            let ts = parse_go_int(ts).map_err(|_| ParseError::InvalidTimestamp)?;
            if ts < 1 {
                return Err(ParseError::NonPositiveTimestamp);
            }
            sample.timestamp = Some(ts);
        } else if opts.origin_detection_client {
            if let Some(c) = field.strip_prefix(b"c:") {
                sample.container_id = Some(c);
            } else if let Some(e) = field.strip_prefix(b"e:") {
                sample.external_data = Some(e);
            } else if let Some(card) = field.strip_prefix(b"card:") {
                sample.cardinality = Some(card);
            }
        }
    }
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use crate::core::protocol::{parse_line, Message, MetricKind, MetricSample, ParseError, ParseOptions};

    fn m(line: &str) -> MetricSample<'_> {
        m_opts(line, &ParseOptions::default())
    }
    fn m_opts<'a>(line: &'a str, o: &ParseOptions) -> MetricSample<'a> {
        match parse_line(line.as_bytes(), o) {
            Ok(Message::Metric(s)) => s,
            other => panic!("{line:?}: expected metric, got {other:?}"),
        }
    }
    fn e(line: &str) -> ParseError {
        match parse_line(line.as_bytes(), &ParseOptions::default()) {
            Err(e) => e,
            Ok(m) => panic!("{line:?}: expected error, got {m:?}"),
        }
    }
    fn vals(s: &MetricSample<'_>) -> Vec<f64> {
        s.values().collect()
    }
    fn tags<'a>(s: &MetricSample<'a>) -> Vec<&'a [u8]> {
        s.tags.iter().collect()
    }

    #[test]
    fn spec_examples() {
        let s = m("page.views:1|c");
        assert_eq!(s.name, b"page.views");
        assert_eq!(s.kind, MetricKind::Counter);
        assert_eq!(vals(&s), vec![1.0]);
        assert_eq!(s.sample_rate, 1.0);
        assert!(s.tags.is_empty());
        assert_eq!(s.timestamp, None);

        let s = m("page.views:1|c|@0.1|#env:prod,handler:home");
        assert_eq!(s.sample_rate, 0.1);
        assert_eq!(tags(&s), vec![&b"env:prod"[..], b"handler:home"]);

        let s = m("queue.depth:42|g|#queue:jobs|T1700000000");
        assert_eq!(s.kind, MetricKind::Gauge);
        assert_eq!(vals(&s), vec![42.0]);
        assert_eq!(s.timestamp, Some(1_700_000_000));

        let s = m("request.latency:12:15.5:9|ms|#env:prod");
        assert_eq!(s.kind, MetricKind::Timing);
        assert_eq!(vals(&s), vec![12.0, 15.5, 9.0]);
        assert_eq!(s.value_count(), 3);

        let s = m("unique.users:alice|s");
        assert_eq!(s.kind, MetricKind::Set);
        assert_eq!(s.set_member(), Some(&b"alice"[..]));
        assert_eq!(s.values().count(), 0);
        assert_eq!(s.value_count(), 1);

        let s = m("payload.size:1024|d|@0.5|#host:web-3,region:eu");
        assert_eq!(s.kind, MetricKind::Distribution);
        assert_eq!(s.sample_rate, 0.5);
        assert_eq!(tags(&s), vec![&b"host:web-3"[..], b"region:eu"]);

        let s = m("cpu.temp:71|g|c:ci-5d1e8a0f,in-1234|card:high");
        assert_eq!(s.container_id, None, "origin fields ignored by default");
        assert_eq!(s.cardinality, None);
        let o = ParseOptions { origin_detection_client: true, ..ParseOptions::default() };
        let s = m_opts("cpu.temp:71|g|c:ci-5d1e8a0f,in-1234|card:high", &o);
        assert_eq!(s.container_id, Some(&b"ci-5d1e8a0f,in-1234"[..]));
        assert_eq!(s.cardinality, Some(&b"high"[..]));
        assert_eq!(s.external_data, None);
    }

    #[test]
    fn types() {
        for (t, k) in [
            ("c", MetricKind::Counter),
            ("g", MetricKind::Gauge),
            ("h", MetricKind::Histogram),
            ("ms", MetricKind::Timing),
            ("s", MetricKind::Set),
            ("d", MetricKind::Distribution),
        ] {
            let line = format!("x:1|{t}");
            assert_eq!(m(&line).kind, k);
            assert_eq!(k.as_str(), t);
        }
        for bad in ["x:1|m", "x:1|C", "x:1|c ", "x:1|gauge", "x:1|", "x:1||c", "x:1|MS", "x:1| c"] {
            assert_eq!(e(bad), ParseError::UnknownType, "{bad}");
        }
    }

    #[test]
    fn structure_errors() {
        assert_eq!(e("page.views:1"), ParseError::MissingPipe);
        assert_eq!(e(""), ParseError::MissingPipe);
        assert_eq!(e("page.views|c"), ParseError::MissingColon);
        assert_eq!(e("name|with|pipes:1|c"), ParseError::MissingColon);
        assert_eq!(e(":1|c"), ParseError::EmptyName);
        assert_eq!(e("page.views:|c"), ParseError::EmptyValue);
        assert_eq!(e("visitors:|s"), ParseError::EmptyValue);
        // Name/value errors are reported before type errors, like the Agent.
        assert_eq!(e(":1|zz"), ParseError::EmptyName);
        // Type errors before value errors.
        assert_eq!(e("x:abc|zz"), ParseError::UnknownType);
        // Value errors before field errors.
        assert_eq!(e("x:abc|c|@zz"), ParseError::InvalidValue);
    }

    #[test]
    fn names_are_verbatim() {
        assert_eq!(m(" page.views:1|c").name, b" page.views");
        assert_eq!(m("name with space:1|c").name, b"name with space");
        assert_eq!(m("telegraf.counter,env=prod,a=b:1|c").name, b"telegraf.counter,env=prod,a=b");
        assert_eq!(m("_e:1|c").name, b"_e");
        let raw = b"page.\xff\xfeviews:1|c";
        match parse_line(raw, &ParseOptions::default()) {
            Ok(Message::Metric(s)) => assert_eq!(s.name, b"page.\xff\xfeviews"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values_and_multi_values() {
        assert_eq!(vals(&m("x:0x1p-2|g")), vec![0.25]);
        assert_eq!(vals(&m("x:1_000|g")), vec![1000.0]);
        assert_eq!(vals(&m("x:+5|g")), vec![5.0]);
        assert_eq!(vals(&m("x:-10|g")), vec![-10.0]);
        assert_eq!(vals(&m("x:1e-400|g")), vec![0.0]);
        assert!(vals(&m("x:NaN|g"))[0].is_nan());
        assert_eq!(vals(&m("x:-Infinity|g")), vec![f64::NEG_INFINITY]);
        assert_eq!(vals(&m("x:1::2|d")), vec![1.0, 2.0]);
        assert_eq!(vals(&m("x:1:|d")), vec![1.0]);
        assert_eq!(vals(&m("x::1|d")), vec![1.0]);
        assert_eq!(m("x:1::2|d").value_count(), 2);
        let s = m("x:1.5:2.5:NaN|h");
        let v = vals(&s);
        assert_eq!(&v[..2], &[1.5, 2.5]);
        assert!(v[2].is_nan());
        for bad in [
            "x:abc|g",
            "x:True|g",
            "x: 1|g",
            "x:1 |g",
            "x:1,5|g",
            "x:1.5.3|g",
            "x:0x10|g",
            "x:1e309|g",
            "x:-1e309|g",
            "x:1:abc:3|d",
            "name:with:colons:1|c",
        ] {
            assert_eq!(e(bad), ParseError::InvalidValue, "{bad}");
        }
        assert_eq!(e("x::|d"), ParseError::EmptyValueList);
        assert_eq!(e("x:::::|g"), ParseError::EmptyValueList);
    }

    #[test]
    fn sets_never_split() {
        let s = m("users:a:b|s");
        assert_eq!(s.set_member(), Some(&b"a:b"[..]));
        assert_eq!(m("users:-5|s").set_member(), Some(&b"-5"[..]));
        assert_eq!(m("users:1.0|s").set_member(), Some(&b"1.0"[..]));
        assert_eq!(m("users:::|s").set_member(), Some(&b"::"[..]));
        assert_eq!(m("users:1|g").set_member(), None);
    }

    #[test]
    fn optional_fields() {
        // Any order, unknown and empty fields ignored, last wins.
        let s = m("x:1|c|T1700000000|x:y||#a:b|@0.5|env:test|m:test|");
        assert_eq!(s.timestamp, Some(1_700_000_000));
        assert_eq!(tags(&s), vec![&b"a:b"[..]]);
        assert_eq!(s.sample_rate, 0.5);
        assert_eq!(m("x:1|c|@0.5|@0.25").sample_rate, 0.25);
        assert_eq!(tags(&m("x:1|c|#a:b|#c:d")), vec![&b"c:d"[..]]);
        assert!(m("x:1|c|#env:test|#").tags.is_empty());
        assert_eq!(tags(&m("x:1|c|##a")), vec![&b"#a"[..]]);
        assert_eq!(tags(&m("x:1|c|#,")), vec![&b""[..], b""]);
        assert_eq!(tags(&m("tagged:1|c|#pipe|in:tag,comma,in:tag")), vec![&b"pipe"[..]]);
        assert_eq!(m("x:1|c|T1|T2").timestamp, Some(2));
    }

    #[test]
    fn sample_rates() {
        assert_eq!(m("x:1|c|@0").sample_rate, 0.0);
        assert_eq!(m("x:1|c|@2").sample_rate, 2.0);
        assert_eq!(m("x:1|c|@-0.5").sample_rate, -0.5);
        assert!(m("x:1|c|@NaN").sample_rate.is_nan());
        assert_eq!(m("x:1|g|@0.5").sample_rate, 0.5);
        assert_eq!(m("x:1|c|@.5").sample_rate, 0.5);
        assert_eq!(m("x:1|c|@0x1p-1").sample_rate, 0.5);
        for bad in ["x:1|c|@abc", "x:1|c|@", "x:1|c|@ 0.5", "x:1|c|@1e999"] {
            assert_eq!(e(bad), ParseError::InvalidSampleRate, "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(m("x:1|h|T1700000001").timestamp, Some(1_700_000_001));
        assert_eq!(m("x:1|c|T+5").timestamp, Some(5));
        assert_eq!(m("x:1|c|T1").timestamp, Some(1));
        assert_eq!(e("x:5|c|T0"), ParseError::NonPositiveTimestamp);
        assert_eq!(e("x:1|g|T-5"), ParseError::NonPositiveTimestamp);
        for bad in
            ["x:1|g|T1700000000.5", "x:1|g|Tnow", "x:1|g|T", "x:1|g|T99999999999999999999", "x:1|g|T1_000", "x:1|g|T 1"]
        {
            assert_eq!(e(bad), ParseError::InvalidTimestamp, "{bad}");
        }
        // Not honoured: the field is ignored entirely, even when invalid.
        let o = ParseOptions { honor_timestamps: false, ..ParseOptions::default() };
        assert_eq!(m_opts("x:1|g|T1700000000", &o).timestamp, None);
        assert_eq!(m_opts("x:1|g|T0", &o).timestamp, None);
        assert_eq!(m_opts("x:1|g|Tnow", &o).timestamp, None);
    }

    #[test]
    fn origin_fields() {
        let line = "x:1|c|#a:b|c:ci-0123,in-12345|e:it-false,cn-app,pu-0a1b|card:orchestrator";
        let s = m(line);
        assert_eq!((s.container_id, s.external_data, s.cardinality), (None, None, None));
        let o = ParseOptions { origin_detection_client: true, ..ParseOptions::default() };
        let s = m_opts(line, &o);
        assert_eq!(s.container_id, Some(&b"ci-0123,in-12345"[..]));
        assert_eq!(s.external_data, Some(&b"it-false,cn-app,pu-0a1b"[..]));
        assert_eq!(s.cardinality, Some(&b"orchestrator"[..]));
        assert_eq!(s.tags.raw(), b"a:b");
        // Empty and last-wins.
        let s = m_opts("x:1|c|c:|c:abc|card:", &o);
        assert_eq!(s.container_id, Some(&b"abc"[..]));
        assert_eq!(s.cardinality, Some(&b""[..]));
    }

    #[test]
    fn type_field_shortcut_matches_next_field() {
        for s in [
            &b""[..],
            b"c",
            b"ms",
            b"|",
            b"||",
            b"|||",
            b"c|",
            b"c||",
            b"|c",
            b"||c",
            b"ms|",
            b"ms||#a",
            b"m|s",
            b"|ms|",
            b"abc|d",
            b"c|#a:b|@0.5",
            b"ms|@1",
        ] {
            assert_eq!(super::type_field(s), crate::core::protocol::next_field(s), "{s:?}");
        }
    }

    #[test]
    fn raw_value_accessor() {
        assert_eq!(m("x:1:2|h").raw_value(), b"1:2");
    }
}
