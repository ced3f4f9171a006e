//! Typed, validated configuration: one row per environment variable.
//!
//! Each variable is one [`Var`] constant named after it ([`INSIGHTS_CONCURRENCY`], ...) that
//! holds its default, the form and range it accepts, and its meaning. The row is the only place
//! its default is written (the few defaults other crates need as constants live in
//! [`crate::defaults`] and the rows read them from there). [`Settings::from_lookup`] reads every
//! variable through its row, so the range check and the error text come from the row;
//! [`Settings::default`] takes every default from the rows; [`variables_markdown`] renders the
//! README's table from [`VARIABLES`], the list of rows.
//!
//! Only the binary's edge reads an environment, through a closure, so tests never touch the
//! process environment: `Settings::from_lookup(|name| std::env::var(name).ok())`. Code that
//! embeds the worker builds `Settings { database_url: Some(url), ..Settings::default() }`.
//!
//! A secret variable (a database URL, a token) may instead name a file that holds its value,
//! through `<NAME>_FILE`, the way Docker and Kubernetes mount secrets: [`Form::secret`] marks
//! the row, [`Row::file_name`] names the companion. The file's surrounding whitespace (its
//! trailing newline) is trimmed; setting both forms is an error naming both; a file that cannot
//! be read is an error naming the variable and the path, never the content. Files are read
//! through the second closure of [`Settings::from_sources`], so tests need no file system.
//!
//! An empty (or all-whitespace) value counts as unset. Errors name the variable and the expected
//! form and never echo a secret.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::defaults;
use crate::secret::{DatabaseUrl, SecretString};

/// How one variable's text becomes a value, and how the accepted text is described.
pub trait Form {
    /// What the variable parses to.
    type Value;
    /// The default as a constant holds it.
    type Default: Copy;

    /// The accepted form and range, worded to follow "expected" in an error message; it also
    /// fills the README's "accepted" column.
    fn expected(&self) -> String;
    /// Parses a set value (trimmed, not empty). `Err` carries the expected form, with the reason
    /// the value was refused when that helps.
    fn parse(&self, raw: &str) -> Result<Self::Value, String>;
    /// The value of an unset variable.
    fn default_value(&self, default: Self::Default) -> Self::Value;
    /// The default as a user would write it; `None` when there is none to write.
    fn default_text(&self, default: Self::Default) -> Option<String>;
    /// The README's default cell.
    fn default_cell(&self, default: Self::Default) -> String {
        self.default_text(default)
            .map_or_else(|| "unset".to_owned(), |text| format!("`{text}`"))
    }
    /// Another variable whose value an unset one takes.
    fn fallback(&self, _default: Self::Default) -> Option<&'static str> {
        None
    }
    /// The refused value as an error message may show it.
    fn echo(&self, raw: &str) -> String {
        raw.to_owned()
    }
    /// A secret: never shown, and also read from the file `<NAME>_FILE` names.
    fn secret(&self) -> bool {
        false
    }
}

/// Where values come from: variables by name, and the contents of the files that the `_FILE`
/// companions of secret variables name.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    /// Name → value, `None` when unset.
    pub var: &'a dyn Fn(&str) -> Option<String>,
    /// Path → contents.
    pub file: &'a dyn Fn(&Path) -> io::Result<String>,
}

impl Sources<'_> {
    /// The trimmed value of `name`; `None` when unset, empty or all whitespace.
    fn set(&self, name: &str) -> Option<String> {
        (self.var)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// The value of `name`, or, for a secret, the contents of the file its `_FILE` companion
    /// names (whitespace around it trimmed).
    fn value(&self, name: &'static str, secret: bool) -> Result<Option<String>, ConfigError> {
        let direct = self.set(name);
        if !secret {
            return Ok(direct);
        }
        let file = file_name(name);
        let Some(path) = self.set(&file) else {
            return Ok(direct);
        };
        if direct.is_some() {
            return Err(ConfigError::BothSet { name, file });
        }
        let contents = (self.file)(Path::new(&path)).map_err(|e| ConfigError::Unreadable {
            file,
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some(contents.trim().to_owned()).filter(|v| !v.is_empty()))
    }
}

/// The companion variable that names a file holding `name`'s value.
fn file_name(name: &str) -> String {
    format!("{name}_FILE")
}

/// One environment variable: its name, its default, the form it accepts and what it means.
#[derive(Debug, Clone, Copy)]
pub struct Var<F: Form> {
    pub name: &'static str,
    pub default: F::Default,
    pub form: F,
    /// One or two sentences for the README; the default and the accepted form have their own
    /// columns.
    pub meaning: &'static str,
}

impl<F: Form> Var<F> {
    /// The variable's value from `sources` (its `_FILE` companion included for a secret, then
    /// the variable it falls back to, alike); the default when it is unset.
    pub fn read(&self, sources: &Sources<'_>) -> Result<F::Value, ConfigError> {
        let secret = self.form.secret();
        let mut raw = sources.value(self.name, secret)?;
        if raw.is_none()
            && let Some(fallback) = self.form.fallback(self.default)
        {
            raw = sources.value(fallback, secret)?;
        }
        match raw {
            Some(raw) => self.parse(&raw),
            None => Ok(self.default_value()),
        }
    }

    /// A value that arrived another way (a command-line flag), checked as if the variable held
    /// it; the error names the variable.
    pub fn parse(&self, raw: &str) -> Result<F::Value, ConfigError> {
        self.form
            .parse(raw.trim())
            .map_err(|expected| ConfigError::Invalid {
                name: self.name,
                expected,
                got: self.form.echo(raw),
            })
    }

    /// The value of the variable when it is unset.
    pub fn default_value(&self) -> F::Value {
        self.form.default_value(self.default)
    }
}

impl<T> Var<Count<T>>
where
    T: Copy + PartialOrd + fmt::Display + TryFrom<u64>,
{
    /// A number that arrived typed (a command-line flag, an embedder's choice), checked against
    /// the variable's range; the error names the variable.
    pub fn check(&self, value: T) -> Result<T, ConfigError> {
        if (self.form.min..=self.form.max).contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::Invalid {
                name: self.name,
                expected: self.form.expected(),
                got: value.to_string(),
            })
        }
    }
}

/// A row of [`VARIABLES`], whatever the type of its value.
pub trait Row {
    fn name(&self) -> &'static str;
    /// The default as a user would write it (it parses back to the default value); `None` for
    /// variables without one.
    fn default_text(&self) -> Option<String>;
    fn default_cell(&self) -> String;
    fn expected(&self) -> String;
    fn meaning(&self) -> &'static str;
    /// The companion variable naming a file that holds the value, for secrets.
    fn file_name(&self) -> Option<String>;
}

impl<F: Form> Row for Var<F> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn default_text(&self) -> Option<String> {
        self.form.default_text(self.default)
    }
    fn default_cell(&self) -> String {
        self.form.default_cell(self.default)
    }
    fn expected(&self) -> String {
        self.form.expected()
    }
    fn meaning(&self) -> &'static str {
        self.meaning
    }
    fn file_name(&self) -> Option<String> {
        self.form.secret().then(|| file_name(self.name))
    }
}

/// What an unset variable without a default value means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// The feature is off, or the meaning says what stands in.
    Unset,
    /// Every command that needs it fails naming it.
    Required,
    /// Only the named command needs it.
    RequiredFor(&'static str),
    /// It takes the value of the named variable.
    SameAs(&'static str),
}

impl Absent {
    fn cell(self) -> String {
        match self {
            Absent::Unset => "unset".to_owned(),
            Absent::Required => "required".to_owned(),
            Absent::RequiredFor(command) => format!("required for `{command}`"),
            Absent::SameAs(name) => format!("`{name}`"),
        }
    }

    fn fallback(self) -> Option<&'static str> {
        match self {
            Absent::SameAs(name) => Some(name),
            _ => None,
        }
    }
}

/// The form of a variable without a default value: unset means `None`, or the value of the
/// variable its [`Absent`] names. [`Form`] follows from these few methods.
pub trait OptionalForm {
    type Value;
    /// As [`Form::expected`].
    fn expected(&self) -> String;
    /// As [`Form::parse`].
    fn parse(&self, raw: &str) -> Result<Self::Value, String>;
    /// As [`Form::echo`].
    fn echo(&self, raw: &str) -> String {
        raw.to_owned()
    }
    /// As [`Form::secret`].
    fn secret(&self) -> bool {
        false
    }
}

