//! Loads the same 1024-dimensional vectors into `embeddings` with psql's
//! binary COPY and with the project's batch path (binary COPY in batches,
//! one transaction each, as the embedder writes), with and without the HNSW
//! index, and with the index deferred (load, then build it). Prints rows/s
//! and the ratios. Run by `scripts/compare-insert.sh`.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::PgPool;
use store::embeddings::{NewEmbedding, copy_body, copy_rows};
use test_support::bench::{embeddings, fresh_database, seed_analyses};

const DATABASE: &str = "collections_compare_insert";
const COLUMNS: &str =
    "id, item_id, analysis_id, user_id, vector, embedding_model, embedding_dimensions, embedding_source, tokens";

struct Args {
    rows: usize,
    indexed_rows: usize,
    batch: usize,
    rounds: usize,
    psql: String,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args { rows: 20_000, indexed_rows: 5_000, batch: 1_000, rounds: 3, psql: "psql".into() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rows" => args.rows = value.parse()?,
            "--indexed-rows" => args.indexed_rows = value.parse()?,
            "--batch" => args.batch = value.parse()?,
            "--rounds" => args.rounds = value.parse()?,
            "--psql" => args.psql = value,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

/// `DATABASE_URL` with its database name replaced.
fn url_for(database: &str) -> anyhow::Result<String> {
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL is not set")?;
    let authority = url.find("://").context("DATABASE_URL is not a URL")? + 3;
    let path = url[authority..].find('/').map(|i| authority + i);
    let query = url.find('?');
    Ok(match (path, query) {
        (Some(p), Some(q)) => format!("{}/{database}{}", &url[..p], &url[q..]),
        (Some(p), None) => format!("{}/{database}", &url[..p]),
        (None, Some(q)) => format!("{}/{database}{}", &url[..q], &url[q..]),
        (None, None) => format!("{url}/{database}"),
    })
}

async fn empty(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("TRUNCATE embeddings").execute(pool).await?;
    sqlx::query("CHECKPOINT").execute(pool).await?;
    Ok(())
}

fn psql_copy(args: &Args, file: &std::path::Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let status = Command::new(&args.psql)
        .arg(url_for(DATABASE)?)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("\\copy embeddings ({COLUMNS}) FROM '{}' WITH (FORMAT binary)", file.display()))
        .status()
        .with_context(|| format!("running {}", args.psql))?;
    if !status.success() {
        bail!("psql's COPY failed");
    }
    Ok(start.elapsed())
}

async fn ours(pool: &PgPool, rows: &[NewEmbedding], batch: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for chunk in rows.chunks(batch) {
        let mut tx = pool.begin().await?;
        copy_rows(&mut tx, chunk).await?;
        tx.commit().await?;
    }
    Ok(start.elapsed())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn rate(rows: usize, time: Duration) -> f64 {
    rows as f64 / time.as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let pool = fresh_database(DATABASE).await?.context("DATABASE_URL is not set")?;
    let rows = embeddings(&seed_analyses(&pool, args.rows.max(args.indexed_rows)).await?);
    let dir = tempfile_dir()?;

    println!("| load | rows | psql binary COPY (rows/s) | collections batch path (rows/s) | ratio |");
    println!("|---|---|---|---|---|");
    let mut indexed_ours = Duration::ZERO;
    for indexed in [false, true] {
        let n = if indexed { args.indexed_rows } else { args.rows };
        let rows = &rows[..n];
        let file = dir.join(format!("embeddings-{n}.copy"));
        std::fs::write(&file, copy_body(rows))?;
        if indexed {
            store::models::build_indexes(&pool, 512).await?;
        } else {
            store::models::drop_indexes(&pool).await?;
        }
        let rounds = if indexed { 1 } else { args.rounds };
        let (mut theirs, mut mine) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            empty(&pool).await?;
            theirs.push(psql_copy(&args, &file)?);
            empty(&pool).await?;
            mine.push(ours(&pool, rows, args.batch).await?);
        }
        let (theirs, mine) = (median(theirs), median(mine));
        if indexed {
            indexed_ours = mine;
        }
        println!(
            "| {} | {n} | {:.0} | {:.0} | {:.2} |",
            if indexed { "with the HNSW index" } else { "without an index" },
            rate(n, theirs),
            rate(n, mine),
            theirs.as_secs_f64() / mine.as_secs_f64()
        );
    }

    // The bulk-backfill mode: load without the index, then build it once.
    let n = args.indexed_rows;
    store::models::drop_indexes(&pool).await?;
    empty(&pool).await?;
    let load = ours(&pool, &rows[..n], args.batch).await?;
    let start = Instant::now();
    store::models::build_indexes(&pool, 512).await?;
    let build = start.elapsed();
    println!();
    println!(
        "deferred index, {n} rows: load {:.1} s + build {:.1} s = {:.1} s, against {:.1} s loading with the index: {:.1}x faster",
        load.as_secs_f64(),
        build.as_secs_f64(),
        (load + build).as_secs_f64(),
        indexed_ours.as_secs_f64(),
        indexed_ours.as_secs_f64() / (load + build).as_secs_f64()
    );
    println!(
        "(batches of {} rows, one transaction each; median of {} rounds without the index)",
        args.batch, args.rounds
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("collections-compare-insert-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // psql reads the file as the client; the server never needs to.
    Ok(dir)
}
