//! HTTP: the auth listener (what the proxy calls) and the admin listener (probes, metrics).
//!
//! An adapter: each handler reads its proxy's dialect into an [`AuthRequest`], the one
//! service ([`crate::serve::authorize`]) decides, and `render` writes its [`Verdict`] as a
//! response.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::core::decision::Unobserved;
use crate::core::dialect;
use crate::core::reason::Reason;
use crate::serve::authorize::{self, AuthRequest, Select};
use crate::serve::state::AppState;
use crate::serve::verdict::Verdict;

/// Envoy ext_authz: request headers to remove before the request goes upstream.
const ENVOY_REMOVE_HEADER: &str = "x-envoy-auth-headers-to-remove";

pub fn auth_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/auth", any(auth_by_route))
        .route("/auth/{namespace}/{name}", any(auth_by_name))
        .route("/forward", any(forward_by_route))
        .route("/forward/{namespace}/{name}", any(forward_by_name))
        .route("/envoy/{namespace}/{name}", any(envoy_by_name))
        .route("/envoy/{namespace}/{name}/{*path}", any(envoy_by_name))
        .route(JWKS_PATH, get(assertion_keys))
        .fallback(|| async { render(Verdict::deny(Reason::PolicyUnknown), false) })
        .with_state(state)
}

/// Where apps fetch the upstream assertion's keys, through the same Service as the proxy.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The upstream assertion's JWKS; 404 when this process signs nothing. Cacheable briefly:
/// a key is published a rotation step before it signs (docs/security.md).
async fn assertion_keys(State(state): State<Arc<AppState>>) -> Response {
    match &state.signer {
        Some(signer) => (
            [
                (axum::http::header::CONTENT_TYPE, "application/json"),
                (axum::http::header::CACHE_CONTROL, "max-age=60"),
            ],
            signer.jwks().to_string(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no upstream assertion keys (--assertion-keys)\n",
        )
            .into_response(),
    }
}

pub fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        "ready\n".into_response()
    } else if state.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no policy set loaded yet\n",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Which proxy is asking: how to read the original request and shape the answer.
enum Dialect<'q> {
    /// The `auth-url` annotation (`/auth…`): ingress-nginx's call, or the forward-shaped
    /// call of Traefik's `kubernetesIngressNGINX` provider (see [`dialect::nginx`]). On the
    /// bare `/auth`, the `host` query parameter carries the `$host` the controller routed on.
    Nginx {
        routed_host: Result<Option<&'q str>, Reason>,
    },
    /// Traefik ForwardAuth, Caddy `forward_auth`.
    Forward,
    /// Envoy ext_authz (HTTP): the original method and path arrive on the request line.
    Envoy {
        method: &'q str,
        path_and_query: String,
    },
}

// Handlers borrow the request's headers (`Request`, not a cloned `HeaderMap`) and its path
// parameters (`RawPathParams`, not owned strings): nothing per request that need not be.

async fn auth_by_name(
    State(state): State<Arc<AppState>>,
    params: RawPathParams,
    request: Request,
) -> Response {
    let dialect = Dialect::Nginx {
        routed_host: Ok(None),
    };
    authorize(&state, request.headers(), named(&params), dialect).await
}

async fn auth_by_route(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let dialect = Dialect::Nginx {
        routed_host: dialect::host_param(request.uri().query()),
    };
    authorize(&state, request.headers(), Select::Route, dialect).await
}

async fn forward_by_name(
    State(state): State<Arc<AppState>>,
    params: RawPathParams,
    request: Request,
) -> Response {
    authorize(&state, request.headers(), named(&params), Dialect::Forward).await
}

async fn forward_by_route(State(state): State<Arc<AppState>>, request: Request) -> Response {
    authorize(&state, request.headers(), Select::Route, Dialect::Forward).await
}

async fn envoy_by_name(
    State(state): State<Arc<AppState>>,
    params: RawPathParams,
    request: Request,
) -> Response {
    let uri = request.uri();
    let rest = envoy_original_path(uri.path());
    let path_and_query = match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    let dialect = Dialect::Envoy {
        method: request.method().as_str(),
        path_and_query,
    };
    authorize(&state, request.headers(), named(&params), dialect).await
}

/// The original path: everything after `/envoy/{namespace}/{name}`, cut from the raw path
/// at its fourth `/` so that its encoding reaches the normaliser untouched. Cut by
/// position, never by the decoded parameters' lengths: an encoded namespace or name is
/// longer raw than decoded.
fn envoy_original_path(raw_path: &str) -> &str {
    match raw_path.match_indices('/').nth(3) {
        Some((at, _)) => &raw_path[at..],
        None => "/",
    }
}

/// The policy a named route selects: `{namespace}` and `{name}` (the router matched both,
/// so both exist).
fn named(params: &RawPathParams) -> Select<'_> {
    let param = |k: &str| {
        params
            .iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v)
            .unwrap_or("")
    };
    Select::Name {
        namespace: param("namespace"),
        name: param("name"),
    }
}

/// Reads the original request as the dialect says, asks the service, renders its verdict.
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    select: Select<'_>,
    dialect: Dialect<'_>,
) -> Response {
    let routing = select.routing();
    let original = match &dialect {
        Dialect::Nginx { routed_host } => {
            routed_host.and_then(|host| dialect::nginx(headers, routing, host))
        }
        Dialect::Forward => dialect::forward(headers, routing),
        Dialect::Envoy {
            method,
            path_and_query,
        } => dialect::envoy(headers, method, path_and_query),
    };
    let request = AuthRequest {
        select,
        headers,
        original,
    };
    let verdict = authorize::of(state)
        .authorize(request, &mut Unobserved)
        .await;
    render(verdict, matches!(dialect, Dialect::Envoy { .. }))
}

/// The verdict as an HTTP answer: its status, its response headers, the identity headers
/// (which the proxy copies upstream), and the reason as the body. `envoy`: also name the
/// headers to remove, since Envoy overwrites only the headers it is sent and removes client
/// copies of the others only when told to (nginx and the forward-auth proxies copy only the
/// headers they are configured with, dropping the client's).
fn render(verdict: Verdict, envoy: bool) -> Response {
    let status = StatusCode::from_u16(verdict.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let body = match verdict.reason() {
        None => Body::empty(),
        Some(_) => Body::from(verdict.body()),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if verdict.reason().is_some() {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    for (name, value) in verdict.response_headers() {
        h.insert(name, HeaderValue::from_static(value));
    }
    for (name, value) in verdict.set {
        h.insert(name, value);
    }
    if envoy && !verdict.remove.is_empty() {
        let names: Vec<&str> = verdict.remove.iter().map(HeaderName::as_str).collect();
        if let Ok(v) = HeaderValue::from_str(&names.join(",")) {
            h.insert(ENVOY_REMOVE_HEADER, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::envoy_original_path;

    #[test]
    fn envoy_original_path_starts_after_the_raw_name_however_it_is_encoded() {
        for (raw, want) in [
            ("/envoy/apps/web/items/7", "/items/7"),
            ("/envoy/app%73/w%65b/items/7", "/items/7"),
            ("/envoy/apps/web", "/"),
            ("/envoy/apps/web/", "/"),
            ("/envoy/apps/web//x", "//x"),
            ("/envoy/apps/web/a%2Fb", "/a%2Fb"),
        ] {
            assert_eq!(envoy_original_path(raw), want, "{raw}");
        }
    }
}
