//! Cloudflare identity enrichment (`spec.identity`): Access JWTs trim custom claims and carry
//! no device posture, so after a token verifies, its full identity is fetched from
//! `get-identity` (with the token as the `CF_Authorization` cookie) and exposed to claim
//! headers and rules as an `identity` object:
//! `{email, groups: [names], idp: {type, id}, country, devicePosture: {<rule name>: bool}}`.
//!
//! Fetches are cached per `identity_nonce` (per token when absent) for `cacheFor`, never past
//! the token's `exp`, and concurrent fetches of one identity are coalesced.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::policy::CompiledIdentity;
use crate::verify::Claims;

/// The claims with the fetched identity under `identity` (replacing any claim of that name).
pub fn enrich(claims: &Claims, identity: &Value) -> Claims {
    let mut c = claims.clone();
    c.0.insert("identity".into(), identity.clone());
    c
}

/// The claims without an `identity` claim, so only a fetched identity can ever fill it.
pub fn without_identity(claims: &Claims) -> Claims {
    let mut c = claims.clone();
    c.0.remove("identity");
    c
}

/// get-identity's answer, reduced to the fields policies can use.
pub fn normalise(resp: &Value) -> Value {
    let groups: Vec<Value> = resp["groups"]
        .as_array()
        .map(|gs| {
            gs.iter()
                .filter_map(|g| g.get("name").and_then(Value::as_str).or_else(|| g.as_str()))
                .map(|n| json!(n))
                .collect()
        })
        .unwrap_or_default();
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
    Value::Object(out)
}

#[derive(Clone)]
struct Entry {
    identity: Arc<Value>,
    ttl: Duration,
}

struct Ttl;

impl moka::Expiry<String, Entry> for Ttl {
    fn expire_after_create(&self, _: &String, v: &Entry, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
}

/// Fetches and caches identities.
#[derive(Clone)]
pub struct IdentityClient {
    http: reqwest::Client,
    cache: moka::future::Cache<String, Entry>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct IdentityError(pub String);

const MAX_BODY: usize = 256 * 1024;

impl IdentityClient {
    pub fn new() -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("accessgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let cache = moka::future::Cache::builder()
            .max_capacity(50_000)
            .expire_after(Ttl)
            .build();
        Ok(Self { http, cache })
    }

    /// The identity behind a verified token.
    pub async fn get(
        &self,
        cfg: &CompiledIdentity,
        token: &str,
        claims: &Claims,
    ) -> Result<Arc<Value>, IdentityError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let until_exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .map(|e| e - now)
            .unwrap_or(0.0);
        if until_exp <= 0.0 {
            return Err(IdentityError("token expired".into()));
        }
        let ttl = cfg.cache_for.min(Duration::from_secs_f64(until_exp));
        let nonce = match claims.get("identity_nonce").and_then(Value::as_str) {
            Some(n) => n.to_owned(),
            None => {
                let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
                d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
            }
        };
        // The nonce identifies the Access session; the subject and email are part of the key too,
        // so a reused nonce can never hand one user another user's identity.
        let who = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let key = format!(
            "{}\u{0}{nonce}\u{0}{}\u{0}{}",
            cfg.url,
            who("sub"),
            who("email")
        );
        let entry = self
            .cache
            .try_get_with(key, async {
                let identity = self.fetch(cfg, token).await?;
                Ok::<_, IdentityError>(Entry {
                    identity: Arc::new(identity),
                    ttl,
                })
            })
            .await
            .map_err(|e: Arc<IdentityError>| (*e).clone())?;
        Ok(entry.identity)
    }

    async fn fetch(&self, cfg: &CompiledIdentity, token: &str) -> Result<Value, IdentityError> {
        let err =
            |e: &dyn std::fmt::Display| IdentityError(format!("get-identity at {}: {e}", cfg.url));
        let mut resp = self
            .http
            .get(cfg.url.clone())
            .header("cookie", format!("{}={token}", crate::verify::AUTH_COOKIE))
            .send()
            .await
            .map_err(|e| err(&e))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(err(&format!("HTTP {}", resp.status().as_u16())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| err(&e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(err(&"response too large"));
            }
            body.extend_from_slice(&chunk);
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| err(&e))?;
        if !v.is_object() {
            return Err(err(&"not a JSON object"));
        }
        Ok(normalise(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let n = normalise(&resp);
        assert_eq!(n["groups"], json!(["sre", "eng"]));
        assert_eq!(n["idp"]["type"], "okta");
        assert_eq!(n["country"], "DE");
        assert_eq!(
            n["devicePosture"],
            json!({"disk-encryption": true, "firewall": false})
        );
    }

    #[test]
    fn only_a_fetched_identity_fills_the_identity_claim() {
        let c: Claims =
            serde_json::from_value(json!({"email": "a@b", "identity": {"groups": ["admins"]}}))
                .unwrap();
        assert!(without_identity(&c).get("identity").is_none());
        let e = enrich(&c, &json!({"groups": ["eng"]}));
        assert_eq!(
            e.path(&["identity".into(), "groups".into()]),
            Some(&json!(["eng"]))
        );
    }
}
