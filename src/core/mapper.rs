//! DogStatsD mapper profiles (`dogstatsd_mapper_profiles`): rewrite plain
//! StatsD names such as `airflow.dag.my_dag.my_task.duration` into a name
//! plus tags, with the Agent's rules:
//!
//! * profiles are tried in order; the first whose `prefix` starts the name
//!   (or whose prefix is `*`) is the only one consulted — if none of its
//!   mappings matches, the name is left alone (later profiles are not tried);
//! * within a profile the first matching mapping wins;
//! * `wildcard` patterns (the default) allow `[a-zA-Z0-9-_*.]` only, no `**`,
//!   and each `*` matches one dot-free segment; `regex` patterns are
//!   anchored at both ends;
//! * `$1`, `${1}`, `$name`, `${name}` and `$$` in the name and tag values are
//!   expanded like Go's `Regexp.ExpandString`;
//! * results (hits and misses) of names under a profile prefix are kept in a
//!   bounded LRU cache (`dogstatsd_mapper_cache_size`).
//!
//! Pure: no I/O, no configuration reading. Names that no profile prefix
//! covers cost a few prefix comparisons and never allocate.

use std::sync::Arc;

use serde::Deserialize;

/// One mapping of a profile as written in the configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct MappingConfig {
    /// The pattern (`match`).
    #[serde(rename = "match")]
    pub pattern: String,
    /// `wildcard` (default when empty) or `regex`.
    pub match_type: String,
    /// The new name (may reference captures).
    pub name: String,
    /// Tag key → value template (may reference captures).
    pub tags: std::collections::BTreeMap<String, String>,
}

/// One profile as written in the configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ProfileConfig {
    /// Profile name (required).
    pub name: String,
    /// Names this profile applies to (required; `*` = every name).
    pub prefix: String,
    /// Mappings, tried in order.
    pub mappings: Vec<MappingConfig>,
}

/// Why a profile list is rejected; the texts are the Agent's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapperError {
    /// A profile without a name.
    #[error("missing profile name {0}")]
    MissingProfileName(usize),
    /// A profile without a prefix.
    #[error("missing prefix for profile: {0}")]
    MissingPrefix(String),
    /// `match_type` other than `wildcard` / `regex`.
    #[error("profile: {0}, mapping num {1}: invalid match type, must be `wildcard` or `regex`")]
    InvalidMatchType(String, usize),
    /// A mapping without a name.
    #[error("profile: {0}, mapping num {1}: name is required")]
    NameRequired(String, usize),
    /// A mapping without a pattern.
    #[error("profile: {0}, mapping num {1}: match is required")]
    MatchRequired(String, usize),
    /// A wildcard pattern with characters outside `[a-zA-Z0-9-_*.]`.
    #[error("invalid wildcard match pattern `{0}`, it does not match allowed match regex `^[a-zA-Z0-9\\-_*.]+$`")]
    WildcardCharacters(String),
    /// A wildcard pattern with `**`.
    #[error("invalid wildcard match pattern `{0}`, it should not contain consecutive `*`")]
    WildcardConsecutive(String),
    /// A pattern that does not compile.
    #[error("invalid match `{0}`. cannot compile regex: {1}")]
    Regex(String, String),
}

/// A compiled mapping.
#[derive(Debug, Clone)]
struct Rule {
    regex: regex::bytes::Regex,
    name: String,
    tags: Vec<(String, String)>,
}

/// A compiled profile.
#[derive(Debug, Clone)]
struct Profile {
    prefix: Box<[u8]>,
    any: bool,
    rules: Vec<Rule>,
}

/// What the shard needs to build its mapper: compiled, validated profiles
/// (shared by every shard) and the cache bound.
#[derive(Debug, Clone, Default)]
pub struct MapperSettings {
    profiles: Arc<[Profile]>,
    /// `dogstatsd_mapper_cache_size`: entries kept per shard.
    pub cache_size: usize,
}

/// The Agent's default `dogstatsd_mapper_cache_size`.
pub const DEFAULT_CACHE_SIZE: usize = 1000;

