//! The background side of one worker backend: the fetch loop, the heartbeat, the rescuer, the
//! batched completer, the optional LISTEN task and the shutdown watcher. None of them holds a
//! connection while waiting, and none of them ends on a database error: they log, back off
//! (jittered, capped) and carry on until the backend closes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use apalis_core::worker::context::WorkerContext;
use insights_pg::Jitter;
use rand::RngExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::DbBackoff;
use crate::control::FetchControl;
use crate::defaults;
use crate::queue::Queue;
use crate::statements::{self, Completion, FetchCursor, FetchedJob};
use crate::stats::WorkerStats;

/// How often the shutdown watcher looks at the worker's state.
const SHUTDOWN_WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// How the rescue interval is randomised per sweep.
const RESCUE_JITTER: Jitter = Jitter::Around(0.2);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State shared by the backend, its layer and the background tasks.
pub(crate) struct Shared {
    pub queue: Queue,
    pub queue_name: String,
    /// Unique per backend instance; written to `locked_by`.
    pub worker_id: String,
    pub worker_name: Mutex<String>,
    pub concurrency: usize,
    pub run_rescuer: bool,
    /// Fetched, not yet handed to the worker.
    pub buffer: Mutex<VecDeque<FetchedJob>>,
    /// Jobs holding a slot: buffered or running in the handler.
    pub in_flight: AtomicUsize,
    /// Leases held (id → token) until their completion is written.
    pub leases: Mutex<HashMap<i64, i64>>,
    pub waker: Mutex<Option<Waker>>,
    pub slot_freed: Notify,
    pub new_work: Notify,
    pub pending: Mutex<Vec<Completion>>,
    pub pending_ready: Notify,
    pub flushing: AtomicUsize,
    pub stopping: AtomicBool,
    /// Cancels the fetch loop (shutdown started).
    pub stop_fetch: CancellationToken,
    /// Cancels everything else (backend closed or dropped).
    pub stop_all: CancellationToken,
    pub control: FetchControl,
    pub stats: WorkerStats,
    /// Set when the fetch loop has returned (no fetch statement can still land).
    pub fetch_exited: AtomicBool,
    pub fetch_exited_notify: Notify,
    /// Fetch statements on the wire; the completer lets them go first (see `completer_loop`).
    pub fetches_on_wire: AtomicUsize,
    pub fetches_landed: Notify,
    /// Completions, heartbeats and rescues take turns on one connection: none is latency
    /// critical (a slot is freed before its completion is written), and without the turn
    /// taking they overlap with the fetch loop's two and a worker holds four connections.
    pub maintenance: tokio::sync::Mutex<()>,
}

