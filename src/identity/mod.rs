//! Cloudflare identity enrichment (`spec.identity`): Access JWTs trim custom claims and carry no
//! device posture, so once a token verifies its identity is fetched from get-identity (the token
//! as the `CF_Authorization` cookie), reduced by [`normalise`], and given to rules and headers.
//!
//! All the answer can fill is bounded ([`MAX_BODY_BYTES`], [`MAX_GROUPS`] of
//! [`MAX_GROUP_NAME_BYTES`], a cache weighed in bytes); a group list over the caps refuses the
//! answer whole, never truncated: the part cut could be the group a deny rule names. Unlike JWKS
//! URLs ([`crate::keys`]) there is no per-URL fetch budget: each fetch is one user's session, so
//! a cap would deny a whole team; one fetch per session per `cacheFor` bounds the rate. Failures
//! are categories ([`FetchError`]). See docs/security.md, "Security notes", and docs/reference.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{COOKIE, HeaderMap, HeaderValue};
use serde_json::{Map, Value, json};

use crate::core::policy::{CompiledIdentity, CompiledPolicy};
use crate::core::verify::Claims;
use crate::fetch::{AddressPolicy, FetchError, Fetcher};
use crate::metrics::{IdentityFetchLabels, Metrics};

/// Most groups an identity may have; more refuses the answer (`groups_over_limit`).
pub const MAX_GROUPS: usize = 1024;
/// Longest group name, in bytes; longer refuses the answer (`groups_over_limit`).
pub const MAX_GROUP_NAME_BYTES: usize = 256;
/// Largest get-identity answer read.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Bookkeeping per cache entry beyond the identity itself.
const ENTRY_OVERHEAD: usize = 256;

/// get-identity's answer, reduced to the fields policies can use; refused when its groups
/// exceed [`MAX_GROUPS`] or [`MAX_GROUP_NAME_BYTES`].
pub fn normalise(resp: &Value) -> Result<Value, FetchError> {
    let mut groups = Vec::new();
    for g in resp["groups"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let Some(name) = g.get("name").and_then(Value::as_str).or_else(|| g.as_str()) else {
            continue;
        };
        if groups.len() == MAX_GROUPS || name.len() > MAX_GROUP_NAME_BYTES {
            return Err(FetchError::GroupsOverLimit);
        }
        groups.push(json!(name));
    }
    let mut posture = Map::new();
    if let Some(checks) = resp["devicePosture"].as_object() {
        for check in checks.values() {
            if let (Some(name), Some(ok)) =
                (check["rule_name"].as_str(), check["success"].as_bool())
            {
                posture.insert(name.to_owned(), json!(ok));
            }
        }
    }
    let mut out = Map::new();
    out.insert("groups".into(), Value::Array(groups));
    out.insert("devicePosture".into(), Value::Object(posture));
    if let Some(e) = resp["email"].as_str() {
        out.insert("email".into(), json!(e));
    }
    if let Some(c) = resp["geo"]["country"].as_str() {
        out.insert("country".into(), json!(c));
    }
    if resp["idp"].is_object() {
        out.insert(
            "idp".into(),
            json!({"type": resp["idp"]["type"], "id": resp["idp"]["id"]}),
        );
    }
    Ok(Value::Object(out))
}

/// Heap bytes a JSON value holds, roughly (slots, string bytes, allocator rounding).
pub fn approx_bytes(v: &Value) -> usize {
    const SLOT: usize = std::mem::size_of::<Value>();
    match v {
        Value::String(s) => SLOT + 16 + s.len(),
        Value::Array(a) => SLOT + 16 + a.iter().map(approx_bytes).sum::<usize>(),
        Value::Object(o) => {
            SLOT + o
                .iter()
                .map(|(k, v)| 64 + k.len() + approx_bytes(v))
                .sum::<usize>()
        }
        _ => SLOT,
    }
}

