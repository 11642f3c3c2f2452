//! The committed CRD is exactly what `accessgate crd` prints, and it is a well-formed
//! CustomResourceDefinition with the pieces `kubectl` users rely on.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

const BIN: &str = env!("CARGO_BIN_EXE_accessgate");

fn printed() -> String {
    let out = std::process::Command::new(BIN).arg("crd").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn committed_crd_matches_generated() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/accesspolicy.yaml"
    ))
    .unwrap();
    assert!(
        committed == printed(),
        "crds/accesspolicy.yaml is stale: run `cargo run -- crd > crds/accesspolicy.yaml` and copy it to charts/accessgate/files/accesspolicy-crd.yaml"
    );
}

#[test]
fn crd_has_short_name_columns_status_and_cel() {
    let text = printed();
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("accesspolicies.accessgate.dev")
    );
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["acp".to_string()]));
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    let cols: Vec<&str> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        cols,
        [
            "Ready",
            "Reason",
            "Headers-Protected",
            "Issuer",
            "Audiences",
            "Mode",
            "Age"
        ]
    );
    assert_eq!(
        crd.spec.names.categories,
        Some(vec!["accessgate".to_string()])
    );
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    assert!(text.matches("x-kubernetes-validations").count() >= 10);
}

#[test]
fn every_spec_field_is_described() {
    let schema = schema();
    let mut missing = Vec::new();
    walk(&schema["properties"]["spec"], "spec", &mut missing);
    assert!(
        missing.is_empty(),
        "fields without description (kubectl explain shows nothing): {missing:?}"
    );
}

fn walk(node: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
    if node.get("description").is_none() {
        missing.push(path.to_owned());
    }
    if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
        for (k, v) in props {
            walk(v, &format!("{path}.{k}"), missing);
        }
    }
    if let Some(items) = node.get("items")
        && items.get("properties").is_some()
    {
        if let Some(props) = items["properties"].as_object() {
            for (k, v) in props {
                walk(v, &format!("{path}[].{k}"), missing);
            }
        }
    }
}

#[test]
fn chart_ships_the_same_crd() {
    let root = env!("CARGO_MANIFEST_DIR");
    let chart = std::fs::read_to_string(format!(
        "{root}/charts/accessgate/files/accesspolicy-crd.yaml"
    ))
    .unwrap();
    let committed = std::fs::read_to_string(format!("{root}/crds/accesspolicy.yaml")).unwrap();
    assert!(
        chart == committed,
        "charts/accessgate/files/accesspolicy-crd.yaml differs from crds/: copy it over"
    );
}

/// The CEL rule on `claimHeaders[].header` is built from the code's reserved lists, so the
/// API server and the file source refuse the same names.
#[test]
fn reserved_header_cel_rule_covers_the_codes_lists() {
    let schema = schema();
    let header = &schema["properties"]["spec"]["properties"]["claimHeaders"]["items"]["properties"]
        ["header"];
    let rules: Vec<&str> = header["x-kubernetes-validations"]
        .as_array()
        .expect("header has CEL rules")
        .iter()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    let reserved = rules
        .iter()
        .find(|r| r.contains("startsWith"))
        .unwrap_or_else(|| panic!("no reserved-name rule in {rules:?}"));
    for name in accessgate::api::RESERVED_HEADERS {
        assert!(
            reserved.contains(&format!("'{name}'")),
            "{name} missing from {reserved}"
        );
    }
    for prefix in accessgate::api::RESERVED_HEADER_PREFIXES {
        assert!(
            reserved.contains(&format!("'{prefix}'")),
            "{prefix} missing from {reserved}"
        );
    }
    for (name, refused) in [
        ("X-Forwarded-Host", true),
        ("x-envoy-original-path", true),
        ("X-Accessgate-Reason", true),
        ("X-Original-URI", true),
        ("Forwarded", true),
        ("X-Request-ID", true),
        ("X-Auth-Request-Email", false),
        ("X-Forwarded", false),
    ] {
        assert_eq!(accessgate::api::is_reserved_header(name), refused, "{name}");
    }
}

/// Matcher emails and domains are ASCII in the CRD, as in the code.
#[test]
fn email_matcher_cel_rules_are_ascii_only() {
    let text = printed();
    assert!(text.contains("^[!-?A-~]+@"), "email rule is not ASCII-only");
    assert!(
        !text.contains("[^@\\\\s]"),
        "the old, Unicode-permissive email rule is back"
    );
}

/// The OpenAPI schema of the printed CRD's one version.
fn schema() -> serde_json::Value {
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&printed()).unwrap();
    serde_json::to_value(
        &crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema,
    )
    .unwrap()
}

/// Every node of the schema with its path.
fn nodes<'a>(
    v: &'a serde_json::Value,
    path: String,
    out: &mut Vec<(String, &'a serde_json::Value)>,
) {
    out.push((path.clone(), v));
    if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
        for (k, child) in props {
            nodes(child, format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = v.get("items") {
        nodes(items, format!("{path}[]"), out);
    }
}

#[test]
fn crd_follows_the_api_conventions() {
    let schema = schema();
    let mut all = Vec::new();
    nodes(&schema, String::new(), &mut all);
    for (path, node) in &all {
        // kubectl apply warns on formats the API server does not know.
        if let Some(f) = node.get("format").and_then(|f| f.as_str()) {
            assert!(
                ["int32", "int64", "date-time", "byte", "double", "float"].contains(&f),
                "{path}: format {f} is not one the API server knows"
            );
        }
        if let Some(values) = node.get("enum").and_then(|e| e.as_array()) {
            assert!(
                !values.iter().any(|v| v.is_null()),
                "{path}: enum lists null"
            );
        }
        // Doc comments are sentences, not lines: kubectl explain re-wraps them.
        if let Some(d) = node.get("description").and_then(|d| d.as_str()) {
            assert!(
                !d.replace("\n\n", "").contains('\n'),
                "{path}: description is hard-wrapped: {d:?}"
            );
        }
    }
    let status = &schema["properties"]["status"]["properties"];
    let conditions = &status["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
    let c = &conditions["items"]["properties"];
    assert_eq!(
        c["status"]["enum"],
        serde_json::json!(["True", "False", "Unknown"])
    );
    assert!(c["reason"]["pattern"].is_string() && c["message"]["maxLength"].is_number());
    assert_eq!(c["lastTransitionTime"]["format"], "date-time");
    // State, not traffic: no decision counters or fetch times in status (they are metrics).
    assert!(status.get("decisions").is_none(), "{status}");
    assert!(status["keys"]["properties"].get("fetchedAt").is_none());
}

#[test]
fn struct_level_cel_rules_name_the_field_and_a_reason() {
    let text = printed();
    let schema = schema();
    let mut all = Vec::new();
    nodes(&schema, String::new(), &mut all);
    let mut rules = 0;
    for (path, node) in &all {
        for rule in node
            .get("x-kubernetes-validations")
            .and_then(|r| r.as_array())
            .into_iter()
            .flatten()
        {
            rules += 1;
            assert!(
                rule["reason"].is_string(),
                "{path}: rule without reason: {rule}"
            );
            // A rule on an object that talks about one of its fields points at it.
            let message = rule["message"].as_str().unwrap_or_default();
            if node.get("properties").is_some() && !message.starts_with("a matcher") {
                assert!(
                    rule["fieldPath"].is_string(),
                    "{path}: rule without fieldPath: {rule}"
                );
            }
        }
    }
    assert!(rules >= 20, "{rules} rules in {} bytes", text.len());
}
