//! What happens to an Ingress's ingress-nginx auth when it moves: for each auth annotation
//! (and the controller's `global-auth-url`), per target — Traefik's ingress-nginx provider,
//! Gateway API's `ExternalAuth` filter, Envoy Gateway's `SecurityPolicy` — whether it works
//! unchanged, needs a change (which the rendered manifests make), or would silently lose auth.
//! Pure: the Ingress and the install are arguments. docs/proxies.md, "Migrating off
//! ingress-nginx".

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;
use serde::Serialize;

use crate::controller::audit::named_policy;
use crate::controller::install::InstallService;

pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// Where the Ingress moves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Traefik's `kubernetesIngressNGINX` provider, reading the same Ingress.
    TraefikProvider,
    /// A Gateway API HTTPRoute with the `ExternalAuth` filter (experimental channel).
    GatewayApi,
    /// Envoy Gateway: the HTTPRoute plus a `SecurityPolicy` with `extAuth`.
    EnvoyGateway,
    /// Converting with ingress2gateway as it is (v1.1): the annotations are dropped.
    Ingress2gateway,
}

pub const TARGETS: [Target; 4] = [
    Target::TraefikProvider,
    Target::GatewayApi,
    Target::EnvoyGateway,
    Target::Ingress2gateway,
];

/// How an annotation fares on a target; ordered from harmless to fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Unchanged,
    Change,
    AuthLost,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The annotation (without the prefix), or `global-auth-url`.
    pub annotation: String,
    pub target: Target,
    pub verdict: Verdict,
    pub detail: String,
}

/// Which accessgate policy the auth-url reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "by")]
pub enum PolicyRef {
    /// `/auth/{ns}/{name}` (or `/forward/…`, `/envoy/…`).
    Name { namespace: String, name: String },
    /// The bare `/auth?host=$host`: chosen by host and path.
    Route,
}

/// One Ingress that uses ingress-nginx auth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressReport {
    pub namespace: String,
    pub name: String,
    /// The auth-url in force (its own, or the global one), when it reaches this install.
    pub policy: Option<PolicyRef>,
    /// `auth-response-headers`: what the app relies on.
    pub response_headers: Vec<String>,
    pub findings: Vec<Finding>,
}

impl IngressReport {
    /// The worst verdict on `target`.
    pub fn outcome(&self, target: Target) -> Verdict {
        self.findings
            .iter()
            .filter(|f| f.target == target)
            .map(|f| f.verdict)
            .max()
            .unwrap_or(Verdict::Unchanged)
    }
}