/// One fetched identity as the cache holds it.
#[derive(Clone)]
struct CachedIdentity {
    identity: Arc<Value>,
    /// When it was fetched: each reading policy checks the age against its own `cacheFor`.
    fetched: Instant,
    /// Lifetime in the cache: the fetching policy's `cacheFor`, never past its token's `exp`.
    ttl: Duration,
    weight: u32,
}

struct Ttl;

impl moka::Expiry<Key, CachedIdentity> for Ttl {
    fn expire_after_create(&self, _: &Key, v: &CachedIdentity, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
}

type Key = [u8; 32];

/// Tunables.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    pub fetch_timeout: Duration,
    pub max_body_bytes: usize,
    /// Memory for cached identities (weighed, approximate).
    pub cache_bytes: u64,
    pub addresses: AddressPolicy,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            fetch_timeout: Duration::from_secs(5),
            max_body_bytes: MAX_BODY_BYTES,
            cache_bytes: 16 << 20,
            addresses: AddressPolicy::AllowAll,
        }
    }
}

/// Fetches and caches identities.
#[derive(Clone)]
pub struct IdentityClient {
    fetcher: Fetcher,
    max_body_bytes: usize,
    cache: moka::future::Cache<Key, CachedIdentity>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("token expired")]
    TokenExpired,
    #[error("the policy has no identity configuration")]
    NotConfigured,
    /// The category only (`timeout`, `http_status 401`, `groups_over_limit`, ...).
    #[error("get-identity: {0}")]
    Fetch(FetchError),
}

impl IdentityError {
    /// Transport detail for a log line; never text from the answer.
    pub fn detail(&self) -> Option<String> {
        match self {
            IdentityError::Fetch(e) => e.detail(),
            _ => None,
        }
    }
}

/// Whose identity cache entries a lookup may share.
struct Scope<'a> {
    issuer: &'a str,
    jwks_uri: &'a url::Url,
    identity: &'a CompiledIdentity,
}

