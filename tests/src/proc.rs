//! A spawned child process whose stdout and stderr go to files (so a chatty child never blocks
//! on a full pipe and the logs survive for assertions), with deadline waits, SIGKILL and SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

/// A running (or finished) child, killed on drop. Its log directory (under the system temp
/// directory) is removed on drop, except while a panic unwinds (a failing test), so the logs
/// of a failure stay for inspection; [`Proc::describe`] names the directory.
#[derive(Debug)]
pub struct Proc {
    pub label: String,
    child: tokio::process::Child,
    pid: u32,
    dir: PathBuf,
    status: Option<ExitStatus>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh directory for one child's logs.
pub fn log_dir(label: &str) -> anyhow::Result<PathBuf> {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("insights-e2e-{label}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

impl Proc {
    /// Spawns `cmd` with stdout/stderr redirected to files in a new log directory.
    pub fn spawn(label: &str, mut cmd: tokio::process::Command) -> anyhow::Result<Self> {
        let dir = log_dir(label)?;
        let out = std::fs::File::create(dir.join("stdout.log"))?;
        let err = std::fs::File::create(dir.join("stderr.log"))?;
        cmd.stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {label} ({cmd:?})"))?;
        let pid = child.id().context("spawned child has no pid")?;
        Ok(Self {
            label: label.to_owned(),
            child,
            pid,
            dir,
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's arguments as the system shows them to every user (`/proc/<pid>/cmdline`,
    /// NUL-separated), read while it runs.
    pub fn cmdline(&self) -> anyhow::Result<String> {
        let path = format!("/proc/{}/cmdline", self.pid);
        let raw = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
        Ok(String::from_utf8_lossy(&raw).replace('\0', " "))
    }

    pub fn log_dir(&self) -> &Path {
        &self.dir
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(st)) => {
                self.status = Some(st);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// The exit status if it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.is_running();
        self.status
    }

    /// Waits for the exit, at most `within`; on timeout the child is left running and the error
    /// carries the tail of its stderr.
    pub async fn wait(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(st) = self.status {
            return Ok(st);
        }
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(st)) => {
                self.status = Some(st);
                Ok(st)
            }
            Ok(Err(e)) => Err(e).with_context(|| format!("waiting for {}", self.label)),
            Err(_) => bail!(
                "{} (pid {}) still running after {within:?}; stderr tail:\n{}",
                self.label,
                self.pid,
                tail(&self.stderr(), 40)
            ),
        }
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        self.child.start_kill().context("SIGKILL")?;
        let st = self.child.wait().await?;
        self.status = Some(st);
        Ok(())
    }

    /// Sends SIGTERM (through `kill -TERM`: no unsafe code in this workspace); does not wait.
    pub fn sigterm(&mut self) -> anyhow::Result<()> {
        if !self.is_running() {
            bail!("{} (pid {}) is not running", self.label, self.pid);
        }
        let st = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .context("running kill -TERM")?;
        if !st.success() {
            bail!("kill -TERM {} failed: {st}", self.pid);
        }
        Ok(())
    }

    /// SIGTERM, then wait for the exit within `within`.
    pub async fn terminate(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        self.sigterm()?;
        self.wait(within).await
    }

    /// A description for assertion messages: label, pid, status, log directory and stderr tail.
    pub fn describe(&self) -> String {
        format!(
            "{} (pid {}, status {:?}, logs in {})\n--- stderr (tail) ---\n{}",
            self.label,
            self.pid,
            self.status,
            self.dir.display(),
            tail(&self.stderr(), 40)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The child itself is killed by `kill_on_drop`.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
