//! The dev issuer's keys and token minting: RSA-2048 keys published in Cloudflare's certs
//! shape (`keys` + `public_cert` + `public_certs`, current and previous key), tokens shaped
//! like Access app, service and org tokens. For tests and demos only.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::Deserialize;
use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("key generation failed: {0}")]
    KeyGen(String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("no key with kid {0}")]
    UnknownKid(String),
}

struct IssuerKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
    cert_pem: String,
}

impl IssuerKey {
    fn generate() -> Result<Self, SignerError> {
        let kg = |e: &dyn std::fmt::Display| SignerError::KeyGen(e.to_string());
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).map_err(|e| kg(&e))?;
        let encoding =
            EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).map_err(|e| kg(&e))?;
        let jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).map_err(|e| kg(&e))?;
        let mut jwk = serde_json::to_value(jwk).map_err(|e| kg(&e))?;
        // Cloudflare's kid is 64 hex characters; a digest of the modulus gives the same shape.
        let n = jwk["n"].as_str().unwrap_or_default().to_owned();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, n.as_bytes());
        let kid: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        let params = rcgen::CertificateParams::new(vec!["accessgate-dev-issuer".to_owned()])
            .map_err(|e| kg(&e))?;
        let cert_pem = params.self_signed(&pair).map_err(|e| kg(&e))?.pem();
        Ok(Self {
            kid,
            encoding,
            jwk,
            cert_pem,
        })
    }
}

/// What to put in a minted token. Everything has a realistic default; `claims` and
/// `header` are merged last, so a test can set any field to any value.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MintRequest {
    pub aud: Vec<String>,
    /// `app` (default), `service` (Cloudflare service token) or `org`.
    #[serde(rename = "type")]
    pub token_type: Option<String>,
    pub email: Option<String>,
    pub sub: Option<String>,
    pub common_name: Option<String>,
    /// Lifetime in seconds from now (default 3600); negative for an already-expired token.
    pub ttl: Option<i64>,
    /// `nbf` offset from now in seconds (default 0).
    pub nbf_offset: Option<i64>,
    pub claims: Map<String, Value>,
    pub header: Map<String, Value>,
    /// Sign with this key instead of the current one (it must still be published).
    pub kid: Option<String>,
}

/// The issuer's identity and keys; newest key first, at most two (current + previous),
/// like Cloudflare.
pub struct Signer {
    issuer: String,
    keys: Vec<IssuerKey>,
}

impl Signer {
    pub fn new(issuer: impl Into<String>) -> Result<Self, SignerError> {
        Ok(Self {
            issuer: issuer.into(),
            keys: vec![IssuerKey::generate()?],
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn current_kid(&self) -> &str {
        &self.keys[0].kid
    }

    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.kid.clone()).collect()
    }

    /// New current key; the old current stays published as previous, the one before goes.
    pub fn rotate(&mut self) -> Result<String, SignerError> {
        self.keys.insert(0, IssuerKey::generate()?);
        self.keys.truncate(2);
        Ok(self.keys[0].kid.clone())
    }

    /// Cloudflare's `/cdn-cgi/access/certs` document.
    pub fn certs_document(&self) -> Value {
        let certs: Vec<Value> = self
            .keys
            .iter()
            .map(|k| json!({"kid": k.kid, "cert": k.cert_pem}))
            .collect();
        json!({
            "keys": self.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>(),
            "public_cert": certs[0],
            "public_certs": certs,
        })
    }

    /// A token shaped like Cloudflare Access issues, with `now` as the issue time.
    pub fn mint(&self, req: &MintRequest, now: i64) -> Result<String, SignerError> {
        let kid = req
            .kid
            .clone()
            .unwrap_or_else(|| self.current_kid().to_owned());
        let mut header = Map::new();
        header.insert("alg".into(), json!("RS256"));
        header.insert("kid".into(), json!(kid));
        header.insert("typ".into(), json!("JWT"));
        header.extend(req.header.clone());

        let mut claims = Map::new();
        claims.insert("aud".into(), json!(req.aud));
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now + req.nbf_offset.unwrap_or(0)));
        claims.insert("exp".into(), json!(now + req.ttl.unwrap_or(3600)));
        match req.token_type.as_deref().unwrap_or("app") {
            "service" => {
                claims.insert("type".into(), json!("app"));
                claims.insert("sub".into(), json!(""));
                let cn = req
                    .common_name
                    .clone()
                    .unwrap_or_else(|| "dev-client.access".into());
                claims.insert("common_name".into(), json!(cn));
                claims.remove("nbf");
            }
            other => {
                let email = req
                    .email
                    .clone()
                    .unwrap_or_else(|| "dev@example.com".into());
                let sub = req
                    .sub
                    .clone()
                    .unwrap_or_else(|| format!("user-{}", &hex_digest(&email)[..12]));
                claims.insert("type".into(), json!(other));
                claims.insert("email".into(), json!(email));
                claims.insert("sub".into(), json!(sub));
                // Unique per token, like an Access session's nonce.
                let nonce: u64 = rand::random();
                claims.insert("identity_nonce".into(), json!(format!("{nonce:016x}")));
                claims.insert("country".into(), json!("US"));
            }
        }
        claims.extend(req.claims.clone());
        self.sign_raw(
            &Value::Object(header).to_string(),
            &Value::Object(claims).to_string(),
            Some(&kid),
        )
    }

    /// Signs exactly these header and payload texts (which may be invalid or hostile JSON)
    /// with RS256 under `kid` (default: current key).
    pub fn sign_raw(
        &self,
        header: &str,
        payload: &str,
        kid: Option<&str>,
    ) -> Result<String, SignerError> {
        let key = match kid {
            None => &self.keys[0],
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid == kid)
                .ok_or_else(|| SignerError::UnknownKid(kid.into()))?,
        };
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key.encoding, Algorithm::RS256)
                .map_err(|e| SignerError::Sign(e.to_string()))?;
        Ok(format!("{message}.{signature}"))
    }
}

fn hex_digest(s: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
