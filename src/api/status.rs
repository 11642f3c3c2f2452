//! What accessgate writes back on an `AccessPolicy`: the status object and the condition
//! vocabulary (types, statuses, reasons) its conditions use.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What accessgate observed about this policy: state a person acts on, written by the
/// elected replica only when it changes. Per-request traffic (decision counts, fetch times)
/// is in `/metrics`, never here: a status write is an etcd revision and a watch event to
/// every replica.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyStatus {
    /// The `metadata.generation` that accessgate compiled and enforces (a newer one is
    /// not enforced yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// `Ready` (the policy is enforced) and `KeysAvailable` (signing keys are loaded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The issuer (`iss`) tokens must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The value for the Ingress `nginx.ingress.kubernetes.io/auth-url` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,
    /// Signing keys in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeysStatus>,
    /// Ingresses whose `nginx.ingress.kubernetes.io/auth-url` reaches this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<UsedByStatus>,
}

/// Ingresses that reach the policy: this namespace's by name, others only counted.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsedByStatus {
    /// Names of this namespace's Ingresses (at most 50).
    #[serde(default)]
    pub ingresses: Vec<String>,
    /// How many Ingresses in other namespaces reach it.
    #[serde(default)]
    #[schemars(range(min = 0), extend("format" = "int32"))]
    pub other_namespaces: u32,
}

/// The key set fetched from the issuer.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeysStatus {
    /// Key IDs (`kid`) currently accepted.
    #[serde(default)]
    pub ids: Vec<String>,
    /// The last fetch error, if the most recent fetch failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The condition types accessgate writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
pub enum ConditionType {
    /// The policy is enforced as written.
    Ready,
    /// Signing keys are loaded for its issuer.
    KeysAvailable,
    /// Every Ingress that reaches it lists its identity headers in `auth-response-headers`.
    HeadersProtected,
    /// Its `spec.candidate` compiled and has not disagreed with the live policy.
    CandidateAgrees,
}

/// `metav1.Condition` status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// Reasons of the `Ready` condition (docs/operating.md, "Troubleshooting by status").
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
pub enum ReadyReason {
    Enforced,
    /// `spec.mode: dryRun`: evaluated, not enforced.
    DryRun,
    Invalid,
    NotLoaded,
    HostOwnedElsewhere,
    HostNotAllowed,
    HostNotServed,
    RouteConflict,
    KeysUnavailable,
}

/// Reasons of the `KeysAvailable` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
pub enum KeysReason {
    Fetched,
    Stale,
    FetchFailed,
    Pending,
    PolicyInvalid,
}

/// Reasons of the `HeadersProtected` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
pub enum HeadersReason {
    AllListed,
    ResponseHeadersNotListed,
    NoIngress,
}

/// Reasons of the `CandidateAgrees` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
pub enum CandidateReason {
    NoDisagreementSeen,
    DisagreementsSeen,
    CandidateInvalid,
}

/// `metav1.Condition` as the API conventions describe it, kept as a map keyed by `type` so
/// server-side apply merges conditions one by one.
fn conditions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {
                    "description": "The aspect: Ready or KeysAvailable.",
                    "type": "string",
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
                },
                "status": {
                    "description": "True, False or Unknown.",
                    "type": "string",
                    "enum": ["True", "False", "Unknown"]
                },
                "observedGeneration": {
                    "description": "The metadata.generation the condition was computed from.",
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0
                },
                "lastTransitionTime": {
                    "description": "When the status last changed.",
                    "type": "string",
                    "format": "date-time"
                },
                "reason": {
                    "description": "Why, in CamelCase (docs/operating.md, \"Troubleshooting by status\").",
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
                },
                "message": {
                    "description": "What to do about it, for people.",
                    "type": "string",
                    "maxLength": 32768
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;

    #[test]
    fn every_condition_reason_is_in_the_troubleshooting_table() {
        let doc = include_str!("../../docs/operating.md");
        let table = doc
            .split("\n## ")
            .find(|s| s.starts_with("Troubleshooting by status"))
            .expect("docs/operating.md has a \"Troubleshooting by status\" section");
        let reasons = ReadyReason::VARIANTS
            .iter()
            .map(|r| <&str>::from(*r))
            .chain(KeysReason::VARIANTS.iter().map(|r| <&str>::from(*r)))
            .chain(HeadersReason::VARIANTS.iter().map(|r| <&str>::from(*r)))
            .chain(CandidateReason::VARIANTS.iter().map(|r| <&str>::from(*r)));
        for reason in reasons {
            assert!(
                table.contains(&format!("`{reason}`")),
                "docs/operating.md \"Troubleshooting by status\" does not explain {reason}"
            );
        }
    }
}
