//! The Kubernetes API of accessgate: the `AccessPolicy` custom resource
//! (accessgate.dev/v1alpha1) as a person writes it ([`policy`]), what accessgate writes back
//! ([`status`]), and the CustomResourceDefinition both generate ([`mod@crd`]).
//!
//! The bottom layer: plain data with its schema and CEL rules, importing no other layer of
//! this crate. Every layer above may depend on it; the core compiles an [`AccessPolicySpec`]
//! into the form it decides with ([`crate::core::policy`]), so the core needs no `kube` or
//! `schemars` of its own (`tests/layers.rs` keeps both rules).

pub mod crd;
pub mod policy;
pub mod status;

pub use crd::{crd, crd_yaml};
pub use policy::{
    AccessPolicy, AccessPolicySpec, CandidateSpec, ClaimFormat, ClaimHeader, IdentityOnError,
    IdentitySpec, IssuerSpec, Matcher, PolicyMode, RESERVED_HEADER_PREFIXES, RESERVED_HEADERS,
    RulesSpec, SigningAlgorithm, TokenSource, TokenType, UpstreamAssertionSpec,
    is_reserved_assertion_header, is_reserved_header,
};
pub use status::{
    AccessPolicyStatus, CandidateReason, ConditionStatus, ConditionType, HeadersReason, KeysReason,
    KeysStatus, ReadyReason, UsedByStatus,
};
