//! The one streaming payload builder every payload kind uses
//! (the Agent's `stream.Compressor`).
//!
//! Items are appended to an uncompressed staging buffer; the staging buffer is
//! pushed through the compressor and flushed ("pack") only when the cheap
//! worst-case estimate `bound()` says the next item might not fit. In the
//! common case every byte is compressed exactly once.
//!
//! Memory: the builder is long-lived. Its staging buffer, compressed buffer,
//! framing buffers and the compression context are allocated once and reused
//! for every payload. The only per-payload allocation is the final
//! [`Payload::body`]: `close` copies the compressed bytes into an exactly
//! sized `bytes::Bytes` (one memcpy of the *compressed* size), which hands
//! ownership to the caller while the builder keeps its large buffer.

use bytes::Bytes;

use super::compress::{CompressError, Compression, StreamEncoder};

/// Number of pack+flush cycles after which a payload is declared full
/// (the Agent's `maxRepacks`).
pub const MAX_REPACKS: u32 = 40;

/// One finished request body plus what it contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Compressed body, ready to send.
    pub body: Bytes,
    /// Number of items (series, sketches, checks, events) in the payload.
    pub items: usize,
    /// Uncompressed size: header + items + separators + footer.
    pub uncompressed_len: usize,
    /// Sum of item weights (points, for series v2; 0 elsewhere).
    pub points: usize,
}

/// Size limits for the payloads being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum compressed body size.
    pub max_compressed: usize,
    /// Maximum uncompressed size (header + items + footer).
    pub max_uncompressed: usize,
    /// Optional maximum total item weight per payload (v2 points).
    pub max_weight: Option<usize>,
}

/// Why `add_item` refused an item.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// The item can never fit in a payload with these limits: drop it.
    #[error("item too big")]
    ItemTooBig,
    /// The current payload has no room left: close it and retry the item in
    /// a new payload. Only returned when the payload holds at least one item.
    #[error("payload full")]
    PayloadFull,
    /// The compressor failed.
    #[error(transparent)]
    Compress(#[from] CompressError),
}

/// Why `close` produced no payload.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    /// The compressor failed; the payload's items are lost.
    #[error(transparent)]
    Compress(#[from] CompressError),
    /// The finished body broke a limit (cannot happen while `bound()` is a
    /// true worst case; checked so that an over-limit body is never emitted).
    #[error("payload over limit after close ({compressed} compressed, {uncompressed} uncompressed)")]
    OverLimit {
        /// Compressed size obtained.
        compressed: usize,
        /// Uncompressed size obtained.
        uncompressed: usize,
    },
}

/// Cumulative builder counters (the Agent's `compressor.*` telemetry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuilderCounters {
    /// Payloads closed successfully (`compressor.total_payloads`).
    pub total_payloads: u64,
    /// Pack+flush cycles (`compressor.total_cycles`).
    pub total_cycles: u64,
    /// Uncompressed bytes fed to the compressor (`compressor.bytes_in`).
    pub bytes_in: u64,
    /// Compressed bytes produced in closed payloads (`compressor.bytes_out`).
    pub bytes_out: u64,
}

/// Long-lived streaming payload builder (see module docs).
#[derive(Debug)]
pub struct PayloadBuilder {
    kind: Compression,
    enc: StreamEncoder,
    /// Uncompressed staging buffer (`input`). In stable-input mode it holds
    /// the whole payload (header + items + footer) and zstd reads it in place.
    input: Vec<u8>,
    /// Start of the staged (not yet packed) bytes in `input`: 0 in copying
    /// mode (packed bytes are cleared), the packed prefix in stable mode.
    base: usize,
    /// Current payload uses zstd stable input (see `configure`).
    stable: bool,
    /// Compressed output of the current payload (`compressed`).
    compressed: Vec<u8>,
    header: Vec<u8>,
    footer: Vec<u8>,
    separator: Vec<u8>,
    limits: Limits,
    /// Uncompressed bytes already pushed into the compressor.
    written: usize,
    repacks: u32,
    items: usize,
    weight: usize,
    open: bool,
    /// Compressed length right after `start` (container header bytes).
    empty_len: Option<usize>,
    counters: BuilderCounters,
}

