//! TLS to the database, as managed Postgres (Supabase, Neon, RDS) requires it: a throwaway
//! cluster with `ssl = on` and a certificate for `localhost` signed by a CA made for the test,
//! reached directly and through a pgbouncer that serves TLS to its clients.

use std::sync::Mutex;
use std::time::Duration;

use insights_e2e::defaults::{CONDITION_TIMEOUT, HARNESS_APPLICATION_NAME, SHUTDOWN_TIMEOUT};
use insights_e2e::mock::start_mock;
use insights_e2e::{E2eDb, Insights, RunOutput, WorkerEnv};
use insights_llm::mock::MockLlmConfig;
use insights_store::pool::{self, PoolSettings};
use insights_testkit::{ClientTls, Cluster, Pgbouncer, PgbouncerOptions, TestCa, wait_until};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};

use crate::support::enqueue;

const LEADS: usize = 20;
/// Sent in every URL below: the cluster trusts every login, so it is never checked; it must
/// never be printed.
const PASSWORD: &str = "tls-s3cret-pw";

/// A cluster serving TLS with `ca`'s certificate, holding database `name`, migrated and seeded
/// with booked leads; the harness reaches it directly.
async fn tls_cluster(ca: &TestCa, name: &str) -> (Cluster, E2eDb, u64) {
    let cert = ca.server_cert.display().to_string();
    let key = ca.server_key.display().to_string();
    let cluster = Cluster::start_with(&[
        ("ssl", "on"),
        ("ssl_cert_file", &cert),
        ("ssl_key_file", &key),
    ])
    .await
    .unwrap();
    let mut admin = PgConnection::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.ok();
    let db = E2eDb::attach(&cluster.url(name), name).await.unwrap();
    db.migrate().await.unwrap();
    db.seed(LEADS, 7).await.unwrap();
    db.book_all().await.unwrap();
    let candidates = db.candidate_ids().await.unwrap().len() as u64;
    assert!(candidates > 0);
    (cluster, db, candidates)
}

/// `postgres://postgres:<PASSWORD>@<host>:<port>/<name>?<query>`.
fn url(host: &str, port: u16, name: &str, query: &str) -> String {
    format!("postgres://postgres:{PASSWORD}@{host}:{port}/{name}?{query}")
}

/// What `pg_stat_ssl` says of the database's backends at one instant (harness excluded).
#[derive(Debug, Clone, Copy, Default)]
struct TlsSample {
    backends: i64,
    encrypted: i64,
    /// Backends whose last statement was LISTEN (the worker's wake-up connection).
    listening: i64,
    listening_encrypted: i64,
}

async fn tls_sample(db: &E2eDb) -> Option<TlsSample> {
    let row = sqlx::query(
        "SELECT count(*) AS backends, count(*) FILTER (WHERE s.ssl) AS encrypted,
                count(*) FILTER (WHERE a.query ILIKE 'LISTEN%') AS listening,
                count(*) FILTER (WHERE a.query ILIKE 'LISTEN%' AND s.ssl) AS listening_encrypted
           FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
          WHERE a.datname = current_database() AND a.backend_type = 'client backend'
            AND a.application_name IS DISTINCT FROM $1",
    )
    .bind(HARNESS_APPLICATION_NAME)
    .fetch_one(&db.pool)
    .await
    .ok()?;
    Some(TlsSample {
        backends: row.get("backends"),
        encrypted: row.get("encrypted"),
        listening: row.get("listening"),
        listening_encrypted: row.get("listening_encrypted"),
    })
}

/// Runs `insights` with `args`, checks that it exits with `code`, and returns its one line of
/// error.
async fn failure_line(env: &WorkerEnv, args: &[&str], code: i32) -> String {
    let out = Insights::with_env(env)
        .args(args.iter().copied())
        .run()
        .await
        .unwrap();
    assert_eq!(out.code(), Some(code), "{args:?}: {}", out.describe());
    one_line(&out)
}