impl MapperSettings {
    /// Validates and compiles `profiles` exactly as the Agent does.
    pub fn compile(profiles: &[ProfileConfig], cache_size: usize) -> Result<Self, MapperError> {
        let mut out = Vec::with_capacity(profiles.len());
        for (i, p) in profiles.iter().enumerate() {
            if p.name.is_empty() {
                return Err(MapperError::MissingProfileName(i));
            }
            if p.prefix.is_empty() {
                return Err(MapperError::MissingPrefix(p.name.clone()));
            }
            let mut rules = Vec::with_capacity(p.mappings.len());
            for (j, m) in p.mappings.iter().enumerate() {
                let kind = if m.match_type.is_empty() { "wildcard" } else { m.match_type.as_str() };
                if kind != "wildcard" && kind != "regex" {
                    return Err(MapperError::InvalidMatchType(p.name.clone(), j));
                }
                if m.name.is_empty() {
                    return Err(MapperError::NameRequired(p.name.clone(), j));
                }
                if m.pattern.is_empty() {
                    return Err(MapperError::MatchRequired(p.name.clone(), j));
                }
                rules.push(Rule {
                    regex: build_regex(&m.pattern, kind == "wildcard")?,
                    name: m.name.clone(),
                    tags: m.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                });
            }
            out.push(Profile { prefix: p.prefix.as_bytes().into(), any: p.prefix == "*", rules });
        }
        Ok(Self { profiles: out.into(), cache_size })
    }

    /// No profile configured: the shard skips the mapper entirely.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }
}

fn build_regex(pattern: &str, wildcard: bool) -> Result<regex::bytes::Regex, MapperError> {
    let mut re = pattern.to_string();
    if wildcard {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '.');
        if !pattern.chars().all(allowed) {
            return Err(MapperError::WildcardCharacters(pattern.into()));
        }
        if pattern.contains("**") {
            return Err(MapperError::WildcardConsecutive(pattern.into()));
        }
        re = re.replace('.', "\\.").replace('*', "([^.]*)");
    }
    // Go's regexp matches bytes as UTF-8 text; `(?-u)` is not wanted for
    // the classes, so Unicode stays on and only the subject is bytes.
    regex::bytes::Regex::new(&format!("^{re}$")).map_err(|e| MapperError::Regex(re.clone(), e.to_string()))
}

/// A mapped name and its tags (`key:value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapResult {
    /// The new metric name.
    pub name: Box<[u8]>,
    /// Tags to append to the line's tags.
    pub tags: Vec<Box<[u8]>>,
}

/// One shard's mapper: the shared profiles and its own LRU cache.
pub struct Mapper {
    settings: MapperSettings,
    cache: Lru<Option<Arc<MapResult>>>,
}

impl Mapper {
    /// A mapper with an empty cache.
    pub fn new(settings: MapperSettings) -> Self {
        let cache = Lru::new(settings.cache_size.max(1));
        Self { settings, cache }
    }

    /// Entries in the cache (hits and misses).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// The mapping of `name`, if a profile maps it.
    pub fn map(&mut self, name: &[u8]) -> Option<Arc<MapResult>> {
        let profiles = self.settings.profiles.clone();
        let profile = profiles.iter().find(|p| p.any || name.starts_with(&p.prefix))?;
        if let Some(hit) = self.cache.get(name) {
            return hit.clone();
        }
        let result = profile.rules.iter().find_map(|r| {
            let caps = r.regex.captures(name)?;
            let mut mapped = Vec::new();
            expand(&r.regex, &caps, &r.name, &mut mapped);
            let tags = r
                .tags
                .iter()
                .map(|(k, tmpl)| {
                    let mut t = Vec::with_capacity(k.len() + 1 + tmpl.len());
                    t.extend_from_slice(k.as_bytes());
                    t.push(b':');
                    expand(&r.regex, &caps, tmpl, &mut t);
                    t.into_boxed_slice()
                })
                .collect();
            Some(Arc::new(MapResult { name: mapped.into_boxed_slice(), tags }))
        });
        self.cache.put(name, result.clone());
        result
    }
}

/// Go's `Regexp.expand`: `$$` is a `$`; `$name` takes the longest run of
/// letters, digits and `_`; `${name}` needs the closing brace; a malformed
/// reference leaves the `$` as text; a number with a leading zero is a name;
/// an unknown group expands to nothing.
fn expand(re: &regex::bytes::Regex, caps: &regex::bytes::Captures<'_>, template: &str, out: &mut Vec<u8>) {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.extend_from_slice(&rest.as_bytes()[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push(b'$');
            rest = r;
            continue;
        }
        let Some((name, after)) = extract(rest) else {
            out.push(b'$');
            continue;
        };
        rest = after;
        let group = match group_number(name) {
            Some(n) => caps.get(n),
            None => re.capture_names().position(|n| n == Some(name)).and_then(|i| caps.get(i)),
        };
        if let Some(m) = group {
            out.extend_from_slice(m.as_bytes());
        }
    }
    out.extend_from_slice(rest.as_bytes());
}

