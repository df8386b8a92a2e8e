//! Property tests: a reference model for metric lines, and fuzz-style
//! robustness checks (public API only).

use edgestat::core::protocol::{lines, parse_go_float, parse_line, Message, MetricKind, ParseOptions};
use proptest::prelude::*;

const KINDS: [MetricKind; 6] = [
    MetricKind::Counter,
    MetricKind::Gauge,
    MetricKind::Histogram,
    MetricKind::Timing,
    MetricKind::Set,
    MetricKind::Distribution,
];

/// How a float is written on the wire; all of these must read back exactly.
#[derive(Debug, Clone, Copy)]
enum Style {
    Display,
    LowerExp,
    UpperExp,
}

fn render_f64(v: f64, style: Style) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-infinity".into() };
    }
    match style {
        Style::Display => format!("{v}"),
        Style::LowerExp => format!("{v:e}"),
        Style::UpperExp => format!("{v:E}"),
    }
}

fn value_strategy() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => any::<f64>().prop_filter("finite", |v| v.is_finite()),
        4 => (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
        2 => -1.0e6f64..1.0e6,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
    ]
}

fn style_strategy() -> impl Strategy<Value = Style> {
    prop_oneof![Just(Style::Display), Just(Style::LowerExp), Just(Style::UpperExp)]
}

/// Structured description of a valid metric line.
#[derive(Debug, Clone)]
struct Model {
    name: String,
    kind: MetricKind,
    values: Vec<f64>,
    styles: Vec<Style>,
    double_colons: bool,
    member: String,
    rate: Option<f64>,
    tags: Option<Vec<String>>,
    timestamp: Option<i64>,
    unknown: Vec<String>,
    field_order: Vec<usize>,
}

fn model_strategy() -> impl Strategy<Value = Model> {
    (
        "[a-zA-Z0-9.][a-zA-Z0-9._ -]{0,20}",
        0usize..6,
        prop::collection::vec((value_strategy(), style_strategy()), 1..=5),
        any::<bool>(),
        "[a-zA-Z0-9:.-]{1,12}",
        prop::option::of(prop_oneof![0.0f64..=1.0, Just(1.0), Just(0.5)]),
        prop::option::of(prop::collection::vec("[a-zA-Z0-9:._/ -]{0,10}", 1..5)),
        prop::option::of(1i64..=i64::MAX),
        prop::collection::vec("[a-z]{2,4}:[a-z0-9]{0,5}", 0..3),
        Just((0..7usize).collect::<Vec<_>>()).prop_shuffle(),
    )
        .prop_map(|(name, k, vs, double_colons, member, rate, tags, timestamp, unknown, field_order)| Model {
            name,
            kind: KINDS[k],
            values: vs.iter().map(|(v, _)| *v).collect(),
            styles: vs.iter().map(|(_, s)| *s).collect(),
            double_colons,
            member,
            rate,
            tags,
            timestamp,
            unknown,
            field_order,
        })
}

impl Model {
    fn render(&self) -> String {
        let value = if self.kind == MetricKind::Set {
            self.member.clone()
        } else {
            let sep = if self.double_colons { "::" } else { ":" };
            self.values.iter().zip(&self.styles).map(|(v, s)| render_f64(*v, *s)).collect::<Vec<_>>().join(sep)
        };
        let mut fields: Vec<Option<String>> = vec![
            self.rate.map(|r| format!("@{}", render_f64(r, Style::Display))),
            self.tags.as_ref().map(|t| format!("#{}", t.join(","))),
            self.timestamp.map(|t| format!("T{t}")),
            self.unknown.first().cloned(),
            self.unknown.get(1).cloned(),
            self.unknown.get(2).cloned(),
            None,
        ];
        let mut out = format!("{}:{}|{}", self.name, value, self.kind.as_str());
        for &i in &self.field_order {
            if let Some(f) = fields[i].take() {
                out.push('|');
                out.push_str(&f);
            }
        }
        out
    }

    fn expected_tags(&self) -> Vec<String> {
        match &self.tags {
            Some(t) if !t.join(",").is_empty() => t.clone(),
            _ => Vec::new(),
        }
    }
}

