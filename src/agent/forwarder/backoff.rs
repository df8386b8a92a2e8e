//! Per-endpoint circuit breaker with the Agent's exponential backoff
//! (formula in docs/delivery.md). Pure: the caller passes the time in.

use std::time::Duration;

use tokio::time::Instant;

/// Backoff knobs (`forwarder_backoff_*`, `forwarder_recovery_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffSettings {
    /// Seconds; the first backoff is between `base` and `2 × base`.
    pub base_s: f64,
    /// Seconds; no backoff is longer.
    pub max_s: f64,
    /// Jitter: backoff is uniform in `[t / factor, t]` (factor >= 2).
    pub factor: f64,
    /// Errors forgiven by one successful probe.
    pub recovery_interval: u32,
    /// A successful probe forgives every error.
    pub recovery_reset: bool,
}

impl Default for BackoffSettings {
    fn default() -> Self {
        Self { base_s: 2.0, max_s: 64.0, factor: 2.0, recovery_interval: 2, recovery_reset: false }
    }
}

impl BackoffSettings {
    /// `floor(log2(max / base)) + 1`: the error count at which backoff stops growing.
    pub fn max_errors(&self) -> u32 {
        let ratio = (self.max_s / self.base_s).max(1.0);
        ratio.log2().floor() as u32 + 1
    }

    /// Backoff after `n` consecutive errors; `rand01` is uniform in [0, 1).
    pub fn backoff(&self, n: u32, rand01: f64) -> Duration {
        if n == 0 {
            return Duration::ZERO;
        }
        let t = self.base_s * 2f64.powi(n.min(62) as i32);
        if t > self.max_s {
            return Duration::from_secs_f64(self.max_s);
        }
        let lo = t / self.factor.max(2.0);
        let hi = t.min(self.max_s);
        Duration::from_secs_f64(lo + rand01.clamp(0.0, 1.0) * (hi - lo))
    }
}

/// What the breaker allows right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Send normally.
    Send,
    /// Send this one alone: its result decides whether the endpoint recovered.
    Probe,
    /// Send nothing; wake up at the given time (`None`: when the probe returns).
    Wait(Option<Instant>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unblocked,
    Blocked { until: Instant },
    HalfBlocked,
}

/// Circuit breaker of one endpoint.
#[derive(Debug)]
pub struct Breaker {
    settings: BackoffSettings,
    max_errors: u32,
    errors: u32,
    state: State,
}

impl Breaker {
    /// An unblocked breaker.
    pub fn new(settings: BackoffSettings) -> Self {
        Self { max_errors: settings.max_errors(), settings, errors: 0, state: State::Unblocked }
    }

    /// Consecutive error count (0 when healthy).
    pub fn errors(&self) -> u32 {
        self.errors
    }

    /// When the endpoint becomes sendable again, if it is blocked.
    pub fn blocked_until(&self) -> Option<Instant> {
        match self.state {
            State::Blocked { until } => Some(until),
            _ => None,
        }
    }

    /// Asks to send one transaction now. A `Probe` answer moves the breaker
    /// to half-blocked: nothing else goes out until its result is reported.
    pub fn permit(&mut self, now: Instant) -> Permit {
        match self.state {
            State::Unblocked => Permit::Send,
            State::Blocked { until } if now >= until => {
                self.state = State::HalfBlocked;
                Permit::Probe
            }
            State::Blocked { until } => Permit::Wait(Some(until)),
            State::HalfBlocked => Permit::Wait(None),
        }
    }

    /// Reports the result of a send. Results of requests that were already
    /// in flight when the endpoint got blocked are ignored (as the Agent).
    pub fn report(&mut self, ok: bool, was_probe: bool, now: Instant, rand01: f64) {
        match (self.state, was_probe) {
            (State::HalfBlocked, true) => {
                if !ok {
                    self.block(now, rand01);
                    return;
                }
                self.errors = if self.settings.recovery_reset {
                    0
                } else {
                    self.errors.saturating_sub(self.settings.recovery_interval)
                };
                self.state = if self.errors == 0 {
                    State::Unblocked
                } else {
                    State::Blocked { until: now + self.settings.backoff(self.errors, rand01) }
                };
            }
            (State::Unblocked, _) if !ok => self.block(now, rand01),
            // Success while healthy, or a late answer from before the block.
            _ => {}
        }
    }

