//! gRPC on the auth listener: `envoy.service.auth.v3.Authorization/Check` (ext_authz) and
//! `grpc.health.v1.Health`, on the HTTP dialects' port. [`auth_listener`] hands a request to
//! gRPC only when it is HTTP/2 with a gRPC content type for one of the two services; anything
//! else goes to the HTTP router, so an HTTP proxy never reads a gRPC answer (200 with
//! `grpc-status`) as an allow.
//!
//! An adapter like the HTTP one: [`dialect::grpc`] → [`authorize`] → a `CheckResponse`. Every
//! `CheckRequest` that decodes, however broken, gets a deny, never a gRPC error status, which
//! Envoy handles by its failure mode (`failure_mode_allow` lets it through); so our `codec` also
//! decodes non-UTF-8 strings, which prost refuses whole. See docs/proxies.md, "gRPC ext_authz".

mod codec;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, Version, header};
use axum::response::Response;
use codec::{Check, CheckCodec};
use envoy_types::ext_authz::v3::CheckRequestExt;
use envoy_types::ext_authz::v3::pb::{
    CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue,
    HeaderValueOption, HttpResponse, HttpStatus, HttpStatusCode, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::pb::google::rpc;
use futures::Stream;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::core::decision::Unobserved;
use crate::core::dialect::{self, GrpcHttp};
use crate::core::reason::Reason;
use crate::serve::authorize::{self, AuthRequest, Select};
use crate::serve::http;
use crate::serve::state::AppState;
use crate::serve::verdict::Verdict;

/// The gRPC services on the auth listener (`/{name}/{method}`).
const AUTHORIZATION: &str = "envoy.service.auth.v3.Authorization";
const HEALTH: &str = "grpc.health.v1.Health";
/// The one method of [`AUTHORIZATION`].
const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// How often a health `Watch` looks at readiness.
const WATCH_POLL: Duration = Duration::from_millis(500);

/// The auth listener's service: gRPC ext_authz and health for gRPC requests
/// (`is_grpc`), the HTTP dialects ([`http::auth_router`]) for everything else. A plain
/// service rather than a router in front of two routers: the choice costs one look at the
/// request, no routing, boxing or cloning of its own.
pub fn auth_listener(state: Arc<AppState>) -> AuthListener {
    let http = http::auth_router(state.clone());
    let grpc = tonic::service::Routes::new(ExtAuthz {
        state: state.clone(),
    })
    .add_service(HealthServer::new(Readiness { state }))
    .prepare()
    .into_axum_router();
    AuthListener { http, grpc }
}

#[derive(Clone)]
pub struct AuthListener {
    http: Router,
    grpc: Router,
}

impl tower::Service<Request> for AuthListener {
    type Response = Response;
    type Error = Infallible;
    type Future = <Router as tower::Service<Request>>::Future;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both routers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let target = if is_grpc(&req) {
            &mut self.grpc
        } else {
            &mut self.http
        };
        target.call(req)
    }
}

/// HTTP/2, `application/grpc` (or `+proto`, ...), and a path under one of our services.
fn is_grpc(req: &Request) -> bool {
    let grpc_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct == "application/grpc"
                || ct.starts_with("application/grpc+")
                || ct.starts_with("application/grpc;")
        });
    let ours = req
        .uri()
        .path()
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .is_some_and(|(service, _)| service == AUTHORIZATION || service == HEALTH);
    req.version() == Version::HTTP_2 && grpc_type && ours
}

/// `envoy.service.auth.v3.Authorization`, served here rather than by envoy-types'
/// generated server: the same path, method and limits, decoded with [`CheckCodec`] instead
/// of plain prost, so that a check with non-UTF-8 strings is answered with a deny.
#[derive(Clone)]
struct ExtAuthz {
    state: Arc<AppState>,
}

impl tonic::server::NamedService for ExtAuthz {
    const NAME: &'static str = AUTHORIZATION;
}

type GrpcRequest = axum::http::Request<tonic::body::Body>;
type GrpcResponse = axum::http::Response<tonic::body::Body>;