fn same_f64(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn reference_model_round_trips(model in model_strategy()) {
        let line = model.render();
        let parsed = parse_line(line.as_bytes(), &ParseOptions::default());
        let m = match parsed {
            Ok(Message::Metric(m)) => m,
            other => return Err(TestCaseError::fail(format!("{line:?}: {other:?}"))),
        };
        prop_assert_eq!(m.name, model.name.as_bytes());
        prop_assert_eq!(m.kind, model.kind);
        if model.kind == MetricKind::Set {
            prop_assert_eq!(m.set_member(), Some(model.member.as_bytes()));
            prop_assert_eq!(m.values().count(), 0);
        } else {
            let got: Vec<f64> = m.values().collect();
            prop_assert_eq!(got.len(), model.values.len(), "{}", line);
            prop_assert_eq!(m.value_count(), model.values.len());
            for (g, w) in got.iter().zip(&model.values) {
                prop_assert!(same_f64(*g, *w), "{}: got {} want {}", line, g, w);
            }
            prop_assert_eq!(m.set_member(), None);
        }
        prop_assert!(same_f64(m.sample_rate, model.rate.unwrap_or(1.0)));
        let tags: Vec<String> = m.tags.iter().map(|t| String::from_utf8_lossy(t).into_owned()).collect();
        prop_assert_eq!(tags, model.expected_tags());
        prop_assert_eq!(m.timestamp, model.timestamp);

        // Timestamps ignored entirely when not honoured.
        let o = ParseOptions { honor_timestamps: false, ..ParseOptions::default() };
        match parse_line(line.as_bytes(), &o) {
            Ok(Message::Metric(m)) => prop_assert_eq!(m.timestamp, None),
            other => return Err(TestCaseError::fail(format!("{line:?}: {other:?}"))),
        }

        // As part of a datagram (with CRLF and blank lines) it reads the same.
        let datagram = format!("\n{line}\r\n\n{line}\n");
        let ls: Vec<&[u8]> = lines(datagram.as_bytes()).collect();
        prop_assert_eq!(ls, vec![line.as_bytes(), line.as_bytes()]);
    }

    #[test]
    fn decimal_floats_agree_with_correct_rounding(s in "[+-]?[0-9]{0,25}(\\.[0-9]{0,25})?([eE][+-]?[0-9]{1,3})?") {
        // Go and Rust both round correctly; for plain decimal syntax (which
        // both accept) the results must be identical, overflow excepted.
        let rust = s.parse::<f64>();
        let go = parse_go_float(s.as_bytes());
        match rust {
            Ok(v) if v.is_finite() => prop_assert_eq!(go.map(f64::to_bits), Ok(v.to_bits()), "{}", s),
            Ok(_) => prop_assert!(go.is_err(), "{}: overflow must be an error", s),
            Err(_) => prop_assert!(go.is_err(), "{}: Rust rejects, so must we", s),
        }
    }

    #[test]
    fn hex_floats_are_exact_when_representable(m in 0u64..(1u64 << 53), e in -1000i32..960, upper in any::<bool>()) {
        let s = if upper { format!("0X{m:X}P{e}") } else { format!("0x{m:x}p{e}") };
        let want = (m as f64) * 2f64.powi(e);
        prop_assert_eq!(parse_go_float(s.as_bytes()).map(f64::to_bits), Ok(want.to_bits()), "{}", s);
        // Inserting '_' after the prefix or between digits is accepted by Go.
        let us = format!("0x_{m:x}p{e}");
        prop_assert_eq!(parse_go_float(us.as_bytes()).map(f64::to_bits), Ok(want.to_bits()), "{}", us);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
        exercise(&data)?;
    }

    #[test]
    fn protocol_shaped_bytes_never_panic(s in "[_ec{}s|:#@T,0-9a-z.\\\\\r\n+-]{0,80}") {
        exercise(s.as_bytes())?;
        let with_prefix = format!("_e{{{s}");
        exercise(with_prefix.as_bytes())?;
        let with_sc = format!("_sc|{s}");
        exercise(with_sc.as_bytes())?;
    }

    #[test]
    fn mutated_valid_lines_never_panic(
        model in model_strategy(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, prop::sample::select(b"|:#@T,\n\r_e{}0123456789.\\x-".to_vec())), 1..6),
    ) {
        let mut bytes = model.render().into_bytes();
        for (idx, op, b) in edits {
            let i = idx.index(bytes.len() + 1);
            match op {
                0 => bytes.insert(i, b),
                1 if i < bytes.len() => { bytes.remove(i); }
                _ if i < bytes.len() => bytes[i] = b,
                _ => bytes.push(b),
            }
        }
        exercise(&bytes)?;
    }
}

/// Split and parse with every option combination, touching every accessor.
fn exercise(data: &[u8]) -> Result<(), TestCaseError> {
    let newlines = data.iter().filter(|&&b| b == b'\n').count();
    let mut n = 0;
    for line in lines(data) {
        n += 1;
        prop_assert!(!line.is_empty());
        prop_assert!(!line.contains(&b'\n'));
        for honor in [true, false] {
            for origin in [true, false] {
                let o = ParseOptions { honor_timestamps: honor, origin_detection_client: origin };
                touch(parse_line(line, &o));
            }
        }
    }
    prop_assert!(n <= newlines + 1);
    // parse_line itself must also survive raw, unsplit input.
    touch(parse_line(data, &ParseOptions::default()));
    Ok(())
}

fn touch(r: Result<Message<'_>, edgestat::core::protocol::ParseError>) {
    match r {
        Ok(Message::Metric(m)) => {
            let n = m.values().count();
            if m.kind != MetricKind::Set {
                assert_eq!(n, m.value_count());
                assert!(n >= 1);
            } else {
                assert!(m.set_member().is_some());
            }
            let _ = m.tags.iter().count();
        }
        Ok(Message::Event(e)) => {
            assert!(!e.title.is_empty());
            let _ = e.tags.iter().count();
        }
        Ok(Message::ServiceCheck(s)) => {
            assert!(s.status <= 3);
            assert!(!s.name.is_empty());
        }
        Err(e) => {
            assert!(!e.kind().is_empty());
            assert!(!e.to_string().is_empty());
        }
    }
}
