//! Lead keys of any SQL type. A team's leads may be keyed by `bigint` (this project's schema),
//! `uuid` or `text` (Prisma's cuid). The JSON form is the bare value: a number for `bigint`, a
//! string for `uuid` and `text`, so a job payload written before keys could be text
//! (`{"lead_id": 123}`) decodes to [`LeadKey::Int`] unchanged.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The primary key of one lead, whatever its SQL type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeadKey {
    /// A `bigint` key.
    Int(i64),
    /// A `text` or `uuid` key, as its text form.
    Text(String),
}

/// The SQL type of a profile's lead keys: how keys are bound (`$1 bigint[]`, `uuid[]`,
/// `text[]`) and which [`LeadKey`] values are valid for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeadKeyKind {
    #[default]
    Bigint,
    Uuid,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeadKeyError {
    #[error("lead key {key:?} is not a {kind} key")]
    WrongKind { key: String, kind: &'static str },
}

impl LeadKeyKind {
    /// The SQL type name (`bigint`, `uuid`, `text`).
    pub fn sql_type(self) -> &'static str {
        match self {
            LeadKeyKind::Bigint => "bigint",
            LeadKeyKind::Uuid => "uuid",
            LeadKeyKind::Text => "text",
        }
    }

    /// Parses a key given as text (a command-line argument, a column read as text). A uuid is
    /// normalised to its lowercase hyphenated form, which is how Postgres prints it.
    pub fn parse(self, s: &str) -> Result<LeadKey, LeadKeyError> {
        let wrong = || LeadKeyError::WrongKind {
            key: s.to_owned(),
            kind: self.sql_type(),
        };
        match self {
            LeadKeyKind::Bigint => s.trim().parse().map(LeadKey::Int).map_err(|_| wrong()),
            LeadKeyKind::Uuid => normalise_uuid(s).map(LeadKey::Text).ok_or_else(wrong),
            LeadKeyKind::Text => Ok(LeadKey::Text(s.to_owned())),
        }
    }

    /// A decoded key (for example from a queued job) in this kind's form: a uuid normalised
    /// as in [`Self::parse`]; an error when it does not fit the kind.
    pub fn fit(self, key: LeadKey) -> Result<LeadKey, LeadKeyError> {
        let wrong = |key: &LeadKey| LeadKeyError::WrongKind {
            key: key.to_string(),
            kind: self.sql_type(),
        };
        match (self, key) {
            (LeadKeyKind::Bigint, key @ LeadKey::Int(_))
            | (LeadKeyKind::Text, key @ LeadKey::Text(_)) => Ok(key),
            (LeadKeyKind::Uuid, LeadKey::Text(s)) => match normalise_uuid(&s) {
                Some(s) => Ok(LeadKey::Text(s)),
                None => Err(wrong(&LeadKey::Text(s))),
            },
            (_, key) => Err(wrong(&key)),
        }
    }
}

/// The 8-4-4-4-12 hexadecimal form Postgres accepts most commonly and prints, lowercased.
fn normalise_uuid(s: &str) -> Option<String> {
    let s = s.trim();
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let hex = groups
        .iter()
        .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()));
    (lens == [8, 4, 4, 4, 12] && hex).then(|| s.to_ascii_lowercase())
}

impl fmt::Display for LeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeadKey::Int(i) => write!(f, "{i}"),
            LeadKey::Text(s) => f.write_str(s),
        }
    }
}

impl From<i64> for LeadKey {
    fn from(id: i64) -> Self {
        LeadKey::Int(id)
    }
}

impl From<String> for LeadKey {
    fn from(key: String) -> Self {
        LeadKey::Text(key)
    }
}

impl Serialize for LeadKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            LeadKey::Int(i) => serializer.serialize_i64(*i),
            LeadKey::Text(s) => serializer.serialize_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for LeadKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LeadKeyVisitor)
    }
}

struct LeadKeyVisitor;

