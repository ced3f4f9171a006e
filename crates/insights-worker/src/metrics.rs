//! In-process counters of the pipeline, job latency quantiles, the peak number of database
//! backends (sampled by the caller) and their Prometheus text rendering for `/metrics`.
//!
//! Lock-free counters for the hot path; the latency ring takes a short mutex per job, which is
//! negligible next to a database round trip.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::defaults::LATENCY_SAMPLES;

/// Why a job completed without an LLM call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The lead no longer exists.
    LeadGone,
    /// The lead has no messages.
    NoMessages,
    /// The load says the lead no longer wants an insight (for example it was unbooked).
    NotEligible,
    /// The stored insight already covers the latest message.
    Fresh,
}

impl SkipReason {
    pub const ALL: [SkipReason; 4] = [
        SkipReason::LeadGone,
        SkipReason::NoMessages,
        SkipReason::NotEligible,
        SkipReason::Fresh,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::LeadGone => "lead_gone",
            SkipReason::NoMessages => "no_messages",
            SkipReason::NotEligible => "not_eligible",
            SkipReason::Fresh => "fresh",
        }
    }

    fn index(self) -> usize {
        match self {
            SkipReason::LeadGone => 0,
            SkipReason::NoMessages => 1,
            SkipReason::NotEligible => 2,
            SkipReason::Fresh => 3,
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Default)]
struct Counters {
    processed: AtomicU64,
    written: AtomicU64,
    skipped: [AtomicU64; 4],
    failed: AtomicU64,
    discarded: AtomicU64,
    retried: AtomicU64,
    snoozed: AtomicU64,
    connection_errors: AtomicU64,
    llm_outage_errors: AtomicU64,
    llm_calls: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    peak_backends: AtomicU64,
    last_backends: AtomicU64,
    /// Time spent per stage (sum, microseconds) and how many times each ran.
    stage_micros: [AtomicU64; 3],
    stage_count: [AtomicU64; 3],
}

/// A stage of the handler, for the per-stage mean times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Loading the conversation (connection wait included).
    Load,
    /// The LLM call (its inline retries included).
    Llm,
    /// Writing the insight (batching and retries included).
    Write,
}

#[derive(Debug)]
struct Ring {
    micros: Vec<u64>,
    next: usize,
}

/// Shared metrics (cheap `Clone`).
#[derive(Debug, Clone)]
pub struct Metrics {
    c: Arc<Counters>,
    latency: Arc<Mutex<Ring>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A point-in-time copy of every figure, for log lines, the demo summary and JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// Jobs that finished in any way (written, skipped, failed).
    pub processed: u64,
    pub written: u64,
    pub skipped: u64,
    pub skipped_lead_gone: u64,
    pub skipped_no_messages: u64,
    pub skipped_not_eligible: u64,
    pub skipped_fresh: u64,
    /// Jobs that ended in an error (retried later, snoozed or discarded).
    pub failed: u64,
    pub discarded: u64,
    pub retried: u64,
    pub snoozed: u64,
    pub connection_errors: u64,
    /// LLM calls that ended because the endpoint looked down (connect errors, timeouts, 5xx).
    pub llm_outage_errors: u64,
    pub llm_calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub latency_samples: u64,
    pub peak_backends: u64,
    /// Mean wall time of each handler stage, ms.
    pub mean_load_ms: f64,
    pub mean_llm_ms: f64,
    pub mean_write_ms: f64,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            c: Arc::new(Counters::default()),
            latency: Arc::new(Mutex::new(Ring {
                micros: Vec::with_capacity(1024),
                next: 0,
            })),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A job ended; `latency` is its wall time in the handler.
    pub fn job_finished(&self, latency: Duration) {
        Self::add(&self.c.processed, 1);
        let micros = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let mut ring = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        if ring.micros.len() < LATENCY_SAMPLES {
            ring.micros.push(micros);
        } else {
            let i = ring.next;
            ring.micros[i] = micros;
        }
        ring.next = (ring.next + 1) % LATENCY_SAMPLES;
    }

