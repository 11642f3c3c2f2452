//! The gateway examples are validated, not just written:
//! - each is applied (server-side apply, strict field validation) to a real kube-apiserver
//!   with the gateways' own upstream CRDs installed — Gateway API (experimental channel),
//!   Envoy Gateway, Istio, Contour, Traefik — and must be accepted and stored unchanged;
//!   a broken copy of each (a misspelt field, a value outside an enum, a broken CEL rule)
//!   must be refused, so the check can fail;
//! - Istio's mesh config, which no CRD validates, names only fields of Istio's MeshConfig
//!   proto;
//! - every example points at the accessgate Service and at the example policy
//!   (`monitoring/grafana`, examples/cloudflare-grafana.yaml) the way accessgate reads it.
//!
//! The CRDs come from the projects' Go modules, pinned in tests/gateway-crds/pins and
//! fetched by tests/gateway-crds/fetch.sh into ~/.cache/accessgate/gateway-crds/.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::cluster::ControlPlane;
use accessgate::core::index::PolicyEntry;
use accessgate::source::files::parse_manifests;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SVC_HOST: &str = "accessgate.accessgate-system.svc.cluster.local";

/// An example file, the CRD sets it needs, and broken copies of it: (text to replace, its
/// replacement, a text the API server's refusal must contain).
struct Example {
    file: &'static str,
    crds: &'static [&'static str],
    broken: &'static [(&'static str, &'static str, &'static str)],
}