impl PayloadBuilder {
    /// Creates a builder for `kind` (allocates the compression context once).
    pub fn new(kind: Compression) -> Result<PayloadBuilder, CompressError> {
        Ok(PayloadBuilder {
            kind,
            enc: StreamEncoder::new(kind)?,
            input: Vec::new(),
            base: 0,
            stable: false,
            compressed: Vec::new(),
            header: Vec::new(),
            footer: Vec::new(),
            separator: Vec::new(),
            limits: Limits { max_compressed: 0, max_uncompressed: 0, max_weight: None },
            written: 0,
            repacks: 0,
            items: 0,
            weight: 0,
            open: false,
            empty_len: None,
            counters: BuilderCounters::default(),
        })
    }

    /// The compressor in use.
    pub fn compression(&self) -> Compression {
        self.kind
    }

    /// Cumulative counters since creation.
    pub fn counters(&self) -> BuilderCounters {
        self.counters
    }

    /// Sets framing and limits for the following payloads (reusing buffers;
    /// grows them once to the sizes these limits need).
    pub fn configure(&mut self, header: &[u8], footer: &[u8], separator: &[u8], limits: Limits) {
        self.header.clear();
        self.header.extend_from_slice(header);
        self.footer.clear();
        self.footer.extend_from_slice(footer);
        self.separator.clear();
        self.separator.extend_from_slice(separator);
        self.limits = limits;
        // The staging buffer never exceeds ~max_compressed (bound(n) >= n)
        // nor max_uncompressed; the compressed buffer stays near
        // max_compressed plus flush slack.
        // Preallocation is capped (16 MiB) so absurd limits cannot abort;
        // buffers still grow on demand beyond it.
        const PREALLOC_CAP: usize = 16 << 20;
        // zstd compresses the staging buffer in place (stable input, no copy
        // into its window) when the whole payload fits the buffer without
        // reallocating: it then holds up to max_uncompressed bytes.
        let stable = self.enc.supports_stable_input() && limits.max_uncompressed <= PREALLOC_CAP;
        let stage = if stable {
            limits.max_uncompressed
        } else {
            limits.max_uncompressed.min(limits.max_compressed).saturating_add(1024).min(PREALLOC_CAP)
        };
        if self.input.capacity() < stage {
            self.input.reserve(stage - self.input.len());
        }
        let comp = limits.max_compressed.saturating_add(64 * 1024).min(PREALLOC_CAP);
        if self.compressed.capacity() < comp {
            self.compressed.reserve(comp - self.compressed.len());
        }
        self.stable = stable && self.input.capacity() >= limits.max_uncompressed;
        self.open = false;
        self.empty_len = None;
    }

    /// Starts a new payload: resets the stream and writes the header.
    pub fn start(&mut self) -> Result<(), CompressError> {
        self.input.clear();
        if self.stable {
            // The header is compressed together with the first pack; for the
            // room check it counts as written, exactly as in copying mode.
            self.enc.begin_stable(&mut self.compressed)?;
            self.input.extend_from_slice(&self.header);
            self.base = self.input.len();
        } else {
            self.enc.begin(&mut self.compressed)?;
            if !self.header.is_empty() {
                self.enc.write(&self.header, &mut self.compressed)?;
            }
            self.base = 0;
        }
        self.written = self.header.len();
        self.repacks = 0;
        self.items = 0;
        self.weight = 0;
        self.open = true;
        self.empty_len = Some(self.compressed.len());
        Ok(())
    }

    /// Whether a payload is currently open.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Items in the open payload.
    pub fn items(&self) -> usize {
        self.items
    }

    /// Step 1 of `AddItem`: whether an item of `len` bytes and `weight` can
    /// never be added with the current framing and limits.
    pub fn item_too_big(&self, len: usize, weight: usize) -> bool {
        if let Some(maxw) = self.limits.max_weight {
            if weight > maxw {
                return true;
            }
        }
        let max_c = self.limits.max_compressed as i128;
        let max_u = self.limits.max_uncompressed as i128;
        let hf = (self.header.len() + self.footer.len()) as i128;
        let max_item_raw = max_c - hf;
        let max_item_compressed = max_u - self.kind.bound(self.header.len() + self.footer.len()) as i128;
        let b = self.kind.bound(len) as i128;
        !((len as i128) < max_item_raw && b < max_item_compressed && b < max_c - hf)
    }

    /// Whether an item would be accepted by a freshly started payload: the
    /// definition of "fits alone" (not too big, and room in an empty payload).
    /// Requires `start()` to have run with the current configuration.
    pub fn fits_alone(&self, len: usize, weight: usize) -> bool {
        if self.item_too_big(len, weight) {
            return false;
        }
        let u = len.saturating_add(self.footer.len());
        let c0 = self.empty_compressed_len();
        self.kind.bound(u) as i128 <= self.limits.max_compressed as i128 - c0 as i128
            && self.header.len().saturating_add(u) <= self.limits.max_uncompressed
    }

