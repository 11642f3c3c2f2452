//! Parsing a key document: a plain JWKS (`{"keys": [...]}`) or Cloudflare's certs document,
//! which adds `public_cert` and `public_certs` (PEM certificates with a `kid`). Pure.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use aws_lc_rs::signature::{self as aws, ParsedPublicKey, VerificationAlgorithm};
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde::Deserialize;

/// The asymmetric algorithms a policy may allow, in the order of [`VerifyingKey`]'s slots.
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A key usable for signature verification.
pub struct VerifyingKey {
    pub kid: String,
    pub key: DecodingKey,
    /// The algorithm the key declares, if any; a token must then use exactly it.
    pub alg: Option<Algorithm>,
    fingerprint: [u8; 32],
    /// The key parsed into an aws-lc public-key object, once per algorithm it is used with
    /// (the declared one at load time), so verifying a token parses no key material.
    parsed: [OnceLock<Option<ParsedPublicKey>>; ALGORITHMS.len()],
}

impl VerifyingKey {
    pub fn new(kid: String, key: DecodingKey, alg: Option<Algorithm>) -> Self {
        let fingerprint = fingerprint(&key, alg);
        let k = Self {
            kid,
            key,
            alg,
            fingerprint,
            parsed: Default::default(),
        };
        if let Some(alg) = alg {
            k.parsed_for(alg);
        }
        k
    }

    /// The aws-lc key object for verifying `alg` signatures, or `None` when this key cannot
    /// (another family, or material aws-lc refuses).
    pub fn parsed_for(&self, alg: Algorithm) -> Option<&ParsedPublicKey> {
        let slot = ALGORITHMS.iter().position(|a| *a == alg)?;
        self.parsed[slot]
            .get_or_init(|| {
                let verification = aws_algorithm(alg)?;
                match self.key.kind() {
                    DecodingKeyKind::SecretOrDer(der) => ParsedPublicKey::new(verification, der),
                    DecodingKeyKind::RsaModulusExponent { n, e } => {
                        ParsedPublicKey::new(verification, rsa_public_key_der(n, e))
                    }
                }
                .ok()
            })
            .as_ref()
    }

    /// SHA-256 over the key material and declared algorithm: two keys published under one
    /// `kid` differ here, so what was verified with one is never taken as verified by the
    /// other.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }
}