impl Shared {
    pub(crate) fn new(
        queue: Queue,
        queue_name: &str,
        concurrency: usize,
        run_rescuer: bool,
    ) -> Self {
        let suffix: u64 = rand::rng().random();
        Self {
            queue,
            queue_name: queue_name.to_owned(),
            worker_id: format!("{queue_name}-{suffix:016x}"),
            worker_name: Mutex::new(queue_name.to_owned()),
            concurrency: concurrency.max(1),
            run_rescuer,
            buffer: Mutex::new(VecDeque::new()),
            in_flight: AtomicUsize::new(0),
            leases: Mutex::new(HashMap::new()),
            waker: Mutex::new(None),
            slot_freed: Notify::new(),
            new_work: Notify::new(),
            pending: Mutex::new(Vec::new()),
            pending_ready: Notify::new(),
            flushing: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            stop_fetch: CancellationToken::new(),
            stop_all: CancellationToken::new(),
            control: FetchControl::default(),
            stats: WorkerStats::default(),
            fetch_exited: AtomicBool::new(false),
            fetch_exited_notify: Notify::new(),
            fetches_on_wire: AtomicUsize::new(0),
            fetches_landed: Notify::new(),
            maintenance: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn pop_buffered(&self) -> Option<FetchedJob> {
        lock(&self.buffer).pop_front()
    }

    pub(crate) fn set_waker(&self, waker: &Waker) {
        let mut w = lock(&self.waker);
        match &*w {
            Some(old) if old.will_wake(waker) => {}
            _ => *w = Some(waker.clone()),
        }
    }

    fn wake_worker(&self) {
        if let Some(w) = lock(&self.waker).take() {
            w.wake();
        }
    }

    /// A job stopped holding a slot (finished, discarded undecoded, or handed back).
    pub(crate) fn release_slot(&self) {
        self.release_slot_quiet();
        self.slot_freed.notify_one();
    }

    fn release_slot_quiet(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// Stops heartbeating a lease whose job will never report (its future was dropped).
    pub(crate) fn forget_lease(&self, id: i64, token: i64) {
        let mut leases = lock(&self.leases);
        if leases.get(&id) == Some(&token) {
            leases.remove(&id);
        }
    }

    /// Queues a completion for the batched writer.
    pub(crate) fn complete(&self, c: Completion) {
        lock(&self.pending).push(c);
        self.pending_ready.notify_one();
    }

    /// Hands fetched-but-unstarted jobs back at once (shutdown).
    fn hand_back_buffered(&self) {
        let jobs: Vec<FetchedJob> = lock(&self.buffer).drain(..).collect();
        if jobs.is_empty() {
            return;
        }
        tracing::debug!(worker = %self.worker_id, n = jobs.len(), "handing back unstarted jobs");
        for job in jobs {
            self.complete(Completion {
                id: job.id,
                token: job.token,
                state: "available",
                delay: Duration::ZERO,
                error: None,
                refund: true,
            });
            self.release_slot();
        }
    }

    fn begin_stop(&self) {
        if !self.stopping.swap(true, Ordering::AcqRel) {
            self.stop_fetch.cancel();
        }
        self.hand_back_buffered();
    }

    fn snapshot_leases(&self) -> Vec<(i64, i64)> {
        lock(&self.leases).iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn has_pending_completions(&self) -> bool {
        !lock(&self.pending).is_empty() || self.flushing.load(Ordering::Acquire) > 0
    }

    /// Writes up to one batch of pending completions. `Ok(0)`: nothing was pending.
    async fn flush_once(&self) -> Result<usize, crate::QueueError> {
        let cfg = &self.queue.inner.config;
        if lock(&self.pending).is_empty() {
            return Ok(0);
        }
        let _turn = self.maintenance.lock().await;
        let batch: Vec<Completion> = {
            let mut p = lock(&self.pending);
            let n = p.len().min(cfg.completion_max_batch.max(1));
            if n == 0 {
                return Ok(0);
            }
            self.flushing.fetch_add(1, Ordering::AcqRel);
            p.drain(..n).collect()
        };
        let res = statements::complete(&self.queue.inner.db, cfg.statement_timeout, &batch).await;
        match res {
            Ok(updated) => {
                self.stats
                    .add_completions(updated, (batch.len() as u64).saturating_sub(updated));
                if (updated as usize) < batch.len() {
                    tracing::debug!(
                        worker = %self.worker_id,
                        lost = batch.len() - updated as usize,
                        "completions skipped: lease no longer held"
                    );
                }
                {
                    let mut leases = lock(&self.leases);
                    for c in &batch {
                        if leases.get(&c.id) == Some(&c.token) {
                            leases.remove(&c.id);
                        }
                    }
                }
                self.flushing.fetch_sub(1, Ordering::AcqRel);
                Ok(batch.len())
            }
            Err(e) => {
                // Never dropped: put them back in front, keep order.
                let mut p = lock(&self.pending);
                let rest: Vec<Completion> = p.drain(..).collect();
                p.extend(batch);
                p.extend(rest);
                self.flushing.fetch_sub(1, Ordering::AcqRel);
                Err(e)
            }
        }
    }
}

/// Handles of the background tasks of one backend.
pub(crate) struct Driver {
    tasks: Vec<JoinHandle<()>>,
}

impl Driver {
    pub(crate) fn start(shared: &Arc<Shared>, worker: &WorkerContext) -> Self {
        *lock(&shared.worker_name) = worker.name().to_owned();
        let mut tasks = vec![
            tokio::spawn({
                let shared = shared.clone();
                async move {
                    fetch_loop(shared.clone()).await;
                    shared.fetch_exited.store(true, Ordering::Release);
                    shared.fetch_exited_notify.notify_waiters();
                }
            }),
            tokio::spawn(heartbeat_loop(shared.clone())),
            tokio::spawn(completer_loop(shared.clone())),
            tokio::spawn(shutdown_watch(shared.clone(), worker.clone())),
        ];
        if shared.run_rescuer {
            tasks.push(tokio::spawn(rescue_loop(shared.clone())));
        }
        if shared.queue.inner.config.listen_url.is_some() {
            tasks.push(tokio::spawn(listen_loop(shared.clone())));
        }
        Self { tasks }
    }

    pub(crate) fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Graceful close: no more fetching, unstarted leases back at once, pending completions
/// written (retrying until `shutdown_flush_timeout`), then every background task stops.
pub(crate) async fn close(shared: Arc<Shared>) {
    shared.begin_stop();
    let cfg = shared.queue.inner.config.clone();
    let deadline = Instant::now() + cfg.shutdown_flush_timeout;
    // A fetch still on the wire may return leases; they are handed back once it lands.
    while !shared.fetch_exited.load(Ordering::Acquire) && Instant::now() < deadline {
        let wait = shared.fetch_exited_notify.notified();
        if shared.fetch_exited.load(Ordering::Acquire) {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), wait).await;
    }
    let mut backoff = DbBackoff::new(cfg.db_backoff);
    while shared.has_pending_completions() {
        if Instant::now() >= deadline {
            tracing::warn!(
                worker = %shared.worker_id,
                "shutdown: completions not written in time; their leases will lapse and be rescued"
            );
            break;
        }
        match shared.flush_once().await {
            Ok(0) => tokio::time::sleep(Duration::from_millis(10)).await,
            Ok(_) => backoff.reset(),
            Err(e) => {
                tracing::warn!(worker = %shared.worker_id, error = %e, "shutdown flush failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
    let _ = statements::deregister(
        &shared.queue.inner.db,
        cfg.statement_timeout.min(Duration::from_secs(2)),
        &shared.worker_id,
    )
    .await;
    shared.stop_all.cancel();
}

fn log_db_error(shared: &Shared, what: &str, e: &crate::QueueError, failures: u32) {
    shared.stats.add_db_error();
    // The first failure and then every 20th: an outage must not flood the log.
    if failures <= 1 || failures.is_multiple_of(20) {
        tracing::warn!(worker = %shared.worker_id, error = %e, failures, "{what} failed; backing off");
    }
}

/// At most this many fetch statements of one worker in flight at once: a second fetch claims
/// the slots freed while the first is on the wire, so throughput is not bound by one round
/// trip per batch.
const MAX_OUTSTANDING_FETCHES: usize = 2;

/// What a fetch delivered: how many jobs, and the key of the last one.
struct FetchSummary {
    got: usize,
    last: Option<FetchCursor>,
}

/// (slots reserved, whether it started after a cursor, result)
type FetchOutput = (usize, bool, Result<FetchSummary, crate::QueueError>);
type FetchFuture = std::pin::Pin<Box<dyn std::future::Future<Output = FetchOutput> + Send>>;

/// Runs one fetch and hands its jobs to the worker as soon as they arrive; the future ends once
/// its connection is back in the pool, so the fetch loop's count of outstanding fetches is also
/// a count of the connections they hold.
fn issue_fetch(shared: &Arc<Shared>, want: usize, after: Option<FetchCursor>) -> FetchFuture {
    let shared = shared.clone();
    Box::pin(async move {
        let cfg = &shared.queue.inner.config;
        let token: i64 = rand::rng().random();
        let on_wire = OnWire::new(&shared);
        let res = statements::fetch(
            &shared.queue.inner.db,
            cfg.statement_timeout,
            &shared.queue_name,
            want,
            &shared.worker_id,
            token,
            cfg.lease_duration,
            after,
        )
        .await;
        drop(on_wire);
        let res = match res {
            Ok((jobs, conn)) => {
                let summary = deliver(&shared, want, jobs);
                statements::give_back_within(conn, cfg.statement_timeout).await;
                Ok(summary)
            }
            Err(e) => {
                for _ in 0..want {
                    shared.release_slot_quiet();
                }
                Err(e)
            }
        };
        (want, after.is_some(), res)
    })
}

/// Counts a fetch statement as on the wire while it lives.
struct OnWire<'a>(&'a Shared);

impl<'a> OnWire<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.fetches_on_wire.fetch_add(1, Ordering::AcqRel);
        Self(shared)
    }
}

impl Drop for OnWire<'_> {
    fn drop(&mut self) {
        if self.0.fetches_on_wire.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.fetches_landed.notify_waiters();
        }
    }
}

/// Records the leases of fetched jobs, buffers them for the worker and wakes it; releases the
/// slots reserved for jobs the fetch did not find.
fn deliver(shared: &Shared, want: usize, jobs: Vec<FetchedJob>) -> FetchSummary {
    let got = jobs.len();
    for _ in got..want {
        shared.release_slot_quiet();
    }
    let last = jobs.last().map(FetchCursor::of);
    if got > 0 {
        shared.stats.add_fetched(got as u64);
        {
            let mut leases = lock(&shared.leases);
            for j in &jobs {
                leases.insert(j.id, j.token);
            }
        }
        lock(&shared.buffer).extend(jobs);
        if shared.stop_fetch.is_cancelled() {
            shared.hand_back_buffered();
        } else {
            shared.wake_worker();
        }
    }
    FetchSummary { got, last }
}

/// Where the next fetch starts. Fetches start after the last key fetched, except every
/// `FULL_SCAN_INTERVAL` and when the part after the cursor ran dry: then a scan from the head
/// finds jobs that sort earlier (handed back, higher priority, back-dated run_at).
struct ScanPosition {
    cursor: Option<FetchCursor>,
    force_full: bool,
    last_full: Instant,
}

impl ScanPosition {
    fn new() -> Self {
        Self {
            cursor: None,
            force_full: true,
            last_full: Instant::now(),
        }
    }

    /// The key the next fetch starts after; `None`: from the head.
    fn next_start(&mut self) -> Option<FetchCursor> {
        if self.force_full
            || self.cursor.is_none()
            || self.last_full.elapsed() >= defaults::FULL_SCAN_INTERVAL
        {
            self.force_full = false;
            self.last_full = Instant::now();
            None
        } else {
            self.cursor
        }
    }

    /// Takes in what a fetch of `want` jobs found (`bounded`: it started after a cursor).
    /// Returns whether the queue is drained, so polling should wait.
    fn record(&mut self, want: usize, bounded: bool, found: &FetchSummary) -> bool {
        if let Some(c) = found.last
            && self.cursor.is_none_or(|old| c.key() > old.key())
        {
            self.cursor = Some(c);
        }
        if found.got >= want {
            return false;
        }
        if bounded {
            // Dry after the cursor: look from the head at once.
            self.force_full = true;
            false
        } else {
            self.cursor = None;
            true
        }
    }
}

/// Issues fetches for the free slots, up to `MAX_OUTSTANDING_FETCHES` on the wire. A second
/// fetch goes out only for a quarter of the slots or more, so it is worth its connection.
fn fill_free_slots(
    shared: &Arc<Shared>,
    outstanding: &mut futures::stream::FuturesUnordered<FetchFuture>,
    scan: &mut ScanPosition,
) {
    let max_batch = shared.queue.inner.config.fetch_max_batch.max(1);
    let second_fetch_min = (shared.concurrency / 4).max(1);
    while outstanding.len() < MAX_OUTSTANDING_FETCHES {
        let free = shared
            .concurrency
            .saturating_sub(shared.in_flight.load(Ordering::Acquire));
        let enough = if outstanding.is_empty() {
            1
        } else {
            second_fetch_min
        };
        if free < enough {
            break;
        }
        let want = free.min(max_batch);
        let after = scan.next_start();
        shared.in_flight.fetch_add(want, Ordering::AcqRel);
        outstanding.push(issue_fetch(shared, want, after));
    }
}

/// Slots are reserved (counted in `in_flight`) when a fetch is issued, so concurrent fetches
/// can never lease more than the free slots; what a fetch did not get is released after.
async fn fetch_loop(shared: Arc<Shared>) {
    use futures::StreamExt;
    use futures::stream::FuturesUnordered;

    let cfg = shared.queue.inner.config.clone();
    let mut backoff = DbBackoff::new(cfg.db_backoff);
    let stop = shared.stop_fetch.clone();
    let mut outstanding: FuturesUnordered<FetchFuture> = FuturesUnordered::new();
    // Set when a fetch came back short (the queue is drained) or failed: wait before asking.
    let mut wait_until: Option<Instant> = None;
    let mut scan = ScanPosition::new();
    loop {
        let stopping = stop.is_cancelled();
        if stopping && outstanding.is_empty() {
            return;
        }
        let paused = shared.control.paused_remaining();
        if wait_until.is_some_and(|t| Instant::now() >= t) {
            wait_until = None;
        }
        if !stopping && paused.is_none() && wait_until.is_none() {
            fill_free_slots(&shared, &mut outstanding, &mut scan);
        }
        let sleep_for = if stopping {
            None
        } else if let Some(left) = paused {
            Some(left)
        } else {
            wait_until.map(|t| t.saturating_duration_since(Instant::now()))
        };
        tokio::select! {
            // In-flight fetches are awaited even when stopping: their leases are handed back.
            Some((want, bounded, res)) = outstanding.next(), if !outstanding.is_empty() => {
                match res {
                    Ok(found) => {
                        if backoff.failures() > 0 {
                            tracing::info!(worker = %shared.worker_id, "fetch recovered");
                        }
                        backoff.reset();
                        // Drained: poll again later (or when notified).
                        if scan.record(want, bounded, &found) && wait_until.is_none() {
                            wait_until = Some(Instant::now() + cfg.poll_interval);
                        }
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        log_db_error(&shared, "fetch", &e, backoff.failures());
                        wait_until = Some(Instant::now() + delay);
                    }
                }
            }
            _ = stop.cancelled(), if !stopping => {}
            _ = shared.slot_freed.notified(), if !stopping && wait_until.is_none() && paused.is_none() => {}
            _ = shared.new_work.notified(), if !stopping && backoff.failures() == 0 => {
                wait_until = None;
            }
            _ = shared.control.changed(), if !stopping => {}
            _ = tokio::time::sleep(sleep_for.unwrap_or(Duration::ZERO)), if sleep_for.is_some() => {}
        }
    }
}

async fn heartbeat_loop(shared: Arc<Shared>) {
    let cfg = shared.queue.inner.config.clone();
    let pool = &shared.queue.inner.db;
    let mut backoff = DbBackoff::new(cfg.db_backoff);
    let stop = shared.stop_all.clone();
    // First beat at once so the worker shows up on the dashboard.
    let mut next = Duration::ZERO;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
        }
        let _turn = shared.maintenance.lock().await;
        let leases = shared.snapshot_leases();
        let name = lock(&shared.worker_name).clone();
        match statements::heartbeat(
            pool,
            cfg.statement_timeout,
            &shared.worker_id,
            &shared.queue_name,
            &name,
            &leases,
            cfg.lease_duration,
        )
        .await
        {
            Ok(extended) => {
                backoff.reset();
                if (extended as usize) < leases.len() {
                    tracing::debug!(
                        worker = %shared.worker_id,
                        lost = leases.len() - extended as usize,
                        "some leases were no longer ours"
                    );
                }
                next = cfg.heartbeat_interval;
            }
            Err(e) => {
                next = backoff.next_delay().min(cfg.heartbeat_interval);
                log_db_error(&shared, "heartbeat", &e, backoff.failures());
            }
        }
    }
}

async fn completer_loop(shared: Arc<Shared>) {
    let cfg = shared.queue.inner.config.clone();
    let mut backoff = DbBackoff::new(cfg.db_backoff);
    let stop = shared.stop_all.clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = shared.pending_ready.notified() => {}
        }
        // Optionally let a batch gather. Without it (the default) completions still batch:
        // those that arrive while a flush is on the wire go together in the next one.
        if !cfg.completion_flush_interval.is_zero()
            && lock(&shared.pending).len() < cfg.completion_max_batch
        {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(cfg.completion_flush_interval) => {}
            }
        }
        // Fetches go first: a wave of jobs that ended together frees its slots and finishes its
        // rows at the same moment, and the next jobs should not wait behind the completion
        // statement for the database's attention. Bounded, so completions are never starved by
        // a fetch loop that always has a statement on the wire (then they batch up meanwhile).
        let yield_until = tokio::time::Instant::now() + defaults::COMPLETION_YIELD_MAX;
        loop {
            let landed = shared.fetches_landed.notified();
            if shared.fetches_on_wire.load(Ordering::Acquire) == 0 {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = landed => {}
                _ = tokio::time::sleep_until(yield_until) => break,
            }
        }
        loop {
            match shared.flush_once().await {
                Ok(0) => break,
                Ok(_) => {
                    backoff.reset();
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    log_db_error(&shared, "completion flush", &e, backoff.failures());
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

async fn rescue_loop(shared: Arc<Shared>) {
    let cfg = shared.queue.inner.config.clone();
    let pool = &shared.queue.inner.db;
    let mut backoff = DbBackoff::new(cfg.db_backoff);
    let stop = shared.stop_all.clone();
    // Many workers rescue; spread around the interval they drift out of lockstep while the
    // sweeps come as often as configured. Never a zero wait: that would be a tight loop.
    let jitter = |d: Duration| RESCUE_JITTER.apply(d.max(Duration::from_millis(1)));
    let mut next = jitter(cfg.rescue_interval.min(Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
        }
        let res = {
            let _turn = shared.maintenance.lock().await;
            statements::rescue(pool, cfg.statement_timeout).await
        };
        match res {
            Ok(n) => {
                backoff.reset();
                if n > 0 {
                    shared.stats.add_rescued(n);
                    tracing::info!(worker = %shared.worker_id, rescued = n, "returned expired leases");
                    shared.new_work.notify_one();
                }
                next = jitter(cfg.rescue_interval);
            }
            Err(e) => {
                next = backoff.next_delay().min(cfg.rescue_interval);
                log_db_error(&shared, "rescue", &e, backoff.failures());
            }
        }
    }
}

async fn listen_loop(shared: Arc<Shared>) {
    let cfg = shared.queue.inner.config.clone();
    let Some(url) = cfg.listen_url.clone() else {
        return;
    };
    let mut backoff = DbBackoff::new(cfg.db_backoff);
    let stop = shared.stop_all.clone();
    loop {
        let session = listen_session(&shared, &url);
        let res = tokio::select! {
            _ = stop.cancelled() => return,
            res = session => res,
        };
        if let Err(e) = res {
            let delay = backoff.next_delay();
            let e = crate::QueueError::Database {
                op: "listen",
                source: e,
            };
            log_db_error(&shared, "listen", &e, backoff.failures());
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

async fn listen_session(shared: &Shared, url: &str) -> Result<(), sqlx::Error> {
    // Connecting and subscribing are bounded like every other call: on a blackholed network
    // they would otherwise hang, and the loop would never subscribe again. Waiting in `recv`
    // is unbounded on purpose (a quiet channel is normal); polling covers a silent break.
    let after = shared.queue.inner.config.statement_timeout;
    let subscribe = async {
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(defaults::NOTIFY_CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    let mut listener = tokio::time::timeout(after, subscribe).await.map_err(|_| {
        sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "LISTEN did not subscribe within the statement timeout",
        ))
    })??;
    loop {
        let n = listener.recv().await?;
        if n.payload() == shared.queue_name {
            shared.new_work.notify_one();
        }
    }
}

/// apalis signals shutdown only through the worker context; watch it so unstarted leases go
/// back at once instead of after the in-flight jobs finish.
async fn shutdown_watch(shared: Arc<Shared>, worker: WorkerContext) {
    let stop = shared.stop_all.clone();
    loop {
        if worker.is_shutting_down() || shared.stopping.load(Ordering::Acquire) {
            shared.begin_stop();
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SHUTDOWN_WATCH_INTERVAL) => {}
        }
    }
}
