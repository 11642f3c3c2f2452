//! accessgate: validates Cloudflare Access (and other OIDC-style) JWTs for ingress proxies.
//!
//! Data path, top to bottom: [`server`] → [`dialect`] → [`index`] → [`decision`]
//! (→ [`verify`] with [`keys`], → [`headers`]) → response.

pub mod check;
pub mod cli;
pub mod controller;
pub mod decision;
pub mod demo;
pub mod devissuer;
pub mod dialect;
pub mod fetch;
pub mod headers;
pub mod identity;
pub mod index;
pub mod keys;
pub mod metrics;
pub mod policy;
pub mod reason;
pub mod rules;
pub mod server;
pub mod source;
pub mod standalone;
pub mod state;
pub mod stats;
pub mod tokencache;
pub mod trace;
pub mod verify;
