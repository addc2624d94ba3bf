//! `collections stats` on the real database: the usage in the mock
//! providers' replies (Anthropic's `usage`, Voyage's `total_tokens`) ends
//! up in the analyses' and embeddings' token columns and in the totals,
//! priced by the table; the local providers cost nothing.

use collections::ingest::run_folder;
use collections::stats::{Prices, is_local, report};
use domain::usage::Usage;
use sqlx::PgPool;
use store::stats::{Filter, gather};
use test_support::providers::MockProviders;
use test_support::{components, images};

const PRICES: &str = r#"{"as_of": "2026-11-30", "models": {
    "vision-test-1": {"input": 1.0, "output": 5.0},
    "voyage-3.5": {"input": 0.06}
}}"#;

#[sqlx::test(migrations = "../migrations")]
async fn the_providers_usage_is_stored_added_up_and_priced(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProviders::start().await;
    let (anthropic, voyage) = (mock.anthropic_url(), mock.voyage_url());
    let paid = components(
        pool.clone(),
        &dir.path().join("data"),
        &[
            ("ANALYZER_PROVIDER", "anthropic"),
            ("ANTHROPIC_BASE_URL", anthropic.as_str()),
            ("ANTHROPIC_API_KEY", "sk-ant-test"),
            ("ANALYZER_MODEL", "vision-test-1"),
            ("EMBEDDING_PROVIDER", "voyage"),
            ("VOYAGE_BASE_URL", voyage.as_str()),
            ("VOYAGE_API_KEY", "pa-test"),
        ],
    )
    .await;
    let report_of_run = run_folder(&paid, &images::three_photos(dir.path()), "payer", false).await.unwrap();
    assert_eq!(report_of_run.failed.len(), 0, "{report_of_run:?}");
    // Another user, on the offline providers.
    let free = components(pool.clone(), &dir.path().join("data"), &[]).await;
    run_folder(&free, &images::three_photos(dir.path()), "saver", false).await.unwrap();

    // Each analysis holds its reply's usage (the mock: 1600 in, 120 out).
    let tokens: Vec<(Option<i64>, Option<i64>)> =
        sqlx::query_as("SELECT input_tokens, output_tokens FROM analyses WHERE user_id = 'payer'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(tokens, vec![(Some(1600), Some(120)); 3]);
    // Each vector holds its share of its request's 42 tokens; the shares add up.
    let requests = mock.requests().iter().filter(|r| r.route == "voyage").count() as i64;
    let shares: Vec<Option<i64>> =
        sqlx::query_scalar("SELECT tokens FROM embeddings WHERE user_id = 'payer'").fetch_all(&pool).await.unwrap();
    assert_eq!(shares.len(), 3);
    assert_eq!(shares.iter().map(|s| s.unwrap()).sum::<i64>(), 42 * requests);

    let prices = Prices::parse(PRICES).unwrap();
    let stats = gather(&pool, Filter { user: Some("payer"), since: None }).await.unwrap();
    let vision = stats.models.iter().find(|m| m.model == "vision-test-1").unwrap();
    assert_eq!((vision.rows, vision.used), (3, Usage { input: 4800, output: 360, ..Usage::default() }));
    let embedding = stats.models.iter().find(|m| m.model == "voyage-3.5").unwrap();
    assert_eq!((embedding.rows, embedding.used.input), (3, 42 * requests as u64));
    let cost = collections::stats::cost(&stats, &prices);
    let expected = 4800.0 * 1.0 / 1e6 + 360.0 * 5.0 / 1e6 + (42 * requests) as f64 * 0.06 / 1e6;
    assert!((cost.total - expected).abs() < 1e-12, "{} != {expected}", cost.total);
    assert!((cost.per_1000_images.unwrap() - expected * 1000.0 / 3.0).abs() < 1e-9);
    assert_eq!(
        stats.statuses,
        [("thumbnail", "done", 3), ("analysis", "done", 3), ("embedding", "done", 3)].map(|(s, t, n)| (
            s.to_owned(),
            t.to_owned(),
            n
        ))
    );
    let text = report(&stats, &prices);
    assert!(
        text.contains(&format!(
            "estimated cost ${:.4}, ${:.4} per 1000 images (3 analysed)",
            expected,
            expected * 1000.0 / 3.0
        )),
        "{text}"
    );

    // The offline user's rows count no tokens and cost nothing, and say so.
    let free_stats = gather(&pool, Filter { user: Some("saver"), since: None }).await.unwrap();
    assert!(free_stats.models.iter().all(|m| is_local(m) && m.used == Usage::default()), "{:?}", free_stats.models);
    assert_eq!(collections::stats::cost(&free_stats, &prices).total, 0.0);
    assert!(report(&free_stats, &prices).contains("$0 (local: costs nothing)"));

    // Everyone's, and nothing made after now.
    let all = gather(&pool, Filter::default()).await.unwrap();
    assert_eq!(all.images, 6);
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let none = gather(&pool, Filter { user: None, since: Some(later) }).await.unwrap();
    assert_eq!((none.images, none.models.len(), none.statuses.len()), (0, 0, 0));
    assert!((collections::stats::cost(&none, &prices).total).abs() < f64::EPSILON);

    // A model the table does not price is named, and left out of the total.
    let unpriced =
        Prices::parse(r#"{"as_of": "x", "models": {"vision-test-1": {"input": 1.0, "output": 5.0}}}"#).unwrap();
    assert_eq!(collections::stats::cost(&stats, &unpriced).unpriced, ["voyage-3.5"]);
}
