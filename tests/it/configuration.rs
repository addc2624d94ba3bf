//! `docs/configuration.md` is generated from the settings the code
//! declares (`domain::settings::Setting`: the name, the default the code
//! reads, the meaning), so a default is written once. This test fails when
//! the page differs from what the declarations make (run it with
//! `COLLECTIONS_BLESS=1` to write the page), when a name is declared twice,
//! or when code reads a variable by a literal name that is not declared.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use domain::settings::{Setting, Unset};

/// The declared settings, in the page's order, by what they configure.
fn groups() -> Vec<(&'static str, Vec<Setting>)> {
    let local = vec![
        runtime::storage::BUCKET_NAME,
        collections::components::DATA_DIR,
        collections::components::BATCH_SIZE,
        collections::components::BATCH_WINDOW_MS,
        collections::commands::backfill::UPLOADS_STREAM_NAME,
        collections::stats::PRICES,
    ];
    let analysis = [vision::settings::SETTINGS.to_vec(), analyzer::config::settings()].concat();
    let embeddings = [embedding::settings::SETTINGS.to_vec(), embedder::config::settings()].concat();
    let aws = [aws::SETTINGS, search::config::SETTINGS, migrator::SETTINGS].concat();
    vec![
        ("The database", store::config::SETTINGS.to_vec()),
        ("The bucket and the local mode", local),
        ("Thumbnails", thumbnailer::config::SETTINGS.to_vec()),
        ("Analysis", analysis),
        ("Embeddings", embeddings),
        ("Provider keys and addresses", remote::SETTINGS.to_vec()),
        ("On AWS", aws),
        ("Logs", vec![runtime::telemetry::RUST_LOG]),
    ]
}

const BEGIN: &str = "<!-- settings: generated from the code's declarations by tests/it/configuration.rs -->";
const END: &str = "<!-- /settings -->";

/// The tables the declarations make.
fn rendered() -> String {
    let mut out = String::new();
    for (title, settings) in groups() {
        out.push_str(&format!("\n### {title}\n\n| variable | default | meaning |\n|---|---|---|\n"));
        for s in settings {
            let default = match s.unset {
                Unset::Default(value) if value.starts_with('`') || value.contains(' ') => value.to_owned(),
                Unset::Default(value) => format!("`{value}`"),
                Unset::Absent(text) => text.to_owned(),
            };
            out.push_str(&format!("| `{}` | {default} | {} |\n", s.name, s.meaning));
        }
    }
    out.push('\n');
    out
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_owned()
}

#[test]
fn the_configuration_page_is_what_the_declarations_make() {
    let path = root().join("docs/configuration.md");
    let page = std::fs::read_to_string(&path).expect("docs/configuration.md exists");
    let (Some(begin), Some(end)) = (page.find(BEGIN), page.find(END)) else {
        panic!("docs/configuration.md has no {BEGIN} … {END} block");
    };
    let current = &page[begin + BEGIN.len()..end];
    let wanted = rendered();
    if current != wanted && std::env::var_os("COLLECTIONS_BLESS").is_some() {
        let written = format!("{}{BEGIN}{wanted}{}", &page[..begin], &page[end..]);
        std::fs::write(&path, written).expect("writing docs/configuration.md");
        return;
    }
    assert!(
        current == wanted,
        "docs/configuration.md differs from the settings the code declares; run this test with \
         COLLECTIONS_BLESS=1 to write it. Wanted:\n{wanted}"
    );
}

#[test]
fn each_setting_is_declared_once() {
    let mut seen = BTreeSet::new();
    for (_, settings) in groups() {
        for s in settings {
            assert!(seen.insert(s.name), "{} is declared twice", s.name);
        }
    }
}

/// Where the code reads settings.
const SOURCES: [&str; 4] = ["crates", "stages", "cli/src", "benches"];

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

/// Names read by a literal (`env.get("X")`, `std::env::var("X")`, clap's
/// `env = "X"`) anywhere outside tests.
fn read_by_literal() -> BTreeSet<String> {
    let mut files = Vec::new();
    for dir in SOURCES {
        rust_files(&root().join(dir), &mut files);
    }
    let mut names = BTreeSet::new();
    for file in files.iter().filter(|f| !f.starts_with(root().join("crates/test-support"))) {
        let text = std::fs::read_to_string(file).expect("a readable source file");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for opening in [".get(\"", "env::var(\"", "env::var_os(\"", "env = \""] {
            for (at, _) in code.match_indices(opening) {
                let rest = &code[at + opening.len()..];
                if let Some(end) = rest.find('"')
                    && is_variable(&rest[..end])
                {
                    names.insert(rest[..end].to_owned());
                }
            }
        }
    }
    names
}

#[test]
fn no_variable_is_read_without_a_declaration() {
    let declared: BTreeSet<&str> = groups().into_iter().flat_map(|(_, s)| s).map(|s| s.name).collect();
    let read = read_by_literal();
    assert!(read.contains("DATABASE_URL"), "the scan finds names: {read:?}");
    let undeclared: Vec<&String> = read.iter().filter(|name| !declared.contains(name.as_str())).collect();
    assert!(undeclared.is_empty(), "read by name but declared as no Setting: {undeclared:?}");
}
