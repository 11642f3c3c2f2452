//! Request + policy → Allow{headers} or Deny{reason}: the one place the rules are applied.
//! Pure: keys through [`KeyLookup`], time as an argument.

use axum::http::HeaderMap;

use std::sync::Arc;

use crate::core::headers::{self, Rendered};
use crate::core::policy::CompiledPolicy;
use crate::core::reason::Reason;
use crate::core::rules;
use crate::core::verify::{self, Claims, TokenKind};
use crate::keys::tokens::TokenCache;
use crate::keys::{KeyAnswer, KeyLookup};

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow { kind: TokenKind, headers: Rendered },
    Deny(Reason),
}

impl Decision {
    pub fn outcome(&self) -> Result<(), Reason> {
        match self {
            Decision::Allow { .. } => Ok(()),
            Decision::Deny(r) => Err(*r),
        }
    }
}

/// A request whose token verified and passed the policy's claim checks; rules and headers
/// come next (possibly after identity enrichment).
pub struct Verified<'h> {
    pub token: &'h str,
    pub claims: Arc<Claims>,
    pub kind: TokenKind,
}

/// Decides one request. `now` is seconds since the Unix epoch. `verified` remembers
/// signature checks across requests (it never skips a policy check).
pub fn decide(
    policy: &CompiledPolicy,
    request_headers: &HeaderMap,
    keys: &impl KeyLookup,
    verified: &TokenCache,
    now: u64,
) -> Decision {
    match verify_request(policy, request_headers, keys, verified, now) {
        Ok(v) => conclude(policy, &v.claims, v.kind),
        Err(reason) => Decision::Deny(reason),
    }
}

/// Token → header → key → signature (or the cache) → claim checks.
pub fn verify_request<'h>(
    policy: &CompiledPolicy,
    request_headers: &'h HeaderMap,
    keys: &impl KeyLookup,
    verified: &TokenCache,
    now: u64,
) -> Result<Verified<'h>, Reason> {
    let token = verify::extract_token(request_headers, &policy.token_sources)?;
    let header = verify::read_header(token, &policy.algorithms)?;
    let key = match keys.lookup(&policy.jwks_uri, &header.kid) {
        KeyAnswer::Found(key) => key,
        KeyAnswer::Unknown => return Err(Reason::KeyUnknown),
        KeyAnswer::Unavailable => return Err(Reason::KeysUnavailable),
    };
    let claims = match verified.get(&policy.jwks_uri, token, &key) {
        Some(claims) => claims,
        None => {
            let claims = Arc::new(verify::verify_signature(token, &header, &key)?);
            verified.put(&policy.jwks_uri, token, &key, claims.clone());
            claims
        }
    };
    let kind = verify::check_claims(&claims, policy, now)?;
    Ok(Verified {
        token,
        claims,
        kind,
    })
}

