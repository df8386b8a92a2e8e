//! Service checks: `_sc|<name>|<status>[|field]...` (spec §5).

use crate::core::protocol::error::ParseError;
use crate::core::protocol::float::parse_go_int;
use crate::core::protocol::tags::Tags;
use crate::core::protocol::{next_field, ParseOptions};

/// A parsed service check, fully borrowed from the datagram.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCheckMessage<'a> {
    /// Check name, verbatim.
    pub name: &'a [u8],
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (anything else was rejected).
    pub status: u8,
    /// `d:` Unix timestamp; 0 when absent or invalid ("now" at aggregation).
    pub timestamp: i64,
    /// `h:` hostname (beats a `host:` tag at enrichment).
    pub hostname: Option<&'a [u8]>,
    /// `m:` message, NOT unescaped (the Agent keeps `\n` and `m\:` as sent);
    /// cut at the next `|`.
    pub message: Option<&'a [u8]>,
    /// Last `#` field's tags.
    pub tags: Tags<'a>,
    /// Raw `c:` origin value (only with client origin detection enabled).
    pub container_id: Option<&'a [u8]>,
    /// Raw `e:` external data (gated like `container_id`).
    pub external_data: Option<&'a [u8]>,
    /// Raw `card:` cardinality (gated like `container_id`).
    pub cardinality: Option<&'a [u8]>,
}

/// Human name of a status, for logs and JSON payloads' debugging.
pub fn status_name(status: u8) -> &'static str {
    match status {
        0 => "OK",
        1 => "WARNING",
        2 => "CRITICAL",
        3 => "UNKNOWN",
        _ => "INVALID",
    }
}

/// Parse a line starting with `_sc`.
pub(crate) fn parse_service_check<'a>(
    line: &'a [u8],
    opts: &ParseOptions,
) -> Result<ServiceCheckMessage<'a>, ParseError> {
    if line.iter().filter(|&&b| b == b'|').count() < 2 || line.len() < 4 {
        return Err(ParseError::ServiceCheckFormat);
    }
    // The first 4 bytes ("_sc|") are skipped without checking the '|'.
    let (name, rest) = next_field(&line[4..]);
    if name.is_empty() {
        return Err(ParseError::ServiceCheckName);
    }
    let (raw_status, mut rest) = next_field(rest.unwrap_or(b""));
    let status = match raw_status {
        b"0" => 0,
        b"1" => 1,
        b"2" => 2,
        b"3" => 3,
        _ => return Err(ParseError::ServiceCheckStatus),
    };
    let mut sc = ServiceCheckMessage {
        name,
        status,
        timestamp: 0,
        hostname: None,
        message: None,
        tags: Tags::NONE,
        container_id: None,
        external_data: None,
        cardinality: None,
    };
    while let Some(fields) = rest {
        let (field, next) = next_field(fields);
        rest = next;
        if let Some(d) = field.strip_prefix(b"d:") {
            // Invalid timestamps are ignored (the Agent logs a warning).
            if let Ok(ts) = parse_go_int(d) {
                sc.timestamp = ts;
            }
        } else if let Some(h) = field.strip_prefix(b"h:") {
            sc.hostname = Some(h);
        } else if let Some(t) = field.strip_prefix(b"#") {
            sc.tags = Tags::new(t);
        } else if let Some(m) = field.strip_prefix(b"m:") {
            sc.message = Some(m);
        } else if opts.origin_detection_client {
            if let Some(c) = field.strip_prefix(b"c:") {
                sc.container_id = Some(c);
            } else if let Some(e) = field.strip_prefix(b"e:") {
                sc.external_data = Some(e);
            } else if let Some(card) = field.strip_prefix(b"card:") {
                sc.cardinality = Some(card);
            }
        }
    }
    Ok(sc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::protocol::{parse_line, Message};

    fn sc(line: &[u8]) -> ServiceCheckMessage<'_> {
        sc_opts(line, &ParseOptions::default())
    }
    fn sc_opts<'a>(line: &'a [u8], o: &ParseOptions) -> ServiceCheckMessage<'a> {
        match parse_line(line, o) {
            Ok(Message::ServiceCheck(s)) => s,
            other => panic!("{:?}: expected service check, got {other:?}", String::from_utf8_lossy(line)),
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
        let s = sc(b"_sc|db.can_connect|2|#env:prod|m:timeout after 5s");
        assert_eq!(s.name, b"db.can_connect");
        assert_eq!(s.status, 2);
        assert_eq!(status_name(s.status), "CRITICAL");
        assert_eq!(s.tags.raw(), b"env:prod");
        assert_eq!(s.message, Some(&b"timeout after 5s"[..]));
        assert_eq!(s.timestamp, 0);
        assert_eq!(s.hostname, None);
    }

    #[test]
    fn statuses() {
        for st in 0..=3u8 {
            let line = format!("_sc|x|{st}");
            assert_eq!(sc(line.as_bytes()).status, st);
        }
        for bad in
            [&b"_sc|x|4"[..], b"_sc|x|7", b"_sc|x|-1", b"_sc|x|OK", b"_sc|x|00", b"_sc|x|", b"_sc|x| 0", b"_sc|x|0 "]
        {
            assert_eq!(err(bad), ParseError::ServiceCheckStatus);
        }
    }

    #[test]
    fn fields() {
        let s = sc(b"_sc|app.is_ok|2|d:1700000000|h:db-01|m:Connection refused|#a:b");
        assert_eq!(s.timestamp, 1_700_000_000);
        assert_eq!(s.hostname, Some(&b"db-01"[..]));
        assert_eq!(s.message, Some(&b"Connection refused"[..]));
        assert_eq!(s.tags.raw(), b"a:b");
        assert_eq!(sc(b"_sc|x|0|m:pipe | in message").message, Some(&b"pipe "[..]));
        assert_eq!(sc(b"_sc|x|3|#a:b|m:multi\\nline m\\:message").message, Some(&b"multi\\nline m\\:message"[..]));
        assert_eq!(sc(b"_sc|x|0|d:notanumber").timestamp, 0);
        assert_eq!(sc(b"_sc|x|0|d:5|d:bad").timestamp, 5);
        assert_eq!(sc(b"_sc|x|0|").message, None);
        assert_eq!(sc(b"_sc|x|0|h:a|h:b").hostname, Some(&b"b"[..]));
        // The 4th byte is skipped without being checked.
        assert_eq!(sc(b"_scXname|0|1").name, b"name");
    }

    #[test]
    fn origin_fields() {
        let line = b"_sc|x|0|c:ci-1|card:high|e:pu-2";
        let s = sc(line);
        assert_eq!((s.container_id, s.cardinality, s.external_data), (None, None, None));
        let o = ParseOptions { origin_detection_client: true, ..ParseOptions::default() };
        let s = sc_opts(line, &o);
        assert_eq!(s.container_id, Some(&b"ci-1"[..]));
        assert_eq!(s.cardinality, Some(&b"high"[..]));
        assert_eq!(s.external_data, Some(&b"pu-2"[..]));
    }

    #[test]
    fn errors() {
        assert_eq!(err(b"_sc"), ParseError::ServiceCheckFormat);
        assert_eq!(err(b"_sc|app.is_ok"), ParseError::ServiceCheckFormat);
        assert_eq!(err(b"_scapp.is_ok|0"), ParseError::ServiceCheckFormat);
        assert_eq!(err(b"_sc||0"), ParseError::ServiceCheckName);
        assert_eq!(err(b"_sc|x|"), ParseError::ServiceCheckStatus);
        assert_eq!(ParseError::ServiceCheckName.message_type(), "service_checks");
    }
}
