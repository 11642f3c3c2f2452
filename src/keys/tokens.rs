//! Verified-token cache: a token whose signature verified against an issuer's key is not
//! verified again until it expires (at most an hour). Only the signature is cached; every policy
//! check (issuer, time, audience, type) still runs on every request.
//!
//! Keyed by SHA-256 of (JWKS URL, token): a collision would let an unverified token borrow a
//! verified one's claims, so the hash must be cryptographic; the token itself is never kept. The
//! key is looked up first, so a `kid` that left the set is refused at once, and an entry answers
//! only for the key material it was verified with: new material under the same `kid` is verified
//! again. Bounded by memory (a weigher); moka, so no global lock on the hot path. See
//! docs/security.md, "Security notes".

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use url::Url;

use crate::core::decision::{Remembered, SignatureMemo};
use crate::core::verify::Claims;
use crate::keys::VerifyingKey;
use jsonwebtoken::Algorithm;

/// Longest an entry lives regardless of `exp`.
const MAX_TTL: Duration = Duration::from_secs(3600);
/// Bookkeeping per entry beyond token and claims.
const ENTRY_OVERHEAD: usize = 160;

type Key = [u8; 32];

/// One cached verification outcome: what [`Remembered`] says about a token, for which key set,
/// and how long it may be trusted.
struct CachedVerification {
    jwks_uri: Url,
    remembered: Arc<Remembered>,
    ttl: Duration,
}

/// Cached signature verifications, or none (`disabled`).
#[derive(Clone)]
pub struct TokenCache {
    inner: Option<Cache<Key, Arc<CachedVerification>>>,
}

struct UntilExpiry;

impl moka::Expiry<Key, Arc<CachedVerification>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &Key,
        value: &Arc<CachedVerification>,
        _: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl SignatureMemo for TokenCache {
    fn recall(&self, jwks_uri: &Url, token: &str) -> Option<Arc<Remembered>> {
        let hit = self.inner.as_ref()?.get(&Self::key(jwks_uri, token))?;
        (hit.jwks_uri == *jwks_uri).then(|| hit.remembered.clone())
    }

    /// Remembers a successful verification until the token's `exp` (`now` is seconds since
    /// the Unix epoch, the decision's clock). Tokens without a usable `exp` are not cached
    /// (they are refused by the claim checks anyway).
    fn remember(
        &self,
        jwks_uri: &Url,
        token: &str,
        key: &VerifyingKey,
        alg: Algorithm,
        claims: Arc<Claims>,
        now: u64,
    ) {
        let Some(cache) = &self.inner else { return };
        let Some(exp) = claims.get("exp").and_then(|v| v.as_f64()) else {
            return;
        };
        let now = now as f64;
        // Also refuses NaN: only a finite `exp` in the future is cached.
        if exp.partial_cmp(&now) != Some(std::cmp::Ordering::Greater) {
            return;
        }
        let ttl = Duration::from_secs_f64((exp - now).min(MAX_TTL.as_secs_f64()));
        let entry = CachedVerification {
            jwks_uri: jwks_uri.clone(),
            remembered: Arc::new(Remembered {
                kid: key.kid.clone(),
                alg,
                key_fingerprint: *key.fingerprint(),
                claims,
            }),
            ttl,
        };
        cache.insert(TokenCache::key(jwks_uri, token), Arc::new(entry));
    }
}

