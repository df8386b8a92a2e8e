//! Validation of local-API request bodies (pure, no I/O).
//!
//! Events follow the Datadog events API field names (`title`, `text`,
//! `date_happened`, `priority`, `host`, `tags`, `alert_type`,
//! `aggregation_key`, `source_type_name`); service checks the check_run API
//! (`check`, `status`, `host_name`, `timestamp`, `message`, `tags`).
//! Unknown fields are ignored, like the Datadog API does; a wrong type or
//! value is an error naming the item and the field. A request is accepted
//! or refused as a whole: one bad item refuses the batch, so a client never
//! has to guess which part was taken.

use simd_json::{BorrowedValue as Value, StaticNode};

use crate::core::model::{Event, ServiceCheck};

/// Why a body was refused (answered 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

fn bad(msg: impl Into<String>) -> BadInput {
    BadInput(msg.into())
}

/// Parses `body` (modified in place by simd-json) into one object or an
/// array of objects, calling `item` with each and its position label.
fn for_each_object<'a, T>(
    body: &'a mut [u8],
    what: &str,
    mut item: impl FnMut(&str, &simd_json::borrowed::Object<'a>) -> Result<T, BadInput>,
) -> Result<Vec<T>, BadInput> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(bad(format!("empty body: expected a JSON {what} object or an array of them")));
    }
    let v = simd_json::to_borrowed_value(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    match v {
        Value::Object(o) => Ok(vec![item(what, &o)?]),
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, v) in a.iter().enumerate() {
                let label = format!("{what}[{i}]");
                match v {
                    Value::Object(o) => out.push(item(&label, o)?),
                    _ => return Err(bad(format!("{label}: expected a JSON object"))),
                }
            }
            Ok(out)
        }
        _ => Err(bad(format!("expected a JSON {what} object or an array of them"))),
    }
}

fn field<'o, 'v>(o: &'o simd_json::borrowed::Object<'v>, name: &str) -> Option<&'o Value<'v>> {
    match o.get(name) {
        None | Some(Value::Static(StaticNode::Null)) => None,
        Some(v) => Some(v),
    }
}

fn opt_str(o: &simd_json::borrowed::Object<'_>, label: &str, name: &str) -> Result<Option<String>, BadInput> {
    match field(o, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.to_string())),
        Some(_) => Err(bad(format!("{label}.{name}: expected a string"))),
    }
}

fn opt_int(o: &simd_json::borrowed::Object<'_>, label: &str, name: &str) -> Result<Option<i64>, BadInput> {
    match field(o, name) {
        None => Ok(None),
        Some(Value::Static(StaticNode::I64(n))) => Ok(Some(*n)),
        Some(Value::Static(StaticNode::U64(n))) => {
            i64::try_from(*n).map(Some).map_err(|_| bad(format!("{label}.{name}: out of range")))
        }
        Some(_) => Err(bad(format!("{label}.{name}: expected an integer"))),
    }
}

fn timestamp(o: &simd_json::borrowed::Object<'_>, label: &str, name: &str, now: i64) -> Result<i64, BadInput> {
    match opt_int(o, label, name)? {
        None | Some(0) => Ok(now),
        Some(t) if t < 0 => Err(bad(format!("{label}.{name}: expected Unix seconds >= 0, got {t}"))),
        Some(t) => Ok(t),
    }
}

fn tags(o: &simd_json::borrowed::Object<'_>, label: &str) -> Result<Vec<String>, BadInput> {
    let mut out = Vec::new();
    match field(o, "tags") {
        None => {}
        Some(Value::Array(a)) => {
            for (i, t) in a.iter().enumerate() {
                match t {
                    Value::String(s) if s.is_empty() => {}
                    Value::String(s) => out.push(s.to_string()),
                    _ => return Err(bad(format!("{label}.tags[{i}]: expected a string"))),
                }
            }
        }
        Some(_) => return Err(bad(format!("{label}.tags: expected an array of strings"))),
    }
    // Same normal form as DogStatsD contexts: sorted, de-duplicated.
    out.sort();
    out.dedup();
    Ok(out)
}

