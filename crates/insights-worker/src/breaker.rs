//! Circuit breaker over the two things every job needs, the app database and the LLM
//! endpoint. Each has its own count: after `threshold` consecutive connection errors (database)
//! or outage errors (LLM: connect errors, timeouts, 5xx after the client's inline retries) it
//! stops the worker from fetching more jobs (through the queue's fetch control) for a growing,
//! jittered pause, so an outage costs a few probes instead of a storm of failing jobs.
//!
//! - Database: once the pause is over, the next job's load is the probe; any success closes it.
//! - LLM: once the pause is over, [`Breaker::llm_permit`] lets one request through at a time
//!   (the probe); every other job snoozes without calling the endpoint. Any answer from the
//!   endpoint (even an error that is the request's own) closes it; another outage error trips
//!   it again with a longer pause. Nothing reaches the endpoint during a pause, so the LLM
//!   side's pauses ([`LLM_PROBE_PAUSE`]) are short: they are its probe interval.
//!
//! [`Breaker::is_open`] covers both causes (`/readyz` is not ready while either is open).
//! Fetching stays paused until the latest pause of any cause (or a quota pause) ends.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use insights_pg::Backoff;

use crate::defaults::{BREAKER_PAUSE, LLM_PROBE_PAUSE};

/// What the breaker acts on: the queue's fetch loop. Implemented for
/// `insights_queue::FetchControl`; tests use a fake.
pub trait FetchGate: Send + Sync + 'static {
    /// Stop fetching new jobs for `pause` (in-flight jobs continue), replacing an earlier pause.
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

/// One cause's count and pause.
#[derive(Debug, Default)]
struct Cause {
    consecutive: u32,
    /// Trips since the last success: which wait of the backoff the next pause is.
    trips: u32,
    open: bool,
    paused_until: Option<Instant>,
    total_trips: u64,
}

impl Cause {
    /// The pause's end while it runs (only while open).
    fn pausing(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|u| self.open && now < *u)
    }
}

#[derive(Debug, Default)]
struct State {
    db: Cause,
    llm: Cause,
    /// The LLM probe in flight, by number: other jobs wait for its answer.
    llm_probe: Option<u64>,
    /// Probes handed out so far (numbers the next one).
    llm_probes: u64,
    /// End of a pause asked for by [`Breaker::pause_for`] (quota, credentials).
    other_pause_until: Option<Instant>,
}

impl State {
    /// The end of the longest pause still running, over every cause.
    fn fetch_paused_until(&self, now: Instant) -> Option<Instant> {
        [
            self.db.pausing(now),
            self.llm.pausing(now),
            self.other_pause_until.filter(|u| now < *u),
        ]
        .into_iter()
        .flatten()
        .max()
    }
}

/// Which of the two dependencies a count is about (logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Db,
    Llm,
}

impl Which {
    fn cause<'a>(&self, st: &'a mut State) -> &'a mut Cause {
        match self {
            Which::Db => &mut st.db,
            Which::Llm => &mut st.llm,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Which::Db => "database connection errors",
            Which::Llm => "LLM endpoint unreachable",
        }
    }
}

/// May this job call the LLM now?
#[derive(Debug)]
pub enum LlmPermit {
    /// The endpoint is presumed up.
    Go,
    /// The breaker is open and this job is the one probe; dropping the permit without an
    /// answer recorded lets the next job probe.
    Probe(ProbeGuard),
    /// The endpoint is presumed down (pause running or a probe in flight): come back after
    /// about this long without calling it.
    Wait(Duration),
}

/// Held by the job probing the LLM endpoint; frees the probe slot when dropped (unless an
/// answer already freed it and a later probe holds it).
#[derive(Debug)]
pub struct ProbeGuard {
    breaker: Breaker,
    probe: u64,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        let mut st = self.breaker.lock();
        if st.llm_probe == Some(self.probe) {
            st.llm_probe = None;
        }
    }
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
    /// Pauses of the database side.
    pauses: Backoff,
    /// Pauses of the LLM side: also its probe interval (see [`LLM_PROBE_PAUSE`]).
    llm_pauses: Backoff,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("threshold", &self.threshold)
            .field("db_open", &self.is_db_open())
            .field("llm_open", &self.is_llm_open())
            .finish()
    }
}

impl Breaker {
    /// `threshold` consecutive errors of one cause trip the breaker (0 is treated as 1).
    pub fn new(threshold: u32, gate: Arc<dyn FetchGate>) -> Self {
        Self::with_pauses(threshold, gate, BREAKER_PAUSE)
    }

