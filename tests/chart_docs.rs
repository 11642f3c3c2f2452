//! The chart's documentation stays true: the values table in charts/accessgate/README.md is
//! generated from the `# --` comments in values.yaml (types from values.schema.json, defaults
//! from the values themselves), every value is documented, and Chart.yaml's metadata matches
//! the chart.
//!
//! Regenerate the table: `ACCESSGATE_BLESS=1 cargo test --test chart_docs` writes it and
//! fails ("blessed, re-run"); the re-run passes.

mod chart_support;

use std::path::Path;

use chart_support::*;
use serde_json::Value;

const BEGIN: &str = "<!-- values:begin (generated from values.yaml by tests/chart_docs.rs) -->";
const END: &str = "<!-- values:end -->";

fn chart_file(name: &str) -> String {
    std::fs::read_to_string(Path::new(CHART).join(name)).unwrap()
}

/// `(dotted path, description)` for every key preceded by a `# --` comment; comment lines
/// right after it continue the description.
fn documented(values_yaml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<String> = None;
    for line in values_yaml.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(rest) = trimmed.strip_prefix("# --") {
            pending = Some(rest.trim().to_owned());
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('#') {
            if let Some(p) = pending.as_mut() {
                p.push(' ');
                p.push_str(rest.trim());
            }
            continue;
        }
        let key = trimmed
            .split_once(':')
            .map(|(k, _)| k)
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        let Some(key) = key else {
            pending = None;
            continue;
        };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let path = stack
            .iter()
            .map(|(_, k)| k.as_str())
            .chain([key])
            .collect::<Vec<_>>()
            .join(".");
        if let Some(d) = pending.take() {
            out.push((path, d));
        }
        stack.push((indent, key.to_owned()));
    }
    out
}

fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// The schema node of a values path.
fn schema_at<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = schema;
    for k in path.split('.') {
        node = node.get("properties")?.get(k)?;
        if let Some(r) = node.get("$ref").and_then(|r| r.as_str()) {
            node = &schema["definitions"][r.trim_start_matches("#/definitions/")];
        }
    }
    Some(node)
}

fn type_of(node: &Value) -> String {
    match (&node["type"], &node["enum"]) {
        (Value::String(t), _) => t.clone(),
        (Value::Array(ts), _) => ts
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect::<Vec<_>>()
            .join(" or "),
        (_, Value::Array(vs)) => vs
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap()))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "any".to_owned(),
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The generated table.
fn values_table() -> String {
    let text = chart_file("values.yaml");
    let values: Value = serde_saphyr::from_str(&text).unwrap();
    let schema: Value = serde_json::from_str(&chart_file("values.schema.json")).unwrap();
    let mut out = String::from("| Key | Type | Default | Description |\n|---|---|---|---|\n");
    for (path, desc) in documented(&text) {
        let default = at(&values, &path).unwrap_or_else(|| panic!("{path} not in values"));
        let node = schema_at(&schema, &path)
            .unwrap_or_else(|| panic!("{path} is documented but not in values.schema.json"));
        out.push_str(&format!(
            "| `{path}` | {} | `{}` | {} |\n",
            type_of(node),
            cell(&serde_json::to_string(default).unwrap()),
            cell(&desc)
        ));
    }
    out
}

#[test]
fn every_value_is_documented() {
    let text = chart_file("values.yaml");
    let values: Value = serde_saphyr::from_str(&text).unwrap();
    let docs: Vec<String> = documented(&text).into_iter().map(|(p, _)| p).collect();
    let mut missing = Vec::new();
    fn walk(v: &Value, prefix: &str, docs: &[String], missing: &mut Vec<String>) {
        for (k, child) in v.as_object().unwrap() {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if docs.contains(&path) {
                continue;
            }
            match child {
                Value::Object(m) if !m.is_empty() => walk(child, &path, docs, missing),
                _ => missing.push(path),
            }
        }
    }
    walk(&values, "", &docs, &mut missing);
    assert!(
        missing.is_empty(),
        "values without a `# --` comment: {missing:?}"
    );
    for (path, desc) in documented(&text) {
        assert!(desc.len() > 8, "{path}: say what it does");
    }
}

#[test]
fn readme_values_table_is_current() {
    let readme_path = Path::new(CHART).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let (head, rest) = readme
        .split_once(BEGIN)
        .expect("README.md has the values:begin marker");
    let (_, tail) = rest.split_once(END).expect("and the values:end marker");
    let fresh = format!("{head}{BEGIN}\n{}{END}{tail}", values_table());
    // Blessing writes the table and still fails the run: only a re-run on the written file
    // passes, so the variable left set never turns a stale table into a pass.
    if fresh != readme && std::env::var_os("ACCESSGATE_BLESS").is_some() {
        std::fs::write(&readme_path, &fresh).unwrap();
        panic!("charts/accessgate/README.md's values table blessed, re-run");
    }
    assert!(
        fresh == readme,
        "charts/accessgate/README.md's values table is out of date with values.yaml: run \
         `ACCESSGATE_BLESS=1 cargo test --test chart_docs`"
    );
}

#[test]
fn the_table_generator_reads_nested_and_continued_comments() {
    let docs = documented(
        "# free comment\n# -- top\n# continued\na: 1\nb:\n  # -- nested\n  c: x\n  d: 2\n# -- last\ne: []\n",
    );
    assert_eq!(
        docs,
        [
            ("a".to_owned(), "top continued".to_owned()),
            ("b.c".to_owned(), "nested".to_owned()),
            ("e".to_owned(), "last".to_owned()),
        ]
    );
}

#[test]
fn chart_metadata_is_complete_and_consistent() {
    let chart = read_yaml(&Path::new(CHART).join("Chart.yaml"));
    let values = read_yaml(&Path::new(CHART).join("values.yaml"));
    for key in [
        "home",
        "sources",
        "maintainers",
        "keywords",
        "kubeVersion",
        "appVersion",
    ] {
        assert!(
            !chart[key].is_null() && chart[key] != "",
            "Chart.yaml lacks {key}"
        );
    }
    assert_eq!(chart["kubeVersion"], ">=1.33.0-0");
    let cargo =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let license = cargo
        .lines()
        .find_map(|l| l.strip_prefix("license = "))
        .unwrap()
        .trim_matches('"');
    let ann = &chart["annotations"];
    assert_eq!(ann["artifacthub.io/license"], license);
    // The images Artifact Hub lists are the ones the chart runs.
    let images = ann["artifacthub.io/images"].as_str().unwrap();
    let app = format!(
        "{}:{}",
        values["image"]["repository"].as_str().unwrap(),
        chart["appVersion"].as_str().unwrap()
    );
    let test = format!(
        "{}:{}",
        values["tests"]["image"]["repository"].as_str().unwrap(),
        values["tests"]["image"]["tag"].as_str().unwrap()
    );
    for image in [app, test] {
        assert!(
            images.contains(&image),
            "{image} not in artifacthub.io/images"
        );
    }
    let crds = ann["artifacthub.io/crds"].as_str().unwrap();
    let crd = read_yaml(&Path::new(CHART).join("files/accesspolicy-crd.yaml"));
    for v in crd["spec"]["versions"].as_array().unwrap() {
        assert!(
            crds.contains(&format!("version: {}", v["name"].as_str().unwrap())),
            "artifacthub.io/crds does not list {}",
            v["name"]
        );
    }
}
