//! `insights-bench queue`: the queue's benchmark, ours side by side with apalis-postgres 1.0.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::apalis_baseline;
use crate::defaults::*;
use crate::ours_queue;
use crate::report::{Json, Row, Target, table};
use crate::scenario::{DrainOutcome, DrainSpec};

#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Jobs in the no-op drain (each queue, each setting).
    #[arg(long, default_value_t = NOOP_JOBS)]
    pub noop_jobs: usize,
    /// Jobs in the bulk enqueue.
    #[arg(long, default_value_t = ENQUEUE_JOBS)]
    pub enqueue_jobs: usize,
    /// Jobs in the 200 ms handler drain.
    #[arg(long, default_value_t = SLOW_JOBS)]
    pub slow_jobs: usize,
    /// Jobs in the decay drain.
    #[arg(long, default_value_t = DECAY_JOBS)]
    pub decay_jobs: usize,
    /// Shrink every size tenfold, for a quick look (figures then are not the issue's).
    #[arg(long)]
    pub quick: bool,
    /// Skip the apalis-postgres runs (ours only).
    #[arg(long)]
    pub skip_apalis: bool,
    /// Run only these scenarios (comma separated); the others are reported as skipped.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<Scenario>,
}

/// The scenarios of the queue bench, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Noop,
    Enqueue,
    Slow,
    Decay,
}

impl QueueArgs {
    fn runs(&self, scenario: Scenario) -> bool {
        self.only.is_empty() || self.only.contains(&scenario)
    }

    fn sized(&self) -> Self {
        let mut a = self.clone();
        if a.quick {
            a.noop_jobs /= 10;
            a.enqueue_jobs /= 10;
            a.slow_jobs /= 10;
            a.decay_jobs /= 10;
        }
        a
    }
}

fn say(json: bool, msg: &str) {
    // Progress goes to stderr so `--json` stdout stays one object.
    if !json {
        eprintln!("... {msg}");
    }
}

