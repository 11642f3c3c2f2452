//! Which Ingresses reach a policy, and whether they protect its identity headers. Pure: the
//! Ingresses, the index and this install's Service are passed in.
//!
//! An Ingress reaches a policy when its `auth-url` reaches this install
//! ([`InstallService::path_on_this_install`]) and its path selects the policy: by name, exactly
//! as the auth listener routes, or on bare `/auth` by each rule's host and path, as requests
//! would. It protects the headers only if `auth-response-headers` lists every mapped one: a header
//! left out passes from the client to the app, so anyone could forge it. `global-auth-url` lives
//! in the controller's ConfigMap, which is not read. See docs/proxies.md, "The Ingress audit".

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;

use super::install::InstallService;
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

/// Every policy reached by at least one Ingress through `install`, with its audit.
pub fn audit<'a>(
    ingresses: impl IntoIterator<Item = &'a Ingress>,
    index: &PolicyIndex,
    install: &InstallService,
) -> BTreeMap<PolicyKey, Audit> {
    let mut out: BTreeMap<PolicyKey, Audit> = BTreeMap::new();
    for ing in ingresses {
        let namespace = ing.metadata.namespace.as_deref().unwrap_or_default();
        let name = ing.metadata.name.as_deref().unwrap_or_default();
        let annotations = ing.metadata.annotations.as_ref();
        let Some(path) = auth_url(ing).and_then(|u| install.path_on_this_install(u).ok()) else {
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
        match named_policy(path) {
            Some((ns, policy)) => {
                if let Ok(p) = index.by_name(ns, policy) {
                    reached.push(p);
                }
            }
            None if is_bare_auth(path) => {
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
            // The assertion header too: unlisted, a client's own copy reaches the app.
            let missing: Vec<String> = policy
                .claim_headers
                .iter()
                .map(|h| &h.header)
                .chain(policy.assertion.as_ref().map(|a| &a.header))
                .map(|h| h.as_str().to_owned())
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

/// The Ingress's `auth-url` annotation.
pub fn auth_url(ing: &Ingress) -> Option<&str> {
    ing.metadata
        .annotations
        .as_ref()?
        .get(AUTH_URL)
        .map(String::as_str)
}

/// `(namespace, name)` from the path (and query) of an auth URL naming a policy, matched as
/// the auth listener's routes match: `/auth/{ns}/{name}`, `/forward/{ns}/{name}`,
/// `/envoy/{ns}/{name}[/…]`. The segments are raw, as the listener reads them.
pub fn named_policy(path: &str) -> Option<(&str, &str)> {
    let mut parts = without_query(path).strip_prefix('/')?.splitn(4, '/');
    let (endpoint, ns, name) = (parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next();
    if ns.is_empty() || name.is_empty() {
        return None;
    }
    match (endpoint, rest) {
        ("auth" | "forward", None) => Some((ns, name)),
        ("envoy", None) => Some((ns, name)),
        ("envoy", Some(rest)) if !rest.is_empty() => Some((ns, name)),
        _ => None,
    }
}

fn is_bare_auth(path: &str) -> bool {
    matches!(without_query(path), "/auth" | "/forward")
}

fn without_query(path: &str) -> &str {
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
    use crate::api::{AccessPolicySpec, ClaimHeader, IssuerSpec};
    use crate::core::index::PolicyEntry;
    use crate::core::policy::compile;
    use std::sync::Arc;

    const SVC: &str = "http://accessgate.accessgate-system.svc.cluster.local";

    fn install() -> InstallService {
        InstallService::chart_default()
    }

    fn policy(ns: &str, name: &str, hosts: &[&str]) -> (PolicyKey, PolicyEntry) {
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
        (key, PolicyEntry::Ready(Arc::new(compiled)))
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
        let svc = SVC;
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
        let audits = audit(&all, &index, &install());
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

    /// The lie of issue 19: an auth-url naming another Service, namespace or port was
    /// listed in `usedBy` and judged for `HeadersProtected`, as if it reached the policy.
    #[test]
    fn ingresses_whose_auth_url_goes_elsewhere_are_not_audited() {
        let index = PolicyIndex::build([policy("apps", "web", &["web.example.com"])]);
        let all = [
            ingress(
                "apps",
                "misspelt-service",
                "http://acessgate.accessgate-system.svc.cluster.local/auth/apps/web",
                None,
                "a.example.com",
            ),
            ingress(
                "apps",
                "misspelt-namespace",
                "http://accessgate.accessgate-sytem.svc.cluster.local/auth/apps/web",
                None,
                "b.example.com",
            ),
            ingress(
                "apps",
                "other-port",
                "http://accessgate.accessgate-system.svc.cluster.local:8080/auth/apps/web",
                None,
                "c.example.com",
            ),
            ingress(
                "apps",
                "bare-name",
                "http://accessgate/auth?host=$host",
                None,
                "web.example.com",
            ),
            ingress(
                "apps",
                "short",
                "http://accessgate.accessgate-system/auth/apps/web",
                Some("X-Auth-Request-Email,X-Auth-Request-Groups"),
                "d.example.com",
            ),
        ];
        let audits = audit(&all, &index, &install());
        let a = &audits[&PolicyKey::new("apps", "web")];
        assert_eq!(a.ingresses, ["short"]);
        assert_eq!(a.elsewhere, 0);
        assert!(a.unprotected.is_empty(), "{:?}", a.unprotected);
    }

    #[test]
    fn policy_paths_are_matched_as_the_listener_routes_them() {
        assert_eq!(named_policy("/auth/ns/n"), Some(("ns", "n")));
        assert_eq!(named_policy("/forward/ns/n?x=1"), Some(("ns", "n")));
        assert_eq!(named_policy("/envoy/ns/n"), Some(("ns", "n")));
        assert_eq!(named_policy("/envoy/ns/n/original/path"), Some(("ns", "n")));
        for path in [
            "/auth",
            "/oauth2/auth",
            "/auth/ns/n/",
            "/auth/ns/n/more",
            "/auth//n",
            "/auth/ns/",
            "/AUTH/ns/n",
            "auth/ns/n",
            "",
        ] {
            assert_eq!(named_policy(path), None, "{path:?}");
        }
        assert!(is_bare_auth("/auth?host=$host"));
        assert!(is_bare_auth("/forward"));
        assert!(!is_bare_auth("/auth/ns/n"));
        assert!(!is_bare_auth("/auth/"));
    }
}
