//! The layers of `src/` (docs/architecture.md) import only downwards. Read from the source
//! text: every path the non-test code names — in a `use` (grouped, nested, over several
//! lines, relative through `super`), in an expression, a type, an attribute or a macro call
//! — is resolved to where it points, and one that crosses a forbidden line fails here with
//! the file, the line, the rule and why. Test code (`#[cfg(test)]` items, and files declared
//! by `#[cfg(test)] mod x;`) may use anything.

use std::path::{Path, PathBuf};

/// (layer folder or file, what its non-test code must not name, why)
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "api",
        &[
            "tokio",
            "reqwest",
            "hyper",
            "hyper_util",
            "axum",
            "tower",
            "tonic",
            "moka",
            "notify",
            "crate::core",
            "crate::metrics",
            "crate::fetch",
            "crate::keys",
            "crate::identity",
            "crate::source",
            "crate::serve",
            "crate::controller",
            "crate::cmd",
            "crate::devissuer",
        ],
        "the API is the resource as written and read back: plain data with its schema, below every other layer",
    ),
    (
        "core",
        &[
            "tokio",
            "reqwest",
            "hyper",
            "hyper_util",
            "tower",
            "tonic",
            "axum::serve",
            "axum::Router",
            "axum::routing",
            "axum::extract",
            "axum::response",
            "kube",
            "kube_lease_manager",
            "k8s_openapi",
            "schemars",
            "moka",
            "notify",
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
        "the core decides; it does no I/O, knows no adapter and compiles from the API's types without knowing Kubernetes",
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
        &["crate::controller", "crate::cmd", "kube"],
        "serving knows nothing of the leader-only status writer",
    ),
    (
        "controller",
        &["crate::cmd"],
        "commands wire the layers; nothing depends on them",
    ),
];

/// Entries of `src/` with no row in [`RULES`], and why none is needed.
const UNRULED: &[(&str, &str)] = &[
    ("lib.rs", "the crate root only declares the layers"),
    ("main.rs", "the binary's entry point calls into cmd"),
    ("cmd", "the top: commands wire every layer"),
    (
        "devissuer",
        "a demo and test issuer, started by cmd and used by tests",
    ),
];

