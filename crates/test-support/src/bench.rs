//! Inputs for the benchmarks, generated so no binary fixture is needed, and
//! the databases they run in.

use std::io::Cursor;

use image::{DynamicImage, ImageEncoder, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

use crate::icc;

/// A photo-like RGB image: smooth gradients, edges and fine grain, so it
/// compresses like a camera's JPEG rather than like a flat test card.
pub fn photo(width: u32, height: u32) -> RgbImage {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    RgbImage::from_fn(width, height, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let grain = (seed % 9) as f32 - 4.0;
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let stripe = if ((x / 97) + (y / 131)) % 2 == 0 { 18.0 } else { -18.0 };
        let r = 120.0 + 90.0 * (fx * 6.0).sin() + stripe + grain;
        let g = 110.0 + 80.0 * (fy * 5.0).cos() + grain;
        let b = 100.0 + 70.0 * ((fx + fy) * 4.0).sin() - stripe + grain;
        Rgb([r, g, b].map(|v| v.clamp(0.0, 255.0) as u8))
    })
}

/// An image as a quality-90 JPEG.
pub fn jpeg(image: &RgbImage) -> Vec<u8> {
    jpeg_tagged(image, None)
}

/// An image as a quality-90 JPEG, with an ICC profile if given.
fn jpeg_tagged(image: &RgbImage, icc: Option<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
    if let Some(profile) = icc {
        encoder.set_icc_profile(profile).expect("JPEG takes an ICC profile");
    }
    encoder
        .write_image(image.as_raw(), image.width(), image.height(), image::ExtendedColorType::Rgb8)
        .expect("encoding the benchmark JPEG");
    out
}

/// A phone-sized (12 MP, 4032×3024) JPEG at quality 90.
pub fn phone_jpeg() -> Vec<u8> {
    jpeg(&photo(4032, 3024))
}

/// The same JPEG tagged with a Display P3 profile, as phones write them:
/// its thumbnail is converted to sRGB.
pub fn phone_jpeg_display_p3() -> Vec<u8> {
    jpeg_tagged(&photo(4032, 3024), Some(icc::display_p3_like()))
}

/// A 2000×1500 RGBA PNG (a screenshot-sized image with transparency).
pub fn rgba_png() -> Vec<u8> {
    let rgb = photo(2000, 1500);
    let rgba = RgbaImage::from_fn(2000, 1500, |x, y| {
        let p = rgb.get_pixel(x, y).0;
        Rgba([p[0], p[1], p[2], if x < 100 { 0 } else { 255 }])
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgba8(rgba).write_to(&mut out, ImageFormat::Png).expect("encoding the benchmark PNG");
    out.into_inner()
}

/// A fresh database named `name` on the server of `DATABASE_URL`, migrated;
/// `None` when `DATABASE_URL` is not set.
pub async fn fresh_database(name: &str) -> anyhow::Result<Option<sqlx::PgPool>> {
    use std::str::FromStr;
    let Ok(url) = std::env::var("DATABASE_URL") else {
        return Ok(None);
    };
    let server = sqlx::postgres::PgConnectOptions::from_str(&url)?;
    let admin = sqlx::PgPool::connect_with(server.clone()).await?;
    // Identifiers cannot be bound; `name` is a constant of the benchmarks.
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect_with(server.database(name)).await?;
    store::migrate(&pool).await?;
    Ok(Some(pool))
}

/// The database `name` on the server of `DATABASE_URL`, created and
/// migrated when missing, kept between runs (for data slow to make).
pub async fn database(name: &str, connections: u32) -> anyhow::Result<sqlx::PgPool> {
    use std::str::FromStr;
    let url = std::env::var("DATABASE_URL").map_err(|_| anyhow::anyhow!("DATABASE_URL is not set"))?;
    let server = sqlx::postgres::PgConnectOptions::from_str(&url)?;
    let admin = sqlx::PgPool::connect_with(server.clone()).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&admin)
        .await?;
    if !exists {
        // Identifiers cannot be bound; `name` is a constant of the benchmarks.
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
    }
    let pool =
        sqlx::postgres::PgPoolOptions::new().max_connections(connections).connect_with(server.database(name)).await?;
    store::migrate(&pool).await?;
    Ok(pool)
}

/// One item with `n` analyses (what embeddings point at); their ids.
pub async fn seed_analyses(pool: &sqlx::PgPool, n: usize) -> anyhow::Result<Vec<(uuid::Uuid, uuid::Uuid)>> {
    let model = store::models::EmbeddingModel::new(BENCH_MODEL, embedding::DEFAULT_DIMENSIONS);
    store::models::register(pool, &model).await?;
    let item = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO items (id, user_id, filename, file_path, bucket) VALUES ($1, 'bench', 'a.jpg', 'bench/a.jpg', 'b')")
        .bind(item)
        .execute(pool)
        .await?;
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        r#"INSERT INTO analyses (id, item_id, user_id, version, category, summary, analysis, raw_response,
                                 provider_used, model_used, request_key)
           SELECT gen_random_uuid(), $1, 'bench', v, 'other', 'x', '{}', '{}', 'bench', 'bench', v::text
           FROM generate_series(1, $2) AS v
           RETURNING id"#,
    )
    .bind(item)
    .bind(n as i32)
    .fetch_all(pool)
    .await?;
    Ok(ids.into_iter().map(|a| (item, a)).collect())
}

/// The model the insert benchmarks' vectors are stored under.
pub const BENCH_MODEL: &str = "bench-model";

/// Pseudo-random unit vectors of 1024 dimensions, one per analysis.
pub fn embeddings(targets: &[(uuid::Uuid, uuid::Uuid)]) -> Vec<store::embeddings::NewEmbedding> {
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    targets
        .iter()
        .map(|(item, analysis)| {
            let mut v: Vec<f32> = (0..embedding::DEFAULT_DIMENSIONS)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            store::embeddings::NewEmbedding {
                item_id: *item,
                analysis_id: *analysis,
                user_id: "bench".to_owned(),
                vector: store::Vector::from(v),
                model: BENCH_MODEL.to_owned(),
                source: serde_json::json!({"fields": ["summary"], "chars": 80}),
                tokens: None,
            }
        })
        .collect()
}

/// The CPU time each of PostgreSQL's client backends of this database has
/// used, by process id (read from `/proc`: the server must run on this
/// machine).
#[derive(Debug, Clone, Default)]
pub struct DatabaseCpu(std::collections::HashMap<i32, std::time::Duration>);

impl DatabaseCpu {
    /// The CPU time used since `before` (a backend started meanwhile counts whole).
    pub fn since(&self, before: &DatabaseCpu) -> std::time::Duration {
        self.0.iter().map(|(pid, cpu)| cpu.saturating_sub(before.0.get(pid).copied().unwrap_or_default())).sum()
    }
}

/// [`DatabaseCpu`] now.
pub async fn database_cpu(pool: &sqlx::PgPool) -> anyhow::Result<DatabaseCpu> {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'",
    )
    .fetch_all(pool)
    .await?;
    let mut cpu = std::collections::HashMap::new();
    for pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The fields after the command's closing parenthesis, from the
        // third on; utime and stime are the 14th and 15th, in USER_HZ
        // ticks (100 a second on Linux).
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        cpu.insert(pid, std::time::Duration::from_millis((ticks(14) + ticks(15)) * 10));
    }
    Ok(DatabaseCpu(cpu))
}
