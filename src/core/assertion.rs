//! What the upstream assertion says about an allowed request (`spec.upstreamAssertion`):
//! the identity the decision was made on (enriched, when the policy fetches one), the policy
//! that made it, and the claims the policy maps to headers. Pure; the issuer, audience and
//! times are added where it is signed ([`crate::keys::signing`]).

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::core::policy::{CompiledClaimHeader, CompiledPolicy};
use crate::core::verify::Claims;

/// The assertion's claims as JSON object text, made once per allow. Both what a signed token
/// says (with `iss`, `aud`, `iat`, `exp` added) and, exactly, what a signed token is reused
/// for: the text is the identity, so no hash can stand for one and a hot identity costs no
/// tree of JSON values per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload(String);

impl Payload {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The claims as a JSON object, to add the registered ones to before signing.
    pub fn to_claims(&self) -> Result<Map<String, Value>, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

/// A payload from given claims (tests of the signer).
#[cfg(test)]
impl From<&Map<String, Value>> for Payload {
    fn from(claims: &Map<String, Value>) -> Self {
        Payload(Value::Object(claims.clone()).to_string())
    }
}

/// The assertion's claims for a request `policy` allowed on `claims` (as its rules saw them).
/// `sub` is the person's, or a service token's `common_name`; `groups` are the enriched
/// identity's when there is one, else the policy's groups claim; `claims` holds each mapped
/// claim's value, by its path.
pub fn payload(policy: &CompiledPolicy, claims: &Claims) -> Payload {
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let fields = Fields {
        sub: text("sub").or_else(|| text("common_name")),
        email: text("email"),
        groups: Strings(
            claims
                .get("identity")
                .and_then(|i| i.as_object()?.get("groups"))
                .or_else(|| claims.path(&policy.rules.groups_path))
                .and_then(Value::as_array),
        ),
        claims: Mapped {
            headers: &policy.claim_headers,
            claims,
        },
        policy: &policy.label,
    };
    // Borrowed strings and JSON values only: serialising cannot fail.
    Payload(serde_json::to_string(&fields).unwrap_or_default())
}

#[derive(serde::Serialize)]
struct Fields<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    groups: Strings<'a>,
    claims: Mapped<'a>,
    policy: &'a str,
}

/// The strings of an array (none when absent).
struct Strings<'a>(Option<&'a Vec<Value>>);

impl Serialize for Strings<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.into_iter().flatten().filter(|v| v.is_string()))
    }
}

/// Each mapped claim the token has, by the claim's name; a claim two headers map appears
/// once (JSON object keys are unique).
struct Mapped<'a> {
    headers: &'a [CompiledClaimHeader],
    claims: &'a Claims,
}

impl Serialize for Mapped<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (i, h) in self.headers.iter().enumerate() {
            if self.headers[..i].iter().any(|e| e.claim == h.claim) {
                continue;
            }
            if let Some(v) = self.claims.path(&h.path) {
                map.serialize_entry(&h.claim, v)?;
            }
        }
        map.end()
    }
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
            Value::Object(payload(&policy, &token).to_claims().unwrap()),
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
        assert_eq!(
            payload(&policy, &enriched).to_claims().unwrap()["groups"],
            json!(["sre", "eng"])
        );
        let service = claims(json!({"sub": "", "common_name": "ci.access"}));
        let p = payload(&policy, &service).to_claims().unwrap();
        assert_eq!(
            (p["sub"].clone(), p.get("email")),
            (json!("ci.access"), None)
        );
    }

    #[test]
    fn a_claim_two_headers_map_is_named_once_and_nested_ones_by_their_dotted_name() {
        let mut policy = policy_with(Some(RulesSpec::default()));
        let mut again = policy.claim_headers[0].clone();
        again.header = axum::http::HeaderName::from_static("x-email-again");
        let mut nested = again.clone();
        nested.header = axum::http::HeaderName::from_static("x-team");
        nested.claim = "custom.team".into();
        nested.path = vec!["custom".into(), "team".into()];
        policy.claim_headers.extend([again, nested]);
        let token =
            claims(json!({"sub": "u-1", "email": "ana@example.com", "custom": {"team": "sre"}}));
        let p = payload(&policy, &token);
        // The verifier's own parser refuses a duplicate key at any depth.
        let strict: Claims = serde_json::from_str(p.as_str()).expect("unique keys");
        assert_eq!(
            strict.get("claims"),
            Some(&json!({"email": "ana@example.com", "sub": "u-1", "custom.team": "sre"}))
        );
        assert_eq!(
            p,
            payload(&policy, &token),
            "the same request, the same text"
        );
    }
}
