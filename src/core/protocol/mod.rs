//! DogStatsD wire protocol: splitting datagrams into lines and parsing each
//! line into a metric sample, event or service check, byte-for-byte like the
//! Datadog Agent (`comp/dogstatsd/server/impl/parse*.go`). See
//! docs/dogstatsd-compat.md and the annotated corpus in tests/data/vectors.
//!
//! Design: the parser is pure and zero-copy. Parsed messages borrow from the
//! datagram; metric lines never allocate (values are validated at parse time
//! and re-decoded on demand); events allocate only to replace `\n` escapes.
//! Nothing here panics on any input.

pub mod error;
pub mod event;
pub mod float;
pub mod metric;
pub mod origin;
pub mod service_check;
pub mod tags;

pub use error::ParseError;
pub use event::{AlertType, EventMessage, EventPriority};
pub use float::{parse_go_float, parse_go_int, NumberError};
pub use metric::{MetricKind, MetricSample, Values};
pub use origin::{ExternalData, LocalData};
pub use service_check::{status_name, ServiceCheckMessage};
pub use tags::{TagIter, Tags};

/// Agent settings that change how lines are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// `dogstatsd_no_aggregation_pipeline` (default true): read `T`
    /// timestamps (and reject invalid ones). When false the `T` field is
    /// ignored entirely, even if malformed.
    pub honor_timestamps: bool,
    /// `dogstatsd_origin_detection_client` (default false): read the `c:`,
    /// `e:` and `card:` fields. When false they are ignored like unknown fields.
    pub origin_detection_client: bool,
}

impl Default for ParseOptions {
    /// The Agent's defaults: timestamps honoured, client origin ignored.
    fn default() -> Self {
        ParseOptions { honor_timestamps: true, origin_detection_client: false }
    }
}

/// One parsed DogStatsD line.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    /// A metric line (anything not starting with `_e{` or `_sc`).
    Metric(MetricSample<'a>),
    /// A line starting with `_e{`.
    Event(EventMessage<'a>),
    /// A line starting with `_sc`.
    ServiceCheck(ServiceCheckMessage<'a>),
}

impl Message<'_> {
    /// The Agent's `message_type` telemetry label for this message
    /// (`metrics`, `events`, `service_checks`), matching
    /// [`ParseError::message_type`] so ok/error counts line up.
    pub fn message_type(&self) -> &'static str {
        match self {
            Message::Metric(_) => "metrics",
            Message::Event(_) => "events",
            Message::ServiceCheck(_) => "service_checks",
        }
    }
}

/// Iterator over the lines of a datagram; see [`lines`].
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    rest: Option<&'a [u8]>,
}

/// Takes the next `sep`-separated piece off `rest`; `None` once the last
/// piece was taken. The splitting loop shared by values and tags (short
/// pieces, where a plain byte loop beats a SIMD search's set-up).
pub(crate) fn next_piece<'a>(rest: &mut Option<&'a [u8]>, sep: u8) -> Option<&'a [u8]> {
    take_piece(rest, |r| r.iter().position(|&b| b == sep))
}

/// Takes the piece before the separator `find` locates off `rest` (all of
/// it when there is none); `None` once the last piece was taken.
#[inline]
fn take_piece<'a>(rest: &mut Option<&'a [u8]>, find: impl Fn(&[u8]) -> Option<usize>) -> Option<&'a [u8]> {
    let r = (*rest)?;
    Some(match find(r) {
        Some(i) => {
            *rest = Some(&r[i + 1..]);
            &r[..i]
        }
        None => {
            *rest = None;
            r
        }
    })
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            // Lines are long (hundreds of bytes): SIMD search, not a byte loop.
            let line = take_piece(&mut self.rest, |r| memchr::memchr(b'\n', r))?;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                return Some(line);
            }
        }
    }
}

/// Split a datagram into lines like the Agent (`bufio.ScanLines`): split on
/// `\n`, strip ONE trailing `\r`, skip empty lines. A bare `\r` elsewhere
/// does not split. The last line needs no terminator.
pub fn lines(datagram: &[u8]) -> Lines<'_> {
    Lines { rest: Some(datagram) }
}

/// For transports listed in `dogstatsd_eol_required`: split a datagram into
/// the part that ends with its last `\n` (feed it to [`lines`]) and the
/// unterminated tail, if any. The Agent drops that tail and counts one
/// `UnterminatedMetricErrors` for it, whatever it contains (even a lone
/// `\r`); an empty tail is not an error.
pub fn split_terminated(datagram: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr::memrchr(b'\n', datagram) {
        Some(i) if i + 1 == datagram.len() => (datagram, None),
        Some(i) => (&datagram[..=i], Some(&datagram[i + 1..])),
        None if datagram.is_empty() => (datagram, None),
        None => (&datagram[..0], Some(datagram)),
    }
}

