//! The thumbnail stage: reads originals, writes thumbnails of at most
//! 800×800 under `{user_id}/thumbnails/`, records each item, and publishes
//! `ImageProcessed` for those it thumbnailed.

mod color;
pub mod config;
mod exif;
mod jpeg;
pub mod pixels;
mod png;
pub mod resize;
pub mod stage;
pub mod worker;

pub use config::ThumbnailConfig;
pub use resize::{Limits, OutputFormat, Thumbnail, ThumbnailError, ThumbnailSpec, make_thumbnail};
pub use stage::{ThumbnailOutcome, Thumbnailer};
