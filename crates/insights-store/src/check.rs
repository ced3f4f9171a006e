//! Read-only introspection of the app database, for `insights check`: prepare a statement to
//! read its parameter and result types, plan one with EXPLAIN, read one key from a table.
//!
//! Everything runs on one connection inside one `READ ONLY` transaction under a
//! `statement_timeout` and a short `lock_timeout` (preparing an INSERT takes the lock the
//! insert would, and a table locked by someone else must not stall a check), with a
//! client-side bound per call, and ends with ROLLBACK, so nothing in the database changes. Each step runs inside a savepoint: a statement the server refuses
//! is reported ([`Refused`]) and the session goes on with the next step. Prepared statements
//! (sqlx's named one for a description, `PREPARE` for a plan) are closed before the step ends,
//! inside the transaction, so behind a transaction pooler none is left on a shared server
//! connection.
//!
//! It knows the statement contract's types only as the names a caller declares parameters
//! with; what a statement should take and return is the caller's business.

use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::{PgColumn, PgTypeInfo};
use sqlx::{
    AssertSqlSafe, Column, Connection, Either, Executor, PgConnection, PgPool, SqlSafeStr,
    Statement,
};

use insights_pg::classify;

use crate::defaults;
use crate::error::StoreError;
use crate::pool::{PoolSettings, PoolerMode, connect_one, connect_options, pool_options};

/// The server refused a step: its message (one line) and SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub message: String,
    pub sqlstate: Option<String>,
    /// The refusal says nothing about the statement: a lock or statement timeout, a
    /// serialization failure (`insights_pg::classify`). Trying later may succeed.
    pub transient: bool,
}

/// Parameter and result types of a prepared statement, as Postgres' `format_type` names them
/// (`bigint`, `timestamp with time zone[]`, `"MessageDirection"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// `$1` first.
    pub params: Vec<String>,
    pub columns: Vec<DescribedColumn>,
}

/// One result column of a prepared statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedColumn {
    pub name: String,
    pub type_name: String,
    /// The table column it is read from unchanged, when it is one.
    pub origin: Option<ColumnOrigin>,
}

/// A table column, as the server identifies it in a statement's result description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnOrigin {
    pub table_oid: u32,
    pub attnum: i16,
}

/// A value to execute a planned statement with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanArg {
    Null,
    Int(i64),
}

/// A statement's plan for given arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// EXPLAIN's text form.
    pub text: String,
    /// Tables read by a sequential scan, in plan order, each once.
    pub seq_scans: Vec<String>,
    /// The plan writes (INSERT, UPDATE, DELETE, MERGE anywhere in it).
    pub modifies: bool,
}

/// One connection in one READ ONLY transaction; [`Self::close`] rolls it back.
pub struct CheckSession {
    conn: PgConnection,
    timeout: Duration,
}

impl std::fmt::Debug for CheckSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckSession")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A pool of one connection for reading a sample through [`crate::Store`], as the worker
/// reads. On a direct connection every transaction is READ ONLY (the start-up option
/// `default_transaction_read_only`); a transaction pooler refuses start-up options, so there
/// the caller makes sure first that what it runs only reads ([`Plan::modifies`]).
pub fn read_only_pool(settings: &PoolSettings) -> Result<PgPool, StoreError> {
    let mut opts = connect_options(settings)?;
    if settings.mode() == PoolerMode::Direct {
        opts = opts.options([("default_transaction_read_only", "on")]);
    }
    let one = PoolSettings {
        max_connections: 1,
        ..settings.clone()
    };
    Ok(pool_options(&one).connect_lazy_with(opts))
}

/// The name of the prepared statement a plan uses; deallocated before the step ends.
const PLANNED: &str = "insights_check_plan";

impl CheckSession {
    /// Connects (errors as [`crate::connect`]'s: `cannot reach database at <URL> ...`)
    /// and opens the READ ONLY transaction with the settings' statement timeout.
    pub async fn open(settings: &PoolSettings) -> Result<Self, StoreError> {
        let opts = connect_options(settings)?;
        let conn = connect_one(settings, &opts).await?;
        let mut me = Self {
            conn,
            timeout: settings.statement_timeout,
        };
        let statement_ms = settings.statement_timeout.as_millis();
        let lock_ms = settings
            .statement_timeout
            .min(defaults::CHECK_LOCK_TIMEOUT)
            .as_millis();
        me.simple(
            "begin read only",
            &format!(
                "BEGIN READ ONLY; SET LOCAL statement_timeout = {statement_ms}; \
                 SET LOCAL lock_timeout = {lock_ms}"
            ),
        )
        .await?;
        Ok(me)
    }