/// The report for `ing`, or `None` when no ingress-nginx auth applies to it (neither its own
/// `auth-url` nor `global_auth_url`, or it opts out with `enable-global-auth: "false"`).
pub fn analyze(
    ing: &Ingress,
    install: &InstallService,
    global_auth_url: Option<&str>,
) -> Option<IngressReport> {
    let annotations: BTreeMap<&str, &str> = ing
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?, v.as_str())))
        .collect();
    let own = annotations.get("auth-url").copied();
    let global = global_auth_url.filter(|_| {
        own.is_none() && annotations.get("enable-global-auth").copied() != Some("false")
    });
    let url = own.or(global)?;
    let mut findings = Vec::new();
    let mut note = |annotation: &str, target, verdict, detail: &str| {
        findings.push(Finding {
            annotation: annotation.to_owned(),
            target,
            verdict,
            detail: detail.to_owned(),
        })
    };

    let policy = install
        .path_on_this_install(url)
        .ok()
        .map(|path| match named_policy(path) {
            Some((ns, name)) => PolicyRef::Name {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            },
            None => PolicyRef::Route,
        });
    let key = if own.is_some() {
        "auth-url"
    } else {
        "global-auth-url"
    };
    match (&policy, own.is_some()) {
        (Some(_), true) => note(
            key,
            Target::TraefikProvider,
            Verdict::Unchanged,
            "the provider calls the same auth-url (ForwardAuth-style, X-Forwarded-* headers: accessgate reads both)",
        ),
        (Some(_), false) => note(
            key,
            Target::TraefikProvider,
            Verdict::Change,
            "set the provider's globalAuthUrl (Traefik v3.7+) to the same URL: the controller ConfigMap is not read",
        ),
        (None, _) => note(
            key,
            Target::TraefikProvider,
            Verdict::Change,
            "the auth-url does not reach this accessgate install: check that the provider can call it",
        ),
    }
    match &policy {
        Some(PolicyRef::Route) => {
            for t in [Target::GatewayApi, Target::EnvoyGateway] {
                note(
                    key,
                    t,
                    Verdict::AuthLost,
                    "the bare /auth chooses the policy by host, which these filters cannot say: nothing is written; name the policy (auth-url /auth/{namespace}/{name}) and run again",
                );
            }
        }
        Some(PolicyRef::Name { .. }) => {
            note(
                key,
                Target::GatewayApi,
                Verdict::Change,
                "written: an HTTPRoute whose rules carry an ExternalAuth filter on accessgate's /envoy endpoint",
            );
            note(
                key,
                Target::EnvoyGateway,
                Verdict::Change,
                "written: the HTTPRoute and a SecurityPolicy extAuth on accessgate's /envoy endpoint",
            );
        }
        None => {
            for t in [Target::GatewayApi, Target::EnvoyGateway] {
                note(
                    key,
                    t,
                    Verdict::AuthLost,
                    "not an accessgate auth-url: nothing is written for it, and a route converted without a filter serves without auth",
                );
            }
        }
    }
    note(
        key,
        Target::Ingress2gateway,
        Verdict::AuthLost,
        "ingress2gateway answers auth-url with \"Unsupported annotation\": the converted HTTPRoute serves without auth",
    );

    let response_headers: Vec<String> = annotations
        .get("auth-response-headers")
        .map(|v| {
            v.split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if !response_headers.is_empty() {
        note(
            "auth-response-headers",
            Target::TraefikProvider,
            Verdict::Unchanged,
            "read by the provider (authResponseHeaders)",
        );
        note(
            "auth-response-headers",
            Target::GatewayApi,
            Verdict::Change,
            "written as the filter's http.allowedResponseHeaders",
        );
        note(
            "auth-response-headers",
            Target::EnvoyGateway,
            Verdict::Change,
            "written as extAuth.http.headersToBackend",
        );
    }
    if let Some(signin) = annotations.get("auth-signin") {
        let (verdict, detail) = if signin.contains("$host") {
            (
                Verdict::Change,
                "traefik#13680: $host in auth-signin resolves to the upstream's vhost, not the request's host: write the host out",
            )
        } else {
            (
                Verdict::Unchanged,
                "supported by the provider (since traefik#12502)",
            )
        };
        note("auth-signin", Target::TraefikProvider, verdict, detail);
        for t in [Target::GatewayApi, Target::EnvoyGateway] {
            note(
                "auth-signin",
                t,
                Verdict::Change,
                "no sign-in redirect: a refused request gets accessgate's 401; behind Cloudflare Access the login happens before the request reaches the cluster",
            );
        }
    }
    if let Some(method) = annotations.get("auth-method") {
        let detail = format!(
            "auth-method {method}: accessgate answers every method alike, the targets send the original one"
        );
        for t in [
            Target::TraefikProvider,
            Target::GatewayApi,
            Target::EnvoyGateway,
        ] {
            note("auth-method", t, Verdict::Unchanged, &detail);
        }
    }
    if annotations.contains_key("auth-snippet") {
        for t in [
            Target::TraefikProvider,
            Target::GatewayApi,
            Target::EnvoyGateway,
        ] {
            note(
                "auth-snippet",
                t,
                Verdict::AuthLost,
                "raw nginx directives on the auth request have no equivalent: whatever they added to the check is gone (read them, move what matters into the AccessPolicy)",
            );
        }
    }
    for cache in ["auth-cache-key", "auth-cache-duration"] {
        if annotations.contains_key(cache) {
            for t in [
                Target::TraefikProvider,
                Target::GatewayApi,
                Target::EnvoyGateway,
            ] {
                note(
                    cache,
                    t,
                    Verdict::Unchanged,
                    "no auth cache on the target: every request is checked (accessgate caches verified tokens itself)",
                );
            }
        }
    }
    for keepalive in annotations
        .keys()
        .filter(|k| k.starts_with("auth-keepalive"))
    {
        for t in [
            Target::TraefikProvider,
            Target::GatewayApi,
            Target::EnvoyGateway,
        ] {
            note(
                keepalive,
                t,
                Verdict::Unchanged,
                "connection reuse only: the targets keep their own connection pools",
            );
        }
    }
    if own.is_none() {
        for t in [Target::GatewayApi, Target::EnvoyGateway] {
            note(
                "global-auth-url",
                t,
                Verdict::Change,
                "no global auth on the target: the filter is written on this route",
            );
        }
    }
    findings.sort_by(|a, b| (a.target, &a.annotation).cmp(&(b.target, &b.annotation)));
    Some(IngressReport {
        namespace: ing
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: ing.metadata.name.clone().unwrap_or_default(),
        policy,
        response_headers,
        findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install() -> InstallService {
        InstallService {
            name: "accessgate".into(),
            namespace: "accessgate-system".into(),
            port: 80,
            cluster_domain: "cluster.local".into(),
        }
    }

    fn ingress(annotations: &[(&str, &str)]) -> Ingress {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "apps", "annotations":
                annotations.iter().map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string())).collect::<BTreeMap<_, _>>()},
            "spec": {"rules": [{"host": "web.example.com"}]}
        }))
        .unwrap()
    }

    const NAMED: &str = "http://accessgate.accessgate-system.svc.cluster.local/auth/apps/web";

    fn outcomes(r: &IngressReport) -> [Verdict; 4] {
        TARGETS.map(|t| r.outcome(t))
    }

    use Verdict::{AuthLost, Change, Unchanged};

    #[test]
    fn a_named_accessgate_policy_moves_everywhere_but_through_ingress2gateway() {
        let r = analyze(
            &ingress(&[
                ("auth-url", NAMED),
                ("auth-response-headers", "X-Auth-Request-Email, x-b"),
            ]),
            &install(),
            None,
        )
        .unwrap();
        assert_eq!(
            r.policy,
            Some(PolicyRef::Name {
                namespace: "apps".into(),
                name: "web".into()
            })
        );
        assert_eq!(r.response_headers, ["x-auth-request-email", "x-b"]);
        assert_eq!(outcomes(&r), [Unchanged, Change, Change, AuthLost]);
    }

    #[test]
    fn what_no_target_can_carry_is_auth_lost() {
        let bare = "http://accessgate.accessgate-system.svc.cluster.local/auth?host=$host";
        let r = analyze(&ingress(&[("auth-url", bare)]), &install(), None).unwrap();
        assert_eq!(r.policy, Some(PolicyRef::Route));
        assert_eq!(outcomes(&r), [Unchanged, AuthLost, AuthLost, AuthLost]);

        let snippet = analyze(
            &ingress(&[
                ("auth-url", NAMED),
                ("auth-snippet", "proxy_set_header X-Team a;"),
            ]),
            &install(),
            None,
        )
        .unwrap();
        assert_eq!(outcomes(&snippet), [AuthLost; 4]);

        let elsewhere = analyze(
            &ingress(&[(
                "auth-url",
                "http://oauth2-proxy.auth.svc.cluster.local/oauth2/auth",
            )]),
            &install(),
            None,
        )
        .unwrap();
        assert_eq!(elsewhere.policy, None);
        assert_eq!(outcomes(&elsewhere), [Change, AuthLost, AuthLost, AuthLost]);
    }

    #[test]
    fn signin_host_and_performance_annotations() {
        let r = analyze(
            &ingress(&[
                ("auth-url", NAMED),
                ("auth-signin", "https://$host/login"),
                ("auth-cache-key", "$remote_user"),
                ("auth-keepalive", "10"),
                ("auth-method", "GET"),
            ]),
            &install(),
            None,
        )
        .unwrap();
        let on = |target, annotation: &str| {
            r.findings
                .iter()
                .find(|f| f.target == target && f.annotation == annotation)
                .map(|f| f.verdict)
        };
        assert_eq!(
            on(Target::TraefikProvider, "auth-signin"),
            Some(Change),
            "traefik#13680"
        );
        assert_eq!(
            on(Target::TraefikProvider, "auth-cache-key"),
            Some(Unchanged)
        );
        assert_eq!(on(Target::EnvoyGateway, "auth-keepalive"), Some(Unchanged));
        assert_eq!(on(Target::GatewayApi, "auth-method"), Some(Unchanged));
        assert_eq!(outcomes(&r), [Change, Change, Change, AuthLost]);
    }

    #[test]
    fn global_auth_applies_unless_an_ingress_opts_out() {
        let r = analyze(&ingress(&[]), &install(), Some(NAMED)).unwrap();
        assert_eq!(outcomes(&r), [Change, Change, Change, AuthLost]);
        assert!(r.findings.iter().any(|f| f.annotation == "global-auth-url"));
        assert_eq!(
            analyze(
                &ingress(&[("enable-global-auth", "false")]),
                &install(),
                Some(NAMED)
            ),
            None
        );
        assert_eq!(
            analyze(&ingress(&[]), &install(), None),
            None,
            "no auth at all"
        );
    }
}
