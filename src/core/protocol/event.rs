//! Events: `_e{<title_len>,<text_len>}:<title>|<text>[|field]...` (spec §4).

use std::borrow::Cow;

use crate::core::protocol::error::ParseError;
use crate::core::protocol::float::parse_go_int;
use crate::core::protocol::tags::Tags;
use crate::core::protocol::{next_field, ParseOptions};

/// Event priority (`p:` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventPriority {
    /// `p:normal`, also the Agent's default when the field is absent.
    Normal,
    /// `p:low`.
    Low,
}

impl EventPriority {
    /// Exact, case-sensitive match like the Agent (`Low` is invalid).
    pub fn from_wire(raw: &[u8]) -> Option<Self> {
        match raw {
            b"normal" => Some(EventPriority::Normal),
            b"low" => Some(EventPriority::Low),
            _ => None,
        }
    }

    /// Wire / JSON spelling (`normal`, `low`).
    pub fn as_str(&self) -> &'static str {
        match self {
            EventPriority::Normal => "normal",
            EventPriority::Low => "low",
        }
    }
}

/// Event alert type (`t:` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertType {
    /// `t:error`.
    Error,
    /// `t:warning`.
    Warning,
    /// `t:info`, also the Agent's default when the field is absent.
    Info,
    /// `t:success`.
    Success,
}

impl AlertType {
    /// Exact, case-sensitive match like the Agent.
    pub fn from_wire(raw: &[u8]) -> Option<Self> {
        match raw {
            b"error" => Some(AlertType::Error),
            b"warning" => Some(AlertType::Warning),
            b"info" => Some(AlertType::Info),
            b"success" => Some(AlertType::Success),
            _ => None,
        }
    }

    /// Wire / JSON spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertType::Error => "error",
            AlertType::Warning => "warning",
            AlertType::Info => "info",
            AlertType::Success => "success",
        }
    }
}

/// A parsed event. Borrowed from the datagram except when title or text
/// contained a `\n` escape that had to be replaced by a real newline.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMessage<'a> {
    /// Title, `title_len` raw bytes, with `\n` escapes turned into newlines.
    /// May be invalid UTF-8 (lengths from UTF-16 clients cut characters).
    pub title: Cow<'a, [u8]>,
    /// Text, `text_len` raw bytes after the separator, unescaped like the title.
    pub text: Cow<'a, [u8]>,
    /// `d:` Unix timestamp; 0 when absent or invalid ("now" at aggregation).
    pub timestamp: i64,
    /// `h:` hostname (beats a `host:` tag at enrichment).
    pub hostname: Option<&'a [u8]>,
    /// `k:` aggregation key.
    pub aggregation_key: Option<&'a [u8]>,
    /// `p:` priority; `None` = absent (Agent default `normal`). An invalid
    /// value keeps the previous one.
    pub priority: Option<EventPriority>,
    /// `s:` source type name.
    pub source_type: Option<&'a [u8]>,
    /// `t:` alert type; `None` = absent (Agent default `info`). An invalid
    /// value keeps the previous one.
    pub alert_type: Option<AlertType>,
    /// Last `#` field's tags.
    pub tags: Tags<'a>,
    /// Raw `c:` origin value (only with client origin detection enabled).
    pub container_id: Option<&'a [u8]>,
    /// Raw `e:` external data (gated like `container_id`).
    pub external_data: Option<&'a [u8]>,
    /// Raw `card:` cardinality (gated like `container_id`).
    pub cardinality: Option<&'a [u8]>,
}