    /// Ends the transaction (ROLLBACK) and closes the connection.
    pub async fn close(mut self) -> Result<(), StoreError> {
        self.simple("rollback", "ROLLBACK").await?;
        let _ = tokio::time::timeout(self.timeout, self.conn.close()).await;
        Ok(())
    }

    /// Prepares `sql` without executing it: the parameter types the server inferred and the
    /// result columns.
    pub async fn describe(&mut self, sql: &str) -> Result<Result<Described, Refused>, StoreError> {
        self.step("describe", async |conn: &mut PgConnection| {
            let statement = (&mut *conn)
                .prepare_with(AssertSqlSafe(sql.to_owned()).into_sql_str(), &[])
                .await?;
            // Close it now (sqlx caches it by name): nothing outlives this transaction.
            conn.clear_cached_statements().await?;
            let params: Vec<PgTypeInfo> = match statement.parameters() {
                Some(Either::Left(types)) => types.to_vec(),
                _ => Vec::new(),
            };
            let columns: Vec<PgColumn> = statement.columns().to_vec();
            let oids: Vec<i64> = params
                .iter()
                .chain(columns.iter().map(|c| c.type_info()))
                .map(|t| t.oid().map_or(0, |o| i64::from(o.0)))
                .collect();
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT coalesce(format_type(o::oid, NULL), 'unknown')
                   FROM unnest($1::bigint[]) WITH ORDINALITY AS t(o, n) ORDER BY n",
            )
            .bind(&oids)
            .persistent(false)
            .fetch_all(&mut *conn)
            .await?;
            let (param_names, column_names) = names.split_at(params.len().min(names.len()));
            Ok(Described {
                params: param_names.to_vec(),
                columns: columns
                    .iter()
                    .zip(column_names)
                    .map(|(c, type_name)| DescribedColumn {
                        name: c.name().to_owned(),
                        type_name: type_name.clone(),
                        origin: c.relation_id().zip(c.relation_attribute_no()).map(
                            |(table, attnum)| ColumnOrigin {
                                table_oid: table.0,
                                attnum,
                            },
                        ),
                    })
                    .collect(),
            })
        })
        .await
    }

    /// Plans `sql` with its parameters declared as `param_types` (SQL type names) and executed
    /// with `args`. With `without_seq_scans`, sequential scans are disabled for the plan: small
    /// tables make the planner prefer them even where an index serves, so a sequential scan
    /// left in such a plan means no index can.
    pub async fn plan(
        &mut self,
        sql: &str,
        param_types: &[String],
        args: &[PlanArg],
        without_seq_scans: bool,
    ) -> Result<Result<Plan, Refused>, StoreError> {
        let in_parens = |list: Vec<String>| match list.is_empty() {
            true => String::new(),
            false => format!("({})", list.join(", ")),
        };
        let prepare = format!(
            "PREPARE {PLANNED}{} AS {}",
            in_parens(param_types.to_vec()),
            sql.trim().trim_end_matches(';')
        );
        let execute = format!(
            "EXECUTE {PLANNED}{}",
            in_parens(
                args.iter()
                    .map(|a| match a {
                        PlanArg::Null => "NULL".to_owned(),
                        PlanArg::Int(i) => i.to_string(),
                    })
                    .collect()
            )
        );
        let seqscan = if without_seq_scans { "off" } else { "on" };
        let prepared = self
            .step("prepare", async |conn: &mut PgConnection| {
                sqlx::raw_sql(AssertSqlSafe(prepare.clone()))
                    .execute(&mut *conn)
                    .await
                    .map(|_| ())
            })
            .await?;
        if let Err(refused) = prepared {
            return Ok(Err(refused));
        }
        let planned = self
            .step("explain", async |conn: &mut PgConnection| {
                // Every plan sets it: it lasts until the transaction ends.
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "SET LOCAL enable_seqscan = {seqscan}"
                )))
                .execute(&mut *conn)
                .await?;
                let text: Vec<String> =
                    sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN (COSTS OFF) {execute}")))
                        .persistent(false)
                        .fetch_all(&mut *conn)
                        .await?;
                let json: serde_json::Value = sqlx::query_scalar(AssertSqlSafe(format!(
                    "EXPLAIN (COSTS OFF, FORMAT JSON) {execute}"
                )))
                .persistent(false)
                .fetch_one(&mut *conn)
                .await?;
                let mut plan = Plan {
                    text: text.join("\n"),
                    seq_scans: Vec::new(),
                    modifies: false,
                };
                if let Some(root) = json.get(0).and_then(|p| p.get("Plan")) {
                    walk(root, &mut plan);
                }
                Ok(plan)
            })
            .await?;
        self.simple("deallocate", &format!("DEALLOCATE {PLANNED}"))
            .await?;
        Ok(planned)
    }

    /// One value of the table column `origin`, as text: a key to try a statement with when it
    /// has nothing better. `None` when the table is empty.
    pub async fn any_value(
        &mut self,
        origin: ColumnOrigin,
    ) -> Result<Result<Option<String>, Refused>, StoreError> {
        self.step("any value", async |conn: &mut PgConnection| {
            // The server quotes the names.
            let select: Option<String> = sqlx::query_scalar(
                "SELECT format('SELECT %I::text FROM %s WHERE %I IS NOT NULL LIMIT 1',
                               a.attname, a.attrelid::regclass, a.attname)
                   FROM pg_attribute a
                  WHERE a.attrelid = $1::bigint::oid AND a.attnum = $2 AND NOT a.attisdropped",
            )
            .bind(i64::from(origin.table_oid))
            .bind(origin.attnum)
            .persistent(false)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(select) = select else {
                return Ok(None);
            };
            sqlx::query_scalar::<_, String>(AssertSqlSafe(select))
                .persistent(false)
                .fetch_optional(&mut *conn)
                .await
        })
        .await
    }

    /// Runs `work` inside a savepoint under the call timeout. An error the server sent about
    /// the statement rolls back to the savepoint and comes back as [`Refused`]; connection
    /// trouble and the client-side timeout end the session.
    async fn step<T>(
        &mut self,
        op: &'static str,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<Result<T, Refused>, StoreError> {
        self.simple(op, "SAVEPOINT insights_check").await?;
        let timeout = self.timeout;
        let outcome = tokio::time::timeout(timeout, work(&mut self.conn))
            .await
            .map_err(|_| StoreError::Timeout { op, after: timeout })?;
        match outcome {
            Ok(value) => {
                self.simple(op, "RELEASE SAVEPOINT insights_check").await?;
                Ok(Ok(value))
            }
            Err(error) => {
                let class = classify(&error);
                let db = match error.as_database_error() {
                    Some(db) if !class.is_connection() => db,
                    _ => return Err(StoreError::Sqlx { op, source: error }),
                };
                let refused = Refused {
                    message: one_line(db.message()),
                    sqlstate: db.code().map(|c| c.into_owned()),
                    transient: class.is_transient(),
                };
                self.simple(op, "ROLLBACK TO SAVEPOINT insights_check")
                    .await?;
                Ok(Err(refused))
            }
        }
    }

    /// Simple-protocol statements of literals, under the call timeout.
    async fn simple(&mut self, op: &'static str, sql: &str) -> Result<(), StoreError> {
        let after = self.timeout;
        tokio::time::timeout(
            after,
            sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(&mut self.conn),
        )
        .await
        .map_err(|_| StoreError::Timeout { op, after })?
        .map_err(|source| StoreError::Sqlx { op, source })?;
        Ok(())
    }
}