impl tower::Service<GrpcRequest> for ExtAuthz {
    type Response = GrpcResponse;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<GrpcResponse, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: GrpcRequest) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            if req.uri().path() != CHECK {
                return Ok(Status::unimplemented("").into_http());
            }
            let check = tower::service_fn(move |request: tonic::Request<Check>| {
                let state = state.clone();
                async move {
                    let response = answer(&state, request.into_inner()).await;
                    Ok::<_, Status>(tonic::Response::new(response))
                }
            });
            Ok(tonic::server::Grpc::new(CheckCodec).unary(check, req).await)
        })
    }
}

/// The `CheckResponse` for a check: the service's verdict, or a deny when the check cannot
/// be read.
async fn answer(state: &AppState, check: Check) -> CheckResponse {
    let service = authorize::of(state);
    let verdict = match check.as_ref().map_err(|reason| *reason).and_then(read) {
        Ok((select, headers, original)) => {
            let request = AuthRequest {
                select,
                headers: &headers,
                original: dialect::grpc(&original, &headers, select.routing()),
            };
            service.authorize(request, &mut Unobserved).await
        }
        Err(reason) => {
            let request = AuthRequest {
                select: Select::Route,
                headers: &HeaderMap::new(),
                original: Err(reason),
            };
            service.authorize(request, &mut Unobserved).await
        }
    };
    respond(verdict)
}

/// How a check selects its policy, the client's headers, and the original request.
///
/// `context_extensions` `namespace` + `name` (Envoy Gateway `contextExtensions`, Contour
/// `authPolicy.context`) name the policy like `/auth/{ns}/{name}`; neither chooses by host
/// and path like the bare endpoints; one without the other is malformed.
fn read(check: &CheckRequest) -> Result<(Select<'_>, HeaderMap, GrpcHttp<'_>), Reason> {
    let attributes = check.attributes.as_ref().ok_or(Reason::RequestMalformed)?;
    let http = attributes
        .request
        .as_ref()
        .and_then(|r| r.http.as_ref())
        .ok_or(Reason::RequestMalformed)?;
    let context = &attributes.context_extensions;
    let select = match (context.get("namespace"), context.get("name")) {
        (Some(namespace), Some(name)) => Select::Name { namespace, name },
        (None, None) => Select::Route,
        _ => return Err(Reason::RequestMalformed),
    };
    // Envoy fills `headers` (duplicates joined with `,`), or with `encode_raw_headers`
    // `header_map` (one entry per header, bytes in `raw_value`); never both.
    let raw = http
        .header_map
        .as_ref()
        .map(|m| m.headers.as_slice())
        .unwrap_or_default();
    let headers = if raw.is_empty() {
        dialect::grpc_headers(http.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())))?
    } else if !http.headers.is_empty() {
        return Err(Reason::RequestMalformed);
    } else {
        let pairs = raw
            .iter()
            .map(|h| match (h.raw_value.is_empty(), h.value.is_empty()) {
                (true, _) => Ok((h.key.as_str(), h.value.as_bytes())),
                (false, true) => Ok((h.key.as_str(), h.raw_value.as_slice())),
                (false, false) if h.raw_value == h.value.as_bytes() => {
                    Ok((h.key.as_str(), h.value.as_bytes()))
                }
                (false, false) => Err(Reason::RequestMalformed),
            })
            .collect::<Result<Vec<_>, _>>()?;
        dialect::grpc_headers(pairs)?
    };
    let original = GrpcHttp {
        method: &http.method,
        scheme: &http.scheme,
        host: &http.host,
        path: &http.path,
        id: &http.id,
        source_ip: check.get_client_address().map(String::as_str),
    };
    Ok((select, headers, original))
}

/// A header Envoy sets, replacing any copy the request (or the local reply) already has.
#[allow(deprecated)] // `append`: see below
fn overwrite(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        // Both spellings: Envoy reads the deprecated `append` when it is set, else
        // `append_action`; older Envoys read only `append` (unset counts as false).
        append: Some(BoolValue { value: false }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        keep_empty_value: false,
    }
}

