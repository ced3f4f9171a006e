//! The real `insights` binary: where to find it, and a command builder with a clean
//! environment (only what the test sets, plus PATH/HOME), run to completion or spawned.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::defaults::{CHILD_RUST_LOG, COMMAND_TIMEOUT};
use crate::env::WorkerEnv;
use crate::proc::{Proc, tail};

/// Path of the `insights` binary: `INSIGHTS_BIN` when set, else next to the test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/insights`). Tests never run cargo (it
/// would deadlock on the build lock): `scripts/test` builds the binary first.
pub fn insights_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("INSIGHTS_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("INSIGHTS_BIN={} does not exist", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("the test executable has no target/<profile> directory")?;
    let bin = profile_dir.join("insights");
    if !bin.is_file() {
        bail!(
            "the insights binary is missing at {}: run `cargo build -p insights-cli --bin insights` \
             (or `scripts/test`, which builds it before the tests), or set INSIGHTS_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Fails with both outputs unless the exit code is 0.
    pub fn ok(self) -> anyhow::Result<Self> {
        if !self.status.success() {
            bail!("{}", self.describe());
        }
        Ok(self)
    }

    /// The last line of stdout parsed as JSON (`--json` commands print one line).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .with_context(|| format!("no output to parse; {}", self.describe()))?;
        serde_json::from_str(line).with_context(|| format!("parsing {line:?}"))
    }

    pub fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout ---\n{}\n--- stderr (tail) ---\n{}",
            self.status,
            tail(&self.stdout, 20),
            tail(&self.stderr, 40)
        )
    }
}

/// `insights <args>` with an explicit environment.
#[derive(Debug, Clone, Default)]
pub struct Insights {
    env: BTreeMap<String, String>,
    args: Vec<String>,
}

impl Insights {
    /// No variables but PATH/HOME (and `RUST_LOG=info` unless set).
    pub fn new() -> Self {
        Self::default()
    }

    /// With every variable of `env`.
    pub fn with_env(env: &WorkerEnv) -> Self {
        let mut me = Self::new();
        for (k, v) in env.vars() {
            me.env.insert(k.clone(), v.clone());
        }
        me
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.remove(key);
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The tokio command (clean environment).
    pub fn command(&self) -> anyhow::Result<tokio::process::Command> {
        let mut cmd = tokio::process::Command::new(insights_bin()?);
        cmd.env_clear();
        for key in ["PATH", "HOME", "TMPDIR"] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        if !self.env.contains_key("RUST_LOG") {
            cmd.env("RUST_LOG", CHILD_RUST_LOG);
        }
        cmd.envs(&self.env).args(&self.args);
        Ok(cmd)
    }

    /// Runs to completion within [`COMMAND_TIMEOUT`].
    pub async fn run(&self) -> anyhow::Result<RunOutput> {
        self.run_within(COMMAND_TIMEOUT).await
    }

    /// Runs to completion within `within` (the child is killed on timeout).
    pub async fn run_within(&self, within: Duration) -> anyhow::Result<RunOutput> {
        let label = self
            .args
            .first()
            .cloned()
            .unwrap_or_else(|| "insights".to_owned());
        let mut p = self.spawn(&label)?;
        let status = match p.wait(within).await {
            Ok(st) => st,
            Err(e) => {
                let _ = p.kill().await;
                return Err(e.context(format!("insights {:?}", self.args)));
            }
        };
        Ok(RunOutput {
            status,
            stdout: p.stdout(),
            stderr: p.stderr(),
        })
    }

    /// Starts it in the background (stdout/stderr to files).
    pub fn spawn(&self, label: &str) -> anyhow::Result<Proc> {
        Proc::spawn(label, self.command()?)
    }
}
