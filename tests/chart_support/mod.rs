//! Shared by the chart tests (cluster::helm, chart_docs, cluster::chart_observability): helm and promtool
//! built from the Go module proxy, `helm template` as JSON objects.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/accessgate");
pub const NS: &str = "accessgate-system";

/// Runs a build script that prints the binary's path on its last line (idempotent: a no-op
/// when cached).
fn built(script: &str) -> String {
    let out = Command::new("bash")
        .arg(format!("{}/{script}", env!("CARGO_MANIFEST_DIR")))
        .output()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned()
}

pub fn helm_bin() -> String {
    built("tests/controlplane/build-helm.sh")
}

pub fn promtool_bin() -> String {
    built("tests/promtool/build.sh")
}

/// Runs helm; returns (success, stdout, stderr).
pub fn helm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(helm_bin()).args(args).output().expect("helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
pub fn helm_ok(args: &[&str]) -> String {
    let (ok, out, err) = helm(args);
    assert!(ok, "helm {args:?} failed: {err}\n{out}");
    out
}

/// `helm template` of `chart` (release `accessgate` in [`NS`]) as a list of objects.
pub fn render_chart(chart: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "accessgate",
        chart,
        "--namespace",
        NS,
        "--kube-version",
        "1.33.0",
    ];
    args.extend_from_slice(extra);
    let text = helm_ok(&args);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// `helm template` of the chart with extra arguments.
pub fn render(extra: &[&str]) -> Vec<Value> {
    render_chart(CHART, extra)
}

pub fn kinds(objs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objs
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect();
    k.sort();
    k
}

pub fn find<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

/// The one object of `kind` named `name`.
#[track_caller]
pub fn named<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", kinds(objs)))
}

pub fn read_yaml(path: &Path) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every metric name accessgate exposes, from the registrations in src/metrics.rs: counters
/// with `_total`, histograms with `_bucket`/`_sum`/`_count`, gauges as registered.
pub fn exposed_metric_names() -> Vec<String> {
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs")).unwrap();
    let prefix = src
        .split("Registry::with_prefix(\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the registry's prefix");
    // Field name -> its type, from `pub name: Type,` lines of the Metrics struct.
    let fields: Vec<(String, String)> = src
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split_once(": "))
        .map(|(n, t)| (n.trim().to_owned(), t.trim_end_matches(',').to_owned()))
        .collect();
    let mut names = Vec::new();
    // `registry.register(\n "name",\n "help",\n var.clone(),\n );`
    for call in src.split("registry.register(").skip(1) {
        let args: Vec<&str> = call
            .split(");")
            .next()
            .unwrap()
            .split(',')
            .map(str::trim)
            .collect();
        let name = args[0].trim_matches('"');
        let var = args.last().unwrap().trim_end_matches(".clone()");
        let var = if var.is_empty() {
            args[args.len() - 2].trim_end_matches(".clone()")
        } else {
            var
        };
        let ty = &fields
            .iter()
            .find(|(n, _)| n == var)
            .unwrap_or_else(|| panic!("no field {var} for metric {name}"))
            .1;
        let full = format!("{prefix}_{name}");
        if ty.contains("Counter") {
            names.push(format!("{full}_total"));
        } else if ty.contains("Histogram") {
            for s in ["_bucket", "_sum", "_count"] {
                names.push(format!("{full}{s}"));
            }
        } else {
            assert!(ty.contains("Gauge"), "{name}: unknown metric type {ty}");
            names.push(full);
        }
    }
    names
}

/// The `accessgate_*` metric names a PromQL expression mentions.
pub fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("accessgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Skip label values such as job="accessgate_x" (preceded by a quote).
        if i == 0 || !rest[..i].ends_with(['"', '\'']) {
            out.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}