    pub fn written(&self) {
        Self::add(&self.c.written, 1);
    }
    pub fn skipped(&self, reason: SkipReason) {
        Self::add(&self.c.skipped[reason.index()], 1);
    }
    pub fn failed(&self) {
        Self::add(&self.c.failed, 1);
    }
    pub fn discarded(&self) {
        Self::add(&self.c.discarded, 1);
    }
    pub fn retried(&self) {
        Self::add(&self.c.retried, 1);
    }
    pub fn snoozed(&self) {
        Self::add(&self.c.snoozed, 1);
    }
    pub fn connection_error(&self) {
        Self::add(&self.c.connection_errors, 1);
    }
    pub fn llm_outage_error(&self) {
        Self::add(&self.c.llm_outage_errors, 1);
    }
    pub fn llm_call(&self, prompt_tokens: u64, completion_tokens: u64) {
        Self::add(&self.c.llm_calls, 1);
        Self::add(&self.c.prompt_tokens, prompt_tokens);
        Self::add(&self.c.completion_tokens, completion_tokens);
    }
    /// Time one handler stage took.
    pub fn stage(&self, stage: Stage, took: Duration) {
        let i = stage as usize;
        Self::add(
            &self.c.stage_micros[i],
            took.as_micros().min(u128::from(u64::MAX)) as u64,
        );
        Self::add(&self.c.stage_count[i], 1);
    }

    /// A sample of the number of database backends (taken by the caller).
    pub fn observe_backends(&self, n: u64) {
        self.c.last_backends.store(n, Ordering::Relaxed);
        self.c.peak_backends.fetch_max(n, Ordering::Relaxed);
    }

    /// Jobs that finished in any way: one atomic read, for callers that poll (a
    /// [`Self::snapshot`] sorts the latency samples).
    pub fn processed(&self) -> u64 {
        self.c.processed.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Snapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (p50, p95, samples) = {
            let ring = self.latency.lock().unwrap_or_else(|e| e.into_inner());
            let mut v = ring.micros.clone();
            drop(ring);
            v.sort_unstable();
            (quantile(&v, 0.50), quantile(&v, 0.95), v.len() as u64)
        };
        let sk = |r: SkipReason| get(&self.c.skipped[r.index()]);
        Snapshot {
            processed: get(&self.c.processed),
            written: get(&self.c.written),
            skipped: SkipReason::ALL.iter().map(|r| sk(*r)).sum(),
            skipped_lead_gone: sk(SkipReason::LeadGone),
            skipped_no_messages: sk(SkipReason::NoMessages),
            skipped_not_eligible: sk(SkipReason::NotEligible),
            skipped_fresh: sk(SkipReason::Fresh),
            failed: get(&self.c.failed),
            discarded: get(&self.c.discarded),
            retried: get(&self.c.retried),
            snoozed: get(&self.c.snoozed),
            connection_errors: get(&self.c.connection_errors),
            llm_outage_errors: get(&self.c.llm_outage_errors),
            llm_calls: get(&self.c.llm_calls),
            prompt_tokens: get(&self.c.prompt_tokens),
            completion_tokens: get(&self.c.completion_tokens),
            latency_p50_ms: p50 as f64 / 1000.0,
            latency_p95_ms: p95 as f64 / 1000.0,
            latency_samples: samples,
            peak_backends: get(&self.c.peak_backends),
            mean_load_ms: self.stage_mean_ms(Stage::Load),
            mean_llm_ms: self.stage_mean_ms(Stage::Llm),
            mean_write_ms: self.stage_mean_ms(Stage::Write),
        }
    }