impl<F: OptionalForm> Form for F {
    type Value = Option<F::Value>;
    type Default = Absent;

    fn expected(&self) -> String {
        OptionalForm::expected(self)
    }
    fn parse(&self, raw: &str) -> Result<Self::Value, String> {
        OptionalForm::parse(self, raw).map(Some)
    }
    fn default_value(&self, _default: Absent) -> Self::Value {
        None
    }
    fn default_text(&self, _default: Absent) -> Option<String> {
        None
    }
    fn default_cell(&self, default: Absent) -> String {
        default.cell()
    }
    fn fallback(&self, default: Absent) -> Option<&'static str> {
        default.fallback()
    }
    fn echo(&self, raw: &str) -> String {
        OptionalForm::echo(self, raw)
    }
    fn secret(&self) -> bool {
        OptionalForm::secret(self)
    }
}

/// A whole number from `min` to `max`; `_` may group digits.
#[derive(Debug, Clone, Copy)]
pub struct Count<T> {
    pub min: T,
    pub max: T,
}

impl<T> Form for Count<T>
where
    T: Copy + PartialOrd + fmt::Display + TryFrom<u64>,
{
    type Value = T;
    type Default = T;

    fn expected(&self) -> String {
        format!("a whole number from {} to {}", self.min, self.max)
    }
    fn parse(&self, raw: &str) -> Result<T, String> {
        raw.replace('_', "")
            .parse::<u64>()
            .ok()
            .and_then(|n| T::try_from(n).ok())
            .filter(|n| (self.min..=self.max).contains(n))
            .ok_or_else(|| self.expected())
    }
    fn default_value(&self, default: T) -> T {
        default
    }
    fn default_text(&self, default: T) -> Option<String> {
        Some(default.to_string())
    }
}

/// A duration in whole milliseconds from `min` to `max` (the `*_MS` variables; deployments
/// depend on their integer form).
#[derive(Debug, Clone, Copy)]
pub struct Millis {
    pub min: u64,
    pub max: u64,
}

impl Form for Millis {
    type Value = Duration;
    type Default = u64;

    fn expected(&self) -> String {
        format!(
            "a duration in whole milliseconds from {} to {}",
            self.min, self.max
        )
    }
    fn parse(&self, raw: &str) -> Result<Duration, String> {
        Count {
            min: self.min,
            max: self.max,
        }
        .parse(raw)
        .map(Duration::from_millis)
        .map_err(|_| self.expected())
    }
    fn default_value(&self, default: u64) -> Duration {
        Duration::from_millis(default)
    }
    fn default_text(&self, default: u64) -> Option<String> {
        Some(default.to_string())
    }
}

/// A duration written with a unit, `90s`, `15m`, `24h` or `7d`, from `min` to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub min: Duration,
    pub max: Duration,
}

/// The units a [`Span`] may be written in, largest first, in seconds.
const SPAN_UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];

impl Span {
    /// `d` in the largest unit that writes it exactly (whole seconds; less is shown as `0s`).
    pub fn format(d: Duration) -> String {
        let secs = d.as_secs();
        if secs == 0 {
            return "0s".to_owned();
        }
        let (unit, size) = SPAN_UNITS
            .iter()
            .find(|(_, size)| secs.is_multiple_of(*size))
            .copied()
            .unwrap_or(("s", 1));
        format!("{}{unit}", secs / size)
    }

    fn parse_text(raw: &str) -> Option<Duration> {
        let digits_end = raw.find(|c: char| !c.is_ascii_digit())?;
        let (number, unit) = raw.split_at(digits_end);
        let number: u64 = number.parse().ok()?;
        let (_, size) = SPAN_UNITS.iter().find(|(u, _)| *u == unit.trim())?;
        number.checked_mul(*size).map(Duration::from_secs)
    }
}

impl Form for Span {
    type Value = Duration;
    type Default = Duration;

    fn expected(&self) -> String {
        format!(
            "a duration such as 90s, 15m or 24h, from {} to {}",
            Span::format(self.min),
            Span::format(self.max)
        )
    }
    fn parse(&self, raw: &str) -> Result<Duration, String> {
        Span::parse_text(raw)
            .filter(|d| (self.min..=self.max).contains(d))
            .ok_or_else(|| self.expected())
    }
    fn default_value(&self, default: Duration) -> Duration {
        default
    }
    fn default_text(&self, default: Duration) -> Option<String> {
        Some(Span::format(default))
    }
}

/// One of a few words, each naming a value.
#[derive(Debug, Clone, Copy)]
pub struct OneOf<T: 'static> {
    pub choices: &'static [(&'static str, T)],
}

impl<T: Copy + PartialEq> Form for OneOf<T> {
    type Value = T;
    type Default = T;

    fn expected(&self) -> String {
        let words: Vec<String> = self.choices.iter().map(|(w, _)| format!("`{w}`")).collect();
        match words.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => words.concat(),
        }
    }
    fn parse(&self, raw: &str) -> Result<T, String> {
        self.choices
            .iter()
            .find(|(word, _)| *word == raw)
            .map(|(_, value)| *value)
            .ok_or_else(|| self.expected())
    }
    fn default_value(&self, default: T) -> T {
        default
    }
    fn default_text(&self, default: T) -> Option<String> {
        self.choices
            .iter()
            .find(|(_, value)| *value == default)
            .map(|(word, _)| (*word).to_owned())
    }
}

/// Free text such as a model name; `what` describes it.
#[derive(Debug, Clone, Copy)]
pub struct Text {
    pub what: &'static str,
}

impl Form for Text {
    type Value = String;
    type Default = &'static str;

    fn expected(&self) -> String {
        self.what.to_owned()
    }
    fn parse(&self, raw: &str) -> Result<String, String> {
        Ok(raw.to_owned())
    }
    fn default_value(&self, default: &'static str) -> String {
        default.to_owned()
    }
    fn default_text(&self, default: &'static str) -> Option<String> {
        Some(default.to_owned())
    }
}

/// A secret such as a bearer token; `what` describes it. Never shown in messages.
#[derive(Debug, Clone, Copy)]
pub struct SecretText {
    pub what: &'static str,
}

impl OptionalForm for SecretText {
    type Value = SecretString;

    fn expected(&self) -> String {
        self.what.to_owned()
    }
    fn parse(&self, raw: &str) -> Result<SecretString, String> {
        Ok(SecretString::new(raw.to_owned()))
    }
    fn echo(&self, raw: &str) -> String {
        SecretString::new(raw.to_owned()).to_string()
    }
    fn secret(&self) -> bool {
        true
    }
}

/// A `postgres://` URL; its password is never shown in messages.
#[derive(Debug, Clone, Copy)]
pub struct PostgresUrl;

impl OptionalForm for PostgresUrl {
    type Value = DatabaseUrl;

    fn expected(&self) -> String {
        "a postgres:// URL".to_owned()
    }
    fn parse(&self, raw: &str) -> Result<DatabaseUrl, String> {
        let url = DatabaseUrl::new(raw);
        match url.validate() {
            Ok(()) => Ok(url),
            Err(reason) => Err(format!("{} ({reason})", OptionalForm::expected(self))),
        }
    }
    fn echo(&self, raw: &str) -> String {
        DatabaseUrl::new(raw).redacted()
    }
    fn secret(&self) -> bool {
        true
    }
}

/// An `http://` or `https://` URL with a host.
#[derive(Debug, Clone, Copy)]
pub struct HttpUrl {
    /// The form in words, with an example.
    pub what: &'static str,
}

impl OptionalForm for HttpUrl {
    type Value = Url;

    fn expected(&self) -> String {
        self.what.to_owned()
    }
    fn parse(&self, raw: &str) -> Result<Url, String> {
        match Url::parse(raw) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
                Ok(url)
            }
            _ => Err(OptionalForm::expected(self)),
        }
    }
}

/// A path to a file; `what` describes it. Whether the file exists and what it holds is the
/// reader's business (the error then names the file).
#[derive(Debug, Clone, Copy)]
pub struct FilePath {
    pub what: &'static str,
}

impl OptionalForm for FilePath {
    type Value = PathBuf;

    fn expected(&self) -> String {
        self.what.to_owned()
    }
    fn parse(&self, raw: &str) -> Result<PathBuf, String> {
        Ok(PathBuf::from(raw))
    }
}

/// An IP address and port.
#[derive(Debug, Clone, Copy)]
pub struct Address;

