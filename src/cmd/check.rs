//! `accessgate check`: explain the decision for one token under one policy (from a file or
//! the cluster). An adapter of the server's own authorization service
//! ([`crate::serve::authorize`]): the issuer's keys fetched live, the identity fetched from
//! get-identity as the server does (unless `--no-identity`), and the trace printed from the
//! service's steps as they ran. The exit status is the verdict. Nothing here is reachable
//! over HTTP.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue};

use crate::api::{AccessPolicy, TokenSource};
use crate::core::candidate::Comparison;
use crate::core::decision::Forgetful;
use crate::core::dialect::{self, OriginalRequest, Routing};
use crate::core::explain::{Explainer, Step};
use crate::core::index::{PolicyEntry, PolicyIndex};
use crate::core::policy::{Candidate, CompiledPolicy, PolicyKey, compile};
use crate::core::verify::{ASSERTION_HEADER, AUTH_COOKIE};
use crate::identity::{IdentityClient, IdentityConfig};
use crate::keys::{FixedKeys, KeyConfig, fetch_once};
use crate::metrics::Metrics;
use crate::serve::authorize::{AuthRequest, Authorizer, Select};
use crate::source::files::parse_manifests;

#[derive(Debug, Clone)]
pub enum PolicyRef {
    File { path: PathBuf, name: Option<String> },
    Cluster { namespace: String, name: String },
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Policy(String),
    #[error("cannot read the policy from the cluster: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// How `check` fetches, as the server would.
#[derive(Debug, Clone)]
pub struct Fetching {
    /// The key fetch (timeout, body cap, no redirects, the address guard if configured).
    pub keys: KeyConfig,
    /// The get-identity fetch; `None` (`--no-identity`): not fetched, and the decision is
    /// made on the token alone.
    pub identity: Option<IdentityConfig>,
}

async fn load(policy: &PolicyRef) -> Result<CompiledPolicy, CheckError> {
    match policy {
        PolicyRef::File { path, name } => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CheckError::Policy(format!("{}: {e}", path.display())))?;
            let entries = parse_manifests(&path.display().to_string(), &text)
                .map_err(|e| CheckError::Policy(e.to_string()))?;
            let chosen = entries
                .into_iter()
                .find(|(k, _)| name.as_ref().is_none_or(|n| &k.name == n))
                .ok_or_else(|| {
                    CheckError::Policy(format!("{}: no matching AccessPolicy", path.display()))
                })?;
            match chosen.1 {
                PolicyEntry::Ready(p) => Ok((*p).clone()),
                PolicyEntry::Invalid { message, .. } => Err(CheckError::Policy(message)),
            }
        }
        PolicyRef::Cluster { namespace, name } => {
            let client = kube::Client::try_default().await?;
            let obj = kube::Api::<AccessPolicy>::namespaced(client, namespace)
                .get(name)
                .await?;
            compile(
                PolicyKey::new(namespace.clone(), name.clone()),
                obj.metadata.generation,
                &obj.spec,
            )
            .map_err(|e| CheckError::Policy(format!("policy {namespace}/{name} is invalid: {e}")))
        }
    }
}

/// The request a proxy would send with `token` in the policy's first token source.
fn request_with(policy: &CompiledPolicy, token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let value = |v: String| {
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    };
    match policy.token_sources.first() {
        Some(TokenSource::Cookie) => h.insert("cookie", value(format!("{AUTH_COOKIE}={token}"))),
        Some(TokenSource::Bearer) => h.insert("authorization", value(format!("Bearer {token}"))),
        _ => h.insert(ASSERTION_HEADER, value(token.to_owned())),
    };
    h
}

/// The original request the check stands for: `--url` read as the bare /auth endpoint
/// would, or a plain GET when there is none (or it does not read: the note above says so).
fn original(url: Option<&str>) -> OriginalRequest {
    url.and_then(|u| dialect::original_url(u, Routing::Named).ok())
        .unwrap_or_else(|| OriginalRequest {
            method: "GET".into(),
            scheme: "https".into(),
            host: String::new(),
            path: "/".into(),
            client_ip: None,
            request_id: None,
        })
}

