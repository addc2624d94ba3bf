//! Text as its destination takes it: what a provider or an object sends is
//! cleaned before it reaches a `text` or `jsonb` column (so one odd
//! character fails nothing), and text percent-encoded for URLs and S3 tags.

use serde_json::Value;

/// Whether PostgreSQL (or a reader of a one-line reason) has no use for
/// `c`: NUL, which neither `text` nor `jsonb` accepts, and the other
/// control characters except tab and line breaks.
fn is_unwanted(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// `text` without NUL and other control characters (tabs and line breaks kept).
pub fn clean(text: &str) -> String {
    if text.chars().any(is_unwanted) { text.chars().filter(|&c| !is_unwanted(c)).collect() } else { text.to_owned() }
}

/// `text` for a terminal: every control character (escape sequences, line
/// breaks, NUL) written as Rust writes it in a debug string (`\u{1b}`,
/// `\n`), so a key or a reason can neither move the cursor nor retitle the
/// window, nor break a one-line listing.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect()
    } else {
        text.into()
    }
}

/// Cleans, in place, every string and object key of a JSON value; returns
/// how many strings changed.
pub fn clean_json(value: &mut Value) -> usize {
    match value {
        Value::String(s) if s.chars().any(is_unwanted) => {
            *s = clean(s);
            1
        }
        Value::Array(items) => items.iter_mut().map(clean_json).sum(),
        Value::Object(map) => {
            let mut changed = 0;
            if map.keys().any(|k| k.chars().any(is_unwanted)) {
                let entries = std::mem::take(map);
                for (key, v) in entries {
                    let cleaned = clean(&key);
                    changed += usize::from(cleaned != key);
                    map.insert(cleaned, v);
                }
            }
            changed + map.values_mut().map(clean_json).sum::<usize>()
        }
        _ => 0,
    }
}

/// Replaces `\uD800`–`\uDFFF` escapes that are not a high surrogate
/// followed by a low one with `\uFFFD`, so JSON that a lenient producer
/// wrote with an unpaired surrogate (which Rust strings, and PostgreSQL,
/// cannot hold) still parses. Text without such escapes comes back as it is.
pub fn replace_lone_surrogates(json: &str) -> std::borrow::Cow<'_, str> {
    let bytes = json.as_bytes();
    let surrogate_at = |i: usize| -> Option<u16> {
        let hex = json.get(i + 2..i + 6)?;
        (bytes.get(i) == Some(&b'\\') && bytes.get(i + 1) == Some(&b'u'))
            .then(|| u16::from_str_radix(hex, 16).ok())
            .flatten()
            .filter(|u| (0xD800..=0xDFFF).contains(u))
    };
    let mut out: Option<String> = None;
    let (mut i, mut copied) = (0, 0);
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        // An escaped backslash is not the start of an escape.
        if bytes.get(i + 1) == Some(&b'\\') {
            i += 2;
            continue;
        }
        match surrogate_at(i) {
            Some(0xD800..=0xDBFF) if surrogate_at(i + 6).is_some_and(|low| low >= 0xDC00) => i += 12,
            Some(_) => {
                let out = out.get_or_insert_with(|| String::with_capacity(json.len()));
                out.push_str(&json[copied..i]);
                out.push_str("\\uFFFD");
                i += 6;
                copied = i;
            }
            None => i += 2,
        }
    }
    match out {
        None => std::borrow::Cow::Borrowed(json),
        Some(mut out) => {
            out.push_str(&json[copied..]);
            std::borrow::Cow::Owned(out)
        }
    }
}

/// Every byte but ASCII letters and digits percent-encoded: safe in a URL's
/// user info and in S3's tag syntax.
pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_and_control_characters_go_tabs_and_newlines_stay() {
        assert_eq!(clean("a\0b\u{7}c\td\ne"), "abc\td\ne");
        assert_eq!(printable("a\u{1b}]0;x\u{7}b\nc"), r"a\u{1b}]0;x\u{7}b\nc");
        assert_eq!(printable("café.jpg"), "café.jpg");
        assert_eq!(clean("plain"), "plain");
    }

    #[test]
    fn every_string_and_key_of_a_json_value_is_cleaned() {
        let mut v = json!({"a\u{0}": ["x\u{0}y", {"b": "ok", "c": "\u{1b}[31mred"}], "n": 3});
        assert_eq!(clean_json(&mut v), 3);
        assert_eq!(v, json!({"a": ["xy", {"b": "ok", "c": "[31mred"}], "n": 3}));
    }

    #[test]
    fn lone_surrogates_become_replacement_characters_and_pairs_stay() {
        let text = r#"{"s": "a\ud800b", "pair": "\ud83d\ude00", "low": "\udc00", "esc": "\\ud800"}"#;
        let fixed = replace_lone_surrogates(text);
        let v: Value = serde_json::from_str(&fixed).expect("parses once fixed");
        assert_eq!(v["s"], "a\u{FFFD}b");
        assert_eq!(v["pair"], "😀");
        assert_eq!(v["low"], "\u{FFFD}");
        assert_eq!(v["esc"], "\\ud800", "an escaped backslash is text, not an escape");
        assert!(serde_json::from_str::<Value>(text).is_err(), "serde_json alone refuses it");
        assert!(matches!(replace_lone_surrogates(r#"{"ok": "\u00e9"}"#), std::borrow::Cow::Borrowed(_)));
    }
}
