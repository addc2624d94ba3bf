//! `collections redrive --queue URL`: what a stream's on-failure queue
//! names, put back on its stream.

use ops::redrive::Redrive as Redriver;

/// Put the records a stream's on-failure queue names back on their stream;
/// each message is deleted once its records are.
#[derive(Debug, clap::Args)]
pub struct Redrive {
    /// The SQS queue's URL (the stack's on-failure destination of a stage).
    #[arg(long)]
    queue: String,
    /// Messages to take, at most.
    #[arg(long, default_value_t = 1000)]
    max_messages: usize,
}

impl Redrive {
    pub async fn run(self) -> anyhow::Result<()> {
        let aws = aws::load_config().await;
        let report = Redriver::new(&aws).run(&self.queue, self.max_messages).await.map_err(anyhow::Error::msg)?;
        println!("redriven {} messages ({} records), kept {}", report.redriven, report.records, report.kept.len());
        for (id, reason) in &report.kept {
            println!("  KEPT {id}: {reason}");
        }
        Ok(())
    }
}
