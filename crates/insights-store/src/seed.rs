//! Deterministic synthetic data: leads (most booked) with 3-30 message threads, bulk inserted
//! with `unnest` (one statement per chunk, all in one transaction).
//!
//! The same `seed` always yields the same names, bodies and timestamps (a local splitmix64, so
//! the output does not change with a `rand` upgrade); lead ids continue after the current
//! maximum, so seeding twice appends.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use sqlx::{Connection, PgPool};

use crate::defaults;
use crate::error::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedReport {
    pub leads: usize,
    pub booked: usize,
    pub messages: usize,
    /// Id range of the new leads (inclusive); `first_lead_id > last_lead_id` when none.
    pub first_lead_id: i64,
    pub last_lead_id: i64,
    pub elapsed: Duration,
}

/// splitmix64: tiny, fast, good enough for test data, and frozen.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Ada", "Ben", "Chloe", "Dmitri", "Elena", "Farah", "Gustavo", "Hana", "Ivan", "Julia", "Kofi",
    "Lena", "Mateo", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Sven", "Tara",
];
const LAST: &[&str] = &[
    "Andersen", "Baptiste", "Chen", "Dubois", "Eze", "Fischer", "Garcia", "Hoffmann", "Ito",
    "Jensen", "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Rossi", "Silva",
];
const PRODUCTS: &[&str] = &["Starter", "Team", "Business", "Enterprise"];
const INBOUND: &[&str] = &[
    "Hi, I'm interested in the {p} plan. Can you tell me more?",
    "What does the {p} plan cost for {n} seats?",
    "Honestly the price feels high compared to what we pay now.",
    "Does it integrate with our CRM? That's a must for us.",
    "I need to check with my manager before we commit.",
    "Can we move the call to next week? Something came up.",
    "The demo looked great, the team liked the reporting.",
    "We're worried about the migration effort and downtime.",
    "Is there a discount if we pay annually?",
    "Thanks, that answers my question.",
    "Could you send the security documentation?",
    "We are also talking to another vendor.",
];
const OUTBOUND: &[&str] = &[
    "Thanks for reaching out, {name}! Happy to help.",
    "The {p} plan starts at ${price} per seat per month.",
    "Yes, we integrate with the major CRMs out of the box.",
    "I've booked you in for a call, see the invite.",
    "Annual billing comes with two months free.",
    "Migration is handled by our team; typical downtime is zero.",
    "Here is the security whitepaper and our SOC 2 report.",
    "Just following up: did you get a chance to review the proposal?",
    "Happy to set up a trial for your team.",
];

/// Message bodies are this long at least, so prompts have some weight.
const BASE_TIME_SECS: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

struct LeadRows {
    id: Vec<i64>,
    name: Vec<String>,
    email: Vec<String>,
    booked_at: Vec<Option<DateTime<Utc>>>,
    last_message_at: Vec<Option<DateTime<Utc>>>,
}

struct MessageRows {
    lead_id: Vec<i64>,
    direction: Vec<&'static str>,
    body: Vec<String>,
    sent_at: Vec<DateTime<Utc>>,
}

