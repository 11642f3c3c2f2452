//! accessgate's own signing keys: the upstream assertion (`spec.upstreamAssertion`) is an
//! ES256 JWT signed with the `current` key of a key directory, and every key there is
//! published as a JWKS for the apps. ES256 because every JWT library an app may use verifies
//! it (EdDSA is still missing from some), with short signatures and keys.
//!
//! The directory holds `current.pem` (signs) and optionally `next.pem` and `previous.pem`
//! (published only): rotation moves next → current → previous, so a key is published before
//! any replica signs with it and stays published after the last token it signed has expired.
//! PEM files are SEC1 (`EC PRIVATE KEY`, what Helm's `genPrivateKey "ecdsa"` writes) or
//! PKCS#8, P-256. Without a directory a key is drawn at start (file mode). Signed tokens are
//! reused for half their lifetime per (payload, audience). See docs/security.md, "The
//! upstream assertion".

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::http::HeaderValue;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

use crate::core::assertion::Payload;

/// The files of a key directory, in the order they are published.
const SLOTS: [&str; 3] = ["current.pem", "next.pem", "previous.pem"];

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("{path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("no current signing key")]
    NoCurrentKey,
    #[error("signing failed: {0}")]
    Sign(String),
}

/// One key: how it signs and how it is published.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
}

/// The keys as last loaded.
struct KeyRing {
    current: Option<SigningKey>,
    /// The JWKS document, serialised once per load.
    jwks: Arc<str>,
    /// What the files were when loaded, to notice a change.
    stamp: Vec<Option<(std::time::SystemTime, u64)>>,
}

/// Where the signing keys come from, and the tokens' issuer.
#[derive(Debug, Clone, Default)]
pub struct AssertionConfig {
    pub issuer: String,
    pub keys: AssertionKeys,
}

#[derive(Debug, Clone, Default)]
pub enum AssertionKeys {
    /// No keys: nothing is signed (a replica of several without a shared key directory).
    #[default]
    None,
    /// A key drawn at start, for this process only.
    Drawn,
    /// A key directory, shared by every replica (the chart's Secret).
    Dir(PathBuf),
}

/// Signs assertions and publishes their keys.
pub struct AssertionSigner {
    issuer: String,
    dir: Option<PathBuf>,
    ring: ArcSwap<KeyRing>,
    /// (payload, audience, ttl, kid), exactly (no hash stands for an identity) → (token,
    /// issued at): a token is reused for half its lifetime, so a hot identity costs one
    /// signature per half-TTL. Bounded by bytes.
    cache: moka::sync::Cache<String, (HeaderValue, u64)>,
}

impl AssertionSigner {
    /// Keys from `dir`, or one drawn now when there is none. `issuer` is every token's `iss`.
    pub fn new(issuer: String, dir: Option<PathBuf>) -> Result<Self, SigningError> {
        let ring = match &dir {
            Some(d) => load(d)?,
            None => generated()?,
        };
        Ok(Self {
            issuer,
            dir,
            ring: ArcSwap::from_pointee(ring),
            cache: moka::sync::Cache::builder()
                .weigher(|k: &String, (t, _): &(HeaderValue, u64)| {
                    u32::try_from(k.len() + t.len() + 64).unwrap_or(u32::MAX)
                })
                .max_capacity(CACHE_BYTES)
                .time_to_live(Duration::from_secs(300))
                .build(),
        })
    }

