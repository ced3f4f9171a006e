//! Values that must never reach a log line or a `Debug` dump: API keys and database passwords.

use std::fmt;

use url::Url;

const REDACTED: &str = "[redacted]";

/// A secret value. `Debug` and `Display` print `[redacted]`; the value is reachable only through
/// [`Secret::expose`], which makes every use greppable.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

pub type SecretString = Secret<String>;

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The query parameter (Prisma's convention, used in Supabase's pooler URLs) that marks a URL as
/// pointing at a transaction-mode pooler. sqlx does not know it, so it is stripped before use.
pub const PGBOUNCER_PARAM: &str = "pgbouncer";

/// Query parameters of a Postgres URL whose value is a secret (libpq's keywords; sqlx reads
/// `password` too).
const SECRET_PARAMS: [&str; 2] = ["password", "sslpassword"];

/// `url` with every password hidden, for messages: the userinfo's and a secret query
/// parameter's become `***`. Text that is not a URL is not shown at all.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        return "[unparseable database URL, redacted]".to_owned();
    };
    if parsed.password().is_some() {
        // Fails only for URLs that cannot have credentials, which have no password.
        let _ = parsed.set_password(Some("***"));
    }
    if parsed
        .query_pairs()
        .any(|(k, _)| SECRET_PARAMS.contains(&k.as_ref()))
    {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if SECRET_PARAMS.contains(&k.as_ref()) {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// A Postgres connection URL. `Debug`/`Display` show it with the password replaced, so the
/// host, port, user and database stay visible in logs and error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, password included. Pass it to the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced by `***`, whether it is written in the userinfo or as
    /// a `?password=` parameter (or a placeholder when the URL does not parse). The one
    /// redaction of a database URL: every message and `Debug` output that names one uses it.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }

    /// `host:port` for one-line error messages ("cannot reach database at host:port").
    pub fn host_port(&self) -> String {
        match Url::parse(&self.0) {
            Ok(url) => format!(
                "{}:{}",
                url.host_str().unwrap_or("localhost"),
                url.port().unwrap_or(5432)
            ),
            Err(_) => "<unparseable URL>".to_owned(),
        }
    }

    /// True when the URL carries `pgbouncer=true`.
    pub fn pooler_hint(&self) -> bool {
        Url::parse(&self.0)
            .map(|url| {
                url.query_pairs()
                    .any(|(k, v)| k == PGBOUNCER_PARAM && v.eq_ignore_ascii_case("true"))
            })
            .unwrap_or(false)
    }

    /// The URL without the `pgbouncer` parameter, ready for sqlx.
    pub fn without_pooler_hint(&self) -> DatabaseUrl {
        let Ok(mut url) = Url::parse(&self.0) else {
            return self.clone();
        };
        if !url.query_pairs().any(|(k, _)| k == PGBOUNCER_PARAM) {
            return self.clone();
        }
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != PGBOUNCER_PARAM)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        DatabaseUrl(url.to_string())
    }

    /// Checks the form without connecting: a `postgres://` or `postgresql://` URL with a host.
    pub fn validate(&self) -> Result<(), String> {
        let url = Url::parse(&self.0).map_err(|e| format!("not a URL ({e})"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "scheme must be postgres:// or postgresql://, got {}://",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the URL has no host".to_owned());
        }
        Ok(())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let s = SecretString::new("sk-very-secret".into());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "sk-very-secret");
    }

    #[test]
    fn database_url_hides_the_password_only() {
        let u = DatabaseUrl::new("postgres://app:hunter2@db.example.com:6543/crm?sslmode=require");
        let shown = format!("{u:?} {u}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db.example.com:6543"));
        assert!(shown.contains("app:***@"));
        assert_eq!(u.host_port(), "db.example.com:6543");
        assert!(!format!("{:?}", DatabaseUrl::new("not a url with hunter2")).contains("hunter2"));
    }

    #[test]
    fn a_password_in_the_query_is_hidden_like_one_in_the_userinfo() {
        let u = DatabaseUrl::new(
            "postgres://app@db.example.com/crm?sslmode=require&password=hunter2&application_name=w",
        );
        assert_eq!(
            u.redacted(),
            "postgres://app@db.example.com/crm?sslmode=require&password=***&application_name=w"
        );
        let shown = format!("{u:?} {u}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(
            redact_url("postgres://u:p%40ss@h/db?sslpassword=key-pass"),
            "postgres://u:***@h/db?sslpassword=***"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("postgres://u@h:5432/db?application_name=a@b"),
            "postgres://u@h:5432/db?application_name=a@b"
        );
        assert!(!redact_url("hunter2").contains("hunter2"));
    }

    #[test]
    fn pooler_hint_is_detected_and_stripped() {
        let u = DatabaseUrl::new("postgres://u:p@h:6543/db?pgbouncer=true&sslmode=disable");
        assert!(u.pooler_hint());
        let stripped = u.without_pooler_hint();
        assert!(!stripped.pooler_hint());
        assert_eq!(
            stripped.expose(),
            "postgres://u:p@h:6543/db?sslmode=disable"
        );
        let only = DatabaseUrl::new("postgres://u@h/db?pgbouncer=true").without_pooler_hint();
        assert_eq!(only.expose(), "postgres://u@h/db");
        assert!(!DatabaseUrl::new("postgres://u@h/db?pgbouncer=false").pooler_hint());
        assert!(DatabaseUrl::new("mysql://h/db").validate().is_err());
        assert!(DatabaseUrl::new("postgres://h/db").validate().is_ok());
    }
}
