//! A throwaway PostgreSQL cluster (initdb + pg_ctl as the `postgres` OS user) on a free port,
//! for tests that stop and restart the database.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::proc_util::{PG_OS_USER, as_pg_user, free_port, pg_owned_temp_dir, wait_for_port};

/// Directory holding `initdb` and `pg_ctl`. Override with `INSIGHTS_TEST_PG_BIN`.
pub fn pg_bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("INSIGHTS_TEST_PG_BIN") {
        return PathBuf::from(d);
    }
    // Newest installed major version.
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| PathBuf::from("/usr/bin"))
}

/// A private cluster: trust auth, user `postgres`, fsync off. Stopped (immediate) and deleted
/// on drop.
#[derive(Debug)]
pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    /// Server settings beyond the defaults, as `name=value` (`-c` options).
    settings: Vec<String>,
}

impl Cluster {
    /// initdb + start; waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// As [`Self::start`], with extra server `settings` (`("ssl", "on")`).
    pub async fn start_with(settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = pg_owned_temp_dir("cluster")?;
        let data = dir.join("data");
        let bin = pg_bin_dir();
        let port = free_port()?;
        let me = Self {
            port,
            dir,
            data,
            bin,
            settings: settings.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        };
        me.run_pg(
            "initdb",
            &[
                "-D",
                &me.data.display().to_string(),
                "-U",
                PG_OS_USER,
                "-A",
                "trust",
                "--no-sync",
                "--no-instructions",
            ],
        )
        .await
        .context("initdb")?;
        me.start_server().await?;
        Ok(me)
    }

    async fn run_pg(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bin.join(tool).display().to_string();
        let mut cmd: tokio::process::Command = as_pg_user(&program).into();
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd
            .output()
            .await
            .with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            bail!(
                "{tool} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Starts the server (after [`Self::stop`]) and waits until it accepts connections.
    pub async fn start_server(&self) -> anyhow::Result<()> {
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        for setting in &self.settings {
            opts.push_str(" -c ");
            opts.push_str(setting);
        }
        self.run_pg(
            "pg_ctl",
            &[
                "-D",
                &self.data.display().to_string(),
                "-l",
                &self.dir.join("server.log").display().to_string(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .await
        .context("pg_ctl start")?;
        wait_for_port(self.port, Duration::from_secs(30)).await
    }

    /// Fast shutdown: in-flight sessions get 57P01, new connections are refused.
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.run_pg(
            "pg_ctl",
            &[
                "-D",
                &self.data.display().to_string(),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop",
            ],
        )
        .await
        .context("pg_ctl stop")
    }

    /// URL of `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{PG_OS_USER}@127.0.0.1:{}/{database}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl").display().to_string();
        let _ = as_pg_user(&program)
            .args([
                "-D",
                &self.data.display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
