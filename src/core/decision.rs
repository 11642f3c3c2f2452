//! Request + policy → Allow{headers} or Deny{reason}: the one place the rules are applied.
//! Pure: keys through [`KeyLookup`], remembered signatures through [`SignatureMemo`], the
//! identity answer and the time as arguments.
//!
//! Two halves, because enrichment sits between them: [`verify_request`] (token, key, signature,
//! claims), then, once the server has fetched any identity, [`conclude`] (identity, rules,
//! headers); [`decide`] runs both. Every choice, what a failed enrichment means included, is made
//! here. Each step reports to an [`Observer`]: `accessgate check` explains a decision from those
//! reports ([`crate::core::explain`]) instead of walking it again; the server passes
//! [`Unobserved`], which compiles away. See docs/architecture.md, "The request path".

use axum::http::HeaderMap;
use jsonwebtoken::Algorithm;
use serde_json::Value;
use url::Url;

use std::sync::Arc;

use crate::core::assertion;
use crate::core::headers::{self, Rendered};
use crate::core::jwks::{KeyAnswer, KeyLookup, VerifyingKey};
use crate::core::policy::CompiledPolicy;
use crate::core::reason::Reason;
use crate::core::rules::{self, MatcherSeen};
use crate::core::verify::{self, ClaimCheck, Claims, TokenHeader, TokenKind};

/// What a memo remembers of one verified token: the key (by `kid` and material) and the
/// algorithm it was verified with, and its claims, parsed.
#[derive(Debug)]
pub struct Remembered {
    pub kid: String,
    pub alg: Algorithm,
    pub key_fingerprint: [u8; 32],
    pub claims: Arc<Claims>,
}

/// Remembers signature checks across requests (never a policy check): the verified-token
/// cache in `crate::keys::tokens`, or [`Forgetful`].
pub trait SignatureMemo {
    fn recall(&self, jwks_uri: &Url, token: &str) -> Option<Arc<Remembered>>;
    fn remember(
        &self,
        jwks_uri: &Url,
        token: &str,
        key: &VerifyingKey,
        alg: Algorithm,
        claims: Arc<Claims>,
        now: u64,
    );
}

/// Remembers nothing: every request verifies its signature (`accessgate check`, tests).
pub struct Forgetful;

impl SignatureMemo for Forgetful {
    fn recall(&self, _: &Url, _: &str) -> Option<Arc<Remembered>> {
        None
    }
    fn remember(&self, _: &Url, _: &str, _: &VerifyingKey, _: Algorithm, _: Arc<Claims>, _: u64) {}
}

