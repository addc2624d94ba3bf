//! The thumbnail stage's settings, read once at start.

use domain::settings::{ConfigError, Env, Setting};
use runtime::storage::BUCKET_NAME;

use crate::resize::{Limits, ThumbnailSpec};

const MIB: u64 = 1 << 20;

pub const MAX_SIZE: Setting = Setting::new("THUMBNAIL_MAX_SIZE", "800", "longest side of a thumbnail, px (the seed's)");
pub const JPEG_QUALITY: Setting = Setting::new("THUMBNAIL_JPEG_QUALITY", "85", "1–100");
pub const MAX_FILE_MIB: Setting = Setting::new("THUMBNAIL_MAX_FILE_MIB", "64", "largest original read, MiB");
pub const MAX_MEGAPIXELS: Setting =
    Setting::new("THUMBNAIL_MAX_MEGAPIXELS", "120", "largest declared image decoded, megapixels");
pub const MAX_DECODE_MIB: Setting =
    Setting::new("THUMBNAIL_MAX_DECODE_MIB", "256", "decoder memory one image may use, MiB");
pub const THREADS: Setting = Setting::optional("THUMBNAIL_THREADS", "the CPUs available", "images decoded at once");

/// The settings of this stage, for `docs/configuration.md`.
pub const SETTINGS: &[Setting] = &[MAX_SIZE, JPEG_QUALITY, MAX_FILE_MIB, MAX_MEGAPIXELS, MAX_DECODE_MIB, THREADS];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailConfig {
    /// [`MAX_SIZE`], [`JPEG_QUALITY`], [`MAX_MEGAPIXELS`], [`MAX_DECODE_MIB`].
    pub spec: ThumbnailSpec,
    /// [`MAX_FILE_MIB`], in bytes.
    pub max_file_bytes: u64,
    /// [`THREADS`].
    pub threads: usize,
    /// [`BUCKET_NAME`]: where thumbnails are written; `None`: the original's bucket.
    pub bucket: Option<String>,
}

impl ThumbnailConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let quality: u8 = env.parse_at_least(&JPEG_QUALITY, 1)?;
        if quality > 100 {
            return Err(ConfigError::Invalid {
                name: JPEG_QUALITY.name,
                value: quality.to_string(),
                reason: "must be at most 100".into(),
            });
        }
        let cpus = || std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            spec: ThumbnailSpec {
                max_size: env.parse_at_least(&MAX_SIZE, 1)?,
                jpeg_quality: quality,
                limits: Limits {
                    max_pixels: env.parse_at_least(&MAX_MEGAPIXELS, 1u64)? * 1_000_000,
                    max_decode_memory: env.parse_at_least(&MAX_DECODE_MIB, 1u64)? * MIB,
                },
            },
            max_file_bytes: env.parse_at_least(&MAX_FILE_MIB, 1u64)? * MIB,
            threads: env.parse_optional_at_least(&THREADS, 1)?.unwrap_or_else(cpus),
            bucket: env.get(BUCKET_NAME.name),
        })
    }
}

impl Default for ThumbnailConfig {
    fn default() -> Self {
        Self::from_env(&Env::from_pairs([])).expect("defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = ThumbnailConfig::default();
        assert_eq!(c.spec.max_size, 800);
        assert_eq!(c.spec.jpeg_quality, 85);
        assert_eq!(c.spec.limits.max_pixels, 120_000_000);
        assert_eq!(c.spec.limits.max_decode_memory, 256 * MIB);
        assert_eq!(c.max_file_bytes, 64 * MIB);
        assert!(c.threads >= 1);
        assert_eq!(c.bucket, None);
    }

    #[test]
    fn parses_and_checks_values() {
        let env = Env::from_pairs([
            ("THUMBNAIL_MAX_SIZE", "400"),
            ("THUMBNAIL_MAX_MEGAPIXELS", "50"),
            ("THUMBNAIL_THREADS", "3"),
            ("BUCKET_NAME", "thumbs"),
        ]);
        let c = ThumbnailConfig::from_env(&env).unwrap();
        assert_eq!((c.spec.max_size, c.spec.limits.max_pixels, c.threads), (400, 50_000_000, 3));
        assert_eq!(c.bucket.as_deref(), Some("thumbs"));
        let bad = Env::from_pairs([("THUMBNAIL_JPEG_QUALITY", "101")]);
        assert!(ThumbnailConfig::from_env(&bad).unwrap_err().to_string().contains("at most 100"));
        let zero = Env::from_pairs([("THUMBNAIL_THREADS", "0")]);
        assert!(ThumbnailConfig::from_env(&zero).is_err());
    }
}
