//! `accessgate check`: explain the decision for one token under one policy (from a file or
//! the cluster), fetching the issuer's keys live. Prints each step; the exit status is the
//! verdict. Nothing here is reachable over HTTP.

use std::path::PathBuf;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue};
use url::Url;

use crate::core::explain::trace;
use crate::core::index::{Entry, PolicyIndex};
use crate::core::policy::{AccessPolicy, CompiledPolicy, PolicyKey, TokenSource, compile};
use crate::core::verify::{ASSERTION_HEADER, AUTH_COOKIE};
use crate::keys::{KeyAnswer, KeyConfig, KeyLookup, KeySet, fetch_once};
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
}

struct Fetched(Option<KeySet>);

impl KeyLookup for Fetched {
    fn lookup(&self, _: &Url, kid: &str) -> KeyAnswer {
        match &self.0 {
            None => KeyAnswer::Unavailable,
            Some(set) => set
                .get(kid)
                .cloned()
                .map(KeyAnswer::Found)
                .unwrap_or(KeyAnswer::Unknown),
        }
    }
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
                Entry::Ready(p) => Ok((*p).clone()),
                Entry::Invalid { message, .. } => Err(CheckError::Policy(message)),
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

/// Runs the check and prints the trace; `Ok(true)` when the token would be allowed. The keys
/// are fetched the way the server fetches them (`keys`: timeout, body cap, no redirects, the
/// address guard if configured).
pub async fn run(
    policy: PolicyRef,
    token: &str,
    url: Option<&str>,
    keys: &KeyConfig,
) -> Result<bool, CheckError> {
    let policy = load(&policy).await?;
    println!(
        "policy   {} (issuer {}, audiences {})",
        policy.key,
        policy.issuer,
        policy.audiences.len()
    );
    if let Some(u) = url {
        let index = PolicyIndex::build([(
            policy.key.clone(),
            Entry::Ready(std::sync::Arc::new(policy.clone())),
        )]);
        // Read the URL exactly as the bare /auth endpoint would, as if nginx had routed on
        // its host (the same checks: authority, ambiguous paths, case-insensitive prefixes).
        let routed = crate::core::dialect::original_url(u, crate::core::dialect::Routing::Strict)
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
    let keys = match fetch_once(keys, &policy.jwks_uri).await {
        Ok(set) => {
            println!(
                "keys     {} fetched from {} in {:?} (age 0 s): {}",
                set.len(),
                policy.jwks_uri,
                started.elapsed(),
                set.ids().join(", ")
            );
            Fetched(Some(set))
        }
        Err(e) => {
            let detail = e.detail().map(|d| format!(" ({d})")).unwrap_or_default();
            println!("keys     FAILED to fetch {}: {e}{detail}", policy.jwks_uri);
            Fetched(None)
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (steps, decision) = trace(&policy, &request_with(&policy, token), &keys, now);
    for s in &steps {
        println!(
            "{} {:<10} {}",
            if s.ok { "ok  " } else { "FAIL" },
            s.what,
            s.detail
        );
    }
    Ok(decision.outcome().is_ok())
}