/// Runs the check and prints the trace; `Ok(true)` when the token would be allowed.
pub async fn run(
    policy: PolicyRef,
    token: &str,
    url: Option<&str>,
    fetching: &Fetching,
) -> Result<bool, CheckError> {
    let policy = load(&policy).await?;
    println!(
        "policy   {} (issuer {}, audiences {})",
        policy.key,
        policy.issuer,
        policy.audiences.len()
    );
    let entry = PolicyEntry::Ready(Arc::new(policy.clone()));
    let index = PolicyIndex::build([(policy.key.clone(), entry)]);
    if let Some(u) = url {
        // Read the URL exactly as the bare /auth endpoint would, as if nginx had routed on
        // its host (the same checks: authority, ambiguous paths, case-insensitive prefixes).
        let routed = dialect::original_url(u, Routing::Strict)
            .and_then(|r| index.by_route(&r.host, &r.path).map(|_| ()));
        let note = match routed {
            Ok(()) => "routes to this policy on the bare /auth endpoint".to_owned(),
            Err(reason) => format!(
                "does not route to this policy on the bare /auth endpoint ({}; use /auth/{{namespace}}/{{name}})",
                reason.code()
            ),
        };
        println!("url      {u}: {note}");
    }
    let started = Instant::now();
    let keys = match fetch_once(&fetching.keys, &policy.jwks_uri).await {
        Ok(set) => {
            println!(
                "keys     {} fetched from {} in {:?} (age 0 s): {}",
                set.len(),
                policy.jwks_uri,
                started.elapsed(),
                set.ids().join(", ")
            );
            FixedKeys(Some(set))
        }
        Err(e) => {
            let detail = e.detail().map(|d| format!(" ({d})")).unwrap_or_default();
            println!("keys     FAILED to fetch {}: {e}{detail}", policy.jwks_uri);
            FixedKeys(None)
        }
    };
    let identity = match &fetching.identity {
        Some(config) => Some(IdentityClient::new(config.clone(), Metrics::new())?),
        None => None,
    };
    if let Some(cfg) = &policy.identity {
        match identity {
            Some(_) => println!(
                "identity {}: fetched once the token verifies, as the server does",
                cfg.url
            ),
            None => println!(
                "identity {}: NOT fetched (--no-identity): decided on the token alone, unlike the server",
                cfg.url
            ),
        }
    }
    let service = Authorizer {
        policies: &index,
        keys: &keys,
        memo: &Forgetful,
        identity: identity.as_ref(),
        metrics: None,
        log: None,
        signer: None,
        shadows: None,
    };
    let headers = request_with(&policy, token);
    let request = AuthRequest {
        select: Select::Name {
            namespace: &policy.key.namespace,
            name: &policy.key.name,
        },
        headers: &headers,
        original: Ok(original(url)),
    };
    let mut explainer = Explainer::new();
    let mut candidate_explainer = Explainer::new();
    let (verdict, shadows) = service
        .authorize_traced(request, &mut explainer, &mut candidate_explainer)
        .await;
    // A dry-run policy's own verdict is what the check is about; the server lets the request
    // through whatever it is.
    let outcome = match &shadows.dry_run {
        Some((_, decision)) => decision.outcome(),
        None => verdict.outcome.map(|_| ()),
    };
    print_steps(&explainer.finish(outcome));
    if shadows.dry_run.is_some() {
        println!(
            "mode     dry-run: the server does not enforce this verdict (it answers as if the policy did not exist)"
        );
    }
    match (&policy.candidate, shadows.candidates().next()) {
        (Some(Candidate::Invalid(e)), _) => {
            println!("candidate INVALID {e} (the live policy is enforced as it is)")
        }
        (Some(Candidate::Ready(_)), Some(seen)) => {
            println!("candidate spec.candidate, on the same request:");
            print_steps(&candidate_explainer.finish(seen.decision.outcome()));
            let differs = match seen.comparison {
                Comparison::Agree => "no: same verdict and identity headers".to_owned(),
                c => format!("YES: {} ({})", c.result(), c.reason()),
            };
            println!("differs  {differs}");
        }
        _ => {}
    }
    Ok(outcome.is_ok())
}

fn print_steps(steps: &[Step]) {
    for s in steps {
        println!(
            "{} {:<10} {}",
            if s.ok { "ok  " } else { "FAIL" },
            s.what,
            s.detail
        );
    }
}
