//! The receive floor on this machine: CPU per datagram of a plain loop on
//! a prefilled loopback UDP socket, with the datagrams of
//! `edgestat bench --profile single` (seed 1, 3000 contexts, ~154 B), to
//! set beside `edgestat bench --burst`:
//!
//! - `recv`: one `recvfrom(2)` per datagram;
//! - `recvmmsg`: `recvmmsg(2)` batches of `BATCH` into 8 KiB buffers (what
//!   the shard's batch reader does), nothing else;
//! - `recvmmsg+shard`: the same plus `ShardState::handle_datagram` (parse,
//!   enrich, aggregate), i.e. edgestat's receive path without its runtime.
//!
//! Each round fills the socket with `PER_ROUND` datagrams (sent from this
//! thread before the clock starts), then times the drain with the thread's
//! CPU clock. The socket needs room for them: about 850 B of SO_RCVBUF per
//! datagram, twice `SO_RCVBUF` capped at `net.core.rmem_max`
//! (`sysctl -w net.core.rmem_max=134217728` for the default 100 000).
//!
//! `cargo run --release --example recv_floor [PER_ROUND] [ROUNDS] [BATCH]`

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Instant;

use edgestat::core::shard::ShardState;
use edgestat::tools::bench::workload::{bench_shard_settings, Workload, WorkloadConfig};

fn thread_cpu_ns() -> u64 {
    // SAFETY: clock_gettime writes into the timespec we own.
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn fill(tx: &UdpSocket, packets: &[Vec<u8>]) {
    for p in packets {
        // Blocking socket: a full receive queue drops, it does not block.
        tx.send(p).expect("send");
    }
}

const BUF: usize = 8192;

struct Batch {
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new(n: usize) -> Self {
        let mut bufs = vec![0u8; n * BUF];
        let iovs =
            bufs.chunks_mut(BUF).map(|c| libc::iovec { iov_base: c.as_mut_ptr().cast(), iov_len: c.len() }).collect();
        // SAFETY: mmsghdr is plain old data.
        let hdrs = (0..n).map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() }).collect();
        Batch { bufs, iovs, hdrs }
    }

    fn recv(&mut self, fd: i32) -> usize {
        for (h, iov) in self.hdrs.iter_mut().zip(self.iovs.iter_mut()) {
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: headers point at iovecs into `bufs`, all owned by self.
        let r = unsafe {
            libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), self.hdrs.len() as u32, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if r < 0 {
            0
        } else {
            r as usize
        }
    }

    fn get(&self, i: usize) -> &[u8] {
        &self.bufs[i * BUF..i * BUF + self.hdrs[i].msg_len as usize]
    }
}

fn main() {
    let arg = |i: usize, d: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (per_round, rounds, batch_n) = (arg(1, 100_000), arg(2, 5), arg(3, 32));
    let mut w = Workload::new(WorkloadConfig::standard(3000, true));
    let packets = w.packets(per_round);
    let avg = packets.iter().map(|p| p.len()).sum::<usize>() as f64 / packets.len() as f64;

    let rx = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
    rx.set_recv_buffer_size(256 << 20).expect("SO_RCVBUF");
    rx.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).expect("bind");
    let rx: UdpSocket = rx.into();
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind tx");
    tx.connect(rx.local_addr().unwrap()).expect("connect");
    let fd = rx.as_raw_fd();
    println!(
        "datagrams/round={per_round} rounds={rounds} batch={batch_n} avg={avg:.0} B SO_RCVBUF(effective)={} B",
        socket2::SockRef::from(&rx).recv_buffer_size().unwrap_or(0)
    );

    let mut shard = ShardState::new(bench_shard_settings(1_000_000));
    // Warm-up: create every context, so the shard mode measures steady state.
    for p in &packets {
        shard.handle_datagram(p, 1_700_000_001, 0);
    }
    let mut batch = Batch::new(batch_n);
    let mut one = vec![0u8; BUF];

    for mode in ["recv", "recvmmsg", "recvmmsg+shard"] {
        let (mut cpu, mut wall, mut got) = (0u64, 0f64, 0usize);
        for _ in 0..rounds {
            fill(&tx, &packets);
            let (c0, t0) = (thread_cpu_ns(), Instant::now());
            let mut n = 0usize;
            match mode {
                "recv" => loop {
                    // SAFETY: `one` is a valid writable buffer of its length.
                    let r = unsafe { libc::recv(fd, one.as_mut_ptr().cast(), one.len(), libc::MSG_DONTWAIT) };
                    if r < 0 {
                        break;
                    }
                    n += 1;
                },
                _ => loop {
                    let k = batch.recv(fd);
                    if k == 0 {
                        break;
                    }
                    if mode == "recvmmsg+shard" {
                        for i in 0..k {
                            shard.handle_datagram(batch.get(i), 1_700_000_001, n as u64);
                        }
                    }
                    n += k;
                },
            }
            cpu += thread_cpu_ns() - c0;
            wall += t0.elapsed().as_secs_f64();
            got += n;
        }
        if got < per_round * rounds {
            println!("warning: {mode}: received {got} of {} (raise net.core.rmem_max)", per_round * rounds);
        }
        println!(
            "{mode:15} {:7.0} ns CPU/datagram  {:5.2} M datagrams/s per core  ({got} datagrams, wall {:.0} ns/datagram)",
            cpu as f64 / got.max(1) as f64,
            got as f64 * 1e3 / cpu.max(1) as f64,
            wall * 1e9 / got.max(1) as f64
        );
    }
}
