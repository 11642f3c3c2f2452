//! Unit-test fixtures shared by the core's and the authorization service's tests: one
//! issuer, one policy on it, one fixed key lookup.

use std::sync::Arc;

use url::Url;

use crate::core::index::{Entry, PolicyIndex};
use crate::core::jwks::{KeyAnswer, KeyLookup, KeySet, parse_key_set};
use crate::core::policy::{
    AccessPolicySpec, CompiledPolicy, IssuerSpec, PolicyKey, RulesSpec, compile,
};

/// The issuer every fixture policy trusts (nothing listens there: keys come from a lookup).
pub const ISS: &str = "http://127.0.0.1:9";

/// `ns/p`: issuer [`ISS`], audience `aud-1`, these rules.
pub fn policy_with(rules: Option<RulesSpec>) -> CompiledPolicy {
    let spec = AccessPolicySpec {
        rules,
        issuer: IssuerSpec {
            team_domain: None,
            url: Some(ISS.into()),
            jwks_uri: Some(format!("{ISS}/certs")),
        },
        audiences: vec!["aud-1".into()],
        ..Default::default()
    };
    compile(PolicyKey::new("ns", "p"), None, &spec).unwrap()
}

/// [`policy_with`] no rules.
pub fn policy() -> CompiledPolicy {
    policy_with(None)
}

/// An index holding only [`policy`].
pub fn index() -> PolicyIndex {
    let policy = policy();
    PolicyIndex::build([(policy.key.clone(), Entry::Ready(Arc::new(policy)))])
}

/// The keys a JWKS document publishes (e.g. the dev issuer's `certs_document()`).
pub fn keys_of(certs: &serde_json::Value) -> KeySet {
    parse_key_set(certs.to_string().as_bytes()).unwrap()
}

/// A key lookup over a fixed key set; `None`: no set was ever fetched.
pub struct FixedKeys(pub Option<KeySet>);

impl KeyLookup for FixedKeys {
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