impl Form for Address {
    type Value = SocketAddr;
    type Default = SocketAddr;

    fn expected(&self) -> String {
        "an IP address and port such as 127.0.0.1:9090".to_owned()
    }
    fn parse(&self, raw: &str) -> Result<SocketAddr, String> {
        raw.parse().map_err(|_| self.expected())
    }
    fn default_value(&self, default: SocketAddr) -> SocketAddr {
        default
    }
    fn default_text(&self, default: SocketAddr) -> Option<String> {
        Some(default.to_string())
    }
}

/// RFC 9110's `token`, what a header name (and an auth scheme) is made of.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Printable ASCII, spaces and tabs: what every HTTP stack accepts in a header value.
fn is_header_value(text: &str) -> bool {
    text.bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// The header that carries the LLM API key, and the scheme written before the key in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader {
    /// As written; header names are case-insensitive.
    pub name: String,
    /// `Bearer` in `Authorization: Bearer <key>`; `None` sends the key alone (Azure's `api-key`).
    pub scheme: Option<String>,
}

impl AuthHeader {
    /// `Name` or `Name: Scheme`, split without checking either part.
    fn split(text: &str) -> Self {
        let (name, scheme) = text.split_once(':').unwrap_or((text, ""));
        let scheme = scheme.trim();
        Self {
            name: name.trim().to_owned(),
            scheme: (!scheme.is_empty()).then(|| scheme.to_owned()),
        }
    }

    /// What the header carries for `key`.
    pub fn value(&self, key: &SecretString) -> SecretString {
        SecretString::new(match &self.scheme {
            Some(scheme) => format!("{scheme} {}", key.expose()),
            None => key.expose().clone(),
        })
    }
}

impl Default for AuthHeader {
    /// `INSIGHTS_LLM_AUTH_HEADER`'s default: `Authorization: Bearer`.
    fn default() -> Self {
        INSIGHTS_LLM_AUTH_HEADER.default_value()
    }
}

impl fmt::Display for AuthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scheme {
            Some(scheme) => write!(f, "{}: {scheme}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// An [`AuthHeader`] written `Name` or `Name: Scheme`.
#[derive(Debug, Clone, Copy)]
pub struct AuthHeaderForm;

impl Form for AuthHeaderForm {
    type Value = AuthHeader;
    type Default = &'static str;

    fn expected(&self) -> String {
        "a header name, optionally followed by `:` and the scheme written before the key, e.g. `api-key` or `Authorization: Bearer`".to_owned()
    }
    fn parse(&self, raw: &str) -> Result<AuthHeader, String> {
        let header = AuthHeader::split(raw);
        if !is_token(&header.name) {
            return Err(format!("{} (not a header name)", self.expected()));
        }
        if header.scheme.as_deref().is_some_and(|s| !is_token(s)) {
            return Err(format!("{} (the scheme is one word)", self.expected()));
        }
        Ok(header)
    }
    fn default_value(&self, default: &'static str) -> AuthHeader {
        AuthHeader::split(default)
    }
    fn default_text(&self, default: &'static str) -> Option<String> {
        Some(default.to_owned())
    }
}

/// Headers the HTTP client writes itself; set again they would contradict the request.
const CLIENT_HEADERS: [&str; 4] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
];

/// Headers written `Name: value; Name2: value2`. The values may be secret: a refused value is
/// never echoed, and a reason names an entry by its position, not by its text.
#[derive(Debug, Clone, Copy)]
pub struct HeaderList;

impl Form for HeaderList {
    type Value = Vec<(String, SecretString)>;
    type Default = ();

    fn expected(&self) -> String {
        "`Name: value` pairs separated by `;`, e.g. `OpenAI-Project: proj_123; X-Team: crm`"
            .to_owned()
    }
    fn parse(&self, raw: &str) -> Result<Self::Value, String> {
        let refuse = |reason: String| format!("{} ({reason})", self.expected());
        let mut headers: Self::Value = Vec::new();
        let entries = raw.split(';').map(str::trim).filter(|e| !e.is_empty());
        for (n, entry) in entries.enumerate().map(|(i, e)| (i + 1, e)) {
            let Some((name, value)) = entry.split_once(':') else {
                return Err(refuse(format!("entry {n} has no `:`")));
            };
            let (name, value) = (name.trim(), value.trim());
            if !is_token(name) {
                return Err(refuse(format!(
                    "entry {n} does not start with a header name"
                )));
            }
            if value.is_empty() || !is_header_value(value) {
                return Err(refuse(format!(
                    "entry {n}'s value is empty or not printable ASCII"
                )));
            }
            if CLIENT_HEADERS.iter().any(|c| c.eq_ignore_ascii_case(name)) {
                return Err(refuse(format!("the client sets `{name}` itself")));
            }
            if headers
                .iter()
                .any(|(seen, _)| seen.eq_ignore_ascii_case(name))
            {
                return Err(refuse(format!("`{name}` is set twice")));
            }
            headers.push((name.to_owned(), SecretString::new(value.to_owned())));
        }
        Ok(headers)
    }
    fn default_value(&self, _default: ()) -> Self::Value {
        Vec::new()
    }
    fn default_text(&self, _default: ()) -> Option<String> {
        None
    }
    fn echo(&self, raw: &str) -> String {
        SecretString::new(raw.to_owned()).to_string()
    }
    fn secret(&self) -> bool {
        true
    }
}

/// URL query parameters written `name=value&name2=value2` (percent-encoding allowed).
#[derive(Debug, Clone, Copy)]
pub struct QueryPairs;

impl Form for QueryPairs {
    type Value = Vec<(String, String)>;
    type Default = ();

