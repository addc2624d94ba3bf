//! Search at scale: many users whose collection sizes follow a Zipf law,
//! sharing one table, each searched for its own items. Measures recall@10
//! of the search's nearest-vector ranking against an exact scan, and its
//! latency, per user-size bucket. Used by `search-scale` (the full set) and
//! by a test in CI (a small set).

use std::time::{Duration, Instant};

use sqlx::PgPool;
use store::search::{SearchQuery, search};
use store::{Vector, analyses, embeddings, items};
use uuid::Uuid;

/// The model name the generated vectors carry.
pub const MODEL: &str = "scale-test";
const DIMENSIONS: usize = 1024;
/// Topics the vectors cluster around, shared by every user.
const CENTRES: usize = 64;

/// A tiny, seeded generator (xorshift), so every run makes the same data.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// Sizes of `users` collections adding up to `vectors`, user `i` (from 1)
/// holding in proportion to 1/i (Zipf, s = 1), each at least 1.
pub fn zipf_sizes(vectors: usize, users: usize) -> Vec<usize> {
    let harmonic: f64 = (1..=users).map(|i| 1.0 / i as f64).sum();
    let mut sizes: Vec<usize> =
        (1..=users).map(|i| ((vectors as f64 / harmonic / i as f64).round() as usize).max(1)).collect();
    let total: usize = sizes.iter().sum();
    if total > vectors {
        sizes[0] -= (total - vectors).min(sizes[0] - 1);
    } else {
        sizes[0] += vectors - total;
    }
    sizes
}