/// The one line a failed start printed, after checking there is exactly one and no password.
fn one_line(out: &RunOutput) -> String {
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one line: {}", out.describe());
    assert!(!out.stderr.contains(PASSWORD), "{}", out.describe());
    assert!(!out.stdout.contains(PASSWORD), "{}", out.describe());
    lines[0].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_ca_encrypts_every_backend_and_fails_in_one_line_without_it() {
    let ca = TestCa::create("tls-ca").unwrap();
    let name = "insights_tls";
    let (cluster, db, candidates) = tls_cluster(&ca, name).await;
    let mock = start_mock(MockLlmConfig {
        latency: Duration::from_millis(200),
        ..MockLlmConfig::default()
    })
    .await
    .unwrap();
    let port = cluster.port;
    let ca_path = ca.ca_cert.display().to_string();
    let verified = url(
        "localhost",
        port,
        name,
        &format!("sslmode=verify-full&sslrootcert={ca_path}"),
    );

    // verify-full with the CA on every URL: the whole pipeline runs, every backend of the
    // worker encrypted, the LISTEN connection (DIRECT_DATABASE_URL) included.
    let env = WorkerEnv::new(&verified, &mock.base_url())
        .set("QUEUE_DATABASE_URL", &verified)
        .set("DIRECT_DATABASE_URL", &verified);
    let report = enqueue(&env, &[]).await;
    assert_eq!(report.enqueued, candidates, "{report:?}");
    let mut worker = Insights::with_env(&env)
        .arg("work")
        .spawn("tls-worker")
        .unwrap();
    let sampled = Mutex::new(TlsSample::default());
    wait_until(
        Duration::from_secs(60),
        "the worker writes every insight",
        || {
            let (db, sampled) = (&db, &sampled);
            async move {
                if let Some(now) = tls_sample(db).await {
                    let mut seen = sampled.lock().unwrap();
                    // The sample that saw the most backends, the listener among them.
                    if now.listening > 0 && now.backends >= seen.backends {
                        *seen = now;
                    }
                }
                db.insight_count().await.unwrap_or(0) == candidates
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", worker.describe()));
    worker.terminate(SHUTDOWN_TIMEOUT).await.unwrap();
    let seen = sampled.into_inner().unwrap();
    println!("worker backends: {seen:?}");
    assert!(seen.backends >= 2, "the pool and the listener: {seen:?}");
    assert_eq!(seen.backends, seen.encrypted, "every backend uses TLS");
    assert_eq!(seen.listening, 1, "{seen:?}");
    assert_eq!(seen.listening_encrypted, 1, "{seen:?}");
    assert!(
        !worker.stderr().contains(PASSWORD) && !worker.stdout().contains(PASSWORD),
        "the password leaked into the worker's output"
    );

    // verify-full without the CA: `work` refuses to start, in one line naming the URL (password
    // redacted), the variable, the certificate problem and what to add.
    let line = failure_line(
        &WorkerEnv::new(
            &url("localhost", port, name, "sslmode=verify-full"),
            &mock.base_url(),
        ),
        &["work"],
        1,
    )
    .await;
    assert!(
        line.starts_with(&format!(
            "error: cannot reach database at postgres://postgres:***@localhost:{port}/{name}\
             ?sslmode=verify-full (DATABASE_URL): the server's certificate is not signed by a CA \
             this client trusts: add sslrootcert="
        )),
        "{line}"
    );
    assert!(line.contains("UnknownIssuer"), "{line}");
    assert!(!line.contains("error communicating"), "{line}");

    // The queue's URL and the direct URL carry their own TLS options, and a failure names
    // the variable to fix.
    let line = failure_line(
        &WorkerEnv::new(&verified, &mock.base_url()).set(
            "QUEUE_DATABASE_URL",
            url("localhost", port, name, "sslmode=verify-full"),
        ),
        &["work"],
        1,
    )
    .await;
    assert!(
        line.contains("?sslmode=verify-full (QUEUE_DATABASE_URL): the server's certificate"),
        "{line}"
    );
    // `migrate` connects through it; `work` checks it before relying on it for LISTEN.
    for command in ["migrate", "work"] {
        let line = failure_line(
            &WorkerEnv::new(&verified, &mock.base_url()).set(
                "DIRECT_DATABASE_URL",
                url("localhost", port, name, "sslmode=verify-full"),
            ),
            &[command],
            1,
        )
        .await;
        assert!(
            line.contains("?sslmode=verify-full (DIRECT_DATABASE_URL): the server's certificate"),
            "{command}: {line}"
        );
    }

    // A CA file that is not there is a configuration error (exit 2) naming the file.
    let missing = ca.dir.join("absent.crt");
    let line = failure_line(
        &WorkerEnv::new(
            &url(
                "localhost",
                port,
                name,
                &format!("sslmode=verify-full&sslrootcert={}", missing.display()),
            ),
            &mock.base_url(),
        ),
        &["work"],
        2,
    )
    .await;
    assert!(
        line.contains(&format!(
            "(DATABASE_URL): sslrootcert {}: cannot read it: ",
            missing.display()
        )),
        "{line}"
    );

    // verify-full checks the host name: the same server as 127.0.0.1, a name its certificate
    // does not carry, is refused.
    let line = failure_line(
        &WorkerEnv::new(
            &url(
                "127.0.0.1",
                port,
                name,
                &format!("sslmode=verify-full&sslrootcert={ca_path}"),
            ),
            &mock.base_url(),
        ),
        &["enqueue", "--dry-run"],
        1,
    )
    .await;
    assert!(
        line.contains("the server's certificate does not name the URL's host"),
        "{line}"
    );

    // require: encrypted without verifying the server, as libpq does.
    let out = Insights::with_env(&WorkerEnv::new(
        &url("localhost", port, name, "sslmode=require"),
        &mock.base_url(),
    ))
    .args(["enqueue", "--dry-run", "--json"])
    .run()
    .await
    .unwrap();
    assert_eq!(out.code(), Some(0), "{}", out.describe());
}

/// Each `sslmode` reaches the driver through each of the three URLs: the pools the worker and
/// `migrate` build from the settings are encrypted, or not, as the mode says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sslmode_holds_for_all_three_urls() {
    let ca = TestCa::create("tls-modes").unwrap();
    let name = "insights_tls_modes";
    let (cluster, _db, _) = tls_cluster(&ca, name).await;
    let ca_path = ca.ca_cert.display().to_string();
    let port = cluster.port;
    // (host, query, encrypted)
    let modes = [
        ("localhost", "sslmode=disable".to_owned(), false),
        ("localhost", "sslmode=prefer".to_owned(), true),
        ("127.0.0.1", "sslmode=require".to_owned(), true),
        // verify-ca checks the CA, not the name: 127.0.0.1 is not in the certificate.
        (
            "127.0.0.1",
            format!("sslmode=verify-ca&sslrootcert={ca_path}"),
            true,
        ),
        (
            "localhost",
            format!("sslmode=verify-full&sslrootcert={ca_path}"),
            true,
        ),
    ];
    for (host, query, encrypted) in &modes {
        let url = url(host, port, name, query);
        let settings = WorkerEnv::new(&url, "http://127.0.0.1:9/v1")
            .set("QUEUE_DATABASE_URL", &url)
            .set("DIRECT_DATABASE_URL", &url)
            .settings()
            .unwrap();
        let pools = [
            PoolSettings::app_from_settings(&settings).unwrap(),
            PoolSettings::queue_from_settings(&settings).unwrap(),
            PoolSettings::migration_from_settings(&settings).unwrap(),
        ];
        for ps in pools {
            let pool = pool::connect(&ps).await.unwrap_or_else(|e| panic!("{e}"));
            let ssl: bool =
                sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_eq!(ssl, *encrypted, "{}", ps.target());
            pool.close().await;
        }
    }
    // verify-ca still checks the CA.
    let ps = PoolSettings::new(insights_core::DatabaseUrl::new(url(
        "127.0.0.1",
        port,
        name,
        "sslmode=verify-ca",
    )));
    let err = pool::connect(&ps).await.unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

/// TLS between the worker and pgbouncer is pgbouncer's client side (`client_tls_*`); its own
/// connections to Postgres are `server_tls_*`. With both on, everything on the wire is
/// encrypted: pgbouncer's `SHOW CLIENTS` lists the worker's connections with their TLS
/// parameters and `pg_stat_ssl` shows pgbouncer's server connections encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_with_verify_full_every_client_connection_is_encrypted() {
    let ca = TestCa::create("tls-pooler").unwrap();
    let name = "insights_tls_pooler";
    let (cluster, db, candidates) = tls_cluster(&ca, name).await;
    let ca_path = ca.ca_cert.display().to_string();
    let bouncer = Pgbouncer::start(PgbouncerOptions {
        upstream_host: "localhost".into(),
        upstream_port: cluster.port,
        default_pool_size: 4,
        client_tls: Some(ClientTls::required(&ca)),
        extra: vec![
            "server_tls_sslmode = verify-full".to_owned(),
            format!("server_tls_ca_file = {ca_path}"),
        ],
        ..PgbouncerOptions::default()
    })
    .await
    .unwrap();
    let tls_query = format!("sslmode=verify-full&sslrootcert={ca_path}");
    let via_bouncer = url(
        "localhost",
        bouncer.port,
        name,
        &format!("{tls_query}&pgbouncer=true"),
    );
    let mock = start_mock(MockLlmConfig {
        latency: Duration::from_millis(200),
        ..MockLlmConfig::default()
    })
    .await
    .unwrap();
    let env = WorkerEnv::new(&via_bouncer, &mock.base_url());
    let report = enqueue(&env, &[]).await;
    assert_eq!(report.enqueued, candidates, "{report:?}");

    // The admin console is a client like any other: it needs TLS too.
    let admin = format!("{}?{tls_query}", bouncer.localhost_url("pgbouncer"))
        .parse::<PgConnectOptions>()
        .unwrap()
        .extra_float_digits(None);
    let mut worker = Insights::with_env(&env)
        .arg("work")
        .spawn("tls-pooler-worker")
        .unwrap();
    // (clients of the test database, of which on TLS), from `SHOW CLIENTS`; and the server side.
    let clients = Mutex::new((0_usize, 0_usize));
    let servers = Mutex::new(TlsSample::default());
    wait_until(CONDITION_TIMEOUT, "the worker writes every insight", || {
        let (db, admin, clients, servers) = (&db, &admin, &clients, &servers);
        async move {
            if let Some(now) = show_clients(admin, name).await {
                let mut seen = clients.lock().unwrap();
                if now.0 >= seen.0 {
                    *seen = now;
                }
            }
            if let Some(now) = tls_sample(db).await {
                let mut seen = servers.lock().unwrap();
                if now.backends >= seen.backends {
                    *seen = now;
                }
            }
            db.insight_count().await.unwrap_or(0) == candidates
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", worker.describe(), bouncer.log()));
    worker.terminate(SHUTDOWN_TIMEOUT).await.unwrap();
    let (clients, on_tls) = clients.into_inner().unwrap();
    let servers = servers.into_inner().unwrap();
    println!("pgbouncer clients: {clients}, on TLS: {on_tls}; server side: {servers:?}");
    assert!(clients > 0, "sampled the worker's client connections");
    assert_eq!(
        clients, on_tls,
        "every client connection of the worker uses TLS"
    );
    assert!(servers.backends > 0, "{servers:?}");
    assert_eq!(servers.backends, servers.encrypted, "{servers:?}");

    // pgbouncer refuses a client without TLS: the setting is in force.
    let line = failure_line(
        &WorkerEnv::new(
            &url(
                "localhost",
                bouncer.port,
                name,
                "sslmode=disable&pgbouncer=true",
            ),
            &mock.base_url(),
        ),
        &["enqueue", "--dry-run"],
        1,
    )
    .await;
    assert!(line.contains("SSL required"), "{line}");
}

/// `SHOW CLIENTS` on pgbouncer's admin console: how many clients of `database` there are and
/// how many of them negotiated TLS (the `tls` column is empty for a plaintext client).
async fn show_clients(admin: &PgConnectOptions, database: &str) -> Option<(usize, usize)> {
    let mut conn = PgConnection::connect_with(admin).await.ok()?;
    let rows = sqlx::raw_sql("SHOW CLIENTS")
        .fetch_all(&mut conn)
        .await
        .ok()?;
    conn.close().await.ok();
    let mut clients = 0;
    let mut on_tls = 0;
    for row in rows {
        if row.try_get::<String, _>("database").ok()? != database {
            continue;
        }
        clients += 1;
        if !row.try_get::<String, _>("tls").ok()?.is_empty() {
            on_tls += 1;
        }
    }
    Some((clients, on_tls))
}
