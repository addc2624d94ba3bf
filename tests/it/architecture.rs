//! The crates' dependencies flow one way, checked against `cargo metadata`:
//! each crate may depend only on the crates below it; no stage on another
//! stage or on the command line's tooling; no Lambda compiles the SQS or
//! Kinesis clients (only `collections` needs them), and the search Lambda
//! no image decoder. The crate map at the top of ARCHITECTURE.md is made
//! from the same metadata (`COLLECTIONS_BLESS=1` writes it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The functions deployed on Lambda.
const LAMBDAS: [&str; 5] = ["thumbnailer", "analyzer", "embedder", "search", "migrator"];

/// What a Lambda crate may depend on in the workspace.
const BELOW_THE_STAGES: [&str; 7] = ["domain", "remote", "store", "vision", "embedding", "runtime", "aws"];

/// Each workspace crate, in the map's order (bottom up), with the crates it
/// may depend on; `None`: any (the command line, tests and benchmarks).
fn allowed() -> Vec<(&'static str, Option<Vec<&'static str>>)> {
    let below = |names: &[&'static str]| Some(names.to_vec());
    let mut rules = vec![
        ("domain", below(&[])),
        ("remote", below(&["domain"])),
        ("store", below(&["domain"])),
        ("vision", below(&["domain", "remote"])),
        ("embedding", below(&["domain", "remote"])),
        ("runtime", below(&["domain", "store"])),
        ("aws", below(&["domain", "remote", "store", "runtime"])),
        ("ops", below(&["domain", "remote", "store", "runtime", "aws"])),
    ];
    rules.extend(LAMBDAS.iter().map(|name| (*name, below(&BELOW_THE_STAGES))));
    rules.push(("collections", None));
    rules.push(("test-support", None));
    rules.push(("collections-tests", None));
    rules.push(("collections-benches", None));
    rules
}

/// Crates no Lambda may compile, and, per Lambda, more of them.
const NEVER_IN_A_LAMBDA: [&str; 3] = ["aws-sdk-sqs", "aws-sdk-kinesis", "indicatif"];
const NOT_IN: [(&str, &str); 1] = [("search", "image")];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_owned()
}

struct Metadata {
    /// Workspace crates: name → (folder, description).
    members: BTreeMap<String, (String, String)>,
    /// Package name → its dependencies' names: (normal and build, dev).
    deps: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
}