/// What enrichment produced for a verified token.
#[derive(Debug, Clone, Copy)]
pub enum Enrichment<'a> {
    /// The policy has no `identity` section.
    NotConfigured,
    Fetched(&'a Value),
    /// The fetch failed; the policy's `onError` decides.
    Failed,
    /// Not fetched on purpose (`accessgate check --no-identity`): decided on the token
    /// alone, as `onError: continueWithoutIdentity` would after a failed fetch.
    Skipped,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow {
        kind: TokenKind,
        headers: Rendered,
        /// The upstream assertion's claims, when the policy asks for one (signed by the
        /// service: [`crate::core::assertion`]).
        assertion: Option<assertion::Payload>,
    },
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

/// Each step of a decision, reported as it runs, with what it looked at and its result.
/// Every method defaults to doing nothing, so an observer implements only what it shows.
/// The decision never reads anything back: observing cannot change a verdict.
pub trait Observer {
    /// The token found in the policy's sources, or why none was usable.
    fn token(&mut self, _policy: &CompiledPolicy, _result: Result<&str, Reason>) {}
    /// The token was verified before under a key still published: header, key and
    /// signature were not looked at again.
    fn remembered(&mut self, _policy: &CompiledPolicy, _hit: &Remembered) {}
    /// The JOSE header, read against the policy's algorithms.
    fn header(&mut self, _policy: &CompiledPolicy, _result: &Result<TokenHeader, Reason>) {}
    /// The key published under the header's `kid`.
    fn key(&mut self, _policy: &CompiledPolicy, _kid: &str, _answer: &KeyAnswer) {}
    /// The signature check.
    fn signature(&mut self, _result: Result<(), Reason>) {}
    /// One claim check, as [`verify::check_claims_observed`] ran it.
    fn claim(
        &mut self,
        _policy: &CompiledPolicy,
        _claims: &Claims,
        _check: ClaimCheck,
        _result: Result<(), Reason>,
        _now: u64,
    ) {
    }
    /// The keys were fetched again after an unknown `kid` (or before any were loaded);
    /// `fetched` is false when no refetch was allowed or it failed. Verification runs again
    /// after a refetch, and reports its steps again.
    fn refetched(&mut self, _jwks_uri: &Url, _fetched: bool) {}
    /// What enrichment produced; `failure` names a failed fetch's category.
    fn enrichment(
        &mut self,
        _policy: &CompiledPolicy,
        _enrichment: &Enrichment,
        _failure: Option<&str>,
    ) {
    }
    /// One matcher of the rules as [`rules::check_observed`] evaluated it, on exactly the
    /// claims the rules see (enriched, when the policy asks for it).
    fn matcher(&mut self, _policy: &CompiledPolicy, _seen: &MatcherSeen<'_>) {}
    /// The rules' verdict, after the matchers it was reached with, on these claims.
    fn rules(&mut self, _policy: &CompiledPolicy, _claims: &Claims, _result: Result<(), Reason>) {}
    /// The identity headers rendered for an allow.
    fn headers(&mut self, _rendered: &Rendered) {}
}

/// Observes nothing: what the server passes on the hot path.
pub struct Unobserved;

impl Observer for Unobserved {}

/// A request whose token verified and passed the policy's claim checks; rules and headers
/// come next (possibly after identity enrichment).
pub struct VerifiedToken<'h> {
    pub token: &'h str,
    pub claims: Arc<Claims>,
    pub kind: TokenKind,
    /// The key it verified under (its `kid` goes in the decision log).
    pub key: Arc<VerifyingKey>,
}

/// Decides one request. `now` is seconds since the Unix epoch. `memo` remembers signature
/// checks across requests (it never skips a policy check).
pub fn decide(
    policy: &CompiledPolicy,
    request_headers: &HeaderMap,
    keys: &impl KeyLookup,
    memo: &impl SignatureMemo,
    now: u64,
) -> Decision {
    decide_observed(policy, request_headers, keys, memo, now, &mut Unobserved)
}

/// [`decide`], reporting each step to `observer`.
pub fn decide_observed(
    policy: &CompiledPolicy,
    request_headers: &HeaderMap,
    keys: &impl KeyLookup,
    memo: &impl SignatureMemo,
    now: u64,
    observer: &mut impl Observer,
) -> Decision {
    match verify_request(policy, request_headers, keys, memo, now, observer) {
        Ok(v) => conclude(policy, &v, Enrichment::NotConfigured, observer),
        Err(reason) => Decision::Deny(reason),
    }
}

/// Token → header → key → signature (or the memo) → claim checks.
pub fn verify_request<'h>(
    policy: &CompiledPolicy,
    request_headers: &'h HeaderMap,
    keys: &impl KeyLookup,
    memo: &impl SignatureMemo,
    now: u64,
    observer: &mut impl Observer,
) -> Result<VerifiedToken<'h>, Reason> {
    let token = verify::extract_token(request_headers, &policy.token_sources);
    observer.token(policy, token);
    let token = token?;
    // Verified before under this key set: no header to parse, no signature to check, as long
    // as this policy allows the algorithm and the key published under that kid is still the
    // one it was verified with. Anything else takes the full path below and fails there.
    if let Some(hit) = memo.recall(&policy.jwks_uri, token)
        && policy.algorithms.contains(&hit.alg)
        && let KeyAnswer::Found(key) = keys.lookup(&policy.jwks_uri, &hit.kid)
        && *key.fingerprint() == hit.key_fingerprint
        && key.alg.is_none_or(|a| a == hit.alg)
    {
        observer.remembered(policy, &hit);
        let kind = check_claims(policy, &hit.claims, now, observer)?;
        return Ok(VerifiedToken {
            token,
            claims: hit.claims.clone(),
            kind,
            key,
        });
    }
    let header = verify::read_header(token, &policy.algorithms);
    observer.header(policy, &header);
    let header = header?;
    let answer = keys.lookup(&policy.jwks_uri, &header.kid);
    observer.key(policy, &header.kid, &answer);
    let key = match answer {
        KeyAnswer::Found(key) => key,
        KeyAnswer::Unknown => return Err(Reason::KeyUnknown),
        KeyAnswer::Unavailable => return Err(Reason::KeysUnavailable),
    };
    let claims = verify::verify_signature(token, &header, &key);
    observer.signature(claims.as_ref().map(|_| ()).map_err(|r| *r));
    let claims = Arc::new(claims?);
    memo.remember(
        &policy.jwks_uri,
        token,
        &key,
        header.alg,
        claims.clone(),
        now,
    );
    let kind = check_claims(policy, &claims, now, observer)?;
    Ok(VerifiedToken {
        token,
        claims,
        kind,
        key,
    })
}

