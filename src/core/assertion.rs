//! What the upstream assertion says about an allowed request (`spec.upstreamAssertion`):
//! the identity the decision was made on (enriched, when the policy fetches one), the policy
//! that made it, and the claims the policy maps to headers. Pure; the issuer, audience and
//! times are added where it is signed ([`crate::keys::signing`]).

use serde_json::{Map, Value};

use crate::core::policy::CompiledPolicy;
use crate::core::verify::Claims;

/// The assertion's claims for a request `policy` allowed on `claims` (as its rules saw them).
/// `sub` is the person's, or a service token's `common_name`; `groups` are the enriched
/// identity's when there is one, else the policy's groups claim; `claims` holds each mapped
/// claim's value, by its path.
pub fn payload(policy: &CompiledPolicy, claims: &Claims) -> Map<String, Value> {
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let mut out = Map::new();
    if let Some(sub) = text("sub").or_else(|| text("common_name")) {
        out.insert("sub".into(), sub.into());
    }
    if let Some(email) = text("email") {
        out.insert("email".into(), email.into());
    }
    let identity_groups = ["identity".to_owned(), "groups".to_owned()];
    let groups = claims
        .path(&identity_groups)
        .or_else(|| claims.path(&policy.rules.groups_path))
        .and_then(Value::as_array)
        .map(|g| {
            g.iter()
                .filter(|v| v.is_string())
                .cloned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    out.insert("groups".into(), Value::Array(groups));
    let mapped: Map<String, Value> = policy
        .claim_headers
        .iter()
        .filter_map(|h| Some((h.path.join("."), claims.path(&h.path)?.clone())))
        .collect();
    out.insert("claims".into(), Value::Object(mapped));
    out.insert("policy".into(), policy.label.as_ref().into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RulesSpec;
    use crate::core::fixtures::policy_with;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_payload_names_who_by_which_policy_with_enriched_groups_first() {
        let policy = policy_with(Some(RulesSpec::default()));
        let token = claims(json!({
            "sub": "u-1", "email": "ana@example.com", "custom": {"groups": ["eng", 7]},
            "iss": "x", "aud": "y", "exp": 1
        }));
        assert_eq!(
            Value::Object(payload(&policy, &token)),
            json!({
                "sub": "u-1",
                "email": "ana@example.com",
                "groups": ["eng"],
                "claims": {"email": "ana@example.com", "sub": "u-1"},
                "policy": "ns/p"
            }),
            "the token's own iss/aud/exp never leak into the assertion"
        );
        let enriched = claims(json!({
            "sub": "u-1", "custom": {"groups": ["eng"]}, "identity": {"groups": ["sre", "eng"]}
        }));
        assert_eq!(payload(&policy, &enriched)["groups"], json!(["sre", "eng"]));
        let service = claims(json!({"sub": "", "common_name": "ci.access"}));
        let p = payload(&policy, &service);
        assert_eq!(
            (p["sub"].clone(), p.get("email")),
            (json!("ci.access"), None)
        );
    }
}
