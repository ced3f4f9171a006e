//! One scenario from start to verdict: build the topology, start the worker(s), wait until a
//! share of the jobs is done, inject the fault (watching readiness, liveness and connection
//! attempts while it lasts), clear it, measure how long until the pipeline makes progress
//! again, wait for the run to finish, then check every acceptance criterion and print a report
//! line. Every violation is collected, so one run shows all of them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use insights_llm::mock::{LeadStats, MockLlmConfig};
use insights_testkit::{ProxyMode, wait_until};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::defaults::*;
use crate::monitor::Monitor;
use crate::topology::{PROGRESS_SQL, Topology, Worker};

/// What a scenario injects.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// 1. pgbouncer SIGKILLed, restarted after the duration.
    KillPooler,
    /// 2. Postgres fast shutdown, restarted after the duration.
    StopPostgres,
    /// 3. Every worker backend terminated every 500 ms for 5 s.
    TerminateBackends,
    /// 4. Other clients hold every pgbouncer server connection for 5 s.
    SaturatePooler,
    /// 5. The proxy swallows every byte for this long.
    Blackhole(Duration),
    /// 6. The worker SIGKILLed and started again.
    KillWorker,
    /// 7. Two workers, one SIGTERMed.
    TermOneOfTwo,
    /// 8. The mock LLM answers 503 to everything for 10 s (on top of its configured faults).
    LlmOutage,
    /// 9. A job with a malformed payload inserted straight into the queue.
    MalformedJob,
}

impl Fault {
    fn workers(self) -> usize {
        match self {
            Fault::TermOneOfTwo => 2,
            _ => 1,
        }
    }

    /// The database is unreachable for the worker during the fault: the attempt budget and
    /// `/readyz` apply.
    fn db_down(self) -> bool {
        matches!(
            self,
            Fault::KillPooler | Fault::StopPostgres | Fault::Blackhole(_)
        )
    }
}

/// A scenario: its number and name, what it injects, and the mock LLM's behaviour.
pub struct Spec {
    pub number: u8,
    pub name: &'static str,
    pub fault: Fault,
    pub mock: MockLlmConfig,
}

impl Spec {
    pub fn new(number: u8, name: &'static str, fault: Fault) -> Self {
        Self {
            number,
            name,
            fault,
            mock: MockLlmConfig {
                latency: LLM_LATENCY,
                latency_jitter: LLM_LATENCY_JITTER,
                seed: u64::from(number),
                ..MockLlmConfig::default()
            },
        }
    }
}

/// The measured figures of one scenario (printed as one `FAULT-REPORT` line, and the source of
/// the table in docs/reliability.md).
#[derive(Debug, Default)]
pub struct Report {
    pub number: u8,
    pub name: String,
    pub outage: Option<Duration>,
    /// From the fault clearing to the first progress (insight written or job finished).
    pub recovery: Option<Duration>,
    /// Connections the proxy accepted while the fault lasted.
    pub attempts_during_fault: usize,
    pub attempt_budget: Option<usize>,
    /// Insights written plus jobs finished while the fault lasted (last sample minus the
    /// figure before it).
    pub progress_during_fault: Option<i64>,
    /// `query_wait_timeout` errors pgbouncer logged while saturated (scenario 4).
    pub pooler_wait_timeouts: usize,
    /// Connections that swallowed bytes in a blackhole and that the worker still held open
    /// once the run was over (each one a pool slot waiting for an answer that cannot come).
    pub dead_connections_held: usize,
    /// LLM requests in flight when the worker was SIGKILLed (scenario 6).
    pub killed_in_flight: u64,
    /// Attempts per second of the fault window (evidence for the attempt budget).
    pub attempts_per_second: Vec<usize>,
    /// `/readyz` answered something other than 200 at least once during the fault.
    pub saw_not_ready: bool,
    /// `/readyz` probes that got no answer at all during the fault.
    pub probes_unanswered: usize,
    pub llm_calls_total: u64,
    pub llm_calls_max_per_lead: u64,
    pub llm_failures_injected: u64,
    /// Leads whose calls exceed 1 + the failures injected for them.
    pub leads_over_budget: usize,
    pub elapsed: Duration,
    pub violations: Vec<String>,
}

