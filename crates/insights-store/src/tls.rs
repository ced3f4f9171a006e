//! TLS as a URL asks for it (`sslmode`, `sslrootcert`: libpq's names, which sqlx reads): the
//! CA file checked before the first connection, and a failed handshake told in words that say
//! what to change in the URL.

use rustls::CertificateError;
use url::Url;

/// The query parameters sqlx reads as the CA file, libpq's name first.
const ROOT_CERT_PARAMS: [&str; 3] = ["sslrootcert", "ssl-root-cert", "ssl-ca"];

/// The CA file the URL names (the last one, as sqlx takes it).
pub(crate) fn root_cert_file(url: &str) -> Option<String> {
    Url::parse(url)
        .ok()?
        .query_pairs()
        .filter(|(k, _)| ROOT_CERT_PARAMS.contains(&k.as_ref()))
        .map(|(_, v)| v.into_owned())
        .last()
}

/// Fails unless `path` is readable and holds a PEM certificate. sqlx reads the file only while
/// connecting: a missing file would fail every connection with a bare "No such file or
/// directory", and a file without a certificate would look like a server with an unknown CA.
pub(crate) fn check_root_cert(path: &str) -> Result<(), String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("sslrootcert {path}: cannot read it: {e}"))?;
    let marker = b"-----BEGIN CERTIFICATE-----";
    if pem.windows(marker.len()).any(|w| w == marker) {
        Ok(())
    } else {
        Err(format!(
            "sslrootcert {path}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ))
    }
}

/// Why a connection attempt failed, for a one-line message. A certificate that did not verify
/// is named with what to change; `root_cert_named`: the URL names a CA file.
pub(crate) fn failure_reason(e: &sqlx::Error, root_cert_named: bool) -> String {
    match e {
        // sqlx's "error communicating with database: " adds nothing to "cannot reach database".
        sqlx::Error::Io(io) => match io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => tls_reason(tls, root_cert_named),
            None => io.to_string(),
        },
        sqlx::Error::Tls(inner) => format!("TLS: {inner}"),
        other => other.to_string(),
    }
}

fn tls_reason(e: &rustls::Error, root_cert_named: bool) -> String {
    let rustls::Error::InvalidCertificate(cert) = e else {
        return format!("TLS handshake failed: {e}");
    };
    let what = match cert {
        CertificateError::UnknownIssuer if root_cert_named => {
            "the server's certificate is not signed by the CA in sslrootcert"
        }
        CertificateError::UnknownIssuer => {
            "the server's certificate is not signed by a CA this client trusts: add \
             sslrootcert=<file of the CA's certificate> to the URL"
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "the server's certificate does not name the URL's host: connect by a name it \
             carries (sslmode=verify-ca does not check the name)"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "the server's certificate has expired"
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet (is this machine's clock right?)"
        }
        _ => "the server's certificate did not verify",
    };
    format!("{what} ({e})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake_error(cert: CertificateError) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(cert),
        ))
    }

    #[test]
    fn a_certificate_that_does_not_verify_says_what_to_change() {
        let unknown = failure_reason(&handshake_error(CertificateError::UnknownIssuer), false);
        assert!(unknown.contains("add sslrootcert="), "{unknown}");
        assert!(
            unknown.ends_with("(invalid peer certificate: UnknownIssuer)"),
            "{unknown}"
        );
        assert!(!unknown.contains("error communicating"), "{unknown}");
        let wrong_ca = failure_reason(&handshake_error(CertificateError::UnknownIssuer), true);
        assert!(
            wrong_ca.contains("not signed by the CA in sslrootcert"),
            "{wrong_ca}"
        );
        let name = failure_reason(&handshake_error(CertificateError::NotValidForName), true);
        assert!(name.contains("does not name the URL's host"), "{name}");
        let refused = failure_reason(
            &sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into()),
            false,
        );
        assert_eq!(refused, "connection refused");
    }

    #[test]
    fn the_ca_file_is_read_from_the_url_and_checked() {
        assert_eq!(
            root_cert_file("postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.crt"),
            Some("/etc/ca.crt".to_owned())
        );
        assert_eq!(
            root_cert_file("postgres://u@h/db?ssl-ca=/a.crt&sslrootcert=/b.crt"),
            Some("/b.crt".to_owned())
        );
        assert_eq!(root_cert_file("postgres://u@h/db?sslmode=require"), None);

        let dir = std::env::temp_dir().join(format!("insights-store-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not-pem.crt");
        std::fs::write(&not_pem, "hello").unwrap();
        let pem = dir.join("ca.crt");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = dir.join("absent.crt");
        let err = check_root_cert(&missing.display().to_string()).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "sslrootcert {}: cannot read it: ",
                missing.display()
            )),
            "{err}"
        );
        let err = check_root_cert(&not_pem.display().to_string()).unwrap_err();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        assert!(check_root_cert(&pem.display().to_string()).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
