//! The analyzer's throughput is bounded by its concurrency limit, not by the
//! batch: 64 images at 16 calls in flight, each call answered in 500 ms by
//! a local server speaking the Anthropic Messages API, take about 2 s
//! (64 / 16 × 0.5 s), not 32 s.

use std::sync::Arc;
use std::time::Duration;

use analyzer::calls::VisionCalls;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use remote::retry::RetryPolicy;
use remote::{ApiKey, JsonClient};
use runtime::batch::Meter;
use test_support::bench::photo;
use test_support::providers::MockProviders;
use vision::VisionRequest;
use vision::anthropic::AnthropicProvider;

const BATCH: usize = 64;
const CONCURRENCY: usize = 16;

fn analyzer(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let mock = runtime.block_on(MockProviders::start());
    mock.set_latency(Duration::from_millis(500));
    let provider = AnthropicProvider::new(
        JsonClient::new("anthropic", Duration::from_secs(10)),
        &mock.anthropic_url(),
        ApiKey::new("bench"),
        "bench-model".to_owned(),
        1024,
    );
    let calls = VisionCalls::new(Arc::new(provider), CONCURRENCY, RetryPolicy::default());
    let thumbnail = test_support::bench::jpeg(&photo(800, 600));
    let requests: Vec<VisionRequest<'_>> =
        (0..BATCH).map(|_| VisionRequest { image: &thumbnail, media_type: "image/jpeg", info: None }).collect();

    let mut group = c.benchmark_group("analyzer");
    group.sample_size(10).measurement_time(Duration::from_secs(25)).throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_64_at_16_concurrent_500ms_calls", |b| {
        b.to_async(&runtime).iter(|| async {
            let results = calls.analyze_all(&requests, &Meter::default()).await;
            assert!(results.iter().all(Result::is_ok));
        })
    });
    group.finish();
    assert!(mock.peak_in_flight() <= CONCURRENCY);
}

criterion_group!(benches, analyzer);
criterion_main!(benches);