impl Report {
    fn line(&self) -> String {
        let ms = |d: Option<Duration>| d.map_or("n/a".to_owned(), |d| d.as_millis().to_string());
        format!(
            "FAULT-REPORT scenario={} name={:?} outage_ms={} recovery_ms={} attempts={} \
             budget={} not_ready_seen={} probes_unanswered={} llm_calls={} llm_failures_injected={} \
             max_calls_per_lead={} leads_over_budget={} elapsed_ms={} violations={} \
             attempts_per_second={:?} progress_during_fault={} pooler_wait_timeouts={} \
             killed_in_flight={} dead_connections_held={}",
            self.number,
            self.name,
            ms(self.outage),
            ms(self.recovery),
            self.attempts_during_fault,
            self.attempt_budget
                .map_or("n/a".to_owned(), |b| b.to_string()),
            self.saw_not_ready,
            self.probes_unanswered,
            self.llm_calls_total,
            self.llm_failures_injected,
            self.llm_calls_max_per_lead,
            self.leads_over_budget,
            self.elapsed.as_millis(),
            self.violations.len(),
            self.attempts_per_second,
            self.progress_during_fault
                .map_or("n/a".to_owned(), |p| p.to_string()),
            self.pooler_wait_timeouts,
            self.killed_in_flight,
            self.dead_connections_held
        )
    }
}

/// What happened while the fault lasted.
#[derive(Default)]
struct Window {
    start: Option<Instant>,
    cleared: Option<Instant>,
    last_progress: Option<i64>,
    /// Index of the workers that were stopped on purpose.
    stopped: Vec<usize>,
    /// Leads in flight when a worker was SIGKILLed (their LLM call may be paid twice).
    killed_in_flight: u64,
    malformed_job: Option<i64>,
    /// Progress figure just before the fault.
    progress_before: Option<i64>,
    /// `query_wait_timeout` errors pgbouncer logged while saturated (scenario 4).
    pooler_wait_timeouts: usize,
}

