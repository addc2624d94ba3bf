//! Where the batch runner records failures ([`FailureLog`]): in the
//! database, on the item's row when the subject names an item of its user,
//! else in `record_failures` (`store::status`); tests bring their own.

use async_trait::async_trait;
use domain::stage::StageName;
use sqlx::PgPool;
use store::DbError;
use store::status::{FailedInput, record_failures};

#[async_trait]
pub trait FailureLog: Send + Sync {
    async fn record(&self, stage: StageName, failures: &[FailedInput]) -> Result<(), DbError>;
}

#[async_trait]
impl FailureLog for PgPool {
    async fn record(&self, stage: StageName, failures: &[FailedInput]) -> Result<(), DbError> {
        record_failures(self, stage, failures).await
    }
}