fn flat<T>(r: anyhow::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{e:#}"))
}

/// Runs every scenario; `Ok(false)` when any scenario failed to run (targets do not change it).
pub async fn run(args: QueueArgs) -> anyhow::Result<bool> {
    let a = args.sized();
    let noop = DrainSpec {
        jobs: a.noop_jobs,
        work: Duration::ZERO,
        concurrency: NOOP_CONCURRENCY,
    };
    let slow = DrainSpec {
        jobs: a.slow_jobs,
        work: SLOW_HANDLER,
        concurrency: SLOW_CONCURRENCY,
    };
    let decay = DrainSpec {
        jobs: a.decay_jobs,
        work: Duration::ZERO,
        concurrency: NOOP_CONCURRENCY,
    };

    let skipped = || Err::<DrainOutcome, String>("skipped".to_owned());
    let mut ours_noop = skipped();
    if a.runs(Scenario::Noop) {
        say(a.json, &format!("ours: no-op drain of {} jobs", noop.jobs));
        ours_noop = flat(ours_queue::drain("q_noop", noop).await);
    }
    let (mut apalis_default, mut apalis_100) = (skipped(), skipped());
    if !a.skip_apalis && a.runs(Scenario::Noop) {
        say(
            a.json,
            &format!("apalis-postgres batch {APALIS_DEFAULT_BATCH}: no-op drain"),
        );
        apalis_default = flat(apalis_baseline::drain("a_noop10", noop, APALIS_DEFAULT_BATCH).await);
        say(
            a.json,
            &format!("apalis-postgres batch {APALIS_LARGE_BATCH}: no-op drain"),
        );
        apalis_100 = flat(apalis_baseline::drain("a_noop100", noop, APALIS_LARGE_BATCH).await);
    }
    let mut ours_enqueue = Err("skipped".to_owned());
    let mut apalis_enqueue = Err("skipped".to_owned());
    if a.runs(Scenario::Enqueue) {
        say(
            a.json,
            &format!("ours: bulk enqueue of {} jobs", a.enqueue_jobs),
        );
        ours_enqueue = flat(ours_queue::enqueue(a.enqueue_jobs).await);
        if !a.skip_apalis {
            say(a.json, "apalis-postgres: bulk enqueue");
            apalis_enqueue = flat(apalis_baseline::enqueue(a.enqueue_jobs).await);
        }
    }
    let mut ours_slow = skipped();
    if a.runs(Scenario::Slow) {
        say(
            a.json,
            &format!("ours: 200 ms handler, concurrency 50, {} jobs", slow.jobs),
        );
        ours_slow = flat(ours_queue::drain("q_slow", slow).await);
    }
    let mut ours_decay = skipped();
    if a.runs(Scenario::Decay) {
        say(a.json, &format!("ours: decay drain of {} jobs", decay.jobs));
        ours_decay = flat(ours_queue::drain("q_decay", decay).await);
    }

    let best_apalis = [&apalis_default, &apalis_100]
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|o| o.jobs_per_s))
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let ok_rate = |r: &Result<DrainOutcome, String>| r.as_ref().map(|o| o.jobs_per_s).ok();
    let ideal_slow = SLOW_CONCURRENCY as f64 / SLOW_HANDLER.as_secs_f64();
    let decay_ratio = ours_decay.clone().and_then(|o| {
        o.decay_ratio
            .ok_or_else(|| "too few jobs for a ratio".to_owned())
    });

    let ran_or_skipped = |r: Result<(), &String>| r.is_ok() || r.is_err_and(|e| e == "skipped");
    let all_ran = [
        &ours_noop,
        &ours_slow,
        &ours_decay,
        &apalis_default,
        &apalis_100,
    ]
    .iter()
    .all(|r| ran_or_skipped(r.as_ref().map(|_| ())))
        && ran_or_skipped(ours_enqueue.as_ref().map(|_| ()))
        && ran_or_skipped(apalis_enqueue.as_ref().map(|_| ()));

    if a.json {
        let mut j = Json::default();
        j.set("noop_jobs_per_s", ok_rate(&ours_noop))
            .set("apalis_default_noop_jobs_per_s", ok_rate(&apalis_default))
            .set("apalis_batch100_noop_jobs_per_s", ok_rate(&apalis_100))
            .set("enqueue_jobs_per_s", ours_enqueue.clone().ok())
            .set("slow_jobs_per_s", ok_rate(&ours_slow))
            .set(
                "slow_peak_backends",
                ours_slow.as_ref().ok().map(|o| o.peak_backends as f64),
            )
            .set("decay_ratio", decay_ratio.clone().ok())
            // extras
            .set("apalis_enqueue_jobs_per_s", apalis_enqueue.clone().ok())
            .set(
                "slow_peak_backends_at_ms",
                ours_slow
                    .as_ref()
                    .ok()
                    .map(|o| o.peak_backends_at_ms as f64),
            )
            .set(
                "noop_peak_backends",
                ours_noop.as_ref().ok().map(|o| o.peak_backends as f64),
            )
            .set("decay_jobs_per_s", ok_rate(&ours_decay))
            .set(
                "noop_transactions_per_job",
                ours_noop.as_ref().ok().and_then(|o| o.transactions_per_job),
            )
            .set(
                "apalis_default_noop_transactions_per_job",
                apalis_default
                    .as_ref()
                    .ok()
                    .and_then(|o| o.transactions_per_job),
            )
            .set(
                "apalis_batch100_noop_transactions_per_job",
                apalis_100
                    .as_ref()
                    .ok()
                    .and_then(|o| o.transactions_per_job),
            )
            .set(
                "slow_transactions_per_job",
                ours_slow.as_ref().ok().and_then(|o| o.transactions_per_job),
            )
            .set("slow_ideal_jobs_per_s", Some(ideal_slow))
            .set(
                "slow_handler_mean_ms",
                ours_slow
                    .as_ref()
                    .ok()
                    .and_then(|o| o.timing.handler_mean_ms),
            )
            .set(
                "slow_idle_per_job_ms",
                ours_slow
                    .as_ref()
                    .ok()
                    .and_then(|o| o.timing.idle_per_job_ms),
            )
            .set(
                "slow_tail_ms",
                ours_slow.as_ref().ok().and_then(|o| o.timing.tail_ms),
            )
            .set("noop_jobs", Some(noop.jobs as f64))
            .set("enqueue_jobs", Some(a.enqueue_jobs as f64))
            .set("slow_jobs", Some(slow.jobs as f64))
            .set("decay_jobs", Some(decay.jobs as f64));
        let errors: Vec<String> = [
            ("noop", ours_noop.as_ref().err()),
            ("apalis_default_noop", apalis_default.as_ref().err()),
            ("apalis_batch100_noop", apalis_100.as_ref().err()),
            ("enqueue", ours_enqueue.as_ref().err()),
            ("apalis_enqueue", apalis_enqueue.as_ref().err()),
            ("slow", ours_slow.as_ref().err()),
            ("decay", decay_ratio.as_ref().err()),
        ]
        .into_iter()
        .filter_map(|(k, e)| e.filter(|e| *e != "skipped").map(|e| format!("{k}: {e}")))
        .collect();
        j.set_value("errors", serde_json::json!(errors));
        println!("{}", j.render());
    } else {
        let rows = vec![
            Row::new(
                "no-op drain, jobs/s (vs apalis batch 10)",
                ours_noop.clone().map(|o| o.jobs_per_s),
            )
            .baseline("apalis b10", ok_rate(&apalis_default))
            .target(Target::AtLeast(TARGET_NOOP_JOBS_PER_S)),
            Row::new(
                "no-op drain, jobs/s (vs apalis batch 100)",
                ours_noop.clone().map(|o| o.jobs_per_s),
            )
            .baseline("apalis b100", ok_rate(&apalis_100)),
            Row::new(
                "no-op drain vs better apalis",
                ours_noop.clone().map(|o| o.jobs_per_s),
            )
            .baseline("best apalis", best_apalis)
            .target(Target::TimesBaseline(TARGET_NOOP_VS_APALIS)),
            Row::new(
                "no-op drain, peak backends",
                ours_noop.clone().map(|o| o.peak_backends as f64),
            )
            .baseline(
                "apalis b100",
                apalis_100.as_ref().ok().map(|o| o.peak_backends as f64),
            ),
            Row::new(
                "no-op drain, transactions per job (diagnostic)",
                ours_noop
                    .clone()
                    .and_then(|o| o.transactions_per_job.ok_or_else(|| "n/a".to_owned())),
            )
            .baseline(
                "apalis b100",
                apalis_100
                    .as_ref()
                    .ok()
                    .and_then(|o| o.transactions_per_job),
            ),
            Row::new("bulk enqueue, jobs/s", ours_enqueue.clone())
                .baseline("apalis", apalis_enqueue.clone().ok())
                .target(Target::AtLeast(TARGET_ENQUEUE_JOBS_PER_S)),
            Row::new(
                "200 ms handler, jobs/s (ideal 250)",
                ours_slow.clone().map(|o| o.jobs_per_s),
            )
            .target(Target::AtLeast(TARGET_SLOW_JOBS_PER_S)),
            Row::new(
                "200 ms handler, peak backends",
                ours_slow.clone().map(|o| o.peak_backends as f64),
            )
            .target(Target::AtMost(TARGET_SLOW_MAX_BACKENDS as f64)),
            Row::text(
                "  peak first seen (diagnostic)",
                ours_slow
                    .as_ref()
                    .map(|o| format!("{} ms after the worker started", o.peak_backends_at_ms))
                    .unwrap_or_else(|_| "n/a".to_owned()),
            ),
            Row::text(
                "  handler / idle per job / tail, ms (diagnostic)",
                ours_slow
                    .as_ref()
                    .map(|o| {
                        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
                        format!(
                            "{} / {} / {}",
                            f(o.timing.handler_mean_ms),
                            f(o.timing.idle_per_job_ms),
                            f(o.timing.tail_ms)
                        )
                    })
                    .unwrap_or_else(|_| "n/a".to_owned()),
            ),
            Row::new("decay (last 10% / first 10%)", decay_ratio)
                .target(Target::AtLeast(TARGET_DECAY_RATIO)),
        ];
        let notes = vec![
            format!(
                "sizes: no-op {} jobs at concurrency {NOOP_CONCURRENCY}; enqueue {}; 200 ms handler {} jobs at concurrency {SLOW_CONCURRENCY}; decay {} jobs",
                noop.jobs, a.enqueue_jobs, slow.jobs, decay.jobs
            ),
            format!(
                "apalis-postgres 1.0: poll interval {APALIS_POLL_INTERVAL:?}; same pool (max {QUEUE_POOL_MAX}, built as `insights work` builds its pool), same WorkerBuilder, handler and clock as ours"
            ),
            "the 200 ms handler sleeps on a blocking-pool thread (a Tokio sleep lasts 201.2 ms on average); idle per job = slot time not spent in a handler, per job".to_owned(),
            "jobs/s is clocked from the first handler start to the moment the database shows every job done; backends = client backends of the bench database, sampled every 20 ms".to_owned(),
        ];
        print!("{}", table("insights-bench queue", &rows, &notes));
    }
    Ok(all_ran)
}
