//! The thumbnail stage's settings, read once at start.

use shared::config::{ConfigError, Env};

use crate::resize::{Limits, ThumbnailSpec};

const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailConfig {
    /// `THUMBNAIL_MAX_SIZE`: longest side of a thumbnail, pixels (default 800, the seed's).
    /// `THUMBNAIL_JPEG_QUALITY`: 1–100 (default 85).
    /// `THUMBNAIL_MAX_MEGAPIXELS`: largest declared image accepted (default 120).
    /// `THUMBNAIL_MAX_DECODE_MIB`: decoder memory one image may use (default 256).
    pub spec: ThumbnailSpec,
    /// `THUMBNAIL_MAX_FILE_MIB`: largest original read, MiB (default 64).
    pub max_file_bytes: u64,
    /// `THUMBNAIL_THREADS`: images decoded at once (default: the CPUs available).
    pub threads: usize,
    /// `BUCKET_NAME` (the seed's): where thumbnails are written; default the original's bucket.
    pub bucket: Option<String>,
}

impl ThumbnailConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let quality: u8 = env.parse_at_least("THUMBNAIL_JPEG_QUALITY", 85, 1)?;
        if quality > 100 {
            return Err(ConfigError::Invalid {
                name: "THUMBNAIL_JPEG_QUALITY",
                value: quality.to_string(),
                reason: "must be at most 100".into(),
            });
        }
        Ok(Self {
            spec: ThumbnailSpec {
                max_size: env.parse_at_least("THUMBNAIL_MAX_SIZE", 800, 1)?,
                jpeg_quality: quality,
                limits: Limits {
                    max_pixels: env.parse_at_least("THUMBNAIL_MAX_MEGAPIXELS", 120u64, 1)? * 1_000_000,
                    max_decode_memory: env.parse_at_least("THUMBNAIL_MAX_DECODE_MIB", 256u64, 1)? * MIB,
                },
            },
            max_file_bytes: env.parse_at_least("THUMBNAIL_MAX_FILE_MIB", 64u64, 1)? * MIB,
            threads: env.parse_at_least("THUMBNAIL_THREADS", cpus, 1)?,
            bucket: env.get("BUCKET_NAME"),
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
