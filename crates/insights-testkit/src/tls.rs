//! A certificate authority made for one test, and a server certificate it signed for
//! `localhost`, written with the `openssl` command into a directory the `postgres` OS user owns
//! (the server refuses a key file others can read; pgbouncer runs as that user too).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::proc_util::{chown_to_pg, pg_owned_temp_dir};

/// Paths of the files [`TestCa::create`] wrote; deleted with the directory on drop.
#[derive(Debug)]
pub struct TestCa {
    /// The directory holding everything (also usable as a cluster's directory).
    pub dir: PathBuf,
    /// The CA's certificate: what a client names as `sslrootcert`.
    pub ca_cert: PathBuf,
    /// The server's certificate and key, for `ssl_cert_file` / `ssl_key_file` (Postgres) or
    /// `client_tls_cert_file` / `client_tls_key_file` (pgbouncer). The certificate names
    /// `localhost` only: the same server reached as `127.0.0.1` is a name it does not carry,
    /// which is how a test tells `verify-full` from `verify-ca`.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCa {
    pub fn create(label: &str) -> anyhow::Result<Self> {
        let dir = pg_owned_temp_dir(label)?;
        let ca_key = dir.join("ca.key");
        let ca_cert = dir.join("ca.crt");
        let server_key = dir.join("server.key");
        let server_csr = dir.join("server.csr");
        let server_cert = dir.join("server.crt");
        let ext = dir.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .context("writing the certificate extensions")?;
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=insights test CA",
            "-keyout",
            &p(&ca_key),
            "-out",
            &p(&ca_cert),
        ])?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &p(&server_key),
            "-out",
            &p(&server_csr),
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p(&server_csr),
            "-CA",
            &p(&ca_cert),
            "-CAkey",
            &p(&ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p(&ext),
            "-out",
            &p(&server_cert),
        ])?;
        chown_to_pg(&dir)?;
        set_mode(&server_key, 0o600)?;
        Ok(Self {
            dir,
            ca_cert,
            server_cert,
            server_key,
        })
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .context("running openssl (Debian package `openssl`)")?;
    if !out.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}