    /// The signer `config` asks for, if any; a key directory that does not load is an
    /// error (the process does not start with keys it cannot use).
    pub fn start(config: &AssertionConfig) -> Result<Option<Self>, SigningError> {
        let dir = match &config.keys {
            AssertionKeys::None => return Ok(None),
            AssertionKeys::Drawn => {
                tracing::info!(
                    "upstream assertion key drawn at start (no --assertion-keys): apps refetch the JWKS after a restart"
                );
                None
            }
            AssertionKeys::Dir(d) => Some(d.clone()),
        };
        Self::new(config.issuer.clone(), dir).map(Some)
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The JWKS document apps fetch.
    pub fn jwks(&self) -> Arc<str> {
        self.ring.load().jwks.clone()
    }

    /// The `kid` tokens are signed under now, if any.
    pub fn current_kid(&self) -> Option<String> {
        self.ring.load().current.as_ref().map(|k| k.kid.clone())
    }

    /// Loads the directory again when a file in it changed. A directory that no longer
    /// loads keeps the keys already loaded (said in the log): a half-written rotation must
    /// not stop signing. Returns whether the keys changed.
    pub fn reload_if_changed(&self) -> bool {
        let Some(dir) = &self.dir else { return false };
        if stamps(dir) == self.ring.load().stamp {
            return false;
        }
        match load(dir) {
            Ok(ring) => {
                tracing::info!(dir = %dir.display(), kid = ring.current.as_ref().map(|k| k.kid.as_str()), "assertion signing keys reloaded");
                self.ring.store(Arc::new(ring));
                self.cache.invalidate_all();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "assertion signing keys not reloaded; the keys loaded before stay in use");
                false
            }
        }
    }

    /// A token for `payload` (claims without `iss`, `aud`, `iat`, `exp`) for `audience`,
    /// valid `ttl` from `now` (seconds since the epoch); reused while younger than `ttl / 2`.
    pub fn sign(
        &self,
        payload: &Payload,
        audience: &str,
        ttl: Duration,
        now: u64,
    ) -> Result<HeaderValue, SigningError> {
        use std::fmt::Write as _;
        let ring = self.ring.load();
        let key = ring.current.as_ref().ok_or(SigningError::NoCurrentKey)?;
        let text = payload.as_str();
        let mut cache_key = String::with_capacity(text.len() + audience.len() + key.kid.len() + 24);
        // JSON text never holds a raw control character: \n separates the parts unambiguously.
        let _ = write!(
            cache_key,
            "{text}\n{audience}\n{}\n{}",
            ttl.as_secs(),
            key.kid
        );
        if let Some((token, iat)) = self.cache.get(&cache_key)
            && now < iat + ttl.as_secs() / 2
        {
            return Ok(token);
        }
        let mut claims = payload
            .to_claims()
            .map_err(|e| SigningError::Sign(e.to_string()))?;
        claims.insert("iss".into(), Value::String(self.issuer.clone()));
        claims.insert("aud".into(), Value::String(audience.to_owned()));
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + ttl.as_secs()).into());
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| SigningError::Sign(e.to_string()))?;
        // A header value once, shared by every request that reuses it (no per-request check).
        let token = HeaderValue::try_from(token).map_err(|e| SigningError::Sign(e.to_string()))?;
        self.cache.insert(cache_key, (token.clone(), now));
        Ok(token)
    }
}

/// A new P-256 key as SEC1 PEM (`EC PRIVATE KEY`, what Helm's `genPrivateKey "ecdsa"`
/// writes): the key rotation's new `next.pem`.
pub fn new_key_pem() -> Result<String, SigningError> {
    use aws_lc_rs::encoding::{AsDer, EcPrivateKeyRfc5915Der};
    let failed = || SigningError::Sign("cannot generate a P-256 key".into());
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| failed())?;
    let der: EcPrivateKeyRfc5915Der = pair.private_key().as_der().map_err(|_| failed())?;
    Ok(pem::encode(&pem::Pem::new(
        "EC PRIVATE KEY",
        der.as_ref().to_vec(),
    )))
}

/// Bytes of signed tokens kept for reuse.
const CACHE_BYTES: u64 = 16 << 20;