/// The vector of item `n` of a user: one of the user's few topics, plus noise.
fn item_vector(centres: &[Vec<f32>], user: usize, n: usize) -> Vec<f32> {
    let mut noise = Noise(((user as u64) << 32 | n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let centre = &centres[(user * 7 + n % 3) % CENTRES];
    normalised(centre.iter().map(|c| c + noise.next() * 0.08).collect())
}

fn centres() -> Vec<Vec<f32>> {
    let mut noise = Noise(0x2545_F491_4F6C_DD1D);
    (0..CENTRES).map(|_| normalised((0..DIMENSIONS).map(|_| noise.next()).collect())).collect()
}

/// Stores the users' items, analyses and vectors (the index is built once,
/// after). A table that already holds `sum(sizes)` vectors of the model is
/// used as it is.
pub async fn seed(pool: &PgPool, sizes: &[usize]) -> anyhow::Result<()> {
    let total: usize = sizes.iter().sum();
    let have: i64 = sqlx::query_scalar("SELECT count(*) FROM embeddings WHERE embedding_model = $1")
        .bind(MODEL)
        .fetch_one(pool)
        .await?;
    if have == total as i64 {
        // Made before: only what is missing of the index (a build that was
        // interrupted, or data migrated from before per-model indexes).
        store::models::build_indexes(pool, 1024).await?;
        return Ok(());
    }
    sqlx::query("TRUNCATE items CASCADE").execute(pool).await?;
    store::models::drop_indexes(pool).await?;
    let centres = centres();
    let all: Vec<(usize, usize)> =
        sizes.iter().enumerate().flat_map(|(user, &size)| (0..size).map(move |n| (user, n))).collect();
    for chunk in all.chunks(1000) {
        let images: Vec<Generated> = chunk
            .iter()
            .map(|&(user, n)| Generated {
                key: format!("z{user:04}/p{n}.jpg"),
                category: "other".to_owned(),
                summary: "generated".to_owned(),
                vector: item_vector(&centres, user, n),
            })
            .collect();
        store_generated(pool, &images, MODEL).await?;
    }
    store::models::build_indexes(pool, 1024).await?;
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok(())
}

/// One generated image: its key, its analysis, and its vector.
pub struct Generated {
    pub key: String,
    pub category: String,
    pub summary: String,
    pub vector: Vec<f32>,
}

/// Stores generated images as the three stages would: the items, an
/// analysis each, and a vector each of `model`.
pub async fn store_generated(pool: &PgPool, images: &[Generated], model: &str) -> anyhow::Result<()> {
    let records: Vec<items::ThumbnailRecord> = images
        .iter()
        .map(|image| {
            let parsed = domain::keys::ImageKey::parse(&image.key).expect("generated keys are valid");
            items::ThumbnailRecord {
                id: parsed.item_uuid(),
                user_id: parsed.user_id().to_owned(),
                bucket: "local".to_owned(),
                key: image.key.clone(),
                filename: parsed.filename().to_owned(),
                thumbnail_key: Some(parsed.thumbnail_key()),
                ..items::ThumbnailRecord::default()
            }
        })
        .collect();
    let ids: Vec<Uuid> = records.iter().map(|r| r.id).collect();
    items::store_thumbnails(pool, &records, &ids, &[]).await?;
    let new: Vec<analyses::NewAnalysis> = images
        .iter()
        .zip(&records)
        .map(|(image, r)| analyses::NewAnalysis {
            item_id: r.id,
            user_id: r.user_id.clone(),
            category: image.category.clone(),
            summary: image.summary.clone(),
            analysis: serde_json::json!({ "category": image.category, "summary": image.summary }),
            raw_response: serde_json::json!({}),
            provider_used: "generated".to_owned(),
            model_used: "generated".to_owned(),
            trace_id: None,
            request_key: r.key.clone(),
            usage: None,
            batch_id: None,
        })
        .collect();
    let stored = analyses::store_batch(pool, &new, &[]).await?;
    let analysis_of: std::collections::HashMap<Uuid, Uuid> =
        stored.stored.iter().map(|s| (s.item_id, s.analysis_id)).collect();
    let rows: Vec<embeddings::NewEmbedding> = images
        .iter()
        .zip(&records)
        .map(|(image, r)| embeddings::NewEmbedding {
            item_id: r.id,
            analysis_id: analysis_of[&r.id],
            user_id: r.user_id.clone(),
            vector: Vector::from(image.vector.clone()),
            model: model.to_owned(),
            source: serde_json::json!({}),
            tokens: None,
        })
        .collect();
    embeddings::store_batch(pool, &embeddings::EmbeddingBatch { new: rows, ..Default::default() }).await?;
    Ok(())
}

/// What one bucket of user sizes measured.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub name: &'static str,
    pub sizes: (usize, usize),
    pub users: usize,
    pub queries: usize,
    /// Mean recall@10 of the search's nearest-vector ranking against an exact scan.
    pub recall: f64,
    pub worst_recall: f64,
    pub p50: Duration,
    pub p95: Duration,
    /// PostgreSQL's CPU time per search.
    pub database_cpu: Duration,
}

/// The buckets: tiny, small, medium, and the largest users.
pub fn buckets(sizes: &[usize]) -> Vec<(&'static str, Vec<usize>)> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&u| sizes[u]);
    let of = |lo: usize, hi: usize| order.iter().copied().filter(|&u| sizes[u] >= lo && sizes[u] < hi).collect();
    vec![
        ("tiny (< 20)", of(1, 20)),
        ("small (20–199)", of(20, 200)),
        ("medium (200–1 999)", of(200, 2000)),
        ("largest (≥ 2 000)", of(2000, usize::MAX)),
    ]
}

/// Searches `queries` of each bucket's users (a user's own item, with noise)
/// and compares the ranking with the exact nearest ten.
pub async fn measure(pool: &PgPool, sizes: &[usize], queries: usize) -> anyhow::Result<Vec<Bucket>> {
    let centres = centres();
    let mut out = Vec::new();
    for (name, users) in buckets(sizes) {
        if users.is_empty() {
            continue;
        }
        // The exact answers first, so that only the searches' CPU is counted.
        let mut asked = Vec::with_capacity(queries);
        for q in 0..queries {
            let user = users[q * 7919 % users.len()];
            let user_id = format!("z{user:04}");
            let mut noise = Noise(q as u64 * 31 + 7);
            let own = item_vector(&centres, user, q % sizes[user]);
            let query = Vector::from(normalised(own.iter().map(|x| x + noise.next() * 0.05).collect()));
            let exact: Vec<Uuid> = sqlx::query_scalar(
                "SELECT item_id FROM embeddings WHERE user_id = $1 AND embedding_model = $2
                 ORDER BY (vector <=> $3) + 0 LIMIT 10",
            )
            .bind(&user_id)
            .bind(MODEL)
            .bind(&query)
            .fetch_all(pool)
            .await?;
            asked.push((user_id, query, exact));
        }
        let (mut recalls, mut times) = (Vec::new(), Vec::new());
        let before = crate::bench::database_cpu(pool).await?;
        for (user_id, query, exact) in &asked {
            let request =
                SearchQuery { user_id, text: "zzzqx", vector: query, model: MODEL, limit: 10, category: None };
            let started = Instant::now();
            let hits = search(pool, &request).await?;
            times.push(started.elapsed());
            let found = hits.iter().filter(|h| exact.contains(&h.item_id)).count();
            recalls.push(found as f64 / exact.len().max(1) as f64);
        }
        let database_cpu = crate::bench::database_cpu(pool).await?.since(&before) / queries.max(1) as u32;
        times.sort();
        let at = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
        out.push(Bucket {
            name,
            sizes: (sizes[users[0]], sizes[*users.last().expect("a bucket has users")]),
            users: users.len(),
            queries,
            recall: recalls.iter().sum::<f64>() / recalls.len() as f64,
            worst_recall: recalls.iter().copied().fold(1.0, f64::min),
            p50: at(0.50),
            p95: at(0.95),
            database_cpu,
        });
    }
    Ok(out)
}
