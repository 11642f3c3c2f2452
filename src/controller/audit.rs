//! Which Ingresses reach a policy, and whether they protect its identity headers. Pure: the
//! Ingresses and the index are passed in.
//!
//! An Ingress reaches a policy through `nginx.ingress.kubernetes.io/auth-url`: by name
//! (`…/auth/{ns}/{name}`, `…/forward/{ns}/{name}`), or by host routing (bare `…/auth`, where
//! each of its rules' host and path selects a policy as requests would). It protects the
//! identity headers only if `auth-response-headers` lists every header the policy maps: a
//! header left out is passed from the client to the app unchanged, so anyone could forge it.
//! (`global-auth-url` lives in the ingress controller's ConfigMap, which accessgate does not
//! read; such routes are not counted here.)

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;

use crate::core::index::PolicyIndex;
use crate::core::policy::{CompiledPolicy, PolicyKey};

pub const AUTH_URL: &str = "nginx.ingress.kubernetes.io/auth-url";
pub const RESPONSE_HEADERS: &str = "nginx.ingress.kubernetes.io/auth-response-headers";

/// Names of this namespace's Ingresses listed in status; more are only counted.
const MAX_LISTED: usize = 50;

/// What the Ingresses say about one policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// Ingresses of the policy's own namespace that reach it (`name`), sorted.
    pub ingresses: Vec<String>,
    /// Ingresses of other namespaces that reach it: counted, never named (a tenant must not
    /// learn another namespace's objects from its own policy's status).
    pub elsewhere: u32,
    /// Ingresses (own namespace by name, others as `another namespace`) whose
    /// `auth-response-headers` omit mapped headers, with the headers.
    pub unprotected: Vec<(String, Vec<String>)>,
}

