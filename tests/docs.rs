//! The documentation stays true: examples validate, the Ingress example forwards every header
//! its policy sets, and the README's reference covers every spec field of the CRD.

use accessgate::core::index::Entry;
use accessgate::source::files::parse_manifests;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap()
}

#[test]
fn example_policies_are_valid() {
    for file in [
        "examples/cloudflare-grafana.yaml",
        "examples/oidc-issuer.yaml",
        "examples/ingress-nginx.yaml",
    ] {
        parse_manifests(file, &read(file)).unwrap_or_else(|e| panic!("{e}"));
    }
    let demo = read("examples/demo-policy.yaml").replace("${ISSUER}", "http://127.0.0.1:9400");
    assert_eq!(parse_manifests("demo", &demo).unwrap().len(), 1);
}

#[test]
fn example_ingress_forwards_every_header_its_policy_sets() {
    let policy = parse_manifests("p", &read("examples/cloudflare-grafana.yaml")).unwrap();
    let Entry::Ready(p) = &policy[0].1 else {
        panic!("invalid example")
    };
    let ingress: Value = serde_saphyr::from_str(&read("examples/ingress-nginx.yaml")).unwrap();
    let ann = &ingress["metadata"]["annotations"];
    let listed: Vec<String> = ann["nginx.ingress.kubernetes.io/auth-response-headers"]
        .as_str()
        .unwrap()
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for h in &p.claim_headers {
        assert!(
            listed.contains(&h.header.to_string()),
            "{} is not in auth-response-headers",
            h.header
        );
    }
    let url = ann["nginx.ingress.kubernetes.io/auth-url"]
        .as_str()
        .unwrap();
    assert!(
        url.ends_with(&format!("/auth/{}/{}", p.key.namespace, p.key.name)),
        "{url}"
    );
}

#[test]
fn readme_reference_covers_every_spec_field() {
    let crd: Value = serde_saphyr::from_str(&read("crds/accesspolicy.yaml")).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let readme = read("README.md");
    let mut fields = Vec::new();
    collect(spec, "", &mut fields);
    // A top-level field as `field`, a nested one as `parent.field` or `field` in its row.
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| !readme.contains(&format!("`{f}")) && !readme.contains(&format!(".{f}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README's AccessPolicy reference lacks: {missing:?}"
    );
}

fn collect(node: &Value, prefix: &str, out: &mut Vec<String>) {
    let props = node
        .get("properties")
        .or_else(|| node.get("items").and_then(|i| i.get("properties")));
    if let Some(props) = props.and_then(|p| p.as_object()) {
        for (k, v) in props {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push(if prefix.is_empty() {
                path.clone()
            } else {
                k.clone()
            });
            collect(v, &path, out);
        }
    }
}
