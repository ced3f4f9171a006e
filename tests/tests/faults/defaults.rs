//! Every figure of the fault suite, named once. The scenario figures (leads, concurrency, fault
//! durations, mock latency) and the budgets are the acceptance criteria; the deadlines are
//! generous because the suite runs on a loaded 2-core machine.

use std::time::Duration;

/// Booked leads seeded per scenario.
pub const LEADS: usize = 500;
/// Seed of the synthetic data.
pub const SEED: u64 = 4;
/// `insights work --concurrency`.
pub const CONCURRENCY: usize = 16;
/// Jobs finished before the fault is injected (a fifth of the run: enough done to be
/// "mid-run", enough left that the worker must work again after the fault).
pub const TRIGGER_FINISHED: i64 = 100;

/// Mock LLM latency: base plus uniform jitter, 50-200 ms.
pub const LLM_LATENCY: Duration = Duration::from_millis(50);
pub const LLM_LATENCY_JITTER: Duration = Duration::from_millis(150);

/// pgbouncer: server connections per (database, user) pair.
pub const POOLER_POOL_SIZE: u32 = 8;
/// pgbouncer `server_login_retry` (the docs and the compose file set a low value too).
pub const SERVER_LOGIN_RETRY_SECS: u32 = 1;
/// pgbouncer `query_wait_timeout`: a client queued this long for a server connection gets an
/// error instead of waiting for ever.
pub const QUERY_WAIT_TIMEOUT_SECS: u32 = 3;

/// Recovery budget: processing again within 2 s of the fault clearing, plus pgbouncer's
/// `server_login_retry`.
pub const RECOVERY_BUDGET: Duration = Duration::from_secs(2 + SERVER_LOGIN_RETRY_SECS as u64);
/// Budget of connection attempts while the database is down: per worker, per (started) 10 s
/// of outage.
pub const ATTEMPTS_PER_WORKER_PER_WINDOW: usize = 20;
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(10);

/// Fault durations.
pub const POOLER_DOWN: Duration = Duration::from_secs(3);
pub const POSTGRES_DOWN: Duration = Duration::from_secs(5);
pub const TERMINATE_EVERY: Duration = Duration::from_millis(500);
pub const TERMINATE_FOR: Duration = Duration::from_secs(5);
pub const SATURATION_HOLD: Duration = Duration::from_secs(5);
pub const BLACKHOLE_FOR: Duration = Duration::from_secs(10);
/// A blackhole well beyond the worker's 10 s statement timeout: every pooled connection has
/// time to time out inside it.
pub const LONG_BLACKHOLE_FOR: Duration = Duration::from_secs(25);
pub const LLM_OUTAGE_FOR: Duration = Duration::from_secs(10);

/// Scenario 8's LLM faults besides the outage.
pub const LLM_FAIL_RATE: f64 = 0.3;
pub const LLM_MALFORMED_RATE: f64 = 0.05;
/// 429 bursts: the last `BURST_LEN` of every `BURST_EVERY` requests, with this retry-after.
pub const BURST_EVERY: u64 = 50;
pub const BURST_LEN: u64 = 5;
pub const BURST_RETRY_AFTER_MS: u64 = 1_000;

/// How often the fault window samples readiness, liveness and progress.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How often `/readyz` is probed during a fault. Each probe may cost the worker a connection
/// attempt (it checks the queue database), so probing faster would inflate the attempt count;
/// once a second is still ten times a Kubernetes default.
pub const READY_PROBE_EVERY: Duration = Duration::from_secs(1);
/// Client-side bound on one `/readyz` probe (the worker bounds its own database probe at 2 s,
/// so a worker that answers at all answers within this).
pub const PROBE_CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often recovery is polled after the fault clears (the measurement's resolution).
pub const RECOVERY_POLL: Duration = Duration::from_millis(25);
/// Bound on a worker's start-up (`/healthz` answering).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on reaching the trigger.
pub const TRIGGER_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on waiting for processing to resume: far beyond the budget, so an overrun is reported
/// with its measured value instead of as a timeout.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the whole run finishing after the fault. A SIGKILLed worker's jobs wait for their
/// lease (30 s) and a rescuer round (15 s).
pub const COMPLETION_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on `/readyz` answering 200 again once the run is over.
pub const READY_AGAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a SIGTERMed worker's exit.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(45);
