//! The per-scenario topology: a throwaway Postgres cluster → its own pgbouncer (transaction
//! mode) → the fault proxy → the real `insights work`, plus the in-process mock LLM. Each
//! scenario builds its own, so a scenario that stops Postgres cannot disturb another one.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use insights_e2e::{E2eDb, Insights, Proc, WorkerEnv};
use insights_llm::mock::{MockHandle, MockLlmConfig};
use insights_testkit::{Cluster, FaultProxy, Pgbouncer, PgbouncerOptions, free_port, wait_until};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::defaults::{
    CONCURRENCY, LEADS, POOLER_POOL_SIZE, QUERY_WAIT_TIMEOUT_SECS, SEED, SERVER_LOGIN_RETRY_SECS,
    START_TIMEOUT,
};

/// Insights written plus jobs finished: grows whenever the pipeline makes progress.
pub const PROGRESS_SQL: &str = "SELECT (SELECT count(*) FROM lead_conversation_insights)
      + (SELECT count(*) FROM insights_queue.jobs
          WHERE state IN ('completed', 'discarded', 'cancelled'))";

/// Everything one scenario runs against.
pub struct Topology {
    pub cluster: Cluster,
    pub bouncer: Pgbouncer,
    pub proxy: FaultProxy,
    /// The scenario's database on the cluster, through a direct connection (the harness's).
    pub db: E2eDb,
    pub mock: MockHandle,
    /// Candidate leads after seeding (every one must end with one fresh insight).
    pub candidates: Vec<i64>,
}

impl Topology {
    /// Starts the cluster, pgbouncer, proxy and mock; creates, migrates and seeds the database
    /// with [`LEADS`] booked leads and enqueues one job per lead.
    pub async fn start(label: &str, mock_cfg: MockLlmConfig) -> anyhow::Result<Self> {
        let cluster = Cluster::start()
            .await
            .context("starting the throwaway cluster")?;
        let name = format!("insights_fault_{label}");
        let mut admin = PgConnection::connect(&cluster.url("postgres"))
            .await
            .context("connecting to the throwaway cluster")?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut admin)
            .await?;
        admin.close().await.ok();

        let bouncer = Pgbouncer::start(PgbouncerOptions {
            upstream_port: cluster.port,
            default_pool_size: POOLER_POOL_SIZE,
            server_login_retry: SERVER_LOGIN_RETRY_SECS,
            extra: vec![format!("query_wait_timeout = {QUERY_WAIT_TIMEOUT_SECS}")],
            ..PgbouncerOptions::default()
        })
        .await?;
        let proxy = FaultProxy::start_to_port(bouncer.port).await?;