fn rpc_status(code: Code, message: &str) -> Option<rpc::Status> {
    Some(rpc::Status {
        code: code as i32,
        message: message.to_owned(),
        details: Vec::new(),
    })
}

/// The verdict in ext_authz form. Allow: OK, the identity headers for the upstream request
/// (overwriting client copies) and the rest of the mapped headers in `headers_to_remove`.
/// Deny: the verdict's status, response headers and body, as the HTTP endpoints answer,
/// with `UNAUTHENTICATED` for 401s and `PERMISSION_DENIED` for the rest.
fn respond(verdict: Verdict) -> CheckResponse {
    let Some(reason) = verdict.reason() else {
        let mut headers = Vec::with_capacity(verdict.set.len());
        let mut remove: Vec<String> = verdict
            .remove
            .iter()
            .map(|n| n.as_str().to_owned())
            .collect();
        for (name, value) in &verdict.set {
            // Rendered values come from JSON text, so this always holds; were it not to,
            // the header is removed rather than sent mangled.
            match std::str::from_utf8(value.as_bytes()) {
                Ok(v) => headers.push(overwrite(name.as_str(), v)),
                Err(_) => remove.push(name.as_str().to_owned()),
            }
        }
        return CheckResponse {
            status: rpc_status(Code::Ok, ""),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers,
                headers_to_remove: remove,
                ..OkHttpResponse::default()
            })),
            dynamic_metadata: None,
        };
    };
    let headers = verdict
        .response_headers()
        .map(|(name, value)| overwrite(name, value))
        .collect();
    let http_code = HttpStatusCode::try_from(i32::from(verdict.status))
        .unwrap_or(HttpStatusCode::ServiceUnavailable);
    let code = if verdict.status == 401 {
        Code::Unauthenticated
    } else {
        Code::PermissionDenied
    };
    CheckResponse {
        status: rpc_status(code, reason.code()),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: http_code as i32,
            }),
            headers,
            body: verdict.body(),
        })),
        dynamic_metadata: None,
    }
}

/// `grpc.health.v1.Health` for the whole server (`""`) and for the ext_authz service:
/// `SERVING` while `/readyz` is ready (a policy set loaded, not shutting down), else
/// `NOT_SERVING`.
struct Readiness {
    state: Arc<AppState>,
}

impl Readiness {
    fn status(state: &AppState, service: &str) -> ServingStatus {
        match service {
            "" | AUTHORIZATION if state.is_ready() => ServingStatus::Serving,
            "" | AUTHORIZATION => ServingStatus::NotServing,
            _ => ServingStatus::ServiceUnknown,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for Readiness {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        match Self::status(&self.state, &request.get_ref().service) {
            ServingStatus::ServiceUnknown => Err(Status::not_found("unknown service")),
            status => Ok(tonic::Response::new(HealthCheckResponse {
                status: status as i32,
            })),
        }
    }

    type WatchStream = WatchStream;

    /// The current status at once, then each change (readiness is looked at every
    /// [`WATCH_POLL`]); an unknown service stays `SERVICE_UNKNOWN`. Once shutdown has begun
    /// and `NOT_SERVING` has been sent, the call ends with OK.
    async fn watch(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<WatchStream>, Status> {
        let state = self.state.clone();
        let service = request.into_inner().service;
        let stream = futures::stream::unfold(None, move |last: Option<ServingStatus>| {
            let state = state.clone();
            let service = service.clone();
            async move {
                loop {
                    let now = Readiness::status(&state, &service);
                    if last != Some(now) {
                        let resp = HealthCheckResponse { status: now as i32 };
                        return Some((Ok(resp), Some(now)));
                    }
                    // Shutting down and said so: end the call (the client retries, as the
                    // protocol asks) so that its connection does not hold up the shutdown.
                    if state.is_draining() {
                        return None;
                    }
                    tokio::time::sleep(WATCH_POLL).await;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}