/// SHA-256 over length-prefixed parts: no choice of parts collides with another.
fn digest(parts: &[&[u8]]) -> Key {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

impl IdentityClient {
    pub fn new(config: IdentityConfig, metrics: Arc<Metrics>) -> Result<Self, reqwest::Error> {
        let fetcher = Fetcher::new(config.fetch_timeout, config.addresses.clone())?;
        let cache = moka::future::Cache::builder()
            .max_capacity(config.cache_bytes)
            .weigher(|_: &Key, e: &CachedIdentity| e.weight)
            .expire_after(Ttl)
            .build();
        Ok(Self {
            fetcher,
            max_body_bytes: config.max_body_bytes,
            cache,
            metrics,
        })
    }

    /// The identity behind a token verified for `policy`, cached per policy issuer and key set.
    pub async fn get_for_policy(
        &self,
        policy: &CompiledPolicy,
        token: &str,
        claims: &Claims,
        now: u64,
    ) -> Result<Arc<Value>, IdentityError> {
        let identity = policy
            .identity
            .as_ref()
            .ok_or(IdentityError::NotConfigured)?;
        let scope = Scope {
            issuer: &policy.issuer,
            jwks_uri: &policy.jwks_uri,
            identity,
        };
        self.lookup(scope, token, claims, now).await
    }

    async fn lookup(
        &self,
        scope: Scope<'_>,
        token: &str,
        claims: &Claims,
        now: u64,
    ) -> Result<Arc<Value>, IdentityError> {
        let cfg = scope.identity;
        let until_exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .map(|e| e - now as f64)
            .unwrap_or(0.0);
        // Also refuses NaN.
        if until_exp.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(IdentityError::TokenExpired);
        }
        let ttl = cfg
            .cache_for
            .min(Duration::from_secs_f64(until_exp.min(86_400.0)));
        let token_hash;
        // Without a nonce (service tokens) the token itself names the session.
        let (session_kind, session): (&[u8], &[u8]) =
            match claims.get("identity_nonce").and_then(Value::as_str) {
                Some(nonce) => (b"nonce", nonce.as_bytes()),
                None => {
                    token_hash =
                        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
                    (b"token", token_hash.as_ref())
                }
            };
        // The nonce identifies the Access session; subject and email are part of the key too,
        // so a reused nonce can never hand one user another user's identity.
        let who = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or_default();
        let key = digest(&[
            b"identity-v2",
            scope.issuer.as_bytes(),
            scope.jwks_uri.as_str().as_bytes(),
            cfg.url.as_str().as_bytes(),
            session_kind,
            session,
            who("sub").as_bytes(),
            who("email").as_bytes(),
        ]);
        let asked = Instant::now();
        let entry = self.cached_or_fetch(key, cfg, token, ttl).await?;
        // Fetched for this request: fresh, whatever `cacheFor` says (with `0s` the age check
        // alone would fetch every identity twice).
        if entry.fetched >= asked || entry.fetched.elapsed() <= cfg.cache_for {
            return Ok(entry.identity);
        }
        // Cached by a policy that keeps identities longer than this one: too old here.
        self.cache.invalidate(&key).await;
        Ok(self.cached_or_fetch(key, cfg, token, ttl).await?.identity)
    }

    async fn cached_or_fetch(
        &self,
        key: Key,
        cfg: &CompiledIdentity,
        token: &str,
        ttl: Duration,
    ) -> Result<CachedIdentity, IdentityError> {
        self.cache
            .try_get_with(key, async {
                let identity = self.fetch(cfg, token).await;
                let result = match &identity {
                    Ok(_) => "ok",
                    Err(e) => e.kind(),
                };
                self.metrics
                    .identity_fetches
                    .get_or_create(&IdentityFetchLabels { result })
                    .inc();
                self.metrics
                    .identity_cache_bytes
                    .set(i64::try_from(self.cache.weighted_size()).unwrap_or(i64::MAX));
                let identity = identity.map_err(IdentityError::Fetch)?;
                let weight = ENTRY_OVERHEAD + approx_bytes(&identity);
                Ok::<_, IdentityError>(CachedIdentity {
                    identity: Arc::new(identity),
                    fetched: Instant::now(),
                    ttl,
                    weight: u32::try_from(weight).unwrap_or(u32::MAX),
                })
            })
            .await
            .map_err(|e: Arc<IdentityError>| (*e).clone())
    }

    async fn fetch(&self, cfg: &CompiledIdentity, token: &str) -> Result<Value, FetchError> {
        let mut headers = HeaderMap::new();
        let cookie =
            HeaderValue::from_str(&format!("{}={token}", crate::core::verify::AUTH_COOKIE))
                .map_err(|_| FetchError::Request("token is not a valid cookie value".into()))?;
        headers.insert(COOKIE, cookie);
        let body = self
            .fetcher
            .get(&cfg.url, headers, self.max_body_bytes)
            .await?;
        let v: Value = serde_json::from_slice(&body).map_err(|_| FetchError::NotIdentity)?;
        if !v.is_object() {
            return Err(FetchError::NotIdentity);
        }
        normalise(&v)
    }

    /// Entries and weighed bytes currently cached (after pending evictions ran).
    pub async fn cache_usage(&self) -> (u64, u64) {
        self.cache.run_pending_tasks().await;
        (self.cache.entry_count(), self.cache.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_now() -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    fn test_now() -> u64 {
        unix_now() as u64
    }

    #[test]
    fn normalises_cloudflare_get_identity() {
        let resp = json!({
            "email": "a@example.com",
            "groups": [{"id": "1", "name": "sre", "email": "sre@x"}, {"id": "2", "name": "eng"}],
            "idp": {"id": "idp-1", "type": "okta"},
            "geo": {"country": "DE"},
            "devicePosture": {"u1": {"id": "u1", "type": "disk_encryption", "success": true, "rule_name": "disk-encryption"},
                              "u2": {"id": "u2", "type": "firewall", "success": false, "rule_name": "firewall"}}
        });
        let n = normalise(&resp).unwrap();
        assert_eq!(n["groups"], json!(["sre", "eng"]));
        assert_eq!(n["idp"]["type"], "okta");
        assert_eq!(n["country"], "DE");
        assert_eq!(
            n["devicePosture"],
            json!({"disk-encryption": true, "firewall": false})
        );
    }

    #[test]
    fn group_caps_refuse_the_answer_instead_of_truncating() {
        let groups = |n: usize, len: usize| json!({"groups": (0..n).map(|i| json!({"id": i, "name": format!("{i:0>len$}")})).collect::<Vec<_>>()});
        assert_eq!(
            normalise(&groups(MAX_GROUPS, 8)).unwrap()["groups"]
                .as_array()
                .unwrap()
                .len(),
            MAX_GROUPS
        );
        assert_eq!(
            normalise(&groups(MAX_GROUPS + 1, 8)),
            Err(FetchError::GroupsOverLimit)
        );
        assert!(normalise(&groups(3, MAX_GROUP_NAME_BYTES)).is_ok());
        assert_eq!(
            normalise(&groups(3, MAX_GROUP_NAME_BYTES + 1)),
            Err(FetchError::GroupsOverLimit)
        );
        // Entries without a name are skipped, not counted.
        let mut mixed = groups(MAX_GROUPS, 4);
        mixed["groups"]
            .as_array_mut()
            .unwrap()
            .extend((0..10).map(|i| json!({"id": i})));
        assert!(normalise(&mixed).is_ok());
    }

    #[test]
    fn weights_grow_with_the_identity() {
        let small = normalise(&json!({"groups": ["a"]})).unwrap();
        let big = normalise(
            &json!({"groups": (0..100).map(|i| format!("group-{i:0>100}")).collect::<Vec<_>>()}),
        )
        .unwrap();
        assert!(approx_bytes(&small) < 400, "{}", approx_bytes(&small));
        assert!(approx_bytes(&big) > 100 * 100, "{}", approx_bytes(&big));
    }

    mod over_http {
        use super::super::*;
        use super::{test_now, unix_now};
        use crate::api::{AccessPolicySpec, IdentitySpec, IssuerSpec};
        use crate::core::policy::{PolicyKey, compile};
        use std::sync::atomic::{AtomicU64, Ordering};

        #[derive(Default)]
        struct Endpoint {
            calls: AtomicU64,
            body: std::sync::RwLock<String>,
        }

        /// A get-identity stand-in on loopback that answers `body` and counts calls.
        async fn endpoint(body: String) -> (Arc<Endpoint>, String) {
            let state = Arc::new(Endpoint {
                calls: AtomicU64::new(0),
                body: std::sync::RwLock::new(body),
            });
            let s = state.clone();
            let app = axum::Router::new().fallback(move || {
                let s = s.clone();
                async move {
                    s.calls.fetch_add(1, Ordering::SeqCst);
                    (
                        [("content-type", "application/json")],
                        s.body.read().unwrap().clone(),
                    )
                }
            });
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!(
                "http://{}/cdn-cgi/access/get-identity",
                l.local_addr().unwrap()
            );
            tokio::spawn(async move { axum::serve(l, app).await });
            (state, url)
        }

        fn policy(issuer: &str, jwks: &str, identity_url: &str, cache_for: &str) -> CompiledPolicy {
            let spec = AccessPolicySpec {
                issuer: IssuerSpec {
                    team_domain: None,
                    url: Some(issuer.into()),
                    jwks_uri: Some(jwks.into()),
                },
                audiences: vec!["aud".into()],
                identity: Some(IdentitySpec {
                    url: Some(identity_url.into()),
                    on_error: None,
                    cache_for: Some(cache_for.into()),
                }),
                ..Default::default()
            };
            compile(PolicyKey::new("ns", "p"), None, &spec).unwrap()
        }

        fn claims(iss: &str, nonce: &str) -> Claims {
            serde_json::from_value(json!({"iss": iss, "exp": unix_now() + 3600.0, "sub": "u-1",
                "email": "a@example.com", "identity_nonce": nonce}))
            .unwrap()
        }

        fn client(cache_bytes: u64) -> IdentityClient {
            IdentityClient::new(
                IdentityConfig {
                    cache_bytes,
                    ..IdentityConfig::default()
                },
                Metrics::new(),
            )
            .unwrap()
        }

        const IDENTITY: &str = r#"{"email":"a@example.com","groups":[{"name":"sre"}]}"#;

        #[tokio::test]
        async fn policies_with_other_issuers_or_key_sets_never_share_an_entry() {
            let (ep, url) = endpoint(IDENTITY.into()).await;
            let c = client(1 << 20);
            let i1 = "http://127.0.0.1:1";
            let i2 = "http://127.0.0.2:1";
            let p1 = policy(i1, &format!("{i1}/certs"), &url, "5m");
            let p1_again = policy(i1, &format!("{i1}/certs"), &url, "10m");
            let p2 = policy(i2, &format!("{i2}/certs"), &url, "5m");
            let p3 = policy(i1, "http://127.0.0.3:1/certs", &url, "5m");
            let calls = || ep.calls.load(Ordering::SeqCst);
            c.get_for_policy(&p1, "t1", &claims(i1, "n"), test_now())
                .await
                .unwrap();
            c.get_for_policy(&p1_again, "t2", &claims(i1, "n"), test_now())
                .await
                .unwrap();
            assert_eq!(calls(), 1, "same issuer, key set and session: shared");
            c.get_for_policy(&p2, "t3", &claims(i2, "n"), test_now())
                .await
                .unwrap();
            assert_eq!(calls(), 2, "another issuer");
            c.get_for_policy(&p3, "t1", &claims(i1, "n"), test_now())
                .await
                .unwrap();
            assert_eq!(calls(), 3, "another key set");
        }

        #[tokio::test]
        async fn each_policy_s_cache_for_applies_when_it_reads() {
            let (ep, url) = endpoint(IDENTITY.into()).await;
            let c = client(1 << 20);
            let i = "http://127.0.0.1:1";
            let long = policy(i, &format!("{i}/certs"), &url, "60m");
            let short = policy(i, &format!("{i}/certs"), &url, "1s");
            let calls = || ep.calls.load(Ordering::SeqCst);
            let first = Instant::now();
            c.get_for_policy(&long, "t", &claims(i, "n"), test_now())
                .await
                .unwrap();
            assert_eq!(calls(), 1);
            let deadline = first + Duration::from_secs(20);
            loop {
                // The long-lived policy never refetches...
                c.get_for_policy(&long, "t", &claims(i, "n"), test_now())
                    .await
                    .unwrap();
                assert_eq!(calls(), 1);
                // ...the short-lived one does, once the entry is older than its cacheFor.
                c.get_for_policy(&short, "t", &claims(i, "n"), test_now())
                    .await
                    .unwrap();
                if calls() == 2 {
                    break;
                }
                assert!(Instant::now() < deadline, "never refetched for cacheFor 1s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(first.elapsed() >= Duration::from_secs(1));
            c.get_for_policy(&long, "t", &claims(i, "n"), test_now())
                .await
                .unwrap();
            assert_eq!(calls(), 2, "the refetched entry serves both");
        }

        #[tokio::test]
        async fn cache_for_zero_fetches_once_per_request() {
            let (ep, url) = endpoint(IDENTITY.into()).await;
            let c = client(1 << 20);
            let i = "http://127.0.0.1:1";
            let p = policy(i, &format!("{i}/certs"), &url, "0s");
            for request in 1..=3 {
                c.get_for_policy(&p, "t", &claims(i, "n"), test_now())
                    .await
                    .unwrap();
                assert_eq!(ep.calls.load(Ordering::SeqCst), request);
            }
        }

        #[tokio::test]
        async fn answers_are_capped_and_reported_as_categories() {
            let (ep, url) = endpoint(r#"{"error":"SECRET-INTERNAL-TEXT"}"#.into()).await;
            let c = client(1 << 20);
            let i = "http://127.0.0.1:1";
            let p = policy(i, &format!("{i}/certs"), &url, "5m");
            // A JSON object: normalised to what policies use; nothing of it is echoed.
            let id = c
                .get_for_policy(&p, "t", &claims(i, "a"), test_now())
                .await
                .unwrap();
            assert_eq!(*id, json!({"groups": [], "devicePosture": {}}));

            *ep.body.write().unwrap() = "[1, 2, 3]".into();
            let e = c
                .get_for_policy(&p, "t", &claims(i, "b"), test_now())
                .await
                .unwrap_err();
            assert_eq!(e, IdentityError::Fetch(FetchError::NotIdentity));
            assert_eq!(e.to_string(), "get-identity: not_identity");

            let too_many: Vec<Value> = (0..=MAX_GROUPS)
                .map(|i| json!({"name": format!("g{i}")}))
                .collect();
            *ep.body.write().unwrap() = json!({"groups": too_many}).to_string();
            let e = c
                .get_for_policy(&p, "t", &claims(i, "c"), test_now())
                .await
                .unwrap_err();
            assert_eq!(e.to_string(), "get-identity: groups_over_limit");

            *ep.body.write().unwrap() = format!(r#"{{"pad":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
            let e = c
                .get_for_policy(&p, "t", &claims(i, "d"), test_now())
                .await
                .unwrap_err();
            assert_eq!(e.to_string(), "get-identity: too_large");
            let metrics = c.metrics.encode();
            assert!(
                metrics
                    .contains(r#"accessgate_identity_fetches_total{result="groups_over_limit"} 1"#),
                "{metrics}"
            );
        }

        #[tokio::test]
        async fn the_guard_refuses_a_loopback_identity_url_unless_allowed() {
            let (ep, url) = endpoint(IDENTITY.into()).await;
            let i = "http://127.0.0.1:1";
            let p = policy(i, &format!("{i}/certs"), &url, "5m");
            let guarded = |allow: &[&str]| {
                IdentityClient::new(
                    IdentityConfig {
                        addresses: AddressPolicy::Guarded(
                            crate::fetch::AllowList::parse(allow).unwrap(),
                        ),
                        ..IdentityConfig::default()
                    },
                    Metrics::new(),
                )
                .unwrap()
            };
            let e = guarded(&[])
                .get_for_policy(&p, "t", &claims(i, "n"), test_now())
                .await
                .unwrap_err();
            assert_eq!(e.to_string(), "get-identity: blocked_address");
            assert_eq!(ep.calls.load(Ordering::SeqCst), 0);
            guarded(&["127.0.0.0/8"])
                .get_for_policy(&p, "t", &claims(i, "n"), test_now())
                .await
                .unwrap();
            assert_eq!(ep.calls.load(Ordering::SeqCst), 1);
        }

        #[tokio::test]
        async fn the_cache_is_bounded_in_bytes() {
            let groups: Vec<Value> = (0..200)
                .map(|i| json!({"name": format!("{i:0>200}")}))
                .collect();
            let (_ep, url) = endpoint(json!({"groups": groups}).to_string()).await;
            let c = client(512 * 1024);
            let i = "http://127.0.0.1:1";
            let p = policy(i, &format!("{i}/certs"), &url, "5m");
            let one = normalise(&json!({"groups": groups})).unwrap();
            let weight = (ENTRY_OVERHEAD + approx_bytes(&one)) as u64;
            for n in 0..200 {
                c.get_for_policy(&p, "t", &claims(i, &format!("nonce-{n}")), test_now())
                    .await
                    .unwrap();
            }
            let (entries, bytes) = c.cache_usage().await;
            eprintln!("200 identities of {weight} bytes: {entries} cached, {bytes} bytes");
            assert!(bytes <= 512 * 1024, "{bytes}");
            assert!(entries <= 512 * 1024 / weight, "{entries}");
        }
    }
}