/// Collects sequential scans and writes from an EXPLAIN (FORMAT JSON) plan node and its
/// children (subplans and CTEs included).
fn walk(node: &serde_json::Value, plan: &mut Plan) {
    match node.get("Node Type").and_then(|t| t.as_str()) {
        Some("Seq Scan") => {
            if let Some(table) = node.get("Relation Name").and_then(|t| t.as_str())
                && !plan.seq_scans.iter().any(|t| t == table)
            {
                plan.seq_scans.push(table.to_owned());
            }
        }
        Some("ModifyTable") => plan.modifies = true,
        _ => {}
    }
    if let Some(children) = node.get("Plans").and_then(|p| p.as_array()) {
        for child in children {
            walk(child, plan);
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_plan_walk_finds_seq_scans_and_writes_at_any_depth() {
        let explain = json!([{"Plan": {
            "Node Type": "Limit",
            "Plans": [
                {"Node Type": "Nested Loop", "Plans": [
                    {"Node Type": "Seq Scan", "Relation Name": "Lead", "Alias": "l"},
                    {"Node Type": "Index Only Scan", "Relation Name": "LeadConversationInsight"}
                ]},
                {"Node Type": "Seq Scan", "Relation Name": "Lead", "Parent Relationship": "SubPlan"},
                {"Node Type": "ModifyTable", "Parent Relationship": "InitPlan", "Plans": [
                    {"Node Type": "Seq Scan", "Relation Name": "Message"}
                ]}
            ]
        }}]);
        let mut plan = Plan {
            text: String::new(),
            seq_scans: Vec::new(),
            modifies: false,
        };
        walk(&explain[0]["Plan"], &mut plan);
        assert_eq!(plan.seq_scans, ["Lead", "Message"]);
        assert!(plan.modifies);
    }
}
