//! accessgate: validates Cloudflare Access (and other OIDC-style) JWTs for ingress proxies.
//!
//! Layers (README "Layout"), each importing only those above it:
//! - [`core`]: pure decisions — policy, index, dialect, verify, rules, headers, decision,
//!   explain. No async runtime, no HTTP server or client, no Kubernetes client.
//! - [`metrics`]: the counters every layer below records into.
//! - [`fetch`], [`keys`], [`identity`]: outbound I/O (JWKS, get-identity) and caches.
//! - [`source`]: where policy sets come from (a directory, the API server).
//! - [`serve`]: the HTTP listeners and the state they share.
//! - [`controller`]: the in-cluster status writer (leader only).
//! - [`cmd`]: the subcommands; [`devissuer`]: a local issuer for demos and tests.
//!
//! Data path, top to bottom: [`serve::http`] → [`core::dialect`] → [`core::index`] →
//! [`core::decision`] (→ [`core::verify`] with [`keys`], → [`core::headers`]) → response.
#![forbid(unsafe_code)]

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
