//! `insights-bench pipeline` and `insights-bench connections`: the pipeline's benchmarks.

use std::time::Duration;

use anyhow::anyhow;
use clap::Args;

use crate::defaults::*;
use crate::naive;
use crate::pipeline::{self, PipelineEnv, PipelineOutcome, PipelineSpec};
use crate::report::{Json, Row, Target, table};

#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Seeded (and booked) leads.
    #[arg(long, default_value_t = PIPELINE_LEADS)]
    pub leads: usize,
    /// Worker concurrency (`INSIGHTS_CONCURRENCY`).
    #[arg(long, default_value_t = PIPELINE_CONCURRENCY)]
    pub concurrency: usize,
    /// Max connections of the worker's pool (`INSIGHTS_DB_POOL_MAX`; store and queue share it).
    #[arg(long, default_value_t = PIPELINE_POOL_MAX)]
    pub pool_max: u32,
}

#[derive(Debug, Clone, Args)]
pub struct ConnectionsArgs {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Seeded (and booked) leads for our worker.
    #[arg(long, default_value_t = CONNECTIONS_LEADS)]
    pub leads: usize,
    /// Worker concurrency (`INSIGHTS_CONCURRENCY`), also the naive worker's.
    #[arg(long, default_value_t = CONNECTIONS_CONCURRENCY)]
    pub concurrency: usize,
    /// Max connections per pool (`INSIGHTS_DB_POOL_MAX`), also the naive worker's pool.
    #[arg(long, default_value_t = CONNECTIONS_POOL_MAX)]
    pub pool_max: u32,
    /// Mock LLM latency per call, ms.
    #[arg(long, default_value_t = CONNECTIONS_LLM_LATENCY.as_millis() as u64)]
    pub latency_ms: u64,
    /// Leads for the naive baseline (it does pool_max of them per latency).
    #[arg(long, default_value_t = NAIVE_LEADS)]
    pub naive_leads: usize,
    /// Skip the naive baseline.
    #[arg(long)]
    pub skip_naive: bool,
}

fn say(json: bool, msg: &str) {
    if !json {
        eprintln!("... {msg}");
    }
}