    fn expected(&self) -> String {
        "`name=value` pairs joined by `&`, e.g. `api-version=2024-10-21`".to_owned()
    }
    fn parse(&self, raw: &str) -> Result<Self::Value, String> {
        let raw = raw.trim_start_matches('?');
        if let Some(pair) = raw
            .split('&')
            .find(|p| !p.is_empty() && p.split_once('=').is_none_or(|(k, _)| k.is_empty()))
        {
            return Err(format!("{} (`{pair}` is not name=value)", self.expected()));
        }
        Ok(url::form_urlencoded::parse(raw.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect())
    }
    fn default_value(&self, _default: ()) -> Self::Value {
        Vec::new()
    }
    fn default_text(&self, _default: ()) -> Option<String> {
        None
    }
}

/// The accepted range of every `*_TIMEOUT_MS` variable: beyond an hour is almost surely a typo.
const TIMEOUT_MS: Millis = Millis {
    min: 1,
    max: 3_600_000,
};

pub const DATABASE_URL: Var<PostgresUrl> = Var {
    name: "DATABASE_URL",
    default: Absent::Required,
    form: PostgresUrl,
    meaning: "App database (leads, messages, insights); may point at a transaction pooler. `demo` defaults to `postgres://postgres@127.0.0.1:5432/insights_demo`.",
};

pub const INSIGHTS_DB_POOLER: Var<OneOf<PoolerMode>> = Var {
    name: "INSIGHTS_DB_POOLER",
    default: PoolerMode::Direct,
    form: OneOf {
        choices: &[
            (PoolerMode::Direct.as_str(), PoolerMode::Direct),
            (PoolerMode::Transaction.as_str(), PoolerMode::Transaction),
        ],
    },
    meaning: "`transaction` (also implied by `?pgbouncer=true` in a URL) makes every statement unnamed inside a transaction and drops the `extra_float_digits` start-up parameter.",
};

pub const QUEUE_DATABASE_URL: Var<PostgresUrl> = Var {
    name: "QUEUE_DATABASE_URL",
    default: Absent::SameAs(DATABASE_URL.name),
    form: PostgresUrl,
    meaning: "Database of the job queue (schema `insights_queue`).",
};

pub const DIRECT_DATABASE_URL: Var<PostgresUrl> = Var {
    name: "DIRECT_DATABASE_URL",
    default: Absent::Unset,
    form: PostgresUrl,
    meaning: "Direct (or session-mode) URL used for migrations and LISTEN/NOTIFY. Unset: migrations use `DATABASE_URL` and workers poll.",
};

pub const INSIGHTS_CONCURRENCY: Var<Count<usize>> = Var {
    name: "INSIGHTS_CONCURRENCY",
    default: 8,
    form: Count { min: 1, max: 4096 },
    meaning: "Maximum jobs in flight per worker process.",
};

pub const INSIGHTS_DB_POOL_MAX: Var<Count<u32>> = Var {
    name: "INSIGHTS_DB_POOL_MAX",
    default: defaults::DB_POOL_MAX,
    form: Count { min: 1, max: 1000 },
    meaning: "Maximum connections of the worker's pool: one pool serves store and queue when both use the same URL; with a separate `QUEUE_DATABASE_URL` each of the two pools gets this many.",
};

pub const INSIGHTS_DB_ACQUIRE_TIMEOUT_MS: Var<Millis> = Var {
    name: "INSIGHTS_DB_ACQUIRE_TIMEOUT_MS",
    default: defaults::DB_ACQUIRE_TIMEOUT_MS,
    form: TIMEOUT_MS,
    meaning: "How long a call waits for a free pooled connection before failing (transient).",
};

pub const INSIGHTS_DB_STATEMENT_TIMEOUT_MS: Var<Millis> = Var {
    name: "INSIGHTS_DB_STATEMENT_TIMEOUT_MS",
    default: defaults::DB_STATEMENT_TIMEOUT_MS,
    form: TIMEOUT_MS,
    meaning: "Client-side bound on every database call, connection wait included.",
};

pub const INSIGHTS_ENQUEUE_LIMIT: Var<Count<u64>> = Var {
    name: "INSIGHTS_ENQUEUE_LIMIT",
    default: 10_000,
    form: Count {
        min: 1,
        max: 100_000_000,
    },
    meaning: "Maximum leads enqueued per producer run.",
};

pub const INSIGHTS_MAX_ATTEMPTS: Var<Count<u32>> = Var {
    name: "INSIGHTS_MAX_ATTEMPTS",
    default: 8,
    form: Count { min: 1, max: 100 },
    meaning: "Attempts before a job is discarded.",
};

pub const INSIGHTS_MAX_JOB_AGE: Var<Span> = Var {
    name: "INSIGHTS_MAX_JOB_AGE",
    default: Duration::from_secs(24 * 60 * 60),
    form: Span {
        min: Duration::from_secs(60),
        max: Duration::from_secs(30 * 24 * 60 * 60),
    },
    meaning: "A job snoozed for reasons that are not its fault, e.g. a database or LLM outage, is discarded once it is older than this.",
};

pub const INSIGHTS_BREAKER_THRESHOLD: Var<Count<u32>> = Var {
    name: "INSIGHTS_BREAKER_THRESHOLD",
    default: 3,
    form: Count { min: 1, max: 1000 },
    meaning: "Consecutive database connection errors that pause fetching.",
};

pub const INSIGHTS_LLM_BASE_URL: Var<HttpUrl> = Var {
    name: "INSIGHTS_LLM_BASE_URL",
    default: Absent::RequiredFor("work"),
    form: HttpUrl {
        what: "an http(s) URL including /v1, e.g. https://api.openai.com/v1",
    },
    meaning: "OpenAI-compatible base URL including `/v1` (the client appends `/chat/completions`). `demo` uses its built-in mock.",
};

pub const INSIGHTS_LLM_MODEL: Var<Text> = Var {
    name: "INSIGHTS_LLM_MODEL",
    default: defaults::LLM_MODEL,
    form: Text {
        what: "a model name",
    },
    meaning: "Model name sent with every request.",
};

pub const INSIGHTS_LLM_API_KEY: Var<SecretText> = Var {
    name: "INSIGHTS_LLM_API_KEY",
    default: Absent::SameAs(OPENAI_API_KEY.name),
    form: SecretText { what: "an API key" },
    meaning: "Key of the LLM API, sent in the header `INSIGHTS_LLM_AUTH_HEADER` names. Both unset: no key is sent (local servers).",
};

pub const OPENAI_API_KEY: Var<SecretText> = Var {
    name: "OPENAI_API_KEY",
    default: Absent::Unset,
    form: SecretText { what: "an API key" },
    meaning: "Read when `INSIGHTS_LLM_API_KEY` is unset.",
};

pub const INSIGHTS_LLM_AUTH_HEADER: Var<AuthHeaderForm> = Var {
    name: "INSIGHTS_LLM_AUTH_HEADER",
    default: "Authorization: Bearer",
    form: AuthHeaderForm,
    meaning: "The header that carries the API key: the default sends `Authorization: Bearer <key>`; Azure OpenAI takes `api-key` (the key alone).",
};

pub const INSIGHTS_LLM_EXTRA_HEADERS: Var<HeaderList> = Var {
    name: "INSIGHTS_LLM_EXTRA_HEADERS",
    default: (),
    form: HeaderList,
    meaning: "Headers sent with every LLM request, such as `OpenAI-Project` or a gateway's token; a value cannot contain `;`. Treated as secret: values are never logged.",
};

pub const INSIGHTS_LLM_QUERY_PARAMS: Var<QueryPairs> = Var {
    name: "INSIGHTS_LLM_QUERY_PARAMS",
    default: (),
    form: QueryPairs,
    meaning: "Query parameters added to every LLM request, such as Azure OpenAI's `api-version=2024-10-21`. Not secret: they appear in error messages.",
};

pub const INSIGHTS_LLM_TIMEOUT_MS: Var<Millis> = Var {
    name: "INSIGHTS_LLM_TIMEOUT_MS",
    default: defaults::LLM_TIMEOUT_MS,
    form: TIMEOUT_MS,
    meaning: "Total timeout of one LLM request, the answer included; slow and reasoning models take minutes. Connecting has its own 5 s bound.",
};

pub const INSIGHTS_MAX_MESSAGES: Var<Count<u32>> = Var {
    name: "INSIGHTS_MAX_MESSAGES",
    default: 200,
    form: Count {
        min: 1,
        max: 100_000,
    },
    meaning: "Newest messages loaded per lead.",
};

pub const INSIGHTS_PROMPT_BUDGET_CHARS: Var<Count<usize>> = Var {
    name: "INSIGHTS_PROMPT_BUDGET_CHARS",
    default: defaults::PROMPT_BUDGET_CHARS,
    form: Count {
        min: 100,
        max: 10_000_000,
    },
    meaning: "Characters of conversation the prompt may carry (about 4 per token); the newest messages are kept.",
};

pub const INSIGHTS_PROFILE: Var<FilePath> = Var {
    name: "INSIGHTS_PROFILE",
    default: Absent::Unset,
    form: FilePath {
        what: "a path to a profile (TOML)",
    },
    meaning: "The profile that adapts the worker to a team's tables, prompt and insight shape (see `examples/prisma-supabase/`); `--profile` sets it for `enqueue`, `work` and `check`, and with it `migrate` applies only the queue's migrations. Unset: the built-in profile for this project's tables; `demo` always uses it.",
};

pub const INSIGHTS_HTTP_BIND: Var<Address> = Var {
    name: "INSIGHTS_HTTP_BIND",
    default: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090),
    form: Address,
    meaning: "Address of the health (`/healthz`, `/readyz`), metrics (`/metrics`) and dashboard server.",
};

pub const INSIGHTS_DASHBOARD_TOKEN: Var<SecretText> = Var {
    name: "INSIGHTS_DASHBOARD_TOKEN",
    default: Absent::Unset,
    form: SecretText {
        what: "a bearer token",
    },
    meaning: "Bearer token for the dashboard; required when `INSIGHTS_HTTP_BIND` is not a loopback address.",
};

pub const RUST_LOG: Var<Text> = Var {
    name: "RUST_LOG",
    default: "info",
    form: Text {
        what: "a tracing-subscriber filter",
    },
    meaning: "Log filter, e.g. `info,insights_queue=debug`.",
};

/// Every variable the `insights` binary reads, in README order.
pub const VARIABLES: &[&dyn Row] = &[
    &DATABASE_URL,
    &INSIGHTS_DB_POOLER,
    &QUEUE_DATABASE_URL,
    &DIRECT_DATABASE_URL,
    &INSIGHTS_CONCURRENCY,
    &INSIGHTS_DB_POOL_MAX,
    &INSIGHTS_DB_ACQUIRE_TIMEOUT_MS,
    &INSIGHTS_DB_STATEMENT_TIMEOUT_MS,
    &INSIGHTS_ENQUEUE_LIMIT,
    &INSIGHTS_MAX_ATTEMPTS,
    &INSIGHTS_MAX_JOB_AGE,
    &INSIGHTS_BREAKER_THRESHOLD,
    &INSIGHTS_LLM_BASE_URL,
    &INSIGHTS_LLM_MODEL,
    &INSIGHTS_LLM_API_KEY,
    &OPENAI_API_KEY,
    &INSIGHTS_LLM_AUTH_HEADER,
    &INSIGHTS_LLM_EXTRA_HEADERS,
    &INSIGHTS_LLM_QUERY_PARAMS,
    &INSIGHTS_LLM_TIMEOUT_MS,
    &INSIGHTS_MAX_MESSAGES,
    &INSIGHTS_PROMPT_BUDGET_CHARS,
    &INSIGHTS_PROFILE,
    &INSIGHTS_HTTP_BIND,
    &INSIGHTS_DASHBOARD_TOKEN,
    &RUST_LOG,
];

/// [`VARIABLES`] as a Markdown table (variable, default, accepted form, meaning): the README's.
pub fn variables_markdown() -> String {
    let mut out = String::from("| variable | default | accepted | meaning |\n|---|---|---|---|\n");
    for v in VARIABLES {
        let name = match v.file_name() {
            Some(file) => format!("`{}` or `{file}`", v.name()),
            None => format!("`{}`", v.name()),
        };
        out.push_str(&format!(
            "| {name} | {} | {} | {} |\n",
            v.default_cell(),
            v.expected(),
            v.meaning()
        ));
    }
    out
}

/// Whether a URL points at Postgres directly or at a transaction-mode pooler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolerMode {
    /// Postgres itself or a session-mode pooler: named statements are fine.
    #[default]
    Direct,
    /// pgbouncer / Supavisor in transaction mode: unnamed statements inside transactions only.
    Transaction,
}