const EXAMPLES: &[Example] = &[
    Example {
        file: "examples/gateway-api-external-auth-http.yaml",
        crds: &["gateway-api"],
        broken: &[
            // The Go field is AllowedRequestHeaders; the JSON name is allowedHeaders.
            (
                "allowedHeaders:",
                "allowedRequestHeaders:",
                "http.allowedRequestHeaders: field not declared in schema",
            ),
            (
                "protocol: HTTP",
                "protocol: HTTPS",
                "Unsupported value: \"HTTPS\"",
            ),
        ],
    },
    Example {
        file: "examples/gateway-api-external-auth-grpc.yaml",
        crds: &["gateway-api"],
        broken: &[
            // A CEL rule of the CRD: protocol GRPC needs the grpc block.
            (
                "            grpc: {}",
                "            http: {}",
                "grpc must be specified when protocol is set to 'GRPC'",
            ),
        ],
    },
    Example {
        file: "examples/envoy-gateway.yaml",
        crds: &["envoy-gateway", "gateway-api"],
        broken: &[(
            "headersToBackend:",
            "headersToUpstream:",
            "extAuth.http.headersToUpstream: field not declared in schema",
        )],
    },
    Example {
        file: "examples/envoy-gateway-grpc.yaml",
        crds: &["envoy-gateway", "gateway-api"],
        broken: &[
            (
                "contextExtensions:",
                "contextExtension:",
                "extAuth.contextExtension: field not declared in schema",
            ),
            (
                "type: Value, value: monitoring",
                "type: ValueRef, value: monitoring",
                "Exactly one of value or valueRef must be set",
            ),
        ],
    },
    Example {
        file: "examples/istio.yaml",
        crds: &["istio"],
        broken: &[
            (
                "action: CUSTOM",
                "action: EXTERNAL",
                "Unsupported value: \"EXTERNAL\"",
            ),
            (
                "h2UpgradePolicy:",
                "h2UpgradePolicies:",
                "http.h2UpgradePolicies: field not declared in schema",
            ),
        ],
    },
    Example {
        file: "examples/contour.yaml",
        crds: &["contour"],
        broken: &[
            (
                "authPolicy:",
                "authPolicies:",
                "authorization.authPolicies: field not declared in schema",
            ),
            (
                "protocol: h2c",
                "protocol: grpc",
                "Unsupported value: \"grpc\"",
            ),
        ],
    },
    Example {
        file: "examples/traefik.yaml",
        crds: &["traefik"],
        broken: &[(
            "authResponseHeaders:",
            "responseHeaders:",
            "forwardAuth.responseHeaders: field not declared in schema",
        )],
    },
    Example {
        file: "examples/ingress-nginx.yaml",
        crds: &[],
        broken: &[(
            "pathType: Prefix",
            "pathType: Prefixed",
            "Unsupported value: \"Prefixed\"",
        )],
    },
];

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn docs(path: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// The CRD sets tests/gateway-crds/fetch.sh keeps (fetching what is missing): name → dir.
fn crd_sets() -> &'static BTreeMap<String, PathBuf> {
    static SETS: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    SETS.get_or_init(|| {
        let script = format!("{ROOT}/tests/gateway-crds/fetch.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        assert!(
            out.status.success(),
            "{script} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let sets: BTreeMap<String, PathBuf> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(name, dir)| (name.to_owned(), PathBuf::from(dir)))
            .collect();
        for name in [
            "gateway-api",
            "envoy-gateway",
            "istio",
            "istio-api",
            "contour",
            "traefik",
        ] {
            assert!(
                sets.contains_key(name),
                "{script} printed no {name} set: {sets:?}"
            );
        }
        sets
    })
}

/// Every YAML file below `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Where `want` (an example document) differs from `stored` (the object read back): every
/// field the example sets must be stored with the same value; the server may add defaults.
fn missing(want: &Value, stored: &Value, at: &str, out: &mut Vec<String>) {
    match (want, stored) {
        (Value::Object(w), Value::Object(s)) => {
            for (k, v) in w {
                match s.get(k) {
                    Some(sv) => missing(v, sv, &format!("{at}.{k}"), out),
                    None => out.push(format!("{at}.{k} was dropped")),
                }
            }
        }
        (Value::Array(w), Value::Array(s)) if w.len() == s.len() => {
            for (i, (wv, sv)) in w.iter().zip(s).enumerate() {
                missing(wv, sv, &format!("{at}[{i}]"), out);
            }
        }
        (Value::Number(w), Value::Number(s)) if w.as_f64() == s.as_f64() => {}
        (w, s) if w == s => {}
        (w, s) => out.push(format!("{at}: wrote {w}, stored {s}")),
    }
}

/// Every document of `docs` (applied from `file`) reads back as written: read in the version
/// written (`kind.version.group`), not the preferred one; the server may add defaults.
#[track_caller]
fn assert_stored_as_written(cp: &ControlPlane, docs: &[Value], file: &str, out: &str) {
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap();
        let resource = match doc["apiVersion"].as_str().unwrap().split_once('/') {
            Some((group, version)) => format!("{kind}.{version}.{group}"),
            None => kind.to_owned(),
        };
        let name = doc["metadata"]["name"].as_str().unwrap();
        let ns = doc["metadata"]["namespace"].as_str().unwrap();
        let stored = cp.get_json(&[&resource, name, "-n", ns]);
        let mut diffs = Vec::new();
        missing(doc, &stored, "", &mut diffs);
        assert!(
            diffs.is_empty(),
            "{file}: {resource} {ns}/{name} was not stored as written: {diffs:?}\n{out}"
        );
    }
}

