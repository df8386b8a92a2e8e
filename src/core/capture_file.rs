//! The traffic capture file: the Datadog Agent's `dogstatsd-capture`
//! format, version 3, so captures replay with either tool
//! (docs/capture-format.md):
//!
//! * header `D4 74 D0 60 F3 FF 00 00` (`F0 | version` at byte 4);
//! * records: `u32` little-endian length, then a protobuf
//!   `UnixDogstatsdMsg { int64 timestamp = 1 (Unix ns); int32 payloadSize = 2;
//!   bytes payload = 3; int32 pid = 4; int32 ancillarySize = 5; bytes ancillary = 6 }`;
//! * trailer: `u32` 0 (end of records), the tagger state (empty here) and
//!   its `u32` length (0).
//!
//! The whole file may be one zstd frame (`--compress`). Pure: encoding into
//! caller buffers, decoding from byte slices.

/// File header written (version 3: nanosecond timestamps).
pub const HEADER: [u8; 8] = [0xD4, 0x74, 0xD0, 0x60, 0xF3, 0xFF, 0x00, 0x00];
/// Trailer: end-of-records marker and an empty tagger state.
pub const TRAILER: [u8; 8] = [0; 8];
/// zstd frame magic (a compressed capture starts with it).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// Largest record accepted when reading (a datagram is far smaller).
pub const MAX_RECORD_BYTES: usize = 16 << 20;

/// Why a capture cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureFileError {
    /// Not a capture file.
    #[error("not a DogStatsD capture file (bad header)")]
    BadHeader,
    /// Version 1 or 2 files carry second timestamps; unsupported versions.
    #[error("capture file version {0} is not supported (1 to 3 are)")]
    Version(u8),
    /// A record that does not decode.
    #[error("corrupt record: {0}")]
    Corrupt(&'static str),
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Receive time, Unix nanoseconds.
    pub timestamp_ns: i64,
    /// The datagram (or stream frame) as received.
    pub payload: &'a [u8],
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Bytes [`encode_record`] appends for a payload of `len` bytes (at most).
pub fn record_len_bound(len: usize) -> usize {
    4 + 1 + 10 + 1 + 5 + 1 + 5 + len
}

/// Appends one record (length prefix + protobuf). Allocation-free when `out`
/// has [`record_len_bound`] bytes of spare capacity.
pub fn encode_record(out: &mut Vec<u8>, timestamp_ns: i64, payload: &[u8]) {
    let ts = timestamp_ns as u64;
    let plen = payload.len() as u64;
    let body = 1 + varint_len(ts) + 1 + varint_len(plen) + 1 + varint_len(plen) + payload.len();
    out.extend_from_slice(&(body as u32).to_le_bytes());
    out.push(0x08); // field 1, varint
    put_varint(out, ts);
    out.push(0x10); // field 2, varint
    put_varint(out, plen);
    out.push(0x1A); // field 3, length-delimited
    put_varint(out, plen);
    out.extend_from_slice(payload);
}

fn get_varint(b: &[u8], pos: &mut usize) -> Result<u64, CaptureFileError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or(CaptureFileError::Corrupt("truncated varint"))?;
        *pos += 1;
        v |= u64::from(byte & 0x7F) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(CaptureFileError::Corrupt("varint too long"))
}