fn stamps(dir: &Path) -> Vec<Option<(std::time::SystemTime, u64)>> {
    SLOTS
        .iter()
        .map(|f| {
            let m = std::fs::metadata(dir.join(f)).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

fn load(dir: &Path) -> Result<KeyRing, SigningError> {
    let stamp = stamps(dir);
    let mut keys = Vec::new();
    for (i, slot) in SLOTS.iter().enumerate() {
        let path = dir.join(slot);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            // Only `current` must exist; Kubernetes mounts optional Secret keys as absent files.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && i > 0 => continue,
            Err(e) => {
                return Err(SigningError::Key {
                    path,
                    message: e.to_string(),
                });
            }
        };
        let key = parse_pem(&text).map_err(|message| SigningError::Key {
            path: path.clone(),
            message,
        })?;
        keys.push((i == 0, key));
    }
    ring(keys, stamp)
}

fn generated() -> Result<KeyRing, SigningError> {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|_| SigningError::Sign("cannot generate a P-256 key".into()))?;
    let key = signing_key(&pair).map_err(SigningError::Sign)?;
    ring(vec![(true, key)], Vec::new())
}

fn ring(
    keys: Vec<(bool, SigningKey)>,
    stamp: Vec<Option<(std::time::SystemTime, u64)>>,
) -> Result<KeyRing, SigningError> {
    let mut set = JwkSet { keys: Vec::new() };
    let mut current = None;
    for (is_current, key) in keys {
        let mut jwk = Jwk::from_encoding_key(&key.encoding, Algorithm::ES256)
            .map_err(|e| SigningError::Sign(e.to_string()))?;
        jwk.common.key_id = Some(key.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
        // The same key in two slots (a rotation half done) is published once.
        if !set
            .keys
            .iter()
            .any(|k| k.common.key_id == jwk.common.key_id)
        {
            set.keys.push(jwk);
        }
        if is_current {
            current = Some(key);
        }
    }
    let jwks = serde_json::to_string(&set).map_err(|e| SigningError::Sign(e.to_string()))?;
    Ok(KeyRing {
        current,
        jwks: jwks.into(),
        stamp,
    })
}

/// A P-256 private key from PEM (SEC1 or PKCS#8).
fn parse_pem(text: &[u8]) -> Result<SigningKey, String> {
    let block = pem::parse(text).map_err(|e| format!("not PEM: {e}"))?;
    if !matches!(block.tag(), "EC PRIVATE KEY" | "PRIVATE KEY") {
        return Err(format!(
            "a {} block; expected EC PRIVATE KEY or PRIVATE KEY (P-256)",
            block.tag()
        ));
    }
    let pair =
        EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, block.contents())
            .map_err(|_| "not a P-256 private key".to_owned())?;
    signing_key(&pair)
}

fn signing_key(pair: &EcdsaKeyPair) -> Result<SigningKey, String> {
    let pkcs8 = pair
        .to_pkcs8v1()
        .map_err(|_| "cannot serialise the key".to_owned())?;
    let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
    let jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).map_err(|e| e.to_string())?;
    // RFC 7638: the key's own digest, so every replica names the same key alike.
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| e.to_string())?;
    Ok(SigningKey { kid, encoding })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A P-256 key as PKCS#8 PEM, and the same key as SEC1 (Helm's `genPrivateKey "ecdsa"`).
    fn key_pems() -> (String, String) {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let pkcs8 = pair.to_pkcs8v1().unwrap();
        let sec1 =
            aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::EcPrivateKeyRfc5915Der>::as_der(
                &pair.private_key(),
            )
            .unwrap();
        (
            pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec())),
            pem::encode(&pem::Pem::new("EC PRIVATE KEY", sec1.as_ref().to_vec())),
        )
    }

    fn payload() -> Payload {
        Payload::from(json!({"sub": "u-1", "policy": "ns/p"}).as_object().unwrap())
    }

    fn kids(signer: &AssertionSigner) -> Vec<String> {
        let set: Value = serde_json::from_str(&signer.jwks()).unwrap();
        set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    fn header_kid(token: &HeaderValue) -> String {
        jsonwebtoken::decode_header(token.as_bytes())
            .unwrap()
            .kid
            .unwrap()
    }

    #[test]
    fn sec1_and_pkcs8_name_the_same_key_and_rotation_publishes_before_signing() {
        let dir = tempfile::tempdir().unwrap();
        let (a_pkcs8, a_sec1) = key_pems();
        let (b_pkcs8, _) = key_pems();
        std::fs::write(dir.path().join("current.pem"), &a_sec1).unwrap();
        let signer =
            AssertionSigner::new("https://ag.test".into(), Some(dir.path().into())).unwrap();
        let a = signer.current_kid().unwrap();
        assert_eq!(kids(&signer), std::slice::from_ref(&a));

        // The same key as PKCS#8: the same kid (its thumbprint), nothing reloaded.
        std::fs::write(dir.path().join("current.pem"), &a_pkcs8).unwrap();
        assert!(signer.reload_if_changed());
        assert_eq!(signer.current_kid().unwrap(), a);

        // next: published, not signing.
        std::fs::write(dir.path().join("next.pem"), &b_pkcs8).unwrap();
        assert!(signer.reload_if_changed());
        let b = kids(&signer)[1].clone();
        assert_ne!(a, b);
        let token = signer
            .sign(&payload(), "app", Duration::from_secs(60), 1_000)
            .unwrap();
        assert_eq!(header_kid(&token), a);

        // Rotated: b signs, a is still published.
        std::fs::rename(
            dir.path().join("current.pem"),
            dir.path().join("previous.pem"),
        )
        .unwrap();
        std::fs::rename(dir.path().join("next.pem"), dir.path().join("current.pem")).unwrap();
        assert!(signer.reload_if_changed());
        assert_eq!(kids(&signer), [b.clone(), a.clone()]);
        let token = signer
            .sign(&payload(), "app", Duration::from_secs(60), 1_001)
            .unwrap();
        assert_eq!(header_kid(&token), b);
        assert!(!signer.reload_if_changed(), "nothing changed");
    }

    #[test]
    fn a_directory_that_stops_loading_keeps_the_keys_and_a_bad_one_never_starts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("current.pem"), key_pems().0).unwrap();
        let signer = AssertionSigner::new("i".into(), Some(dir.path().into())).unwrap();
        let kid = signer.current_kid();
        std::fs::write(dir.path().join("current.pem"), "half a rotation").unwrap();
        assert!(!signer.reload_if_changed());
        assert_eq!(signer.current_kid(), kid);
        assert!(
            signer
                .sign(&payload(), "app", Duration::from_secs(60), 1)
                .is_ok()
        );

        let empty = tempfile::tempdir().unwrap();
        let err = AssertionSigner::new("i".into(), Some(empty.path().into()))
            .err()
            .unwrap();
        assert!(err.to_string().contains("current.pem"), "{err}");
        std::fs::write(
            empty.path().join("current.pem"),
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = AssertionSigner::new("i".into(), Some(empty.path().into()))
            .err()
            .unwrap();
        assert!(err.to_string().contains("expected EC PRIVATE KEY"), "{err}");
    }

    #[test]
    fn a_token_is_reused_for_half_its_lifetime_and_only_for_the_same_payload_and_audience() {
        let signer = AssertionSigner::new("https://ag.test".into(), None).unwrap();
        let ttl = Duration::from_secs(60);
        let first = signer.sign(&payload(), "app", ttl, 1_000).unwrap();
        assert_eq!(signer.sign(&payload(), "app", ttl, 1_029).unwrap(), first);
        assert_ne!(signer.sign(&payload(), "app", ttl, 1_030).unwrap(), first);
        assert_ne!(signer.sign(&payload(), "other", ttl, 1_000).unwrap(), first);
        let someone_else =
            Payload::from(json!({"sub": "u-2", "policy": "ns/p"}).as_object().unwrap());
        assert_ne!(
            signer.sign(&someone_else, "app", ttl, 1_000).unwrap(),
            first
        );

        let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(first.as_bytes())
            .unwrap()
            .claims;
        assert_eq!(
            claims,
            json!({"sub": "u-1", "policy": "ns/p", "iss": "https://ag.test", "aud": "app", "iat": 1000, "exp": 1060})
        );
    }
}
