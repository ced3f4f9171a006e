//! Samples the workers' `/readyz` and the pipeline's progress in the background while a fault
//! lasts, so a probe that hangs (the worker bounds its own probe at 2 s) never stretches the
//! fault itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::defaults::{PROBE_CLIENT_TIMEOUT, READY_PROBE_EVERY, SAMPLE_EVERY};

/// What the monitor saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    /// `/readyz` answered with a status other than 200 at least once.
    pub not_ready: bool,
    /// Probes that got no answer at all within [`PROBE_CLIENT_TIMEOUT`].
    pub unanswered: usize,
    /// The last progress figure read (see `Topology::progress`).
    pub last_progress: Option<i64>,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    not_ready: AtomicBool,
    unanswered: AtomicUsize,
    /// `i64::MIN` until the first successful read.
    progress: AtomicI64,
}

pub struct Monitor {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Monitor {
    /// Probes `http://127.0.0.1:<port>/readyz` of every port every [`READY_PROBE_EVERY`] and
    /// reads progress from `pool` every [`SAMPLE_EVERY`], until [`Monitor::finish`].
    pub fn start(
        ports: Vec<u16>,
        pool: PgPool,
        progress_sql: &'static str,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            progress: AtomicI64::new(i64::MIN),
            ..Shared::default()
        });
        let http = reqwest::Client::builder()
            .timeout(PROBE_CLIENT_TIMEOUT)
            .build()?;
        let mut tasks = Vec::new();
        for port in ports {
            let shared = shared.clone();
            let http = http.clone();
            tasks.push(tokio::spawn(async move {
                while !shared.stop.load(Ordering::Relaxed) {
                    match http
                        .get(format!("http://127.0.0.1:{port}/readyz"))
                        .send()
                        .await
                    {
                        Ok(r) if r.status().as_u16() != 200 => {
                            shared.not_ready.store(true, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            shared.unanswered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(READY_PROBE_EVERY).await;
                }
            }));
        }
        let progress = shared.clone();
        tasks.push(tokio::spawn(async move {
            while !progress.stop.load(Ordering::Relaxed) {
                let q = sqlx::query_scalar::<_, i64>(progress_sql).fetch_one(&pool);
                if let Ok(Ok(p)) = tokio::time::timeout(Duration::from_secs(2), q).await {
                    progress.progress.store(p, Ordering::Relaxed);
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        }));
        Ok(Self { shared, tasks })
    }

    /// Stops sampling (without waiting for a probe in flight) and returns what was seen.
    pub fn finish(self) -> Seen {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
        let p = self.shared.progress.load(Ordering::Relaxed);
        Seen {
            not_ready: self.shared.not_ready.load(Ordering::Relaxed),
            unanswered: self.shared.unanswered.load(Ordering::Relaxed),
            last_progress: (p != i64::MIN).then_some(p),
        }
    }
}
