//! The layers of `src/` (README "Layout") import only downwards. Read from the source text:
//! a `use` or path that crosses a forbidden line fails here, with the file and the line.
//! Test modules (`#[cfg(test)]` and below) may use anything.

use std::path::{Path, PathBuf};

/// (layer folder or file, what its non-test code must not name, why)
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "core",
        &[
            "tokio",
            "reqwest",
            "hyper",
            "axum::serve",
            "axum::Router",
            "axum::routing",
            "axum::extract",
            "axum::response",
            "kube::Client",
            "kube::Api",
            "kube::runtime",
            "kube::api",
            "moka",
            "crate::keys",
            "crate::fetch",
            "crate::identity",
            "crate::metrics",
            "crate::source",
            "crate::serve",
            "crate::controller",
            "crate::cmd",
            "crate::devissuer",
        ],
        "the core decides; it does no I/O and knows no adapter",
    ),
    (
        "metrics.rs",
        &[
            "tokio",
            "reqwest",
            "crate::keys",
            "crate::fetch",
            "crate::identity",
            "crate::source",
            "crate::serve",
            "crate::controller",
            "crate::cmd",
        ],
        "metrics are recorded into by every layer and depend on none",
    ),
    (
        "fetch",
        &[
            "crate::keys",
            "crate::source",
            "crate::serve",
            "crate::controller",
            "crate::cmd",
        ],
        "outbound HTTP knows nothing of who asks",
    ),
    (
        "keys",
        &[
            "crate::identity",
            "crate::source",
            "crate::serve",
            "crate::controller",
            "crate::cmd",
        ],
        "caches know nothing of the server",
    ),
    (
        "identity",
        &[
            "crate::keys",
            "crate::source",
            "crate::serve",
            "crate::controller",
            "crate::cmd",
        ],
        "caches know nothing of the server",
    ),
    (
        "source",
        &[
            "crate::keys",
            "crate::identity",
            "crate::serve",
            "crate::controller",
            "crate::cmd",
        ],
        "a source hands over policy sets; it does not reach into the server",
    ),
    (
        "serve",
        &["crate::controller", "crate::cmd", "kube::"],
        "serving knows nothing of the leader-only status writer",
    ),
    (
        "controller",
        &["crate::cmd"],
        "commands wire the layers; nothing depends on them",
    ),
];

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        out.extend(rust_files(&entry.unwrap().path()));
    }
    out.retain(|p| p.extension().is_some_and(|e| e == "rs"));
    out
}

/// The code of a file above its test module, without comments.
fn non_test_code(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| !l.trim_start().starts_with("#[cfg(test)]"))
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or_default()))
        .collect()
}

#[test]
fn layers_import_only_downwards() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (layer, forbidden, why) in RULES {
        let files = rust_files(&src.join(layer));
        assert!(!files.is_empty(), "no files in layer {layer}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in non_test_code(&text) {
                for f in *forbidden {
                    if line.contains(f) {
                        violations.push(format!(
                            "{}:{n}: `{f}` in layer {layer} ({why}): {}",
                            file.strip_prefix(&src).unwrap().display(),
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_check_sees_a_violation() {
    // The scanner itself: a forbidden name in code is found, in a comment or test it is not.
    let text = "use tokio::spawn;\n// tokio in a comment\n#[cfg(test)]\nmod t { use tokio; }\n";
    let hits: Vec<_> = non_test_code(text)
        .into_iter()
        .filter(|(_, l)| l.contains("tokio"))
        .collect();
    assert_eq!(hits, vec![(1, "use tokio::spawn;")]);
}
