//! Every default of the pipeline that is not a deployment setting, named once.
//!
//! Deployment settings (concurrency, pool sizes, thresholds, ...) live in
//! `insights_core::defaults` and are read from the environment; the values here are internal
//! tuning knobs with a reason attached.

use std::time::Duration;

use insights_pg::{Backoff, Jitter};

/// Pauses of the circuit breaker, per trip since the last success: 1 s (long enough for a
/// pooler restart, short enough that a single blip costs little throughput) doubling to 30 s
/// (an outage never stops fetching for longer than this between probes), up to half taken off
/// at random so workers do not probe in lockstep.
pub const BREAKER_PAUSE: Backoff = Backoff::new(
    Duration::from_secs(1),
    Duration::from_secs(30),
    Jitter::Down(0.5),
);

/// Pauses of fetching while the LLM endpoint is presumed down. Nothing reaches the endpoint
/// during a pause (a probe is one job's request, and no job is fetched), so the pause is also
/// the probe interval: short and capped like the database's connection gate, so a recovered
/// endpoint is found within about 1.5 s, at the cost of one probe request per worker per pause
/// while it stays down.
pub const LLM_PROBE_PAUSE: Backoff = Backoff::new(
    Duration::from_millis(500),
    Duration::from_millis(1500),
    Jitter::Down(0.25),
);

/// How long a readiness answer from the queue database is reused: a probe that polls
/// `/readyz` every second must not become a stream of connection attempts during an outage.
pub const READY_CACHE: Duration = Duration::from_secs(2);

/// Store-level retries of the worker's own store (loads and insight writes): one quick retry
/// absorbs a single dropped connection; anything longer goes to the breaker (which pauses) and
/// the handler's breaker-gated write retries, instead of every call knocking several times on
/// a database that is down.
pub const HANDLER_STORE_RETRY: insights_store::RetryPolicy = insights_store::RetryPolicy {
    backoff: insights_store::Backoff::new(
        Duration::from_millis(100),
        Duration::from_millis(100),
        insights_store::Jitter::Full,
    ),
    max_retries: 1,
};

/// How long an LLM quota error pauses fetching: quota rarely comes back within seconds, and
/// every fetched job would fail the same way.
pub const QUOTA_PAUSE: Duration = Duration::from_secs(60);
/// How long a job is snoozed (no attempt burned) when the app database is unreachable. Short:
/// the breaker and the connection gates already hold fetching back while the database is down,
/// so the snooze only keeps the job from being refetched at once; a long one delays recovery
/// (fault suite, scenario 3: the last job waited out a 5 s snooze after the fault cleared).
pub const CONNECTION_SNOOZE: Duration = Duration::from_secs(1);
/// How long a job is snoozed when the LLM quota is exhausted.
pub const QUOTA_SNOOZE: Duration = Duration::from_secs(60);

/// How long a job is snoozed while the LLM endpoint is presumed down (at least; a server hint
/// or the breaker's remaining pause may make it longer), jittered up so the jobs do not come
/// back together. Short for the same reason as [`CONNECTION_SNOOZE`]: the breaker holds
/// fetching back while the endpoint is down.
pub const LLM_OUTAGE_SNOOZE: Duration = Duration::from_secs(2);
/// Spread of the snooze of a job whose LLM call met an outage or a rate limit: never sooner
/// than the wait, up to half again later.
pub const LLM_SNOOZE_JITTER: Jitter = Jitter::Up(0.5);

/// Waits between retries of the insight write after the LLM answered (a paid-for answer is
/// worth waiting for: the write is retried for as long as the job may live): 100 ms doubling
/// to 5 s, up to half taken off at random.
pub const WRITE_RETRY: Backoff = Backoff::new(
    Duration::from_millis(100),
    Duration::from_secs(5),
    Jitter::Down(0.5),
);

/// Least wait of a write the app database's connection gate refused (plus up to as much again
/// of jitter), so writes waiting on a probe in flight do not spin; the gate's own answer ("next
/// probe in ...") is usually longer.
pub const GATE_REFUSED_MIN_WAIT: Duration = Duration::from_millis(20);

/// Interval of the periodic summary log line.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// How often `--exit-when-idle` polls the queue counts.
pub const IDLE_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How often the runner samples the number of database backends for the peak figure.
pub const BACKEND_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
/// How long in-flight jobs may take to finish after a shutdown signal before the process
/// stops anyway (their leases expire and another worker picks them up).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Candidate ids fetched per keyset page by the producer.
pub const PRODUCER_PAGE: i64 = 5_000;
/// Jobs inserted per bulk statement by the producer.
pub const PRODUCER_CHUNK: usize = 5_000;

/// Job latency samples kept for the quantiles (a ring: the newest win).
pub const LATENCY_SAMPLES: usize = 65_536;

/// Demo database when `DATABASE_URL` is unset.
pub const DEMO_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/insights_demo";
/// Leads the demo seeds.
pub const DEMO_LEADS: u64 = 2_000;
/// Latency of the demo's in-process mock LLM.
pub const DEMO_LLM_LATENCY: Duration = Duration::from_millis(50);
/// Concurrency of the demo worker: enough to hide the mock's latency.
pub const DEMO_CONCURRENCY: usize = 64;
/// Seed of the demo data (deterministic runs).
pub const DEMO_SEED: u64 = 42;