    /// As [`Breaker::new`] with an explicit schedule of pauses for the database side (the n-th
    /// trip since the last success pauses `pauses.delay(n)`).
    pub fn with_pauses(threshold: u32, gate: Arc<dyn FetchGate>, pauses: Backoff) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            gate,
            clock: Arc::new(Instant::now),
            threshold: threshold.max(1),
            pauses,
            llm_pauses: LLM_PROBE_PAUSE,
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

    /// A job reached the database fine: close the database side and fetch again (unless the
    /// LLM side still holds fetching).
    pub fn record_success(&self) {
        self.record_up(Which::Db);
    }

    /// A job hit a database connection error. Returns the pause when this error tripped the
    /// breaker. Errors arriving while a pause is still running only count: in-flight jobs
    /// failing together are one outage, not many.
    pub fn record_connection_error(&self) -> Option<Duration> {
        self.record_down(Which::Db)
    }

    /// The LLM endpoint answered (whatever it said): close the LLM side.
    pub fn record_llm_answer(&self) {
        self.record_up(Which::Llm);
    }

    /// An LLM call ended in an outage error ([`insights_llm::LlmError::is_outage`]). Returns
    /// the pause when this error tripped the breaker.
    pub fn record_llm_outage(&self) -> Option<Duration> {
        self.record_down(Which::Llm)
    }

    /// Whether a job may call the LLM now; see [`LlmPermit`].
    pub fn llm_permit(&self) -> LlmPermit {
        let now = (self.clock)();
        let mut st = self.lock();
        if !st.llm.open {
            return LlmPermit::Go;
        }
        if let Some(until) = st.llm.pausing(now) {
            return LlmPermit::Wait(until - now);
        }
        if st.llm_probe.is_some() {
            return LlmPermit::Wait(Duration::ZERO);
        }
        st.llm_probes += 1;
        let probe = st.llm_probes;
        st.llm_probe = Some(probe);
        drop(st);
        tracing::info!("LLM endpoint presumed down: one probe request goes through");
        LlmPermit::Probe(ProbeGuard {
            breaker: self.clone(),
            probe,
        })
    }

    fn record_up(&self, which: Which) {
        let now = (self.clock)();
        let mut st = self.lock();
        if which == Which::Llm {
            st.llm_probe = None;
        }
        let cause = which.cause(&mut st);
        cause.consecutive = 0;
        cause.trips = 0;
        if !cause.open {
            return;
        }
        cause.open = false;
        cause.paused_until = None;
        let still = st.fetch_paused_until(now);
        drop(st);
        tracing::info!(
            cause = which.describe(),
            "circuit breaker closed: answered again, fetching resumes"
        );
        match still {
            Some(until) => self.gate.pause_for(until - now),
            None => self.gate.resume(),
        }
    }

    fn record_down(&self, which: Which) -> Option<Duration> {
        let now = (self.clock)();
        let mut st = self.lock();
        if which == Which::Llm {
            st.llm_probe = None;
        }
        let cause = which.cause(&mut st);
        cause.consecutive = cause.consecutive.saturating_add(1);
        if cause.consecutive < self.threshold || cause.pausing(now).is_some() {
            return None;
        }
        cause.trips = cause.trips.saturating_add(1);
        let pauses = match which {
            Which::Db => self.pauses,
            Which::Llm => self.llm_pauses,
        };
        let pause = pauses.delay(cause.trips);
        cause.total_trips += 1;
        cause.open = true;
        cause.paused_until = Some(now + pause);
        let consecutive = cause.consecutive;
        let until = st.fetch_paused_until(now).unwrap_or(now + pause);
        drop(st);
        tracing::warn!(
            cause = which.describe(),
            consecutive_errors = consecutive,
            pause_ms = pause.as_millis() as u64,
            "circuit breaker open: fetching paused"
        );
        self.gate.pause_for(until - now);
        Some(pause)
    }

    /// Pause fetching for a reason other than an outage (LLM quota, credentials). Does not
    /// open the breaker (readiness stays green: the dependencies answer).
    pub fn pause_for(&self, reason: &str, pause: Duration) {
        let now = (self.clock)();
        let mut st = self.lock();
        let mine = now + pause;
        st.other_pause_until = Some(st.other_pause_until.map_or(mine, |u| u.max(mine)));
        let until = st.fetch_paused_until(now).unwrap_or(mine);
        drop(st);
        tracing::warn!(
            reason,
            pause_ms = pause.as_millis() as u64,
            "fetching paused"
        );
        self.gate.pause_for(until - now);
    }

    /// Open (either cause) from a trip until the next success of that cause.
    pub fn is_open(&self) -> bool {
        let st = self.lock();
        st.db.open || st.llm.open
    }

    /// The database side is open.
    pub fn is_db_open(&self) -> bool {
        self.lock().db.open
    }

    /// The LLM side is open.
    pub fn is_llm_open(&self) -> bool {
        self.lock().llm.open
    }

