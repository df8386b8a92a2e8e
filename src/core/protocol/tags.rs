//! Zero-copy view of a DogStatsD tag list (`#a,b:c,d`).

use core::fmt;

/// The raw text of a `#` field (without the `#`), viewed as a list of tags.
///
/// Kept as a borrowed slice so parsing a line never allocates; tags are split
/// on every `,` lazily by [`Tags::iter`]. Following the Agent, nothing is
/// trimmed or normalised, empty items (`#a,,b`) are empty tags, and an empty
/// `#` means "no tags" (so a trailing `|#` clears earlier tags).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tags<'a> {
    raw: &'a [u8],
}

impl<'a> Tags<'a> {
    /// No tags at all; what a line without a `#` field carries.
    pub const NONE: Tags<'static> = Tags { raw: b"" };

    /// Wrap the raw text after `#`; exposed so callers (and tests) can build
    /// tag lists the same way the parser does.
    pub const fn new(raw: &'a [u8]) -> Self {
        Tags { raw }
    }

    /// The tags one by one, in wire order, duplicates and empty tags kept
    /// (de-duplication is the aggregator's job, as in the Agent).
    pub fn iter(&self) -> TagIter<'a> {
        TagIter { rest: if self.raw.is_empty() { None } else { Some(self.raw) } }
    }

    /// True when there is no tag (absent or empty `#` field).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Number of tags (commas + 1, or 0), without iterating twice at callers.
    pub fn len(&self) -> usize {
        if self.raw.is_empty() {
            0
        } else {
            self.raw.iter().filter(|&&b| b == b',').count() + 1
        }
    }

    /// The raw bytes after `#`, e.g. to copy the whole list in one go.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
}

impl<'a> IntoIterator for Tags<'a> {
    type Item = &'a [u8];
    type IntoIter = TagIter<'a>;
    fn into_iter(self) -> TagIter<'a> {
        self.iter()
    }
}

impl fmt::Debug for Tags<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(|t| String::from_utf8_lossy(t))).finish()
    }
}

/// Iterator over the tags of a [`Tags`] list; a named type so it can be
/// stored or passed around without boxing.
#[derive(Clone, Debug)]
pub struct TagIter<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for TagIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        crate::core::protocol::next_piece(&mut self.rest, b',')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: Tags<'_>) -> Vec<&[u8]> {
        t.iter().collect()
    }

    #[test]
    fn splitting() {
        assert_eq!(v(Tags::new(b"a,b:c,d")), vec![&b"a"[..], b"b:c", b"d"]);
        assert_eq!(v(Tags::new(b"")), Vec::<&[u8]>::new());
        assert!(Tags::NONE.is_empty());
        assert_eq!(Tags::NONE.len(), 0);
        assert_eq!(v(Tags::new(b",")), vec![&b""[..], b""]);
        assert_eq!(v(Tags::new(b"a,,b")), vec![&b"a"[..], b"", b"b"]);
        assert_eq!(v(Tags::new(b"a:b,")), vec![&b"a:b"[..], b""]);
        assert_eq!(v(Tags::new(b" a , b ")), vec![&b" a "[..], b" b "]);
        assert_eq!(Tags::new(b"a,,b").len(), 3);
        assert_eq!(Tags::new(b"x").raw(), b"x");
        assert_eq!(format!("{:?}", Tags::new(b"a,b")), r#"["a", "b"]"#);
    }
}