impl PoolerMode {
    /// The setting combined with the URL's `?pgbouncer=true` hint: either one turns it on.
    pub fn resolve(setting: PoolerMode, url: &DatabaseUrl) -> PoolerMode {
        if setting == PoolerMode::Transaction || url.pooler_hint() {
            PoolerMode::Transaction
        } else {
            PoolerMode::Direct
        }
    }

    /// The word `INSIGHTS_DB_POOLER` takes for this mode.
    pub const fn as_str(self) -> &'static str {
        match self {
            PoolerMode::Direct => "none",
            PoolerMode::Transaction => "transaction",
        }
    }

    fn for_url(setting: PoolerMode, url: Option<&DatabaseUrl>) -> PoolerMode {
        url.map_or(setting, |u| PoolerMode::resolve(setting, u))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: expected {expected}, got {got:?}")]
    Invalid {
        name: &'static str,
        expected: String,
        /// The offending value, or a placeholder for secrets.
        got: String,
    },
    #[error("{name}: required ({why})")]
    Missing {
        name: &'static str,
        why: &'static str,
    },
    #[error("{name} and {file} are both set: set one of them")]
    BothSet { name: &'static str, file: String },
    /// The reason is the system's (not found, permission denied, not UTF-8), never the content.
    #[error("{file}: cannot read {path}: {reason}")]
    Unreadable {
        file: String,
        path: String,
        reason: String,
    },
}

/// The validated configuration. Values that only some commands need are `Option`s with a
/// `require_*` accessor, so each command fails with a clear message only when it needs them.
///
/// `Settings::default()` is every variable unset (no database URL); embedders set what they
/// need with struct-update syntax. `from_lookup` also fills the fields derived from others (the
/// queue URL from `DATABASE_URL`, the pooler modes from a URL's `?pgbouncer=true`); a struct
/// literal may leave them at their defaults: `queue_database_url: None` means the app database
/// ([`Settings::require_queue_database_url`]), and the store honours a URL's pooler hint
/// whatever `pooler` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `DATABASE_URL` as given (the store strips `pgbouncer=true` before connecting).
    pub database_url: Option<DatabaseUrl>,
    /// Pooler mode of the app pool: `INSIGHTS_DB_POOLER` or the URL hint.
    pub pooler: PoolerMode,
    /// `QUEUE_DATABASE_URL`, else `DATABASE_URL`; `None` also means the app database
    /// ([`Settings::require_queue_database_url`]).
    pub queue_database_url: Option<DatabaseUrl>,
    /// Pooler mode of the queue pool (the setting or the queue URL's hint).
    pub queue_pooler: PoolerMode,
    pub direct_database_url: Option<DatabaseUrl>,
    pub concurrency: usize,
    pub db_pool_max: u32,
    pub db_acquire_timeout: Duration,
    pub db_statement_timeout: Duration,
    pub enqueue_limit: u64,
    pub max_attempts: u32,
    /// Age after which a job that keeps being snoozed is discarded.
    pub max_job_age: Duration,
    pub breaker_threshold: u32,
    pub llm_base_url: Option<Url>,
    pub llm_model: String,
    pub llm_api_key: Option<SecretString>,
    pub llm_auth_header: AuthHeader,
    /// Sent with every LLM request; `Debug` shows the names only.
    pub llm_extra_headers: Vec<(String, SecretString)>,
    pub llm_query_params: Vec<(String, String)>,
    pub llm_timeout: Duration,
    pub max_messages: u32,
    pub prompt_budget_chars: usize,
    /// `INSIGHTS_PROFILE`; `None`: the built-in profile.
    pub profile: Option<PathBuf>,
    pub http_bind: SocketAddr,
    pub dashboard_token: Option<SecretString>,
    pub log_filter: String,
}

impl Default for Settings {
    /// Every variable unset.
    fn default() -> Self {
        Self {
            database_url: DATABASE_URL.default_value(),
            pooler: INSIGHTS_DB_POOLER.default_value(),
            queue_database_url: QUEUE_DATABASE_URL.default_value(),
            queue_pooler: INSIGHTS_DB_POOLER.default_value(),
            direct_database_url: DIRECT_DATABASE_URL.default_value(),
            concurrency: INSIGHTS_CONCURRENCY.default_value(),
            db_pool_max: INSIGHTS_DB_POOL_MAX.default_value(),
            db_acquire_timeout: INSIGHTS_DB_ACQUIRE_TIMEOUT_MS.default_value(),
            db_statement_timeout: INSIGHTS_DB_STATEMENT_TIMEOUT_MS.default_value(),
            enqueue_limit: INSIGHTS_ENQUEUE_LIMIT.default_value(),
            max_attempts: INSIGHTS_MAX_ATTEMPTS.default_value(),
            max_job_age: INSIGHTS_MAX_JOB_AGE.default_value(),
            breaker_threshold: INSIGHTS_BREAKER_THRESHOLD.default_value(),
            llm_base_url: INSIGHTS_LLM_BASE_URL.default_value(),
            llm_model: INSIGHTS_LLM_MODEL.default_value(),
            llm_api_key: INSIGHTS_LLM_API_KEY.default_value(),
            llm_auth_header: INSIGHTS_LLM_AUTH_HEADER.default_value(),
            llm_extra_headers: INSIGHTS_LLM_EXTRA_HEADERS.default_value(),
            llm_query_params: INSIGHTS_LLM_QUERY_PARAMS.default_value(),
            llm_timeout: INSIGHTS_LLM_TIMEOUT_MS.default_value(),
            max_messages: INSIGHTS_MAX_MESSAGES.default_value(),
            prompt_budget_chars: INSIGHTS_PROMPT_BUDGET_CHARS.default_value(),
            profile: INSIGHTS_PROFILE.default_value(),
            http_bind: INSIGHTS_HTTP_BIND.default_value(),
            dashboard_token: INSIGHTS_DASHBOARD_TOKEN.default_value(),
            log_filter: RUST_LOG.default_value(),
        }
    }
}