    /// Time left in the database pause: while it runs, the database is presumed down and the
    /// handler does not try it (after it, one probe decides: success closes, failure re-trips).
    pub fn pause_remaining(&self) -> Option<Duration> {
        let now = (self.clock)();
        self.paused_until()
            .map(|until| until.saturating_duration_since(now))
    }

    /// When the current database pause ends, while one runs.
    pub fn paused_until(&self) -> Option<Instant> {
        let now = (self.clock)();
        self.lock().db.pausing(now)
    }

    /// Consecutive database connection errors so far.
    pub fn consecutive_errors(&self) -> u32 {
        self.lock().db.consecutive
    }

    /// How many times the breaker tripped since start (both causes).
    pub fn total_trips(&self) -> u64 {
        let st = self.lock();
        st.db.total_trips + st.llm.total_trips
    }
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
        assert!(pauses.iter().all(|p| *p <= BREAKER_PAUSE.cap));
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
    fn llm_outages_trip_then_one_probe_at_a_time_until_the_endpoint_answers() {
        let (b, gate, clock) = breaker(3);
        assert!(matches!(b.llm_permit(), LlmPermit::Go));
        b.record_llm_outage();
        b.record_llm_outage();
        assert!(!b.is_open());
        let pause = b.record_llm_outage().expect("third outage error trips");
        assert!(b.is_open() && b.is_llm_open() && !b.is_db_open());
        assert_eq!(gate.pauses.load(Ordering::SeqCst), 1);
        // While the pause runs nobody calls the endpoint.
        assert!(matches!(b.llm_permit(), LlmPermit::Wait(w) if w == pause));
        clock.advance(pause + Duration::from_millis(1));
        // After it, exactly one probe at a time.
        let probe = b.llm_permit();
        assert!(matches!(probe, LlmPermit::Probe(_)));
        assert!(matches!(b.llm_permit(), LlmPermit::Wait(_)));
        // A probe that ends without an answer (job cancelled) frees the slot.
        drop(probe);
        let probe = b.llm_permit();
        assert!(matches!(probe, LlmPermit::Probe(_)));
        // The probe met the outage again: a longer pause, no probe until it ends.
        let second = b.record_llm_outage().expect("a failed probe re-trips");
        drop(probe);
        assert!(second >= LLM_PROBE_PAUSE.ceiling(2).mul_f64(0.75));
        assert!(
            second <= LLM_PROBE_PAUSE.cap,
            "the probe interval stays short: {second:?}"
        );
        assert!(matches!(b.llm_permit(), LlmPermit::Wait(_)));
        clock.advance(second + Duration::from_millis(1));
        let probe = b.llm_permit();
        // The endpoint answers: closed, fetching resumes, everyone may call.
        b.record_llm_answer();
        assert!(!b.is_open());
        assert_eq!(gate.resumes.load(Ordering::SeqCst), 1);
        assert!(matches!(b.llm_permit(), LlmPermit::Go));
        assert_eq!(b.total_trips(), 2);

        // A later probe is not freed by an earlier probe's guard ending (its job was still
        // writing).
        b.record_llm_outage();
        b.record_llm_outage();
        let third = b.record_llm_outage().expect("trips again");
        clock.advance(third + Duration::from_millis(1));
        let later = b.llm_permit();
        assert!(matches!(later, LlmPermit::Probe(_)));
        drop(probe);
        assert!(matches!(b.llm_permit(), LlmPermit::Wait(_)));
        drop(later);
        assert!(matches!(b.llm_permit(), LlmPermit::Probe(_)));
    }

    #[test]
    fn one_cause_closing_keeps_fetching_paused_for_the_other() {
        let (b, gate, _clock) = breaker(1);
        let db_pause = b.record_connection_error().expect("trips");
        b.pause_for("llm quota", Duration::from_secs(60));
        // The longer pause wins.
        assert_eq!(gate.last_pause_ms.load(Ordering::SeqCst), 60_000);
        assert!(db_pause < Duration::from_secs(60));
        b.record_success();
        assert!(!b.is_open());
        // The database is back, but the quota pause still holds fetching.
        assert_eq!(gate.resumes.load(Ordering::SeqCst), 0);
        assert_eq!(gate.last_pause_ms.load(Ordering::SeqCst), 60_000);

        let (b, gate, _clock) = breaker(1);
        b.record_llm_outage().expect("trips");
        b.record_connection_error().expect("trips");
        b.record_llm_answer();
        assert!(b.is_open(), "the database side is still open");
        assert_eq!(gate.resumes.load(Ordering::SeqCst), 0);
        b.record_success();
        assert_eq!(gate.resumes.load(Ordering::SeqCst), 1);
    }
}
