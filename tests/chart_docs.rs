//! The chart's documentation stays true: the values table in charts/accessgate/README.md is
//! generated from the `# --` comments in values.yaml (types from values.schema.json, defaults
//! from the values themselves), every value is documented, and Chart.yaml's metadata matches
//! the chart. Also what `decisionLog` renders (helm template, as the other chart tests).
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

// The decision log in the chart (`decisionLog`): rendered with `helm template` (helm from
// tests/controlplane/build-helm.sh, as the other chart tests).

const KEY_DIR: &str = "/var/run/accessgate/decision-log";

fn deployment(objs: &[Value]) -> &Value {
    named(objs, "Deployment", "accessgate")
}

fn args(objs: &[Value]) -> Vec<String> {
    deployment(objs)["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

fn decision_log_args(objs: &[Value]) -> Vec<String> {
    args(objs)
        .into_iter()
        .filter(|a| a.starts_with("--decision-log"))
        .collect()
}

/// The key volume's Secret name, and that the container mounts it read-only at KEY_DIR.
fn mounted_key_secret(objs: &[Value]) -> Option<(String, String)> {
    let pod = &deployment(objs)["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == "decision-log-key")?;
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "decision-log-key")
        .expect("the key volume is mounted");
    assert_eq!(mount["mountPath"], KEY_DIR);
    assert_eq!(mount["readOnly"], true);
    let items = volume["secret"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0]["path"], "key",
        "the file --decision-log-key-file names"
    );
    Some((
        volume["secret"]["secretName"].as_str().unwrap().to_owned(),
        items[0]["key"].as_str().unwrap().to_owned(),
    ))
}

fn secrets(objs: &[Value]) -> Vec<&Value> {
    find(objs, "Secret")
}

/// No Role or ClusterRole the chart renders grants anything on Secrets: the key is mounted.
fn assert_no_secret_rbac(objs: &[Value]) {
    for kind in ["Role", "ClusterRole"] {
        for role in find(objs, kind) {
            for rule in role["rules"].as_array().into_iter().flatten() {
                let resources = rule["resources"].as_array().unwrap();
                assert!(
                    !resources.iter().any(|r| r == "secrets" || r == "*"),
                    "{kind} {} grants {rule}",
                    role["metadata"]["name"]
                );
            }
        }
    }
}

#[test]
fn decision_log_renders_its_flags_and_mounts_the_chart_secret() {
    let objs = render(&[
        "--set",
        "decisionLog.enabled=true,decisionLog.sink=stderr,decisionLog.deniesPerSecond=7",
        "--set",
        "decisionLog.allowsPerSecond=0,decisionLog.email=true,decisionLog.queueLines=1000000",
    ]);
    assert_eq!(
        decision_log_args(&objs),
        [
            "--decision-log=stderr",
            "--decision-log-denies-per-second=7",
            "--decision-log-allows-per-second=0",
            "--decision-log-queue-lines=1000000",
            &format!("--decision-log-key-file={KEY_DIR}/key"),
            "--decision-log-email",
        ]
    );
    // The chart's Secret: one, with at least 32 random bytes under `key`, and it is what
    // every replica (the one pod template) mounts.
    let secrets = secrets(&objs);
    assert_eq!(secrets.len(), 1, "{:?}", kinds(&objs));
    let secret = secrets[0];
    assert_eq!(secret["metadata"]["name"], "accessgate-decision-log-key");
    assert_eq!(secret["metadata"]["namespace"], NS);
    let data = secret["data"].as_object().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["key"]);
    let b64 = data["key"].as_str().unwrap();
    // 48 characters, base64-encoded: 64 characters, no padding.
    assert_eq!(b64.len(), 64, "{b64}");
    assert!(
        b64.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
    );
    assert_eq!(
        mounted_key_secret(&objs),
        Some(("accessgate-decision-log-key".to_owned(), "key".to_owned()))
    );
    assert_no_secret_rbac(&objs);
    // Each render draws its own key (`helm template` has no cluster to look the old one up in).
    let again = render(&["--set", "decisionLog.enabled=true"]);
    assert_ne!(find(&again, "Secret")[0]["data"]["key"], data["key"]);
    // Defaults: stdout, 100 denies, 10 allows, 4096 lines, no e-mail.
    assert_eq!(
        decision_log_args(&again),
        [
            "--decision-log=stdout",
            "--decision-log-denies-per-second=100",
            "--decision-log-allows-per-second=10",
            "--decision-log-queue-lines=4096",
            &format!("--decision-log-key-file={KEY_DIR}/key"),
        ]
    );
}

#[test]
fn decision_log_with_an_existing_secret_mounts_it_and_creates_none() {
    let objs = render(&[
        "--set",
        "decisionLog.enabled=true,decisionLog.key.existingSecret=audit-key,decisionLog.key.secretKey=hmac.key",
        // The user's own volumes stay beside the key's.
        "--set",
        "extraVolumes[0].name=ca,extraVolumes[0].configMap.name=ca-bundle",
        "--set",
        "extraVolumeMounts[0].name=ca,extraVolumeMounts[0].mountPath=/etc/accessgate/ca",
    ]);
    assert!(secrets(&objs).is_empty(), "{:?}", kinds(&objs));
    assert_eq!(
        mounted_key_secret(&objs),
        Some(("audit-key".to_owned(), "hmac.key".to_owned()))
    );
    assert!(
        args(&objs).contains(&format!("--decision-log-key-file={KEY_DIR}/key")),
        "{:?}",
        args(&objs)
    );
    let pod = &deployment(&objs)["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"].as_array().unwrap().len(), 2);
    assert_eq!(pod["volumes"][1]["name"], "ca");
    assert_eq!(pod["containers"][0]["volumeMounts"][1]["name"], "ca");
    assert_no_secret_rbac(&objs);
}