fn host(o: &simd_json::borrowed::Object<'_>, label: &str, name: &str, default: &str) -> Result<String, BadInput> {
    Ok(match opt_str(o, label, name)? {
        Some(h) if !h.is_empty() => h,
        _ => default.to_string(),
    })
}

/// Events from a `POST /v1/events` body. `hostname` fills a missing `host`,
/// `now` a missing or zero `date_happened`.
pub fn events(body: &mut [u8], hostname: &str, now: i64) -> Result<Vec<Event>, BadInput> {
    for_each_object(body, "event", |label, o| {
        let title = opt_str(o, label, "title")?.unwrap_or_default();
        if title.is_empty() {
            return Err(bad(format!("{label}.title: required, a non-empty string")));
        }
        let priority = match opt_str(o, label, "priority")?.as_deref() {
            None | Some("") | Some("normal") => "normal",
            Some("low") => "low",
            Some(p) => return Err(bad(format!("{label}.priority: expected \"normal\" or \"low\", got {p:?}"))),
        };
        let alert_type = match opt_str(o, label, "alert_type")?.as_deref() {
            None | Some("") | Some("info") => "info",
            Some("error") => "error",
            Some("warning") => "warning",
            Some("success") => "success",
            Some(a) => {
                return Err(bad(format!(
                    "{label}.alert_type: expected one of \"error\", \"warning\", \"info\", \"success\", got {a:?}"
                )))
            }
        };
        Ok(Event {
            title,
            text: opt_str(o, label, "text")?.unwrap_or_default(),
            timestamp: timestamp(o, label, "date_happened", now)?,
            priority: priority.into(),
            host: host(o, label, "host", hostname)?,
            tags: tags(o, label)?,
            alert_type: alert_type.into(),
            aggregation_key: opt_str(o, label, "aggregation_key")?.unwrap_or_default(),
            source_type_name: opt_str(o, label, "source_type_name")?.unwrap_or_default(),
            event_type: String::new(),
        })
    })
}

/// Service checks from a `POST /v1/check_run` body.
pub fn service_checks(body: &mut [u8], hostname: &str, now: i64) -> Result<Vec<ServiceCheck>, BadInput> {
    for_each_object(body, "check", |label, o| {
        let check = opt_str(o, label, "check")?.unwrap_or_default();
        if check.is_empty() {
            return Err(bad(format!("{label}.check: required, a non-empty string")));
        }
        let status = match opt_int(o, label, "status") {
            Ok(Some(s @ 0..=3)) => s as u8,
            Ok(None) => return Err(bad(format!("{label}.status: required, an integer 0-3"))),
            Ok(Some(s)) => return Err(bad(format!("{label}.status: expected an integer 0-3, got {s}"))),
            Err(_) => return Err(bad(format!("{label}.status: expected an integer 0-3"))),
        };
        Ok(ServiceCheck {
            check,
            host_name: host(o, label, "host_name", hostname)?,
            timestamp: timestamp(o, label, "timestamp", now)?,
            status,
            message: opt_str(o, label, "message")?.unwrap_or_default(),
            tags: tags(o, label)?,
        })
    })
}

