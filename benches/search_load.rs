//! Load on the search API as `collections serve` hosts it: the local app on
//! 127.0.0.1 over a database of `--vectors` stored vectors (made once, by the
//! local embedder, over `--users` users), queried over HTTP by 1, 10 and 50
//! concurrent clients. The local embedder embeds the queries, so the figures
//! are this service's and PostgreSQL's, not a provider's.
//!
//!   search-load [--vectors 100000] [--users 20] [--requests 400] [--concurrency 1,10,50]
//!               [--provider-latency-ms 0] [--query-cache 1024] [--pool CORES+1]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use embedding::{EmbeddingProvider, InputType};
use sqlx::PgPool;
use test_support::bench::database_cpu;
use test_support::scale::{Generated, store_generated};

/// The database the load runs on, beside the one `DATABASE_URL` names.
const DATABASE: &str = "collections_search_load";

/// Words the generated summaries and queries are made of.
const SUBJECTS: [&str; 24] = [
    "cat",
    "dog",
    "beach",
    "mountain",
    "forest",
    "city street",
    "receipt",
    "pasta",
    "bicycle",
    "sunset",
    "river",
    "bridge",
    "garden",
    "car",
    "train",
    "boat",
    "desk",
    "coffee cup",
    "book",
    "lake",
    "snow",
    "market",
    "church",
    "portrait",
];
const MOODS: [&str; 8] = ["sunny", "dark", "foggy", "colourful", "black and white", "blurry", "bright", "quiet"];
const CATEGORIES: [&str; 6] = ["pets", "landscape", "document", "food", "travel", "other"];

struct Args {
    vectors: usize,
    users: usize,
    requests: usize,
    concurrency: Vec<usize>,
    /// How long embedding a query takes (0: the local embedder's own time);
    /// a network provider takes ~100 ms.
    provider_latency: Duration,
    /// Query vectors kept ([`search::query::CachedQueries`]; 0: none).
    cache: usize,
    /// The service's database connections (as `collections serve`: the
    /// cores + 1).
    pool: u32,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        vectors: 100_000,
        users: 20,
        requests: 400,
        concurrency: vec![1, 10, 50],
        provider_latency: Duration::ZERO,
        cache: 1024,
        pool: search::config::default_pool_size(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--vectors" => args.vectors = value.parse()?,
            "--users" => args.users = value.parse()?,
            "--requests" => args.requests = value.parse()?,
            "--concurrency" => {
                args.concurrency = value.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            "--provider-latency-ms" => args.provider_latency = Duration::from_millis(value.parse()?),
            "--query-cache" => args.cache = value.parse()?,
            "--pool" => args.pool = value.parse()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

/// The summary of generated item `n`: a subject, a mood and a second subject.
fn summary(n: usize) -> String {
    let subject = SUBJECTS[n % SUBJECTS.len()];
    let mood = MOODS[(n / SUBJECTS.len()) % MOODS.len()];
    let other = SUBJECTS[(n * 7 + 3) % SUBJECTS.len()];
    format!("A {mood} photo of a {subject} near a {other}, number {n}")
}

/// Makes the items, analyses and vectors once; a database that already
/// holds `vectors` of them is used as it is.
async fn seed(pool: &PgPool, args: &Args, embedder: &dyn EmbeddingProvider) -> anyhow::Result<()> {
    let have: i64 = sqlx::query_scalar("SELECT count(*) FROM embeddings").fetch_one(pool).await?;
    if have == args.vectors as i64 {
        eprintln!("using the {have} vectors already stored");
        return Ok(());
    }
    sqlx::query("TRUNCATE items CASCADE").execute(pool).await?;
    store::models::drop_indexes(pool).await?;
    let started = Instant::now();
    for chunk_start in (0..args.vectors).step_by(1000) {
        let range = chunk_start..(chunk_start + 1000).min(args.vectors);
        let texts: Vec<String> = range.clone().map(summary).collect();
        let mut vectors = embedder.embed(&texts, InputType::Document).await?.vectors;
        for (n, v) in range.clone().zip(&mut vectors) {
            densify(v, n as u64);
        }
        let images: Vec<Generated> = range
            .clone()
            .zip(texts.into_iter().zip(vectors))
            .map(|(n, (summary, vector))| Generated {
                key: format!("load-{}/photo-{n}.jpg", n % args.users),
                category: CATEGORIES[n % CATEGORIES.len()].to_owned(),
                summary,
                vector,
            })
            .collect();
        store_generated(pool, &images, embedder.model()).await?;
        eprint!("\rseeded {} of {} vectors", range.end, args.vectors);
    }
    eprintln!(" in {:.0} s; building the HNSW index", started.elapsed().as_secs_f64());
    let started = Instant::now();
    store::models::build_indexes(pool, 1024).await?;
    sqlx::query("ANALYZE").execute(pool).await?;
    eprintln!("index built in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Adds a little noise to every dimension and normalises again. The local
/// embedder's vectors are mostly zeros, which PostgreSQL compresses; a
/// provider's are dense, and so are these (still near their text's).
fn densify(v: &mut [f32], seed: u64) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for x in v.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *x += ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
}

/// `requests` searches by `concurrency` clients; each one's latency.
/// What request number `n` asks for: its path and query.
type Path = Arc<dyn Fn(usize) -> String + Send + Sync>;

/// A search of two generated words.
fn search_path() -> Path {
    Arc::new(|n| {
        let q = format!("{} {}", MOODS[n % MOODS.len()], SUBJECTS[(n * 5) % SUBJECTS.len()]);
        // The generated words need no escaping but their spaces.
        format!("/v1/search?limit=20&q={}", q.replace(' ', "+"))
    })
}

/// "More like this" of one of `items`.
fn similar_path(items: Vec<uuid::Uuid>) -> Path {
    Arc::new(move |n| format!("/v1/items/{}/similar?limit=20", items[n * 7919 % items.len()]))
}

async fn load(base: &str, path: &Path, requests: usize, concurrency: usize) -> anyhow::Result<Vec<Duration>> {
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        let (client, next, base, path) = (client.clone(), next.clone(), base.to_owned(), path.clone());
        clients.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= requests {
                    return Ok::<_, anyhow::Error>(times);
                }
                let asked = path(n);
                let started = Instant::now();
                let response = client.get(format!("{base}{asked}")).send().await?;
                anyhow::ensure!(response.status().is_success(), "{asked} answered {}", response.status());
                let body: serde_json::Value = response.json().await?;
                anyhow::ensure!(!body["hits"].as_array().is_none_or(Vec::is_empty), "no hits for {asked}");
                times.push(started.elapsed());
            }
        }));
    }
    let mut times = Vec::new();
    for c in clients {
        times.extend(c.await??);
    }
    Ok(times)
}

