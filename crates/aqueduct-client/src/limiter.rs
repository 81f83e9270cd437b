//! Per-host rate limiting shared by every sync talking to the same host.
//!
//! A [`HostLimiter`] combines three things:
//! - pacing (GCRA): requests are spaced at the profile's sustained rate, with a small burst;
//! - an adaptive concurrency limit (AIMD): halved on 429/503, +1 after a run of successes,
//!   between the profile's floor and ceiling;
//! - a "paused until" instant set from `Retry-After` or `X-RateLimit-Remaining: 0` +
//!   `X-RateLimit-Reset`: nobody sends to the host before it.
//!
//! [`LimiterRegistry`] hands out one limiter per host; [`LimiterRegistry::global`] is the
//! process-wide registry every `FhirClient` uses unless given another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::profile::RateLimitSettings;

/// Successes in a row before the concurrency limit grows by one.
const GROW_AFTER: u32 = 20;

#[derive(Debug)]
struct State {
    /// GCRA theoretical arrival time.
    tat: Instant,
    interval: Option<Duration>,
    burst: u32,
    limit: u32,
    min_limit: u32,
    max_limit: u32,
    in_flight: u32,
    successes: u32,
    paused_until: Option<Instant>,
    throttled: u64,
}

enum Pace {
    Pause(Duration),
    SleepUntil(Instant),
    Go,
}

/// The limiter of one host.
#[derive(Debug)]
pub struct HostLimiter {
    host: String,
    state: Mutex<State>,
    notify: Notify,
}

/// A slot in the host's concurrency limit; released on drop.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<HostLimiter>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Ok(mut s) = self.limiter.state.lock() {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
        self.limiter.notify.notify_waiters();
    }
}

/// What a response says about the host's load, for [`HostLimiter::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A normal answer.
    Success,
    /// 429 or 503: back off.
    Throttled,
    /// Any other failure: neither grow nor shrink.
    Neutral,
}

impl HostLimiter {
    pub fn new(host: impl Into<String>, settings: &RateLimitSettings) -> Self {
        let max_limit = settings.max_concurrency.max(1);
        let min_limit = settings.min_concurrency.clamp(1, max_limit);
        Self {
            host: host.into(),
            state: Mutex::new(State {
                tat: Instant::now(),
                interval: interval_for(settings.requests_per_sec),
                burst: settings.burst.max(1),
                limit: max_limit,
                min_limit,
                max_limit,
                in_flight: 0,
                successes: 0,
                paused_until: None,
                throttled: 0,
            }),
            notify: Notify::new(),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Waits for a concurrency slot, then for any pause, then for the pacing slot.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if s.in_flight < s.limit {
                    s.in_flight += 1;
                    break;
                }
            }
            notified.await;
        }
        let permit = Permit {
            limiter: Arc::clone(self),
        };
        // Pause (Retry-After) first, then pacing; re-check the pause after sleeping in case
        // another request set a new one meanwhile.
        loop {
            let action = {
                let mut s = self.lock();
                let now = Instant::now();
                if let Some(p) = s.paused_until.filter(|p| *p > now) {
                    Pace::Pause(p - now)
                } else {
                    s.paused_until = None;
                    match s.interval {
                        None => Pace::Go,
                        Some(iv) => {
                            let t = s.tat.max(now);
                            s.tat = t + iv;
                            let tolerance = iv * (s.burst - 1);
                            match t.checked_sub(tolerance) {
                                Some(at) if at > now => Pace::SleepUntil(at),
                                _ => Pace::Go,
                            }
                        }
                    }
                }
            };
            match action {
                Pace::Pause(d) => tokio::time::sleep(d).await,
                // The pacing slot is reserved: sleep, then go without re-queuing.
                Pace::SleepUntil(at) => {
                    tokio::time::sleep_until(at).await;
                    break;
                }
                Pace::Go => break,
            }
        }
        permit
    }

    /// Feeds back what a response said about the host (AIMD).
    pub fn observe(&self, signal: Signal) {
        let mut s = self.lock();
        match signal {
            Signal::Success => {
                s.successes += 1;
                if s.successes >= GROW_AFTER && s.limit < s.max_limit {
                    s.limit += 1;
                    s.successes = 0;
                }
            }
            Signal::Throttled => {
                s.throttled += 1;
                s.successes = 0;
                s.limit = (s.limit / 2).max(s.min_limit);
            }
            Signal::Neutral => s.successes = 0,
        }
        drop(s);
        self.notify.notify_waiters();
    }

    /// Nobody sends to this host for `duration` (from now). A shorter pause never shortens a
    /// longer one already in force.
    pub fn pause_for(&self, duration: Duration) {
        let until = Instant::now() + duration;
        let mut s = self.lock();
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
    }

    /// Time left on the current pause, if any.
    pub fn paused_for(&self) -> Option<Duration> {
        let s = self.lock();
        s.paused_until
            .and_then(|p| p.checked_duration_since(Instant::now()))
    }

    /// The current adaptive concurrency limit.
    pub fn concurrency_limit(&self) -> u32 {
        self.lock().limit
    }

    /// How many throttling signals this host has sent.
    pub fn throttled(&self) -> u64 {
        self.lock().throttled
    }

    /// Changes the pace and ceiling (e.g. a later connection's profile for the same host is
    /// stricter: the strictest wins).
    pub fn tighten(&self, settings: &RateLimitSettings) {
        let mut s = self.lock();
        if let Some(iv) = interval_for(settings.requests_per_sec) {
            if s.interval.is_none_or(|cur| iv > cur) {
                s.interval = Some(iv);
            }
        }
        let max = settings.max_concurrency.max(1);
        if max < s.max_limit {
            s.max_limit = max;
            s.limit = s.limit.min(max);
            s.min_limit = s.min_limit.min(max);
        }
        s.burst = s.burst.min(settings.burst.max(1));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another task panicked mid-update of plain numbers.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn interval_for(rate: f64) -> Option<Duration> {
    (rate.is_finite() && rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate))
}