/// Decodes the protobuf body of one record; unknown fields are skipped.
pub fn decode_message(b: &[u8]) -> Result<Record<'_>, CaptureFileError> {
    let (mut pos, mut ts, mut payload, mut size) = (0usize, 0i64, &b[..0], None);
    while pos < b.len() {
        let key = get_varint(b, &mut pos)?;
        match (key >> 3, key & 7) {
            (1, 0) => ts = get_varint(b, &mut pos)? as i64,
            (2, 0) => size = Some(get_varint(b, &mut pos)? as usize),
            (_, 0) => {
                get_varint(b, &mut pos)?;
            }
            (f, 2) => {
                let n = get_varint(b, &mut pos)? as usize;
                let end = pos
                    .checked_add(n)
                    .filter(|e| *e <= b.len())
                    .ok_or(CaptureFileError::Corrupt("field past the record"))?;
                if f == 3 {
                    payload = &b[pos..end];
                }
                pos = end;
            }
            (_, 1) => pos += 8,
            (_, 5) => pos += 4,
            _ => return Err(CaptureFileError::Corrupt("unknown wire type")),
        }
    }
    if pos > b.len() {
        return Err(CaptureFileError::Corrupt("fixed field past the record"));
    }
    // The Agent replays `payload[:payloadSize]`.
    if let Some(s) = size {
        payload = &payload[..s.min(payload.len())];
    }
    Ok(Record { timestamp_ns: ts, payload })
}

/// Checks the 8-byte header; returns the file version.
pub fn check_header(h: &[u8]) -> Result<u8, CaptureFileError> {
    if h.len() < 8 || h[..4] != HEADER[..4] || h[4] & 0xF0 != 0xF0 || h[5..8] != HEADER[5..] {
        return Err(CaptureFileError::BadHeader);
    }
    match h[4] & 0x0F {
        v @ 1..=3 => Ok(v),
        v => Err(CaptureFileError::Version(v)),
    }
}

/// Nanoseconds per timestamp unit of a file `version` (seconds before 3).
pub fn timestamp_unit_ns(version: u8) -> i64 {
    if version < 3 {
        1_000_000_000
    } else {
        1
    }
}

/// Reads records from a whole (decompressed) file image: what tests and
/// small tools use; the replayer streams instead.
pub fn records(file: &[u8]) -> Result<Vec<Record<'_>>, CaptureFileError> {
    check_header(file)?;
    let mut pos = HEADER.len();
    let mut out = Vec::new();
    while pos + 4 <= file.len() {
        let len = u32::from_le_bytes([file[pos], file[pos + 1], file[pos + 2], file[pos + 3]]) as usize;
        pos += 4;
        if len == 0 || pos + len > file.len() {
            break;
        }
        out.push(decode_message(&file[pos..pos + len])?);
        pos += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bound() {
        let mut f = HEADER.to_vec();
        let p1 = b"page.views:1|c\n".to_vec();
        let p2 = vec![b'x'; 300];
        for (ts, p) in [(1_700_000_000_123_456_789i64, &p1), (1_700_000_000_223_456_789, &p2)] {
            let before = f.len();
            encode_record(&mut f, ts, p);
            assert!(f.len() - before <= record_len_bound(p.len()));
        }
        f.extend_from_slice(&TRAILER);
        let r = records(&f).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], Record { timestamp_ns: 1_700_000_000_123_456_789, payload: &p1 });
        assert_eq!(r[1].payload, &p2[..]);
        assert_eq!(check_header(&f).unwrap(), 3);
    }

    #[test]
    fn agent_encoding_of_a_known_message() {
        // protobuf of {timestamp: 1, payloadSize: 3, payload: "a:1", pid: 7}
        // as Go's proto.Marshal writes it (pid is skipped here, ancillary absent).
        let body = [0x08, 0x01, 0x10, 0x03, 0x1A, 0x03, b'a', b':', b'1', 0x20, 0x07];
        let r = decode_message(&body).unwrap();
        assert_eq!(r, Record { timestamp_ns: 1, payload: b"a:1" });
        let mut ours = Vec::new();
        encode_record(&mut ours, 1, b"a:1");
        assert_eq!(&ours[4..], &body[..9]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(check_header(b"hello wo"), Err(CaptureFileError::BadHeader));
        assert!(decode_message(&[0x1A, 0x05, b'a']).is_err());
        assert!(decode_message(&[0x08]).is_err());
        assert!(decode_message(&[0x09, 1, 2]).is_err());
    }
}
