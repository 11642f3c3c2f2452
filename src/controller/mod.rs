//! `accessgate run`: the in-cluster mode. Every replica watches AccessPolicies and serves
//! auth from them ([`run`]); the replica holding the Lease also writes status and Events
//! ([`status_writer`], from [`status`]) and the host ledger ([`ledger`]).

pub mod audit;
pub mod ingress_refs;
pub mod install;
pub mod key_rotation;
pub mod ledger;
pub mod run;
pub mod status;
pub mod status_writer;

pub use run::{ControllerHandle, RunConfig, RunError, start};

/// The server-side apply field manager of everything accessgate writes.
const FIELD_MANAGER: &str = "accessgate";