fn metadata() -> Metadata {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata answers JSON");
    let names: BTreeMap<&str, &str> = json["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("an id"), p["name"].as_str().expect("a name")))
        .collect();
    let workspace: BTreeSet<&str> =
        json["workspace_members"].as_array().expect("members").iter().filter_map(Value::as_str).collect();
    let mut members = BTreeMap::new();
    for p in json["packages"].as_array().expect("packages") {
        if workspace.contains(p["id"].as_str().expect("an id")) {
            let manifest = Path::new(p["manifest_path"].as_str().expect("a manifest path"));
            let folder = manifest.parent().expect("a folder").strip_prefix(root()).expect("inside the workspace");
            let description = p["description"].as_str().unwrap_or_default();
            members.insert(
                p["name"].as_str().expect("a name").to_owned(),
                (folder.display().to_string(), description.to_owned()),
            );
        }
    }
    let mut deps = BTreeMap::new();
    for node in json["resolve"]["nodes"].as_array().expect("a resolved graph") {
        let (mut compiled, mut dev) = (BTreeSet::new(), BTreeSet::new());
        for dep in node["deps"].as_array().expect("deps") {
            let name = names[dep["pkg"].as_str().expect("a package")].to_owned();
            for kind in dep["dep_kinds"].as_array().expect("dep kinds") {
                match kind["kind"].as_str() {
                    Some("dev") => dev.insert(name.clone()),
                    _ => compiled.insert(name.clone()),
                };
            }
        }
        deps.insert(names[node["id"].as_str().expect("an id")].to_owned(), (compiled, dev));
    }
    Metadata { members, deps }
}

impl Metadata {
    /// `package`'s dependencies inside the workspace, of every kind.
    fn workspace_deps(&self, package: &str) -> BTreeSet<&str> {
        let (compiled, dev) = &self.deps[package];
        compiled.iter().chain(dev).filter(|d| self.members.contains_key(*d)).map(String::as_str).collect()
    }

    /// Everything `package` compiles into its binaries (not its tests).
    fn compiled_closure(&self, package: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![package.to_owned()];
        while let Some(next) = todo.pop() {
            for dep in self.deps.get(&next).map(|(compiled, _)| compiled.clone()).unwrap_or_default() {
                if seen.insert(dep.clone()) {
                    todo.push(dep);
                }
            }
        }
        seen
    }
}

#[test]
fn every_dependency_edge_points_down() {
    let meta = metadata();
    let rules = allowed();
    let known: BTreeSet<&str> = rules.iter().map(|(name, _)| *name).collect();
    let members: BTreeSet<&str> = meta.members.keys().map(String::as_str).collect();
    assert_eq!(members, known, "every workspace crate has a place in the layering");
    let mut wrong = Vec::new();
    for (package, may) in &rules {
        let Some(may) = may else { continue };
        for dep in meta.workspace_deps(package) {
            if !may.contains(&dep) {
                wrong.push(format!("{package} → {dep}"));
            }
        }
    }
    assert!(wrong.is_empty(), "dependencies that point up or sideways: {wrong:?}");
}

#[test]
fn no_lambda_compiles_the_command_lines_tooling() {
    let meta = metadata();
    for lambda in LAMBDAS {
        let compiled = meta.compiled_closure(lambda);
        let extra = NOT_IN.iter().filter(|(l, _)| *l == lambda).map(|(_, c)| *c);
        for crate_name in NEVER_IN_A_LAMBDA.into_iter().chain(extra) {
            assert!(!compiled.contains(crate_name), "the {lambda} Lambda compiles {crate_name}");
        }
    }
    assert!(meta.compiled_closure("collections").contains("aws-sdk-sqs"), "the check sees transitive crates");
}

const BEGIN: &str = "<!-- crate-map: generated from cargo metadata by tests/it/architecture.rs -->";
const END: &str = "<!-- /crate-map -->";

/// The map: each crate, its folder, what it is for, and what it depends on
/// in the workspace (tests apart), bottom up.
fn crate_map(meta: &Metadata) -> String {
    let mut out = String::from("\n| crate | folder | what it answers | depends on |\n|---|---|---|---|\n");
    for (name, _) in allowed() {
        let (folder, description) = &meta.members[name];
        let (compiled, _) = &meta.deps[name];
        let uses: Vec<&str> = compiled.iter().filter(|d| meta.members.contains_key(*d)).map(String::as_str).collect();
        let uses = if uses.is_empty() { "—".to_owned() } else { uses.join(", ") };
        out.push_str(&format!("| `{name}` | `{folder}/` | {description} | {uses} |\n"));
    }
    out.push('\n');
    out
}

#[test]
fn the_architecture_page_opens_with_the_crate_map_as_it_is() {
    let meta = metadata();
    let path = root().join("ARCHITECTURE.md");
    let page = std::fs::read_to_string(&path).expect("ARCHITECTURE.md exists");
    let (Some(begin), Some(end)) = (page.find(BEGIN), page.find(END)) else {
        panic!("ARCHITECTURE.md has no {BEGIN} … {END} block");
    };
    let wanted = crate_map(&meta);
    if page[begin + BEGIN.len()..end] != wanted && std::env::var_os("COLLECTIONS_BLESS").is_some() {
        std::fs::write(&path, format!("{}{BEGIN}{wanted}{}", &page[..begin], &page[end..])).expect("writing it");
        return;
    }
    assert_eq!(&page[begin + BEGIN.len()..end], wanted, "run with COLLECTIONS_BLESS=1 to write it");
}