/// Rules, then the identity headers.
pub fn conclude(policy: &CompiledPolicy, claims: &Claims, kind: TokenKind) -> Decision {
    match rules::check(&policy.rules, claims, kind) {
        Ok(()) => Decision::Allow {
            kind,
            headers: headers::render(claims, &policy.claim_headers),
        },
        Err(reason) => Decision::Deny(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::{AccessPolicySpec, IssuerSpec, PolicyKey, compile};
    use crate::devissuer::{MintRequest, Signer};
    use crate::keys::{KeySet, parse_key_set};
    use axum::http::HeaderValue;
    use url::Url;

    const ISS: &str = "http://127.0.0.1:9";
    const NOW: u64 = 1_800_000_000;

    /// A key lookup over a fixed key set: the decision needs nothing else.
    struct Fixed(Option<KeySet>);
    impl KeyLookup for Fixed {
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

    fn policy() -> CompiledPolicy {
        let spec = AccessPolicySpec {
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

    fn setup() -> (Signer, Fixed) {
        let signer = Signer::new(ISS).unwrap();
        let keys = parse_key_set(signer.certs_document().to_string().as_bytes()).unwrap();
        (signer, Fixed(Some(keys)))
    }

    fn with_token(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "cf-access-jwt-assertion",
            HeaderValue::from_str(token).unwrap(),
        );
        h
    }

    fn mint(signer: &Signer, req: MintRequest) -> String {
        signer
            .mint(
                &MintRequest {
                    aud: vec!["aud-1".into()],
                    ..req
                },
                NOW as i64,
            )
            .unwrap()
    }

    #[test]
    fn valid_token_is_allowed_with_default_headers() {
        let (signer, keys) = setup();
        let t = mint(
            &signer,
            MintRequest {
                email: Some("a@b.c".into()),
                sub: Some("u1".into()),
                ..Default::default()
            },
        );
        let Decision::Allow { kind, headers } = decide(
            &policy(),
            &with_token(&t),
            &keys,
            &TokenCache::disabled(),
            NOW,
        ) else {
            panic!()
        };
        assert_eq!(kind, TokenKind::App);
        let got: Vec<(String, String)> = headers
            .set
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("x-auth-request-email".into(), "a@b.c".into()),
                ("x-auth-request-user".into(), "u1".into())
            ]
        );
    }

    #[test]
    fn each_failure_has_its_reason() {
        let (signer, keys) = setup();
        let p = policy();
        let deny =
            |t: &str, now: u64| decide(&p, &with_token(t), &keys, &TokenCache::disabled(), now);
        let ok = mint(&signer, MintRequest::default());
        assert_eq!(
            deny(&ok, NOW + 3600 + 61),
            Decision::Deny(Reason::TokenExpired)
        );
        assert!(
            matches!(deny(&ok, NOW + 3600 + 59), Decision::Allow { .. }),
            "inside the 60 s leeway"
        );
        assert_eq!(
            deny(&ok, NOW - 61),
            Decision::Deny(Reason::TokenNotYetValid)
        );
        let other_aud = signer
            .mint(
                &MintRequest {
                    aud: vec!["x".into()],
                    ..Default::default()
                },
                NOW as i64,
            )
            .unwrap();
        assert_eq!(
            deny(&other_aud, NOW),
            Decision::Deny(Reason::AudienceMismatch)
        );
        let service = mint(
            &signer,
            MintRequest {
                token_type: Some("service".into()),
                ..Default::default()
            },
        );
        assert_eq!(
            deny(&service, NOW),
            Decision::Deny(Reason::TokenTypeNotAllowed)
        );
        let org = mint(
            &signer,
            MintRequest {
                token_type: Some("org".into()),
                ..Default::default()
            },
        );
        assert_eq!(deny(&org, NOW), Decision::Deny(Reason::TokenTypeNotAllowed));
        let exp_text = mint(
            &signer,
            MintRequest {
                claims: serde_json::from_str(r#"{"exp":"never"}"#).unwrap(),
                ..Default::default()
            },
        );
        assert_eq!(deny(&exp_text, NOW), Decision::Deny(Reason::TokenMalformed));
        let mut tampered = ok.clone();
        tampered.replace_range(ok.len() - 4.., "AAAA");
        assert_eq!(
            deny(&tampered, NOW),
            Decision::Deny(Reason::SignatureInvalid)
        );
        assert_eq!(
            decide(&p, &HeaderMap::new(), &keys, &TokenCache::disabled(), NOW),
            Decision::Deny(Reason::TokenMissing)
        );
        assert_eq!(
            decide(
                &p,
                &with_token(&ok),
                &Fixed(None),
                &TokenCache::disabled(),
                NOW
            ),
            Decision::Deny(Reason::KeysUnavailable)
        );
    }

    #[test]
    fn cached_verification_still_applies_every_policy_check() {
        let (signer, keys) = setup();
        let cache = TokenCache::new(1 << 20);
        let t = mint(&signer, MintRequest::default());
        let p = policy();
        assert!(matches!(
            decide(&p, &with_token(&t), &keys, &cache, NOW),
            Decision::Allow { .. }
        ));
        // Cached now; the time checks still run with the request's clock...
        assert_eq!(
            decide(&p, &with_token(&t), &keys, &cache, NOW + 7200),
            Decision::Deny(Reason::TokenExpired)
        );
        // ...and another policy's audience is still enforced.
        let mut other = policy();
        other.audiences = ["aud-2".to_string()].into_iter().collect();
        assert_eq!(
            decide(&other, &with_token(&t), &keys, &cache, NOW),
            Decision::Deny(Reason::AudienceMismatch)
        );
        // A key that left the set is refused even though the token is cached.
        assert_eq!(
            decide(
                &p,
                &with_token(&t),
                &Fixed(Some(Default::default())),
                &cache,
                NOW
            ),
            Decision::Deny(Reason::KeyUnknown)
        );
    }

    #[test]
    fn a_rotated_out_key_is_unknown() {
        let (mut signer, keys) = setup();
        signer.rotate().unwrap();
        let t = mint(&signer, MintRequest::default());
        assert_eq!(
            decide(
                &policy(),
                &with_token(&t),
                &keys,
                &TokenCache::disabled(),
                NOW
            ),
            Decision::Deny(Reason::KeyUnknown)
        );
    }

    #[test]
    fn another_issuers_key_does_not_verify() {
        let (_, keys) = setup();
        let stranger = Signer::new(ISS).unwrap();
        // Same kid as ours, different key: the signature must not verify.
        let our_kid = keys.0.as_ref().unwrap().ids()[0].clone();
        let t = stranger
            .sign_raw(
                &format!(r#"{{"alg":"RS256","kid":"{our_kid}"}}"#),
                &format!(r#"{{"iss":"{ISS}","aud":"aud-1","exp":{}}}"#, NOW + 60),
                None,
            )
            .unwrap();
        assert_eq!(
            decide(
                &policy(),
                &with_token(&t),
                &keys,
                &TokenCache::disabled(),
                NOW
            ),
            Decision::Deny(Reason::SignatureInvalid)
        );
    }

    #[test]
    fn new_key_material_under_a_cached_kid_ends_the_cached_verification() {
        let (signer, keys) = setup();
        let cache = TokenCache::new(1 << 20);
        let p = policy();
        let t = mint(&signer, MintRequest::default());
        assert!(matches!(
            decide(&p, &with_token(&t), &keys, &cache, NOW),
            Decision::Allow { .. }
        ));
        assert!(!cache.is_empty(), "the verification is cached");
        // A refetch finds other key material published under the same kid.
        let kid = keys.0.as_ref().unwrap().ids()[0].clone();
        let other = Signer::new(ISS).unwrap();
        let doc = other
            .certs_document()
            .to_string()
            .replace(other.current_kid(), &kid);
        let swapped = Fixed(Some(parse_key_set(doc.as_bytes()).unwrap()));
        assert_eq!(swapped.0.as_ref().unwrap().ids(), vec![kid.clone()]);
        // The cached verification no longer counts: verified again, and refused.
        assert_eq!(
            decide(&p, &with_token(&t), &swapped, &cache, NOW),
            Decision::Deny(Reason::SignatureInvalid)
        );
        // A token really signed by the new key passes.
        let fresh = other
            .sign_raw(
                &format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#),
                &format!(
                    r#"{{"iss":"{ISS}","aud":"aud-1","type":"app","email":"a@b.c","sub":"u","iat":{NOW},"exp":{}}}"#,
                    NOW + 60
                ),
                Some(other.current_kid()),
            )
            .unwrap();
        assert!(
            matches!(
                decide(&p, &with_token(&fresh), &swapped, &cache, NOW),
                Decision::Allow { .. }
            ),
            "{:?}",
            decide(&p, &with_token(&fresh), &swapped, &cache, NOW)
        );
        // And the old key's verification is still good against the old material.
        assert!(matches!(
            decide(&p, &with_token(&t), &keys, &cache, NOW),
            Decision::Allow { .. }
        ));
    }
}