/// Replace every two-byte `\` `n` sequence by a newline, left to right
/// (Go `bytes.Replace(text, "\\n", "\n", -1)`); borrows when there is none.
fn unescape(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.windows(2).any(|w| w == b"\\n") {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && raw.get(i + 1) == Some(&b'n') {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

/// Parse one length of the header: Go `strconv.Atoi`, then `< 0` rejected.
fn parse_len(raw: &[u8]) -> Result<usize, ParseError> {
    let v = parse_go_int(raw).map_err(|_| ParseError::EventLength)?;
    usize::try_from(v).map_err(|_| ParseError::EventLength)
}

/// Parse a line starting with `_e{`.
pub(crate) fn parse_event<'a>(line: &'a [u8], opts: &ParseOptions) -> Result<EventMessage<'a>, ParseError> {
    let colon = line.iter().position(|&b| b == b':').ok_or(ParseError::EventHeader)?;
    let header = &line[..colon];
    let body = &line[colon + 1..];
    if header.len() < 7 {
        return Err(ParseError::EventHeader);
    }
    // Between "_e{" and the last header byte (assumed '}', not checked).
    let lengths = &header[3..header.len() - 1];
    let comma = lengths.iter().position(|&b| b == b',').ok_or(ParseError::EventHeader)?;
    // Same order as the Agent: title length, empty title, then text length.
    let title_len = parse_len(&lengths[..comma])?;
    if title_len == 0 {
        return Err(ParseError::EventEmptyTitle);
    }
    let text_len = parse_len(&lengths[comma + 1..])?;
    let text_start = title_len.checked_add(1).ok_or(ParseError::EventTooShort)?;
    let end = text_start.checked_add(text_len).ok_or(ParseError::EventTooShort)?;
    if body.len() < end {
        return Err(ParseError::EventTooShort);
    }
    let mut ev = EventMessage {
        title: unescape(&body[..title_len]),
        text: unescape(&body[text_start..end]),
        timestamp: 0,
        hostname: None,
        aggregation_key: None,
        priority: None,
        source_type: None,
        alert_type: None,
        tags: Tags::NONE,
        container_id: None,
        external_data: None,
        cardinality: None,
    };
    if body.len() == end {
        return Ok(ev);
    }
    // Every `|`-separated piece of the remainder, including the first one
    // (normally the empty string before the leading `|`; if the declared
    // lengths were too small, the leftover bytes), is matched by prefix.
    let mut rest = Some(&body[end..]);
    while let Some(fields) = rest {
        let (field, next) = next_field(fields);
        rest = next;
        if let Some(d) = field.strip_prefix(b"d:") {
            // Invalid timestamps are ignored (the Agent logs a warning).
            if let Ok(ts) = parse_go_int(d) {
                ev.timestamp = ts;
            }
        } else if let Some(h) = field.strip_prefix(b"h:") {
            ev.hostname = Some(h);
        } else if let Some(k) = field.strip_prefix(b"k:") {
            ev.aggregation_key = Some(k);
        } else if let Some(p) = field.strip_prefix(b"p:") {
            if let Some(p) = EventPriority::from_wire(p) {
                ev.priority = Some(p);
            }
        } else if let Some(s) = field.strip_prefix(b"s:") {
            ev.source_type = Some(s);
        } else if let Some(t) = field.strip_prefix(b"t:") {
            if let Some(t) = AlertType::from_wire(t) {
                ev.alert_type = Some(t);
            }
        } else if let Some(t) = field.strip_prefix(b"#") {
            ev.tags = Tags::new(t);
        } else if opts.origin_detection_client {
            if let Some(c) = field.strip_prefix(b"c:") {
                ev.container_id = Some(c);
            } else if let Some(e) = field.strip_prefix(b"e:") {
                ev.external_data = Some(e);
            } else if let Some(card) = field.strip_prefix(b"card:") {
                ev.cardinality = Some(card);
            }
        }
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::protocol::{parse_line, Message};

    fn ev(line: &[u8]) -> EventMessage<'_> {
        ev_opts(line, &ParseOptions::default())
    }
    fn ev_opts<'a>(line: &'a [u8], o: &ParseOptions) -> EventMessage<'a> {
        match parse_line(line, o) {
            Ok(Message::Event(e)) => e,
            other => panic!("{:?}: expected event, got {other:?}", String::from_utf8_lossy(line)),
        }
    }
    fn err(line: &[u8]) -> ParseError {
        match parse_line(line, &ParseOptions::default()) {
            Err(e) => e,
            Ok(m) => panic!("{:?}: expected error, got {m:?}", String::from_utf8_lossy(line)),
        }
    }

    #[test]
    fn spec_example() {
        let e = ev(b"_e{6,7}:Deploy|v1.2 ok|p:low|t:success|s:ci|#env:prod");
        assert_eq!(&*e.title, b"Deploy");
        assert_eq!(&*e.text, b"v1.2 ok");
        assert_eq!(e.priority, Some(EventPriority::Low));
        assert_eq!(e.alert_type, Some(AlertType::Success));
        assert_eq!(e.source_type, Some(&b"ci"[..]));
        assert_eq!(e.tags.raw(), b"env:prod");
        assert_eq!(e.timestamp, 0);
        assert!(matches!(e.title, Cow::Borrowed(_)));
    }

    #[test]
    fn all_fields() {
        let e = ev(b"_e{5,4}:title|text|d:1700000000|h:web-1|k:agg|p:normal|s:src|t:error|#a,b:c");
        assert_eq!(e.timestamp, 1_700_000_000);
        assert_eq!(e.hostname, Some(&b"web-1"[..]));
        assert_eq!(e.aggregation_key, Some(&b"agg"[..]));
        assert_eq!(e.priority, Some(EventPriority::Normal));
        assert_eq!(e.alert_type, Some(AlertType::Error));
        assert_eq!(e.tags.iter().collect::<Vec<_>>(), vec![&b"a"[..], b"b:c"]);
        let e = ev(b"_e{5,4}:title|text|#|h:|k:");
        assert!(e.tags.is_empty());
        assert_eq!(e.hostname, Some(&b""[..]));
        assert_eq!(e.aggregation_key, Some(&b""[..]));
    }

    #[test]
    fn lengths_slice_raw_bytes() {
        let e = ev(b"_e{5,3}:title|text");
        assert_eq!((&*e.title, &*e.text), (&b"title"[..], &b"tex"[..]));
        let e = ev(b"_e{4,4}:title|text");
        assert_eq!((&*e.title, &*e.text), (&b"titl"[..], &b"|tex"[..]));
        let e = ev(b"_e{5,0}:title|");
        assert_eq!(&*e.text, b"");
        // A '|' inside the title is fine; lengths drive the split.
        let e = ev(b"_e{9,1}:a|b title|x");
        assert_eq!(&*e.title, b"a|b title");
        // UTF-8 byte counts: "Déploiement ✓" = 16 bytes.
        let line = "_e{16,4}:Déploiement ✓|ok ✓".as_bytes();
        let e = ev(line);
        assert_eq!(&*e.title, "Déploiement ✓".as_bytes());
        assert_eq!(&*e.text, b"ok \xe2");
        // The header's last byte is not checked to be '}'.
        let e = ev(b"_e{5,4]:title|text");
        assert_eq!(&*e.title, b"title");
        // Leading '+' is accepted by Go's Atoi.
        assert_eq!(&*ev(b"_e{+5,4}:title|text").title, b"title");
    }

    #[test]
    fn leftover_bytes_are_fields() {
        // Lengths too small: the leftover before the next '|' is a field.
        let e = ev(b"_e{5,2}:title|tep:low|t:error");
        assert_eq!(&*e.text, b"te");
        assert_eq!(e.priority, Some(EventPriority::Low));
        assert_eq!(e.alert_type, Some(AlertType::Error));
    }

    #[test]
    fn unescaping() {
        let e = ev(b"_e{10,33}:Multi-line|line one\\nline two\\n\\nline four\\n");
        assert_eq!(&*e.text, b"line one\nline two\n\nline four\n");
        assert!(matches!(e.text, Cow::Owned(_)));
        let e = ev(b"_e{7,3}:a\\nb\\\\n|x\\n");
        assert_eq!(&*e.title, b"a\nb\\\n");
        assert_eq!(&*e.text, b"x\n");
        // An escape cut by the declared length stays a backslash.
        let e = ev(b"_e{2,1}:a\\|n");
        assert_eq!(&*e.title, b"a\\");
        // Unescaping happens after slicing: lengths count escaped bytes.
        let e = ev(b"_e{4,1}:a\\nb|c");
        assert_eq!(&*e.title, b"a\nb");
    }

    #[test]
    fn invalid_optional_fields_never_drop() {
        let e = ev(b"_e{5,4}:title|text|p:urgent");
        assert_eq!(e.priority, None);
        let e = ev(b"_e{5,4}:title|text|p:low|p:urgent|t:warning|t:fatal|t:ERROR");
        assert_eq!(e.priority, Some(EventPriority::Low));
        assert_eq!(e.alert_type, Some(AlertType::Warning));
        let e = ev(b"_e{5,4}:title|text|d:12|d:yesterday");
        assert_eq!(e.timestamp, 12);
        assert_eq!(ev(b"_e{5,4}:title|text|d:yesterday").timestamp, 0);
        let e = ev(b"_e{5,4}:title|text|t:error|t:success");
        assert_eq!(e.alert_type, Some(AlertType::Success));
        assert_eq!(ev(b"_e{5,4}:title|text|zzz|m:x").priority, None);
    }

    #[test]
    fn origin_fields() {
        let line = b"_e{5,4}:title|text|c:ci-abc|e:cn-x|card:low";
        let e = ev(line);
        assert_eq!((e.container_id, e.external_data, e.cardinality), (None, None, None));
        let o = ParseOptions { origin_detection_client: true, ..ParseOptions::default() };
        let e = ev_opts(line, &o);
        assert_eq!(e.container_id, Some(&b"ci-abc"[..]));
        assert_eq!(e.external_data, Some(&b"cn-x"[..]));
        assert_eq!(e.cardinality, Some(&b"low"[..]));
    }

    #[test]
    fn errors() {
        assert_eq!(err(b"_e{5,4}title|text"), ParseError::EventHeader);
        assert_eq!(err(b"_e{5,4:title|text"), ParseError::EventHeader);
        assert_eq!(err(b"_e{5}:title|text"), ParseError::EventHeader);
        assert_eq!(err(b"_e{"), ParseError::EventHeader);
        assert_eq!(err(b"_e{54}:title|text"), ParseError::EventHeader);
        assert_eq!(err(b"_e{-1,4}:x|text"), ParseError::EventLength);
        assert_eq!(err(b"_e{5,-4}:title|text"), ParseError::EventLength);
        assert_eq!(err(b"_e{a,b}:x|y"), ParseError::EventLength);
        assert_eq!(err(b"_e{ 5,4}:title|text"), ParseError::EventLength);
        assert_eq!(err(b"_e{99999999999999999999,4}:title|text"), ParseError::EventLength);
        assert_eq!(err(b"_e{0,4}:|text"), ParseError::EventEmptyTitle);
        assert_eq!(err(b"_e{-0,4}:|text"), ParseError::EventEmptyTitle);
        // Empty title is detected before the text length is parsed.
        assert_eq!(err(b"_e{0,x}:|text"), ParseError::EventEmptyTitle);
        assert_eq!(err(b"_e{5,4}:title|tex"), ParseError::EventTooShort);
        assert_eq!(err(b"_e{5,4}:title"), ParseError::EventTooShort);
        assert_eq!(err(b"_e{5,0}:title"), ParseError::EventTooShort);
        assert_eq!(err(b"_e{1,9223372036854775807}:a|b"), ParseError::EventTooShort);
        assert_eq!(err(b"_e{9223372036854775807,9223372036854775807}:a|b"), ParseError::EventTooShort);
        assert_eq!(err(b"_e{10,17}:Multi-line|line one"), ParseError::EventTooShort);
        for e in
            [ParseError::EventHeader, ParseError::EventLength, ParseError::EventEmptyTitle, ParseError::EventTooShort]
        {
            assert_eq!(e.message_type(), "events");
        }
    }
}