/// The local embedder, answering after `latency` as a network provider would.
struct Distant {
    inner: embedding::local::LocalEmbedder,
    latency: Duration,
}

#[async_trait::async_trait]
impl EmbeddingProvider for Distant {
    fn provider(&self) -> &'static str {
        self.inner.provider()
    }
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    fn limits(&self) -> embedding::BatchLimits {
        self.inner.limits()
    }
    async fn embed(
        &self,
        texts: &[String],
        input_type: InputType,
    ) -> Result<embedding::Embedded, embedding::EmbeddingError> {
        tokio::time::sleep(self.latency).await;
        self.inner.embed(texts, input_type).await
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let pool = test_support::bench::database(DATABASE, args.pool).await?;
    let embedder: Arc<dyn EmbeddingProvider> = Arc::new(embedding::local::LocalEmbedder::default());
    seed(&pool, &args, embedder.as_ref()).await?;

    let user = "load-0";
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM embeddings WHERE user_id = $1").bind(user).fetch_one(&pool).await?;
    let queries: Arc<dyn EmbeddingProvider> = if args.provider_latency.is_zero() {
        embedder
    } else {
        Arc::new(Distant { inner: embedding::local::LocalEmbedder::default(), latency: args.provider_latency })
    };
    let embedding = Arc::new(search::query::CachedQueries::new(queries, args.cache));
    let service = search::SearchService { pool: pool.clone(), embedding, links: Arc::new(search::links::LocalLinks) };
    let store = Arc::new(runtime::storage::FolderStore::new(std::env::temp_dir()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = search::gallery::local_app(Arc::new(service), store, None, user, address.port());
    let base = format!("http://{address}");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let items: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM items WHERE user_id = $1").bind(user).fetch_all(&pool).await?;
    // Warm the pool, the caches and the index pages.
    load(&base, &search_path(), 20, 2).await?;
    println!("{} vectors over {} users; searched as {user} ({rows} of them), limit 20", args.vectors, args.users);
    println!(
        "query embedding: {} ms a call, {} query vectors kept; {} database connections; {} build",
        args.provider_latency.as_millis(),
        args.cache,
        args.pool,
        if cfg!(debug_assertions) { "a debug" } else { "an optimised" }
    );
    println!(
        "| request | concurrent clients | requests | p50 (ms) | p95 (ms) | requests/s | database CPU per request (ms) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let kinds = [("search", search_path()), ("similar", similar_path(items))];
    for ((what, path), &concurrency) in kinds.iter().flat_map(|k| args.concurrency.iter().map(move |c| (k, c))) {
        let before = database_cpu(&pool).await?;
        let started = Instant::now();
        let mut times = load(&base, path, args.requests, concurrency).await?;
        let elapsed = started.elapsed();
        let database = database_cpu(&pool).await?.since(&before);
        times.sort();
        println!(
            "| {what} | {concurrency} | {} | {:.1} | {:.1} | {:.0} | {:.2} |",
            times.len(),
            percentile(&times, 0.50),
            percentile(&times, 0.95),
            times.len() as f64 / elapsed.as_secs_f64(),
            database.as_secs_f64() * 1000.0 / times.len() as f64
        );
    }
    Ok(())
}