fn ts(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

/// Generates the data for `leads` leads starting at `first_id`.
fn generate(leads: usize, seed: u64, first_id: i64) -> (LeadRows, MessageRows) {
    let mut rng = SplitMix64::new(seed);
    let mut l = LeadRows {
        id: Vec::with_capacity(leads),
        name: Vec::with_capacity(leads),
        email: Vec::with_capacity(leads),
        booked_at: Vec::with_capacity(leads),
        last_message_at: Vec::with_capacity(leads),
    };
    let mut m = MessageRows {
        lead_id: Vec::with_capacity(leads * 17),
        direction: Vec::with_capacity(leads * 17),
        body: Vec::with_capacity(leads * 17),
        sent_at: Vec::with_capacity(leads * 17),
    };
    for i in 0..leads {
        let id = first_id + i as i64;
        let first = rng.pick(FIRST);
        let last = rng.pick(LAST);
        let product = rng.pick(PRODUCTS);
        // Roughly 9 in 10 leads booked a call.
        let booked = rng.range(0, 9) != 0;
        let count = rng.range(3, 30) as usize;
        let mut t = BASE_TIME_SECS + rng.range(0, 60 * 86_400) as i64;
        let mut inbound = true;
        for k in 0..count {
            let template = if inbound {
                rng.pick(INBOUND)
            } else {
                rng.pick(OUTBOUND)
            };
            let body = template
                .replace("{p}", product)
                .replace("{n}", &rng.range(2, 200).to_string())
                .replace("{price}", &rng.range(9, 99).to_string())
                .replace("{name}", first);
            m.lead_id.push(id);
            m.direction
                .push(if inbound { "inbound" } else { "outbound" });
            m.body.push(body);
            m.sent_at.push(ts(t));
            if k + 1 < count {
                t += rng.range(60, 3 * 86_400) as i64;
                // Mostly alternating, sometimes two in a row from one side.
                if rng.range(0, 3) != 0 {
                    inbound = !inbound;
                }
            }
        }
        l.id.push(id);
        l.name.push(format!("{first} {last}"));
        l.email.push(format!(
            "{}.{}.{id}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        ));
        l.booked_at
            .push(booked.then(|| ts(BASE_TIME_SECS + rng.range(0, 90 * 86_400) as i64)));
        l.last_message_at.push(Some(ts(t)));
    }
    (l, m)
}

/// Inserts `leads` synthetic leads and their messages. Deterministic given `seed` (ids aside,
/// which continue after the current maximum).
pub async fn seed(pool: &PgPool, leads: usize, seed: u64) -> Result<SeedReport, StoreError> {
    let started = Instant::now();
    // Proportional bound: generous for a slow machine, still finite.
    let limit = Duration::from_secs(60) + Duration::from_millis(leads as u64);
    let report = tokio::time::timeout(limit, run(pool, leads, seed))
        .await
        .map_err(|_| StoreError::Timeout {
            op: "seed",
            after: limit,
        })??;
    Ok(SeedReport {
        elapsed: started.elapsed(),
        ..report
    })
}

async fn run(pool: &PgPool, leads: usize, seed: u64) -> Result<SeedReport, StoreError> {
    let op = "seed";
    let e = |e| StoreError::sqlx(op, e);
    let mut conn = pool.acquire().await.map_err(e)?;
    let mut tx = Connection::begin(&mut *conn).await.map_err(e)?;
    // Large seeds may outlast the pool's per-statement bound; seed() has its own.
    sqlx::raw_sql("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await
        .map_err(e)?;
    // Two concurrent seeds would pick the same ids.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SEED_LOCK_KEY)
        .persistent(false)
        .execute(&mut *tx)
        .await
        .map_err(e)?;
    let max: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM leads")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .map_err(e)?;
    let first_id = max.unwrap_or(0) + 1;
    let (l, m) = generate(leads, seed, first_id);
    let chunk = defaults::SEED_CHUNK_ROWS;
    for start in (0..leads).step_by(chunk) {
        let end = (start + chunk).min(leads);
        sqlx::query(
            "INSERT INTO leads (id, name, email, booked_at, last_message_at)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])",
        )
        .bind(&l.id[start..end])
        .bind(&l.name[start..end])
        .bind(&l.email[start..end])
        .bind(&l.booked_at[start..end])
        .bind(&l.last_message_at[start..end])
        .persistent(false)
        .execute(&mut *tx)
        .await
        .map_err(e)?;
    }
    let total = m.lead_id.len();
    for start in (0..total).step_by(chunk) {
        let end = (start + chunk).min(total);
        sqlx::query(
            "INSERT INTO messages (lead_id, direction, body, sent_at)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[])",
        )
        .bind(&m.lead_id[start..end])
        .bind(&m.direction[start..end])
        .bind(&m.body[start..end])
        .bind(&m.sent_at[start..end])
        .persistent(false)
        .execute(&mut *tx)
        .await
        .map_err(e)?;
    }
    tx.commit().await.map_err(e)?;
    // Fresh statistics so the candidate query is planned on the index right away.
    let _ = sqlx::raw_sql("ANALYZE leads, messages").execute(pool).await;
    Ok(SeedReport {
        leads,
        booked: l.booked_at.iter().filter(|b| b.is_some()).count(),
        messages: total,
        first_lead_id: first_id,
        last_lead_id: first_id + leads as i64 - 1,
        elapsed: Duration::ZERO,
    })
}

/// Advisory lock key of the seeder ("insseed1").
const SEED_LOCK_KEY: i64 = 0x696e_7373_6565_6431;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_in_range() {
        let (a, am) = generate(200, 42, 1);
        let (b, bm) = generate(200, 42, 1);
        assert_eq!(a.name, b.name);
        assert_eq!(am.body, bm.body);
        assert_eq!(am.sent_at, bm.sent_at);
        let (c, _) = generate(200, 43, 1);
        assert_ne!(a.name, c.name);
        let booked = a.booked_at.iter().filter(|x| x.is_some()).count();
        assert!((150..200).contains(&booked), "{booked}");
        for id in &a.id {
            let n = am.lead_id.iter().filter(|l| *l == id).count();
            assert!((3..=30).contains(&n), "{n}");
        }
        // Frozen: a change here changes every seeded database.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }
}
