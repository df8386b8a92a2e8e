//! Hiding API keys in anything a human reads (errors, logs), the way the
//! Datadog Agent does: a key of a known length (32 or 40 characters) keeps
//! its last 5 characters so two keys can be told apart; anything else is
//! hidden entirely. Pure string functions.

/// What a key of an unknown length becomes (the Agent's default).
const HIDDEN: &str = "********";

/// One key as it may be shown: `***…abcde` for 32/40-character keys,
/// `********` otherwise.
pub fn key(k: &str) -> String {
    let n = k.chars().count();
    if n == 32 || n == 40 {
        let tail: String = k.chars().skip(n - 5).collect();
        format!("{}{tail}", "*".repeat(n - 5))
    } else {
        HIDDEN.to_string()
    }
}

/// `text` with every occurrence of each of `keys` redacted, and every
/// 32- or 40-character hex word (what a Datadog API or application key
/// looks like) too, so a key pasted into the wrong setting is hidden as well.
pub fn scrub(text: &str, keys: &[String]) -> String {
    let mut out = text.to_string();
    for k in keys.iter().filter(|k| !k.is_empty()) {
        if out.contains(k.as_str()) {
            out = out.replace(k.as_str(), &key(k));
        }
    }
    scrub_hex_keys(&out)
}

fn scrub_hex_keys(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_alphanumeric() || b[i] == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let word = &text[start..i];
            let hex = word.bytes().all(|c| c.is_ascii_hexdigit());
            if hex && (word.len() == 32 || word.len() == 40) {
                out.push_str(&key(word));
            } else {
                out.push_str(word);
            }
        } else {
            let ch = text[i..].chars().next().unwrap_or_default();
            out.push(ch);
            i += ch.len_utf8().max(1);
        }
    }
    out
}

/// A value that holds API keys but could not be parsed (a malformed
/// `additional_endpoints`): URLs and punctuation are kept so the user can
/// find the mistake, every other word is redacted as a key.
pub fn endpoints_value(v: &str) -> String {
    let is_delim = |c: char, in_url: bool| {
        c.is_whitespace() || matches!(c, '"' | '\'' | '[' | ']' | '{' | '}' | ',') || (!in_url && c == ':')
    };
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(c) = rest.chars().next() {
        if is_delim(c, false) {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let in_url = rest.starts_with("http://") || rest.starts_with("https://");
        let end = rest.char_indices().find(|&(_, c)| is_delim(c, in_url)).map_or(rest.len(), |(i, _)| i);
        let word = &rest[..end];
        if in_url {
            out.push_str(word);
        } else {
            out.push_str(&key(word));
        }
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const K32: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn keys_keep_their_last_five_characters_like_the_agent() {
        assert_eq!(key(K32), format!("{}bcdef", "*".repeat(27)));
        let k40 = "a".repeat(35) + "12345";
        assert_eq!(key(&k40), format!("{}12345", "*".repeat(35)));
        assert_eq!(key("short-key"), "********");
        assert_eq!(key(""), "********");
    }

    #[test]
    fn scrub_hides_known_keys_and_hex_keys() {
        let keys = vec!["my-secret-key".to_string()];
        let s = scrub(&format!("a my-secret-key b {K32} c"), &keys);
        assert!(!s.contains("my-secret-key") && !s.contains(K32), "{s}");
        assert!(s.ends_with("bcdef c"), "{s}");
        // Not keys: shorter or longer hex, words.
        assert_eq!(scrub("deadbeef hello_world", &[]), "deadbeef hello_world");
    }

    #[test]
    fn a_malformed_endpoints_value_keeps_urls_and_hides_keys() {
        let v = format!(r#"{{"https://app.example.com:443": ["{K32}", "other-key"] "http://b": "k"}}"#);
        let s = endpoints_value(&v);
        assert!(!s.contains(K32) && !s.contains("other-key"), "{s}");
        assert_eq!(
            s,
            format!(
                r#"{{"https://app.example.com:443": ["{}bcdef", "********"] "http://b": "********"}}"#,
                "*".repeat(27)
            )
        );
    }
}
