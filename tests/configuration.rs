//! `docs/configuration.md` against the code: every environment variable
//! the code reads is documented there, and every variable documented there
//! is read somewhere, so the page cannot drift from the configuration
//! structs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Where the code reads settings.
const SOURCES: [&str; 7] = [
    "shared/src",
    "stages/thumbnailer/src",
    "stages/analyzer/src",
    "stages/embedder/src",
    "stages/migrator/src",
    "stages/collections/src",
    "stages/search/src",
];

/// Read by libraries, not by our code: the AWS SDK and `tracing`'s filter.
const READ_BY_LIBRARIES: [&str; 2] = ["AWS_ENDPOINT_URL", "RUST_LOG"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_variable(name: &str) -> bool {
    name.len() > 2 && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The quoted names that follow each of `openings` in `text`.
fn names_after(text: &str, openings: &[&str]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for opening in openings {
        for (at, _) in text.match_indices(opening) {
            let rest = &text[at + opening.len()..];
            if let Some(end) = rest.find('"')
                && is_variable(&rest[..end])
            {
                names.insert(rest[..end].to_owned());
            }
        }
    }
    names
}

/// Every variable the code reads: through `Env` (or a helper given the
/// `env` and the name), as a command-line fallback (`env = "…"`), or as an
/// API key's name.
fn read_by_the_code() -> BTreeSet<String> {
    let mut files = Vec::new();
    for dir in SOURCES {
        rust_files(&root().join(dir), &mut files);
    }
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        // Tests read made-up names; only the code outside them counts.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let openings = [
            ".get(\"",
            ".string_or(\"",
            ".parse_or(\"",
            ".parse_at_least(\"",
            ".require(\"",
            "env = \"",
            "key(\"",
            "(env, \"",
        ];
        names.extend(names_after(code, &openings));
    }
    names
}

/// Every variable in the first column of the page's tables.
fn documented() -> BTreeSet<String> {
    let page = std::fs::read_to_string(root().join("docs/configuration.md")).expect("docs/configuration.md exists");
    let mut names = BTreeSet::new();
    for line in page.lines().filter(|l| l.starts_with('|')) {
        let first = line.split('|').nth(1).unwrap_or_default();
        for (i, part) in first.split('`').enumerate() {
            if i % 2 == 1 && is_variable(part) {
                names.insert(part.to_owned());
            }
        }
    }
    names
}

#[test]
fn every_variable_read_is_documented_and_every_documented_one_is_read() {
    let read = read_by_the_code();
    let documented = documented();
    assert!(read.contains("ANALYZER_PROVIDER") && read.contains("ANTHROPIC_API_KEY"), "the scan finds names: {read:?}");
    let undocumented: Vec<&String> = read.difference(&documented).collect();
    assert!(undocumented.is_empty(), "read by the code but missing from docs/configuration.md: {undocumented:?}");
    let unread: Vec<&String> =
        documented.difference(&read).filter(|n| !READ_BY_LIBRARIES.contains(&n.as_str())).collect();
    assert!(unread.is_empty(), "documented in docs/configuration.md but read nowhere: {unread:?}");
}
