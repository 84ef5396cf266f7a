//! The import rules of docs/architecture.md, checked on the source itself: each folder (or
//! top-level module) of `src/` may use only the modules its rule lists, so the pure decisions
//! never reach for I/O, the CRD types never depend on a decision, and no two folders import
//! each other. A new import across the rules fails here, naming the file and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Who may use whom (`crate::<module>`; `crate::Error` is everyone's). The controller, the
/// binary and the crate root may use anything, so they have no rule.
const RULES: &[(&str, &[&str])] = &[
    ("api", &[]),
    ("decide", &["api"]),
    ("timeouts", &[]),
    ("telemetry", &[]),
    ("gcp", &["timeouts"]),
    ("crdgen", &["api"]),
    ("runtime", &["api", "decide", "timeouts"]),
    ("source", &["api", "decide", "runtime", "gcp", "timeouts"]),
    (
        "sink",
        &[
            "api",
            "decide",
            "runtime",
            "source",
            "gcp",
            "telemetry",
            "timeouts",
        ],
    ),
    // `decide`: proposals replay the controller's own stall decision.
    ("analyze", &["api", "decide", "gcp", "sink"]),
];

/// Modules that are not folders of their own and may be used by anyone.
const SHARED: &[&str] = &["Error", "error"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crate modules `source` names as `crate::<module>`, with their line numbers; comments
/// are skipped, and so is a file's test module (from its `#[cfg(test)]` on), whose fixtures
/// may borrow from anywhere.
fn crate_uses(source: &str) -> Vec<(usize, String)> {
    let mut uses = Vec::new();
    let code_lines = source.lines().take_while(|l| l.trim() != "#[cfg(test)]");
    for (n, line) in code_lines.enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let module: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            uses.push((n + 1, module));
        }
        if code.contains("super::super") {
            uses.push((n + 1, "super::super".to_owned()));
        }
    }
    uses
}

/// The module a file of `src/` belongs to: its folder, or its own name at the top level.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap();
    let first = first.as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

fn violations(src: &Path) -> Vec<String> {
    let rules: BTreeMap<&str, &[&str]> = RULES.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let module = module_of(src, &file);
        let Some(allowed) = rules.get(module.as_str()) else {
            continue;
        };
        let source = std::fs::read_to_string(&file).unwrap();
        for (line, used) in crate_uses(&source) {
            let ok = used == module
                || SHARED.contains(&used.as_str())
                || allowed.contains(&used.as_str());
            if !ok {
                found.push(format!(
                    "{}:{line}: {module} may not use crate::{used} (allowed: {allowed:?})",
                    file.display()
                ));
            }
        }
    }
    found
}

#[test]
fn every_folder_imports_only_what_its_rule_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "forbidden imports:\n{}", found.join("\n"));
}

#[test]
fn the_rules_have_no_cycle() {
    // Depth-first over the rules: a module met again on the current path is a cycle.
    fn visit<'a>(
        module: &'a str,
        rules: &BTreeMap<&'a str, &'a [&'a str]>,
        path: &mut Vec<&'a str>,
    ) {
        assert!(
            !path.contains(&module),
            "import cycle: {path:?} -> {module}"
        );
        path.push(module);
        for used in rules.get(module).copied().unwrap_or_default() {
            visit(used, rules, path);
        }
        path.pop();
    }
    let rules: BTreeMap<&str, &[&str]> = RULES.iter().copied().collect();
    for module in rules.keys() {
        visit(module, &rules, &mut Vec::new());
    }
}

#[test]
fn a_forbidden_import_is_found_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let decide = dir.path().join("decide");
    std::fs::create_dir(&decide).unwrap();
    std::fs::write(
        decide.join("bad.rs"),
        "use crate::api::HealingEvent;\n// crate::controller in a comment is fine\nuse crate::controller::Context;\n#[cfg(test)]\nmod tests {\n    use crate::source::report::observe;\n}\n",
    )
    .unwrap();
    let found = violations(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].ends_with("bad.rs:3: decide may not use crate::controller (allowed: [\"api\"])")
    );
}
