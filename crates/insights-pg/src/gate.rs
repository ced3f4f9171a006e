//! The connection gate: one prober at a time while a database does not answer.
//!
//! Why: during an outage every user of a pool (the store's loader and writer, the queue's fetch
//! loop, heartbeat and completer, the readiness probe) would otherwise reconnect on its own
//! schedule, and sqlx opens up to
//! `max_connections` connections at once, so the first second of an outage became a burst of
//! connection attempts. After a connection-class failure the gate closes for a jittered backoff;
//! while it is closed a call fails at once without touching the pool; once the backoff is over
//! exactly one caller goes through as the probe. A probe that reaches the database reopens the
//! gate for everyone at once (recovery does not wait for each caller's own backoff); a probe
//! that fails doubles the backoff, up to a cap short enough to notice a recovery quickly.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backoff::{Backoff, Jitter};

/// After a connection failure no call goes through for this long, doubling per failed probe up
/// to [`GATE_CAP`] (each wait drawn from `[3d/4, d]`: [`GATE_JITTER`]). The cap bounds how long
/// a recovered database waits for the next probe, so it leaves room in the worker's recovery
/// target (2 s after the fault clears) for one failed probe; one probe per [`GATE_CAP`] is also
/// what a long outage costs in connection attempts.
pub const GATE_BASE: Duration = Duration::from_millis(250);
pub const GATE_CAP: Duration = Duration::from_millis(1500);
/// Enough spread that several workers do not probe in lockstep, while the mean wait stays close
/// to the nominal one (each probe of a long outage is a connection attempt).
pub const GATE_JITTER: Jitter = Jitter::Down(0.25);
/// A probe that has not answered after this long no longer blocks the next (a call on a
/// blackholed connection only ends at its timeout).
pub const GATE_PROBE_PATIENCE: Duration = Duration::from_secs(2);

/// Backoff of a [`ConnectionGate`]. `Default`: [`GATE_BASE`], [`GATE_CAP`], [`GATE_JITTER`],
/// [`GATE_PROBE_PATIENCE`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatePolicy {
    /// The closed period: `base` after the first connection failure, doubling per failed probe
    /// up to `cap`, which is also the longest a recovered database waits for the next probe.
    pub backoff: Backoff,
    /// A probe that has not reported after this long stops blocking the next one: a call on a
    /// connection whose bytes vanish only ends at its timeout, and the database may be back
    /// meanwhile.
    pub probe_patience: Duration,
}

impl Default for GatePolicy {
    fn default() -> Self {
        Self {
            backoff: Backoff::new(GATE_BASE, GATE_CAP, GATE_JITTER),
            probe_patience: GATE_PROBE_PATIENCE,
        }
    }
}

/// Counters since the gate was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Times the gate went from open to closed.
    pub closed: u64,
    /// Probes let through while closed.
    pub probes: u64,
    /// Calls refused without touching the pool.
    pub refused: u64,
}

#[derive(Debug, Default)]
struct State {
    /// `Some` while closed: no caller before this instant, then one probe.
    closed_until: Option<Instant>,
    /// Connection failures since the gate was last open: the first closes it, each further one
    /// is a failed probe (the n of the backoff).
    failures: u32,
    /// The probe in flight: its number and when it was let through.
    probe: Option<(u64, Instant)>,
    stats: GateStats,
}

/// One gate per pool; share it behind the owner's `Arc`.
#[derive(Debug)]
pub struct ConnectionGate {
    name: &'static str,
    policy: GatePolicy,
    state: Mutex<State>,
    reopened: Notify,
    closed: Notify,
}

/// Permission for one call. Report how it went with [`GateTicket::record`]; dropping it
/// unreported (the call was cancelled) frees the probe slot without changing the backoff.
#[derive(Debug)]
pub struct GateTicket<'a> {
    gate: &'a ConnectionGate,
    /// The probe's number when this call is the probe.
    probe: Option<u64>,
    reported: bool,
}

