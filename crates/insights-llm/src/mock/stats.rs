//! What the mock has served, overall and per lead (`GET /stats`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Counters of one lead. `requests` counts arrivals; `ok + failed` counts answered requests, so
/// the two differ only while requests are in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadStats {
    pub requests: u64,
    /// Valid insights served.
    pub ok: u64,
    /// Every injected fault: `server_errors + rate_limited + malformed + outage`.
    pub failed: u64,
    pub server_errors: u64,
    pub rate_limited: u64,
    pub malformed: u64,
    pub outage: u64,
}

/// The `/stats` document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockStats {
    /// Chat-completion requests received (including unparseable ones).
    pub total: u64,
    pub ok: u64,
    pub failed: u64,
    pub server_errors: u64,
    pub rate_limited: u64,
    pub malformed: u64,
    pub outage: u64,
    /// Requests whose body was not a chat-completion request (HTTP 400).
    pub bad_requests: u64,
    /// Requests being answered right now (sleeping in their latency).
    pub in_flight: u64,
    pub peak_in_flight: u64,
    /// Keyed by lead id (from `user: "lead-<id>"`), or `"unknown"`.
    pub per_lead: BTreeMap<String, LeadStats>,
}

/// How a request ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    ServerError,
    RateLimited,
    Malformed,
    Outage,
}

/// Counters behind one short-lived lock; the lock is never held across an await.
#[derive(Default)]
pub(crate) struct Recorder {
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    inner: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    total: u64,
    bad_requests: u64,
    global: LeadStats,
    per_lead: HashMap<String, LeadStats>,
}

/// Arrival numbers handed out under the lock.
pub(crate) struct Arrival {
    /// This lead's 0-based request number.
    pub nth_for_lead: u64,
}

impl Recorder {
    pub(crate) fn arrive(&self, lead: &str) -> Arrival {
        let mut c = self.lock();
        c.total += 1;
        c.global.requests += 1;
        let stats = match c.per_lead.get_mut(lead) {
            Some(s) => s,
            None => c.per_lead.entry(lead.to_owned()).or_default(),
        };
        let nth_for_lead = stats.requests;
        stats.requests += 1;
        Arrival { nth_for_lead }
    }

    pub(crate) fn bad_request(&self) {
        let mut c = self.lock();
        c.total += 1;
        c.bad_requests += 1;
    }

    pub(crate) fn finish(&self, lead: &str, outcome: Outcome) {
        let mut c = self.lock();
        apply(&mut c.global, outcome);
        if let Some(s) = c.per_lead.get_mut(lead) {
            apply(s, outcome);
        }
    }

    /// Marks a request as in flight until the guard drops (also when the client hangs up and
    /// the handler future is dropped mid-sleep).
    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self)
    }

    pub(crate) fn current_in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn snapshot(&self) -> MockStats {
        let c = self.lock();
        MockStats {
            total: c.total,
            ok: c.global.ok,
            failed: c.global.failed,
            server_errors: c.global.server_errors,
            rate_limited: c.global.rate_limited,
            malformed: c.global.malformed,
            outage: c.global.outage,
            bad_requests: c.bad_requests,
            in_flight: self.in_flight.load(Ordering::SeqCst),
            peak_in_flight: self.peak_in_flight.load(Ordering::SeqCst),
            per_lead: c.per_lead.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }

    /// Zeroes every counter; the peak restarts from the requests in flight now.
    pub(crate) fn reset(&self) {
        let mut c = self.lock();
        *c = Counters::default();
        self.peak_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        // Counters stay consistent even if a holder panicked: every update is a few additions.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn apply(s: &mut LeadStats, outcome: Outcome) {
    match outcome {
        Outcome::Ok => s.ok += 1,
        Outcome::ServerError => s.server_errors += 1,
        Outcome::RateLimited => s.rate_limited += 1,
        Outcome::Malformed => s.malformed += 1,
        Outcome::Outage => s.outage += 1,
    }
    if outcome != Outcome::Ok {
        s.failed += 1;
    }
}

pub(crate) struct InFlight<'a>(&'a Recorder);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
