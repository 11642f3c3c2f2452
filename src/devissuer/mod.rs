//! A local, Cloudflare-Access-shaped issuer for demos and tests: publishes its keys at
//! `/cdn-cgi/access/certs`, mints tokens, rotates keys and can simulate a key outage.
//! It signs whatever it is asked to: never expose it beyond loopback.

mod signer;

pub use signer::{MintRequest, Signer, SignerError};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

/// How the certs endpoint behaves; tests switch it to simulate an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertsMode {
    Ok,
    /// 503 Service Unavailable.
    Fail,
    /// 200 with a body that is not a key set.
    Garbage,
}

pub struct IssuerState {
    signer: RwLock<Signer>,
    certs_mode: RwLock<CertsMode>,
    /// get-identity answers by email (groups, IdP, country, posture), set with POST /identity.
    identities: RwLock<HashMap<String, IdentityConfig>>,
    identity_mode: RwLock<CertsMode>,
    identity_calls: AtomicU64,
    /// Requests to the certs endpoint: what an issuer sees of a client's fetch rate.
    certs_calls: AtomicU64,
}

/// What get-identity reports for one user.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    pub email: String,
    pub groups: Vec<String>,
    pub idp: Option<String>,
    pub country: Option<String>,
    /// Device posture rule name → passed.
    pub posture: BTreeMap<String, bool>,
}

pub type SharedIssuer = Arc<IssuerState>;

impl IssuerState {
    pub fn new(issuer: impl Into<String>) -> Result<SharedIssuer, SignerError> {
        Ok(Arc::new(Self {
            signer: RwLock::new(Signer::new(issuer)?),
            certs_mode: RwLock::new(CertsMode::Ok),
            identities: RwLock::new(HashMap::new()),
            identity_mode: RwLock::new(CertsMode::Ok),
            identity_calls: AtomicU64::new(0),
            certs_calls: AtomicU64::new(0),
        }))
    }

    pub fn mint(&self, req: &MintRequest) -> Result<String, SignerError> {
        self.signer
            .read()
            .expect("signer lock")
            .mint(req, unix_now())
    }

    pub fn rotate(&self) -> Result<String, SignerError> {
        self.signer.write().expect("signer lock").rotate()
    }

