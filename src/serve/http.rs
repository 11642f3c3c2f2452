//! HTTP: the auth listener (what the proxy calls) and the admin listener (probes, metrics).
//!
//! The data path reads top to bottom in [`authorize`]: dialect → index → decision (verify
//! with keys, then headers) → response.

use std::sync::{Arc, LazyLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::core::decision::{self, Decision, Enrichment};
use crate::core::dialect::{self, OriginalRequest, Routing};
use crate::core::reason::Reason;
use crate::metrics::DroppedHeaderLabels;
use crate::serve::state::AppState;

/// Response header naming the deny reason (the proxy does not show it to the client).
pub const REASON_HEADER: &str = "x-accessgate-reason";
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
        .fallback(|| async { deny_response(Reason::PolicyUnknown) })
        .with_state(state)
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

/// How the policy is chosen.
pub(crate) enum Select<'a> {
    Name { namespace: &'a str, name: &'a str },
    Route,
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
        method: String,
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
    let (namespace, name) = name_params(&params);
    // The original path is everything after /envoy/{ns}/{name}, taken raw from the URI so
    // that its encoding reaches the normaliser untouched.
    let uri = request.uri();
    let prefix_len = format!("/envoy/{namespace}/{name}").len();
    let raw_path = uri.path();
    let rest = if raw_path.len() > prefix_len && raw_path.is_char_boundary(prefix_len) {
        &raw_path[prefix_len..]
    } else {
        "/"
    };
    let path_and_query = match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    let dialect = Dialect::Envoy {
        method: request.method().to_string(),
        path_and_query,
    };
    authorize(
        &state,
        request.headers(),
        Select::Name { namespace, name },
        dialect,
    )
    .await
}

/// The policy a named route selects.
fn named<'p>(params: &'p RawPathParams) -> Select<'p> {
    let (namespace, name) = name_params(params);
    Select::Name { namespace, name }
}

/// `{namespace}` and `{name}` of a named route (the router matched both, so both exist).
fn name_params(params: &RawPathParams) -> (&str, &str) {
    let param = |k: &str| {
        params
            .iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v)
            .unwrap_or("")
    };
    (param("namespace"), param("name"))
}

async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    select: Select<'_>,
    dialect: Dialect<'_>,
) -> Response {
    let routing = match select {
        Select::Name { .. } => Routing::Named,
        Select::Route => Routing::Strict,
    };
    let request = match &dialect {
        Dialect::Nginx { routed_host } => {
            routed_host.and_then(|host| dialect::nginx(headers, routing, host))
        }
        Dialect::Forward => dialect::forward(headers, routing),
        Dialect::Envoy {
            method,
            path_and_query,
        } => dialect::envoy(headers, method, path_and_query),
    };
    match judge(state, headers, request, &select).await {
        Decision::Allow {
            headers: rendered, ..
        } => {
            let mut resp = Response::new(Body::empty());
            let h = resp.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            for (name, value) in rendered.set {
                h.insert(name, value);
            }
            // Envoy overwrites only the headers we send; it removes client copies of the
            // others only when told to.
            if matches!(dialect, Dialect::Envoy { .. }) && !rendered.absent.is_empty() {
                let names: Vec<&str> = rendered.absent.iter().map(HeaderName::as_str).collect();
                if let Ok(v) = HeaderValue::from_str(&names.join(",")) {
                    h.insert(ENVOY_REMOVE_HEADER, v);
                }
            }
            resp
        }
        Decision::Deny(reason) => deny_response(reason),
    }
}

