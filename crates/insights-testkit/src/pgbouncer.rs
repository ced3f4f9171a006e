//! A throwaway pgbouncer (transaction pooling) in front of a Postgres server, for tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::proc_util::{PG_OS_USER, free_port, is_root, pg_owned_temp_dir, wait_for_port};
use crate::tls::TestCa;

/// Where Debian installs it.
pub const PGBOUNCER_BIN: &str = "/usr/sbin/pgbouncer";

/// Settings of a test pgbouncer.
#[derive(Debug, Clone)]
pub struct PgbouncerOptions {
    pub upstream_host: String,
    pub upstream_port: u16,
    pub pool_mode: String,
    pub default_pool_size: u32,
    pub max_client_conn: u32,
    /// Seconds before retrying a failed server login (pgbouncer's default 15 makes recovery
    /// slow after an outage).
    pub server_login_retry: u32,
    /// TLS between clients and pgbouncer; `None`: plaintext only. (pgbouncer's own connections
    /// to Postgres are `server_tls_*`, set through `extra`.)
    pub client_tls: Option<ClientTls>,
    /// Extra `key = value` lines for the `[pgbouncer]` section.
    pub extra: Vec<String>,
}

/// pgbouncer's side of client TLS: `client_tls_sslmode` and the certificate it presents.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// `client_tls_sslmode`: `require` refuses a client that does not ask for TLS.
    pub sslmode: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl ClientTls {
    /// Every client must use TLS; pgbouncer presents `ca`'s server certificate (for
    /// `localhost`).
    pub fn required(ca: &TestCa) -> Self {
        Self {
            sslmode: "require".into(),
            cert_file: ca.server_cert.clone(),
            key_file: ca.server_key.clone(),
        }
    }
}

impl Default for PgbouncerOptions {
    fn default() -> Self {
        Self {
            upstream_host: "127.0.0.1".into(),
            upstream_port: 5432,
            pool_mode: "transaction".into(),
            default_pool_size: 2,
            max_client_conn: 200,
            server_login_retry: 1,
            client_tls: None,
            extra: Vec::new(),
        }
    }
}

/// A running pgbouncer, killed (and its directory removed) on drop.
#[derive(Debug)]
pub struct Pgbouncer {
    pub port: u16,
    pub dir: PathBuf,
    ini: PathBuf,
    child: Option<Child>,
}

impl Pgbouncer {
    /// Starts pgbouncer on a free 127.0.0.1 port and waits until it accepts connections.
    pub async fn start(opts: PgbouncerOptions) -> anyhow::Result<Self> {
        if !std::path::Path::new(PGBOUNCER_BIN).exists() {
            bail!("{PGBOUNCER_BIN} is not installed");
        }
        let dir = pg_owned_temp_dir("pgbouncer")?;
        let port = free_port()?;
        let userlist = dir.join("userlist.txt");
        std::fs::write(&userlist, format!("\"{PG_OS_USER}\" \"\"\n"))?;
        let ini = dir.join("pgbouncer.ini");
        let mut text = format!(
            "[databases]\n* = host={host} port={uport}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {userlist}\n\
             pool_mode = {mode}\ndefault_pool_size = {size}\nmin_pool_size = 0\n\
             reserve_pool_size = 0\nmax_client_conn = {maxc}\nserver_login_retry = {retry}\n\
             logfile = {log}\nadmin_users = {PG_OS_USER}\n",
            host = opts.upstream_host,
            uport = opts.upstream_port,
            userlist = userlist.display(),
            mode = opts.pool_mode,
            size = opts.default_pool_size,
            maxc = opts.max_client_conn,
            retry = opts.server_login_retry,
            log = dir.join("pgbouncer.log").display(),
        );
        if let Some(tls) = &opts.client_tls {
            text.push_str(&format!(
                "client_tls_sslmode = {}\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\n",
                tls.sslmode,
                tls.cert_file.display(),
                tls.key_file.display()
            ));
        }
        for line in &opts.extra {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&ini, text)?;
        crate::proc_util::chown_to_pg(&dir)?;
        let mut me = Self {
            port,
            dir,
            ini,
            child: None,
        };
        me.spawn().await?;
        Ok(me)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(PGBOUNCER_BIN);
        // pgbouncer refuses to run as root; `-u` makes it switch user itself, so the child
        // we hold is pgbouncer (not a wrapper) and kill() reaches it.
        if is_root() {
            cmd.args(["-u", PG_OS_USER]);
        }
        cmd.arg(&self.ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().context("spawning pgbouncer")?;
        self.child = Some(child);
        if let Err(e) = wait_for_port(self.port, Duration::from_secs(15)).await {
            let log = std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default();
            bail!("pgbouncer did not start: {e}; log:\n{log}");
        }
        Ok(())
    }

    /// URL of `database` through this pgbouncer (user postgres, trust).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{PG_OS_USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// As [`Self::url`], by the name [`TestCa`]'s certificate carries (`localhost`), for
    /// `sslmode=verify-full` against [`ClientTls`].
    pub fn localhost_url(&self, database: &str) -> String {
        format!("postgres://{PG_OS_USER}@localhost:{}/{database}", self.port)
    }

    /// Kills pgbouncer (SIGKILL): clients see connection resets.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port after [`Self::kill`].
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }

    /// The pgbouncer log so far (for assertions and failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