/// One limiter per host.
#[derive(Debug, Default)]
pub struct LimiterRegistry {
    hosts: Mutex<HashMap<String, Arc<HostLimiter>>>,
}

impl LimiterRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide registry.
    pub fn global() -> Arc<LimiterRegistry> {
        static GLOBAL: OnceLock<Arc<LimiterRegistry>> = OnceLock::new();
        Arc::clone(GLOBAL.get_or_init(|| Arc::new(LimiterRegistry::new())))
    }

    /// The limiter for `host` (host[:port]); created with `settings` on first use, tightened to
    /// the strictest settings seen afterwards.
    pub fn for_host(&self, host: &str, settings: &RateLimitSettings) -> Arc<HostLimiter> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = hosts.get(host) {
            l.tighten(settings);
            return Arc::clone(l);
        }
        let l = Arc::new(HostLimiter::new(host, settings));
        hosts.insert(host.to_string(), Arc::clone(&l));
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(rate: f64, burst: u32, conc: u32) -> RateLimitSettings {
        RateLimitSettings {
            requests_per_sec: rate,
            burst,
            max_concurrency: conc,
            min_concurrency: 1,
        }
    }

    #[tokio::test]
    async fn pacing_spaces_requests_at_the_rate() {
        let l = Arc::new(HostLimiter::new("h", &settings(50.0, 1, 4)));
        let start = Instant::now();
        for _ in 0..11 {
            drop(l.acquire().await);
        }
        let el = start.elapsed();
        assert!(el >= Duration::from_millis(190), "{el:?}");
        assert!(el < Duration::from_millis(600), "{el:?}");
    }

    #[tokio::test]
    async fn throttling_halves_and_successes_grow_the_limit() {
        let l = HostLimiter::new("h", &settings(0.0, 1, 8));
        assert_eq!(l.concurrency_limit(), 8);
        l.observe(Signal::Throttled);
        assert_eq!(l.concurrency_limit(), 4);
        l.observe(Signal::Throttled);
        l.observe(Signal::Throttled);
        l.observe(Signal::Throttled);
        assert_eq!(l.concurrency_limit(), 1);
        for _ in 0..GROW_AFTER {
            l.observe(Signal::Success);
        }
        assert_eq!(l.concurrency_limit(), 2);
    }

    #[tokio::test]
    async fn concurrency_limit_is_enforced() {
        let l = Arc::new(HostLimiter::new("h", &settings(0.0, 1, 2)));
        let a = l.acquire().await;
        let _b = l.acquire().await;
        let l2 = Arc::clone(&l);
        let waiter = tokio::spawn(async move { l2.acquire().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(a);
        let p = tokio::time::timeout(Duration::from_secs(1), waiter).await;
        assert!(p.is_ok());
    }

    #[tokio::test]
    async fn pause_delays_everybody() {
        let l = Arc::new(HostLimiter::new("h", &settings(0.0, 1, 4)));
        l.pause_for(Duration::from_millis(200));
        let start = Instant::now();
        drop(l.acquire().await);
        assert!(start.elapsed() >= Duration::from_millis(190));
    }

    #[test]
    fn registry_shares_one_limiter_per_host_and_keeps_the_strictest() {
        let r = LimiterRegistry::new();
        let a = r.for_host("h:1", &settings(10.0, 5, 8));
        let b = r.for_host("h:1", &settings(10.0, 5, 2));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.concurrency_limit(), 2);
        let c = r.for_host("other:1", &settings(10.0, 5, 8));
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
