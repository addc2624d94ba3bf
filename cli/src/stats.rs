//! `collections stats`: items by status, the commonest failure reasons,
//! the tokens each model used, and what they cost by the price table
//! (`prices.json`, or the file `COLLECTIONS_PRICES` names).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use domain::settings::Setting;
use domain::usage::Usage;
use serde::Deserialize;
use store::stats::{ModelUsage, Stats};

pub const PRICES: Setting = Setting::optional(
    "COLLECTIONS_PRICES",
    "`prices.json` (built in)",
    "`collections stats`: a price table of your own, in the shape of [prices.json](../prices.json)",
);

/// The price table shipped with the binary (see its `about`).
const DEFAULT_PRICES: &str = include_str!("../../prices.json");

/// US dollars per million tokens, by model.
#[derive(Debug, Clone, Deserialize)]
pub struct Prices {
    pub as_of: String,
    pub models: BTreeMap<String, Price>,
}

/// A model's prices: at list price, and through the batch API when it has one.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Price {
    #[serde(flatten)]
    pub list: Rates,
    /// The batch API's prices (Anthropic's and OpenAI's: half the list price).
    pub batch: Option<Rates>,
}

/// US dollars per million tokens of each kind.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Rates {
    pub input: f64,
    #[serde(default)]
    pub output: f64,
    /// Default: the input price.
    pub cache_read: Option<f64>,
    /// Default: the input price.
    pub cache_write: Option<f64>,
}

impl Rates {
    fn cost(&self, used: &Usage) -> f64 {
        let per_token = |price: f64, tokens: u64| price * tokens as f64 / 1_000_000.0;
        per_token(self.input, used.input)
            + per_token(self.output, used.output)
            + per_token(self.cache_read.unwrap_or(self.input), used.cache_read)
            + per_token(self.cache_write.unwrap_or(self.input), used.cache_write)
    }
}

impl Price {
    /// What `used` cost, through the batch API or not (a model with no
    /// batch price in the table is priced at its list price).
    fn cost(&self, used: &Usage, batch: bool) -> f64 {
        match (batch, &self.batch) {
            (true, Some(rates)) => rates.cost(used),
            _ => self.list.cost(used),
        }
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

/// `--since`: a date (midnight UTC) or an RFC 3339 time.
pub fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{text:?} is neither a date (2026-11-30) nor an RFC 3339 time"))
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

/// Whether a local provider made these rows: they cost nothing.
pub fn is_local(m: &ModelUsage) -> bool {
    match &m.provider {
        Some(provider) => provider == "local",
        None => embedding::local::is_local_model(&m.model),
    }
}

/// What the tokens of `stats` cost by `prices`.
pub fn cost(stats: &Stats, prices: &Prices) -> Cost {
    let mut total = 0.0;
    let mut unpriced = Vec::new();
    for m in stats.models.iter().filter(|m| !is_local(m) && m.used.total() > 0) {
        match prices.models.get(&m.model) {
            Some(price) => total += price.cost(&m.used, m.batch),
            None => unpriced.push(m.model.clone()),
        }
    }
    let per_1000_images = (stats.images > 0).then(|| total * 1000.0 / stats.images as f64);
    Cost { total, per_1000_images, unpriced }
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
    let b = stats.batches;
    if b.queued > 0 || b.open_batches > 0 {
        let _ = writeln!(
            out,
            "  provider batches: {} requests queued, {} submitted, {} batches not stored yet (`collections batches`)",
            b.queued, b.submitted, b.open_batches
        );
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
            m.stage,
            if m.batch { format!("{} (batch)", m.model) } else { m.model.clone() },
            m.rows,
            u.input,
            u.output,
            u.cache_read,
            u.cache_write
        );
        let cost = if is_local(m) {
            "  $0 (local: costs nothing)".to_owned()
        } else {
            match prices.models.get(&m.model) {
                Some(price) => format!("  ${:.4}", price.cost(u, m.batch)),
                None => "  no price in the table".to_owned(),
            }
        };
        out.push_str(&cost);
        if m.uncounted > 0 && !is_local(m) {
            let _ = write!(out, "  ({} rows without a count)", m.uncounted);
        }
        out.push('\n');
    }
    let cost = cost(stats, prices);
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
        assert!((haiku.cost(&used, false) - (1.00 + 5.00 + 0.10 + 1.25)).abs() < 1e-9);
        assert!((haiku.cost(&used, true) - (1.00 + 5.00 + 0.10 + 1.25) / 2.0).abs() < 1e-9, "half through batches");
        let voyage = prices.models["voyage-3.5"];
        let tokens = Usage { input: 2_000_000, ..Usage::default() };
        assert!((voyage.cost(&tokens, false) - 0.12).abs() < 1e-9);
        assert!((voyage.cost(&tokens, true) - 0.12).abs() < 1e-9, "no batch price: the list price");
    }

    #[test]
    fn since_takes_a_date_or_a_time() {
        assert_eq!(parse_since("2026-11-30").unwrap().to_rfc3339(), "2026-11-30T00:00:00+00:00");
        assert_eq!(parse_since("2026-11-30T12:00:00+01:00").unwrap().to_rfc3339(), "2026-11-30T11:00:00+00:00");
        assert!(parse_since("yesterday").is_err());
    }
}