/// Runs `spec`; panics with every violated criterion (after printing the report), or fails
/// with an error when the scenario could not be run at all.
pub async fn run(spec: Spec) -> anyhow::Result<Report> {
    let _serial = crate::SERIAL.lock().await;
    let began = Instant::now();
    let label = format!("s{}", spec.number);
    let mut topo = Topology::start(&label, spec.mock.clone())
        .await
        .with_context(|| format!("scenario {}: setting up", spec.number))?;
    let mut workers = Vec::new();
    for i in 0..spec.fault.workers() {
        workers.push(topo.spawn_worker(&format!("{label}-worker{i}")).await?);
    }
    let mut report = Report {
        number: spec.number,
        name: spec.name.to_owned(),
        ..Report::default()
    };

    let trigger = topo.wait_finished(TRIGGER_FINISHED, TRIGGER_TIMEOUT).await;
    if let Err(e) = trigger {
        for w in &mut workers {
            w.assert_alive("before the fault")?;
        }
        return Err(e.context(describe_workers(&workers)));
    }
    for w in &mut workers {
        w.assert_alive("before the fault")?;
    }

    let mut window = Window {
        progress_before: topo.progress().await,
        ..Window::default()
    };
    let monitor = Monitor::start(
        workers.iter().map(|w| w.http_port).collect(),
        topo.db.pool.clone(),
        PROGRESS_SQL,
    )?;
    let injected = inject(&spec, &mut topo, &mut workers, &mut window).await;
    let seen = monitor.finish();
    injected?;
    window.last_progress = seen.last_progress;
    report.progress_during_fault = window
        .progress_before
        .zip(seen.last_progress)
        .map(|(a, b)| b - a);
    report.pooler_wait_timeouts = window.pooler_wait_timeouts;
    report.killed_in_flight = window.killed_in_flight;
    report.saw_not_ready = seen.not_ready;
    report.probes_unanswered = seen.unanswered;
    let cleared = window.cleared.unwrap_or_else(Instant::now);
    let start = window.start.unwrap_or(cleared);
    report.outage = Some(cleared.saturating_duration_since(start));
    report.attempts_during_fault = topo.proxy.attempts_between(start, Some(cleared));
    report.attempts_per_second = per_second(&topo.proxy.attempt_log(), start, cleared);

    // Recovery: the first progress after the fault cleared.
    report.recovery = measure_recovery(&topo, window.last_progress, cleared).await;
    if report.recovery.is_none() {
        report.violations.push(format!(
            "no progress within {RECOVERY_TIMEOUT:?} after the fault cleared"
        ));
    }

    // The run must finish.
    let done = wait_until(COMPLETION_TIMEOUT, "every job finished", || async {
        topo.db
            .job_counts()
            .await
            .map(|c| {
                ["running", "available", "scheduled", "retryable"]
                    .iter()
                    .all(|s| c.get(*s).copied().unwrap_or(0) == 0)
            })
            .unwrap_or(false)
    })
    .await;
    if let Err(e) = done {
        report.violations.push(format!(
            "{e}: {:?}",
            topo.db.job_counts().await.unwrap_or_default()
        ));
    }

    report.dead_connections_held = topo.proxy.swallowed_connections();

    // Ready again once the database answers: a worker stuck "not ready" would be restarted by
    // its orchestrator for no reason.
    for (i, w) in workers.iter().enumerate() {
        if window.stopped.contains(&i) {
            continue;
        }
        let ready = wait_until(READY_AGAIN_TIMEOUT, "/readyz 200", || async {
            w.probe("/readyz").await == Some(200)
        })
        .await;
        if ready.is_err() {
            report.violations.push(format!(
                "worker {} still not ready {READY_AGAIN_TIMEOUT:?} after the run (readyz: {:?})",
                w.proc.label,
                w.probe("/readyz").await
            ));
        }
    }

    // The worker(s) never exited on their own; a SIGTERM ends them cleanly.
    for (i, w) in workers.iter_mut().enumerate() {
        if window.stopped.contains(&i) {
            continue;
        }
        if let Err(e) = w.assert_alive("during the run") {
            report.violations.push(e.to_string());
            continue;
        }
        match w.proc.terminate(SHUTDOWN_TIMEOUT).await {
            Ok(st) if st.success() => {}
            Ok(st) => report.violations.push(format!(
                "worker {} exited with {st} after SIGTERM: {}",
                w.proc.label,
                w.proc.describe()
            )),
            Err(e) => report.violations.push(format!("SIGTERM: {e:#}")),
        }
    }

    check_outcome(&spec, &topo, &window, &mut report).await?;
    check_llm_spend(&spec, &topo, &mut report);
    check_insight_writes(&topo, &mut report).await?;
    if spec.fault.db_down() {
        let windows = report
            .outage
            .unwrap_or_default()
            .as_secs_f64()
            .div_euclid(ATTEMPT_WINDOW.as_secs_f64()) as usize
            + 1;
        let budget = ATTEMPTS_PER_WORKER_PER_WINDOW * spec.fault.workers() * windows;
        report.attempt_budget = Some(budget);
        if report.attempts_during_fault > budget {
            report.violations.push(format!(
                "{} connection attempts during a {:?} outage (budget {budget})",
                report.attempts_during_fault,
                report.outage.unwrap_or_default()
            ));
        }
        if !report.saw_not_ready {
            report
                .violations
                .push("/readyz never reported not ready while the database was down".to_owned());
        }
    }
    if let Some(r) = report.recovery
        && r > RECOVERY_BUDGET
    {
        report.violations.push(format!(
            "processing resumed {r:?} after the fault cleared (budget {RECOVERY_BUDGET:?})"
        ));
    }
    report.elapsed = began.elapsed();
    println!("{}", report.line());
    for v in &report.violations {
        println!("  violation: {v}");
    }
    if !report.violations.is_empty() {
        let logs: Vec<String> = workers
            .iter()
            .map(|w| w.proc.log_dir().display().to_string())
            .collect();
        // A panic while the workers are still owned here keeps their log directories (the
        // harness removes them on drop unless the thread is panicking).
        panic!(
            "scenario {} ({}) violated {} criteria:\n- {}\nworker logs (kept): {logs:?}",
            spec.number,
            spec.name,
            report.violations.len(),
            report.violations.join("\n- ")
        );
    }
    Ok(report)
}