/// The decision for an original request (or the reason it could not be read), counted,
/// observed and logged: what every protocol (HTTP dialects, gRPC) answers from.
pub(crate) async fn judge(
    state: &AppState,
    headers: &HeaderMap,
    request: Result<OriginalRequest, Reason>,
    select: &Select<'_>,
) -> Decision {
    let started = Instant::now();
    let (resolved, decision) = match &request {
        Err(reason) => (None, Decision::Deny(*reason)),
        Ok(req) => select_and_decide(state, headers, req, select, unix_now()).await,
    };
    let policy_label = resolved.unwrap_or_else(|| NO_POLICY.clone());
    state
        .metrics
        .count_decision(&policy_label, decision.outcome());
    state
        .metrics
        .decision_seconds
        .observe(started.elapsed().as_secs_f64());
    log_decision(&policy_label, request.as_ref().ok(), &decision);
    if let Decision::Allow {
        headers: rendered, ..
    } = &decision
    {
        for (name, why) in &rendered.dropped {
            state
                .metrics
                .headers_dropped
                .get_or_create(&DroppedHeaderLabels {
                    policy: policy_label.clone(),
                    header: name.to_string(),
                    reason: why.code(),
                })
                .inc();
        }
    }
    decision
}

/// The metrics and log label of a decision no policy was resolved for.
static NO_POLICY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("-"));

/// The policy the request selects (its label, `None` when none was resolved), then the
/// decision: the core's two halves with the I/O they need in between (a key refetch, the
/// identity fetch). `now` is the one clock.
async fn select_and_decide(
    state: &AppState,
    headers: &HeaderMap,
    req: &OriginalRequest,
    select: &Select<'_>,
    now: u64,
) -> (Option<Arc<str>>, Decision) {
    let index = state.index();
    let policy = match select {
        Select::Name { namespace, name } => index.by_name(namespace, name),
        Select::Route => index.by_route(&req.host, &req.path),
    };
    let policy = match policy {
        Ok(p) => p.clone(),
        Err(reason) => {
            let label = match select {
                Select::Name { namespace, name } if reason == Reason::PolicyInvalid => {
                    Some(Arc::from(format!("{namespace}/{name}")))
                }
                _ => None,
            };
            return (label, Decision::Deny(reason));
        }
    };
    drop(index);
    let label = Some(policy.label.clone());
    let mut verified = decision::verify_request(&policy, headers, &state.keys, &state.tokens, now);
    // An unknown kid may mean the issuer rotated; no keys may mean the first fetch is still
    // running. One (coalesced, rate-limited) refetch, then verify again.
    if matches!(verified, Err(Reason::KeyUnknown | Reason::KeysUnavailable))
        && state.keys.refetch(&policy.jwks_uri).await
    {
        verified = decision::verify_request(&policy, headers, &state.keys, &state.tokens, now);
    }
    let v = match verified {
        Ok(v) => v,
        Err(reason) => return (label, Decision::Deny(reason)),
    };
    let identity = match &policy.identity {
        None => None,
        Some(_) => Some(
            state
                .identity
                .get_for_policy(&policy, v.token, &v.claims, now)
                .await
                .inspect_err(|e| {
                    tracing::warn!(policy = %policy.label, error = %e, detail = e.detail(), "identity enrichment failed")
                }),
        ),
    };
    let enrichment = match &identity {
        None => Enrichment::NotConfigured,
        Some(Ok(id)) => Enrichment::Fetched(id),
        Some(Err(_)) => Enrichment::Failed,
    };
    (label, decision::conclude(&policy, &v, enrichment))
}

fn log_decision(policy: &str, req: Option<&OriginalRequest>, decision: &Decision) {
    let (host, path, method, client_ip, request_id) = match req {
        Some(r) => (
            r.host.as_str(),
            r.path.as_str(),
            r.method.as_str(),
            r.client_ip.as_deref(),
            r.request_id.as_deref(),
        ),
        None => ("", "", "", None, None),
    };
    match decision {
        Decision::Allow { kind, .. } => {
            tracing::debug!(policy, host, path, method, client_ip, request_id, kind = ?kind, "allow")
        }
        Decision::Deny(reason) => tracing::info!(
            policy,
            host,
            path,
            method,
            client_ip,
            request_id,
            reason = reason.code(),
            status = reason.status(),
            "deny"
        ),
    }
}

fn deny_response(reason: Reason) -> Response {
    let status = StatusCode::from_u16(reason.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut resp = (status, format!("{}\n", reason.code())).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(REASON_HEADER, HeaderValue::from_static(reason.code()));
    if status == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"accessgate\""),
        );
    }
    resp
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