    pub fn issuer(&self) -> String {
        self.signer.read().expect("signer lock").issuer().to_owned()
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The issuer URL for a listener: `http://<addr>`.
pub fn issuer_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

pub fn router(state: SharedIssuer) -> Router {
    Router::new()
        .route("/cdn-cgi/access/certs", get(certs))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/mint", post(mint))
        .route("/sign", post(sign))
        .route("/rotate", post(rotate))
        .route("/certs-mode", post(set_certs_mode))
        .route("/cdn-cgi/access/get-identity", get(get_identity))
        .route("/identity", post(set_identity))
        .route("/identity-mode", post(set_identity_mode))
        .route("/identity-calls", get(identity_calls))
        .route("/certs-calls", get(certs_calls))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

async fn certs(State(s): State<SharedIssuer>) -> Response {
    s.certs_calls.fetch_add(1, Ordering::Relaxed);
    match *s.certs_mode.read().expect("mode lock") {
        CertsMode::Ok => {
            Json(s.signer.read().expect("signer lock").certs_document()).into_response()
        }
        CertsMode::Fail => (StatusCode::SERVICE_UNAVAILABLE, "simulated outage").into_response(),
        CertsMode::Garbage => (
            [(header::CONTENT_TYPE, "text/html")],
            "<html>not keys</html>",
        )
            .into_response(),
    }
}

async fn discovery(State(s): State<SharedIssuer>) -> Response {
    let iss = s.issuer();
    Json(json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/cdn-cgi/access/certs"),
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
    }))
    .into_response()
}

fn signer_error(e: SignerError) -> Response {
    (StatusCode::BAD_REQUEST, e.to_string()).into_response()
}

async fn mint(State(s): State<SharedIssuer>, Json(req): Json<MintRequest>) -> Response {
    match s.mint(&req) {
        Ok(token) => token.into_response(),
        Err(e) => signer_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignRequest {
    header: String,
    payload: String,
    #[serde(default)]
    kid: Option<String>,
}

async fn sign(State(s): State<SharedIssuer>, Json(req): Json<SignRequest>) -> Response {
    match s.signer.read().expect("signer lock").sign_raw(
        &req.header,
        &req.payload,
        req.kid.as_deref(),
    ) {
        Ok(token) => token.into_response(),
        Err(e) => signer_error(e),
    }
}

async fn rotate(State(s): State<SharedIssuer>) -> Response {
    match s.rotate() {
        Ok(kid) => Json(json!({"kid": kid, "kids": s.signer.read().expect("signer lock").kids()}))
            .into_response(),
        Err(e) => signer_error(e),
    }
}

#[derive(Deserialize)]
struct ModeRequest {
    mode: CertsMode,
}

async fn set_certs_mode(State(s): State<SharedIssuer>, Json(req): Json<ModeRequest>) -> Response {
    *s.certs_mode.write().expect("mode lock") = req.mode;
    StatusCode::NO_CONTENT.into_response()
}

/// Cloudflare's get-identity: the caller's identity for the token in its CF_Authorization
/// cookie, which must be one this issuer signed.
async fn get_identity(State(s): State<SharedIssuer>, headers: HeaderMap) -> Response {
    s.identity_calls.fetch_add(1, Ordering::Relaxed);
    if *s.identity_mode.read().expect("mode lock") != CertsMode::Ok {
        return (StatusCode::SERVICE_UNAVAILABLE, "simulated outage").into_response();
    }
    let Some(claims) = own_token_claims(&s, &headers) else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"err": "invalid token"})),
        )
            .into_response();
    };
    let email = claims
        .get("email")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let cfg = s
        .identities
        .read()
        .expect("identity lock")
        .get(&email)
        .cloned()
        .unwrap_or_default();
    let posture: serde_json::Map<String, serde_json::Value> = cfg
        .posture
        .iter()
        .enumerate()
        .map(|(i, (name, ok))| {
            let id = format!("00000000-0000-4000-8000-{i:012}");
            (id.clone(), json!({"id": id, "type": "custom", "success": ok, "rule_name": name, "timestamp": "2026-01-01T00:00:00Z"}))
        })
        .collect();
    Json(json!({
        "id": claims.get("sub"),
        "email": email,
        "name": email.split('@').next(),
        "idp": {"id": "dev-idp", "type": cfg.idp.as_deref().unwrap_or("onetimepin")},
        "geo": {"country": cfg.country.as_deref().unwrap_or("US")},
        "groups": cfg.groups.iter().enumerate().map(|(i, g)| json!({"id": format!("g{i}"), "name": g, "email": format!("{g}@example.com")})).collect::<Vec<_>>(),
        "devicePosture": posture,
        "identity_nonce": claims.get("identity_nonce"),
        "iat": claims.get("iat"),
    }))
    .into_response()
}

fn own_token_claims(s: &IssuerState, headers: &HeaderMap) -> Option<crate::core::verify::Claims> {
    let token =
        crate::core::verify::extract_token(headers, &[crate::api::TokenSource::Cookie]).ok()?;
    let doc = s.signer.read().expect("signer lock").certs_document();
    let keys = crate::keys::parse_key_set(doc.to_string().as_bytes()).ok()?;
    let header = crate::core::verify::read_header(token, &[jsonwebtoken::Algorithm::RS256]).ok()?;
    let key = keys.get(&header.kid)?;
    crate::core::verify::verify_signature(token, &header, key).ok()
}

async fn set_identity(State(s): State<SharedIssuer>, Json(cfg): Json<IdentityConfig>) -> Response {
    s.identities
        .write()
        .expect("identity lock")
        .insert(cfg.email.clone(), cfg);
    StatusCode::NO_CONTENT.into_response()
}

async fn set_identity_mode(
    State(s): State<SharedIssuer>,
    Json(req): Json<ModeRequest>,
) -> Response {
    *s.identity_mode.write().expect("mode lock") = req.mode;
    StatusCode::NO_CONTENT.into_response()
}

async fn identity_calls(State(s): State<SharedIssuer>) -> Response {
    Json(json!({"calls": s.identity_calls.load(Ordering::Relaxed)})).into_response()
}

async fn certs_calls(State(s): State<SharedIssuer>) -> Response {
    Json(json!({"calls": s.certs_calls.load(Ordering::Relaxed)})).into_response()
}
