//! Unit-test fixtures shared by the core's and the authorization service's tests: one
//! issuer, one policy on it, one fixed key lookup.
//!
//! The core's tests reach other layers only through here: real signing (the dev issuer's
//! [`Signer`]) and the server's real verified-token cache ([`TokenCache`]), so no test in
//! the core carries a second, simpler copy of either.

use std::sync::Arc;

use crate::api::{AccessPolicySpec, IssuerSpec, RulesSpec};
use crate::core::index::{PolicyEntry, PolicyIndex};
pub use crate::core::jwks::FixedKeys;
use crate::core::jwks::{KeySet, parse_key_set};
use crate::core::policy::{CompiledPolicy, PolicyKey, compile};

pub use crate::devissuer::{MintRequest, Signer};
pub use crate::keys::tokens::TokenCache;

/// The issuer every fixture policy trusts (nothing listens there: keys come from a lookup).
pub const ISS: &str = "http://127.0.0.1:9";

/// A spec on issuer [`ISS`] with audience `aud-1`, and nothing else.
pub fn spec() -> AccessPolicySpec {
    AccessPolicySpec {
        issuer: IssuerSpec {
            team_domain: None,
            url: Some(ISS.into()),
            jwks_uri: Some(format!("{ISS}/certs")),
        },
        audiences: vec!["aud-1".into()],
        ..Default::default()
    }
}

/// `ns/p`: [`spec`] with these rules.
pub fn policy_with(rules: Option<RulesSpec>) -> CompiledPolicy {
    let spec = AccessPolicySpec { rules, ..spec() };
    compile(PolicyKey::new("ns", "p"), None, &spec).unwrap()
}

/// [`policy_with`] no rules.
pub fn policy() -> CompiledPolicy {
    policy_with(None)
}

/// `key` at `generation` on a Cloudflare team domain, with one AUD tag and nothing else.
pub fn cloudflare_policy(key: PolicyKey, generation: Option<i64>) -> CompiledPolicy {
    let spec = AccessPolicySpec {
        issuer: IssuerSpec {
            team_domain: Some("t.cloudflareaccess.com".into()),
            ..Default::default()
        },
        audiences: vec!["a".repeat(64)],
        ..Default::default()
    };
    compile(key, generation, &spec).unwrap()
}

/// An index holding only [`policy`].
pub fn index() -> PolicyIndex {
    let policy = policy();
    PolicyIndex::build([(policy.key.clone(), PolicyEntry::Ready(Arc::new(policy)))])
}

/// The keys a JWKS document publishes (e.g. the dev issuer's `certs_document()`).
pub fn keys_of(certs: &serde_json::Value) -> KeySet {
    parse_key_set(certs.to_string().as_bytes()).unwrap()
}
