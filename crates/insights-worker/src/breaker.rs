//! Circuit breaker over the app database: after `threshold` consecutive connection errors it
//! stops the worker from fetching more jobs (through the queue's fetch control) for a growing,
//! jittered pause, so an outage costs a few probes instead of a storm of failing jobs. Any
//! success closes it again.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use std::time::Instant;

use crate::defaults::{BREAKER_BASE_PAUSE, BREAKER_MAX_PAUSE};

/// What the breaker acts on: the queue's fetch loop. Implemented for
/// `insights_queue::FetchControl`; tests use a fake.
pub trait FetchGate: Send + Sync + 'static {
    /// Stop fetching new jobs for `pause` (in-flight jobs continue).
    fn pause_for(&self, pause: Duration);
    /// Fetch again now.
    fn resume(&self);
}

impl FetchGate for insights_queue::FetchControl {
    fn pause_for(&self, pause: Duration) {
        insights_queue::FetchControl::pause_for(self, pause);
    }
    fn resume(&self) {
        insights_queue::FetchControl::resume(self);
    }
}

/// A gate that does nothing, for code paths without a fetch loop (the producer, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoGate;

impl FetchGate for NoGate {
    fn pause_for(&self, _pause: Duration) {}
    fn resume(&self) {}
}

#[derive(Debug, Default)]
struct State {
    consecutive: u32,
    /// Trips since the last success: the exponent of the pause.
    trips: u32,
    open: bool,
    paused_until: Option<Instant>,
    total_trips: u64,
}

/// The breaker's clock; injectable so tests control time.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Breaker {
    state: Arc<Mutex<State>>,
    gate: Arc<dyn FetchGate>,
    clock: Clock,
    threshold: u32,
    base: Duration,
    max: Duration,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("threshold", &self.threshold)
            .field("open", &self.is_open())
            .finish()
    }
}

impl Breaker {
    /// `threshold` consecutive connection errors trip the breaker (0 is treated as 1).
    pub fn new(threshold: u32, gate: Arc<dyn FetchGate>) -> Self {
        Self::with_pauses(threshold, gate, BREAKER_BASE_PAUSE, BREAKER_MAX_PAUSE)
    }

    /// As [`Breaker::new`] with explicit first and largest pause.
    pub fn with_pauses(
        threshold: u32,
        gate: Arc<dyn FetchGate>,
        base: Duration,
        max: Duration,
    ) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            gate,
            clock: Arc::new(Instant::now),
            threshold: threshold.max(1),
            base,
            max: max.max(base),
        }
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of plain counters;
        // the state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A job reached the database fine: close the breaker and fetch again.
    pub fn record_success(&self) {
        let mut st = self.lock();
        st.consecutive = 0;
        st.trips = 0;
        if st.open {
            st.open = false;
            st.paused_until = None;
            drop(st);
            tracing::info!("circuit breaker closed: the database answers again, fetching resumes");
            self.gate.resume();
        }
    }

    /// A job hit a connection error. Returns the pause when this error tripped the breaker.
    /// Errors arriving while a pause is still running only count: in-flight jobs failing
    /// together are one outage, not many.
    pub fn record_connection_error(&self) -> Option<Duration> {
        let now = (self.clock)();
        let mut st = self.lock();
        st.consecutive = st.consecutive.saturating_add(1);
        if st.consecutive < self.threshold {
            return None;
        }
        if let Some(until) = st.paused_until
            && now < until
        {
            return None;
        }
        let pause = jittered(backoff(self.base, self.max, st.trips));
        st.trips = st.trips.saturating_add(1);
        st.total_trips += 1;
        st.open = true;
        st.paused_until = Some(now + pause);
        let consecutive = st.consecutive;
        drop(st);
        tracing::warn!(
            consecutive_errors = consecutive,
            pause_ms = pause.as_millis() as u64,
            "circuit breaker open: database connection errors, fetching paused"
        );
        self.gate.pause_for(pause);
        Some(pause)
    }

    /// Pause fetching for a reason other than the database (LLM quota). Does not open the
    /// breaker (readiness stays green: the database is fine).
    pub fn pause_for(&self, reason: &str, pause: Duration) {
        tracing::warn!(
            reason,
            pause_ms = pause.as_millis() as u64,
            "fetching paused"
        );
        self.gate.pause_for(pause);
    }

    /// Open from the trip until the next success.
    pub fn is_open(&self) -> bool {
        self.lock().open
    }

    /// Time left in the current pause: while it runs, the database is presumed down and the
    /// handler does not try it (after it, one probe decides: success closes, failure re-trips).
    pub fn pause_remaining(&self) -> Option<Duration> {
        let now = (self.clock)();
        self.paused_until()
            .map(|until| until.saturating_duration_since(now))
    }

    /// When the current pause ends, while one runs.
    pub fn paused_until(&self) -> Option<Instant> {
        let now = (self.clock)();
        let st = self.lock();
        match st.paused_until {
            Some(until) if st.open && now < until => Some(until),
            _ => None,
        }
    }

    /// Consecutive connection errors so far.
    pub fn consecutive_errors(&self) -> u32 {
        self.lock().consecutive
    }

    /// How many times the breaker tripped since start.
    pub fn total_trips(&self) -> u64 {
        self.lock().total_trips
    }
}

