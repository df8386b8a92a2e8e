//! `expected_tags_duration`: for that long after start the Agent adds the
//! host tags to every series and sketch it flushes (the backend takes a
//! while to attach host tags to a new host), appended after the context's
//! own tags exactly as the Agent does (no de-duplication).

use crate::core::model::{Series, SeriesId, SketchSeries};

/// Host tags and the Unix second until which they are added.
#[derive(Debug, Clone, Default)]
pub struct ExpectedTags {
    tags: Vec<String>,
    until: i64,
}

impl ExpectedTags {
    /// Tags added while `now < start + duration_s` (never when `duration_s`
    /// is 0 or there are no tags).
    pub fn new(tags: Vec<String>, start: i64, duration_s: i64) -> Self {
        let until = if duration_s > 0 && !tags.is_empty() { start.saturating_add(duration_s) } else { i64::MIN };
        Self { tags, until }
    }

    /// Whether a flush at `now` adds the tags.
    pub fn active(&self, now: i64) -> bool {
        now < self.until
    }

    /// Appends the tags to every series and sketch when active at `now`.
    pub fn apply(&self, now: i64, series: &mut [Series], sketches: &mut [SketchSeries]) {
        if !self.active(now) {
            return;
        }
        for id in series.iter_mut().map(|s| &mut s.id).chain(sketches.iter_mut().map(|s| &mut s.id)) {
            self.append(id);
        }
    }

    fn append(&self, id: &mut SeriesId) {
        if let SeriesId::Owned(o) = id {
            o.tags.extend(self.tags.iter().cloned());
            return;
        }
        let tags = id.tags().map(|t| t.into_owned()).chain(self.tags.iter().cloned()).collect();
        *id = SeriesId::owned(id.name().into_owned(), id.host().into_owned(), tags);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{ContextKey, MetricType, Origin, Point};
    use std::sync::Arc;

    fn series(id: SeriesId) -> Series {
        Series {
            id,
            points: vec![Point { timestamp: 0, value: 1.0 }],
            metric_type: MetricType::Gauge,
            interval: 10,
            source_type_name: String::new(),
            origin: Origin::DogStatsD,
        }
    }

    #[test]
    fn added_until_the_deadline_then_never() {
        let t = ExpectedTags::new(vec!["env:prod".into(), "team:core".into()], 1000, 600);
        let key = Arc::new(ContextKey::new(1, b"m", b"h1", [&b"a:1"[..], b"team:core"].into_iter()));
        let mut s = vec![
            series(SeriesId::context(key.clone(), ".max".into())),
            series(SeriesId::owned("o".into(), "h1".into(), vec![])),
        ];
        let mut sk = vec![SketchSeries { id: SeriesId::context(key, "".into()), dogsketches: vec![] }];
        t.apply(1599, &mut s, &mut sk);
        assert_eq!(s[0].id.name(), "m.max");
        assert_eq!(s[0].id.host(), "h1");
        assert_eq!(
            s[0].id.tags().collect::<Vec<_>>(),
            vec!["a:1", "team:core", "env:prod", "team:core"],
            "appended as the Agent does"
        );
        assert_eq!(s[1].id.tags().collect::<Vec<_>>(), vec!["env:prod", "team:core"]);
        assert_eq!(sk[0].id.tags().count(), 4);
        let mut later = vec![series(SeriesId::owned("o".into(), "h1".into(), vec![]))];
        t.apply(1600, &mut later, &mut []);
        assert_eq!(later[0].id.tag_count(), 0, "not at or after start + duration");
    }

    #[test]
    fn zero_duration_or_no_tags_is_off() {
        assert!(!ExpectedTags::new(vec!["a".into()], 1000, 0).active(1000));
        assert!(!ExpectedTags::new(vec![], 1000, 600).active(1000));
        assert!(ExpectedTags::new(vec!["a".into()], 1000, 1).active(1000));
    }
}
