//! The insight's JSON Schema, compiled once, and the validation of every reply against it before
//! it is written. `$ref`s are resolved only inside the schema itself: nothing is fetched from the
//! network or the file system.

use std::fmt;
use std::sync::Arc;

use crate::insight::insight_json_schema;

/// A compiled insight schema. Cheap to clone.
#[derive(Clone)]
pub struct OutputSchema {
    schema: Arc<serde_json::Value>,
    validator: Arc<jsonschema::Validator>,
}

impl fmt::Debug for OutputSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputSchema")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// Why a schema does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the JSON Schema does not compile: {0}")]
pub struct SchemaError(pub String);

/// Every way an insight document breaks its schema, one line each: the JSON pointer of the
/// offending value (`/` for the document itself) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the insight does not match its schema: {}", .0.join("; "))]
pub struct SchemaViolations(pub Vec<String>);

impl OutputSchema {
    /// Compiles `schema` (its draft is taken from `$schema`, 2020-12 when absent).
    pub fn compile(schema: serde_json::Value) -> Result<Self, SchemaError> {
        let validator =
            jsonschema::validator_for(&schema).map_err(|e| SchemaError(e.to_string()))?;
        Ok(Self {
            schema: Arc::new(schema),
            validator: Arc::new(validator),
        })
    }

    /// The built-in insight schema, [`insight_json_schema`].
    pub fn builtin() -> Result<Self, SchemaError> {
        Self::compile(insight_json_schema())
    }

    /// The schema as written (sent as `response_format.json_schema.schema`).
    pub fn schema(&self) -> &serde_json::Value {
        &self.schema
    }

    /// Checks `document` against the schema, reporting every violation.
    pub fn validate(&self, document: &serde_json::Value) -> Result<(), SchemaViolations> {
        let lines: Vec<String> = self
            .validator
            .iter_errors(document)
            .map(|e| {
                let path = e.instance_path().as_str();
                let path = if path.is_empty() { "/" } else { path };
                format!("{path}: {e}")
            })
            .collect();
        if lines.is_empty() {
            Ok(())
        } else {
            Err(SchemaViolations(lines))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtin_schema_accepts_a_valid_insight_and_names_every_violation() {
        let s = OutputSchema::builtin().unwrap();
        assert_eq!(s.schema(), &insight_json_schema());
        let ok = json!({"summary":"Wants a demo.","sentiment":"positive","objections":[],"next_steps":["call"]});
        assert_eq!(s.validate(&ok), Ok(()));

        let bad =
            json!({"summary": 3, "sentiment": "angry", "objections": ["a", 1], "extra": true});
        let SchemaViolations(lines) = s.validate(&bad).unwrap_err();
        let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
        assert!(has("/summary: 3 is not of type \"string\""), "{lines:#?}");
        assert!(has("/sentiment: "), "{lines:#?}");
        assert!(
            has("/objections/1: 1 is not of type \"string\""),
            "{lines:#?}"
        );
        assert!(has("/: ") && has("next_steps"), "{lines:#?}");
        assert!(has("extra"), "{lines:#?}");
        assert!(lines.iter().all(|l| !l.contains('\n')), "{lines:#?}");
    }

    #[test]
    fn a_schema_that_does_not_compile_is_an_error() {
        assert!(OutputSchema::compile(json!({"type": "no-such-type"})).is_err());
        assert!(OutputSchema::compile(json!({"$ref": "https://example.com/s.json"})).is_err());
    }
}
