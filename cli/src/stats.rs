//! `collections stats`: items by status, the commonest failure reasons,
//! the tokens each model used, and what they cost by the price table
//! (`prices.json`, or the file `COLLECTIONS_PRICES` names).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use shared::usage::Usage;
use sqlx::PgPool;

/// The price table shipped with the binary (see its `about`).
const DEFAULT_PRICES: &str = include_str!("../../../prices.json");

/// US dollars per million tokens, by model.
#[derive(Debug, Clone, Deserialize)]
pub struct Prices {
    pub as_of: String,
    pub models: BTreeMap<String, Price>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Price {
    pub input: f64,
    #[serde(default)]
    pub output: f64,
    /// Default: the input price.
    pub cache_read: Option<f64>,
    /// Default: the input price.
    pub cache_write: Option<f64>,
}

impl Price {
    fn cost(&self, used: &Usage) -> f64 {
        let per_token = |price: f64, tokens: u64| price * tokens as f64 / 1_000_000.0;
        per_token(self.input, used.input)
            + per_token(self.output, used.output)
            + per_token(self.cache_read.unwrap_or(self.input), used.cache_read)
            + per_token(self.cache_write.unwrap_or(self.input), used.cache_write)
    }
}

impl Prices {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(serde_json::from_str(text)?)
    }

    /// The table at `path`, or the shipped one.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                Self::parse(&text).with_context(|| format!("{} is not a price table", path.display()))
            }
            None => Ok(Self::parse(DEFAULT_PRICES).expect("the shipped price table parses")),
        }
    }
}

/// Which rows count: of one user, and created since a moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter<'a> {
    pub user: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
}

/// `--since`: a date (midnight UTC) or an RFC 3339 time.
pub fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{text:?} is neither a date (2026-11-30) nor an RFC 3339 time"))
}

/// The tokens one model used, over the rows of one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelUsage {
    /// `analysis` or `embedding`.
    pub stage: &'static str,
    pub model: String,
    /// A local provider: costs nothing.
    pub local: bool,
    pub rows: i64,
    /// Rows whose provider counted no tokens.
    pub uncounted: i64,
    pub used: Usage,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// (stage, status, items).
    pub statuses: Vec<(String, String, i64)>,
    /// (stage, reason, times), commonest first.
    pub failures: Vec<(String, String, i64)>,
    pub models: Vec<ModelUsage>,
    /// Items analysed, the denominator of the cost per 1000 images.
    pub images: i64,
}

/// What the tokens cost by a price table.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    /// US dollars, over the priced models.
    pub total: f64,
    pub per_1000_images: Option<f64>,
    /// Models with tokens and no price: left out of the total.
    pub unpriced: Vec<String>,
}

impl Stats {
    pub fn cost(&self, prices: &Prices) -> Cost {
        let mut total = 0.0;
        let mut unpriced = Vec::new();
        for m in self.models.iter().filter(|m| !m.local && m.used.total() > 0) {
            match prices.models.get(&m.model) {
                Some(price) => total += price.cost(&m.used),
                None => unpriced.push(m.model.clone()),
            }
        }
        let per_1000_images = (self.images > 0).then(|| total * 1000.0 / self.images as f64);
        Cost { total, per_1000_images, unpriced }
    }
}

/// The tokens of one provider and model's analyses, summed.
#[derive(sqlx::FromRow)]
struct AnalysisTokens {
    provider_used: String,
    model_used: String,
    rows: i64,
    uncounted: i64,
    input: i64,
    output: i64,
    cache_read: i64,
    cache_write: i64,
}

/// How many of the failure reasons are listed.
const TOP_FAILURES: i64 = 5;