/// The reference after a `$`: its name and what follows it.
fn extract(s: &str) -> Option<(&str, &str)> {
    let (brace, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let end = body.find(|c: char| !(c.is_alphabetic() || c.is_numeric() || c == '_')).unwrap_or(body.len());
    if end == 0 {
        return None;
    }
    let name = &body[..end];
    if brace {
        let after = body[end..].strip_prefix('}')?;
        return Some((name, after));
    }
    Some((name, &body[end..]))
}

/// Go's number rule: ASCII digits only, below 1e8, no leading zero.
fn group_number(name: &str) -> Option<usize> {
    if !name.bytes().all(|b| b.is_ascii_digit()) || (name.len() > 1 && name.starts_with('0')) || name.len() > 8 {
        return None;
    }
    name.parse().ok()
}

const NIL: u32 = u32::MAX;

struct Slot<V> {
    key: Box<[u8]>,
    value: V,
    prev: u32,
    next: u32,
}

/// A bounded least-recently-used map from names to `V`: lookups by `&[u8]`
/// do not allocate; inserting beyond the bound evicts the oldest entry.
struct Lru<V> {
    index: hashbrown::HashMap<Box<[u8]>, u32, foldhash::fast::RandomState>,
    slots: Vec<Slot<V>>,
    head: u32,
    tail: u32,
    capacity: usize,
}

impl<V> Lru<V> {
    fn new(capacity: usize) -> Self {
        Self { index: Default::default(), slots: Vec::new(), head: NIL, tail: NIL, capacity }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.slots[i as usize].prev, self.slots[i as usize].next);
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        self.slots[i as usize].prev = NIL;
        self.slots[i as usize].next = self.head;
        if self.head != NIL {
            self.slots[self.head as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn get(&mut self, key: &[u8]) -> Option<&V> {
        let i = *self.index.get(key)?;
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
        Some(&self.slots[i as usize].value)
    }

    fn put(&mut self, key: &[u8], value: V) {
        if let Some(&i) = self.index.get(key) {
            self.slots[i as usize].value = value;
            self.unlink(i);
            self.push_front(i);
            return;
        }
        let i = if self.slots.len() < self.capacity {
            self.slots.push(Slot { key: key.into(), value, prev: NIL, next: NIL });
            (self.slots.len() - 1) as u32
        } else {
            let i = self.tail;
            self.unlink(i);
            let slot = &mut self.slots[i as usize];
            self.index.remove(&slot.key);
            slot.key = key.into();
            slot.value = value;
            i
        };
        self.index.insert(key.into(), i);
        self.push_front(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles(json: &str) -> Vec<ProfileConfig> {
        serde_json::from_str(json).unwrap()
    }

    fn mapper(json: &str, cache: usize) -> Mapper {
        Mapper::new(MapperSettings::compile(&profiles(json), cache).unwrap())
    }

    fn map(m: &mut Mapper, name: &str) -> Option<(String, Vec<String>)> {
        m.map(name.as_bytes()).map(|r| {
            let mut tags: Vec<String> = r.tags.iter().map(|t| String::from_utf8_lossy(t).into_owned()).collect();
            tags.sort();
            (String::from_utf8_lossy(&r.name).into_owned(), tags)
        })
    }

    type Case = (&'static str, Option<(&'static str, &'static [&'static str])>);

    fn check(json: &str, cases: &[Case]) {
        let mut m = mapper(json, 1000);
        for (name, want) in cases {
            let want = want.map(|(n, t)| (n.to_string(), t.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
            // Twice: computed, then from the cache.
            assert_eq!(map(&mut m, name), want, "{name}");
            assert_eq!(map(&mut m, name), want, "{name} (cached)");
        }
    }

    /// Profiles from a `datadog.yaml` fragment, as the Agent's tests write them.
    fn yaml_profiles(yaml: &str) -> Vec<ProfileConfig> {
        let doc: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        serde_yaml::from_value(doc["dogstatsd_mapper_profiles"].clone()).unwrap()
    }

    /// The Agent's mapper test table (`TestMappings`): configuration, names
    /// sent, and the mapped results (names that map to nothing are absent).
    /// Case name, configuration, names sent, expected (name, tags) results.
    type MappingCase =
        (&'static str, &'static str, &'static [&'static str], &'static [(&'static str, &'static [&'static str])]);

    const AGENT_MAPPINGS: &[MappingCase] = &[
        ("simple", "dogstatsd_mapper_profiles:\n  - name: test\n    prefix: 'test.'\n    mappings:\n      - match: \"test.job.duration.*.*\"\n        name: \"test.job.duration\"\n        tags:\n          job_type: \"$1\"\n          job_name: \"$2\"\n      - match: \"test.job.size.*.*\"\n        name: \"test.job.size\"\n        tags:\n          foo: \"$1\"\n          bar: \"$2\"\n",
            &["test.job.duration.my_job_type.my_job_name", "test.job.size.my_job_type.my_job_name", "test.job.size.not_match"],
            &[("test.job.duration", &["job_name:my_job_name", "job_type:my_job_type"]), ("test.job.size", &["bar:my_job_name", "foo:my_job_type"])]),
        ("partially mapped", "dogstatsd_mapper_profiles:\n  - name: test\n    prefix: 'test.'\n    mappings:\n      - match: \"test.job.duration.*.*\"\n        name: \"test.job.duration\"\n        tags:\n          job_type: \"$1\"\n      - match: \"test.task.duration.*.*\"\n        name: \"test.task.duration\"\n",
            &["test.job.duration.my_job_type.my_job_name", "test.task.duration.my_job_type.my_job_name"],
            &[("test.job.duration", &["job_type:my_job_type"]), ("test.task.duration", &[])]),
        ("braces", "dogstatsd_mapper_profiles:\n - name: test\n   prefix: 'test.'\n   mappings:\n    - match: \"test.job.duration.*.*\"\n      name: \"test.job.duration\"\n      tags:\n        job_type: \"${1}_x\"\n        job_name: \"${2}_y\"\n",
            &["test.job.duration.my_job_type.my_job_name"],
            &[("test.job.duration", &["job_name:my_job_name_y", "job_type:my_job_type_x"])]),
        ("expand name", "dogstatsd_mapper_profiles:\n - name: test\n   prefix: 'test.'\n   mappings:\n    - match: \"test.job.duration.*.*\"\n      name: \"test.hello.$2.$1\"\n      tags:\n        job_type: \"$1\"\n        job_name: \"$2\"\n",
            &["test.job.duration.my_job_type.my_job_name"],
            &[("test.hello.my_job_name.my_job_type", &["job_name:my_job_name", "job_type:my_job_type"])]),
        ("before underscore", "dogstatsd_mapper_profiles:\n - name: test\n   prefix: 'test.'\n   mappings:\n    - match: \"test.*_start\"\n      name: \"test.start\"\n      tags:\n        job: \"$1\"\n",
            &["test.my_job_start"], &[("test.start", &["job:my_job"])]),
        ("no tags", "dogstatsd_mapper_profiles:\n - name: test\n   prefix: 'test.'\n   mappings:\n    - match: \"test.my-worker.start\"\n      name: \"test.worker.start\"\n    - match: \"test.my-worker.stop.*\"\n      name: \"test.worker.stop\"\n",
            &["test.my-worker.start", "test.my-worker.stop.worker-name"], &[("test.worker.start", &[]), ("test.worker.stop", &[])]),
        ("all allowed characters", "dogstatsd_mapper_profiles:\n - name: test\n   prefix: 'test.'\n   mappings:\n    - match: \"test.abcdefghijklmnopqrstuvwxyz_ABCDEFGHIJKLMNOPQRSTUVWXYZ-01234567.*\"\n      name: \"test.alphabet\"\n",
            &["test.abcdefghijklmnopqrstuvwxyz_ABCDEFGHIJKLMNOPQRSTUVWXYZ-01234567.123"], &[("test.alphabet", &[])]),
        ("regex", "dogstatsd_mapper_profiles:\n - name: test\n   prefix: 'test.'\n   mappings:\n    - match: \"test\\\\.job\\\\.duration\\\\.(.*)\"\n      match_type: regex\n      name: \"test.job.duration\"\n      tags:\n        job_name: \"$1\"\n    - match: 'test\\.task\\.duration\\.(.*)'\n      match_type: regex\n      name: \"test.task.duration\"\n      tags:\n        task_name: \"$1\"\n",
            &["test.job.duration.my.funky.job$name-abc/123", "test.task.duration.MY_task_name"],
            &[("test.job.duration", &["job_name:my.funky.job$name-abc/123"]), ("test.task.duration", &["task_name:MY_task_name"])]),
        ("complex regex", "dogstatsd_mapper_profiles:\n  - name: test\n    prefix: 'test.'\n    mappings:\n      - match: \"test\\\\.job\\\\.([a-z][0-9]-\\\\w+)\\\\.(.*)\"\n        match_type: regex\n        name: \"test.job\"\n        tags:\n          job_type: \"$1\"\n          job_name: \"$2\"\n",
            &["test.job.a5-foo.bar", "test.job.foo.bar-not-match"], &[("test.job", &["job_name:bar", "job_type:a5-foo"])]),
        ("profile and prefix", "dogstatsd_mapper_profiles:\n  - name: test\n    prefix: 'foo.'\n    mappings:\n      - match: \"foo.duration.*\"\n        name: \"foo.duration\"\n        tags:\n          name: \"$1\"\n  - name: test\n    prefix: 'bar.'\n    mappings:\n      - match: \"bar.count.*\"\n        name: \"bar.count\"\n        tags:\n          name: \"$1\"\n      - match: \"foo.duration2.*\"\n        name: \"foo.duration2\"\n        tags:\n          name: \"$1\"\n",
            &["foo.duration.foo_name1", "foo.duration2.foo_name1", "bar.count.bar_name1", "z.not.mapped"],
            &[("foo.duration", &["name:foo_name1"]), ("bar.count", &["name:bar_name1"])]),
        ("wildcard prefix", "dogstatsd_mapper_profiles:\n  - name: test\n    prefix: '*'\n    mappings:\n      - match: \"foo.duration.*\"\n        name: \"foo.duration\"\n        tags:\n          name: \"$1\"\n",
            &["foo.duration.foo_name1"], &[("foo.duration", &["name:foo_name1"])]),
        ("wildcard prefix order", "dogstatsd_mapper_profiles:\n  - name: test\n    prefix: '*'\n    mappings:\n      - match: \"foo.duration.*\"\n        name: \"foo.duration\"\n        tags:\n          name1: \"$1\"\n  - name: test\n    prefix: '*'\n    mappings:\n      - match: \"foo.duration.*\"\n        name: \"foo.duration\"\n        tags:\n          name2: \"$1\"\n",
            &["foo.duration.foo_name"], &[("foo.duration", &["name1:foo_name"])]),
        ("multiple profiles order", "dogstatsd_mapper_profiles:\n  - name: test\n    prefix: 'foo.'\n    mappings:\n      - match: \"foo.*.duration.*\"\n        name: \"foo.bar1.duration\"\n        tags:\n          bar: \"$1\"\n          foo: \"$2\"\n  - name: test\n    prefix: 'foo.bar.'\n    mappings:\n      - match: \"foo.bar.duration.*\"\n        name: \"foo.bar2.duration\"\n        tags:\n          foo_bar: \"$1\"\n",
            &["foo.bar.duration.foo_name"], &[("foo.bar1.duration", &["bar:bar", "foo:foo_name"])]),
    ];

    #[test]
    fn agent_mapping_table() {
        for (case, yaml, names, want) in AGENT_MAPPINGS {
            let mut m = Mapper::new(MapperSettings::compile(&yaml_profiles(yaml), 1000).unwrap());
            // Twice: computed, then from the cache.
            for pass in 0..2 {
                let got: Vec<(String, Vec<String>)> = names.iter().filter_map(|n| map(&mut m, n)).collect();
                let want: Vec<(String, Vec<String>)> =
                    want.iter().map(|(n, t)| (n.to_string(), t.iter().map(|s| s.to_string()).collect())).collect();
                assert_eq!(got, want, "case {case}, pass {pass}");
            }
        }
    }

    /// The Agent's `TestMappingErrors` table: configuration and the text the error contains.
    #[test]
    fn agent_mapping_error_table() {
        let cases: &[(&str, &str)] = &[
            ("  - name: test\n    prefix: 'test.'\n    mappings:\n      - match: \"test.job.duration.*.*\"\n        name: \"\"\n", "name is required"),
            ("  - name: test\n    prefix: 'test.'\n    mappings:\n      - match: \"test.job.duration.*.*\"\n        tags:\n          job_type: \"$1\"\n", "name is required"),
            ("  - name: test\n    prefix: 'test.'\n    mappings:\n      - name: \"test.job.duration\"\n", "match is required"),
            ("  - name: test\n    prefix: 'test.'\n    mappings:\n      - match: \"test.[]duration.*.*\"\n        name: \"test.job.duration\"\n", "it does not match allowed match regex"),
            ("  - name: test\n    prefix: 'test.'\n    mappings:\n      - match: \"^test.invalid.duration.*.*\"\n        name: \"test.job.duration\"\n", "it does not match allowed match regex"),
            ("  - name: test\n    prefix: 'test.'\n    mappings:\n      - match: \"test.invalid.duration.**\"\n        name: \"test.job.duration\"\n", "it should not contain consecutive `*`"),
            ("  - name: test\n    prefix: 'test.'\n    mappings:\n      - match: \"test.invalid.duration\"\n        match_type: invalid\n        name: \"test.job.duration\"\n", "invalid match type"),
            ("  - prefix: 'test.'\n    mappings:\n      - match: \"test.invalid.duration\"\n        match_type: invalid\n        name: \"test.job.duration\"\n", "missing profile name"),
            ("  - name: test\n    mappings:\n      - match: \"test.invalid.duration\"\n        match_type: invalid\n        name: \"test.job.duration\"\n", "missing prefix for profile"),
        ];
        for (yaml, want) in cases {
            let profiles = yaml_profiles(&format!("dogstatsd_mapper_profiles:\n{yaml}"));
            let err = MapperSettings::compile(&profiles, 1000).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn dollar_without_brace_reads_the_longest_name() {
        // `$1_x` names group `1_x`, which does not exist: it expands to nothing (Go's rule).
        let mut m = mapper(
            r#"[{"name":"t","prefix":"test.","mappings":[{"match":"test.a.*","name":"test.a","tags":{"t":"$1_x"}}]}]"#,
            10,
        );
        assert_eq!(map(&mut m, "test.a.v"), Some(("test.a".into(), vec!["t:".into()])));
    }

    #[test]
    fn wildcard_star_never_crosses_a_dot_and_named_groups_expand() {
        let mut m = mapper(
            r#"[{"name":"t","prefix":"test.","mappings":[
                {"match":"test.*.duration","name":"test.duration","tags":{"job":"$1"}},
                {"match":"test\\.task\\.(?P<task>[a-z]+)\\.(\\d+)","match_type":"regex","name":"test.task.${task}","tags":{"n":"$2","t":"$task"}}]}]"#,
            10,
        );
        assert_eq!(map(&mut m, "test.a.duration"), Some(("test.duration".into(), vec!["job:a".into()])));
        assert_eq!(map(&mut m, "test.a.b.duration"), None);
        assert_eq!(
            map(&mut m, "test.task.build.42"),
            Some(("test.task.build".into(), vec!["n:42".into(), "t:build".into()]))
        );
        assert_eq!(map(&mut m, "test.task.Build.42"), None);
    }

    #[test]
    fn airflow_example() {
        check(
            r#"[{"name":"airflow","prefix":"airflow.","mappings":[
                {"match":"airflow.dag.*.*.duration","name":"airflow.dag.task.duration","tags":{"dag_id":"$1","task_id":"$2"}},
                {"match":"airflow.dagrun.duration.success.*","name":"airflow.dagrun.duration","tags":{"dag_id":"$1","status":"success"}}]}]"#,
            &[
                (
                    "airflow.dag.my_dag.my_task.duration",
                    Some(("airflow.dag.task.duration", &["dag_id:my_dag", "task_id:my_task"])),
                ),
                (
                    "airflow.dagrun.duration.success.etl",
                    Some(("airflow.dagrun.duration", &["dag_id:etl", "status:success"])),
                ),
                ("airflow.scheduler_heartbeat", None),
            ],
        );
    }

    #[test]
    fn go_expand_edge_cases() {
        let re = regex::bytes::Regex::new(r"^(?P<a>x)(y)$").unwrap();
        let caps = re.captures(b"xy").unwrap();
        let e = |t: &str| {
            let mut o = Vec::new();
            expand(&re, &caps, t, &mut o);
            String::from_utf8(o).unwrap()
        };
        assert_eq!(e("$$1"), "$1");
        assert_eq!(e("$"), "$");
        assert_eq!(e("$-"), "$-");
        assert_eq!(e("${1"), "${1");
        assert_eq!(e("${2}z"), "yz");
        assert_eq!(e("$a.$2"), "x.y");
        assert_eq!(e("$01"), "", "a leading zero makes it a name, and no group has that name");
        assert_eq!(e("$9"), "");
        assert_eq!(e("${a}${a}"), "xx");
    }

    // The Agent's validation errors (NewMetricMapper), message for message.
    #[test]
    fn validation_error_messages_are_the_agents() {
        let err = |json: &str| MapperSettings::compile(&profiles(json), 10).unwrap_err().to_string();
        assert_eq!(err(r#"[{"prefix":"a.","mappings":[]}]"#), "missing profile name 0");
        assert_eq!(err(r#"[{"name":"p","mappings":[]}]"#), "missing prefix for profile: p");
        assert_eq!(
            err(r#"[{"name":"p","prefix":"a.","mappings":[{"match":"a","match_type":"glob","name":"n"}]}]"#),
            "profile: p, mapping num 0: invalid match type, must be `wildcard` or `regex`"
        );
        assert_eq!(
            err(r#"[{"name":"p","prefix":"a.","mappings":[{"match":"a"}]}]"#),
            "profile: p, mapping num 0: name is required"
        );
        assert_eq!(
            err(r#"[{"name":"p","prefix":"a.","mappings":[{"match":"a.*","name":"x"},{"name":"n"}]}]"#),
            "profile: p, mapping num 1: match is required"
        );
        assert!(err(r#"[{"name":"p","prefix":"a.","mappings":[{"match":"a.$","name":"n"}]}]"#)
            .starts_with("invalid wildcard match pattern `a.$`, it does not match"));
        assert_eq!(
            err(r#"[{"name":"p","prefix":"a.","mappings":[{"match":"a.**","name":"n"}]}]"#),
            "invalid wildcard match pattern `a.**`, it should not contain consecutive `*`"
        );
        assert!(err(r#"[{"name":"p","prefix":"a.","mappings":[{"match":"(","match_type":"regex","name":"n"}]}]"#)
            .starts_with("invalid match `(`. cannot compile regex"));
    }

    #[test]
    fn cache_is_bounded_and_least_recently_used_goes_first() {
        let mut m =
            mapper(r#"[{"name":"p","prefix":"a.","mappings":[{"match":"a.*","name":"b","tags":{"x":"$1"}}]}]"#, 2);
        map(&mut m, "a.1");
        map(&mut m, "a.2");
        map(&mut m, "a.1"); // a.2 is now the oldest
        map(&mut m, "a.3");
        assert_eq!(m.cached(), 2);
        assert!(m.cache.index.contains_key(&b"a.1"[..]) && m.cache.index.contains_key(&b"a.3"[..]));
        assert!(!m.cache.index.contains_key(&b"a.2"[..]));
        // Names outside every prefix are never cached.
        for i in 0..10 {
            assert!(m.map(format!("z.{i}").as_bytes()).is_none());
        }
        assert_eq!(m.cached(), 2);
        // Misses under a prefix are cached too.
        assert!(m.map(b"a.x.y").is_none());
        assert!(m.cache.index.contains_key(&b"a.x.y"[..]));
        assert_eq!(map(&mut m, "a.3"), Some(("b".into(), vec!["x:3".into()])));
    }

    #[test]
    fn lru_survives_many_evictions() {
        let mut l = Lru::new(3);
        for i in 0u32..100 {
            l.put(&i.to_le_bytes(), i);
            if i % 2 == 0 {
                assert_eq!(l.get(&i.to_le_bytes()), Some(&i));
            }
        }
        assert_eq!(l.len(), 3);
        assert_eq!(l.index.len(), 3);
        assert_eq!(l.get(&99u32.to_le_bytes()), Some(&99));
        assert_eq!(l.get(&0u32.to_le_bytes()), None);
    }
}
