//! Who and what a record is about: the key, user and item it names, as far
//! as they can be told. Read once per record; logs, spans and failure
//! records carry it.

use uuid::Uuid;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// The original's key.
    pub key: Option<String>,
    pub user_id: Option<String>,
    pub item_id: Option<Uuid>,
}