    /// Compressed bytes an empty payload holds right after `start` (container
    /// headers; deterministic per compressor and header).
    fn empty_compressed_len(&self) -> usize {
        if let Some(n) = self.empty_len {
            return n;
        }
        match self.kind {
            Compression::Gzip => 10,
            Compression::Lz4 => 7,
            Compression::None => self.header.len(),
            // zstd and deflate buffer the header internally until a flush.
            Compression::Zstd { .. } | Compression::Zlib => 0,
        }
    }

    fn has_room(&self, item_len: usize) -> bool {
        let mut u = self.staged().saturating_add(item_len).saturating_add(self.footer.len());
        if self.items > 0 {
            u = u.saturating_add(self.separator.len());
        }
        let left = self.limits.max_compressed as i128 - self.compressed.len() as i128;
        self.kind.bound(u) as i128 <= left && self.written.saturating_add(u) <= self.limits.max_uncompressed
    }

    /// The Agent's `AddItem` with an optional weight limit. On
    /// `PayloadFull` the caller closes the payload and retries in a new one;
    /// an item that does not fit even an empty payload is `ItemTooBig`.
    pub fn add_item(&mut self, item: &[u8], weight: usize) -> Result<(), AddError> {
        if !self.open {
            self.start()?;
        }
        if self.item_too_big(item.len(), weight) {
            return Err(AddError::ItemTooBig);
        }
        if let Some(maxw) = self.limits.max_weight {
            if self.weight.saturating_add(weight) > maxw {
                return Err(if self.items == 0 { AddError::ItemTooBig } else { AddError::PayloadFull });
            }
        }
        if self.repacks >= MAX_REPACKS {
            return Err(AddError::PayloadFull);
        }
        if !self.has_room(item.len()) {
            if self.staged() == 0 {
                return Err(if self.items == 0 { AddError::ItemTooBig } else { AddError::PayloadFull });
            }
            self.pack()?;
            if !self.has_room(item.len()) {
                return Err(if self.items == 0 { AddError::ItemTooBig } else { AddError::PayloadFull });
            }
            self.repacks += 1;
        }
        if self.items > 0 {
            self.input.extend_from_slice(&self.separator);
        }
        self.input.extend_from_slice(item);
        self.items += 1;
        self.weight = self.weight.saturating_add(weight);
        Ok(())
    }

    /// Pushes the staging buffer into the compressor and flushes it so that
    /// `compressed` reflects the real size.
    fn pack(&mut self) -> Result<(), CompressError> {
        if self.stable {
            // One ZSTD_e_flush call on the buffer in place.
            self.enc.feed_stable(&self.input, false, &mut self.compressed)?;
            self.written += self.staged();
            self.base = self.input.len();
        } else {
            self.enc.write(&self.input, &mut self.compressed)?;
            self.enc.flush(&mut self.compressed)?;
            self.written += self.input.len();
            self.input.clear();
        }
        self.counters.total_cycles += 1;
        Ok(())
    }

    /// Bytes staged since the last pack (what the room check adds up).
    fn staged(&self) -> usize {
        self.input.len() - self.base
    }

    /// Abandons the open payload (e.g. an events payload without events).
    pub fn discard(&mut self) {
        self.open = false;
        self.input.clear();
        self.base = 0;
    }

