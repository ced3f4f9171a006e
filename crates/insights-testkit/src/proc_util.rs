//! Small helpers shared by the process launchers: free ports, waiting for a port, temp dirs
//! owned by the `postgres` OS user.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::RngExt;

/// The OS user Postgres tools and pgbouncer run as (both refuse to run as root).
pub const PG_OS_USER: &str = "postgres";

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(l.local_addr()?.port())
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub async fn wait_for_port(port: u16, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listening on 127.0.0.1:{port} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates `/tmp/insights-<label>-<random>` owned by [`PG_OS_USER`].
pub fn pg_owned_temp_dir(label: &str) -> anyhow::Result<PathBuf> {
    let suffix: u64 = rand::rng().random();
    let dir = std::env::temp_dir().join(format!("insights-{label}-{suffix:x}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    chown_to_pg(&dir)?;
    Ok(dir)
}

pub fn chown_to_pg(path: &Path) -> anyhow::Result<()> {
    let out = Command::new("chown")
        .args(["-R", &format!("{PG_OS_USER}:{PG_OS_USER}")])
        .arg(path)
        .output()
        .context("running chown")?;
    if !out.status.success() {
        bail!(
            "chown {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A `Command` that runs `program` as [`PG_OS_USER`] (via `runuser` when we are root).
pub fn as_pg_user(program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_OS_USER, "--", program]);
        c
    } else {
        Command::new(program)
    }
}

pub fn is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
}