/// Parse one line (as produced by [`lines`]). The line is classified by
/// prefix exactly like the Agent: `_e{` is an event, `_sc` a service check,
/// anything else (including garbage) a metric.
pub fn parse_line<'a>(line: &'a [u8], opts: &ParseOptions) -> Result<Message<'a>, ParseError> {
    if line.starts_with(b"_e{") {
        event::parse_event(line, opts).map(Message::Event)
    } else if line.starts_with(b"_sc") {
        service_check::parse_service_check(line, opts).map(Message::ServiceCheck)
    } else {
        metric::parse_metric(line, opts).map(Message::Metric)
    }
}

/// Go's `nextField`: the bytes before the first `|` and, if there was one,
/// everything after it (possibly empty). `None` means "no more fields",
/// which is different from an empty trailing field.
#[inline]
pub(crate) fn next_field(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    // The tag field is most of a line: SIMD search.
    match memchr::memchr(b'|', s) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(d: &[u8]) -> Vec<&[u8]> {
        lines(d).collect()
    }

    #[test]
    fn splitting() {
        assert_eq!(ls(b"page.views:1|c"), vec![&b"page.views:1|c"[..]]);
        assert_eq!(ls(b"page.views:1|c\n"), vec![&b"page.views:1|c"[..]]);
        assert_eq!(ls(b"a:1|c\nb:2|g"), vec![&b"a:1|c"[..], b"b:2|g"]);
        assert_eq!(ls(b"a:1|c\r\nb:2|g\r\n"), vec![&b"a:1|c"[..], b"b:2|g"]);
        assert_eq!(ls(b"a:1|c\n\nb:2|g"), vec![&b"a:1|c"[..], b"b:2|g"]);
        assert_eq!(ls(b""), Vec::<&[u8]>::new());
        assert_eq!(ls(b"\n\n\n"), Vec::<&[u8]>::new());
        assert_eq!(ls(b"\r\n"), Vec::<&[u8]>::new());
        assert_eq!(ls(b"\r"), Vec::<&[u8]>::new());
        // Only one CR is stripped; a bare CR does not split.
        assert_eq!(ls(b"x:1|c\r\r\n"), vec![&b"x:1|c\r"[..]]);
        assert_eq!(ls(b"a:1|c\rb:2|g"), vec![&b"a:1|c\rb:2|g"[..]]);
        assert_eq!(ls(b"x:1|c\r"), vec![&b"x:1|c"[..]]);
    }

    #[test]
    fn eol_required_split() {
        assert_eq!(split_terminated(b"a:1|c\nb:2|g\n"), (&b"a:1|c\nb:2|g\n"[..], None));
        assert_eq!(split_terminated(b"a:1|c\nb:2|g"), (&b"a:1|c\n"[..], Some(&b"b:2|g"[..])));
        assert_eq!(split_terminated(b"a:1|c"), (&b""[..], Some(&b"a:1|c"[..])));
        assert_eq!(split_terminated(b""), (&b""[..], None));
        assert_eq!(split_terminated(b"a:1|c\n\r"), (&b"a:1|c\n"[..], Some(&b"\r"[..])));
    }

    #[test]
    fn classification() {
        let o = ParseOptions::default();
        assert!(matches!(parse_line(b"_e{1,1}:a|b", &o), Ok(Message::Event(_))));
        assert!(matches!(parse_line(b"_sc|a|0", &o), Ok(Message::ServiceCheck(_))));
        assert!(matches!(parse_line(b"_e:1|c", &o), Ok(Message::Metric(_))));
        assert!(matches!(parse_line(b"_s:1|c", &o), Ok(Message::Metric(_))));
        assert_eq!(parse_line(b"_e{", &o).map(|_| ()), Err(ParseError::EventHeader));
        assert_eq!(parse_line(b"_sc", &o).map(|_| ()), Err(ParseError::ServiceCheckFormat));
        assert_eq!(parse_line(b"GET / HTTP/1.1", &o).map(|_| ()), Err(ParseError::MissingPipe));
        let m = parse_line(b"x:1|c", &o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.message_type(), "metrics");
    }

    #[test]
    fn defaults() {
        let o = ParseOptions::default();
        assert!(o.honor_timestamps);
        assert!(!o.origin_detection_client);
    }

    #[test]
    fn garbage_never_panics() {
        let o = ParseOptions::default();
        let cases: &[&[u8]] = &[
            b"\x00\x01\x02\x03\xff\xfe",
            b"\xff|\x01:\x02|\xfe",
            b"servers.web01.cpu 0.75 1700000000",
            b"{\"metric\": \"page.views\", \"value\": 1}",
            b"|",
            b":",
            b"||",
            b"::",
            b":|",
            b"|:",
            b"_e{,}:",
            b"_e{1,1}:",
            b"_e{,,,,}:||",
            b"_sc||",
            b"_sc|||",
            b"_e{0,0}:",
            b"@",
            b"#",
            b"x:1|c|@",
            b"x:1|c|T",
        ];
        for c in cases {
            let _ = parse_line(c, &o);
        }
    }
}