/// The verifier's claim checks, each reported as it runs.
fn check_claims(
    policy: &CompiledPolicy,
    claims: &Claims,
    now: u64,
    observer: &mut impl Observer,
) -> Result<TokenKind, Reason> {
    verify::check_claims_observed(claims, policy, now, |check, result| {
        observer.claim(policy, claims, check, result, now)
    })
}

/// The claims with the fetched identity under `identity` (replacing any claim of that name).
fn enrich(claims: &Claims, identity: &Value) -> Claims {
    let mut c = claims.clone();
    c.0.insert("identity".into(), identity.clone());
    c
}

/// The claims without an `identity` claim, so only a fetched identity can ever fill it.
fn without_identity(claims: &Claims) -> Claims {
    let mut c = claims.clone();
    c.0.remove("identity");
    c
}

/// Identity (as the policy's `onError` says), rules, then the identity headers.
pub fn conclude(
    policy: &CompiledPolicy,
    verified: &VerifiedToken,
    enrichment: Enrichment,
    observer: &mut impl Observer,
) -> Decision {
    let enriched;
    let claims: &Claims = match (enrichment, &policy.identity) {
        (Enrichment::NotConfigured, _) | (_, None) => &verified.claims,
        (Enrichment::Fetched(id), Some(_)) => {
            enriched = enrich(&verified.claims, id);
            &enriched
        }
        (Enrichment::Failed, Some(cfg)) if cfg.deny_on_error => {
            return Decision::Deny(Reason::IdentityUnavailable);
        }
        (Enrichment::Failed | Enrichment::Skipped, Some(_)) => {
            enriched = without_identity(&verified.claims);
            &enriched
        }
    };
    let ruled = rules::check_observed(&policy.rules, claims, verified.kind, |seen| {
        observer.matcher(policy, &seen)
    });
    observer.rules(policy, claims, ruled);
    match ruled {
        Ok(()) => {
            let rendered = headers::render(claims, &policy.claim_headers);
            observer.headers(&rendered);
            Decision::Allow {
                kind: verified.kind,
                headers: rendered,
                assertion: policy
                    .assertion
                    .as_ref()
                    .map(|_| assertion::payload(policy, claims)),
            }
        }
        Err(reason) => Decision::Deny(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::{FixedKeys, ISS, MintRequest, Signer, TokenCache, keys_of, policy};
    use crate::core::jwks::parse_key_set;
    use axum::http::HeaderValue;
    use url::Url;

    const NOW: u64 = 1_800_000_000;

    fn setup() -> (Signer, FixedKeys) {
        let signer = Signer::new(ISS).unwrap();
        let keys = keys_of(&signer.certs_document());
        (signer, FixedKeys(Some(keys)))
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
        let Decision::Allow { kind, headers, .. } =
            decide(&policy(), &with_token(&t), &keys, &Forgetful, NOW)
        else {
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
        let deny = |t: &str, now: u64| decide(&p, &with_token(t), &keys, &Forgetful, now);
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
        // The policy admits app tokens only.
        for token_type in ["service", "org"] {
            let other = MintRequest {
                token_type: Some(token_type.into()),
                ..Default::default()
            };
            assert_eq!(
                deny(&mint(&signer, other), NOW),
                Decision::Deny(Reason::TokenTypeNotAllowed),
                "{token_type}"
            );
        }
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
            decide(&p, &HeaderMap::new(), &keys, &Forgetful, NOW),
            Decision::Deny(Reason::TokenMissing)
        );
        assert_eq!(
            decide(&p, &with_token(&ok), &FixedKeys(None), &Forgetful, NOW),
            Decision::Deny(Reason::KeysUnavailable)
        );
    }

    /// The real cache, counting the verifications it answered.
    struct Counting {
        cache: TokenCache,
        hits: std::cell::Cell<u32>,
    }

    impl SignatureMemo for Counting {
        fn recall(&self, jwks_uri: &Url, token: &str) -> Option<Arc<Remembered>> {
            let hit = self.cache.recall(jwks_uri, token);
            self.hits.set(self.hits.get() + u32::from(hit.is_some()));
            hit
        }
        fn remember(
            &self,
            jwks_uri: &Url,
            token: &str,
            key: &VerifyingKey,
            alg: Algorithm,
            claims: Arc<Claims>,
            now: u64,
        ) {
            self.cache.remember(jwks_uri, token, key, alg, claims, now)
        }
    }

    #[test]
    fn cached_verification_still_applies_every_policy_check() {
        let (signer, keys) = setup();
        let cache = Counting {
            cache: TokenCache::new(1 << 20),
            hits: Default::default(),
        };
        let t = mint(&signer, MintRequest::default());
        let p = policy();
        assert!(matches!(
            decide(&p, &with_token(&t), &keys, &cache, NOW),
            Decision::Allow { .. }
        ));
        assert_eq!(cache.hits.get(), 0, "first sight verifies the signature");
        // Cached now: the same request is answered from the cache...
        assert!(matches!(
            decide(&p, &with_token(&t), &keys, &cache, NOW),
            Decision::Allow { .. }
        ));
        assert_eq!(cache.hits.get(), 1);
        // ...the time checks still run with the request's clock on a hit...
        assert_eq!(
            decide(&p, &with_token(&t), &keys, &cache, NOW + 7200),
            Decision::Deny(Reason::TokenExpired)
        );
        assert_eq!(cache.hits.get(), 2, "expired although the cache answered");
        // ...and another policy's audience is still enforced on a hit.
        let mut other = policy();
        other.audiences = ["aud-2".to_string()].into_iter().collect();
        assert_eq!(
            decide(&other, &with_token(&t), &keys, &cache, NOW),
            Decision::Deny(Reason::AudienceMismatch)
        );
        assert_eq!(
            cache.hits.get(),
            3,
            "audience refused although the cache answered"
        );
        // A key that left the set is refused even though the token is cached.
        assert_eq!(
            decide(
                &p,
                &with_token(&t),
                &FixedKeys(Some(Default::default())),
                &cache,
                NOW
            ),
            Decision::Deny(Reason::KeyUnknown)
        );
        // A policy that does not allow the algorithm refuses it, cached or not.
        let mut es_only = policy();
        es_only.algorithms = vec![Algorithm::ES256];
        assert_eq!(
            decide(&es_only, &with_token(&t), &keys, &cache, NOW),
            Decision::Deny(Reason::AlgorithmNotAllowed)
        );
        // Other material published under the same kid: the cached verification does not
        // count, and the token does not verify against the new key.
        let stranger = Signer::new(ISS).unwrap();
        let mut swapped: serde_json::Value = stranger.certs_document();
        let kid = keys.0.as_ref().unwrap().ids()[0].clone();
        for k in swapped["keys"].as_array_mut().unwrap() {
            k["kid"] = serde_json::json!(kid);
        }
        swapped.as_object_mut().unwrap().remove("public_cert");
        swapped.as_object_mut().unwrap().remove("public_certs");
        let swapped = FixedKeys(Some(parse_key_set(swapped.to_string().as_bytes()).unwrap()));
        let hits = cache.hits.get();
        assert_eq!(
            decide(&p, &with_token(&t), &swapped, &cache, NOW),
            Decision::Deny(Reason::SignatureInvalid)
        );
        assert_eq!(
            cache.hits.get(),
            hits + 1,
            "the entry was found, and not trusted"
        );
    }

    #[test]
    fn a_key_not_yet_fetched_is_unknown() {
        let (mut signer, keys) = setup();
        signer.rotate().unwrap();
        let t = mint(&signer, MintRequest::default());
        assert_eq!(
            decide(&policy(), &with_token(&t), &keys, &Forgetful, NOW),
            Decision::Deny(Reason::KeyUnknown)
        );
    }

    #[test]
    fn a_rotated_out_key_is_unknown() {
        let (mut signer, _) = setup();
        let old = mint(&signer, MintRequest::default());
        // Cloudflare publishes current + previous: after two rotations the old key is gone.
        signer.rotate().unwrap();
        let previous = mint(&signer, MintRequest::default());
        signer.rotate().unwrap();
        let now_published = FixedKeys(Some(
            parse_key_set(signer.certs_document().to_string().as_bytes()).unwrap(),
        ));
        assert_eq!(
            decide(
                &policy(),
                &with_token(&old),
                &now_published,
                &Forgetful,
                NOW
            ),
            Decision::Deny(Reason::KeyUnknown)
        );
        // The previous key is still published and still verifies.
        assert!(matches!(
            decide(
                &policy(),
                &with_token(&previous),
                &now_published,
                &Forgetful,
                NOW
            ),
            Decision::Allow { .. }
        ));
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
            decide(&policy(), &with_token(&t), &keys, &Forgetful, NOW),
            Decision::Deny(Reason::SignatureInvalid)
        );
    }

    /// Whether a decision took the remembered path.
    struct Remembers(bool);

    impl Observer for Remembers {
        fn remembered(&mut self, _: &CompiledPolicy, _: &Remembered) {
            self.0 = true;
        }
    }

    #[test]
    fn a_remembered_verification_is_used_while_the_key_declares_the_same_algorithm() {
        let (signer, keys) = setup();
        assert!(
            keys.0
                .as_ref()
                .unwrap()
                .get(signer.current_kid())
                .unwrap()
                .alg
                .is_some(),
            "the dev issuer's keys declare their algorithm"
        );
        let cache = TokenCache::new(1 << 20);
        let (p, t) = (policy(), mint(&signer, MintRequest::default()));
        for expected in [false, true] {
            let mut seen = Remembers(false);
            let d = decide_observed(&p, &with_token(&t), &keys, &cache, NOW, &mut seen);
            assert!(matches!(d, Decision::Allow { .. }));
            assert_eq!(seen.0, expected, "remembered on the second decision only");
        }
    }

    /// A token allowed once by [`policy`], its verification now in the returned cache.
    fn allowed_and_remembered() -> (Signer, FixedKeys, TokenCache, CompiledPolicy, String) {
        let (signer, keys) = setup();
        let cache = TokenCache::new(1 << 20);
        let p = policy();
        let t = mint(&signer, MintRequest::default());
        assert!(matches!(
            decide(&p, &with_token(&t), &keys, &cache, NOW),
            Decision::Allow { .. }
        ));
        (signer, keys, cache, p, t)
    }

    #[test]
    fn a_key_republished_for_another_algorithm_ends_the_cached_verification() {
        let (signer, _, cache, p, t) = allowed_and_remembered();
        // The same key material, now declared for RS384 only: an RS256 token is refused, the
        // remembered RS256 verification notwithstanding.
        let mut doc = signer.certs_document();
        for k in doc["keys"].as_array_mut().unwrap() {
            k["alg"] = "RS384".into();
        }
        doc.as_object_mut().unwrap().remove("public_cert");
        doc.as_object_mut().unwrap().remove("public_certs");
        let redeclared = FixedKeys(Some(parse_key_set(doc.to_string().as_bytes()).unwrap()));
        assert!(matches!(
            decide(&p, &with_token(&t), &redeclared, &cache, NOW),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn new_key_material_under_a_cached_kid_ends_the_cached_verification() {
        let (_, keys, cache, p, t) = allowed_and_remembered();
        assert!(!cache.is_empty(), "the verification is cached");
        // A refetch finds other key material published under the same kid.
        let kid = keys.0.as_ref().unwrap().ids()[0].clone();
        let other = Signer::new(ISS).unwrap();
        let doc = other
            .certs_document()
            .to_string()
            .replace(other.current_kid(), &kid);
        let swapped = FixedKeys(Some(parse_key_set(doc.as_bytes()).unwrap()));
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

    /// The `identity` claim the rules were checked on; `None` when they never ran.
    #[derive(Default)]
    struct RulesSaw(Option<Option<Value>>);

    impl Observer for RulesSaw {
        fn rules(&mut self, _: &CompiledPolicy, claims: &Claims, _: Result<(), Reason>) {
            self.0 = Some(claims.get("identity").cloned());
        }
    }

    #[test]
    fn a_failed_identity_fetch_denies_or_continues_as_on_error_says() {
        let verified = VerifiedToken {
            token: "t",
            claims: Arc::new(
                serde_json::from_value(serde_json::json!({"email": "a@b.c", "identity": "forged"}))
                    .unwrap(),
            ),
            kind: TokenKind::App,
            key: {
                let (signer, keys) = setup();
                keys.0.unwrap().get(signer.current_kid()).unwrap().clone()
            },
        };
        let with_identity = |deny_on_error| {
            let mut p = policy();
            p.identity = Some(crate::core::policy::CompiledIdentity {
                url: Url::parse("https://identity.example/").unwrap(),
                deny_on_error,
                cache_for: std::time::Duration::from_secs(60),
            });
            p
        };
        let concluded = |p: &CompiledPolicy, enrichment| {
            let mut saw = RulesSaw::default();
            let outcome = conclude(p, &verified, enrichment, &mut saw).outcome();
            (outcome, saw.0)
        };
        let (strict, lenient) = (with_identity(true), with_identity(false));
        assert_eq!(
            concluded(&strict, Enrichment::Failed),
            (Err(Reason::IdentityUnavailable), None),
            "onError: deny refuses before the rules"
        );
        assert_eq!(
            concluded(&lenient, Enrichment::Failed),
            (Ok(()), Some(None)),
            "continueWithoutIdentity: the rules run without the token's own identity claim"
        );
        assert_eq!(
            concluded(&strict, Enrichment::Skipped),
            (Ok(()), Some(None)),
            "not fetched on purpose: decided on the token alone"
        );
        let fetched = serde_json::json!({"groups": ["eng"]});
        assert_eq!(
            concluded(&strict, Enrichment::Fetched(&fetched)),
            (Ok(()), Some(Some(fetched.clone())))
        );
    }

    #[test]
    fn only_a_fetched_identity_fills_the_identity_claim() {
        let c: Claims = serde_json::from_value(
            serde_json::json!({"email": "a@b", "identity": {"groups": ["admins"]}}),
        )
        .unwrap();
        assert!(without_identity(&c).get("identity").is_none());
        let e = enrich(&c, &serde_json::json!({"groups": ["eng"]}));
        assert_eq!(
            e.path(&["identity".into(), "groups".into()]),
            Some(&serde_json::json!(["eng"]))
        );
    }
}