#[test]
fn layers_import_only_downwards() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let test_only = test_only_files(&src);
    let mut violations = Vec::new();
    for (layer, forbidden, why) in RULES {
        let files = rust_files(&src.join(layer));
        assert!(!files.is_empty(), "no files in layer {layer}");
        for file in files {
            if test_only.iter().any(|t| file.starts_with(t)) {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let scan = scan(&text, &module_of(&src, &file));
            for (line, path) in &scan.paths {
                for f in *forbidden {
                    if names(path, f) {
                        violations.push(format!(
                            "{}:{line}: `{}` names `{f}`, which layer {layer} must not ({why})",
                            file.strip_prefix(&src).unwrap().display(),
                            path.join("::"),
                        ));
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn every_layer_has_a_rule() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let ruled = RULES.iter().any(|(layer, ..)| *layer == name);
        let unruled = UNRULED.iter().any(|(n, _)| *n == name);
        if !ruled && !unruled {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "src/ entries without a layer rule in tests/layers.rs: {missing:?}"
    );
}

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

/// The module path of a file: `src/core/index/update.rs` is `crate::core::index::update`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let mut module = vec!["crate".to_owned()];
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    for part in rel.iter() {
        module.push(part.to_str().unwrap().to_owned());
    }
    if matches!(
        module.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        module.pop();
    }
    module
}

/// Files and folders only compiled for tests: the targets of `#[cfg(test)] mod x;`.
fn test_only_files(src: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for file in rust_files(src) {
        let text = std::fs::read_to_string(&file).unwrap();
        let stem = file.file_stem().unwrap().to_str().unwrap();
        // A module's children live beside `mod.rs`/`lib.rs`, or in a folder named after it.
        let dir = if matches!(stem, "mod" | "lib" | "main") {
            file.parent().unwrap().to_owned()
        } else {
            file.with_extension("")
        };
        for name in scan(&text, &[]).test_modules {
            out.push(dir.join(format!("{name}.rs")));
            out.push(dir.join(&name));
        }
    }
    out
}

/// Whether `path` is `forbidden` or inside it, compared by whole segments (`tokio` names
/// `tokio::spawn`, not `tokio_stream`).
fn names(path: &[String], forbidden: &str) -> bool {
    let want: Vec<&str> = forbidden.split("::").filter(|s| !s.is_empty()).collect();
    path.len() >= want.len() && path.iter().zip(&want).all(|(a, b)| a == b)
}

/// What the non-test code of one file names.
#[derive(Debug, Default)]
struct Scan {
    /// (line, path), `crate`-relative paths resolved from `self`/`super`.
    paths: Vec<(usize, Vec<String>)>,
    /// Modules declared `#[cfg(test)] mod name;`.
    test_modules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

/// The file's tokens with their lines, without comments and literals: only code remains.
fn tokens(text: &str) -> Vec<(usize, Tok)> {
    let c: Vec<char> = text.chars().collect();
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    let ident_char = |ch: char| ch.is_alphanumeric() || ch == '_';
    // Skips a string body from `i` (just past the opening quote), honouring escapes unless
    // raw; returns the index past the closing quote and `hashes` hashes.
    let skip_string = |mut i: usize, raw: bool, hashes: usize, line: &mut usize| {
        while i < c.len() {
            match c[i] {
                '\n' => *line += 1,
                '\\' if !raw => {
                    if c.get(i + 1) == Some(&'\n') {
                        *line += 1;
                    }
                    i += 1;
                }
                '"' if c[i + 1..]
                    .iter()
                    .take(hashes)
                    .filter(|&&h| h == '#')
                    .count()
                    == hashes =>
                {
                    return i + 1 + hashes;
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if text_at(&c, i, "//") {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if text_at(&c, i, "/*") {
            let mut depth = 0;
            while i < c.len() {
                if text_at(&c, i, "/*") {
                    depth += 1;
                    i += 2;
                } else if text_at(&c, i, "*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(i + 1, false, 0, &mut line);
        } else if ch == '\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
            if c.get(i + 1) == Some(&'\\') {
                // Past the backslash and the escaped character, to the closing quote.
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
        } else if ident_char(ch) {
            let start = i;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            if raw_prefix && matches!(c.get(i), Some('#' | '"')) {
                let hashes = c[i..].iter().take_while(|&&h| h == '#').count();
                if c.get(i + hashes) == Some(&'"') {
                    i = skip_string(i + hashes + 1, true, hashes, &mut line);
                    continue;
                }
                // `r#ident`: a raw identifier.
                let start = i + 1;
                i = start;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
                out.push((line, Tok::Ident(c[start..i].iter().collect())));
            } else if matches!(word.as_str(), "b" | "c") && c.get(i) == Some(&'"') {
                i = skip_string(i + 1, false, 0, &mut line);
            } else if word == "b" && c.get(i) == Some(&'\'') {
                // A byte literal: the quote branch skips it next.
            } else {
                out.push((line, Tok::Ident(word)));
            }
        } else if text_at(&c, i, "::") {
            out.push((line, Tok::PathSep));
            i += 2;
        } else {
            out.push((line, Tok::Punct(ch)));
            i += 1;
        }
    }
    out
}

fn text_at(c: &[char], i: usize, s: &str) -> bool {
    s.chars()
        .enumerate()
        .all(|(k, ch)| c.get(i + k) == Some(&ch))
}

/// Scans one file's text; `module` is its module path (`["crate", "core", "verify"]`).
fn scan(text: &str, module: &[String]) -> Scan {
    let toks = tokens(text);
    let mut out = Scan::default();
    let ident = |k: usize| match toks.get(k) {
        Some((_, Tok::Ident(s))) => Some(s.as_str()),
        _ => None,
    };
    let punct = |k: usize, p: char| matches!(toks.get(k), Some((_, Tok::Punct(q))) if *q == p);
    // Inline modules open at a brace depth: (name, depth inside).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut k = 0;
    while k < toks.len() {
        // `#![cfg(test)]`: the whole file is test code.
        if punct(k, '#') && punct(k + 1, '!') && is_cfg_test(&toks, k + 2) {
            out.paths.clear();
            return out;
        }
        if punct(k, '#') && is_cfg_test(&toks, k + 1) {
            k = skip_test_item(&toks, attribute_end(&toks, k + 1), &mut out.test_modules);
            continue;
        }
        match &toks[k].1 {
            Tok::Punct('{') => {
                depth += 1;
                if ident(k.wrapping_sub(2)) == Some("mod") {
                    inline.push((ident(k - 1).unwrap_or_default().to_owned(), depth));
                }
                k += 1;
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                k += 1;
            }
            Tok::Ident(w) if w == "use" => {
                let end = (k..toks.len())
                    .find(|&e| punct(e, ';'))
                    .unwrap_or(toks.len());
                let mut found = Vec::new();
                use_tree(&toks[k + 1..end], &[], &mut found);
                for (line, path) in found {
                    out.paths
                        .push((line, resolve(&path, &within(module, &inline))));
                }
                k = end + 1;
            }
            Tok::Ident(_) | Tok::PathSep => {
                // A path: `a::b::c`, `::a::b`, `super::x`; a lone word is not one.
                let leading = toks[k].1 == Tok::PathSep
                    && !matches!(
                        toks.get(k.wrapping_sub(1)),
                        Some((_, Tok::Ident(_) | Tok::Punct('>' | ')')))
                    );
                let mut segments = Vec::new();
                let mut e = k + usize::from(toks[k].1 == Tok::PathSep);
                while let Some(s) = ident(e) {
                    segments.push(s.to_owned());
                    if toks.get(e + 1).map(|t| &t.1) == Some(&Tok::PathSep)
                        && ident(e + 2).is_some()
                    {
                        e += 2;
                    } else {
                        break;
                    }
                }
                let line = toks[k].0;
                let next = if segments.is_empty() { k + 1 } else { e + 1 };
                if segments.len() > 1 || (leading && !segments.is_empty()) {
                    let path = if leading {
                        segments
                    } else {
                        resolve(&segments, &within(module, &inline))
                    };
                    out.paths.push((line, path));
                }
                k = next;
            }
            _ => k += 1,
        }
    }
    out
}

/// The module path inside the open inline modules.
fn within(module: &[String], inline: &[(String, usize)]) -> Vec<String> {
    module
        .iter()
        .cloned()
        .chain(inline.iter().map(|(name, _)| name.clone()))
        .collect()
}

/// Whether the tokens at `k` are `[cfg(test)]`.
fn is_cfg_test(toks: &[(usize, Tok)], k: usize) -> bool {
    let want = [
        Tok::Punct('['),
        Tok::Ident("cfg".into()),
        Tok::Punct('('),
        Tok::Ident("test".into()),
        Tok::Punct(')'),
        Tok::Punct(']'),
    ];
    toks.len() >= k + want.len() && toks[k..k + want.len()].iter().map(|t| &t.1).eq(&want)
}

/// The index past an attribute's closing `]`; `k` is at its `[`.
fn attribute_end(toks: &[(usize, Tok)], k: usize) -> usize {
    let mut depth = 0;
    for (e, (_, t)) in toks.iter().enumerate().skip(k) {
        match t {
            Tok::Punct('[') => depth += 1,
            Tok::Punct(']') => {
                depth -= 1;
                if depth == 0 {
                    return e + 1;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// Skips the item after a `#[cfg(test)]` (its other attributes, then up to its `;` or its
/// closing brace); a `mod name;` is recorded as a test-only module.
fn skip_test_item(toks: &[(usize, Tok)], mut k: usize, test_modules: &mut Vec<String>) -> usize {
    while matches!(toks.get(k), Some((_, Tok::Punct('#')))) {
        k = attribute_end(toks, k + 1);
    }
    let words: Vec<&str> = toks[k..]
        .iter()
        .take(4)
        .map_while(|(_, t)| match t {
            Tok::Ident(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    let mut depth = 0;
    for (e, (_, t)) in toks.iter().enumerate().skip(k) {
        match t {
            Tok::Punct('{' | '(' | '[') => depth += 1,
            Tok::Punct('}') if depth == 1 => return e + 1,
            Tok::Punct('}' | ')' | ']') => depth -= 1,
            Tok::Punct(';') if depth == 0 => {
                if let Some(m) = words.iter().position(|w| *w == "mod") {
                    test_modules.extend(words.get(m + 1).map(|s| s.to_string()));
                }
                return e + 1;
            }
            _ => {}
        }
    }
    toks.len()
}

/// The leaf paths of a `use` tree (`a::{b, c::{self, d as e}, f::*}`), each with the line of
/// its last segment.
fn use_tree(toks: &[(usize, Tok)], prefix: &[String], out: &mut Vec<(usize, Vec<String>)>) {
    let mut path = prefix.to_vec();
    let mut line = toks.first().map_or(0, |t| t.0);
    let mut renamed = false;
    for (k, (l, t)) in toks.iter().enumerate() {
        match t {
            // `x as y`: the rename names nothing new.
            Tok::Ident(w) if w == "as" => renamed = true,
            Tok::Ident(_) if renamed => {}
            // `a::{self, b}`: `self` is `a`.
            Tok::Ident(w) if w == "self" && !path.is_empty() => {}
            Tok::Ident(w) => {
                path.push(w.clone());
                line = *l;
            }
            // `::a`: the external crate `a`.
            Tok::PathSep if path.is_empty() => path.push(String::new()),
            Tok::Punct('{') => return use_group(&toks[k..], &path, out),
            _ => {}
        }
    }
    if !path.is_empty() {
        out.push((line, path));
    }
}

/// The members of a `{...}` group (`toks` starts at its `{`), split at its own commas.
fn use_group(toks: &[(usize, Tok)], prefix: &[String], out: &mut Vec<(usize, Vec<String>)>) {
    let mut depth = 0;
    let mut start = 1;
    for (e, (_, t)) in toks.iter().enumerate() {
        match t {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}' | ',') if depth == 1 => {
                if e > start {
                    use_tree(&toks[start..e], prefix, out);
                }
                start = e + 1;
                if *t == Tok::Punct('}') {
                    return;
                }
            }
            Tok::Punct('}') => depth -= 1,
            _ => {}
        }
    }
}

/// A path as the crate sees it: `self::`/`super::` against `module`, `::a` as crate `a`.
fn resolve(path: &[String], module: &[String]) -> Vec<String> {
    match path.first().map(String::as_str) {
        Some("") => path[1..].to_vec(),
        Some("self") => module.iter().chain(&path[1..]).cloned().collect(),
        Some("super") => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            let keep = module.len().saturating_sub(ups).max(1);
            module[..keep.min(module.len())]
                .iter()
                .chain(&path[ups..])
                .cloned()
                .collect()
        }
        _ => path.to_vec(),
    }
}

#[cfg(test)]
mod scanner {
    use super::*;

    /// The paths named by `text` in module `module` that `forbidden` catches, as
    /// (line, path).
    fn caught(text: &str, module: &str, forbidden: &[&str]) -> Vec<(usize, String)> {
        let module: Vec<String> = module.split("::").map(str::to_owned).collect();
        scan(text, &module)
            .paths
            .into_iter()
            .filter(|(_, p)| forbidden.iter().any(|f| names(p, f)))
            .map(|(l, p)| (l, p.join("::")))
            .collect()
    }

    const CORE: &str = "crate::core::verify";
    const LAYER: &[&str] = &[
        "crate::serve",
        "crate::keys",
        "crate::metrics",
        "tokio",
        "kube",
    ];

    #[test]
    fn a_grouped_import_is_caught() {
        let hits = caught("use crate::{keys, serve::x};", CORE, LAYER);
        assert_eq!(
            hits,
            [(1, "crate::keys".into()), (1, "crate::serve::x".into())]
        );
    }

    #[test]
    fn a_nested_group_is_caught() {
        let hits = caught(
            "use crate::{core::{jwks, verify}, serve::{x, state::{y as z}}};",
            CORE,
            LAYER,
        );
        assert_eq!(
            hits,
            [
                (1, "crate::serve::x".into()),
                (1, "crate::serve::state::y".into())
            ]
        );
    }

    #[test]
    fn a_multi_line_import_is_caught_on_its_line() {
        let text =
            "use crate::{\n    core::jwks,\n    serve::{\n        state::AppState,\n    },\n};\n";
        assert_eq!(
            caught(text, CORE, LAYER),
            [(4, "crate::serve::state::AppState".into())]
        );
    }

    #[test]
    fn a_group_with_self_names_its_parent() {
        assert_eq!(
            caught("use crate::keys::{self, tokens};", CORE, LAYER),
            [(1, "crate::keys".into()), (1, "crate::keys::tokens".into())]
        );
    }

    #[test]
    fn an_inline_path_without_a_use_is_caught() {
        let text = "fn f() -> u8 {\n    let x = crate::serve::foo();\n    x\n}\n";
        assert_eq!(caught(text, CORE, LAYER), [(2, "crate::serve::foo".into())]);
    }

    #[test]
    fn a_macro_path_is_caught() {
        let text = "fn f() { crate::metrics::count!(x); tokio::select! {} }";
        assert_eq!(
            caught(text, CORE, LAYER),
            [
                (1, "crate::metrics::count".into()),
                (1, "tokio::select".into())
            ]
        );
    }

    #[test]
    fn paths_in_types_and_attributes_are_caught() {
        let text = "#[tokio::main]\nasync fn main() {}\nstruct S { a: Vec<::kube::Client> }\n";
        assert_eq!(
            caught(text, CORE, LAYER),
            [(1, "tokio::main".into()), (3, "kube::Client".into())]
        );
    }

    #[test]
    fn super_is_resolved_against_the_file_and_inline_modules() {
        let module = "crate::core::index::update";
        assert_eq!(
            caught("use super::super::super::serve::X;", module, LAYER),
            [(1, "crate::serve::X".into())]
        );
        // Inside the core: allowed, and resolved to where it points.
        assert_eq!(
            caught("use super::super::verify::Claims;", module, &["crate"]),
            [(1, "crate::core::verify::Claims".into())]
        );
        // An inline module adds a level.
        let text = "mod inner {\n    fn f() { super::super::keys::load(); }\n}\n";
        assert_eq!(
            caught(text, "crate::core::hosts", &["crate"]),
            [(2, "crate::core::keys::load".into())]
        );
        let text = "mod inner {\n    fn f() { super::super::super::keys::load(); }\n}\n";
        assert_eq!(
            caught(text, "crate::core::hosts", LAYER),
            [(2, "crate::keys::load".into())]
        );
        assert_eq!(
            caught("use self::serve::x;", "crate", LAYER),
            [(1, "crate::serve::x".into())]
        );
    }

    #[test]
    fn renamed_imports_still_name_their_crate() {
        assert_eq!(
            caught("use kube as k;\nuse tokio::{spawn as go};", CORE, LAYER),
            [(1, "kube".into()), (2, "tokio::spawn".into())]
        );
    }

    #[test]
    fn comments_literals_and_lookalikes_are_not_paths() {
        let text = r####"
// use crate::serve::x;
/* crate::keys::y /* nested crate::serve::z */ still crate::keys::w */
/// [`crate::serve::x`]
//! crate::serve::x
fn f<'a>(s: &'a str) -> (char, &'static str, &[u8], &str) {
    let _ = core::fmt::Debug; // std's core, not crate::core
    let _ = tokio_stream::x; // another crate than tokio
    ('"', "crate::serve::x", b"tokio::spawn", r#"crate::keys "quoted" "#)
}
fn g() -> char { '\'' }
"####;
        assert_eq!(
            caught(
                text,
                "crate::api::policy",
                &["crate::core", "crate::serve", "crate::keys", "tokio"]
            ),
            []
        );
        // ...and scanning goes on correctly after them.
        let text = format!("{text}fn h() {{ crate::serve::after(); }}\n");
        assert_eq!(
            caught(&text, CORE, LAYER),
            [(12, "crate::serve::after".into())]
        );
    }

    #[test]
    fn test_code_may_use_anything() {
        let text = "#[cfg(test)]\nmod tests {\n    use tokio::spawn;\n    fn f() { crate::serve::x(); }\n}\n#[cfg(test)]\nuse crate::keys::y;\n#[cfg(test)]\n#[path = \"fx.rs\"]\npub mod fixtures;\nfn after() { crate::serve::z(); }\n";
        let scan = scan(text, &["crate".into(), "core".into()]);
        assert_eq!(scan.test_modules, ["fixtures"]);
        assert_eq!(
            scan.paths,
            [(11, vec!["crate".into(), "serve".into(), "z".into()])]
        );
        assert!(caught("#![cfg(test)]\nuse tokio::spawn;\n", CORE, LAYER).is_empty());
    }

    #[test]
    fn segments_are_compared_whole() {
        let p = |s: &str| s.split("::").map(str::to_owned).collect::<Vec<_>>();
        assert!(names(&p("kube::api::Api"), "kube"));
        assert!(names(&p("kube"), "kube::"));
        assert!(!names(&p("kube_lease_manager::X"), "kube"));
        assert!(!names(&p("crate::core_x"), "crate::core"));
        assert!(names(&p("axum::routing::get"), "axum::routing"));
        assert!(!names(&p("axum::http::HeaderMap"), "axum::routing"));
    }
}