#[test]
fn examples_are_accepted_by_the_upstream_crds_and_broken_copies_are_refused() {
    let sets = crd_sets();
    let cp = ControlPlane::start();

    // The upstream CRDs, server-side (the largest are over the 256 KiB annotation limit of a
    // client-side apply), each set only once.
    let mut needed: Vec<&str> = EXAMPLES
        .iter()
        .flat_map(|e| e.crds.iter().copied())
        .collect();
    needed.sort();
    needed.dedup();
    for name in &needed {
        let files = yaml_files(&sets[*name]);
        assert!(
            !files.is_empty(),
            "no CRD files in {}",
            sets[*name].display()
        );
        for file in files {
            let file = file.to_str().unwrap();
            let (ok, _, err) = cp.kubectl(&["apply", "--server-side", "-f", file], None);
            assert!(ok, "installing {name} CRDs from {file} failed: {err}");
        }
    }
    cp.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=180s",
    ]);

    let mut namespaces: Vec<String> = EXAMPLES
        .iter()
        .flat_map(|e| docs(e.file))
        .filter_map(|d| d["metadata"]["namespace"].as_str().map(str::to_owned))
        .collect();
    namespaces.sort();
    namespaces.dedup();
    for ns in &namespaces {
        cp.kubectl_ok(&["create", "namespace", ns]);
    }

    for example in EXAMPLES {
        let file = example.file;
        let path = format!("{ROOT}/{file}");
        let text = read(file);

        // Each broken copy is refused, for the reason it was broken for.
        for (from, to, expect) in example.broken {
            assert_eq!(
                text.matches(from).count(),
                1,
                "{file}: the broken copy replaces {from:?}, which must occur exactly once"
            );
            let broken = text.replace(from, to);
            let (ok, out, err) = cp.kubectl(
                &[
                    "apply",
                    "--server-side",
                    "--dry-run=server",
                    "--validate=strict",
                    "-f",
                    "-",
                ],
                Some(&broken),
            );
            assert!(
                !ok,
                "{file} with {from:?} → {to:?} was accepted, so this test could not notice a \
                 broken example:\n{out}{err}"
            );
            assert!(
                err.contains(expect),
                "{file} with {from:?} → {to:?} was refused, but not for {expect:?}:\n{err}"
            );
        }

        // The example itself is accepted, with no warning, and stored as written.
        let (ok, out, err) = cp.kubectl(
            &["apply", "--server-side", "--validate=strict", "-f", &path],
            None,
        );
        assert!(ok, "{file} was refused by the API server:\n{err}");
        assert!(
            !err.to_ascii_lowercase().contains("warning"),
            "{file} applied with warnings:\n{err}"
        );
        assert_stored_as_written(&cp, &docs(file), file, &out);
    }

    // What `accessgate migrate` writes for the ingress-nginx example is accepted the same way:
    // strict server-side apply against the same upstream CRDs, stored as written.
    let out = tempfile::tempdir().unwrap();
    let migrated = Command::new(env!("CARGO_BIN_EXE_accessgate"))
        .args([
            "migrate",
            "--from",
            &format!("{ROOT}/examples/ingress-nginx.yaml"),
        ])
        .args([
            "--gateway",
            "gateway-system/public",
            "--out",
            out.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stdout)
    );
    let written = yaml_files(out.path());
    assert_eq!(written.len(), 2, "{written:?}");
    for file in written {
        let file = file.to_str().unwrap();
        let (ok, out, err) = cp.kubectl(
            &["apply", "--server-side", "--validate=strict", "-f", file],
            None,
        );
        assert!(ok, "migrate's {file} was refused by the API server:\n{err}");
        assert!(
            !err.to_ascii_lowercase().contains("warning"),
            "{file}: {err}"
        );
        let text = std::fs::read_to_string(file).unwrap();
        let written: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        assert_stored_as_written(&cp, &written, file, &out);
    }
}