impl ConnectionGate {
    /// `name` says which database in logs ("app database").
    pub fn new(name: &'static str, policy: GatePolicy) -> Self {
        Self {
            name,
            policy,
            state: Mutex::new(State::default()),
            reopened: Notify::new(),
            closed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data; a panic elsewhere cannot leave it half-updated in a harmful way.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Ok`: go ahead (as the probe when the gate is closed). `Err(wait)`: the database is
    /// presumed down; nothing was attempted, and the gate will not let anyone through for about
    /// `wait`.
    pub fn enter(&self) -> Result<GateTicket<'_>, Duration> {
        let now = Instant::now();
        let mut st = self.lock();
        let Some(until) = st.closed_until else {
            return Ok(self.ticket(None));
        };
        if now < until {
            st.stats.refused += 1;
            return Err(until - now);
        }
        if let Some((_, since)) = st.probe {
            let waited = now.saturating_duration_since(since);
            if waited < self.policy.probe_patience {
                st.stats.refused += 1;
                return Err(self.policy.probe_patience - waited);
            }
        }
        st.stats.probes += 1;
        let number = st.stats.probes;
        st.probe = Some((number, now));
        Ok(self.ticket(Some(number)))
    }

    fn ticket(&self, probe: Option<u64>) -> GateTicket<'_> {
        GateTicket {
            gate: self,
            probe,
            reported: false,
        }
    }

    /// No connection failure outstanding: calls go straight through.
    pub fn is_open(&self) -> bool {
        self.lock().closed_until.is_none()
    }

    pub fn stats(&self) -> GateStats {
        self.lock().stats
    }

    /// Resolves once the gate is open (at once if it is).
    pub async fn wait_open(&self) {
        loop {
            let reopened = self.reopened.notified();
            tokio::pin!(reopened);
            reopened.as_mut().enable();
            if self.is_open() {
                return;
            }
            reopened.await;
        }
    }

    /// Resolves when the gate goes from open to closed after this future was first polled,
    /// with how long it stays closed. Race a connection checkout against it: a call still
    /// waiting for a connection when an outage is detected gives up instead of adding a
    /// connection attempt. (A probe runs on a closed gate, so it is not interrupted.)
    pub async fn closes(&self) -> Duration {
        self.closed.notified().await;
        let now = Instant::now();
        self.lock()
            .closed_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    /// The database answered (a result, or an error that is not about the connection).
    fn reached(&self, probe: Option<u64>) {
        let mut st = self.lock();
        if probe.is_some() && st.probe.map(|p| p.0) == probe {
            st.probe = None;
        }
        st.failures = 0;
        if st.closed_until.take().is_some() {
            st.probe = None;
            drop(st);
            tracing::info!(
                database = self.name,
                "database answers again: connection gate open"
            );
            self.reopened.notify_waiters();
        }
    }

    /// The call failed for connection reasons.
    fn failed(&self, probe: Option<u64>) {
        let now = Instant::now();
        let mut st = self.lock();
        let current_probe = probe.is_some() && st.probe.map(|p| p.0) == probe;
        if st.closed_until.is_some() && !current_probe {
            // A call that started before the gate closed: the same outage, already counted.
            return;
        }
        let was_open = st.closed_until.is_none();
        st.failures = st.failures.saturating_add(1);
        let wait = self.policy.backoff.delay(st.failures);
        st.closed_until = Some(now + wait);
        st.probe = None;
        if was_open {
            st.stats.closed += 1;
            drop(st);
            self.closed.notify_waiters();
            tracing::warn!(
                database = self.name,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "database unreachable: connection gate closed, one probe at a time until it answers"
            );
        }
    }

    fn abandoned(&self, probe: Option<u64>) {
        let mut st = self.lock();
        if probe.is_some() && st.probe.map(|p| p.0) == probe {
            st.probe = None;
        }
    }
}

impl GateTicket<'_> {
    /// Reports the call: `connection_failed` for connection-class errors (the database or the
    /// pooler unreachable, a call timeout); `false` for a result or any other error.
    pub fn record(mut self, connection_failed: bool) {
        self.reported = true;
        if connection_failed {
            self.gate.failed(self.probe);
        } else {
            self.gate.reached(self.probe);
        }
    }

    /// Whether this call is the gate's probe.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }
}

impl Drop for GateTicket<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.gate.abandoned(self.probe);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(250);
    const CAP: Duration = Duration::from_secs(2);
    const PATIENCE: Duration = Duration::from_secs(3);

    fn gate() -> ConnectionGate {
        ConnectionGate::new(
            "test database",
            GatePolicy {
                backoff: Backoff::new(BASE, CAP, GATE_JITTER),
                probe_patience: PATIENCE,
            },
        )
    }

    /// Closes the gate with one failure and returns how long it stays closed.
    fn close(g: &ConnectionGate) -> Duration {
        g.enter().expect("open").record(true);
        g.enter().expect_err("closed right after a failure")
    }

    #[tokio::test(start_paused = true)]
    async fn open_gate_lets_everyone_through() {
        let g = gate();
        let a = g.enter().unwrap();
        let b = g.enter().unwrap();
        assert!(!a.is_probe() && !b.is_probe());
        a.record(false);
        b.record(false);
        assert!(g.is_open());
        assert_eq!(g.stats(), GateStats::default());
    }

    #[tokio::test(start_paused = true)]
    async fn closed_gate_refuses_then_lets_exactly_one_probe() {
        let g = gate();
        let wait = close(&g);
        assert!(wait >= BASE * 3 / 4 && wait <= BASE, "{wait:?}");
        for _ in 0..10 {
            assert!(g.enter().is_err(), "refused while closed");
        }
        tokio::time::advance(wait).await;
        let probe = g.enter().expect("the backoff is over: one probe");
        assert!(probe.is_probe());
        for _ in 0..10 {
            assert!(g.enter().is_err(), "one probe at a time");
        }
        probe.record(false);
        assert!(g.is_open());
        let after = g.enter().unwrap();
        assert!(!after.is_probe(), "open for everyone at once");
        let s = g.stats();
        assert_eq!((s.closed, s.probes, s.refused), (1, 1, 21));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probes_double_the_wait_up_to_the_cap() {
        let g = gate();
        let mut wait = close(&g);
        let mut nominal = BASE;
        for _ in 0..8 {
            assert!(
                wait >= nominal * 3 / 4 && wait <= nominal,
                "{wait:?} outside [{:?}, {nominal:?}]",
                nominal * 3 / 4
            );
            tokio::time::advance(wait).await;
            g.enter().expect("probe").record(true);
            wait = g.enter().expect_err("closed again");
            nominal = (nominal * 2).min(CAP);
        }
        assert_eq!(nominal, CAP);
        assert_eq!(g.stats().closed, 1, "one outage");
    }

    #[tokio::test(start_paused = true)]
    async fn closed_periods_are_the_policy_backoff_waits() {
        let g = ConnectionGate::new(
            "test database",
            GatePolicy {
                backoff: Backoff::new(BASE, CAP, Jitter::None),
                probe_patience: PATIENCE,
            },
        );
        let mut waits = vec![close(&g)];
        for _ in 0..4 {
            tokio::time::advance(*waits.last().unwrap()).await;
            g.enter().expect("probe").record(true);
            waits.push(g.enter().expect_err("closed again"));
        }
        assert_eq!(waits, [BASE, BASE * 2, BASE * 4, CAP, CAP]);
        let default = GatePolicy::default().backoff;
        assert_eq!(
            (default.base, default.cap, default.jitter),
            (GATE_BASE, GATE_CAP, Jitter::Down(0.25))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn late_failures_of_calls_started_before_do_not_extend_the_wait() {
        let g = gate();
        let early = g.enter().unwrap();
        let wait = close(&g);
        early.record(true);
        assert_eq!(g.enter().unwrap_err(), wait, "unchanged");
        tokio::time::advance(wait).await;
        assert!(g.enter().unwrap().is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_success_reopens() {
        let g = gate();
        let early = g.enter().unwrap();
        close(&g);
        early.record(false);
        assert!(g.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_frees_the_slot() {
        let g = gate();
        let wait = close(&g);
        tokio::time::advance(wait).await;
        drop(g.enter().unwrap());
        assert!(g.enter().unwrap().is_probe(), "next caller probes at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_probe_blocks_others_only_for_its_patience() {
        let g = gate();
        let wait = close(&g);
        tokio::time::advance(wait).await;
        let hanging = g.enter().unwrap();
        tokio::time::advance(PATIENCE - Duration::from_millis(1)).await;
        assert!(g.enter().is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        let second = g.enter().expect("patience exhausted: another probe");
        assert!(second.is_probe());
        // The stale probe's late failure must not clear the new probe's slot.
        hanging.record(true);
        assert!(g.enter().is_err());
        second.record(false);
        assert!(g.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn calls_waiting_for_a_connection_learn_that_the_gate_closed() {
        let g = std::sync::Arc::new(gate());
        let waiting = tokio::spawn({
            let g = g.clone();
            async move { g.closes().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let wait = close(&g);
        let told = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(told, wait);
        // A probe on the closed gate is not interrupted by failures of late calls.
        tokio::time::advance(wait).await;
        let probe = g.enter().unwrap();
        let watch = tokio::spawn({
            let g = g.clone();
            async move { g.closes().await }
        });
        tokio::task::yield_now().await;
        probe.record(true);
        tokio::task::yield_now().await;
        assert!(!watch.is_finished(), "still closed, not a new closing");
        watch.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_wake_when_the_probe_succeeds() {
        let g = std::sync::Arc::new(gate());
        let wait = close(&g);
        let waiter = tokio::spawn({
            let g = g.clone();
            async move { g.wait_open().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        tokio::time::advance(wait).await;
        g.enter().unwrap().record(false);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .unwrap();
    }
}
