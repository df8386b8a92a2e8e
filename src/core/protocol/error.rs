//! Parse errors, one variant per reason the Datadog Agent drops a line.

use core::fmt;

/// Why a DogStatsD line was dropped. Each variant corresponds to one distinct
/// rejection in the Agent's parser so that telemetry (`kind()`) and logs can
/// say exactly what was wrong; the variants carry no data so that producing
/// an error never allocates (the caller still has the line for logging).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// Metric line without any `|` (the Agent's "invalid dogstatsd message format").
    MissingPipe,
    /// The `name:value` part (before the first `|`) has no `:`.
    MissingColon,
    /// The metric name (before the first `:`) is empty.
    EmptyName,
    /// The value part (after the first `:`) is empty.
    EmptyValue,
    /// The type field is not one of `c g h ms s d` (case-sensitive).
    UnknownType,
    /// A value (or one item of a packed list) is not a Go float or is out of range.
    InvalidValue,
    /// A packed value list contains only `:` separators ("no value found").
    EmptyValueList,
    /// The `@` sample-rate field is not a Go float.
    InvalidSampleRate,
    /// The `T` timestamp field is not a decimal int64 (only when timestamps are honoured).
    InvalidTimestamp,
    /// The `T` timestamp is `< 1` (only when timestamps are honoured).
    NonPositiveTimestamp,
    /// Event without `:`, or with a header shorter than 7 bytes or without `,`.
    EventHeader,
    /// An event title/text length is not a non-negative decimal integer.
    EventLength,
    /// Event title length is 0.
    EventEmptyTitle,
    /// The event body is shorter than `title_len + 1 + text_len` bytes.
    EventTooShort,
    /// Service check with fewer than two `|`.
    ServiceCheckFormat,
    /// Service check with an empty name.
    ServiceCheckName,
    /// Service check status is not exactly `0`, `1`, `2` or `3`.
    ServiceCheckStatus,
}

impl ParseError {
    /// Stable snake_case label, for telemetry tags and structured logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ParseError::MissingPipe => "missing_pipe",
            ParseError::MissingColon => "missing_colon",
            ParseError::EmptyName => "empty_name",
            ParseError::EmptyValue => "empty_value",
            ParseError::UnknownType => "unknown_type",
            ParseError::InvalidValue => "invalid_value",
            ParseError::EmptyValueList => "empty_value_list",
            ParseError::InvalidSampleRate => "invalid_sample_rate",
            ParseError::InvalidTimestamp => "invalid_timestamp",
            ParseError::NonPositiveTimestamp => "non_positive_timestamp",
            ParseError::EventHeader => "event_header",
            ParseError::EventLength => "event_length",
            ParseError::EventEmptyTitle => "event_empty_title",
            ParseError::EventTooShort => "event_too_short",
            ParseError::ServiceCheckFormat => "service_check_format",
            ParseError::ServiceCheckName => "service_check_name",
            ParseError::ServiceCheckStatus => "service_check_status",
        }
    }

    /// The Agent's `message_type` label of `dogstatsd.processed{state=error}`
    /// this error is counted under: `metrics`, `events` or `service_checks`.
    pub fn message_type(&self) -> &'static str {
        match self {
            ParseError::EventHeader
            | ParseError::EventLength
            | ParseError::EventEmptyTitle
            | ParseError::EventTooShort => "events",
            ParseError::ServiceCheckFormat | ParseError::ServiceCheckName | ParseError::ServiceCheckStatus => {
                "service_checks"
            }
            _ => "metrics",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            ParseError::MissingPipe => "invalid metric: no '|' separator",
            ParseError::MissingColon => "invalid metric: no ':' between name and value",
            ParseError::EmptyName => "invalid metric: empty name",
            ParseError::EmptyValue => "invalid metric: empty value",
            ParseError::UnknownType => "invalid metric: unknown type (expected c, g, h, ms, s or d)",
            ParseError::InvalidValue => "invalid metric: value is not a valid float64",
            ParseError::EmptyValueList => "invalid metric: packed value list has no value",
            ParseError::InvalidSampleRate => "invalid metric: sample rate is not a valid float64",
            ParseError::InvalidTimestamp => "invalid metric: timestamp is not a valid int64",
            ParseError::NonPositiveTimestamp => "invalid metric: timestamp must be > 0",
            ParseError::EventHeader => "invalid event: malformed _e{title_len,text_len} header",
            ParseError::EventLength => "invalid event: title/text length is not a non-negative integer",
            ParseError::EventEmptyTitle => "invalid event: empty title",
            ParseError::EventTooShort => "invalid event: shorter than its declared title and text lengths",
            ParseError::ServiceCheckFormat => "invalid service check: fewer than two '|' separators",
            ParseError::ServiceCheckName => "invalid service check: empty name",
            ParseError::ServiceCheckStatus => "invalid service check: status must be 0, 1, 2 or 3",
        };
        f.write_str(msg)
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_snake_case() {
        let all = [
            ParseError::MissingPipe,
            ParseError::MissingColon,
            ParseError::EmptyName,
            ParseError::EmptyValue,
            ParseError::UnknownType,
            ParseError::InvalidValue,
            ParseError::EmptyValueList,
            ParseError::InvalidSampleRate,
            ParseError::InvalidTimestamp,
            ParseError::NonPositiveTimestamp,
            ParseError::EventHeader,
            ParseError::EventLength,
            ParseError::EventEmptyTitle,
            ParseError::EventTooShort,
            ParseError::ServiceCheckFormat,
            ParseError::ServiceCheckName,
            ParseError::ServiceCheckStatus,
        ];
        let mut seen = std::collections::HashSet::new();
        for e in all {
            assert!(seen.insert(e.kind()));
            assert!(e.kind().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!(["metrics", "events", "service_checks"].contains(&e.message_type()));
            let line = e.to_string();
            assert!(!line.is_empty() && !line.contains('\n'));
        }
        assert_eq!(ParseError::EventTooShort.message_type(), "events");
        assert_eq!(ParseError::ServiceCheckStatus.message_type(), "service_checks");
        assert_eq!(ParseError::UnknownType.message_type(), "metrics");
    }
}