/// aws-lc's verification algorithm for a JWS `alg` (ECDSA signatures in JWS are the fixed
/// `r || s` form).
fn aws_algorithm(alg: Algorithm) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match alg {
        Algorithm::RS256 => &aws::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &aws::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &aws::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &aws::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &aws::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &aws::RSA_PSS_2048_8192_SHA512,
        Algorithm::ES256 => &aws::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &aws::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &aws::ED25519,
        _ => return None,
    })
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` in DER,
/// from a JWK's big-endian `n` and `e`.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn length(out: &mut Vec<u8>, len: usize) {
        match len {
            0..=0x7f => out.push(len as u8),
            0x80..=0xff => out.extend([0x81, len as u8]),
            _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
        }
    }
    fn integer(out: &mut Vec<u8>, bytes: &[u8]) {
        let bytes = match bytes.iter().position(|b| *b != 0) {
            Some(i) => &bytes[i..],
            None => &[0][..],
        };
        // A set high bit would read as negative: prefix a zero byte.
        let pad = bytes[0] & 0x80 != 0;
        out.push(0x02);
        length(out, bytes.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(bytes);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(&mut body, n);
    integer(&mut body, e);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(0x30);
    length(&mut out, body.len());
    out.extend(body);
    out
}

fn fingerprint(key: &DecodingKey, alg: Option<Algorithm>) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut field = |tag: &[u8], bytes: &[u8]| {
        ctx.update(tag);
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    field(b"family", format!("{:?}", key.family()).as_bytes());
    field(b"alg", format!("{alg:?}").as_bytes());
    match key.kind() {
        DecodingKeyKind::SecretOrDer(der) => field(b"der", der),
        DecodingKeyKind::RsaModulusExponent { n, e } => {
            field(b"n", n);
            field(b"e", e);
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
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

    /// Key IDs with their fingerprints, sorted: equal exactly when two sets hold the same keys.
    pub fn fingerprints(&self) -> Vec<(&str, &[u8; 32])> {
        let mut all: Vec<(&str, &[u8; 32])> = self
            .keys
            .values()
            .map(|k| (k.kid.as_str(), k.fingerprint()))
            .collect();
        all.sort();
        all
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
    /// JSON, but with none of `keys`, `public_cert`, `public_certs`: not a key document.
    #[error("not a JWKS or certs document")]
    NotKeyDocument,
    #[error("key document holds no usable signing key")]
    NoUsableKeys,
}

#[derive(Deserialize)]
struct CertsDocument {
    #[serde(default)]
    keys: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    public_cert: Option<serde_json::Value>,
    #[serde(default)]
    public_certs: Option<Vec<serde_json::Value>>,
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
    if doc.keys.is_none() && doc.public_cert.is_none() && doc.public_certs.is_none() {
        return Err(KeyParseError::NotKeyDocument);
    }
    let mut keys = HashMap::new();
    for value in doc.keys.unwrap_or_default() {
        if let Some(k) = from_jwk(value) {
            keys.insert(k.kid.clone(), Arc::new(k));
        }
    }
    // Certificates only fill gaps: Cloudflare publishes the same keys in both shapes.
    for value in doc
        .public_cert
        .into_iter()
        .chain(doc.public_certs.unwrap_or_default())
    {
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
    Some(VerifyingKey::new(kid, key, alg))
}

fn from_pem_cert(value: serde_json::Value) -> Option<VerifyingKey> {
    let cert: PemCert = serde_json::from_value(value).ok()?;
    if !usable_kid(&cert.kid) {
        return None;
    }
    let key = DecodingKey::from_rsa_pem(cert.cert.as_bytes()).ok()?;
    Some(VerifyingKey::new(cert.kid, key, None))
}

/// What a key lookup found, for the pure decision code.
#[derive(Debug, Clone)]
pub enum KeyAnswer {
    Found(Arc<VerifyingKey>),
    /// Keys are loaded but none has this `kid`.
    Unknown,
    /// No usable key set: never fetched, or the last good one is too old.
    Unavailable,
}

/// Synchronous view of the key caches, as the decision needs it (the caches live in
/// `crate::keys`).
pub trait KeyLookup {
    fn lookup(&self, jwks_uri: &url::Url, kid: &str) -> KeyAnswer;
}

/// One key set, read once and never refetched: the keys `accessgate check` fetched for one
/// decision, and the fixed keys of tests and benchmarks. `None`: no set was ever fetched.
pub struct FixedKeys(pub Option<KeySet>);

impl KeyLookup for FixedKeys {
    fn lookup(&self, _: &url::Url, kid: &str) -> KeyAnswer {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

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

    /// A key in a log line or a panic message says which key, never its material.
    #[test]
    fn a_key_debugs_as_its_kid_and_algorithm_only() {
        let doc = serde_json::json!({"keys": [
            {"kid": "k1", "kty": "RSA", "alg": "RS256", "use": "sig", "e": "AQAB", "n": N}
        ]});
        let set = parse_key_set(doc.to_string().as_bytes()).unwrap();
        let shown = format!("{:?}", set.get("k1").unwrap());
        assert_eq!(shown, r#"VerifyingKey { kid: "k1", alg: Some(RS256) }"#);
        assert!(!shown.contains(&N[..16]));
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
    fn certificates_alone_are_keys_when_their_kid_is_usable() {
        let signer = crate::devissuer::Signer::new("http://127.0.0.1:9").unwrap();
        let mut doc = signer.certs_document();
        doc.as_object_mut().unwrap().remove("keys");
        let set = parse_key_set(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.ids(), vec![signer.current_kid().to_owned()]);
        // The same certificates under kids nobody could send.
        for bad in [String::new(), "k".repeat(MAX_KID_LEN + 1)] {
            let mut doc = doc.clone();
            doc["public_cert"]["kid"] = bad.clone().into();
            for c in doc["public_certs"].as_array_mut().unwrap() {
                c["kid"] = bad.clone().into();
            }
            assert!(
                matches!(
                    parse_key_set(doc.to_string().as_bytes()),
                    Err(KeyParseError::NoUsableKeys)
                ),
                "kid {bad:?}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            parse_key_set(b"<html>"),
            Err(KeyParseError::NotJson(_))
        ));
        assert_eq!(
            parse_key_set(b"{}").unwrap_err(),
            KeyParseError::NotKeyDocument
        );
        assert_eq!(
            parse_key_set(br#"{"error":"SECRET-INTERNAL-TEXT"}"#).unwrap_err(),
            KeyParseError::NotKeyDocument
        );
        assert_eq!(
            parse_key_set(br#"{"keys": []}"#).unwrap_err(),
            KeyParseError::NoUsableKeys
        );
        assert_eq!(
            parse_key_set(br#"{"keys": [{"kty": "oct", "kid": "x", "k": "AA"}]}"#).unwrap_err(),
            KeyParseError::NoUsableKeys
        );
        assert!(parse_key_set(b"[]").is_err());
    }

    /// A policy may allow each of these, so each needs its own aws-lc verifier: a missing
    /// one would refuse every token of that algorithm as `signature_invalid`.
    #[test]
    fn every_allowed_algorithm_has_its_own_verifier() {
        let verifiers: HashSet<String> = ALGORITHMS
            .iter()
            .map(|alg| {
                format!(
                    "{:?}",
                    aws_algorithm(*alg).unwrap_or_else(|| panic!("{alg:?}"))
                )
            })
            .collect();
        assert_eq!(verifiers.len(), ALGORITHMS.len(), "{verifiers:?}");
        assert!(aws_algorithm(Algorithm::HS256).is_none());
    }

    /// Each algorithm a key serves gets its own parsed verifier, in whatever order they are
    /// asked for.
    #[test]
    fn a_key_parses_one_verifier_per_algorithm() {
        let signer = crate::core::fixtures::Signer::new(crate::core::fixtures::ISS).unwrap();
        let mut doc = signer.certs_document();
        for k in doc["keys"].as_array_mut().unwrap() {
            k.as_object_mut().unwrap().remove("alg");
        }
        let set = parse_key_set(doc.to_string().as_bytes()).unwrap();
        let key = set.get(&set.ids()[0]).unwrap();
        for alg in [
            Algorithm::RS512,
            Algorithm::RS384,
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::RS512,
        ] {
            let parsed = key.parsed_for(alg).unwrap_or_else(|| panic!("{alg:?}"));
            assert_eq!(
                format!("{:?}", parsed.algorithm()),
                format!("{:?}", aws_algorithm(alg).unwrap()),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn a_set_counts_its_keys() {
        let doc = serde_json::json!({"keys": [
            {"kid": "a", "kty": "RSA", "e": "AQAB", "n": N},
            {"kid": "b", "kty": "RSA", "e": "AQAB", "n": N},
            {"kid": "c", "kty": "RSA", "e": "AQAB", "n": N}
        ]});
        let set = parse_key_set(doc.to_string().as_bytes()).unwrap();
        assert_eq!((set.len(), set.is_empty()), (3, false));
        assert!(KeySet::default().is_empty());
    }

    #[test]
    fn fingerprints_follow_the_material_not_the_kid() {
        let doc = |n: &str| {
            serde_json::json!({"keys": [{"kid": "k", "kty": "RSA", "alg": "RS256", "e": "AQAB", "n": n}]})
                .to_string()
        };
        let a = parse_key_set(doc(N).as_bytes()).unwrap();
        let again = parse_key_set(doc(N).as_bytes()).unwrap();
        let other_n = format!("{}A", &N[..N.len() - 1]);
        let b = parse_key_set(doc(&other_n).as_bytes()).unwrap();
        assert_eq!(a.fingerprints(), again.fingerprints());
        assert_eq!(a.fingerprints().len(), 1, "one entry per key");
        assert_ne!(
            a.fingerprints(),
            b.fingerprints(),
            "same kid, other material"
        );
        assert_eq!(a.ids(), b.ids());
        assert_ne!(
            a.get("k").unwrap().fingerprint(),
            b.get("k").unwrap().fingerprint()
        );
    }
}
