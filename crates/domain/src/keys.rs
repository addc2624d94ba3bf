//! Object keys: `{user_id}/{item_id}.{ext}` for originals and
//! `{user_id}/thumbnails/{filename}` for thumbnails, and the URL-decoding of
//! keys as S3 notifications carry them.

use percent_encoding::percent_decode_str;
use thiserror::Error;

/// Extensions the pipeline accepts, compared case-insensitively.
pub const ACCEPTED_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// The folder, right under the user's, that holds thumbnails.
pub const THUMBNAILS_DIR: &str = "thumbnails";

/// The S3 object tag every thumbnail carries: the bucket's lifecycle rule
/// expires thumbnails by it (a prefix rule cannot reach `{user}/thumbnails/`).
pub const THUMBNAIL_TAG: (&str, &str) = ("collections:kind", "thumbnail");

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key {0:?} is not URL-encoded UTF-8")]
    Encoding(String),
    #[error("key {0:?} has no user folder (expected {{user_id}}/{{item_id}}.{{ext}})")]
    NoUser(String),
    #[error("key {0:?} has an empty, '.' or '..' path segment")]
    BadSegment(String),
    #[error("key {0:?} holds a control character")]
    ControlCharacter(String),
    #[error("invalid user id {0:?}: it must be one path segment of 1 to 128 bytes without control characters")]
    BadUser(String),
    #[error("key {0:?} has no file extension")]
    NoExtension(String),
    #[error("key {key:?} has extension {extension:?}; accepted: jpg, jpeg, png")]
    UnsupportedExtension { key: String, extension: String },
    #[error("key {0:?} is a thumbnail")]
    Thumbnail(String),
}

impl KeyError {
    /// Keys the pipeline passes over on purpose (not images, thumbnails), as
    /// opposed to keys that are malformed.
    pub fn is_skip(&self) -> bool {
        matches!(self, Self::UnsupportedExtension { .. } | Self::Thumbnail(_))
    }
}

/// Decodes a key as S3 event notifications carry it: URL-encoded, with `+`
/// for a space.
pub fn decode_notification_key(raw: &str) -> Result<String, KeyError> {
    let plus_as_space = raw.replace('+', " ");
    percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| KeyError::Encoding(raw.to_owned()))
}

/// Whether a key lies under a `thumbnails` folder (below the user's folder),
/// as the EventBridge rule's `*/thumbnails/*` exclusion does.
pub fn is_thumbnail_key(key: &str) -> bool {
    let mut segments = key.split('/');
    segments.next();
    let mut folders: Vec<&str> = segments.collect();
    folders.pop(); // the file name itself
    folders.contains(&THUMBNAILS_DIR)
}

/// What the hash that names an item starts with, so that no other hash of
/// the same key is mistaken for an item id.
const ITEM_ID_DOMAIN: &str = "collections/item/";

/// The database id of the item an original's key makes: a UUIDv8 of the
/// SHA-256 of the whole key, so `u/a.jpg` and `u/a.png` are two items and no
/// user's key names another user's item. Always 36 characters, whatever the
/// key's length, so it can be a Kinesis partition key. The SQL function
/// `collections_item_id(key)` computes the same id (it moved the rows made
/// under the first rule, see `migrations/`).
pub fn item_uuid(key: &str) -> uuid::Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new().chain_update(ITEM_ID_DOMAIN).chain_update(key).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Checks that `user` can be the first folder of a key.
pub fn check_user_id(user: &str) -> Result<(), KeyError> {
    let plain = !(user.is_empty() || user == "." || user == ".." || user.contains('/'));
    if plain && user.len() <= 128 && !user.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(KeyError::BadUser(user.to_owned()))
    }
}

/// A valid key of an original image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageKey {
    key: String,
    user_end: usize,
    stem_end: usize,
}