/// The `name = N;` fields of `message NAME { ... }` in a .proto file (its own fields, those
/// of its `oneof`s included; not those of nested messages), in lowerCamelCase as in YAML.
fn proto_fields(proto: &str, message: &str) -> Vec<String> {
    let lines: Vec<&str> = proto
        .lines()
        .map(|l| l.split("//").next().unwrap().trim())
        .collect();
    let start = lines
        .iter()
        .position(|l| *l == format!("message {message} {{"))
        .unwrap_or_else(|| panic!("no message {message} in the proto"));
    let mut stack = vec!["message"];
    let mut fields = Vec::new();
    for line in &lines[start + 1..] {
        if stack.is_empty() {
            break;
        }
        if let Some(head) = line.strip_suffix('{') {
            stack.push(head.split_whitespace().next().unwrap_or(""));
            continue;
        }
        if line.starts_with('}') {
            stack.pop();
            continue;
        }
        // Own fields: directly in the message, or in one of its oneofs.
        let own = stack.len() == 1 || (stack.len() == 2 && stack[1] == "oneof");
        if let (true, Some((decl, _number))) = (own, line.split_once('=')) {
            if let Some(name) = decl.split_whitespace().last() {
                fields.push(lower_camel(name));
            }
        }
    }
    fields
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The fields of `meshConfig` (Istio's MeshConfig) that are not in the proto, down to the
/// ext_authz gRPC provider, and values the proto's JSON form would not read.
fn mesh_config_errors(values: &Value, proto: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let check = |errors: &mut Vec<String>, obj: &Value, message: &str, at: &str| {
        let Some(obj) = obj.as_object() else {
            errors.push(format!("{at} is missing or not an object"));
            return;
        };
        let fields = proto_fields(proto, message);
        for key in obj.keys() {
            if !fields.contains(key) {
                errors.push(format!("{at}.{key} is not a field of {message}"));
            }
        }
    };
    let mesh = &values["meshConfig"];
    check(&mut errors, mesh, "MeshConfig", "meshConfig");
    for (i, provider) in mesh["extensionProviders"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let at = format!("meshConfig.extensionProviders[{i}]");
        check(&mut errors, provider, "ExtensionProvider", &at);
        let grpc = &provider["envoyExtAuthzGrpc"];
        check(
            &mut errors,
            grpc,
            "EnvoyExternalAuthorizationGrpcProvider",
            &format!("{at}.envoyExtAuthzGrpc"),
        );
        if grpc["port"].as_u64().is_none_or(|p| p == 0 || p > 65535) {
            errors.push(format!("{at}.envoyExtAuthzGrpc.port is not a port"));
        }
        // google.protobuf.Duration in JSON: seconds with an `s` suffix.
        if let Some(t) = grpc.get("timeout") {
            let ok = t
                .as_str()
                .and_then(|t| t.strip_suffix('s'))
                .is_some_and(|n| n.parse::<f64>().is_ok());
            if !ok {
                errors.push(format!(
                    "{at}.envoyExtAuthzGrpc.timeout {t} is not a Duration"
                ));
            }
        }
    }
    errors
}

#[test]
fn istio_mesh_config_names_only_fields_of_istios_mesh_config_proto() {
    let sets = crd_sets();
    let proto = std::fs::read_to_string(sets["istio-api"].join("mesh/v1alpha1/config.proto"))
        .expect("config.proto in the istio-api set");
    let text = read("examples/istio-meshconfig.yaml");
    let values: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(mesh_config_errors(&values, &proto), Vec::<String>::new());

    // The check notices a misspelt field and a malformed value.
    assert!(
        proto_fields(&proto, "EnvoyExternalAuthorizationGrpcProvider")
            .contains(&"failOpen".to_owned())
    );
    for (from, to, expect) in [
        (
            "port: 80",
            "prot: 80",
            "envoyExtAuthzGrpc.prot is not a field",
        ),
        (
            "envoyExtAuthzGrpc:",
            "envoyExtAuthzGRPC:",
            "envoyExtAuthzGRPC is not a field",
        ),
        (
            "timeout: 2s",
            "timeout: 2000",
            "timeout 2000 is not a Duration",
        ),
    ] {
        assert_eq!(text.matches(from).count(), 1, "{from:?}");
        let broken: Value = serde_saphyr::from_str(&text.replace(from, to)).unwrap();
        let errors = mesh_config_errors(&broken, &proto);
        assert!(
            errors.iter().any(|e| e.contains(expect)),
            "{from:?} → {to:?}: {errors:?}"
        );
    }
}

/// The example document of `kind` in `file`.
fn doc(file: &str, kind: &str) -> Value {
    docs(file)
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("{file} has no {kind}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str())
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn examples_reach_accessgate_and_name_the_example_policy() {
    let policies = parse_manifests("policy", &read("examples/cloudflare-grafana.yaml")).unwrap();
    let PolicyEntry::Ready(policy) = &policies[0].1 else {
        panic!("examples/cloudflare-grafana.yaml is not a valid policy")
    };
    let (ns, name) = (policy.key.namespace.as_str(), policy.key.name.as_str());
    assert_eq!((ns, name), ("monitoring", "grafana"));
    let claim_headers: Vec<String> = policy
        .claim_headers
        .iter()
        .map(|h| h.header.to_string())
        .collect();
    let hosts = strings(
        &serde_saphyr::from_str::<Value>(&read("examples/cloudflare-grafana.yaml")).unwrap()["spec"]
            ["hosts"],
    );
    let accessgate_ref = |r: &Value, what: &str| {
        assert_eq!(
            (&r["name"], &r["namespace"], &r["port"]),
            (
                &Value::from("accessgate"),
                &Value::from("accessgate-system"),
                &Value::from(80)
            ),
            "{what}"
        );
    };
    let grants = |file: &str, from_group: &str, from_kind: &str| {
        let g = doc(file, "ReferenceGrant");
        assert_eq!(g["metadata"]["namespace"], "accessgate-system", "{file}");
        assert!(
            g["spec"]["from"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["group"] == from_group
                    && f["kind"] == from_kind
                    && f["namespace"] == ns),
            "{file}: the ReferenceGrant does not admit {from_kind} from {ns}"
        );
        assert!(
            g["spec"]["to"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["group"] == "" && t["kind"] == "Service" && t["name"] == "accessgate"),
            "{file}: the ReferenceGrant does not name the accessgate Service"
        );
    };

    // Gateway API ExternalAuth, HTTP: the Envoy endpoint naming the policy; the token headers
    // listed (nothing else is forwarded); every identity header copied back.
    let file = "examples/gateway-api-external-auth-http.yaml";
    let route = doc(file, "HTTPRoute");
    let auth = &route["spec"]["rules"][0]["filters"][0]["externalAuth"];
    assert_eq!(auth["protocol"], "HTTP");
    accessgate_ref(&auth["backendRef"], file);
    assert_eq!(
        auth["http"]["path"],
        format!("/envoy/{ns}/{name}"),
        "{file}"
    );
    let sent = strings(&auth["http"]["allowedHeaders"]);
    for h in ["cookie", "cf-access-jwt-assertion"] {
        assert!(
            sent.contains(&h.to_owned()),
            "{file}: {h} is not in allowedHeaders"
        );
    }
    assert!(
        !sent
            .iter()
            .any(|h| h.starts_with("x-forwarded-") || h.starts_with("x-original-")),
        "{file}: another dialect's headers are forwarded: {sent:?}"
    );
    let copied = strings(&auth["http"]["allowedResponseHeaders"]);
    for h in &claim_headers {
        assert!(
            copied.contains(h),
            "{file}: {h} is not in allowedResponseHeaders"
        );
    }
    grants(file, "gateway.networking.k8s.io", "HTTPRoute");

    // Gateway API ExternalAuth, gRPC: no per-route context, so the route's hosts must be
    // ones the policy claims.
    let file = "examples/gateway-api-external-auth-grpc.yaml";
    let route = doc(file, "HTTPRoute");
    let auth = &route["spec"]["rules"][0]["filters"][0]["externalAuth"];
    assert_eq!(auth["protocol"], "GRPC");
    accessgate_ref(&auth["backendRef"], file);
    let sent = strings(&auth["grpc"]["allowedHeaders"]);
    assert!(
        sent.is_empty()
            || ["cookie", "cf-access-jwt-assertion"]
                .iter()
                .all(|h| sent.contains(&h.to_string())),
        "{file}: allowedHeaders drops the token headers: {sent:?}"
    );
    for h in strings(&route["spec"]["hostnames"]) {
        assert!(
            hosts.contains(&h),
            "{file}: {h} is not claimed by the policy"
        );
    }
    grants(file, "gateway.networking.k8s.io", "HTTPRoute");

    // Envoy Gateway, HTTP and gRPC.
    let file = "examples/envoy-gateway.yaml";
    let ext = &doc(file, "SecurityPolicy")["spec"]["extAuth"];
    accessgate_ref(&ext["http"]["backendRefs"][0], file);
    assert_eq!(ext["http"]["path"], format!("/envoy/{ns}/{name}"), "{file}");
    let sent = strings(&ext["headersToExtAuth"]);
    for h in ["cookie", "cf-access-jwt-assertion"] {
        assert!(
            sent.contains(&h.to_owned()),
            "{file}: {h} is not in headersToExtAuth"
        );
    }
    for h in &claim_headers {
        assert!(
            strings(&ext["http"]["headersToBackend"]).contains(h),
            "{file}: {h}"
        );
    }
    grants(file, "gateway.envoyproxy.io", "SecurityPolicy");

    let file = "examples/envoy-gateway-grpc.yaml";
    let ext = &doc(file, "SecurityPolicy")["spec"]["extAuth"];
    accessgate_ref(&ext["grpc"]["backendRefs"][0], file);
    let context: BTreeMap<&str, &str> = ext["contextExtensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["type"], "Value", "{file}");
            (c["name"].as_str().unwrap(), c["value"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        context,
        BTreeMap::from([("namespace", ns), ("name", name)]),
        "{file}"
    );
    assert!(
        ext.get("headersToExtAuth").is_none(),
        "{file}: gRPC should send every header"
    );
    assert_ne!(ext["failOpen"], true, "{file}");
    grants(file, "gateway.envoyproxy.io", "SecurityPolicy");

    // Istio: the AuthorizationPolicy's provider is the mesh config's, which reaches accessgate.
    let mesh: Value = serde_saphyr::from_str(&read("examples/istio-meshconfig.yaml")).unwrap();
    let file = "examples/istio.yaml";
    let authz = doc(file, "AuthorizationPolicy");
    assert_eq!(authz["spec"]["action"], "CUSTOM");
    let provider = authz["spec"]["provider"]["name"].as_str().unwrap();
    let providers = mesh["meshConfig"]["extensionProviders"].as_array().unwrap();
    let grpc = &providers
        .iter()
        .find(|p| p["name"] == provider)
        .unwrap_or_else(|| panic!("no extension provider {provider} in the mesh config"))["envoyExtAuthzGrpc"];
    assert_eq!(
        (&grpc["service"], &grpc["port"]),
        (&Value::from(SVC_HOST), &Value::from(80))
    );
    assert_ne!(grpc["failOpen"], true);
    assert!(
        !authz["spec"]["rules"].as_array().unwrap().is_empty(),
        "{file}: a CUSTOM policy without rules never calls the provider"
    );
    assert_eq!(doc(file, "DestinationRule")["spec"]["host"], SVC_HOST);

    // Contour: the ExtensionService speaks h2c to accessgate; the context names the policy.
    let file = "examples/contour.yaml";
    let ext = doc(file, "ExtensionService");
    assert_eq!(ext["metadata"]["namespace"], "accessgate-system");
    assert_eq!(
        ext["spec"]["protocol"], "h2c",
        "{file}: accessgate serves gRPC as h2c"
    );
    assert_eq!(
        (
            &ext["spec"]["services"][0]["name"],
            &ext["spec"]["services"][0]["port"]
        ),
        (&Value::from("accessgate"), &Value::from(80))
    );
    let vhost = &doc(file, "HTTPProxy")["spec"]["virtualhost"];
    let auth = &vhost["authorization"];
    assert_eq!(
        (
            &auth["extensionRef"]["name"],
            &auth["extensionRef"]["namespace"]
        ),
        (&ext["metadata"]["name"], &ext["metadata"]["namespace"])
    );
    assert_eq!(auth["authPolicy"]["context"]["namespace"], ns, "{file}");
    assert_eq!(auth["authPolicy"]["context"]["name"], name, "{file}");
    assert_ne!(auth["failOpen"], true, "{file}");
    assert!(
        vhost["tls"].is_object(),
        "{file}: Contour authorizes only TLS virtual hosts"
    );

    // Traefik ForwardAuth: the forward endpoint naming the policy, every identity header.
    let file = "examples/traefik.yaml";
    let fwd = &doc(file, "Middleware")["spec"]["forwardAuth"];
    assert_eq!(
        fwd["address"],
        format!("http://{SVC_HOST}/forward/{ns}/{name}"),
        "{file}"
    );
    for h in &claim_headers {
        assert!(
            strings(&fwd["authResponseHeaders"]).contains(h),
            "{file}: {h}"
        );
    }
    assert_ne!(fwd["trustForwardHeader"], true, "{file}");
}