    /// `Close()`: writes the rest plus the footer, ends the stream and returns
    /// the payload (copying the compressed bytes into an owned `Bytes`).
    pub fn close(&mut self) -> Result<Payload, CloseError> {
        if !self.open {
            self.start()?;
        }
        self.open = false;
        self.input.extend_from_slice(&self.footer);
        if self.stable {
            self.enc.feed_stable(&self.input, true, &mut self.compressed)?;
        } else {
            self.enc.write(&self.input, &mut self.compressed)?;
            self.enc.finish(&mut self.compressed)?;
        }
        self.written += self.staged();
        self.input.clear();
        self.base = 0;
        self.counters.total_cycles += 1;
        self.counters.bytes_in += self.written as u64;
        if self.compressed.len() > self.limits.max_compressed || self.written > self.limits.max_uncompressed {
            return Err(CloseError::OverLimit { compressed: self.compressed.len(), uncompressed: self.written });
        }
        self.counters.total_payloads += 1;
        self.counters.bytes_out += self.compressed.len() as u64;
        Ok(Payload {
            body: Bytes::copy_from_slice(&self.compressed),
            items: self.items,
            uncompressed_len: self.written,
            points: self.weight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(c: usize, u: usize) -> Limits {
        Limits { max_compressed: c, max_uncompressed: u, max_weight: None }
    }

    #[test]
    fn empty_payload_has_header_and_footer() {
        let mut b = PayloadBuilder::new(Compression::None).unwrap();
        b.configure(b"[", b"]", b",", limits(100, 100));
        b.start().unwrap();
        let p = b.close().unwrap();
        assert_eq!(&p.body[..], b"[]");
        assert_eq!(p.items, 0);
        assert_eq!(p.uncompressed_len, 2);
    }

    #[test]
    fn uncompressed_limit_splits() {
        let mut b = PayloadBuilder::new(Compression::None).unwrap();
        b.configure(b"[", b"]", b",", limits(1000, 10));
        b.start().unwrap();
        b.add_item(b"1234", 0).unwrap();
        b.add_item(b"56", 0).unwrap(); // [1234,56] = 9
        assert!(matches!(b.add_item(b"7", 0), Err(AddError::PayloadFull)));
        let p = b.close().unwrap();
        assert_eq!(&p.body[..], b"[1234,56]");
        b.start().unwrap();
        assert!(matches!(b.add_item(b"123456789", 0), Err(AddError::ItemTooBig)));
    }

    #[test]
    fn weight_limit() {
        let mut b = PayloadBuilder::new(Compression::Zstd { level: 1 }).unwrap();
        b.configure(b"", b"", b"", Limits { max_compressed: 10_000, max_uncompressed: 10_000, max_weight: Some(3) });
        b.start().unwrap();
        assert!(matches!(b.add_item(b"a", 4), Err(AddError::ItemTooBig)));
        b.add_item(b"a", 2).unwrap();
        assert!(matches!(b.add_item(b"b", 2), Err(AddError::PayloadFull)));
        b.add_item(b"c", 1).unwrap();
        let p = b.close().unwrap();
        assert_eq!(p.points, 3);
        assert_eq!(zstd::stream::decode_all(&p.body[..]).unwrap(), b"ac");
    }

    #[test]
    fn stable_and_copying_zstd_agree() {
        // Same items, same limits: zstd in place (stable input) and zstd with
        // copies (max_uncompressed above the preallocation cap) cut payloads
        // at the same items and decode to the same bytes.
        let items: Vec<String> = (0..20_000).map(|n| format!("\"item-{n}-{}\"", n * 7919 % 1000)).collect();
        let run = |max_u: usize| {
            let mut b = PayloadBuilder::new(Compression::Zstd { level: 1 }).unwrap();
            b.configure(b"[", b"]", b",", limits(3_000, max_u));
            let stable = b.stable;
            let mut out = Vec::new();
            for it in &items {
                match b.add_item(it.as_bytes(), 0) {
                    Ok(()) => {}
                    Err(AddError::PayloadFull) => {
                        out.push(b.close().unwrap());
                        b.add_item(it.as_bytes(), 0).unwrap();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            out.push(b.close().unwrap());
            (stable, out)
        };
        let (s1, a) = run(1_000_000);
        let (s2, b) = run(17 << 20);
        assert!(s1 && !s2);
        assert!(a.len() > 2);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert!(x.body.len() <= 3_000);
            assert_eq!(x.items, y.items);
            assert_eq!(x.uncompressed_len, y.uncompressed_len);
            let dx = zstd::stream::decode_all(&x.body[..]).unwrap();
            assert_eq!(dx, zstd::stream::decode_all(&y.body[..]).unwrap());
            assert_eq!(dx.len(), x.uncompressed_len);
        }
    }

    #[test]
    fn compressed_limit_respected_with_repacks() {
        for kind in [Compression::Zstd { level: 1 }, Compression::Zlib, Compression::Gzip, Compression::Lz4] {
            let mut b = PayloadBuilder::new(kind).unwrap();
            b.configure(b"[", b"]", b",", limits(2000, 1_000_000));
            b.start().unwrap();
            let mut n = 0;
            loop {
                let item = format!("\"item-{n}-{}\"", n * 7919 % 1000);
                match b.add_item(item.as_bytes(), 0) {
                    Ok(()) => n += 1,
                    Err(AddError::PayloadFull) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            let p = b.close().unwrap();
            assert!(p.body.len() <= 2000, "{kind:?}");
            assert_eq!(p.items, n);
            assert!(n > 100, "{kind:?} only {n} items");
        }
    }
}