impl Visitor<'_> for LeadKeyVisitor {
    type Value = LeadKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a lead key: a 64-bit integer or a string")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<LeadKey, E> {
        Ok(LeadKey::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<LeadKey, E> {
        i64::try_from(v)
            .map(LeadKey::Int)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<LeadKey, E> {
        Ok(LeadKey::Text(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<LeadKey, E> {
        Ok(LeadKey::Text(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::InsightJob;

    /// The payload shape with a key of any type.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Payload {
        lead_id: LeadKey,
    }

    #[test]
    fn payloads_queued_with_numeric_ids_still_decode() {
        let old = serde_json::to_string(&InsightJob::new(123)).unwrap();
        assert_eq!(old, r#"{"lead_id":123}"#);
        let p: Payload = serde_json::from_str(&old).unwrap();
        assert_eq!(p.lead_id, LeadKey::Int(123));
        assert_eq!(serde_json::to_string(&p).unwrap(), old);
        let max = format!(r#"{{"lead_id":{}}}"#, i64::MAX);
        assert_eq!(
            serde_json::from_str::<Payload>(&max).unwrap().lead_id,
            LeadKey::Int(i64::MAX)
        );
        assert!(serde_json::from_str::<Payload>(r#"{"lead_id":18446744073709551615}"#).is_err());
        assert!(serde_json::from_str::<Payload>(r#"{"lead_id":1.5}"#).is_err());
        assert!(serde_json::from_str::<Payload>(r#"{"lead_id":null}"#).is_err());
    }

    #[test]
    fn text_and_uuid_keys_round_trip_as_strings() {
        for raw in [
            r#"{"lead_id":"clx2v9k3b0000qz8h4f1e2a3b"}"#,
            r#"{"lead_id":"3f2b8c1e-9d4a-4e6b-8a7c-1d2e3f4a5b6c"}"#,
            r#"{"lead_id":"42"}"#,
        ] {
            let p: Payload = serde_json::from_str(raw).unwrap();
            assert!(matches!(p.lead_id, LeadKey::Text(_)), "{raw}");
            assert_eq!(serde_json::to_string(&p).unwrap(), raw);
        }
    }

    #[test]
    fn kinds_parse_and_check_their_keys() {
        assert_eq!(LeadKeyKind::Bigint.parse(" 7 "), Ok(LeadKey::Int(7)));
        assert!(LeadKeyKind::Bigint.parse("clx2v9k3b").is_err());
        assert_eq!(
            LeadKeyKind::Uuid.parse("3F2B8C1E-9D4A-4E6B-8A7C-1D2E3F4A5B6C"),
            Ok(LeadKey::Text("3f2b8c1e-9d4a-4e6b-8a7c-1d2e3f4a5b6c".into()))
        );
        assert!(LeadKeyKind::Uuid.parse("3f2b8c1e-9d4a-4e6b-8a7c").is_err());
        assert_eq!(
            LeadKeyKind::Text.parse("clx2v9k3b"),
            Ok(LeadKey::Text("clx2v9k3b".into()))
        );
        assert_eq!(
            LeadKeyKind::Bigint.fit(LeadKey::Int(1)),
            Ok(LeadKey::Int(1))
        );
        assert!(LeadKeyKind::Bigint.fit(LeadKey::Text("1".into())).is_err());
        assert!(LeadKeyKind::Text.fit(LeadKey::Int(1)).is_err());
        assert!(LeadKeyKind::Uuid.fit(LeadKey::Text("nope".into())).is_err());
        assert_eq!(
            LeadKeyKind::Uuid.fit(LeadKey::Text("3F2B8C1E-9D4A-4E6B-8A7C-1D2E3F4A5B6C".into())),
            Ok(LeadKey::Text("3f2b8c1e-9d4a-4e6b-8a7c-1d2e3f4a5b6c".into()))
        );
        assert_eq!(LeadKey::Int(9).to_string(), "9");
    }
}