impl TokenCache {
    /// A cache holding at most about `max_bytes` of tokens and claims.
    pub fn new(max_bytes: u64) -> Self {
        if max_bytes == 0 {
            return Self::disabled();
        }
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &Key, v: &Arc<CachedVerification>| {
                let bytes = ENTRY_OVERHEAD
                    + v.remembered.key_fingerprint.len()
                    + v.remembered.kid.len()
                    + v.jwks_uri.as_str().len()
                    + v.remembered.claims.approx_bytes();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .expire_after(UntilExpiry)
            .support_invalidation_closures()
            .build();
        Self { inner: Some(cache) }
    }

    pub fn disabled() -> Self {
        Self { inner: None }
    }

    fn key(jwks_uri: &Url, token: &str) -> Key {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(jwks_uri.as_str().as_bytes());
        ctx.update(&[0]);
        ctx.update(token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        key
    }

    /// The claims of `token` if it was verified before under the same key set with exactly
    /// `key` (same `kid` and same key material).
    pub fn get(&self, jwks_uri: &Url, token: &str, key: &VerifyingKey) -> Option<Arc<Claims>> {
        let hit = self.recall(jwks_uri, token)?;
        (hit.kid == key.kid && hit.key_fingerprint == *key.fingerprint())
            .then(|| hit.claims.clone())
    }

    /// Drops entries verified with keys of `jwks_uri` that are no longer published.
    pub fn retain_kids(&self, jwks_uri: &Url, kids: &[String]) {
        let Some(cache) = &self.inner else { return };
        let uri = jwks_uri.clone();
        let kids = kids.to_vec();
        // Only fails if invalidation closures were not enabled at build time.
        let _ = cache.invalidate_entries_if(move |_, v| {
            v.jwks_uri == uri && !kids.contains(&v.remembered.kid)
        });
    }

    /// Entries currently held (approximate; for metrics and tests).
    pub fn len(&self) -> u64 {
        self.inner
            .as_ref()
            .map(|c| {
                c.run_pending_tasks();
                c.entry_count()
            })
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeySet, parse_key_set};
    use std::time::{SystemTime, UNIX_EPOCH};

    /// Remembers `token` as verified under `key` of `url`, valid for another minute.
    fn remember_fresh(c: &TokenCache, url: &Url, token: &str, key: &VerifyingKey) {
        c.remember(
            url,
            token,
            key,
            Algorithm::RS256,
            claims(now() + 60.0),
            now() as u64,
        );
    }

    fn claims(exp: f64) -> Arc<Claims> {
        Arc::new(serde_json::from_value(serde_json::json!({"exp": exp, "email": "a@b.c"})).unwrap())
    }

    fn now() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    const N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    /// A key with this kid; `variant` changes the material.
    fn key(kid: &str, variant: u8) -> Arc<VerifyingKey> {
        let n = format!("{}{}", (b'a' + variant) as char, &N[1..]);
        let set: KeySet = parse_key_set(
            serde_json::json!({"keys": [{"kid": kid, "kty": "RSA", "e": "AQAB", "n": n}]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        set.get(kid).unwrap().clone()
    }

    #[test]
    fn hits_only_for_the_same_token_issuer_and_kid() {
        let c = TokenCache::new(1 << 20);
        let a = Url::parse("https://a.example/certs").unwrap();
        let b = Url::parse("https://b.example/certs").unwrap();
        let (k1, k2) = (key("k1", 0), key("k2", 0));
        remember_fresh(&c, &a, "t1", &k1);
        assert!(c.get(&a, "t1", &k1).is_some());
        assert!(c.get(&a, "t2", &k1).is_none());
        assert!(c.get(&b, "t1", &k1).is_none(), "another issuer's key set");
        assert!(c.get(&a, "t1", &k2).is_none(), "another kid");
    }

    #[test]
    fn new_material_under_the_same_kid_ends_cached_verifications() {
        let c = TokenCache::new(1 << 20);
        let a = Url::parse("https://a.example/certs").unwrap();
        let (old, new) = (key("k", 0), key("k", 1));
        assert_eq!(old.kid, new.kid);
        remember_fresh(&c, &a, "t", &old);
        assert!(c.get(&a, "t", &old).is_some());
        assert!(c.get(&a, "t", &new).is_none(), "same kid, other key");
        assert!(
            c.get(&a, "t", &key("k", 0)).is_some(),
            "same material parsed again"
        );
    }

    #[test]
    fn expired_or_exp_less_tokens_are_not_cached() {
        let c = TokenCache::new(1 << 20);
        let a = Url::parse("https://a.example/certs").unwrap();
        let k = key("k", 0);
        c.remember(
            &a,
            "old",
            &k,
            Algorithm::RS256,
            claims(now() - 1.0),
            now() as u64,
        );
        assert!(c.get(&a, "old", &k).is_none());
        c.remember(
            &a,
            "none",
            &k,
            Algorithm::RS256,
            Arc::new(serde_json::from_str("{}").unwrap()),
            now() as u64,
        );
        assert!(c.get(&a, "none", &k).is_none());
    }

    #[test]
    fn entries_of_a_retired_kid_are_dropped() {
        let c = TokenCache::new(1 << 20);
        let a = Url::parse("https://a.example/certs").unwrap();
        let (old, new) = (key("old", 0), key("new", 0));
        remember_fresh(&c, &a, "t1", &old);
        remember_fresh(&c, &a, "t2", &new);
        c.retain_kids(&a, &["new".into()]);
        assert!(c.get(&a, "t1", &old).is_none());
        assert!(c.get(&a, "t2", &new).is_some());
    }

    #[test]
    fn memory_is_bounded() {
        let c = TokenCache::new(64 * 1024);
        let a = Url::parse("https://a.example/certs").unwrap();
        let k = key("k", 0);
        for i in 0..5000 {
            c.remember(
                &a,
                &format!("token-{i}"),
                &k,
                Algorithm::RS256,
                claims(now() + 60.0),
                now() as u64,
            );
        }
        assert!(c.len() < 5000 * 64 * 1024 / (5000 * ENTRY_OVERHEAD as u64) + 1);
        assert!(
            c.len() <= 64 * 1024 / ENTRY_OVERHEAD as u64,
            "{} entries",
            c.len()
        );
    }

    /// What one entry should weigh: the bookkeeping, the key's fingerprint and `kid`, the
    /// key set's URL and the claims (the token itself is not kept).
    fn weight_of(jwks_uri: &Url, key: &VerifyingKey, claims: &Claims) -> u64 {
        (ENTRY_OVERHEAD
            + key.fingerprint().len()
            + key.kid.len()
            + jwks_uri.as_str().len()
            + claims.approx_bytes()) as u64
    }

    /// The weight the cache holds, once its pending work is done.
    fn weighed(c: &TokenCache) -> u64 {
        let cache = c.inner.as_ref().unwrap();
        cache.run_pending_tasks();
        cache.weighted_size()
    }

    #[test]
    fn an_entry_weighs_its_key_its_key_set_url_and_its_claims() {
        let c = TokenCache::new(1 << 20);
        let a = Url::parse("https://a.example/certs").unwrap();
        let k = key("kid-7", 0);
        let cl = claims(now() + 60.0);
        let one = weight_of(&a, &k, &cl);
        c.remember(&a, "t1", &k, Algorithm::RS256, cl.clone(), now() as u64);
        assert_eq!(weighed(&c), one);
        let long = Url::parse("https://a.example/a/much/longer/path/to/the/certs").unwrap();
        c.remember(&long, "t1", &k, Algorithm::RS256, cl.clone(), now() as u64);
        assert_eq!(weighed(&c), one + weight_of(&long, &k, &cl));
        assert!(weight_of(&long, &k, &cl) > one);
    }

    #[test]
    fn the_budget_holds_as_many_entries_as_their_weight_allows() {
        let a = Url::parse("https://a.example/certs").unwrap();
        let k = key("k", 0);
        let cl = claims(now() + 60.0);
        let budget = 3 * weight_of(&a, &k, &cl);
        let c = TokenCache::new(budget);
        let remember = |i: usize| {
            c.remember(
                &a,
                &format!("t{i}"),
                &k,
                Algorithm::RS256,
                cl.clone(),
                now() as u64,
            )
        };
        for i in 0..3 {
            remember(i);
        }
        assert_eq!(
            (c.len(), weighed(&c)),
            (3, budget),
            "three entries fit exactly"
        );
        for i in 3..20 {
            remember(i);
        }
        assert!(c.len() <= 3, "{} entries", c.len());
        assert!(weighed(&c) <= budget);
    }

    #[test]
    fn disabled_cache_never_hits() {
        let c = TokenCache::disabled();
        let a = Url::parse("https://a.example/certs").unwrap();
        let k = key("k", 0);
        remember_fresh(&c, &a, "t", &k);
        assert!(c.get(&a, "t", &k).is_none());
    }
}