/// Every policy reached by at least one Ingress, with its audit.
pub fn audit<'a>(
    ingresses: impl IntoIterator<Item = &'a Ingress>,
    index: &PolicyIndex,
) -> BTreeMap<PolicyKey, Audit> {
    let mut out: BTreeMap<PolicyKey, Audit> = BTreeMap::new();
    for ing in ingresses {
        let namespace = ing.metadata.namespace.as_deref().unwrap_or_default();
        let name = ing.metadata.name.as_deref().unwrap_or_default();
        let annotations = ing.metadata.annotations.as_ref();
        let Some(auth_url) = annotations.and_then(|a| a.get(AUTH_URL)) else {
            continue;
        };
        let listed: Vec<String> = annotations
            .and_then(|a| a.get(RESPONSE_HEADERS))
            .map(|h| {
                h.split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let mut reached: Vec<&CompiledPolicy> = Vec::new();
        match named_policy(auth_url) {
            Some((ns, policy)) => {
                if let Ok(p) = index.by_name(ns, policy) {
                    reached.push(p);
                }
            }
            None if is_bare_auth(auth_url) => {
                for (host, path) in rule_routes(ing) {
                    if let Ok(p) = index.by_route(&host, &path)
                        && !reached.iter().any(|r| r.key == p.key)
                    {
                        reached.push(p);
                    }
                }
            }
            None => {}
        }
        for policy in reached {
            let entry = out.entry(policy.key.clone()).or_default();
            let same_namespace = policy.key.namespace == namespace;
            if same_namespace {
                entry.ingresses.push(name.to_owned());
            } else {
                entry.elsewhere += 1;
            }
            let missing: Vec<String> = policy
                .claim_headers
                .iter()
                .map(|h| h.header.as_str().to_owned())
                .filter(|h| !listed.contains(h))
                .collect();
            if !missing.is_empty() {
                let who = if same_namespace {
                    format!("Ingress {name}")
                } else {
                    "an Ingress in another namespace".to_owned()
                };
                entry.unprotected.push((who, missing));
            }
        }
    }
    for a in out.values_mut() {
        a.ingresses.sort();
        a.ingresses.dedup();
        a.ingresses.truncate(MAX_LISTED);
        a.unprotected.sort();
    }
    out
}

/// `(namespace, name)` from an auth URL naming a policy: `…/auth/{ns}/{name}` or
/// `…/forward/{ns}/{name}` (query and trailing parts ignored).
fn named_policy(auth_url: &str) -> Option<(&str, &str)> {
    let path = url_path(auth_url);
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("auth" | "forward"), Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => {
            Some((ns, name))
        }
        _ => None,
    }
}

fn is_bare_auth(auth_url: &str) -> bool {
    matches!(
        url_path(auth_url).trim_end_matches('/'),
        "/auth" | "/forward"
    )
}

/// The path of an auth URL, without scheme, authority and query.
fn url_path(auth_url: &str) -> &str {
    let rest = auth_url.split_once("://").map_or(auth_url, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    path.split(['?', '#']).next().unwrap_or_default()
}

/// The (host, path) pairs an Ingress routes: each rule's host with each of its paths (`/`
/// when it lists none). Rules without a host match any host: they select no policy by host.
fn rule_routes(ing: &Ingress) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for rule in ing.spec.iter().flat_map(|s| s.rules.iter().flatten()) {
        let Some(host) = rule.host.as_deref() else {
            continue;
        };
        let paths: Vec<String> = rule
            .http
            .iter()
            .flat_map(|h| h.paths.iter())
            .map(|p| p.path.clone().unwrap_or_else(|| "/".into()))
            .collect();
        if paths.is_empty() {
            out.push((host.to_ascii_lowercase(), "/".into()));
        }
        for path in paths {
            out.push((host.to_ascii_lowercase(), path));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::index::Entry;
    use crate::core::policy::{AccessPolicySpec, ClaimHeader, IssuerSpec, compile};
    use std::sync::Arc;

    fn policy(ns: &str, name: &str, hosts: &[&str]) -> (PolicyKey, Entry) {
        let spec = AccessPolicySpec {
            issuer: IssuerSpec {
                team_domain: Some("t.cloudflareaccess.com".into()),
                ..Default::default()
            },
            audiences: vec!["a".repeat(64)],
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            claim_headers: Some(vec![
                ClaimHeader {
                    header: "X-Auth-Request-Email".into(),
                    claim: "email".into(),
                    join: None,
                    format: None,
                },
                ClaimHeader {
                    header: "X-Auth-Request-Groups".into(),
                    claim: "custom.groups".into(),
                    join: None,
                    format: None,
                },
            ]),
            ..Default::default()
        };
        let key = PolicyKey::new(ns, name);
        let compiled = compile(key.clone(), Some(1), &spec).unwrap();
        (key, Entry::Ready(Arc::new(compiled)))
    }

    fn ingress(ns: &str, name: &str, auth_url: &str, headers: Option<&str>, host: &str) -> Ingress {
        let mut annotations = serde_json::json!({ AUTH_URL: auth_url });
        if let Some(h) = headers {
            annotations[RESPONSE_HEADERS] = serde_json::json!(h);
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "spec": {"rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"number": 80}}}}
            ]}}]}
        }))
        .unwrap()
    }

    #[test]
    fn ingresses_reach_policies_by_name_and_by_host() {
        let index = PolicyIndex::build([policy("apps", "web", &["web.example.com"])]);
        let svc = "http://accessgate.accessgate-system.svc.cluster.local";
        let all = [
            ingress(
                "apps",
                "named",
                &format!("{svc}/auth/apps/web"),
                Some("X-Auth-Request-Email, x-auth-request-groups"),
                "a.example.com",
            ),
            ingress(
                "apps",
                "routed",
                &format!("{svc}/auth?host=$host"),
                Some("X-Auth-Request-Email"),
                "web.example.com",
            ),
            ingress(
                "other",
                "theirs",
                &format!("{svc}/auth/apps/web"),
                None,
                "b.example.com",
            ),
            ingress(
                "apps",
                "unrelated",
                &format!("{svc}/auth/apps/nope"),
                None,
                "c.example.com",
            ),
        ];
        let audits = audit(&all, &index);
        let a = &audits[&PolicyKey::new("apps", "web")];
        assert_eq!(a.ingresses, ["named", "routed"]);
        assert_eq!(a.elsewhere, 1);
        assert_eq!(
            a.unprotected,
            vec![
                (
                    "Ingress routed".to_owned(),
                    vec!["x-auth-request-groups".to_owned()]
                ),
                (
                    "an Ingress in another namespace".to_owned(),
                    vec![
                        "x-auth-request-email".to_owned(),
                        "x-auth-request-groups".to_owned()
                    ]
                ),
            ]
        );
        assert_eq!(audits.len(), 1);
    }

    #[test]
    fn auth_urls_are_read_by_path() {
        assert_eq!(named_policy("http://a/auth/ns/n"), Some(("ns", "n")));
        assert_eq!(
            named_policy("http://a:80/forward/ns/n?x=1"),
            Some(("ns", "n"))
        );
        assert_eq!(named_policy("http://a/auth"), None);
        assert_eq!(named_policy("http://a/oauth2/auth"), None);
        assert!(is_bare_auth("http://a/auth?host=$host"));
        assert!(!is_bare_auth("http://a/auth/ns/n"));
    }
}