/// Accepted connections in each second of `[start, end)`.
fn per_second(log: &[insights_testkit::Attempt], start: Instant, end: Instant) -> Vec<usize> {
    let secs = end.saturating_duration_since(start).as_secs() as usize + 1;
    let mut out = vec![0; secs];
    for a in log.iter().filter(|a| a.at >= start && a.at < end) {
        let i = a.at.duration_since(start).as_secs() as usize;
        if let Some(slot) = out.get_mut(i) {
            *slot += 1;
        }
    }
    out
}

fn describe_workers(workers: &[Worker]) -> String {
    workers
        .iter()
        .map(|w| w.proc.describe())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Holds a fault until `until`, failing as soon as a worker that should run has exited.
async fn hold(workers: &mut [Worker], window: &Window, until: Instant) -> anyhow::Result<()> {
    loop {
        for (i, w) in workers.iter_mut().enumerate() {
            if !window.stopped.contains(&i) {
                w.assert_alive("during the fault")?;
            }
        }
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        tokio::time::sleep(SAMPLE_EVERY.min(until - now)).await;
    }
}

/// Injects the scenario's fault, holds it for its duration (the duration is the scenario, not
/// a synchronisation), and clears it. Sets `window.start` and `window.cleared`.
async fn inject(
    spec: &Spec,
    topo: &mut Topology,
    workers: &mut Vec<Worker>,
    window: &mut Window,
) -> anyhow::Result<()> {
    match spec.fault {
        Fault::KillPooler => {
            window.start = Some(Instant::now());
            topo.bouncer.kill();
            hold(workers, window, Instant::now() + POOLER_DOWN).await?;
            topo.bouncer.restart().await?;
            window.cleared = Some(Instant::now());
        }
        Fault::StopPostgres => {
            topo.cluster.stop().await?;
            // Down from here: `pg_ctl stop -w` returned.
            window.start = Some(Instant::now());
            hold(workers, window, Instant::now() + POSTGRES_DOWN).await?;
            topo.cluster.start_server().await?;
            window.cleared = Some(Instant::now());
        }
        Fault::TerminateBackends => {
            window.start = Some(Instant::now());
            let end = Instant::now() + TERMINATE_FOR;
            let mut killed = 0;
            while Instant::now() < end {
                killed += topo.terminate_worker_backends().await?;
                let next = (Instant::now() + TERMINATE_EVERY).min(end);
                hold(workers, window, next).await?;
            }
            window.cleared = Some(Instant::now());
            anyhow::ensure!(killed > 0, "no worker backend was ever terminated");
        }
        Fault::SaturatePooler => {
            let hogs = hog_pooler(topo).await?;
            window.start = Some(Instant::now());
            hold(workers, window, Instant::now() + SATURATION_HOLD).await?;
            let log = topo.bouncer.log();
            window.pooler_wait_timeouts = log.matches("query_wait_timeout").count();
            for mut h in hogs {
                sqlx::raw_sql("COMMIT").execute(&mut h).await?;
                h.close().await.ok();
            }
            window.cleared = Some(Instant::now());
        }
        Fault::Blackhole(duration) => {
            window.start = Some(Instant::now());
            topo.proxy.set_mode(ProxyMode::Blackhole);
            hold(workers, window, Instant::now() + duration).await?;
            topo.proxy.set_mode(ProxyMode::Pass);
            window.cleared = Some(Instant::now());
        }
        Fault::KillWorker => {
            window.killed_in_flight = topo.mock.in_flight();
            window.start = Some(Instant::now());
            workers[0].proc.kill().await?;
            window.stopped.push(0);
            let fresh = topo
                .spawn_worker(&format!("s{}-worker-restarted", spec.number))
                .await?;
            workers.push(fresh);
            // Processing again is measured from the restart (the new process's start-up counts).
            window.cleared = window.start;
        }
        Fault::TermOneOfTwo => {
            window.start = Some(Instant::now());
            let st = workers[1].proc.terminate(SHUTDOWN_TIMEOUT).await?;
            window.stopped.push(1);
            anyhow::ensure!(
                st.success(),
                "the SIGTERMed worker exited with {st}: {}",
                workers[1].proc.describe()
            );
            window.cleared = Some(Instant::now());
        }
        Fault::LlmOutage => {
            window.start = Some(Instant::now());
            topo.mock.set_outage(true);
            hold(workers, window, Instant::now() + LLM_OUTAGE_FOR).await?;
            topo.mock.set_outage(false);
            window.cleared = Some(Instant::now());
        }
        Fault::MalformedJob => {
            window.start = Some(Instant::now());
            let id = topo
                .db
                .insert_raw_job(serde_json::json!({"lead_id": "not-a-number", "bogus": true}))
                .await?;
            window.malformed_job = Some(id);
            window.cleared = window.start;
        }
    }
    Ok(())
}

/// Opens one transaction per pgbouncer server connection, straight to pgbouncer, and returns
/// once every one of them holds a server connection.
async fn hog_pooler(topo: &Topology) -> anyhow::Result<Vec<PgConnection>> {
    let opts = topo.pooler_options()?;
    let mut hogs = Vec::new();
    for _ in 0..POOLER_POOL_SIZE {
        let mut c = PgConnection::connect_with(&opts)
            .await
            .context("connecting a hog to pgbouncer")?;
        // Simple protocol: nothing named, nothing to confuse the pooler.
        tokio::time::timeout(
            Duration::from_secs(30),
            sqlx::raw_sql("BEGIN; SELECT 1").execute(&mut c),
        )
        .await
        .context("a hog waited too long for a server connection")??;
        hogs.push(c);
    }
    Ok(hogs)
}

/// Polls progress from `cleared` on; `None` if nothing moved within [`RECOVERY_TIMEOUT`] and
/// work was left. When the pipeline already finished, recovery is zero.
async fn measure_recovery(
    topo: &Topology,
    before: Option<i64>,
    cleared: Instant,
) -> Option<Duration> {
    let complete = (2 * LEADS) as i64;
    let mut base = before;
    loop {
        if let Some(p) = topo.progress().await {
            match base {
                Some(b) if p > b => return Some(cleared.elapsed()),
                None => base = Some(p),
                _ => {}
            }
            if p >= complete {
                return Some(Duration::ZERO);
            }
        }
        if cleared.elapsed() > RECOVERY_TIMEOUT {
            return None;
        }
        tokio::time::sleep(RECOVERY_POLL).await;
    }
}

/// Every candidate has exactly one fresh insight; no job left running or waiting; no job
/// discarded except the malformed one, which carries its reason. (How often each insight was
/// written is [`check_insight_writes`]'s.)
async fn check_outcome(
    spec: &Spec,
    topo: &Topology,
    window: &Window,
    report: &mut Report,
) -> anyhow::Result<()> {
    let check = topo.db.check_pipeline().await?;
    if !check.is_complete() || check.expected != topo.candidates.len() as u64 {
        report.violations.push(format!(
            "insights: {} fresh of {} expected ({} candidates); missing {:?}; stale {:?}; \
             unexpected {:?}",
            check.fresh,
            check.expected,
            topo.candidates.len(),
            head(&check.missing),
            head(&check.stale),
            head(&check.unexpected)
        ));
    }
    if let Err(e) = topo.db.assert_no_pending_jobs().await {
        report.violations.push(e.to_string());
    }
    let discarded = topo.db.jobs(Some("discarded")).await?;
    for j in &discarded {
        if Some(j.id) == window.malformed_job {
            continue;
        }
        report.violations.push(format!(
            "job {} (payload {}) discarded: {:?}",
            j.id, j.payload, j.errors
        ));
    }
    if let Some(id) = window.malformed_job {
        match discarded.iter().find(|j| j.id == id) {
            None => report.violations.push(format!(
                "the malformed job {id} was not discarded: {:?}",
                topo.db.jobs(None).await?.into_iter().find(|j| j.id == id)
            )),
            Some(j) if j.errors.iter().all(|e| e.trim().is_empty()) => report.violations.push(
                format!("the malformed job {id} was discarded without a reason"),
            ),
            Some(j) => println!(
                "scenario {}: malformed job {id} discarded after {} attempt(s): {:?}",
                spec.number, j.attempt, j.errors
            ),
        }
    }
    Ok(())
}

/// LLM calls per lead are at most 1 plus the LLM-side failures injected for that lead. When a
/// worker was SIGKILLed, the leads it had in flight may pay once more (their answer died with
/// the process); no more leads than it had in flight.
fn check_llm_spend(spec: &Spec, topo: &Topology, report: &mut Report) {
    let stats = topo.mock.stats();
    report.llm_calls_total = stats.total;
    let mut over: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut injected_total = 0;
    for (lead, s) in &stats.per_lead {
        let injected = injected_failures(s);
        injected_total += injected;
        report.llm_calls_max_per_lead = report.llm_calls_max_per_lead.max(s.requests);
        if s.requests > 1 + injected {
            over.insert(lead.clone(), (s.requests, injected));
        }
    }
    report.llm_failures_injected = injected_total;
    report.leads_over_budget = over.len();
    for id in &topo.candidates {
        if !stats.per_lead.contains_key(&id.to_string()) {
            report.violations.push(format!(
                "lead {id} never reached the LLM (and maybe others)"
            ));
            break;
        }
    }
    if over.is_empty() {
        return;
    }
    let allowed_extra = match spec.fault {
        // A worker holds at most CONCURRENCY jobs; each may have had its answer in hand.
        Fault::KillWorker => CONCURRENCY as u64,
        _ => 0,
    };
    let beyond_one_extra = over.values().filter(|(r, i)| *r > 2 + i).count();
    if over.len() as u64 > allowed_extra || beyond_one_extra > 0 {
        let shown: Vec<String> = over
            .iter()
            .take(10)
            .map(|(l, (r, i))| format!("lead {l}: {r} calls, {i} injected failures"))
            .collect();
        report.violations.push(format!(
            "{} leads paid for more LLM calls than 1 + injected failures (allowed: {allowed_extra} \
             leads with one extra): {}",
            over.len(),
            shown.join("; ")
        ));
    }
}

/// Each insight write against the LLM answers the mock served (`/stats`): a candidate is
/// written exactly once (its conversation does not change during a scenario, so a later answer
/// must not overwrite the first), never more often than the LLM answered it validly, and from
/// an answer no other write used (one LLM call, one write).
async fn check_insight_writes(topo: &Topology, report: &mut Report) -> anyhow::Result<()> {
    let writes = topo.db.insight_writes().await?;
    let stats = topo.mock.stats();
    let mut problems = Vec::new();
    let mut written_by: BTreeMap<&str, i64> = BTreeMap::new();
    for id in &topo.candidates {
        let lead_writes = writes.get(id).map_or(&[][..], Vec::as_slice);
        let answered = stats.per_lead.get(&id.to_string()).map_or(0, |s| s.ok);
        if lead_writes.len() != 1 || lead_writes.len() as u64 > answered {
            problems.push(format!(
                "lead {id}: written {} times from {answered} valid LLM answers",
                lead_writes.len()
            ));
        }
        for request in lead_writes {
            let Some(request) = request.as_deref() else {
                problems.push(format!("lead {id}: written without an LLM request id"));
                continue;
            };
            if let Some(other) = written_by.insert(request, *id) {
                problems.push(format!(
                    "LLM answer {request} written for lead {other} and again for lead {id}"
                ));
            }
        }
    }
    for lead in writes.keys().filter(|l| !topo.candidates.contains(l)) {
        problems.push(format!("lead {lead} was written but is not a candidate"));
    }
    if !problems.is_empty() {
        let shown: Vec<&str> = problems.iter().take(10).map(String::as_str).collect();
        report.violations.push(format!(
            "{} insight writes do not match the LLM answers paid for: {}",
            problems.len(),
            shown.join("; ")
        ));
    }
    Ok(())
}

fn injected_failures(s: &LeadStats) -> u64 {
    s.server_errors + s.rate_limited + s.malformed + s.outage
}

fn head(ids: &[i64]) -> Vec<i64> {
    ids.iter().take(10).copied().collect()
}
