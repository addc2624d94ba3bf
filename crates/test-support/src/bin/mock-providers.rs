//! The mock provider server as a process of its own, for scripts that run
//! the real `collections` binary against it (`scripts/batch-api-kill.sh`).
//!
//!     mock-providers [--port 54340] [--batch-seconds 3] [--batches-only]
//!
//! Anthropic's API is at `http://127.0.0.1:PORT/anthropic`; each message
//! batch ends `--batch-seconds` after it is created; with
//! `--batches-only`, the synchronous Messages API answers 403. Runs until killed.

use std::net::SocketAddr;
use std::time::Duration;

use test_support::providers::MockProviders;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut port, mut batch_seconds, mut batches_only) = (54340u16, 3.0f64, false);
    while let Some(flag) = args.next() {
        if flag == "--batches-only" {
            batches_only = true;
            continue;
        }
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => port = value.parse().expect("--port: a port number"),
            "--batch-seconds" => batch_seconds = value.parse().expect("--batch-seconds: seconds"),
            other => panic!("unknown flag {other}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let mock = MockProviders::start_on(SocketAddr::from(([127, 0, 0, 1], port))).await;
        mock.set_batch_duration(Duration::from_secs_f64(batch_seconds));
        if batches_only {
            mock.batches_only();
        }
        println!("{}", mock.anthropic_url());
        std::future::pending::<()>().await;
    });
}