/// `base * 2^trips`, capped at `max`.
fn backoff(base: Duration, max: Duration, trips: u32) -> Duration {
    let factor = 1u32.checked_shl(trips.min(20)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

/// Equal jitter: half fixed, half random, so pauses grow but workers do not probe in lockstep.
fn jittered(d: Duration) -> Duration {
    let half = d / 2;
    let nanos = half.as_nanos().min(u128::from(u64::MAX)) as u64;
    if nanos == 0 {
        return d;
    }
    half + Duration::from_nanos(rand::random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    #[derive(Default)]
    struct FakeGate {
        pauses: AtomicUsize,
        last_pause_ms: AtomicU64,
        resumes: AtomicUsize,
    }

    impl FetchGate for FakeGate {
        fn pause_for(&self, pause: Duration) {
            self.pauses.fetch_add(1, Ordering::SeqCst);
            self.last_pause_ms
                .store(pause.as_millis() as u64, Ordering::SeqCst);
        }
        fn resume(&self) {
            self.resumes.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A clock that only moves when told to.
    #[derive(Clone)]
    struct FakeClock {
        base: Instant,
        offset_ms: Arc<AtomicU64>,
    }

    impl FakeClock {
        fn new() -> Self {
            Self {
                base: Instant::now(),
                offset_ms: Arc::new(AtomicU64::new(0)),
            }
        }
        fn advance(&self, d: Duration) {
            self.offset_ms
                .fetch_add(d.as_millis() as u64, Ordering::SeqCst);
        }
        fn clock(&self) -> Clock {
            let me = self.clone();
            Arc::new(move || me.base + Duration::from_millis(me.offset_ms.load(Ordering::SeqCst)))
        }
    }

    fn breaker(threshold: u32) -> (Breaker, Arc<FakeGate>, FakeClock) {
        let gate = Arc::new(FakeGate::default());
        let clock = FakeClock::new();
        let b = Breaker::new(threshold, gate.clone()).with_clock(clock.clock());
        (b, gate, clock)
    }

    #[test]
    fn trips_at_threshold_and_not_before() {
        let (b, gate, _clock) = breaker(3);
        assert_eq!(b.record_connection_error(), None);
        assert_eq!(b.record_connection_error(), None);
        assert!(!b.is_open());
        let pause = b.record_connection_error().expect("third error trips");
        assert!(b.is_open());
        assert_eq!(b.pause_remaining(), Some(pause));
        assert_eq!(gate.pauses.load(Ordering::SeqCst), 1);
        assert!(pause >= Duration::from_millis(500) && pause <= Duration::from_secs(1));
    }

    #[test]
    fn success_resets_and_resumes() {
        let (b, gate, _clock) = breaker(2);
        b.record_connection_error();
        b.record_success();
        assert_eq!(b.consecutive_errors(), 0);
        // Not open: a success must not call resume needlessly.
        assert_eq!(gate.resumes.load(Ordering::SeqCst), 0);
        b.record_connection_error();
        assert!(b.record_connection_error().is_some());
        b.record_success();
        assert!(!b.is_open());
        assert_eq!(gate.resumes.load(Ordering::SeqCst), 1);
        // After the reset the count starts over.
        assert_eq!(b.record_connection_error(), None);
    }

    #[test]
    fn errors_during_a_pause_do_not_retrip() {
        let (b, gate, _clock) = breaker(1);
        assert!(b.record_connection_error().is_some());
        for _ in 0..10 {
            assert_eq!(b.record_connection_error(), None);
        }
        assert_eq!(gate.pauses.load(Ordering::SeqCst), 1);
        // Once the pause is over the breaker is still open (no success yet) but lets a probe
        // through.
        _clock.advance(Duration::from_secs(2));
        assert!(b.is_open());
        assert_eq!(b.pause_remaining(), None);
    }

    #[test]
    fn pauses_grow_to_the_cap_with_jitter() {
        let (b, _gate, clock) = breaker(1);
        let mut pauses = Vec::new();
        for _ in 0..10 {
            let p = b
                .record_connection_error()
                .expect("each error after a pause trips");
            pauses.push(p);
            clock.advance(p + Duration::from_millis(1));
        }
        // Nominal 1, 2, 4, 8, 16, 30, 30...: each within [nominal/2, nominal].
        let nominal = [1u64, 2, 4, 8, 16, 30, 30, 30, 30, 30];
        for (p, n) in pauses.iter().zip(nominal) {
            let n = Duration::from_secs(n);
            assert!(
                *p >= n / 2 && *p <= n,
                "pause {p:?} outside [{:?}, {n:?}]",
                n / 2
            );
        }
        assert!(pauses.iter().all(|p| *p <= BREAKER_MAX_PAUSE));
        assert_eq!(b.total_trips(), 10);
    }

    #[test]
    fn quota_pause_does_not_open() {
        let (b, gate, _clock) = breaker(3);
        b.pause_for("llm quota", Duration::from_secs(60));
        assert!(!b.is_open());
        assert_eq!(gate.last_pause_ms.load(Ordering::SeqCst), 60_000);
    }

    #[test]
    fn backoff_is_capped_and_never_overflows() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(30);
        assert_eq!(backoff(base, max, 0), base);
        assert_eq!(backoff(base, max, 3), Duration::from_secs(8));
        assert_eq!(backoff(base, max, 1000), max);
    }
}
