//! Rendering: a readable table (ours, baseline, ratio, target, pass/fail) or one JSON object
//! with exactly the fields the issues name, plus extras.

use serde_json::{Map, Value};

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub metric: String,
    pub ours: Result<f64, String>,
    pub baseline: Option<(String, f64)>,
    pub target: Option<Target>,
    /// Free text shown instead of a number (diagnostics).
    pub text: Option<String>,
}

/// A target: at least / at most a value, optionally relative to the baseline.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
    /// At least this multiple of the baseline column.
    TimesBaseline(f64),
}

impl Row {
    pub fn new(metric: impl Into<String>, ours: Result<f64, String>) -> Self {
        Self {
            metric: metric.into(),
            ours,
            baseline: None,
            target: None,
            text: None,
        }
    }

    /// A diagnostic line with text instead of a figure.
    pub fn text(metric: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            ..Self::new(metric, Err(String::new()))
        }
    }

    pub fn baseline(mut self, name: impl Into<String>, value: Option<f64>) -> Self {
        if let Some(v) = value {
            self.baseline = Some((name.into(), v));
        }
        self
    }

    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// `None` when there is no target or nothing to compare.
    pub fn pass(&self) -> Option<bool> {
        let ours = *self.ours.as_ref().ok()?;
        match self.target? {
            Target::AtLeast(t) => Some(ours >= t),
            Target::AtMost(t) => Some(ours <= t),
            Target::TimesBaseline(k) => {
                let (_, b) = self.baseline.as_ref()?;
                Some(ours >= k * b)
            }
        }
    }
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    // One decimal below 1,000, so a figure is never shown rounded onto its target (246.9 as
    // "247" next to "FAIL").
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The human table.
pub fn table(title: &str, rows: &[Row], notes: &[String]) -> String {
    let mut lines = vec![vec![
        "metric".to_owned(),
        "ours".to_owned(),
        "baseline".to_owned(),
        "ratio".to_owned(),
        "target".to_owned(),
        "result".to_owned(),
    ]];
    let mut errors: Vec<&str> = Vec::new();
    for r in rows {
        let ours = match &r.ours {
            Ok(v) => fmt_num(*v),
            _ if r.text.is_some() => r.text.clone().unwrap_or_default(),
            Err(e) if e == "skipped" || e == "n/a" => e.clone(),
            Err(e) => {
                let i = errors.iter().position(|x| x == e).unwrap_or_else(|| {
                    errors.push(e);
                    errors.len() - 1
                });
                format!("error [{}]", i + 1)
            }
        };
        let (baseline, ratio) = match (&r.baseline, &r.ours) {
            (Some((name, b)), Ok(o)) => (
                format!("{} ({name})", fmt_num(*b)),
                if *b > 0.0 {
                    format!("{:.2}x", o / b)
                } else {
                    "-".to_owned()
                },
            ),
            (Some((name, b)), Err(_)) => (format!("{} ({name})", fmt_num(*b)), "-".to_owned()),
            _ => ("-".to_owned(), "-".to_owned()),
        };
        let target = match r.target {
            Some(Target::AtLeast(t)) => format!(">= {}", fmt_num(t)),
            Some(Target::AtMost(t)) => format!("<= {}", fmt_num(t)),
            Some(Target::TimesBaseline(k)) => format!(">= {k}x baseline"),
            None => "-".to_owned(),
        };
        let result = match r.pass() {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None if r.target.is_some() => "n/a",
            None => "",
        };
        lines.push(vec![
            r.metric.clone(),
            ours,
            baseline,
            ratio,
            target,
            result.to_owned(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!("{title}\n");
    for (i, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    for n in notes {
        out.push_str(&format!("note: {n}\n"));
    }
    for (i, e) in errors.iter().enumerate() {
        out.push_str(&format!("error [{}]: {e}\n", i + 1));
    }
    out
}

/// A JSON number, or null for a missing or non-finite value.
pub fn num(v: Option<f64>) -> Value {
    // Counts print as integers.
    if let Some(x) = v
        && x.is_finite()
        && x.fract() == 0.0
        && x.abs() < 9.0e15
    {
        return Value::from(x as i64);
    }
    v.and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// Rounds to three decimals so the JSON stays readable.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Builds the JSON object in insertion order.
#[derive(Debug, Default)]
pub struct Json(Map<String, Value>);

impl Json {
    pub fn set(&mut self, key: &str, v: Option<f64>) -> &mut Self {
        self.0.insert(key.to_owned(), num(v.map(round3)));
        self
    }

    pub fn set_value(&mut self, key: &str, v: Value) -> &mut Self {
        self.0.insert(key.to_owned(), v);
        self
    }

    pub fn render(self) -> String {
        Value::Object(self.0).to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pass_and_fail_follow_the_target() {
        let r = Row::new("x", Ok(12.0)).target(Target::AtLeast(10.0));
        assert_eq!(r.pass(), Some(true));
        let r = Row::new("x", Ok(4.0)).target(Target::AtMost(3.0));
        assert_eq!(r.pass(), Some(false));
        let r = Row::new("x", Ok(14.0))
            .baseline("b", Some(10.0))
            .target(Target::TimesBaseline(1.5));
        assert_eq!(r.pass(), Some(false));
        let r = Row::new("x", Err("boom".into())).target(Target::AtLeast(1.0));
        assert_eq!(r.pass(), None);
    }

    #[test]
    fn table_has_a_header_and_a_row_per_metric() {
        let rows = vec![
            Row::new("a", Ok(1.0)).target(Target::AtLeast(2.0)),
            Row::new("b", Ok(3.0)),
        ];
        let t = table("T", &rows, &[]);
        assert_eq!(t.lines().count(), 5);
        assert!(t.contains("FAIL"));
    }

    #[test]
    fn errors_are_listed_once_and_text_rows_show_their_text() {
        let rows = vec![
            Row::new("a", Err("boom".into())),
            Row::new("b", Err("boom".into())),
            Row::text("c", "1 / 2 / 3"),
        ];
        let t = table("T", &rows, &[]);
        assert_eq!(t.matches("error [1]: boom").count(), 1);
        assert!(t.contains("1 / 2 / 3"));
        assert!(!t.contains("error [2]"));
    }

    #[test]
    fn figures_near_a_target_keep_a_decimal() {
        assert_eq!(fmt_num(246.94), "246.9");
        assert_eq!(fmt_num(5987.4), "5987");
        assert_eq!(fmt_num(0.856), "0.86");
    }

    #[test]
    fn json_keeps_null_for_missing() {
        let mut j = Json::default();
        j.set("a", Some(1.23456)).set("b", None).set("c", Some(3.0));
        assert_eq!(j.render(), r#"{"a":1.235,"b":null,"c":3}"#);
    }
}
