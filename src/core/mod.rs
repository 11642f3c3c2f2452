//! The pure core: everything that decides, and nothing that waits. Takes the request, the
//! policy, a key lookup and the time as arguments; no async runtime, no HTTP server or
//! client, no Kubernetes crate: policies are compiled from [`crate::api`]'s types
//! ([`policy`]). A test in `tests/layers.rs` keeps it so.

pub mod assertion;
pub mod candidate;
pub mod decision;
pub mod dialect;
pub mod explain;
#[cfg(test)]
pub mod fixtures;
pub mod headers;
pub mod hosts;
pub mod index;
pub mod jwks;
pub mod policy;
pub mod reason;
pub mod rules;
pub mod verify;
