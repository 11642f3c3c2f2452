//! A slow API server for tests: a plain-HTTP proxy in front of the test control plane's
//! kube-apiserver that adds latency to every request and can hold the status writes of
//! chosen AccessPolicies (`PATCH .../accesspolicies/NAME/status`) until released, while
//! everything else, watches included, passes. It reads each request's method and path, so it
//! is an HTTP proxy (the client speaks plain HTTP to it, it speaks TLS to the API server), not
//! a byte pump that could only slow everything alike.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use super::cluster::ControlPlane;

/// Holds an upstream response, streaming its body (a watch never ends) chunk by chunk.
type Upstream = Option<reqwest::Response>;

pub struct SlowApi {
    /// `http://127.0.0.1:PORT`, for a kubeconfig's `server`.
    pub url: String,
    shared: Arc<Shared>,
    // Dropped last: stops the proxy and every connection it holds.
    _runtime: tokio::runtime::Runtime,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    latency: Duration,
    /// AccessPolicy names whose status writes wait until they leave the set.
    held: watch::Sender<HashSet<String>>,
    /// Status writes waiting in the proxy now.
    waiting: AtomicUsize,
    /// Status writes the proxy has seen, held or not.
    status_writes: AtomicUsize,
}

impl SlowApi {
    /// A proxy to `cp`'s API server that delays every request by `latency`.
    pub fn start(cp: &ControlPlane, latency: Duration) -> SlowApi {
        let ca = std::fs::read(cp.ca_cert()).expect("control plane CA");
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("CA pem")])
            .build()
            .expect("proxy client");
        let shared = Arc::new(Shared {
            upstream: cp.server().trim_end_matches('/').to_owned(),
            client,
            latency,
            held: watch::Sender::new(HashSet::new()),
            waiting: AtomicUsize::new(0),
            status_writes: AtomicUsize::new(0),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        SlowApi {
            url,
            shared,
            _runtime: runtime,
        }
    }

    /// A copy of `kubeconfig` that reaches the API server through this proxy.
    pub fn kubeconfig(&self, cp: &ControlPlane, kubeconfig: &Path) -> std::path::PathBuf {
        cp.kubeconfig_via(kubeconfig, &self.url)
    }

    /// From now on the status writes of AccessPolicies named `name` wait in the proxy.
    pub fn hold_status_of(&self, name: &str) {
        self.shared.held.send_modify(|h| {
            h.insert(name.to_owned());
        });
    }

    /// Lets every held status write (and those to come) through.
    pub fn release(&self) {
        self.shared.held.send_modify(HashSet::clear);
    }

    /// Status writes waiting in the proxy now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::SeqCst)
    }

    /// Status writes the proxy has seen so far, held or not.
    pub fn status_writes(&self) -> usize {
        self.shared.status_writes.load(Ordering::SeqCst)
    }
}

/// The AccessPolicy whose status `method path` writes, if it writes one.
fn status_write_of(method: &axum::http::Method, path: &str) -> Option<String> {
    let rest = path.strip_suffix("/status")?;
    let (collection, name) = rest.rsplit_once('/')?;
    (*method == axum::http::Method::PATCH && collection.ends_with("/accesspolicies"))
        .then(|| name.to_owned())
}

async fn forward(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    tokio::time::sleep(shared.latency).await;
    let (parts, body) = req.into_parts();
    if let Some(name) = status_write_of(&parts.method, parts.uri.path()) {
        shared.status_writes.fetch_add(1, Ordering::SeqCst);
        let mut held = shared.held.subscribe();
        if held.borrow().contains(&name) {
            shared.waiting.fetch_add(1, Ordering::SeqCst);
            let _ = held.wait_for(|h| !h.contains(&name)).await;
            shared.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let body = match axum::body::to_bytes(body, 16 << 20).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    let sent = shared
        .client
        .request(parts.method, format!("{}{path_and_query}", shared.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match sent {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = upstream.status();
    let mut headers = upstream.headers().clone();
    strip_hop_by_hop(&mut headers);
    let chunks = futures::stream::unfold(Some(upstream) as Upstream, |upstream| async move {
        let mut upstream = upstream?;
        match upstream.chunk().await {
            Ok(Some(chunk)) => Some((Ok::<Bytes, reqwest::Error>(chunk), Some(upstream))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    let mut response = Response::new(Body::from_stream(chunks));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Headers about one connection, not the request: each side sets its own.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for h in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
    ] {
        headers.remove(h);
    }
    headers.remove("keep-alive");
}