impl ImageKey {
    /// Parses an (already decoded) object key.
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        let Some(user_end) = key.find('/') else {
            return Err(KeyError::NoUser(key.to_owned()));
        };
        if key.chars().any(char::is_control) {
            return Err(KeyError::ControlCharacter(key.to_owned()));
        }
        if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Err(if user_end == 0 {
                KeyError::NoUser(key.to_owned())
            } else {
                KeyError::BadSegment(key.to_owned())
            });
        }
        if is_thumbnail_key(key) {
            return Err(KeyError::Thumbnail(key.to_owned()));
        }
        let file_start = key.rfind('/').map_or(0, |i| i + 1);
        let file = &key[file_start..];
        let Some(dot) = file.rfind('.').filter(|&d| d > 0) else {
            return Err(KeyError::NoExtension(key.to_owned()));
        };
        let extension = &file[dot + 1..];
        if !ACCEPTED_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(extension)) {
            return Err(KeyError::UnsupportedExtension { key: key.to_owned(), extension: extension.to_owned() });
        }
        Ok(Self { key: key.to_owned(), user_end, stem_end: file_start + dot })
    }

    pub fn as_str(&self) -> &str {
        &self.key
    }

    pub fn user_id(&self) -> &str {
        &self.key[..self.user_end]
    }

    /// The key between the user folder and the extension, e.g. `item123` or
    /// `trips/beach` for a nested key.
    pub fn item_id(&self) -> &str {
        &self.key[self.user_end + 1..self.stem_end]
    }

    /// The key without its user folder, e.g. `item123.jpg`.
    pub fn filename(&self) -> &str {
        &self.key[self.user_end + 1..]
    }

    /// The extension, lower-cased (`jpg`, `jpeg` or `png`).
    pub fn extension(&self) -> String {
        self.key[self.stem_end + 1..].to_ascii_lowercase()
    }

    /// `{user_id}/thumbnails/{filename}`: the same file name, so the same extension.
    pub fn thumbnail_key(&self) -> String {
        format!("{}/{THUMBNAILS_DIR}/{}", self.user_id(), self.filename())
    }

    /// The MIME type the extension announces.
    pub fn mime_type(&self) -> &'static str {
        if self.extension() == "png" { "image/png" } else { "image/jpeg" }
    }

    /// The database id of this key's item (see [`item_uuid`]).
    pub fn item_uuid(&self) -> uuid::Uuid {
        item_uuid(&self.key)
    }
}

