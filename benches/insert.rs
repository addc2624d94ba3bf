//! The embedding insert hot path: 500 rows of 1024-dimensional vectors a
//! batch, row at a time against the batch paths (binary COPY, which the
//! embedder uses, and one `UNNEST` statement), with and without the HNSW
//! index. Needs `DATABASE_URL` (`eval "$(bash scripts/postgres.sh env)"`);
//! without it, says so and measures nothing.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sqlx::PgPool;
use store::embeddings::{NewEmbedding, copy_rows, insert_one, insert_rows};
use test_support::bench::{embeddings, fresh_database, seed_analyses};

const ROWS: usize = 500;

#[derive(Clone, Copy)]
enum Path {
    RowAtATime,
    Copy,
    Unnest,
}

/// Times one load of `rows` into an emptied table, in one transaction.
async fn load(pool: &PgPool, rows: &[NewEmbedding], path: Path) -> Duration {
    sqlx::query("TRUNCATE embeddings").execute(pool).await.expect("emptying the table");
    let start = Instant::now();
    let mut tx = pool.begin().await.expect("a transaction");
    match path {
        Path::RowAtATime => {
            for row in rows {
                insert_one(&mut tx, row).await.expect("inserting a row");
            }
        }
        Path::Copy => {
            copy_rows(&mut tx, rows).await.expect("copying rows");
        }
        Path::Unnest => {
            insert_rows(&mut tx, rows).await.expect("inserting rows");
        }
    }
    tx.commit().await.expect("committing");
    start.elapsed()
}

fn insert(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let Some(pool) = runtime.block_on(fresh_database("collections_bench_insert")).expect("the bench database") else {
        eprintln!("insert: skipped, DATABASE_URL is not set (eval \"$(bash scripts/postgres.sh env)\")");
        return;
    };
    let targets = runtime.block_on(seed_analyses(&pool, ROWS)).expect("seeding analyses");
    let rows = embeddings(&targets);

    for indexed in [false, true] {
        runtime
            .block_on(async {
                if indexed {
                    store::models::build_indexes(&pool, 256).await
                } else {
                    store::models::drop_indexes(&pool).await
                }
            })
            .expect("setting up the index");
        let mut group = c.benchmark_group(if indexed { "insert/hnsw" } else { "insert/no_index" });
        group.sample_size(10).measurement_time(Duration::from_secs(20)).throughput(Throughput::Elements(ROWS as u64));
        for (name, path) in
            [("row_at_a_time", Path::RowAtATime), ("batch_copy", Path::Copy), ("batch_unnest", Path::Unnest)]
        {
            group.bench_function(name, |b| {
                b.iter_custom(|iterations| {
                    runtime.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iterations {
                            total += load(&pool, &rows, path).await;
                        }
                        total
                    })
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, insert);
criterion_main!(benches);
