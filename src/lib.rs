//! accessgate: validates Cloudflare Access (and other OIDC-style) JWTs for ingress proxies.
//!
//! Layers (docs/architecture.md), each importing only those above it:
//! - [`api`]: the `AccessPolicy` resource — spec, status, CEL rules, the generated CRD.
//! - [`core`]: pure decisions — policy, index, dialect, verify, rules, headers, decision,
//!   explain. No async runtime, no HTTP server or client, no Kubernetes crate.
//! - [`metrics`]: the counters every layer below records into.
//! - [`fetch`], [`keys`], [`identity`]: outbound I/O (JWKS, get-identity) and caches.
//! - [`source`]: where policy sets come from (a directory, the API server).
//! - [`serve`]: the HTTP listeners and the state they share.
//! - [`controller`]: the in-cluster status writer (leader only).
//! - [`cmd`]: the subcommands; [`devissuer`]: a local issuer for demos and tests.
//!
//! Data path, top to bottom: [`serve::http`] or [`serve::grpc`] (→ [`core::dialect`]) →
//! [`serve::authorize`] (→ [`core::index`], [`core::decision`] with [`keys`] and
//! [`identity`]) → response.
#![forbid(unsafe_code)]

pub mod api;
pub mod cmd;
pub mod controller;
pub mod core;
pub mod devissuer;
pub mod fetch;
pub mod identity;
pub mod keys;
pub mod metrics;
pub mod serve;
pub mod source;