pub async fn gather(pool: &PgPool, filter: Filter<'_>) -> anyhow::Result<Stats> {
    let statuses = sqlx::query_as(
        r#"
        SELECT s.stage, s.status, count(*)
        FROM items i,
             LATERAL (VALUES ('thumbnail', i.thumbnail_status), ('analysis', i.analysis_status),
                             ('embedding', i.embedding_status)) AS s(stage, status)
        WHERE ($1::text IS NULL OR i.user_id = $1) AND ($2::timestamptz IS NULL OR i.created_at >= $2)
        GROUP BY 1, 2
        ORDER BY array_position(ARRAY['thumbnail', 'analysis', 'embedding'], s.stage), 2
        "#,
    )
    .bind(filter.user)
    .bind(filter.since)
    .fetch_all(pool)
    .await
    .context("counting items by status")?;
    let failures = sqlx::query_as(
        r#"
        SELECT stage, reason, count(*) FROM (
            SELECT failed_stage AS stage, left(last_error, 160) AS reason FROM items
            WHERE failed_stage IS NOT NULL AND ($1::text IS NULL OR user_id = $1)
              AND ($2::timestamptz IS NULL OR updated_at >= $2)
            UNION ALL
            SELECT stage, left(reason, 160) FROM record_failures
            WHERE ($1::text IS NULL OR user_id = $1) AND ($2::timestamptz IS NULL OR updated_at >= $2)
        ) f
        GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT $3
        "#,
    )
    .bind(filter.user)
    .bind(filter.since)
    .bind(TOP_FAILURES)
    .fetch_all(pool)
    .await
    .context("listing failure reasons")?;
    let analyses: Vec<AnalysisTokens> = sqlx::query_as(
        r#"
        SELECT provider_used, model_used, count(*) AS rows,
               count(*) FILTER (WHERE input_tokens IS NULL) AS uncounted,
               coalesce(sum(input_tokens), 0)::bigint AS input,
               coalesce(sum(output_tokens), 0)::bigint AS output,
               coalesce(sum(cache_read_tokens), 0)::bigint AS cache_read,
               coalesce(sum(cache_write_tokens), 0)::bigint AS cache_write
        FROM analyses
        WHERE ($1::text IS NULL OR user_id = $1) AND ($2::timestamptz IS NULL OR created_at >= $2)
        GROUP BY 1, 2 ORDER BY 2
        "#,
    )
    .bind(filter.user)
    .bind(filter.since)
    .fetch_all(pool)
    .await
    .context("adding up analysis tokens")?;
    let embeddings: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        r#"
        SELECT embedding_model, count(*), count(*) FILTER (WHERE tokens IS NULL), coalesce(sum(tokens), 0)::bigint
        FROM embeddings
        WHERE ($1::text IS NULL OR user_id = $1) AND ($2::timestamptz IS NULL OR created_at >= $2)
        GROUP BY 1 ORDER BY 1
        "#,
    )
    .bind(filter.user)
    .bind(filter.since)
    .fetch_all(pool)
    .await
    .context("adding up embedding tokens")?;
    let images: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT item_id) FROM analyses
         WHERE ($1::text IS NULL OR user_id = $1) AND ($2::timestamptz IS NULL OR created_at >= $2)",
    )
    .bind(filter.user)
    .bind(filter.since)
    .fetch_one(pool)
    .await
    .context("counting analysed images")?;

    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut models: Vec<ModelUsage> = analyses
        .into_iter()
        .map(|a| ModelUsage {
            stage: "analysis",
            local: a.provider_used == "local",
            model: a.model_used,
            rows: a.rows,
            uncounted: a.uncounted,
            used: Usage {
                input: count(a.input),
                output: count(a.output),
                cache_read: count(a.cache_read),
                cache_write: count(a.cache_write),
            },
        })
        .collect();
    models.extend(embeddings.into_iter().map(|(model, rows, uncounted, tokens)| ModelUsage {
        stage: "embedding",
        local: model == shared::embedding::local::LOCAL_MODEL,
        model,
        rows,
        uncounted,
        used: Usage { input: count(tokens), ..Usage::default() },
    }));
    Ok(Stats { statuses, failures, models, images })
}

/// The report `collections stats` prints.
pub fn report(stats: &Stats, prices: &Prices) -> String {
    let mut out = String::new();
    let mut stages: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (stage, status, n) in &stats.statuses {
        stages.entry(stage.as_str()).or_default().push(format!("{status} {n}"));
    }
    out.push_str("items by status\n");
    if stages.is_empty() {
        out.push_str("  no items\n");
    }
    for stage in ["thumbnail", "analysis", "embedding"] {
        if let Some(counts) = stages.get(stage) {
            let _ = writeln!(out, "  {stage:<10} {}", counts.join(", "));
        }
    }
    out.push_str("commonest failures\n");
    if stats.failures.is_empty() {
        out.push_str("  none\n");
    }
    for (stage, reason, n) in &stats.failures {
        let _ = writeln!(out, "  {n:>6}  {stage:<10} {reason}");
    }
    let _ = writeln!(out, "tokens by model (prices of {})", prices.as_of);
    if stats.models.is_empty() {
        out.push_str("  none\n");
    }
    for m in &stats.models {
        let u = &m.used;
        let _ = write!(
            out,
            "  {:<10} {:<28} rows {:>7}  input {:>10}  output {:>9}  cache read {:>9}  cache write {:>9}",
            m.stage, m.model, m.rows, u.input, u.output, u.cache_read, u.cache_write
        );
        let cost = if m.local {
            "  $0 (local: costs nothing)".to_owned()
        } else {
            match prices.models.get(&m.model) {
                Some(price) => format!("  ${:.4}", price.cost(u)),
                None => "  no price in the table".to_owned(),
            }
        };
        out.push_str(&cost);
        if m.uncounted > 0 && !m.local {
            let _ = write!(out, "  ({} rows without a count)", m.uncounted);
        }
        out.push('\n');
    }
    let cost = stats.cost(prices);
    let _ = write!(out, "estimated cost ${:.4}", cost.total);
    match cost.per_1000_images {
        Some(per) => {
            let _ = write!(out, ", ${per:.4} per 1000 images ({} analysed)", stats.images);
        }
        None => out.push_str(", no image analysed"),
    }
    if !cost.unpriced.is_empty() {
        let _ = write!(out, "; without the unpriced {}", cost.unpriced.join(", "));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_parses_and_prices_each_kind_of_token() {
        let prices = Prices::load(None).unwrap();
        let haiku = prices.models["claude-haiku-4-5"];
        let used = Usage { input: 1_000_000, output: 1_000_000, cache_read: 1_000_000, cache_write: 1_000_000 };
        assert!((haiku.cost(&used) - (1.00 + 5.00 + 0.10 + 1.25)).abs() < 1e-9);
        let voyage = prices.models["voyage-3.5"];
        assert!((voyage.cost(&Usage { input: 2_000_000, ..Usage::default() }) - 0.12).abs() < 1e-9);
    }

    #[test]
    fn since_takes_a_date_or_a_time() {
        assert_eq!(parse_since("2026-11-30").unwrap().to_rfc3339(), "2026-11-30T00:00:00+00:00");
        assert_eq!(parse_since("2026-11-30T12:00:00+01:00").unwrap().to_rfc3339(), "2026-11-30T11:00:00+00:00");
        assert!(parse_since("yesterday").is_err());
    }
}
