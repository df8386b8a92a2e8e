//! Go/json-iterator compatible JSON writers and the JSON item renderers
//! (series v1, service checks, events), in the Agent's key order.
//!
//! Everything writes into a caller-owned, reused `Vec<u8>`; nothing here
//! allocates except when that buffer has to grow.

use std::io::Write as _;

use crate::core::model::{Event, Origin, Series, ServiceCheck};

/// Why an item could not be rendered (the Agent's `WriteItemErrors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// NaN or ±Inf: json-iterator refuses them ("unsupported value").
    #[error("non-finite float")]
    NonFinite,
}

/// Tag prefix turned into the v1 `device` field / v2 device resource.
pub const DEVICE_TAG: &str = "device:";
/// Tag prefix turned into an extra v2 resource (dropped by v1).
pub const RESOURCE_TAG: &str = "dd.internal.resource:";

/// Writes a float like json-iterator's `WriteFloat64`: shortest round-trip,
/// `'f'` form, exponent form when `|x| < 1e-6` (non-zero) or `|x| >= 1e21`
/// with `e-07` shortened to `e-7` and positive exponents written `e+21`.
pub fn write_f64(buf: &mut Vec<u8>, x: f64) -> Result<(), RenderError> {
    if !x.is_finite() {
        return Err(RenderError::NonFinite);
    }
    let abs = x.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let start = buf.len();
        // Rust's `{:e}` is the shortest round-trip mantissa with a minimal
        // exponent ("1.5e-7", "1e21"); Go after json-iterator's cleanup
        // differs only by the explicit '+' on positive exponents.
        let _ = write!(buf, "{x:e}");
        if let Some(e) = buf[start..].iter().position(|&b| b == b'e') {
            let at = start + e + 1;
            if buf.get(at) != Some(&b'-') {
                buf.insert(at, b'+');
            }
        }
    } else {
        // Rust's Display is the shortest round-trip digits in plain decimal
        // without a trailing ".0", exactly Go's FormatFloat(x, 'f', -1, 64).
        let _ = write!(buf, "{x}");
    }
    Ok(())
}

/// Writes an integer in plain decimal.
pub fn write_i64(buf: &mut Vec<u8>, x: i64) {
    let _ = write!(buf, "{x}");
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `s` as a JSON string like json-iterator with HTML escaping off:
/// `"` `\` and control bytes escaped, everything else verbatim.
pub fn write_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    write_escaped(buf, s);
    buf.push(b'"');
}

/// Writes a name stored as base + suffix as one JSON string (escaping is
/// per byte, so this equals `write_str` of the concatenation).
fn write_name(buf: &mut Vec<u8>, (base, suffix): (std::borrow::Cow<'_, str>, &str)) {
    buf.push(b'"');
    write_escaped(buf, &base);
    write_escaped(buf, suffix);
    buf.push(b'"');
}

/// The body of a JSON string, without quotes.
fn write_escaped(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            buf.extend_from_slice(b"\\u00");
            buf.push(HEX[(b >> 4) as usize]);
            buf.push(HEX[(b & 0xf) as usize]);
        } else {
            buf.extend_from_slice(esc);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}

/// Writes a JSON array of strings (`[]` when empty).
pub fn write_str_array<S: AsRef<str>>(buf: &mut Vec<u8>, items: impl Iterator<Item = S>) {
    buf.push(b'[');
    for (i, s) in items.enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_str(buf, s.as_ref());
    }
    buf.push(b']');
}

/// Whether a series is skipped by v1 JSON (no-index series are v2-only).
pub fn v1_skips(series: &Series) -> bool {
    series.origin == Origin::InternalNoIndex
}

/// Renders one v1 series object (appending to `buf`; on error `buf` is
/// restored to its previous length).
pub fn render_series_v1(buf: &mut Vec<u8>, s: &Series) -> Result<(), RenderError> {
    let start = buf.len();
    let r = render_series_v1_inner(buf, s);
    if r.is_err() {
        buf.truncate(start);
    }
    r
}

fn render_series_v1_inner(buf: &mut Vec<u8>, s: &Series) -> Result<(), RenderError> {
    buf.extend_from_slice(b"{\"metric\":");
    write_name(buf, s.id.name_parts());
    buf.extend_from_slice(b",\"points\":[");
    for (i, p) in s.points.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.push(b'[');
        write_i64(buf, p.timestamp);
        buf.push(b',');
        write_f64(buf, p.value)?;
        buf.push(b']');
    }
    buf.extend_from_slice(b"],\"tags\":");
    let device =
        s.id.tag_bytes().rev().find_map(|t| t.strip_prefix(DEVICE_TAG.as_bytes())).map(crate::core::model::lossy);
    write_str_array(
        buf,
        s.id.tag_bytes()
            .filter(|t| !t.starts_with(DEVICE_TAG.as_bytes()) && !t.starts_with(RESOURCE_TAG.as_bytes()))
            .map(crate::core::model::lossy),
    );
    buf.extend_from_slice(b",\"host\":");
    write_str(buf, &s.id.host());
    if let Some(d) = device {
        buf.extend_from_slice(b",\"device\":");
        write_str(buf, &d);
    }
    buf.extend_from_slice(b",\"type\":\"");
    buf.extend_from_slice(s.metric_type.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"interval\":");
    write_i64(buf, s.interval);
    if !s.source_type_name.is_empty() {
        buf.extend_from_slice(b",\"source_type_name\":");
        write_str(buf, &s.source_type_name);
    }
    buf.push(b'}');
    Ok(())
}