/// Checks that `data` is a well-formed protobuf message at its top level
/// (wire types 0, 1, 2, 5, no truncation), so garbage is refused with 400
/// instead of being shipped.
pub fn protobuf_message(data: &[u8]) -> Result<(), BadInput> {
    if data.is_empty() {
        return Err(bad("empty body: expected one protobuf-encoded orchestrator message"));
    }
    let mut pos = 0usize;
    let varint = |pos: &mut usize| -> Result<u64, BadInput> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *data.get(*pos).ok_or_else(|| bad("body is not a protobuf message: truncated varint"))?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("body is not a protobuf message: varint too long"))
    };
    while pos < data.len() {
        let key = varint(&mut pos)?;
        if key >> 3 == 0 {
            return Err(bad(format!("body is not a protobuf message: field number 0 at byte {}", pos - 1)));
        }
        let skip = match key & 7 {
            0 => {
                varint(&mut pos)?;
                0
            }
            1 => 8,
            2 => usize::try_from(varint(&mut pos)?).unwrap_or(usize::MAX),
            5 => 4,
            w => return Err(bad(format!("body is not a protobuf message: wire type {w} at byte {pos}"))),
        };
        pos = pos
            .checked_add(skip)
            .filter(|p| *p <= data.len())
            .ok_or_else(|| bad("body is not a protobuf message: truncated field"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(s: &str) -> Result<Vec<Event>, BadInput> {
        events(&mut s.as_bytes().to_vec(), "h0", 1000)
    }
    fn sc(s: &str) -> Result<Vec<ServiceCheck>, BadInput> {
        service_checks(&mut s.as_bytes().to_vec(), "h0", 1000)
    }

    #[test]
    fn event_fields_and_defaults() {
        let e = ev(r#"{"title":"T","text":"x","tags":["b","a","b",""],"priority":"low","alert_type":"error",
            "aggregation_key":"k","source_type_name":"ci","date_happened":1700000000,"host":"web","extra":1}"#)
        .unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].tags, vec!["a", "b"]);
        assert_eq!((e[0].priority.as_str(), e[0].alert_type.as_str()), ("low", "error"));
        assert_eq!((e[0].timestamp, e[0].host.as_str()), (1_700_000_000, "web"));
        let d = ev(r#"[{"title":"A"},{"title":"B","date_happened":0,"host":null}]"#).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[1].timestamp, d[1].host.as_str(), d[1].priority.as_str(), d[1].alert_type.as_str()),
            (1000, "h0", "normal", "info")
        );
    }

    #[test]
    fn event_errors_name_the_field() {
        for (body, needle) in [
            ("", "empty body"),
            ("{", "invalid JSON"),
            ("3", "expected a JSON event object"),
            (r#"{"text":"x"}"#, "event.title: required"),
            (r#"[{"title":"ok"},{"title":5}]"#, "event[1].title: expected a string"),
            (r#"[{"title":"ok"},7]"#, "event[1]: expected a JSON object"),
            (r#"{"title":"t","tags":"a,b"}"#, "event.tags: expected an array"),
            (r#"{"title":"t","tags":[1]}"#, "event.tags[0]: expected a string"),
            (r#"{"title":"t","priority":"high"}"#, "event.priority"),
            (r#"{"title":"t","alert_type":"fatal"}"#, "event.alert_type"),
            (r#"{"title":"t","date_happened":"now"}"#, "event.date_happened: expected an integer"),
            (r#"{"title":"t","date_happened":1.5}"#, "event.date_happened: expected an integer"),
            (r#"{"title":"t","date_happened":-4}"#, "event.date_happened"),
        ] {
            let e = ev(body).unwrap_err();
            assert!(e.0.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn checks() {
        let c = sc(r#"[{"check":"db.up","status":2,"message":"m","tags":["z","a"],"timestamp":5},{"check":"x","status":0,"host_name":"n"}]"#).unwrap();
        assert_eq!((c[0].status, c[0].timestamp, c[0].host_name.as_str()), (2, 5, "h0"));
        assert_eq!(c[0].tags, vec!["a", "z"]);
        assert_eq!((c[1].timestamp, c[1].host_name.as_str()), (1000, "n"));
        for (body, needle) in [
            (r#"{"status":0}"#, "check.check: required"),
            (r#"{"check":"c"}"#, "check.status: required"),
            (r#"{"check":"c","status":4}"#, "expected an integer 0-3, got 4"),
            (r#"{"check":"c","status":"ok"}"#, "check.status: expected an integer 0-3"),
            (r#"{"check":"c","status":0,"message":{}}"#, "check.message: expected a string"),
        ] {
            let e = sc(body).unwrap_err();
            assert!(e.0.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn protobuf_shape() {
        assert!(protobuf_message(&[0x0a, 0x01, b'c', 0x18, 0x01]).is_ok());
        assert!(protobuf_message(&[]).is_err());
        assert!(protobuf_message(&[0x0a, 0x05, b'c']).is_err());
        assert!(protobuf_message(b"{\"json\":true}").is_err());
        assert!(protobuf_message(&[0x07]).is_err());
    }
}
