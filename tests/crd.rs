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
        "crds/accesspolicy.yaml is stale: run `cargo run -- crd > crds/accesspolicy.yaml` and copy it to charts/accessgate/crds/"
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
    assert_eq!(crd.spec.names.short_names, Some(vec!["ap".to_string()]));
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    let cols: Vec<&str> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cols, ["Ready", "Issuer", "Audiences", "Age"]);
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    assert!(text.matches("x-kubernetes-validations").count() >= 10);
}

#[test]
fn every_spec_field_is_described() {
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&printed()).unwrap();
    let schema = serde_json::to_value(
        &crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema,
    )
    .unwrap();
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
    let chart = std::fs::read_to_string(format!("{root}/charts/accessgate/crds/accesspolicy.yaml"))
        .unwrap();
    let committed = std::fs::read_to_string(format!("{root}/crds/accesspolicy.yaml")).unwrap();
    assert!(
        chart == committed,
        "charts/accessgate/crds/accesspolicy.yaml differs from crds/: copy it over"
    );
}
