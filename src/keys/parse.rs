//! Parsing a key document: a plain JWKS (`{"keys": [...]}`) or Cloudflare's certs document,
//! which adds `public_cert` and `public_certs` (PEM certificates with a `kid`). Pure.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// A key usable for signature verification.
pub struct VerifyingKey {
    pub kid: String,
    pub key: DecodingKey,
    /// The algorithm the key declares, if any; a token must then use exactly it.
    pub alg: Option<Algorithm>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

/// The keys of one issuer, by `kid`.
#[derive(Debug, Default, Clone)]
pub struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
}

impl KeySet {
    pub fn get(&self, kid: &str) -> Option<&Arc<VerifyingKey>> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Key IDs, sorted, for status and logs.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.keys.keys().cloned().collect();
        ids.sort();
        ids
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyParseError {
    #[error("key document is not JSON: {0}")]
    NotJson(String),
    #[error("key document holds no usable signing key")]
    NoUsableKeys,
}

#[derive(Deserialize)]
struct CertsDocument {
    #[serde(default)]
    keys: Vec<serde_json::Value>,
    #[serde(default)]
    public_cert: Option<serde_json::Value>,
    #[serde(default)]
    public_certs: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct PemCert {
    kid: String,
    cert: String,
}

/// Longest `kid` kept; longer ones are ignored, as a token naming one is refused anyway.
pub const MAX_KID_LEN: usize = 256;

/// Parses either shape. Individual keys that are malformed, not for signing, or without a
/// `kid` are skipped (an issuer may publish keys of kinds we do not use); a document with
/// no usable key at all is an error, so a garbage response never replaces a good set.
pub fn parse_key_set(body: &[u8]) -> Result<KeySet, KeyParseError> {
    let doc: CertsDocument =
        serde_json::from_slice(body).map_err(|e| KeyParseError::NotJson(e.to_string()))?;
    let mut keys = HashMap::new();
    for value in doc.keys {
        if let Some(k) = from_jwk(value) {
            keys.insert(k.kid.clone(), Arc::new(k));
        }
    }
    // Certificates only fill gaps: Cloudflare publishes the same keys in both shapes.
    for value in doc.public_cert.into_iter().chain(doc.public_certs) {
        if let Some(k) = from_pem_cert(value)
            && !keys.contains_key(&k.kid)
        {
            keys.insert(k.kid.clone(), Arc::new(k));
        }
    }
    if keys.is_empty() {
        return Err(KeyParseError::NoUsableKeys);
    }
    Ok(KeySet { keys })
}

fn usable_kid(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= MAX_KID_LEN
}

fn from_jwk(value: serde_json::Value) -> Option<VerifyingKey> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    let kid = jwk.common.key_id.clone().filter(|k| usable_kid(k))?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(ka) => Some(ka.to_string().parse::<Algorithm>().ok()?),
    };
    // A symmetric key in a public key set is never usable: it would let anyone who can
    // read the set forge tokens.
    if matches!(
        alg,
        Some(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    ) {
        return None;
    }
    if matches!(
        jwk.algorithm,
        jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
    ) {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(VerifyingKey { kid, key, alg })
}

fn from_pem_cert(value: serde_json::Value) -> Option<VerifyingKey> {
    let cert: PemCert = serde_json::from_value(value).ok()?;
    if !usable_kid(&cert.kid) {
        return None;
    }
    let key = DecodingKey::from_rsa_pem(cert.cert.as_bytes()).ok()?;
    Some(VerifyingKey {
        kid: cert.kid,
        key,
        alg: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real 2048-bit RSA modulus is not needed for parsing; DecodingKey::from_jwk only
    // decodes the components.
    const N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    #[test]
    fn parses_cloudflare_certs_shape() {
        let doc = serde_json::json!({
            "keys": [
                {"kid": "a".repeat(64), "kty": "RSA", "alg": "RS256", "use": "sig", "e": "AQAB", "n": N},
                {"kid": "b".repeat(64), "kty": "RSA", "alg": "RS256", "use": "sig", "e": "AQAB", "n": N}
            ],
            "public_cert": {"kid": "a".repeat(64), "cert": "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n"},
            "public_certs": []
        });
        let set = parse_key_set(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.ids(), vec!["a".repeat(64), "b".repeat(64)]);
        assert_eq!(
            set.get(&"a".repeat(64)).unwrap().alg,
            Some(Algorithm::RS256)
        );
    }

    #[test]
    fn skips_unusable_keys_but_keeps_good_ones() {
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "e": "AQAB", "n": N},                                   // no kid
            {"kid": "enc", "kty": "RSA", "use": "enc", "e": "AQAB", "n": N},       // not for signing
            {"kid": "hmac", "kty": "oct", "k": "c2VjcmV0"},                         // symmetric
            {"kid": "weird", "kty": "XYZ"},                                         // unknown kind
            {"kid": "k".repeat(MAX_KID_LEN + 1), "kty": "RSA", "e": "AQAB", "n": N}, // absurd kid
            {"kid": "good", "kty": "RSA", "e": "AQAB", "n": N}
        ]});
        let set = parse_key_set(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.ids(), vec!["good".to_string()]);
        assert_eq!(set.get("good").unwrap().alg, None);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            parse_key_set(b"<html>"),
            Err(KeyParseError::NotJson(_))
        ));
        assert_eq!(
            parse_key_set(b"{}").unwrap_err(),
            KeyParseError::NoUsableKeys
        );
        assert_eq!(
            parse_key_set(br#"{"keys": [{"kty": "oct", "kid": "x", "k": "AA"}]}"#).unwrap_err(),
            KeyParseError::NoUsableKeys
        );
        assert!(parse_key_set(b"[]").is_err());
    }
}