    /// A probe that will never report (shutdown, cancelled) gives its turn back.
    pub fn probe_abandoned(&mut self, now: Instant) {
        if self.state == State::HalfBlocked {
            self.state = State::Blocked { until: now };
        }
    }

    fn block(&mut self, now: Instant, rand01: f64) {
        self.errors = (self.errors + 1).min(self.max_errors);
        self.state = State::Blocked { until: now + self.settings.backoff(self.errors, rand01) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_defaults() {
        let s = BackoffSettings::default();
        assert_eq!(s.max_errors(), 6);
        assert_eq!(s.backoff(0, 0.5), Duration::ZERO);
        assert_eq!(s.backoff(1, 0.0), Duration::from_secs(2));
        assert_eq!(s.backoff(1, 1.0), Duration::from_secs(4));
        assert_eq!(s.backoff(5, 0.0), Duration::from_secs(32));
        assert_eq!(s.backoff(5, 1.0), Duration::from_secs(64));
        assert_eq!(s.backoff(6, 0.3), Duration::from_secs(64));
        assert_eq!(s.backoff(40, 0.3), Duration::from_secs(64));
    }

    #[test]
    fn factor_widens_jitter() {
        let s = BackoffSettings { factor: 4.0, ..Default::default() };
        assert_eq!(s.backoff(2, 0.0), Duration::from_secs(2));
        assert_eq!(s.backoff(2, 1.0), Duration::from_secs(8));
    }

    #[test]
    fn block_probe_recover() {
        let mut b = Breaker::new(BackoffSettings::default());
        let t0 = Instant::now();
        assert_eq!(b.permit(t0), Permit::Send);
        b.report(false, false, t0, 0.0);
        assert_eq!(b.errors(), 1);
        let until = t0 + Duration::from_secs(2);
        assert_eq!(b.permit(t0), Permit::Wait(Some(until)));
        // A late failure of a request sent before the block is ignored.
        b.report(false, false, t0, 0.0);
        assert_eq!(b.errors(), 1);
        assert_eq!(b.permit(until), Permit::Probe);
        assert_eq!(b.permit(until), Permit::Wait(None));
        b.report(false, true, until, 0.0);
        assert_eq!(b.errors(), 2);
        let until2 = until + Duration::from_secs(4);
        assert_eq!(b.permit(until2), Permit::Probe);
        b.report(true, true, until2, 0.0);
        assert_eq!(b.errors(), 0);
        assert_eq!(b.permit(until2), Permit::Send);
    }

    #[test]
    fn recovery_interval_and_cap() {
        let mut b = Breaker::new(BackoffSettings::default());
        let mut now = Instant::now();
        b.report(false, false, now, 0.0);
        for _ in 0..10 {
            now = b.blocked_until().unwrap();
            assert_eq!(b.permit(now), Permit::Probe);
            b.report(false, true, now, 0.0);
        }
        assert_eq!(b.errors(), 6, "capped at max_errors");
        now = b.blocked_until().unwrap();
        assert_eq!(b.permit(now), Permit::Probe);
        b.report(true, true, now, 0.0);
        assert_eq!(b.errors(), 4, "one success forgives recovery_interval errors");
        assert!(b.blocked_until().is_some());

        let mut r = Breaker::new(BackoffSettings { recovery_reset: true, ..Default::default() });
        r.report(false, false, now, 0.0);
        let t = r.blocked_until().unwrap();
        assert_eq!(r.permit(t), Permit::Probe);
        r.report(true, true, t, 0.0);
        assert_eq!(r.errors(), 0);
        assert_eq!(r.permit(t), Permit::Send);
    }
}
