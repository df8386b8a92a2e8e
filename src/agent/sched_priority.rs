//! Real-time scheduling for the shard threads (`EDGESTAT_SHARD_RT_PRIORITY`).
//!
//! With the kernel's default socket buffer a shard has well under a
//! millisecond of slack at 20,000 datagrams/s of ~7 KB. Any normal-priority
//! thread the scheduler puts on the shard's CPU for longer (kernel threads
//! such as `kdamond` or a `kworker`, a busy neighbour) makes the kernel
//! drop datagrams. A shard under `SCHED_FIFO` preempts them at once. The
//! kernel's real-time throttling (`sched_rt_runtime_us`, 95 % by default)
//! still leaves every CPU a share for other threads if a shard saturates it.

use std::sync::atomic::{AtomicBool, Ordering};

/// Puts the calling thread under `SCHED_FIFO` at `priority` (1–99).
pub fn make_current_thread_fifo(priority: u8) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: i32::from(priority) };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Applies `EDGESTAT_SHARD_RT_PRIORITY` (0 = off) to the calling shard
/// thread and reports the outcome once per process: every shard gets the
/// same answer from the kernel.
pub fn apply_to_shard(priority: u8) {
    static REPORTED: AtomicBool = AtomicBool::new(false);
    if priority == 0 {
        return;
    }
    let result = make_current_thread_fifo(priority);
    if REPORTED.swap(true, Ordering::Relaxed) {
        return;
    }
    match result {
        Ok(()) => tracing::info!(priority, "shards run under SCHED_FIFO"),
        Err(e) => tracing::warn!(
            priority,
            error = %e,
            "EDGESTAT_SHARD_RT_PRIORITY not applied, shards run at normal priority: it needs CAP_SYS_NICE \
             or an RLIMIT_RTPRIO of at least the priority (in the service unit: LimitRTPRIO= and RestrictRealtime=no)"
        ),
    }
}
