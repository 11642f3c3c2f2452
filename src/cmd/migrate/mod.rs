//! `accessgate migrate`: a check that auth survives the move off ingress-nginx. Reads
//! Ingresses (YAML files, or the cluster, read-only), reports per Ingress and target what works
//! unchanged, what needs a change and what would silently lose auth, and writes the Gateway
//! API and Envoy Gateway manifests that keep it. Exit 0: nothing lost on the chosen targets;
//! 3: auth would be lost on one (the report says where); 1: the input could not be read.
//! docs/proxies.md, "Migrating off ingress-nginx".

pub mod analyze;
pub mod render;

use std::path::{Path, PathBuf};

use anyhow::Context;
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::{Value, json};

use crate::controller::install::InstallService;
use analyze::{IngressReport, TARGETS, Target, Verdict};
use render::Flavor;

/// The exit status when auth would be lost.
pub const AUTH_LOST: i32 = 3;

/// What to read, where to write, and which targets count.
pub struct MigrateArgs {
    /// YAML files or directories of them; empty: the cluster (KUBECONFIG or in-cluster).
    pub from: Vec<PathBuf>,
    /// The controller ConfigMap's `global-auth-url`, which no Ingress shows.
    pub global_auth_url: Option<String>,
    pub install: InstallService,
    /// The Gateway the written routes attach to: (namespace, name).
    pub gateway: (String, String),
    /// Where to write `gateway-api/` and `envoy-gateway/` manifests; `None`: nothing written.
    pub out: Option<PathBuf>,
    pub json: bool,
    /// The targets whose lost auth fails the run.
    pub targets: Vec<Target>,
}

/// Runs the check; returns the exit status.
pub async fn run(args: &MigrateArgs) -> anyhow::Result<i32> {
    let ingresses = if args.from.is_empty() {
        from_cluster().await?
    } else {
        let mut all = Vec::new();
        for path in &args.from {
            all.extend(from_path(path)?);
        }
        all
    };
    let reports: Vec<(Ingress, IngressReport)> = ingresses
        .into_iter()
        .filter_map(|ing| {
            let report = analyze::analyze(&ing, &args.install, args.global_auth_url.as_deref())?;
            Some((ing, report))
        })
        .collect();

    let mut written = Vec::new();
    let mut unwritten = Vec::new();
    if let Some(out) = &args.out {
        for (ing, report) in &reports {
            for (flavor, dir) in [
                (Flavor::GatewayApi, "gateway-api"),
                (Flavor::EnvoyGateway, "envoy-gateway"),
            ] {
                let gateway = (args.gateway.0.as_str(), args.gateway.1.as_str());
                match render::manifests(ing, report, &args.install, gateway, flavor) {
                    Ok(docs) => {
                        let file = out
                            .join(dir)
                            .join(format!("{}-{}.yaml", report.namespace, report.name));
                        write_docs(&file, &docs)?;
                        written.push(file.display().to_string());
                    }
                    Err(why) => unwritten.push(format!(
                        "{dir}: {}/{}: {why}",
                        report.namespace, report.name
                    )),
                }
            }
        }
    }

    let lost = reports.iter().any(|(_, r)| {
        args.targets
            .iter()
            .any(|t| r.outcome(*t) == Verdict::AuthLost)
    });
    if args.json {
        let ingresses: Vec<Value> = reports
            .iter()
            .map(|(_, r)| {
                let outcomes: serde_json::Map<String, Value> = TARGETS
                    .iter()
                    .map(|t| (kebab(t), json!(r.outcome(*t))))
                    .collect();
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["outcomes"] = Value::Object(outcomes);
                v
            })
            .collect();
        let doc = json!({
            "authLost": lost,
            "targets": args.targets.iter().map(kebab).collect::<Vec<_>>(),
            "ingresses": ingresses,
            "written": written,
            "notWritten": unwritten,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_text(&reports, &written, &unwritten);
        println!(
            "{}",
            if lost {
                "AUTH WOULD BE LOST on a chosen target: see the auth-lost lines above"
            } else {
                "auth survives on every chosen target"
            }
        );
    }
    Ok(if lost { AUTH_LOST } else { 0 })
}

fn kebab(t: &Target) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn print_text(reports: &[(Ingress, IngressReport)], written: &[String], unwritten: &[String]) {
    for (_, r) in reports {
        let policy = match &r.policy {
            Some(analyze::PolicyRef::Name { namespace, name }) => {
                format!("policy {namespace}/{name}")
            }
            Some(analyze::PolicyRef::Route) => "policy chosen by host (bare /auth)".into(),
            None => "auth-url elsewhere (not this accessgate)".into(),
        };
        println!("ingress  {}/{}: {policy}", r.namespace, r.name);
        for t in TARGETS {
            let verdict = kebab_verdict(r.outcome(t));
            println!("  {:<18} {verdict}", kebab(&t));
            for f in r
                .findings
                .iter()
                .filter(|f| f.target == t && f.verdict != Verdict::Unchanged)
            {
                println!(
                    "    {:<10} {:<24} {}",
                    kebab_verdict(f.verdict),
                    f.annotation,
                    f.detail
                );
            }
        }
    }
    for w in written {
        println!("wrote    {w}");
    }
    for u in unwritten {
        println!("NOT WRITTEN {u}");
    }
}

fn kebab_verdict(v: Verdict) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn write_docs(file: &Path, docs: &[Value]) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let mut text = String::from("# Written by `accessgate migrate`: review before applying.\n");
    for doc in docs {
        text.push_str("---\n");
        text.push_str(&serde_saphyr::to_string(doc)?);
    }
    std::fs::write(file, text).with_context(|| file.display().to_string())
}

/// Every Ingress in a YAML file, or in the YAML files of a directory (not recursing).
fn from_path(path: &Path) -> anyhow::Result<Vec<Ingress>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut f: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        f.sort();
        f
    } else {
        vec![path.to_owned()]
    };
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("{}: not YAML", file.display()))?;
        for doc in docs {
            let items = match doc["kind"].as_str() {
                Some("List") | Some("IngressList") => {
                    doc["items"].as_array().cloned().unwrap_or_default()
                }
                _ => vec![doc],
            };
            for item in items.into_iter().filter(|d| d["kind"] == "Ingress") {
                out.push(serde_json::from_value(item).with_context(|| {
                    format!("{}: an Ingress that does not read", file.display())
                })?);
            }
        }
    }
    Ok(out)
}

async fn from_cluster() -> anyhow::Result<Vec<Ingress>> {
    let client = kube::Client::try_default()
        .await
        .context("no cluster (give Ingress files instead)")?;
    let api: kube::Api<Ingress> = kube::Api::all(client);
    Ok(api.list(&Default::default()).await?.items)
}
