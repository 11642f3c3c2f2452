//! What the chart gives monitoring: the PrometheusRule's alerts (checked and unit-tested with
//! promtool, built from the Go module proxy by tests/promtool/build.sh) and the Grafana
//! dashboard (valid JSON, PromQL that parses, only metric names accessgate exposes).

use std::path::Path;
use std::process::Command;

use crate::chart_support::*;
use serde_json::{Value, json};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/accessgate/files/grafana-dashboard.json"
);
const RULE_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/promtool/accessgate-rules.test.yaml"
);

/// Metrics the expressions may use that accessgate does not expose itself.
const FOREIGN: &[&str] = &["up"];

#[track_caller]
fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new(promtool_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The PrometheusRule's `spec` (a Prometheus rule file) as rendered by helm.
fn rendered_rules(extra: &[&str]) -> Value {
    let mut args = vec!["--set", "prometheusRule.enabled=true"];
    args.extend_from_slice(extra);
    let objs = render(&args);
    let rules = find(&objs, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    rules[0]["spec"].clone()
}

fn alerts(spec: &Value) -> Vec<&Value> {
    spec["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect()
}

#[test]
fn prometheus_rule_renders_with_labels_and_the_release_selector() {
    let objs = render(&[
        "--set",
        "prometheusRule.enabled=true,prometheusRule.labels.release=kube-prometheus-stack",
        "--set",
        "fullnameOverride=gate",
    ]);
    let rule = find(&objs, "PrometheusRule")[0];
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], NS);
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let names: Vec<&str> = alerts(&rule["spec"])
        .iter()
        .map(|a| a["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "AccessgateKeysUnavailable",
            "AccessgateKeyFetchesFailing",
            "AccessgateDenyRatioHigh",
            "AccessgateDown",
            "AccessgatePoliciesInvalid"
        ]
    );
    for a in alerts(&rule["spec"]) {
        let expr = a["expr"].as_str().unwrap();
        // Every selector is this release's scrape job (the Service name) in its namespace.
        let selectors = expr.matches('{').count();
        let scoped = expr
            .matches(&format!("{{job=\"gate\",namespace=\"{NS}\""))
            .count();
        assert!(selectors > 0);
        assert_eq!(
            selectors, scoped,
            "{}: unscoped selector in {expr}",
            a["alert"]
        );
        assert!(
            ["critical", "warning"].contains(&a["labels"]["severity"].as_str().unwrap()),
            "{a}"
        );
        assert!(a["annotations"]["summary"].is_string());
        assert!(a["annotations"]["description"].is_string());
    }
    // Thresholds come from values.
    let spec = rendered_rules(&[
        "--set",
        "prometheusRule.denyRatio=0.8,prometheusRule.denyMinRequestsPerSecond=2",
    ]);
    let deny = alerts(&spec)
        .into_iter()
        .find(|a| a["alert"] == "AccessgateDenyRatioHigh")
        .unwrap();
    let expr = deny["expr"].as_str().unwrap();
    assert!(
        expr.contains(") > 0.8") && expr.contains("[5m])) > 2"),
        "{expr}"
    );
}

#[test]
fn alert_expressions_use_only_exposed_metrics() {
    let exposed = exposed_metric_names();
    eprintln!("metrics in src/metrics.rs: {exposed:?}");
    assert!(exposed.contains(&"accessgate_decisions_total".to_owned()));
    assert!(exposed.contains(&"accessgate_decision_duration_seconds_bucket".to_owned()));
    assert!(exposed.contains(&"accessgate_keys_loaded".to_owned()));
    let spec = rendered_rules(&[]);
    for a in alerts(&spec) {
        let expr = a["expr"].as_str().unwrap();
        let used = metrics_in(expr);
        assert!(
            !used.is_empty() || FOREIGN.iter().any(|f| expr.contains(f)),
            "{expr}"
        );
        for m in used {
            assert!(exposed.contains(&m), "{}: {m} is not exposed", a["alert"]);
        }
    }
}

/// `promtool check rules` on the rendered rules, then `promtool test rules`: for each alert,
/// input series and the exact alerts (labels, annotations) expected, quiet cases included.
#[test]
fn promtool_checks_and_unit_tests_the_rendered_rules() {
    let dir = tempfile::tempdir().unwrap();
    let spec = rendered_rules(&[]);
    // JSON is YAML; promtool reads it as a rule file.
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_json::to_string_pretty(&spec).unwrap(),
    )
    .unwrap();
    let out = promtool(&["check", "rules", "rules.yaml"], dir.path());
    eprintln!("{out}");
    assert!(out.contains("SUCCESS: 5 rules found"), "{out}");

    std::fs::copy(RULE_TESTS, dir.path().join("rules.test.yaml")).unwrap();
    let out = promtool(&["test", "rules", "rules.test.yaml"], dir.path());
    eprintln!("{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test that expects it to fire.
    let tests = std::fs::read_to_string(RULE_TESTS).unwrap();
    for a in alerts(&spec) {
        let name = a["alert"].as_str().unwrap();
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "no promtool test for {name}"
        );
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap())
        .expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard: panel targets and template variables.
fn dashboard_exprs(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    out
}

#[test]
fn dashboard_configmap_renders_for_the_grafana_sidecar() {
    let objs = render(&[
        "--set",
        "dashboards.enabled=true,dashboards.namespace=monitoring",
        "--set",
        "dashboards.annotations.grafana_folder=Platform",
    ]);
    let cm = named(&objs, "ConfigMap", "accessgate-dashboard");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Platform");
    let text = cm["data"]["accessgate.json"].as_str().unwrap();
    let embedded: Value = serde_json::from_str(text).expect("the ConfigMap holds JSON");
    assert_eq!(embedded, dashboard());
    let objs = render(&["--set", "dashboards.enabled=true"]);
    assert_eq!(
        named(&objs, "ConfigMap", "accessgate-dashboard")["metadata"]["namespace"],
        NS
    );
}

#[test]
fn dashboard_shows_the_decision_latency_key_and_policy_metrics() {
    let d = dashboard();
    assert_eq!(d["uid"], "accessgate");
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "namespace", "job", "policy"]);
    let exprs = dashboard_exprs(&d);
    let exposed = exposed_metric_names();
    for e in &exprs {
        for m in metrics_in(e) {
            assert!(exposed.contains(&m), "dashboard uses {m}, not exposed: {e}");
        }
    }
    let all = exprs.join("\n");
    for want in [
        "sum by (decision, reason) (rate(accessgate_decisions_total",
        "sum by (policy, decision) (rate(accessgate_decisions_total",
        "histogram_quantile(0.99, sum by (le) (rate(accessgate_decision_duration_seconds_bucket",
        "sum by (jwks_uri, result) (increase(accessgate_key_fetches_total",
        "min by (jwks_uri) (accessgate_keys_loaded",
        "max by (state) (accessgate_policies",
    ] {
        assert!(all.contains(want), "no panel with {want}");
    }
    // Panels use the datasource variable and sit on the grid without overlapping.
    let mut cells = std::collections::HashSet::new();
    for p in d["panels"].as_array().unwrap() {
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{} is wider than the grid", p["title"]);
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "{} overlaps another panel",
                    p["title"]
                );
            }
        }
    }
}

/// The dashboard's PromQL parses: each expression (Grafana's variables replaced by values) as
/// a recording rule through `promtool check rules`.
#[test]
fn dashboard_promql_parses() {
    let d = dashboard();
    let mut exprs = dashboard_exprs(&d);
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(METRIC{...}, label) -> the selector inside.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|s| s.rsplit_once(','))
                .map(|(sel, _)| sel.to_owned())
                .unwrap_or_else(|| panic!("unexpected variable query {q}"));
            exprs.push(inner);
        }
    }
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e
                .replace("$__rate_interval", "2m")
                .replace("$namespace", ".*")
                .replace("$job", ".*")
                .replace("$policy", ".*");
            json!({"record": format!("dashboard:expr{i}"), "expr": e})
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dashboard.rules.yaml"),
        json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let out = promtool(&["check", "rules", "dashboard.rules.yaml"], dir.path());
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "{out}"
    );
}
