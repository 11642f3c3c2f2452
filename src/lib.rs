//! accessgate: validates Cloudflare Access (and other OIDC-style) JWTs for ingress proxies.
//!
//! Layers, each importing only those listed before it (docs/architecture.md): [`api`] (the
//! `AccessPolicy` resource), [`core`] (pure decisions: no async runtime, HTTP or Kubernetes
//! crate), [`metrics`], [`fetch`] / [`keys`] / [`identity`] (outbound I/O and caches),
//! [`source`] (policy sets from a directory or the API server), [`serve`] (the listeners and the
//! one authorization service), [`controller`] (the leader's status writer), [`cmd`] (the
//! subcommands); [`devissuer`] is a local issuer for demos and tests. Data path: [`serve::http`]
//! or [`serve::grpc`] (→ [`core::dialect`]) → [`serve::authorize`] (→ [`core::index`],
//! [`core::decision`], [`keys`], [`identity`]) → response.
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
