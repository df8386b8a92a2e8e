//! Framing of the Unix stream socket (`dogstatsd_stream_socket`): every
//! payload is preceded by its length as a little-endian `u32`, as the
//! Datadog Agent reads it. Sans-IO: the caller reads bytes into
//! [`FrameDecoder::spare`], reports them with [`FrameDecoder::filled`] and
//! takes complete frames out with [`FrameDecoder::next_frame`], however the
//! stream split or coalesced them.
//!
//! One fixed buffer per connection, allocated once: no allocation per frame.

/// Length of the frame header.
pub const HEADER_BYTES: usize = 4;

/// A frame that closes the connection (the Agent drops the connection too;
/// frames already decoded are kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The announced length is over the bound (`dogstatsd_buffer_size`).
    #[error("frame of {len} bytes is over the {max}-byte limit (dogstatsd_buffer_size)")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// The bound.
        max: usize,
    },
    /// A zero length: the Agent reads nothing and takes it as the end of the
    /// connection.
    #[error("zero-length frame")]
    Empty,
}

/// Incremental decoder of length-prefixed frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Box<[u8]>,
    /// Start of unconsumed bytes.
    start: usize,
    /// End of valid bytes.
    end: usize,
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder accepting frames up to `max_frame_bytes` (at least 1).
    /// Its buffer holds two largest frames, so one read usually brings
    /// several small frames.
    pub fn new(max_frame_bytes: usize) -> Self {
        let max_frame = max_frame_bytes.max(1);
        Self { buf: vec![0u8; 2 * (HEADER_BYTES + max_frame)].into_boxed_slice(), start: 0, end: 0, max_frame }
    }

    /// Room to read into (never empty: a complete frame always fits once the
    /// frames before it are taken).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 && (self.start == self.end || self.buf.len() - self.end < HEADER_BYTES + self.max_frame) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were written at the start of [`Self::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next complete frame, `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let avail = self.end - self.start;
        if avail < HEADER_BYTES {
            return Ok(None);
        }
        let h = &self.buf[self.start..self.start + HEADER_BYTES];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len as usize > self.max_frame {
            return Err(FrameError::TooLarge { len, max: self.max_frame });
        }
        let total = HEADER_BYTES + len as usize;
        if avail < total {
            return Ok(None);
        }
        let from = self.start + HEADER_BYTES;
        self.start += total;
        if self.start == self.end {
            // Everything consumed: the next read starts at the front.
            let (s, e) = (from, from + len as usize);
            self.start = 0;
            self.end = 0;
            return Ok(Some(&self.buf[s..e]));
        }
        Ok(Some(&self.buf[from..from + len as usize]))
    }

    /// The unconsumed bytes (for a log line about a bad frame).
    pub fn pending_bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Bytes of a frame not yet complete (non-zero at end of stream means a
    /// truncated frame).
    pub fn pending(&self) -> usize {
        self.end - self.start
    }
}

/// Appends one frame (header + payload) to `out`: what a client writes.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut FrameDecoder, mut bytes: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), FrameError> {
        while !bytes.is_empty() {
            let spare = d.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            d.filled(n);
            bytes = &bytes[n..];
            while let Some(f) = d.next_frame()? {
                out.push(f.to_vec());
            }
        }
        Ok(())
    }

    #[test]
    fn coalesced_frames_come_out_one_by_one() {
        let mut wire = Vec::new();
        for p in [&b"a:1|c"[..], b"b:2|g\nc:3|h", b"x"] {
            encode_frame(p, &mut wire);
        }
        let mut d = FrameDecoder::new(64);
        let mut out = Vec::new();
        feed(&mut d, &wire, &mut out).unwrap();
        assert_eq!(out, vec![b"a:1|c".to_vec(), b"b:2|g\nc:3|h".to_vec(), b"x".to_vec()]);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn split_header_and_payload() {
        let mut wire = Vec::new();
        encode_frame(b"page.views:1|c", &mut wire);
        let mut d = FrameDecoder::new(64);
        let mut out = Vec::new();
        for b in &wire {
            feed(&mut d, std::slice::from_ref(b), &mut out).unwrap();
        }
        assert_eq!(out, vec![b"page.views:1|c".to_vec()]);
    }

    #[test]
    fn oversized_and_empty_frames_are_errors_after_the_good_ones() {
        let mut wire = Vec::new();
        encode_frame(b"ok:1|c", &mut wire);
        wire.extend_from_slice(&65u32.to_le_bytes());
        let mut d = FrameDecoder::new(64);
        let mut out = Vec::new();
        assert_eq!(feed(&mut d, &wire, &mut out), Err(FrameError::TooLarge { len: 65, max: 64 }));
        assert_eq!(out, vec![b"ok:1|c".to_vec()]);
        let mut d = FrameDecoder::new(64);
        assert_eq!(feed(&mut d, &0u32.to_le_bytes(), &mut out), Err(FrameError::Empty));
        // Exactly the bound is fine.
        let mut wire = Vec::new();
        encode_frame(&[b'x'; 64], &mut wire);
        let mut d = FrameDecoder::new(64);
        let mut out = Vec::new();
        feed(&mut d, &wire, &mut out).unwrap();
        assert_eq!(out[0].len(), 64);
    }

    #[test]
    fn truncated_frame_is_pending() {
        let mut wire = Vec::new();
        encode_frame(b"abc", &mut wire);
        let mut d = FrameDecoder::new(16);
        let mut out = Vec::new();
        feed(&mut d, &wire[..5], &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(d.pending(), 5);
    }
}