    fn stage_mean_ms(&self, stage: Stage) -> f64 {
        let i = stage as usize;
        let n = self.c.stage_count[i].load(Ordering::Relaxed);
        if n == 0 {
            return 0.0;
        }
        self.c.stage_micros[i].load(Ordering::Relaxed) as f64 / n as f64 / 1000.0
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self, breaker_open: bool) -> String {
        let s = self.snapshot();
        let mut out = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {v}");
        };
        counter(
            "insights_jobs_processed_total",
            "Jobs that finished in any way.",
            s.processed,
        );
        counter(
            "insights_insights_written_total",
            "Insights written.",
            s.written,
        );
        counter(
            "insights_jobs_failed_total",
            "Jobs that ended in an error.",
            s.failed,
        );
        counter(
            "insights_jobs_discarded_total",
            "Jobs discarded as permanent failures.",
            s.discarded,
        );
        counter(
            "insights_jobs_retried_total",
            "Jobs handed back for a retry.",
            s.retried,
        );
        counter(
            "insights_jobs_snoozed_total",
            "Jobs rescheduled without burning an attempt.",
            s.snoozed,
        );
        counter(
            "insights_db_connection_errors_total",
            "App database connection errors seen by jobs.",
            s.connection_errors,
        );
        counter(
            "insights_llm_outage_errors_total",
            "LLM calls that found the endpoint down (connect errors, timeouts, 5xx).",
            s.llm_outage_errors,
        );
        counter(
            "insights_llm_calls_total",
            "LLM calls answered.",
            s.llm_calls,
        );
        counter(
            "insights_llm_prompt_tokens_total",
            "Prompt tokens used.",
            s.prompt_tokens,
        );
        counter(
            "insights_llm_completion_tokens_total",
            "Completion tokens used.",
            s.completion_tokens,
        );
        let _ = writeln!(
            out,
            "# HELP insights_jobs_skipped_total Jobs completed without an LLM call, by reason."
        );
        let _ = writeln!(out, "# TYPE insights_jobs_skipped_total counter");
        for r in SkipReason::ALL {
            let _ = writeln!(
                out,
                "insights_jobs_skipped_total{{reason=\"{}\"}} {}",
                r.as_str(),
                self.c.skipped[r.index()].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP insights_job_latency_seconds Handler wall time per job."
        );
        let _ = writeln!(out, "# TYPE insights_job_latency_seconds summary");
        let _ = writeln!(
            out,
            "insights_job_latency_seconds{{quantile=\"0.5\"}} {}",
            s.latency_p50_ms / 1000.0
        );
        let _ = writeln!(
            out,
            "insights_job_latency_seconds{{quantile=\"0.95\"}} {}",
            s.latency_p95_ms / 1000.0
        );
        let _ = writeln!(out, "insights_job_latency_seconds_count {}", s.processed);
        let _ = writeln!(
            out,
            "# HELP insights_db_backends_peak Peak database backends sampled."
        );
        let _ = writeln!(out, "# TYPE insights_db_backends_peak gauge");
        let _ = writeln!(out, "insights_db_backends_peak {}", s.peak_backends);
        let _ = writeln!(
            out,
            "# HELP insights_db_backends Last sampled database backends."
        );
        let _ = writeln!(out, "# TYPE insights_db_backends gauge");
        let _ = writeln!(
            out,
            "insights_db_backends {}",
            self.c.last_backends.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP insights_breaker_open 1 while the circuit breaker is open."
        );
        let _ = writeln!(out, "# TYPE insights_breaker_open gauge");
        let _ = writeln!(out, "insights_breaker_open {}", u8::from(breaker_open));
        out
    }
}

/// Nearest-rank quantile of sorted values; 0 when empty.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.95), 95);
        assert_eq!(quantile(&[7], 0.95), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn snapshot_counts_and_latency() {
        let m = Metrics::new();
        for ms in 1..=20u64 {
            m.job_finished(Duration::from_millis(ms));
        }
        m.written();
        m.skipped(SkipReason::Fresh);
        m.skipped(SkipReason::LeadGone);
        m.llm_call(100, 20);
        m.observe_backends(3);
        m.observe_backends(7);
        m.observe_backends(2);
        m.stage(Stage::Llm, Duration::from_millis(10));
        m.stage(Stage::Llm, Duration::from_millis(20));
        let s = m.snapshot();
        assert_eq!(s.mean_llm_ms, 15.0);
        assert_eq!(s.mean_load_ms, 0.0);
        assert_eq!(s.processed, 20);
        assert_eq!(s.skipped, 2);
        assert_eq!(s.skipped_fresh, 1);
        assert_eq!(s.latency_p50_ms, 10.0);
        assert_eq!(s.latency_p95_ms, 19.0);
        assert_eq!(s.prompt_tokens, 100);
        assert_eq!(s.peak_backends, 7);
    }

    #[test]
    fn ring_keeps_the_newest_samples() {
        let m = Metrics::new();
        for _ in 0..LATENCY_SAMPLES {
            m.job_finished(Duration::from_millis(1));
        }
        for _ in 0..LATENCY_SAMPLES {
            m.job_finished(Duration::from_millis(9));
        }
        let s = m.snapshot();
        assert_eq!(s.latency_samples, LATENCY_SAMPLES as u64);
        assert_eq!(s.latency_p50_ms, 9.0);
    }

    #[test]
    fn prometheus_text_is_well_formed() {
        let m = Metrics::new();
        m.written();
        m.skipped(SkipReason::NoMessages);
        m.job_finished(Duration::from_millis(250));
        let text = m.render_prometheus(true);
        assert!(text.contains(
            "# TYPE insights_insights_written_total counter\ninsights_insights_written_total 1\n"
        ));
        assert!(text.contains("insights_jobs_skipped_total{reason=\"no_messages\"} 1\n"));
        assert!(text.contains("insights_job_latency_seconds{quantile=\"0.5\"} 0.25\n"));
        assert!(text.contains("insights_breaker_open 1\n"));
        // Every sample line is `name[{labels}] value` with a numeric value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line: {line}");
        }
    }
}
