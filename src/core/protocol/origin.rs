//! Decoding of the client-supplied origin-detection fields `c:` and `e:`
//! (spec §3.1). The parser keeps these raw; these helpers decode them only
//! when a caller (the tagger integration) actually needs the parts.

use crate::core::protocol::float::parse_go_uint;

/// Decoded `c:` ("local data") value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalData<'a> {
    /// Container id (`ci-<id>`, legacy `cid-<id>`, or a bare legacy id).
    pub container_id: Option<&'a [u8]>,
    /// cgroup v2 inode (`in-<decimal>`); `None` if absent or unparsable.
    pub inode: Option<u64>,
}

impl<'a> LocalData<'a> {
    /// Decode like the Agent's `origindetection.ParseLocalData`: a value with
    /// a `,` is a list of `ci-`/`in-` items (others ignored, last wins);
    /// a single item may also be `cid-<id>` or a raw container id. Parse
    /// errors never fail: whatever parsed is kept.
    pub fn parse(raw: &'a [u8]) -> LocalData<'a> {
        let mut out = LocalData::default();
        if raw.is_empty() {
            return out;
        }
        if raw.contains(&b',') {
            for item in raw.split(|&b| b == b',') {
                if let Some(id) = item.strip_prefix(b"ci-") {
                    out.container_id = Some(id);
                } else if let Some(ino) = item.strip_prefix(b"in-") {
                    out.inode = parse_go_uint(ino).ok();
                }
            }
        } else if let Some(id) = raw.strip_prefix(b"ci-") {
            out.container_id = Some(id);
        } else if let Some(ino) = raw.strip_prefix(b"in-") {
            out.inode = parse_go_uint(ino).ok();
        } else if let Some(id) = raw.strip_prefix(b"cid-") {
            out.container_id = Some(id);
        } else {
            out.container_id = Some(raw);
        }
        out
    }
}

/// Decoded `e:` ("external data", from the admission controller) value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExternalData<'a> {
    /// `it-<bool>`: whether the sender is an init container.
    pub init: Option<bool>,
    /// `cn-<name>`: container name.
    pub container_name: Option<&'a [u8]>,
    /// `pu-<uid>`: pod UID.
    pub pod_uid: Option<&'a [u8]>,
}

/// Go `strconv.ParseBool`.
fn parse_go_bool(s: &[u8]) -> Option<bool> {
    match s {
        b"1" | b"t" | b"T" | b"TRUE" | b"true" | b"True" => Some(true),
        b"0" | b"f" | b"F" | b"FALSE" | b"false" | b"False" => Some(false),
        _ => None,
    }
}

impl<'a> ExternalData<'a> {
    /// Decode a comma-separated list of `it-`, `cn-`, `pu-` items like the
    /// Agent's `origindetection.ParseExternalData`; unknown items are
    /// ignored and a bad boolean leaves `init` unset.
    pub fn parse(raw: &'a [u8]) -> ExternalData<'a> {
        let mut out = ExternalData::default();
        if raw.is_empty() {
            return out;
        }
        for item in raw.split(|&b| b == b',') {
            if let Some(b) = item.strip_prefix(b"it-") {
                out.init = parse_go_bool(b);
            } else if let Some(n) = item.strip_prefix(b"cn-") {
                out.container_name = Some(n);
            } else if let Some(p) = item.strip_prefix(b"pu-") {
                out.pod_uid = Some(p);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_data_forms() {
        let l = LocalData::parse(b"ci-5d1e8a0f,in-1234");
        assert_eq!(l.container_id, Some(&b"5d1e8a0f"[..]));
        assert_eq!(l.inode, Some(1234));
        let l = LocalData::parse(b"in-99,ci-abc,zz-1");
        assert_eq!((l.container_id, l.inode), (Some(&b"abc"[..]), Some(99)));
        assert_eq!(LocalData::parse(b"ci-abc").container_id, Some(&b"abc"[..]));
        assert_eq!(LocalData::parse(b"in-7").inode, Some(7));
        assert_eq!(LocalData::parse(b"in-x").inode, None);
        assert_eq!(LocalData::parse(b"cid-legacy").container_id, Some(&b"legacy"[..]));
        assert_eq!(LocalData::parse(b"rawid").container_id, Some(&b"rawid"[..]));
        // cid- only counts as a single item.
        assert_eq!(LocalData::parse(b"cid-x,in-1").container_id, None);
        assert_eq!(LocalData::parse(b""), LocalData::default());
    }

    #[test]
    fn external_data_forms() {
        let e = ExternalData::parse(b"it-false,cn-app,pu-0a1b2c3d");
        assert_eq!(e.init, Some(false));
        assert_eq!(e.container_name, Some(&b"app"[..]));
        assert_eq!(e.pod_uid, Some(&b"0a1b2c3d"[..]));
        assert_eq!(ExternalData::parse(b"it-T").init, Some(true));
        assert_eq!(ExternalData::parse(b"it-yes,xx").init, None);
    }
}
