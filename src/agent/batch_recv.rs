//! Batched reads of a datagram socket: one non-blocking `recvmmsg` fills
//! up to `capacity` preallocated buffers. Used by the shards' readers and
//! by the UDP standby reader, which hands whole batches to its shard.

use std::os::fd::RawFd;

/// Non-blocking `recvmmsg` into preallocated buffers: one syscall for up to
/// `capacity` datagrams.
pub struct BatchRecv {
    fd: RawFd,
    size: usize,
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Datagrams the last read returned.
    filled: usize,
}

impl BatchRecv {
    /// `capacity` buffers of `size` bytes each, read from `fd`.
    pub fn new(fd: RawFd, capacity: usize, size: usize) -> Self {
        let mut bufs = vec![0u8; capacity * size];
        // The iovecs point into `bufs`, whose heap block never moves: it is
        // never resized, and moving the Vec does not move its contents.
        let iovs: Vec<libc::iovec> =
            bufs.chunks_mut(size).map(|c| libc::iovec { iov_base: c.as_mut_ptr().cast(), iov_len: c.len() }).collect();
        // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
        let hdrs = (0..capacity).map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() }).collect();
        Self { fd, size, bufs, iovs, hdrs, filled: 0 }
    }

    /// Datagrams one call can return.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Reads into every slot, forgetting the previous read; returns the
    /// datagrams read (0 when none is queued).
    pub fn recv(&mut self) -> std::io::Result<usize> {
        self.filled = 0;
        self.recv_more()
    }

    /// Reads into the slots after the filled ones (a batch filled over
    /// several reads); returns the datagrams this call read.
    pub fn recv_more(&mut self) -> std::io::Result<usize> {
        let start = self.filled;
        if start == self.hdrs.len() {
            return Ok(0);
        }
        for (h, iov) in self.hdrs[start..].iter_mut().zip(self.iovs[start..].iter_mut()) {
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_name = std::ptr::null_mut();
            h.msg_hdr.msg_namelen = 0;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points at its own iovec, every iovec at a
        // disjoint `size`-byte slice of `bufs`; all live as long as `self`,
        // which this `&mut` borrow keeps in place for the call.
        let r = unsafe {
            libc::recvmmsg(
                self.fd,
                self.hdrs[start..].as_mut_ptr(),
                (self.hdrs.len() - start) as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        self.filled += r.max(0) as usize;
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        Ok(r as usize)
    }

    /// Datagrams held: those of the last [`Self::recv`] and the
    /// [`Self::recv_more`] calls after it.
    pub fn filled(&self) -> usize {
        self.filled
    }

    /// Every slot is filled.
    pub fn is_full(&self) -> bool {
        self.filled == self.hdrs.len()
    }

    /// Forgets the datagrams held (the buffers are reused as they are).
    pub fn clear(&mut self) {
        self.filled = 0;
    }

    /// Datagram `i` of the last read (truncated to the buffer size).
    pub fn datagram(&self, i: usize) -> &[u8] {
        let len = (self.hdrs[i].msg_len as usize).min(self.size);
        &self.bufs[i * self.size..i * self.size + len]
    }
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point only into this
// value's own heap buffers (`bufs`, `iovs`), which move with it; nothing
// else holds them, so the value may be handed to another thread whole.
unsafe impl Send for BatchRecv {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_fills_over_several_reads_in_order_and_recv_starts_over() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let mut b = BatchRecv::new(rx.as_raw_fd(), 4, 64);
        for i in 0..3 {
            tx.send(format!("d{i}").as_bytes()).unwrap();
        }
        assert_eq!(b.recv_more().unwrap(), 3);
        assert!(!b.is_full());
        for i in 3..6 {
            tx.send(format!("d{i}").as_bytes()).unwrap();
        }
        // One slot left: one datagram taken, two stay queued.
        assert_eq!(b.recv_more().unwrap(), 1);
        assert!(b.is_full());
        assert_eq!(b.recv_more().unwrap(), 0, "a full batch reads nothing");
        let got: Vec<&[u8]> = (0..b.filled()).map(|i| b.datagram(i)).collect();
        assert_eq!(got, [&b"d0"[..], b"d1", b"d2", b"d3"]);
        assert_eq!(b.recv().unwrap(), 2, "recv starts over");
        assert_eq!((b.datagram(0), b.datagram(1)), (&b"d4"[..], &b"d5"[..]));
        b.clear();
        assert_eq!(b.filled(), 0);
    }
}