#[test]
fn decision_log_off_renders_no_secret_flags_or_volume() {
    for extra in [
        &[][..],
        &["--set", "decisionLog.enabled=false,decisionLog.email=true"][..],
    ] {
        let objs = render(extra);
        assert!(secrets(&objs).is_empty(), "{:?}", kinds(&objs));
        assert!(decision_log_args(&objs).is_empty());
        let pod = &deployment(&objs)["spec"]["template"]["spec"];
        assert!(pod["volumes"].is_null(), "{}", pod["volumes"]);
        assert!(pod["containers"][0]["volumeMounts"].is_null());
    }
}

#[test]
fn decision_log_values_the_binary_would_refuse_are_refused() {
    for set in [
        "decisionLog.sink=/var/log/decisions.log",
        "decisionLog.sink=off",
        "decisionLog.queueLines=0",
        "decisionLog.queueLines=1000001",
        "decisionLog.deniesPerSecond=-1",
        "decisionLog.allowsPerSecond=4294967296",
        "decisionLog.key.secretKey=a/b",
        "decisionLog.key.existingSecret=Not_A_Name",
        "decisionLog.unknown=1",
        // The chart sets these itself: accessgate refuses a flag given twice.
        "extraArgs={--decision-log=stdout}",
        "extraArgs={--decision-log-email}",
    ] {
        let (ok, _, err) = helm(&[
            "template",
            "accessgate",
            CHART,
            "--namespace",
            NS,
            "--kube-version",
            "1.33.0",
            "--set",
            "decisionLog.enabled=true",
            "--set",
            set,
        ]);
        assert!(!ok, "{set} was accepted");
        assert!(
            err.contains("values don't meet the specifications"),
            "{set}: {err}"
        );
    }
}

const ASSERTION_DIR: &str = "/var/run/accessgate/assertion-keys";

fn assertion_args(objs: &[Value]) -> Vec<String> {
    args(objs)
        .into_iter()
        .filter(|a| a.starts_with("--assertion"))
        .collect()
}

/// The assertion key volume's Secret, mounted read-only as the key directory.
fn mounted_assertion_secret(objs: &[Value]) -> Option<String> {
    let pod = &deployment(objs)["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == "assertion-keys")?;
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "assertion-keys")
        .expect("the key volume is mounted");
    assert_eq!(mount["mountPath"], ASSERTION_DIR);
    assert_eq!(mount["readOnly"], true);
    assert!(volume["secret"]["items"].is_null(), "every key is a file");
    Some(volume["secret"]["secretName"].as_str().unwrap().to_owned())
}

#[test]
fn upstream_assertion_mounts_two_p256_keys_the_chart_draws_and_names_the_service_as_issuer() {
    let objs = render(&["--set", "upstreamAssertion.enabled=true"]);
    assert_eq!(
        assertion_args(&objs),
        [
            format!("--assertion-keys={ASSERTION_DIR}"),
            format!("--assertion-issuer=http://accessgate.{NS}.svc.cluster.local"),
            "--assertion-keys-secret=accessgate-assertion-keys".to_owned(),
            "--assertion-key-rotation=24h".to_owned(),
        ]
    );
    let drawn = secrets(&objs);
    assert_eq!(drawn.len(), 1, "{:?}", kinds(&objs));
    assert_eq!(drawn[0]["metadata"]["name"], "accessgate-assertion-keys");
    let data = drawn[0]["data"].as_object().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["current.pem", "next.pem"]);
    let pem = |k: &str| {
        let b = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            data[k].as_str().unwrap(),
        )
        .unwrap();
        String::from_utf8(b).unwrap()
    };
    // SEC1 P-256 keys, two different ones: what `--assertion-keys` reads.
    assert!(pem("current.pem").starts_with("-----BEGIN EC PRIVATE KEY-----"));
    assert_ne!(pem("current.pem"), pem("next.pem"));
    assert_eq!(
        mounted_assertion_secret(&objs).as_deref(),
        Some("accessgate-assertion-keys")
    );
    // The rotation (on by default): the flags, and get/update on that one Secret, nothing else.
    let secret_rules: Vec<&Value> = ["Role", "ClusterRole"]
        .iter()
        .flat_map(|k| find(&objs, k))
        .flat_map(|r| r["rules"].as_array().into_iter().flatten())
        .filter(|rule| {
            rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "secrets" || r == "*")
        })
        .collect();
    assert_eq!(
        secret_rules,
        [
            &serde_json::json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["accessgate-assertion-keys"], "verbs": ["get", "update"]})
        ]
    );
    let manual = render(&[
        "--set",
        "upstreamAssertion.enabled=true,upstreamAssertion.keys.rotateEvery=",
    ]);
    assert_no_secret_rbac(&manual);
    assert!(
        !args(&manual)
            .iter()
            .any(|a| a.starts_with("--assertion-key-rotation"))
    );

    let own = render(&[
        "--set",
        "upstreamAssertion.enabled=true,upstreamAssertion.keys.existingSecret=app-keys,upstreamAssertion.issuer=https://ag.example.com,upstreamAssertion.keys.rotateEvery=",
    ]);
    assert!(secrets(&own).is_empty(), "{:?}", kinds(&own));
    assert_eq!(mounted_assertion_secret(&own).as_deref(), Some("app-keys"));
    assert!(assertion_args(&own).contains(&"--assertion-issuer=https://ag.example.com".to_owned()));

    let off = render(&[]);
    assert!(assertion_args(&off).is_empty());
    assert_eq!(mounted_assertion_secret(&off), None);
}