fn flat<T>(r: anyhow::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{e:#}"))
}

fn stages(o: &PipelineOutcome) -> String {
    let m = &o.summary.metrics;
    format!(
        "{:.1} / {:.1} / {:.1}",
        m.mean_load_ms, m.mean_llm_ms, m.mean_write_ms
    )
}

/// `pipeline`: 20,000 leads, mock at 0 ms, leads/s end to end.
pub async fn run_pipeline(a: PipelineArgs) -> anyhow::Result<bool> {
    let spec = PipelineSpec {
        leads: a.leads,
        llm_latency: Duration::ZERO,
        concurrency: a.concurrency,
        pool_max: a.pool_max,
    };
    say(a.json, &format!("setting up: {} leads", spec.leads));
    let outcome = async {
        let env = PipelineEnv::create("pipeline", &spec).await?;
        env.seed(spec.leads).await?;
        say(a.json, "running producer + worker");
        let out = pipeline::run(&env, &spec).await;
        let _ = env.mock.shutdown().await;
        out
    }
    .await;
    let outcome = flat(outcome);
    let ok = outcome.is_ok();
    if a.json {
        let o = outcome.as_ref().ok();
        let mut j = Json::default();
        j.set("pipeline_leads_per_s", o.map(|o| o.end_to_end_leads_per_s))
            .set("worker_leads_per_s", o.map(|o| o.worker_leads_per_s))
            .set("peak_backends", o.map(|o| o.peak_backends as f64))
            .set("mean_hold_ms", o.map(|o| o.mean_hold_ms))
            .set("peak_rss_mb", o.and_then(|o| o.peak_rss_mb))
            .set("leads", o.map(|o| o.leads as f64))
            .set("llm_calls", o.map(|o| o.llm_calls as f64))
            .set("mean_load_ms", o.map(|o| o.summary.metrics.mean_load_ms))
            .set("mean_llm_ms", o.map(|o| o.summary.metrics.mean_llm_ms))
            .set("mean_write_ms", o.map(|o| o.summary.metrics.mean_write_ms))
            .set("concurrency", Some(spec.concurrency as f64))
            .set("pool_max", Some(f64::from(spec.pool_max)));
        if let Err(e) = &outcome {
            j.set_value("error", serde_json::json!(e));
        }
        println!("{}", j.render());
    } else {
        let o = || outcome.as_ref().map_err(Clone::clone);
        let rows = vec![
            Row::new(
                "pipeline, leads/s end to end",
                o().map(|o| o.end_to_end_leads_per_s),
            )
            .target(Target::AtLeast(TARGET_PIPELINE_LEADS_PER_S)),
            Row::new(
                "  worker only (first job start to last completion)",
                o().map(|o| o.worker_leads_per_s),
            ),
            Row::new("  peak backends", o().map(|o| o.peak_backends as f64)),
            Row::new(
                "  mean connection hold per lead, ms",
                o().map(|o| o.mean_hold_ms),
            ),
            Row::new(
                "  peak RSS of the bench process during the run, MB",
                o().and_then(|o| o.peak_rss_mb.ok_or_else(|| "n/a".to_owned())),
            ),
            Row::new("  LLM calls", o().map(|o| o.llm_calls as f64)),
            Row::text(
                "  mean stage times load / LLM / write, ms (diagnostic)",
                o().map(stages).unwrap_or_else(|_| "n/a".to_owned()),
            ),
        ];
        let notes = vec![
            format!(
                "{} seeded leads, all booked; mock LLM in process at 0 ms; worker concurrency {}, one pool of at most {} shared by store and queue (as `insights work` builds it when the queue lives in the app database)",
                spec.leads, spec.concurrency, spec.pool_max
            ),
            "end to end = from the producer's start to the last insight durable; worker = queue timestamps (first attempted_at to last finalized_at)".to_owned(),
        ];
        print!("{}", table("insights-bench pipeline", &rows, &notes));
    }
    Ok(ok)
}

/// `connections`: mock at 1 s, concurrency 256, pool max 4; ours and the naive baseline.
pub async fn run_connections(a: ConnectionsArgs) -> anyhow::Result<bool> {
    let spec = PipelineSpec {
        leads: a.leads,
        llm_latency: Duration::from_millis(a.latency_ms),
        concurrency: a.concurrency,
        pool_max: a.pool_max,
    };
    let ideal = spec.concurrency as f64 / spec.llm_latency.as_secs_f64().max(1e-9);
    let env = PipelineEnv::create("connections", &spec).await?;
    say(a.json, &format!("ours: {} leads", spec.leads));
    let ours = flat(
        async {
            env.seed(spec.leads).await?;
            pipeline::run(&env, &spec).await
        }
        .await,
    );
    let mut naive = Err("skipped".to_owned());
    if !a.skip_naive {
        say(a.json, &format!("naive baseline: {} leads", a.naive_leads));
        naive = flat(
            async {
                env.seed(a.naive_leads).await?;
                let (pool, _) = pipeline::app_pool(&env.settings).await?;
                let store = insights_store::Store::new(pool.clone(), Default::default());
                let ids = store
                    .candidate_keys(None, i64::try_from(a.naive_leads).unwrap_or(i64::MAX))
                    .await
                    .map_err(|e| anyhow!("candidates: {e}"))?
                    .into_iter()
                    .filter_map(|k| match k {
                        insights_core::LeadKey::Int(id) => Some(id),
                        insights_core::LeadKey::Text(_) => None,
                    })
                    .collect();
                pool.close().await;
                naive::run(
                    &env.settings,
                    &env.db.url,
                    ids,
                    spec.concurrency,
                    spec.pool_max,
                )
                .await
            }
            .await,
        );
    }
    let PipelineEnv { db, mock, .. } = env;
    let _ = mock.shutdown().await;
    drop(db);

    let ok = ours.is_ok() && (naive.is_ok() || a.skip_naive);
    let o = ours.as_ref().ok();
    let n = naive.as_ref().ok();
    if a.json {
        let mut j = Json::default();
        j.set("leads_per_s", o.map(|o| o.worker_leads_per_s))
            .set("ideal_leads_per_s", Some(ideal))
            .set("peak_backends", o.map(|o| o.peak_backends as f64))
            .set("mean_hold_ms", o.map(|o| o.mean_hold_ms))
            .set("naive_leads_per_s", n.map(|n| n.leads_per_s))
            .set("peak_rss_mb", o.and_then(|o| o.peak_rss_mb))
            // extras
            .set(
                "end_to_end_leads_per_s",
                o.map(|o| o.end_to_end_leads_per_s),
            )
            .set("naive_mean_hold_ms", n.map(|n| n.mean_hold_ms))
            .set(
                "ratio_vs_naive",
                o.zip(n).map(|(o, n)| o.worker_leads_per_s / n.leads_per_s),
            )
            .set("leads", o.map(|o| o.leads as f64))
            .set("naive_leads", n.map(|n| n.leads as f64))
            .set("llm_calls", o.map(|o| o.llm_calls as f64))
            .set("mean_load_ms", o.map(|o| o.summary.metrics.mean_load_ms))
            .set("mean_llm_ms", o.map(|o| o.summary.metrics.mean_llm_ms))
            .set("mean_write_ms", o.map(|o| o.summary.metrics.mean_write_ms));
        let errors: Vec<String> = [
            ("ours", ours.as_ref().err()),
            ("naive", naive.as_ref().err()),
        ]
        .into_iter()
        .filter_map(|(k, e)| e.filter(|e| *e != "skipped").map(|e| format!("{k}: {e}")))
        .collect();
        j.set_value("errors", serde_json::json!(errors));
        println!("{}", j.render());
    } else {
        let ours_rate = ours
            .as_ref()
            .map(|o| o.worker_leads_per_s)
            .map_err(Clone::clone);
        let rows = vec![
            Row::new(format!("leads/s (ideal {ideal:.0})"), ours_rate.clone())
                .baseline("naive", n.map(|n| n.leads_per_s))
                .target(Target::AtLeast(
                    TARGET_CONNECTIONS_MIN_LEADS_PER_S
                        .min(ideal * TARGET_CONNECTIONS_FRACTION_OF_IDEAL),
                )),
            Row::new(
                "  end to end (producer start to last insight)",
                ours.as_ref()
                    .map(|o| o.end_to_end_leads_per_s)
                    .map_err(Clone::clone),
            ),
            Row::new(
                "peak backends",
                ours.as_ref()
                    .map(|o| o.peak_backends as f64)
                    .map_err(Clone::clone),
            )
            .target(Target::AtMost(TARGET_CONNECTIONS_MAX_BACKENDS as f64)),
            Row::new(
                "mean connection hold per lead, ms",
                ours.as_ref().map(|o| o.mean_hold_ms).map_err(Clone::clone),
            )
            .baseline("naive", n.map(|n| n.mean_hold_ms)),
            Row::text(
                "  mean stage times load / LLM / write, ms (diagnostic)",
                ours.as_ref()
                    .map(stages)
                    .unwrap_or_else(|_| "n/a".to_owned()),
            ),
            Row::new(
                "worker peak RSS, MB",
                ours.as_ref()
                    .map_err(Clone::clone)
                    .and_then(|o| o.peak_rss_mb.ok_or_else(|| "n/a".to_owned())),
            )
            .target(Target::AtMost(TARGET_PEAK_RSS_MB)),
        ];
        let notes = vec![
            format!(
                "{} leads, mock LLM latency {} ms, concurrency {}, one pool of at most {} shared by store and queue (as `insights work` builds it when the queue lives in the app database); naive: {} leads, one pool of {}, connection held through the LLM call",
                spec.leads, a.latency_ms, spec.concurrency, spec.pool_max, a.naive_leads, spec.pool_max
            ),
            "leads/s = queue timestamps (first job start to last completion); backends = client backends of the bench database, sampled every 20 ms".to_owned(),
            "RSS: VmHWM of the bench process (worker in process, plus the in-process mock LLM and the bench's samplers), reset via /proc/self/clear_refs just before the worker started: an upper bound for the worker".to_owned(),
        ];
        print!("{}", table("insights-bench connections", &rows, &notes));
    }
    Ok(ok)
}