/// Renders one `/api/v1/check_run` object (`tags` is `null` when empty).
pub fn render_service_check(buf: &mut Vec<u8>, c: &ServiceCheck) {
    buf.extend_from_slice(b"{\"check\":");
    write_str(buf, &c.check);
    buf.extend_from_slice(b",\"host_name\":");
    write_str(buf, &c.host_name);
    buf.extend_from_slice(b",\"timestamp\":");
    write_i64(buf, c.timestamp);
    buf.extend_from_slice(b",\"status\":");
    write_i64(buf, c.status as i64);
    buf.extend_from_slice(b",\"message\":");
    write_str(buf, &c.message);
    buf.extend_from_slice(b",\"tags\":");
    if c.tags.is_empty() {
        buf.extend_from_slice(b"null");
    } else {
        write_str_array(buf, c.tags.iter().map(String::as_str));
    }
    buf.push(b'}');
}

/// The group key an event is filed under in the `events` object.
pub fn event_group(e: &Event) -> &str {
    if e.source_type_name.is_empty() {
        "api"
    } else {
        &e.source_type_name
    }
}

/// Renders one event object (the Agent's key order and omission rules).
pub fn render_event(buf: &mut Vec<u8>, e: &Event) {
    buf.extend_from_slice(b"{\"msg_title\":");
    write_str(buf, &e.title);
    buf.extend_from_slice(b",\"msg_text\":");
    write_str(buf, &e.text);
    buf.extend_from_slice(b",\"timestamp\":");
    write_i64(buf, e.timestamp);
    if !e.priority.is_empty() {
        buf.extend_from_slice(b",\"priority\":");
        write_str(buf, &e.priority);
    }
    buf.extend_from_slice(b",\"host\":");
    write_str(buf, &e.host);
    if !e.tags.is_empty() {
        buf.extend_from_slice(b",\"tags\":");
        write_str_array(buf, e.tags.iter().map(String::as_str));
    }
    if !e.alert_type.is_empty() {
        buf.extend_from_slice(b",\"alert_type\":");
        write_str(buf, &e.alert_type);
    }
    if !e.aggregation_key.is_empty() {
        buf.extend_from_slice(b",\"aggregation_key\":");
        write_str(buf, &e.aggregation_key);
    }
    if !e.source_type_name.is_empty() {
        buf.extend_from_slice(b",\"source_type_name\":");
        write_str(buf, &e.source_type_name);
    }
    if !e.event_type.is_empty() {
        buf.extend_from_slice(b",\"event_type\":");
        write_str(buf, &e.event_type);
    }
    buf.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: f64) -> String {
        let mut b = Vec::new();
        write_f64(&mut b, x).unwrap();
        String::from_utf8(b).unwrap()
    }

    fn s(x: &str) -> String {
        let mut b = Vec::new();
        write_str(&mut b, x);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn float_table() {
        let table: &[(f64, &str)] = &[
            (1.0, "1"),
            (0.4, "0.4"),
            (0.0, "0"),
            (-0.0, "-0"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (-1.5e-7, "-1.5e-7"),
            (1e-6, "0.000001"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (-1e21, "-1e+21"),
            (1e20, "100000000000000000000"),
            (123456789.0, "123456789"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e-10, "1e-10"),
            (1e-100, "1e-100"),
            (1e100, "1e+100"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (-2.5, "-2.5"),
            (12.75, "12.75"),
        ];
        for (x, want) in table {
            assert_eq!(f(*x), *want, "{x:?}");
        }
        let mut b = Vec::new();
        assert_eq!(write_f64(&mut b, f64::NAN), Err(RenderError::NonFinite));
        assert_eq!(write_f64(&mut b, f64::INFINITY), Err(RenderError::NonFinite));
    }

    #[test]
    fn string_table() {
        let table: &[(&str, &str)] = &[
            ("abc", "\"abc\""),
            ("a\"b", "\"a\\\"b\""),
            ("a\\b", "\"a\\\\b\""),
            ("\n\r\t", "\"\\n\\r\\t\""),
            ("\u{0}\u{1}\u{8}\u{c}\u{1f}", "\"\\u0000\\u0001\\u0008\\u000c\\u001f\""),
            ("<>&", "\"<>&\""),
            ("\u{7f}", "\"\u{7f}\""),
            ("é€\u{2028}", "\"é€\u{2028}\""),
            ("/", "\"/\""),
            ("", "\"\""),
        ];
        for (x, want) in table {
            assert_eq!(s(x), *want, "{x:?}");
        }
    }

    #[test]
    fn check_run_example() {
        let c = ServiceCheck {
            check: "datadog.agent.up".into(),
            host_name: "h1".into(),
            timestamp: 1700000015,
            status: 0,
            message: String::new(),
            tags: vec![],
        };
        let mut b = Vec::new();
        render_service_check(&mut b, &c);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            r#"{"check":"datadog.agent.up","host_name":"h1","timestamp":1700000015,"status":0,"message":"","tags":null}"#
        );
    }
}