impl Settings {
    /// Reads and validates every variable through `lookup` (name → value); the files that
    /// `_FILE` variables name are read from the file system.
    pub fn from_lookup<F>(lookup: F) -> Result<Self, ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        Settings::from_sources(&Sources {
            var: &lookup,
            file: &|path| std::fs::read_to_string(path),
        })
    }

    /// Reads and validates every variable from `sources`.
    pub fn from_sources(sources: &Sources<'_>) -> Result<Self, ConfigError> {
        let get = sources;
        let database_url = DATABASE_URL.read(get)?;
        let pooler = INSIGHTS_DB_POOLER.read(get)?;
        let queue_database_url = QUEUE_DATABASE_URL.read(get)?;
        let settings = Settings {
            pooler: PoolerMode::for_url(pooler, database_url.as_ref()),
            queue_pooler: PoolerMode::for_url(pooler, queue_database_url.as_ref()),
            database_url,
            queue_database_url,
            direct_database_url: DIRECT_DATABASE_URL.read(get)?,
            concurrency: INSIGHTS_CONCURRENCY.read(get)?,
            db_pool_max: INSIGHTS_DB_POOL_MAX.read(get)?,
            db_acquire_timeout: INSIGHTS_DB_ACQUIRE_TIMEOUT_MS.read(get)?,
            db_statement_timeout: INSIGHTS_DB_STATEMENT_TIMEOUT_MS.read(get)?,
            enqueue_limit: INSIGHTS_ENQUEUE_LIMIT.read(get)?,
            max_attempts: INSIGHTS_MAX_ATTEMPTS.read(get)?,
            max_job_age: INSIGHTS_MAX_JOB_AGE.read(get)?,
            breaker_threshold: INSIGHTS_BREAKER_THRESHOLD.read(get)?,
            llm_base_url: INSIGHTS_LLM_BASE_URL.read(get)?,
            llm_model: INSIGHTS_LLM_MODEL.read(get)?,
            llm_api_key: INSIGHTS_LLM_API_KEY.read(get)?,
            llm_auth_header: INSIGHTS_LLM_AUTH_HEADER.read(get)?,
            llm_extra_headers: INSIGHTS_LLM_EXTRA_HEADERS.read(get)?,
            llm_query_params: INSIGHTS_LLM_QUERY_PARAMS.read(get)?,
            llm_timeout: INSIGHTS_LLM_TIMEOUT_MS.read(get)?,
            max_messages: INSIGHTS_MAX_MESSAGES.read(get)?,
            prompt_budget_chars: INSIGHTS_PROMPT_BUDGET_CHARS.read(get)?,
            profile: INSIGHTS_PROFILE.read(get)?,
            http_bind: INSIGHTS_HTTP_BIND.read(get)?,
            dashboard_token: INSIGHTS_DASHBOARD_TOKEN.read(get)?,
            log_filter: RUST_LOG.read(get)?,
        };
        settings.check_http_exposure()?;
        Ok(settings)
    }

    /// The app database URL, or the error a command that needs it reports.
    pub fn require_database_url(&self) -> Result<&DatabaseUrl, ConfigError> {
        self.database_url.as_ref().ok_or(ConfigError::Missing {
            name: DATABASE_URL.name,
            why: "a postgres:// URL of the app database",
        })
    }

    /// The queue database URL (falls back to `DATABASE_URL`).
    pub fn require_queue_database_url(&self) -> Result<&DatabaseUrl, ConfigError> {
        self.queue_database_url
            .as_ref()
            .or(self.database_url.as_ref())
            .ok_or(ConfigError::Missing {
                name: DATABASE_URL.name,
                why: "a postgres:// URL (or QUEUE_DATABASE_URL for the queue)",
            })
    }

    /// The URL migrations run through: `DIRECT_DATABASE_URL` when set, else `DATABASE_URL`.
    pub fn require_migration_url(&self) -> Result<&DatabaseUrl, ConfigError> {
        match &self.direct_database_url {
            Some(u) => Ok(u),
            None => self.require_database_url(),
        }
    }

    /// The LLM base URL, required by `work`.
    pub fn require_llm_base_url(&self) -> Result<&Url, ConfigError> {
        self.llm_base_url.as_ref().ok_or(ConfigError::Missing {
            name: INSIGHTS_LLM_BASE_URL.name,
            why: INSIGHTS_LLM_BASE_URL.form.what,
        })
    }

    /// The dashboard must not be reachable beyond loopback without a token. Call again after a
    /// CLI flag changes `http_bind`.
    pub fn check_http_exposure(&self) -> Result<(), ConfigError> {
        if !self.http_bind.ip().is_loopback() && self.dashboard_token.is_none() {
            return Err(ConfigError::Missing {
                name: INSIGHTS_DASHBOARD_TOKEN.name,
                why: "INSIGHTS_HTTP_BIND is not a loopback address",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::{BTreeSet, HashMap};

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    /// Settings from `vars` and from the files in `files` (path → contents); any other path
    /// cannot be read.
    fn settings_with_files(
        vars: &[(&str, &str)],
        files: &[(&str, &str)],
    ) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let files: HashMap<&Path, String> = files
            .iter()
            .map(|(p, c)| (Path::new(*p), (*c).to_owned()))
            .collect();
        Settings::from_sources(&Sources {
            var: &|name| vars.get(name).cloned(),
            file: &|path| {
                files.get(path).cloned().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::PermissionDenied, "permission denied")
                })
            },
        })
    }

    #[test]
    fn every_secret_variable_also_reads_from_a_file() {
        let with_file: BTreeSet<String> = VARIABLES.iter().filter_map(|v| v.file_name()).collect();
        let expected: BTreeSet<String> = [
            "DATABASE_URL_FILE",
            "QUEUE_DATABASE_URL_FILE",
            "DIRECT_DATABASE_URL_FILE",
            "INSIGHTS_LLM_API_KEY_FILE",
            "OPENAI_API_KEY_FILE",
            "INSIGHTS_LLM_EXTRA_HEADERS_FILE",
            "INSIGHTS_DASHBOARD_TOKEN_FILE",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(with_file, expected);
        assert!(
            variables_markdown().contains("| `DATABASE_URL` or `DATABASE_URL_FILE` | required |")
        );
        assert!(variables_markdown().contains("| `INSIGHTS_CONCURRENCY` | `8` |"));
    }

    #[test]
    fn a_secret_file_gives_its_value_without_the_trailing_newline() {
        let s = settings_with_files(
            &[
                ("DATABASE_URL_FILE", "/run/secrets/db"),
                ("OPENAI_API_KEY_FILE", "/run/secrets/openai"),
                ("INSIGHTS_DASHBOARD_TOKEN_FILE", "/run/secrets/dash"),
                ("INSIGHTS_HTTP_BIND", "0.0.0.0:9090"),
            ],
            &[
                ("/run/secrets/db", "postgres://app:hunter2@db/crm\n"),
                ("/run/secrets/openai", "sk-from-file\r\n"),
                ("/run/secrets/dash", "tok-from-file\n"),
            ],
        )
        .unwrap();
        assert_eq!(
            s.database_url.as_ref().unwrap().expose(),
            "postgres://app:hunter2@db/crm"
        );
        // The queue falls back to the app database, wherever its value came from; the LLM key
        // falls back to OPENAI_API_KEY's file.
        assert_eq!(s.queue_database_url, s.database_url);
        assert_eq!(s.llm_api_key.as_ref().unwrap().expose(), "sk-from-file");
        assert_eq!(
            s.dashboard_token.as_ref().unwrap().expose(),
            "tok-from-file"
        );
        // The variable itself wins over the file of the one it falls back to.
        let s = settings_with_files(
            &[
                ("INSIGHTS_LLM_API_KEY", "primary"),
                ("OPENAI_API_KEY_FILE", "/run/secrets/openai"),
            ],
            &[("/run/secrets/openai", "fallback")],
        )
        .unwrap();
        assert_eq!(s.llm_api_key.unwrap().expose(), "primary");
    }

    #[test]
    fn a_variable_and_its_file_both_set_is_an_error_naming_both() {
        let e = settings_with_files(
            &[
                ("INSIGHTS_LLM_API_KEY", "sk-topsecret"),
                ("INSIGHTS_LLM_API_KEY_FILE", "/run/secrets/llm"),
            ],
            &[("/run/secrets/llm", "sk-other")],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "INSIGHTS_LLM_API_KEY and INSIGHTS_LLM_API_KEY_FILE are both set: set one of them"
        );
        assert!(!format!("{e} {e:?}").contains("sk-"));
        // An empty variable counts as unset, so it does not conflict with its file.
        let s = settings_with_files(
            &[("DATABASE_URL", " "), ("DATABASE_URL_FILE", "/s/db")],
            &[("/s/db", "postgres://u@h/db")],
        )
        .unwrap();
        assert_eq!(s.database_url.unwrap().expose(), "postgres://u@h/db");
    }

    #[test]
    fn an_unreadable_secret_file_names_the_variable_and_the_path_only() {
        let e = settings_with_files(&[("DIRECT_DATABASE_URL_FILE", "/run/secrets/missing")], &[])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "DIRECT_DATABASE_URL_FILE: cannot read /run/secrets/missing: permission denied"
        );
        // A file whose content is refused echoes it redacted, as a refused variable does.
        let e = settings_with_files(
            &[("DATABASE_URL_FILE", "/s/db")],
            &[("/s/db", "mysql://app:hunter2@h/db\n")],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("DATABASE_URL: expected a postgres:// URL"),
            "{e}"
        );
        assert!(!format!("{e} {e:?}").contains("hunter2"));
    }

    #[test]
    fn from_lookup_reads_a_secret_file_from_disk() {
        let path = std::env::temp_dir().join(format!(
            "insights-core-secret-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, "tok-on-disk\n").unwrap();
        let path_text = path.to_string_lossy().into_owned();
        let read = Settings::from_lookup(|name| {
            (name == "INSIGHTS_DASHBOARD_TOKEN_FILE").then(|| path_text.clone())
        });
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            read.unwrap().dashboard_token.unwrap().expose(),
            "tok-on-disk"
        );
        let missing = Settings::from_lookup(|name| {
            (name == "INSIGHTS_DASHBOARD_TOKEN_FILE").then(|| path_text.clone())
        })
        .unwrap_err();
        assert!(
            missing.to_string().starts_with(&format!(
                "INSIGHTS_DASHBOARD_TOKEN_FILE: cannot read {path_text}: "
            )),
            "{missing}"
        );
    }

    #[test]
    fn an_empty_environment_is_the_default() {
        assert_eq!(settings(&[]).unwrap(), Settings::default());
        let s = Settings::default();
        assert_eq!(s.concurrency, 8);
        assert_eq!(s.db_pool_max, defaults::DB_POOL_MAX);
        assert_eq!(s.max_job_age, Duration::from_secs(24 * 60 * 60));
        assert_eq!(s.pooler, PoolerMode::Direct);
        assert!(s.database_url.is_none());
        assert!(s.profile.is_none(), "no profile: the built-in one");
        assert!(s.require_llm_base_url().is_err());
        assert!(s.check_http_exposure().is_ok());
    }

    #[test]
    fn every_written_default_parses_back_to_the_default() {
        let written: HashMap<&str, String> = VARIABLES
            .iter()
            .filter_map(|v| v.default_text().map(|text| (v.name(), text)))
            .collect();
        assert!(written.len() >= 15, "{written:?}");
        let parsed = Settings::from_lookup(|name| written.get(name).cloned()).unwrap();
        assert_eq!(parsed, Settings::default());
    }

    #[test]
    fn from_lookup_reads_exactly_the_documented_variables() {
        let asked = RefCell::new(BTreeSet::new());
        Settings::from_lookup(|name| {
            asked.borrow_mut().insert(name.to_owned());
            None
        })
        .unwrap();
        let documented: BTreeSet<String> = VARIABLES
            .iter()
            .flat_map(|v| std::iter::once(v.name().to_owned()).chain(v.file_name()))
            .collect();
        assert_eq!(asked.into_inner(), documented);
    }

    #[test]
    fn an_embedder_sets_only_what_it_needs() {
        let url = DatabaseUrl::new("postgres://u@localhost/db");
        let s = Settings {
            database_url: Some(url.clone()),
            ..Settings::default()
        };
        assert_eq!(s.require_queue_database_url().unwrap(), &url);
        assert_eq!(s.require_migration_url().unwrap(), &url);
        let from_env = settings(&[("DATABASE_URL", "postgres://u@localhost/db")]).unwrap();
        assert_eq!(
            from_env.require_queue_database_url().unwrap(),
            s.require_queue_database_url().unwrap()
        );
    }

    #[test]
    fn the_readme_table_is_the_rendered_rows() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let table: String = readme
            .lines()
            .skip_while(|l| !l.starts_with("<!-- variables:start"))
            .skip(1)
            .take_while(|l| !l.starts_with("<!-- variables:end"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            table,
            variables_markdown(),
            "regenerate README.md's table from insights_core::variables_markdown()"
        );
        assert_eq!(variables_markdown().lines().count(), VARIABLES.len() + 2);
        assert!(
            variables_markdown()
                .contains("| `INSIGHTS_CONCURRENCY` | `8` | a whole number from 1 to 4096 |")
        );
        assert!(
            variables_markdown()
                .contains("| `QUEUE_DATABASE_URL` or `QUEUE_DATABASE_URL_FILE` | `DATABASE_URL` |")
        );
    }

    #[test]
    fn bad_numbers_name_the_variable_and_the_form() {
        let e = settings(&[("INSIGHTS_CONCURRENCY", "abc")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"INSIGHTS_CONCURRENCY: expected a whole number from 1 to 4096, got "abc""#
        );
        let e = settings(&[("INSIGHTS_CONCURRENCY", "0")]).unwrap_err();
        assert!(e.to_string().starts_with("INSIGHTS_CONCURRENCY: expected"));
        let e = settings(&[("INSIGHTS_CONCURRENCY", "4097")]).unwrap_err();
        assert!(e.to_string().starts_with("INSIGHTS_CONCURRENCY: expected"));
        let e = settings(&[("INSIGHTS_DB_POOL_MAX", "-1")]).unwrap_err();
        assert!(e.to_string().starts_with("INSIGHTS_DB_POOL_MAX: "));
        // Beyond u32 although within u64: refused, not truncated.
        let e = settings(&[("INSIGHTS_MAX_MESSAGES", "4294967297")]).unwrap_err();
        assert!(e.to_string().starts_with("INSIGHTS_MAX_MESSAGES: "));
        let e = settings(&[("INSIGHTS_LLM_TIMEOUT_MS", "1.5s")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"INSIGHTS_LLM_TIMEOUT_MS: expected a duration in whole milliseconds from 1 to 3600000, got "1.5s""#
        );
        let e = settings(&[("INSIGHTS_DB_POOLER", "session")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("INSIGHTS_DB_POOLER: expected `none` or `transaction`")
        );
        let e = settings(&[("INSIGHTS_LLM_BASE_URL", "localhost:8080")]).unwrap_err();
        assert!(e.to_string().starts_with("INSIGHTS_LLM_BASE_URL: "));
        let e = settings(&[("INSIGHTS_HTTP_BIND", "9090")]).unwrap_err();
        assert!(e.to_string().starts_with("INSIGHTS_HTTP_BIND: "));
        // Whitespace-only counts as unset; surrounding whitespace is ignored.
        assert_eq!(
            settings(&[("INSIGHTS_CONCURRENCY", " ")])
                .unwrap()
                .concurrency,
            8
        );
        assert_eq!(
            settings(&[("INSIGHTS_CONCURRENCY", " 1_000 ")])
                .unwrap()
                .concurrency,
            1000
        );
    }

    #[test]
    fn millisecond_variables_keep_their_integer_form() {
        let s = settings(&[
            ("INSIGHTS_DB_ACQUIRE_TIMEOUT_MS", "250"),
            ("INSIGHTS_DB_STATEMENT_TIMEOUT_MS", "3600000"),
            ("INSIGHTS_LLM_TIMEOUT_MS", "1234"),
        ])
        .unwrap();
        assert_eq!(s.db_acquire_timeout, Duration::from_millis(250));
        assert_eq!(s.db_statement_timeout, Duration::from_secs(3600));
        assert_eq!(s.llm_timeout, Duration::from_millis(1234));
        assert!(settings(&[("INSIGHTS_DB_STATEMENT_TIMEOUT_MS", "3600001")]).is_err());
        assert!(settings(&[("INSIGHTS_LLM_TIMEOUT_MS", "0")]).is_err());
    }

    #[test]
    fn max_job_age_is_written_with_a_unit_within_its_range() {
        for (text, secs) in [
            ("90s", 90),
            ("15m", 900),
            ("24h", 86_400),
            ("30d", 2_592_000),
        ] {
            let s = settings(&[("INSIGHTS_MAX_JOB_AGE", text)]).unwrap();
            assert_eq!(s.max_job_age, Duration::from_secs(secs), "{text}");
        }
        for bad in [
            "59s",
            "31d",
            "24",
            "h",
            "1.5h",
            "2w",
            "-1h",
            "99999999999999999999d",
        ] {
            let e = settings(&[("INSIGHTS_MAX_JOB_AGE", bad)]).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "INSIGHTS_MAX_JOB_AGE: expected a duration such as 90s, 15m or 24h, from 1m to 30d, got {bad:?}"
                )
            );
        }
    }

    #[test]
    fn spans_are_written_in_their_largest_exact_unit() {
        assert_eq!(Span::format(Duration::from_secs(90)), "90s");
        assert_eq!(Span::format(Duration::from_secs(900)), "15m");
        assert_eq!(Span::format(Duration::from_secs(36 * 3600)), "36h");
        assert_eq!(Span::format(Duration::from_secs(86_400)), "1d");
        assert_eq!(Span::format(Duration::ZERO), "0s");
    }

    #[test]
    fn a_flag_value_is_checked_by_its_variable_row() {
        assert_eq!(INSIGHTS_CONCURRENCY.parse("64"), Ok(64));
        let e = INSIGHTS_CONCURRENCY.parse("0").unwrap_err();
        assert!(e.to_string().starts_with("INSIGHTS_CONCURRENCY: expected"));
        assert_eq!(INSIGHTS_CONCURRENCY.check(4096), Ok(4096));
        assert_eq!(
            INSIGHTS_CONCURRENCY.check(0).unwrap_err().to_string(),
            r#"INSIGHTS_CONCURRENCY: expected a whole number from 1 to 4096, got "0""#
        );
    }

    #[test]
    fn database_url_errors_do_not_leak_the_password() {
        for name in ["DATABASE_URL", "QUEUE_DATABASE_URL", "DIRECT_DATABASE_URL"] {
            let e = settings(&[(name, "mysql://app:hunter2@h/db")]).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("{name}: expected a postgres:// URL")),
                "{msg}"
            );
            assert!(!msg.contains("hunter2"), "{msg}");
            assert!(!format!("{e:?}").contains("hunter2"));
        }
        let missing = settings(&[]).unwrap().require_database_url().unwrap_err();
        assert!(missing.to_string().starts_with("DATABASE_URL: required"));
    }

    #[test]
    fn pooler_mode_from_setting_or_url_hint() {
        let s = settings(&[("DATABASE_URL", "postgres://u@h:6543/db?pgbouncer=true")]).unwrap();
        assert_eq!(s.pooler, PoolerMode::Transaction);
        assert_eq!(s.queue_pooler, PoolerMode::Transaction);
        assert_eq!(s.queue_database_url, s.database_url);
        let s = settings(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            (
                "QUEUE_DATABASE_URL",
                "postgres://u@q:6543/db?pgbouncer=true",
            ),
        ])
        .unwrap();
        assert_eq!(s.pooler, PoolerMode::Direct);
        assert_eq!(s.queue_pooler, PoolerMode::Transaction);
        let s = settings(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("INSIGHTS_DB_POOLER", "transaction"),
        ])
        .unwrap();
        assert_eq!(s.pooler, PoolerMode::Transaction);
        let s = settings(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("DIRECT_DATABASE_URL", "postgres://u@direct/db"),
        ])
        .unwrap();
        assert_eq!(
            s.require_migration_url().unwrap().host_port(),
            "direct:5432"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = settings(&[
            ("DATABASE_URL", "postgres://app@h/db?password=hunter2"),
            ("OPENAI_API_KEY", "sk-topsecret"),
            ("INSIGHTS_DASHBOARD_TOKEN", "tok-secret"),
        ])
        .unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains("sk-topsecret"), "{dbg}");
        assert!(!dbg.contains("tok-secret"), "{dbg}");
        assert_eq!(s.llm_api_key.unwrap().expose(), "sk-topsecret");
        let s = settings(&[
            ("INSIGHTS_LLM_API_KEY", "primary"),
            ("OPENAI_API_KEY", "fallback"),
        ])
        .unwrap();
        assert_eq!(s.llm_api_key.unwrap().expose(), "primary");
        assert_eq!(
            Form::echo(&SecretText { what: "" }, "tok-secret"),
            "[redacted]"
        );
    }

    #[test]
    fn the_auth_header_is_a_name_and_an_optional_scheme() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.llm_auth_header, AuthHeader::default());
        assert_eq!(s.llm_auth_header.to_string(), "Authorization: Bearer");
        let key = SecretString::new("k".to_owned());
        assert_eq!(s.llm_auth_header.value(&key).expose(), "Bearer k");
        let azure = settings(&[("INSIGHTS_LLM_AUTH_HEADER", " api-key ")])
            .unwrap()
            .llm_auth_header;
        assert_eq!(azure.name, "api-key");
        assert_eq!(azure.scheme, None);
        assert_eq!(azure.value(&key).expose(), "k");
        let gateway = settings(&[("INSIGHTS_LLM_AUTH_HEADER", "cf-aig-authorization:Bearer")])
            .unwrap()
            .llm_auth_header;
        assert_eq!(gateway.to_string(), "cf-aig-authorization: Bearer");
        for bad in ["api key", "Authorization: Bearer token", ": Bearer", "Ключ"] {
            let e = settings(&[("INSIGHTS_LLM_AUTH_HEADER", bad)]).unwrap_err();
            assert!(
                e.to_string().starts_with(
                    "INSIGHTS_LLM_AUTH_HEADER: expected a header name, optionally followed by `:`"
                ),
                "{e}"
            );
        }
    }

    #[test]
    fn extra_headers_are_pairs_whose_values_are_never_shown() {
        let s = settings(&[(
            "INSIGHTS_LLM_EXTRA_HEADERS",
            " OpenAI-Project: proj_123 ;X-Gateway-Token:Bearer tok-SECRET; ",
        )])
        .unwrap();
        let pairs: Vec<(&str, &str)> = s
            .llm_extra_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.expose().as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("OpenAI-Project", "proj_123"),
                ("X-Gateway-Token", "Bearer tok-SECRET")
            ]
        );
        let dbg = format!("{s:?}");
        assert!(
            dbg.contains("X-Gateway-Token") && !dbg.contains("SECRET"),
            "{dbg}"
        );
        assert!(settings(&[]).unwrap().llm_extra_headers.is_empty());

        for (bad, reason) in [
            ("X-Token SECRET", "(entry 1 has no `:`)"),
            (
                "A: 1; X Token: SECRET",
                "(entry 2 does not start with a header name)",
            ),
            (
                "X-Token:",
                "(entry 1's value is empty or not printable ASCII)",
            ),
            (
                "X-Token: SECRÉT",
                "(entry 1's value is empty or not printable ASCII)",
            ),
            (
                "Content-Type: text/SECRET",
                "(the client sets `Content-Type` itself)",
            ),
            ("X-A: SECRET; x-a: SECRET", "(`x-a` is set twice)"),
        ] {
            let e = settings(&[("INSIGHTS_LLM_EXTRA_HEADERS", bad)]).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "INSIGHTS_LLM_EXTRA_HEADERS: expected `Name: value` pairs separated by `;`, e.g. `OpenAI-Project: proj_123; X-Team: crm` {reason}, got \"[redacted]\""
                )
            );
            assert!(!format!("{e:?}").contains("SECRET"));
        }
        // Secret, so also read from a file the way tokens are mounted.
        let s = settings_with_files(
            &[("INSIGHTS_LLM_EXTRA_HEADERS_FILE", "/run/secrets/headers")],
            &[("/run/secrets/headers", "X-Team: crm\n")],
        )
        .unwrap();
        assert_eq!(s.llm_extra_headers[0].1.expose(), "crm");
    }

    #[test]
    fn query_params_are_name_value_pairs() {
        let s = settings(&[(
            "INSIGHTS_LLM_QUERY_PARAMS",
            "api-version=2024-10-21&note=a%20b&flag=",
        )])
        .unwrap();
        let pairs: Vec<(&str, &str)> = s
            .llm_query_params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("api-version", "2024-10-21"), ("note", "a b"), ("flag", "")]
        );
        assert!(settings(&[]).unwrap().llm_query_params.is_empty());
        for (bad, pair) in [("api-version", "api-version"), ("a=1&=2", "=2")] {
            let e = settings(&[("INSIGHTS_LLM_QUERY_PARAMS", bad)]).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "INSIGHTS_LLM_QUERY_PARAMS: expected `name=value` pairs joined by `&`, e.g. `api-version=2024-10-21` (`{pair}` is not name=value), got {bad:?}"
                )
            );
        }
    }

    #[test]
    fn dashboard_beyond_loopback_needs_a_token() {
        let e = settings(&[("INSIGHTS_HTTP_BIND", "0.0.0.0:9090")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("INSIGHTS_DASHBOARD_TOKEN: required")
        );
        assert!(
            settings(&[
                ("INSIGHTS_HTTP_BIND", "0.0.0.0:9090"),
                ("INSIGHTS_DASHBOARD_TOKEN", "t")
            ])
            .is_ok()
        );
    }
}
