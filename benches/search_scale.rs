//! Search at scale: `--vectors` vectors of 1024 dimensions over `--users`
//! users whose collection sizes follow a Zipf law (made once, kept in the
//! database collections_search_scale); queries drawn from each user's own
//! items with noise. Prints recall@10 against an exact scan, p50/p95 and
//! PostgreSQL's CPU time per search per user-size bucket, and the bytes each
//! stored vector takes with its index.
//!
//!   search-scale [--vectors 100000] [--users 1000] [--queries 30]

use anyhow::Context;
use test_support::scale::{measure, seed, zipf_sizes};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut vectors, mut users, mut queries) = (100_000, 1000, 30);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value: usize = args.next().with_context(|| format!("{flag} needs a value"))?.parse()?;
        match flag.as_str() {
            "--vectors" => vectors = value,
            "--users" => users = value,
            "--queries" => queries = value,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let pool = test_support::bench::database("collections_search_scale", 8).await?;
    let sizes = zipf_sizes(vectors, users);
    eprintln!("seeding {vectors} vectors over {users} users (largest {}, once)", sizes[0]);
    seed(&pool, &sizes).await?;
    // Warm: the partitions, their TOAST (the vectors), the model's graphs
    // and the full-text documents in shared buffers, as a database serving
    // searches all day has them.
    let index = store::models::EmbeddingModel::new(test_support::scale::MODEL, 1024).index_name();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_prewarm").execute(&pool).await?;
    let warmed: i64 = sqlx::query_scalar(
        "SELECT sum(pg_prewarm(r))::bigint FROM (
             SELECT inhrelid AS r FROM pg_inherits
             WHERE inhparent IN ('embeddings'::regclass, $1::regclass, 'search_documents'::regclass,
                                 'search_documents_search'::regclass)
             UNION ALL
             SELECT c.reltoastrelid FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'embeddings'::regclass AND c.reltoastrelid <> 0) t",
    )
    .bind(&index)
    .fetch_one(&pool)
    .await?;
    eprintln!("{warmed} pages read into shared buffers");
    measure(&pool, &sizes, 5).await?;
    println!("{vectors} vectors of 1024 dimensions over {users} Zipf-sized users; {queries} queries a bucket");
    println!(
        "| users by size | users | rows | recall@10 (mean / worst) | p50 (ms) | p95 (ms) | database CPU per search (ms) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for b in measure(&pool, &sizes, queries).await? {
        println!(
            "| {} | {} | {}–{} | {:.3} / {:.1} | {:.1} | {:.1} | {:.2} |",
            b.name,
            b.users,
            b.sizes.0,
            b.sizes.1,
            b.recall,
            b.worst_recall,
            b.p50.as_secs_f64() * 1000.0,
            b.p95.as_secs_f64() * 1000.0,
            b.database_cpu.as_secs_f64() * 1000.0
        );
    }
    let (table, index): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(pg_total_relation_size(inhrelid))::bigint FROM pg_inherits
                 WHERE inhparent = 'embeddings'::regclass),
                (SELECT sum(pg_relation_size(inhrelid))::bigint FROM pg_inherits WHERE inhparent = $1::regclass)",
    )
    .bind(&index)
    .fetch_one(&pool)
    .await?;
    let table = table - index;
    println!(
        "bytes per stored vector: {} in the table (with TOAST and its other indexes) + {} in the HNSW index",
        table / vectors as i64,
        index / vectors as i64
    );
    Ok(())
}