impl std::fmt::Display for ImageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_key() {
        let key = ImageKey::parse("user456/item123.jpg").unwrap();
        assert_eq!(key.user_id(), "user456");
        assert_eq!(key.item_id(), "item123");
        assert_eq!(key.filename(), "item123.jpg");
        assert_eq!(key.extension(), "jpg");
        assert_eq!(key.thumbnail_key(), "user456/thumbnails/item123.jpg");
        assert_eq!(key.mime_type(), "image/jpeg");
    }

    #[test]
    fn extensions_are_case_insensitive_and_keep_their_case_in_keys() {
        let key = ImageKey::parse("u/Photo.JPEG").unwrap();
        assert_eq!(key.extension(), "jpeg");
        assert_eq!(key.thumbnail_key(), "u/thumbnails/Photo.JPEG");
        assert_eq!(ImageKey::parse("u/a.PnG").unwrap().mime_type(), "image/png");
    }

    #[test]
    fn control_characters_are_refused_and_shown_escaped() {
        let err = ImageKey::parse("u/a\u{1b}]0;x\u{7}\u{1b}[2Jb.jpg").unwrap_err();
        assert!(matches!(err, KeyError::ControlCharacter(_)));
        let said = err.to_string();
        assert!(!said.chars().any(char::is_control), "the reason prints no escape: {said:?}");
        assert!(said.contains(r"\u{1b}"), "{said}");
        assert!(matches!(ImageKey::parse("u/a\0.jpg"), Err(KeyError::ControlCharacter(_))));
        assert!(matches!(ImageKey::parse("u/line\nbreak.jpg"), Err(KeyError::ControlCharacter(_))));
    }

    #[test]
    fn decodes_notification_keys_with_plus_as_space() {
        assert_eq!(decode_notification_key("user1/my+holiday+photo.jpg").unwrap(), "user1/my holiday photo.jpg");
        assert_eq!(
            decode_notification_key("user1/a%2Bb.jpg").unwrap(),
            "user1/a+b.jpg",
            "an encoded plus stays a plus"
        );
        assert_eq!(decode_notification_key("u/caf%C3%A9+%C3%A0+Paris.png").unwrap(), "u/café à Paris.png");
        assert!(matches!(decode_notification_key("u/%FF.jpg"), Err(KeyError::Encoding(_))));
    }

    #[test]
    fn odd_but_valid_keys() {
        let spaced = ImageKey::parse("user 1/my photo.jpg").unwrap();
        assert_eq!(spaced.user_id(), "user 1");
        assert_eq!(spaced.item_id(), "my photo");

        let unicode = ImageKey::parse("ユーザー/写真.png").unwrap();
        assert_eq!(unicode.item_id(), "写真");
        assert_eq!(unicode.thumbnail_key(), "ユーザー/thumbnails/写真.png");

        let nested = ImageKey::parse("u/2024/trip/beach.v2.jpg").unwrap();
        assert_eq!(nested.item_id(), "2024/trip/beach.v2");
        assert_eq!(nested.thumbnail_key(), "u/thumbnails/2024/trip/beach.v2.jpg");
    }

    #[test]
    fn rejects_malformed_keys_with_a_reason() {
        assert_eq!(ImageKey::parse(""), Err(KeyError::Empty));
        assert!(matches!(ImageKey::parse("photo.jpg"), Err(KeyError::NoUser(_))));
        assert!(matches!(ImageKey::parse("/photo.jpg"), Err(KeyError::NoUser(_))));
        assert!(matches!(ImageKey::parse("u/README"), Err(KeyError::NoExtension(_))));
        assert!(matches!(ImageKey::parse("u/.jpg"), Err(KeyError::NoExtension(_))));
        assert!(matches!(ImageKey::parse("u/photo."), Err(KeyError::UnsupportedExtension { .. })));
        assert!(matches!(ImageKey::parse("u/../etc/passwd.jpg"), Err(KeyError::BadSegment(_))));
        assert!(matches!(ImageKey::parse("u/./a.jpg"), Err(KeyError::BadSegment(_))));
        assert!(matches!(ImageKey::parse("u//a.jpg"), Err(KeyError::BadSegment(_))));
        let err = ImageKey::parse("u/notes.txt").unwrap_err();
        assert!(err.is_skip());
        assert_eq!(err.to_string(), "key \"u/notes.txt\" has extension \"txt\"; accepted: jpg, jpeg, png");
    }

    #[test]
    fn thumbnails_are_skipped() {
        assert!(is_thumbnail_key("u/thumbnails/a.jpg"));
        assert!(is_thumbnail_key("u/thumbnails/2024/a.jpg"));
        assert!(is_thumbnail_key("u/2024/thumbnails/a.jpg"), "as the rule's */thumbnails/* does");
        assert!(!is_thumbnail_key("thumbnails/a.jpg"), "a user may be called thumbnails");
        assert!(!is_thumbnail_key("u/thumbnails.jpg"));
        let err = ImageKey::parse("u/thumbnails/a.jpg").unwrap_err();
        assert!(matches!(err, KeyError::Thumbnail(_)) && err.is_skip());
        let thumb = ImageKey::parse("u/a.jpg").unwrap().thumbnail_key();
        assert!(ImageKey::parse(&thumb).is_err(), "a thumbnail key never parses as an original: no loops");
    }

    #[test]
    fn every_key_names_its_own_item_with_a_short_stable_id() {
        assert_eq!(item_uuid("u/item123.jpg"), item_uuid("u/item123.jpg"));
        assert_ne!(item_uuid("u/a.jpg"), item_uuid("u/a.png"), "the extension tells two items apart");
        let stem = "0b7e5c1a-3f55-4d6e-9a0c-55b1f4f1c2d3";
        let (mine, theirs) = (item_uuid(&format!("u1/{stem}.jpg")), item_uuid(&format!("u2/{stem}.jpg")));
        assert_ne!(mine, theirs, "a UUID name is scoped to its user");
        assert_ne!(mine.to_string(), stem);
        let long = format!("u/{}.jpg", "x".repeat(1000));
        assert_eq!(item_uuid(&long).to_string().len(), 36);
        assert_eq!(item_uuid(&long).get_version_num(), 8);
    }
}
