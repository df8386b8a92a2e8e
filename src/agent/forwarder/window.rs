//! The in-flight window: bytes of payloads handed to the forwarder and not
//! yet settled (delivered, rejected, or moved to the retry queue after a
//! failure). The flusher waits while it is full, so a healthy intake that
//! is slower than one flush slows the flusher down instead of losing data.
//!
//! Only when the flusher has kept waiting longer than `max_wait` (every
//! submission of one flush finding the window full: the intake has stayed
//! slower than the data) do the endpoint workers
//! shed their oldest unsent transactions — to disk when storage is on,
//! else dropped and counted — until the waiting payload fits.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::ForwarderStats;

/// Window bounds (`EDGESTAT_FORWARDER_WINDOW_BYTES`, `EDGESTAT_FORWARDER_WINDOW_MAX_WAIT`).
#[derive(Debug, Clone, Copy)]
pub struct WindowSettings {
    /// Bytes of unsettled payloads (one larger payload is let in alone).
    pub max_bytes: usize,
    /// How long one flush may wait for room before the oldest unsent
    /// payloads are shed.
    pub max_wait: Duration,
}

#[derive(Debug)]
struct State {
    in_use: usize,
    /// Start of the current stretch of waits: set by the first wait, reset
    /// by an acquisition that finds room at once and by `new_batch`.
    stalled_since: Option<Instant>,
    /// Bytes the waiting submitter needs (0: nobody waits).
    want: usize,
    /// The waiting submitter has asked the workers to shed.
    shedding: bool,
    /// Shutdown: nobody waits any more.
    open: bool,
}

/// Shared by the submitter (flusher thread) and the endpoint workers.
#[derive(Debug)]
pub struct Window {
    s: WindowSettings,
    state: Mutex<State>,
    room: Condvar,
    shed_wakers: Mutex<Vec<Arc<tokio::sync::Notify>>>,
    stats: Arc<ForwarderStats>,
}

/// A payload's share of the window; released when the last transaction
/// holding it settles (every endpoint's clone is dropped).
#[derive(Debug)]
pub struct Share {
    window: Arc<Window>,
    bytes: usize,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.window.release(self.bytes);
    }
}

impl Window {
    /// An empty window.
    pub fn new(s: WindowSettings, stats: Arc<ForwarderStats>) -> Arc<Self> {
        stats.window_max_bytes.store(s.max_bytes as u64, Ordering::Relaxed);
        Arc::new(Self {
            s,
            state: Mutex::new(State::default()),
            room: Condvar::new(),
            shed_wakers: Mutex::new(Vec::new()),
            stats,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fits(&self, st: &State, bytes: usize) -> bool {
        st.in_use == 0 || st.in_use + bytes <= self.s.max_bytes
    }

    /// Takes `bytes` of the window, waiting while it is full (unless
    /// `wait` is false: final flush, whose payloads are built already).
    pub fn acquire(self: &Arc<Self>, bytes: usize, wait: bool) -> Share {
        let mut st = self.lock();
        if wait && self.fits(&st, bytes) {
            // Room without waiting: the intake keeps up, the stall is over.
            st.stalled_since = None;
        } else if wait && st.open {
            let since = *st.stalled_since.get_or_insert_with(Instant::now);
            st.want = bytes;
            while st.open && !self.fits(&st, bytes) {
                let waited = since.elapsed();
                if waited >= self.s.max_wait && !st.shedding {
                    st.shedding = true;
                    self.stats.window_shed_episodes.fetch_add(1, Ordering::Relaxed);
                    self.wake_workers();
                }
                let timeout = if st.shedding { Duration::from_millis(100) } else { self.s.max_wait - waited };
                st = self.room.wait_timeout(st, timeout).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
            }
            st.want = 0;
            st.shedding = false;
        }
        st.in_use += bytes;
        self.stats.window_bytes.store(st.in_use as u64, Ordering::Relaxed);
        Share { window: self.clone(), bytes }
    }

    /// A new flush starts: its waits are measured afresh.
    pub fn new_batch(&self) {
        self.lock().stalled_since = None;
    }

    /// Shutdown: every waiting and future acquisition goes through at once.
    pub fn stop_waiting(&self) {
        self.lock().open = false;
        self.room.notify_all();
    }

    fn release(&self, bytes: usize) {
        let mut st = self.lock();
        st.in_use -= bytes;
        self.stats.window_bytes.store(st.in_use as u64, Ordering::Relaxed);
        drop(st);
        self.room.notify_all();
    }

    /// True while the waiting submitter wants workers to shed unsent
    /// transactions and still lacks room.
    pub fn needs_shedding(&self) -> bool {
        let st = self.lock();
        st.shedding && st.open && !self.fits(&st, st.want)
    }

    /// A worker's wake-up for shedding requests.
    pub fn register_worker(&self) -> Arc<tokio::sync::Notify> {
        let n = Arc::new(tokio::sync::Notify::new());
        self.shed_wakers.lock().unwrap_or_else(|e| e.into_inner()).push(n.clone());
        n
    }

    fn wake_workers(&self) {
        for n in self.shed_wakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            n.notify_one();
        }
    }
}

impl Default for State {
    fn default() -> Self {
        Self { in_use: 0, stalled_since: None, want: 0, shedding: false, open: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(max_bytes: usize, max_wait_ms: u64) -> Arc<Window> {
        Window::new(
            WindowSettings { max_bytes, max_wait: Duration::from_millis(max_wait_ms) },
            Arc::new(ForwarderStats::default()),
        )
    }

    #[test]
    fn waits_until_a_share_is_released_and_lets_one_large_payload_in_alone() {
        let w = window(100, 60_000);
        let a = w.acquire(60, true);
        let w2 = w.clone();
        let t = std::thread::spawn(move || w2.acquire(60, true));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished(), "the second payload must wait for room");
        assert!(!w.needs_shedding());
        drop(a);
        let b = t.join().unwrap();
        assert_eq!(w.stats.window_bytes.load(Ordering::Relaxed), 60);
        drop(b);
        // Larger than the window: allowed when the window is empty.
        let big = w.acquire(500, true);
        assert_eq!(w.stats.window_bytes.load(Ordering::Relaxed), 500);
        drop(big);
        assert_eq!(w.stats.window_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn asks_for_shedding_only_after_max_wait_and_stops_when_room_is_made() {
        let w = window(100, 100);
        let a = w.acquire(100, true);
        let w2 = w.clone();
        let waker = w.register_worker();
        let t = std::thread::spawn(move || w2.acquire(10, true));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!w.needs_shedding(), "no shedding before max_wait");
        // The worker is woken once the wait passes max_wait.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), waker.notified()).await.unwrap() });
        assert!(w.needs_shedding());
        assert_eq!(w.stats.window_shed_episodes.load(Ordering::Relaxed), 1);
        drop(a);
        let _b = t.join().unwrap();
        assert!(!w.needs_shedding());
    }

    #[test]
    fn no_wait_when_stopped_or_not_asked_to() {
        let w = window(10, 60_000);
        let _a = w.acquire(10, true);
        let _b = w.acquire(10, false);
        w.stop_waiting();
        let _c = w.acquire(10, true);
        assert_eq!(w.stats.window_bytes.load(Ordering::Relaxed), 30);
    }
}
