//! The naive baseline of the pipeline: a worker that holds one pooled connection for the whole job:
//! acquire, load, call the LLM (connection still held), upsert, release. Same pool size, same
//! concurrency, same mock LLM, same upsert statement as ours; no queue (the leads are known).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use insights_core::profile::PromptInput;
use insights_core::{
    Conversation, Direction, LeadKey, LeadSnapshot, Message, PROMPT_VERSION, Settings,
};
use insights_llm::{LlmClient, LlmConfig};
use insights_store::DomainStatements;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Postgres};

use crate::measure::timed;

/// What the naive run measured.
#[derive(Debug, Clone, Copy)]
pub struct NaiveOutcome {
    pub leads: usize,
    pub leads_per_s: f64,
    /// Mean time one lead kept its connection (acquire wait excluded).
    pub mean_hold_ms: f64,
}

type LeadRow = (
    i64,
    String,
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);
type MessageRow = (i64, String, String, DateTime<Utc>);

/// Runs the naive worker over `lead_ids` at `concurrency` with a pool of `pool_max`.
pub async fn run(
    settings: &Settings,
    db_url: &str,
    lead_ids: Vec<i64>,
    concurrency: usize,
    pool_max: u32,
) -> anyhow::Result<NaiveOutcome> {
    if lead_ids.is_empty() {
        bail!("no leads for the naive baseline");
    }
    let pool = PgPoolOptions::new()
        .max_connections(pool_max)
        // Every job waits for a connection behind (concurrency / pool_max) LLM calls.
        .acquire_timeout(Duration::from_secs(3600))
        .connect(db_url)
        .await
        .context("naive pool")?;
    let base = settings
        .require_llm_base_url()
        .map_err(|e| anyhow!("{e}"))?;
    let llm = LlmClient::new(LlmConfig::from_settings(
        settings,
        base.as_str().trim_end_matches('/'),
    ))
    .map_err(|e| anyhow!("LLM client: {e}"))?;
    let max_messages = i64::from(settings.max_messages);
    let upsert: Arc<str> = DomainStatements::default().upsert;
    let hold_nanos = Arc::new(AtomicU64::new(0));

    let n = lead_ids.len();
    let t0 = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(lead_ids)
        .map(|id| {
            let (pool, llm, upsert, hold) = (
                pool.clone(),
                llm.clone(),
                upsert.clone(),
                hold_nanos.clone(),
            );
            async move {
                let mut conn = pool.acquire().await.context("acquire")?;
                let held = Instant::now();
                let r = one_lead(&mut conn, &llm, &upsert, id, max_messages).await;
                drop(conn);
                let nanos = u64::try_from(held.elapsed().as_nanos()).unwrap_or(u64::MAX);
                hold.fetch_add(nanos, Ordering::Relaxed);
                r
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = t0.elapsed();
    pool.close().await;
    if let Some(e) = results.into_iter().find_map(Result::err) {
        return Err(e.context("naive worker"));
    }
    Ok(NaiveOutcome {
        leads: n,
        leads_per_s: n as f64 / elapsed.as_secs_f64(),
        mean_hold_ms: hold_nanos.load(Ordering::Relaxed) as f64 / 1e6 / n as f64,
    })
}

async fn one_lead(
    conn: &mut PoolConnection<Postgres>,
    llm: &LlmClient,
    upsert: &str,
    id: i64,
    max_messages: i64,
) -> anyhow::Result<()> {
    let lead: LeadRow = timed(
        sqlx::query_as(
            "select id, name, email, booked_at, last_message_at from leads where id = $1",
        )
        .bind(id)
        .fetch_one(&mut **conn),
    )
    .await
    .context("load lead")?;
    let mut rows: Vec<MessageRow> = timed(
        sqlx::query_as(
            "select id, direction, body, sent_at from messages where lead_id = $1 \
             order by sent_at desc, id desc limit $2",
        )
        .bind(id)
        .bind(max_messages)
        .fetch_all(&mut **conn),
    )
    .await
    .context("load messages")?;
    let total: i64 = timed(
        sqlx::query_scalar("select count(*) from messages where lead_id = $1")
            .bind(id)
            .fetch_one(&mut **conn),
    )
    .await?;
    rows.reverse();
    let conv = Conversation {
        lead: LeadSnapshot {
            id: lead.0,
            name: lead.1,
            email: lead.2,
            booked_at: lead.3,
            last_message_at: lead.4,
        },
        messages: rows
            .into_iter()
            .map(|(id, dir, body, sent_at)| Message {
                id,
                direction: Direction::parse(&dir).unwrap_or(Direction::Inbound),
                body,
                sent_at,
            })
            .collect(),
        total_message_count: total,
    };
    // The defect under test: the connection is still checked out while the LLM thinks.
    let input = PromptInput::from_conversation(&conv).map_err(|e| anyhow!("prompt: {e}"))?;
    let insight = llm
        .generate_insight(&LeadKey::Int(id), &input)
        .await
        .map_err(|e| anyhow!("LLM: {e}"))?;
    let watermark = conv
        .source_last_message_at()
        .context("conversation without a timestamp")?;
    timed(
        sqlx::query(AssertSqlSafe(upsert.to_owned()))
            .bind(vec![id])
            .bind(vec![insight.document.clone()])
            .bind(vec![insight.model.clone()])
            .bind(vec![PROMPT_VERSION.to_owned()])
            .bind(vec![watermark])
            .bind(vec![total])
            .bind(vec![insight.prompt_tokens])
            .bind(vec![insight.completion_tokens])
            .bind(vec![insight.request_id.clone()])
            .fetch_all(&mut **conn),
    )
    .await
    .context("upsert")?;
    Ok(())
}