        let db = E2eDb::attach(&cluster.url(&name), &name).await?;
        db.migrate().await?;
        db.seed(LEADS, SEED).await?;
        // The seed books about nine leads in ten; the scenarios want every lead a candidate.
        sqlx::query("UPDATE leads SET booked_at = coalesce(booked_at, now())")
            .execute(&db.pool)
            .await?;
        db.record_insight_writes().await?;
        let candidates = db.candidate_ids().await?;
        if candidates.len() != LEADS {
            bail!(
                "expected {LEADS} candidates after seeding, got {}",
                candidates.len()
            );
        }
        let mock = insights_e2e::start_mock(mock_cfg).await?;
        let me = Self {
            cluster,
            bouncer,
            proxy,
            db,
            mock,
            candidates,
        };
        let out = Insights::new()
            .env("DATABASE_URL", &me.db.url)
            .args(["enqueue", "--json"])
            .run()
            .await?
            .ok()?;
        let counts: serde_json::Value = out.json()?;
        if counts["enqueued"].as_u64() != Some(LEADS as u64) {
            bail!("enqueue did not enqueue {LEADS} jobs: {counts}");
        }
        Ok(me)
    }

    /// The worker's `DATABASE_URL`: through the proxy, then pgbouncer.
    pub fn worker_url(&self) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{}?pgbouncer=true",
            insights_testkit::PG_OS_USER,
            self.proxy.port(),
            self.db.name
        )
    }

    /// Connection options straight to pgbouncer (not through the proxy), for other clients.
    pub fn pooler_options(&self) -> anyhow::Result<PgConnectOptions> {
        Ok(
            PgConnectOptions::from_str(&self.bouncer.url(&self.db.name))?
                .extra_float_digits(None)
                .application_name("insights-fault-hog"),
        )
    }

    /// Spawns `insights work --concurrency 16` with its HTTP server on a free port, and waits
    /// until `/healthz` answers.
    pub async fn spawn_worker(&self, label: &str) -> anyhow::Result<Worker> {
        let http_port = free_port()?;
        let mut env = WorkerEnv::new(&self.worker_url(), &self.mock.base_url())
            .set("INSIGHTS_HTTP_BIND", format!("127.0.0.1:{http_port}"));
        // A more verbose worker log for investigating a scenario, e.g.
        // `INSIGHTS_FAULT_WORKER_LOG=info,insights_store=debug`.
        if let Ok(filter) = std::env::var("INSIGHTS_FAULT_WORKER_LOG") {
            env = env.set("RUST_LOG", filter);
        }
        let proc = Insights::with_env(&env)
            .args(["work", "--concurrency", &CONCURRENCY.to_string()])
            .spawn(label)?;
        let mut w = Worker {
            proc,
            http_port,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        };
        let started = Instant::now();
        loop {
            if w.probe("/healthz").await == Some(200) {
                break;
            }
            if !w.proc.is_running() {
                bail!("worker exited during start-up: {}", w.proc.describe());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("worker /healthz never answered: {}", w.proc.describe());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(w)
    }

    /// Jobs finished plus insights written: grows whenever the pipeline makes progress. `None`
    /// when the database does not answer (it may be the fault).
    pub async fn progress(&self) -> Option<i64> {
        let q = sqlx::query_scalar::<_, i64>(PROGRESS_SQL).fetch_one(&self.db.pool);
        tokio::time::timeout(Duration::from_secs(2), q)
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Jobs in a terminal state.
    pub async fn finished_jobs(&self) -> Option<i64> {
        let q = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM insights_queue.jobs
              WHERE state IN ('completed', 'discarded', 'cancelled')",
        )
        .fetch_one(&self.db.pool);
        tokio::time::timeout(Duration::from_secs(2), q)
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Waits until at least `n` jobs are finished.
    pub async fn wait_finished(&self, n: i64, within: Duration) -> anyhow::Result<()> {
        wait_until(within, &format!("{n} jobs finished"), || async {
            self.finished_jobs().await.is_some_and(|f| f >= n)
        })
        .await
    }

    /// Backends of the scenario's database that are not the harness's (the pooler's server
    /// connections), terminated with `pg_terminate_backend`. Returns how many.
    pub async fn terminate_worker_backends(&self) -> anyhow::Result<i64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (
                SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND backend_type = 'client backend'
                   AND pid <> pg_backend_pid()
                   AND application_name IS DISTINCT FROM $2) t",
        )
        .bind(&self.db.name)
        .bind(insights_e2e::defaults::HARNESS_APPLICATION_NAME)
        .fetch_one(&self.db.pool)
        .await?;
        Ok(n)
    }
}

/// A running `insights work`.
pub struct Worker {
    pub proc: Proc,
    pub http_port: u16,
    http: reqwest::Client,
}

impl Worker {
    /// Status code of `GET path` on the worker's HTTP server; `None` when it does not answer.
    pub async fn probe(&self, path: &str) -> Option<u16> {
        self.http
            .get(format!("http://127.0.0.1:{}{path}", self.http_port))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// Fails with the worker's log tail when it is no longer running.
    pub fn assert_alive(&mut self, when: &str) -> anyhow::Result<()> {
        if !self.proc.is_running() {
            bail!(
                "worker {} exited unexpectedly {when}: {}",
                self.proc.label,
                self.proc.describe()
            );
        }
        Ok(())
    }
}
