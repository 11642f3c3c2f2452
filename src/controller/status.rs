//! What a policy's status should say, and which Events a change deserves. Pure: all inputs
//! are passed in, including the time.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::audit::Audit;
use crate::api::{
    AccessPolicyStatus, CandidateReason, ConditionStatus, ConditionType, HeadersReason, KeysReason,
    KeysStatus, ReadyReason, UsedByStatus,
};
use crate::core::index::{HostRefusal, PolicyEntry, RouteConflict};
use crate::core::policy::Candidate;
use crate::keys::KeyStatus;
use crate::serve::shadow::{FirstSeen, Seen};

/// Everything the status of one policy is computed from.
pub struct Inputs<'a> {
    /// The generation compiled into the index (what is enforced).
    pub generation: Option<i64>,
    pub previous: Option<&'a AccessPolicyStatus>,
    pub entry: Option<&'a PolicyEntry>,
    pub conflicts: Vec<&'a RouteConflict>,
    /// Hosts this policy claims that are not routed to it.
    pub refused_hosts: &'a [(String, HostRefusal)],
    pub keys: Option<KeyStatus>,
    /// The Ingresses that reach this policy (none when `None`).
    pub audit: Option<&'a Audit>,
    pub auth_url: String,
    /// A dry-run policy's first would-be denial at this generation (this replica's).
    pub would_deny: Option<FirstSeen>,
    /// The candidate's first disagreement at this generation (this replica's).
    pub disagreed: Option<FirstSeen>,
    pub now: Timestamp,
}

/// The status to write.
pub fn desired(i: &Inputs) -> AccessPolicyStatus {
    let policy = match i.entry {
        Some(PolicyEntry::Ready(p)) => Some(p),
        _ => None,
    };
    let keys = i.keys.as_ref();
    let keys_loaded = keys.is_some_and(|k| !k.ids.is_empty());

    let keys_condition = match (policy, keys) {
        (None, _) => (
            ConditionStatus::Unknown,
            KeysReason::PolicyInvalid,
            "the policy is not valid, so no keys are fetched for it".to_owned(),
        ),
        (Some(p), Some(k)) if !k.ids.is_empty() => match &k.error {
            None => (
                ConditionStatus::True,
                KeysReason::Fetched,
                format!("{} signing key(s) loaded from {}", k.ids.len(), p.jwks_uri),
            ),
            Some(e) => (
                ConditionStatus::True,
                KeysReason::Stale,
                format!(
                    "using the last good key set; the latest fetch from {} failed: {e}",
                    p.jwks_uri
                ),
            ),
        },
        (Some(p), Some(k)) if k.error.is_some() => (
            ConditionStatus::False,
            KeysReason::FetchFailed,
            format!(
                "cannot fetch signing keys from {}: {}",
                p.jwks_uri,
                k.error.as_deref().unwrap_or_default()
            ),
        ),
        (Some(p), _) => (
            ConditionStatus::Unknown,
            KeysReason::Pending,
            format!("fetching signing keys from {}", p.jwks_uri),
        ),
    };

    let ready_condition = match (i.entry, policy) {
        (Some(PolicyEntry::Invalid { message, .. }), _) => {
            (ConditionStatus::False, ReadyReason::Invalid, message.clone())
        }
        (None, _) => (ConditionStatus::False, ReadyReason::NotLoaded, "this replica has not loaded the policy yet".to_owned()),
        (_, Some(_)) if !i.refused_hosts.is_empty() => refused_hosts_condition(i.refused_hosts),
        (_, Some(_)) if !i.conflicts.is_empty() => {
            let c = i.conflicts[0];
            let others: Vec<String> = c.policies.iter().map(ToString::to_string).collect();
            (
                ConditionStatus::False,
                ReadyReason::RouteConflict,
                format!(
                    "host {} path {} is also claimed by {}; the bare /auth endpoint denies it (policy_invalid)",
                    c.host,
                    c.path,
                    others.join(", ")
                ),
            )
        }
        (_, Some(_)) if !keys_loaded => (
            ConditionStatus::False,
            ReadyReason::KeysUnavailable,
            "no signing keys loaded: every request is denied with keys_unavailable (see KeysAvailable)".to_owned(),
        ),
        (_, Some(p)) if p.dry_run => (ConditionStatus::True, ReadyReason::DryRun, dry_run_message(i)),
        (_, Some(_)) => (ConditionStatus::True, ReadyReason::Enforced, format!("enforced at {}", i.auth_url)),
        _ => unreachable!("entry Ready implies policy"),
    };

    let mut conditions = vec![
        condition(i, ConditionType::Ready, ready_condition),
        condition(i, ConditionType::KeysAvailable, keys_condition),
        condition(
            i,
            ConditionType::HeadersProtected,
            headers_condition(i.audit),
        ),
    ];
    if let Some(c) = policy.and_then(|p| p.candidate.as_ref()) {
        conditions.push(condition(
            i,
            ConditionType::CandidateAgrees,
            candidate_condition(c, i.disagreed.as_ref()),
        ));
    }
    AccessPolicyStatus {
        observed_generation: i.generation,
        conditions,
        issuer: policy.map(|p| p.issuer.clone()),
        auth_url: Some(i.auth_url.clone()),
        keys: policy.map(|_| KeysStatus {
            ids: keys.map(|k| k.ids.clone()).unwrap_or_default(),
            error: keys.and_then(|k| k.error.clone()),
        }),
        used_by: i.audit.map(|a| UsedByStatus {
            ingresses: a.ingresses.clone(),
            other_namespaces: a.elsewhere,
        }),
    }
}

/// A dry-run policy's `Ready` message: what it means, and whether it would have denied.
/// Changes once per generation (the first would-be denial), never with traffic.
fn dry_run_message(i: &Inputs) -> String {
    let seen = match &i.would_deny {
        Some(f) => match f.what {
            Seen::WouldDeny(reason) => format!(
                "would-be denials seen since {} (first: {})",
                rfc3339(f.at),
                reason.code()
            ),
            Seen::Disagreed(_) => String::new(),
        },
        None => "no would-be denial seen yet".to_owned(),
    };
    format!(
        "DRY-RUN at {}: evaluated on every request, NOT enforced (requests are answered as if this policy did not exist); {seen}; counts in accessgate_dry_run_decisions_total. Remove spec.mode to enforce",
        i.auth_url
    )
}

/// `CandidateAgrees`: whether the candidate compiled and whether it has disagreed with the
/// live policy at this generation.
fn candidate_condition(
    candidate: &Candidate,
    disagreed: Option<&FirstSeen>,
) -> (ConditionStatus, CandidateReason, String) {
    match (candidate, disagreed) {
        (Candidate::Invalid(e), _) => (
            ConditionStatus::Unknown,
            CandidateReason::CandidateInvalid,
            format!("{e}; the candidate is not evaluated, the live policy is enforced as it is"),
        ),
        (Candidate::Ready(_), None) => (
            ConditionStatus::True,
            CandidateReason::NoDisagreementSeen,
            "no disagreement with the live policy seen at this generation (this replica's requests; accessgate_candidate_decisions_total counts every replica's)".to_owned(),
        ),
        (Candidate::Ready(_), Some(f)) => {
            let first = match f.what {
                Seen::Disagreed(c) => format!("{} ({})", c.result(), c.reason()),
                Seen::WouldDeny(r) => r.code().to_owned(),
            };
            (
                ConditionStatus::False,
                CandidateReason::DisagreementsSeen,
                format!(
                    "disagreements with the live policy seen since {} (first: {first}); counts in accessgate_candidate_decisions_total",
                    rfc3339(f.at)
                ),
            )
        }
    }
}

fn rfc3339(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Whether the Ingresses reaching the policy let accessgate's identity headers through and
/// nothing else: a mapped header missing from `auth-response-headers` reaches the app as the
/// client sent it.
fn headers_condition(audit: Option<&Audit>) -> (ConditionStatus, HeadersReason, String) {
    let Some(a) = audit.filter(|a| !a.ingresses.is_empty() || a.elsewhere > 0) else {
        return (
            ConditionStatus::Unknown,
            HeadersReason::NoIngress,
            "no Ingress's nginx.ingress.kubernetes.io/auth-url reaches this policy (global-auth-url is not visible to accessgate)".to_owned(),
        );
    };
    if a.unprotected.is_empty() {
        return (
            ConditionStatus::True,
            HeadersReason::AllListed,
            "every Ingress reaching this policy lists its identity headers in nginx.ingress.kubernetes.io/auth-response-headers".to_owned(),
        );
    }
    let each: Vec<String> = a
        .unprotected
        .iter()
        .map(|(who, missing)| format!("{who} omits {}", missing.join(", ")))
        .collect();
    (
        ConditionStatus::False,
        HeadersReason::ResponseHeadersNotListed,
        format!(
            "{}: add them to nginx.ingress.kubernetes.io/auth-response-headers, or clients can send their own values to the app",
            each.join("; ")
        ),
    )
}

/// Why some hosts are not routed to this policy. Names no other namespace's object: a
/// tenant must not learn who holds a host by claiming it. The reason a person can fix
/// first: a missing right before another namespace's holding.
fn refused_hosts_condition(
    refused: &[(String, HostRefusal)],
) -> (ConditionStatus, ReadyReason, String) {
    let list = |why: HostRefusal| {
        refused
            .iter()
            .filter(|(_, w)| *w == why)
            .map(|(h, _)| h.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    const NOT_ROUTED: &str = "the host-selecting endpoints do not route them to this policy (/auth/{namespace}/{name} still works)";
    let not_served = list(HostRefusal::NotServed);
    if !not_served.is_empty() {
        return (
            ConditionStatus::False,
            ReadyReason::HostNotServed,
            format!(
                "no Ingress or accepted HTTPRoute in this namespace serves host(s) {not_served}, and no operator hostClaims rule grants them; {NOT_ROUTED}"
            ),
        );
    }
    let not_allowed = list(HostRefusal::NotAllowed);
    if !not_allowed.is_empty() {
        return (
            ConditionStatus::False,
            ReadyReason::HostNotAllowed,
            format!(
                "this namespace may not claim host(s) {not_allowed} (the operator's host-claim rules); {NOT_ROUTED}"
            ),
        );
    }
    (
        ConditionStatus::False,
        ReadyReason::HostOwnedElsewhere,
        format!(
            "host(s) {} are held by another namespace (or fall under a wildcard it holds); {NOT_ROUTED}",
            list(HostRefusal::OwnedElsewhere)
        ),
    )
}

/// Longest condition message written (the CRD allows 32768; a list of hosts could grow).
const MAX_MESSAGE_CHARS: usize = 1024;

fn bounded(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        None => message,
        Some((at, _)) => format!("{}…", &message[..at]),
    }
}

/// A condition whose transition time moves only when its status does.
fn condition(
    i: &Inputs,
    type_: ConditionType,
    (status, reason, message): (ConditionStatus, impl Into<&'static str>, String),
) -> Condition {
    let (type_, status): (&str, &str) = (type_.into(), status.into());
    let previous = i
        .previous
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
    let last_transition_time = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(i.now),
    };
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.into().to_owned(),
        message: bounded(message),
        observed_generation: i.generation,
        last_transition_time,
    }
}

/// Whether `new` differs from the status on the object. Status holds only what a person acts
/// on, so any difference is worth a write and no difference is none.
pub fn needs_write(old: Option<&AccessPolicyStatus>, new: &AccessPolicyStatus) -> bool {
    old != Some(new)
}

/// An Event to publish about a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

fn ready(s: &AccessPolicyStatus) -> Option<&Condition> {
    s.conditions
        .iter()
        .find(|c| c.type_ == <&str>::from(ConditionType::Ready))
}

/// Events for the transition from the status on the object to the new one. Derived from the
/// stored status, not from memory, so a new leader does not repeat what was already said.
pub fn events(old: Option<&AccessPolicyStatus>, new: &AccessPolicyStatus) -> Vec<EventSpec> {
    let mut out = Vec::new();
    let old_ready = old.and_then(ready);
    let new_ready = ready(new);
    let generation_moved = old.and_then(|s| s.observed_generation) != new.observed_generation;
    if let Some(nr) = new_ready {
        let reason_moved =
            old_ready.map(|c| (&c.reason, &c.message)) != Some((&nr.reason, &nr.message));
        let is = |r: ReadyReason| nr.reason == <&str>::from(r);
        if generation_moved || reason_moved {
            // The event follows the condition: Normal only when enforced as written, Warning
            // for every reason a user must act on. Missing keys are told by KeyFetchFailing
            // (a first fetch still under way is no news).
            if is(ReadyReason::DryRun) {
                // Turned on, or edited while on: impossible to miss. The first would-be
                // denial changes only the message, and is no Event.
                if generation_moved || old_ready.map(|c| &c.reason) != Some(&nr.reason) {
                    out.push(EventSpec {
                        warning: true,
                        reason: ReadyReason::DryRun.into(),
                        note: format!(
                            "generation {} is in dry-run: evaluated, NOT enforced",
                            new.observed_generation.unwrap_or_default()
                        ),
                    });
                }
            } else if is(ReadyReason::Enforced) {
                out.push(EventSpec {
                    warning: false,
                    reason: "PolicyAccepted",
                    note: format!(
                        "generation {} enforced",
                        new.observed_generation.unwrap_or_default()
                    ),
                });
            } else if is(ReadyReason::Invalid) {
                out.push(EventSpec {
                    warning: true,
                    reason: "PolicyRejected",
                    note: nr.message.clone(),
                });
            } else if let Some(r) = [
                ReadyReason::RouteConflict,
                ReadyReason::HostOwnedElsewhere,
                ReadyReason::HostNotAllowed,
                ReadyReason::HostNotServed,
            ]
            .into_iter()
            .find(|r| is(*r))
            {
                out.push(EventSpec {
                    warning: true,
                    reason: r.into(),
                    note: nr.message.clone(),
                });
            }
        }
    }
    let headers = |s: &AccessPolicyStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == <&str>::from(ConditionType::HeadersProtected))
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    if let Some((reason, message)) = headers(new)
        && reason == <&str>::from(HeadersReason::ResponseHeadersNotListed)
        && old.and_then(headers) != headers(new)
    {
        out.push(EventSpec {
            warning: true,
            reason: HeadersReason::ResponseHeadersNotListed.into(),
            note: message,
        });
    }
    let old_keys = old.and_then(|s| s.keys.as_ref());
    if let Some(nk) = &new.keys {
        let old_ids = old_keys.map(|k| k.ids.as_slice()).unwrap_or_default();
        // Keys loaded for the first time are no news (KeysAvailable says it, and PolicyAccepted
        // follows): a replica start must not cost an Event per policy.
        if !old_ids.is_empty() && !nk.ids.is_empty() && old_ids != nk.ids.as_slice() {
            out.push(EventSpec {
                warning: false,
                reason: "KeyRotation",
                note: format!(
                    "signing keys changed from [{}] to [{}]",
                    old_ids.join(", "),
                    nk.ids.join(", ")
                ),
            });
        }
        if nk.error.is_some() && old_keys.and_then(|k| k.error.as_ref()).is_none() {
            out.push(EventSpec {
                warning: true,
                reason: "KeyFetchFailing",
                note: nk.error.clone().unwrap_or_default(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::cloudflare_policy;
    use crate::core::policy::PolicyKey;
    use std::sync::Arc;
    use std::time::SystemTime;

    fn entry() -> PolicyEntry {
        entry_at(2)
    }

    /// The policy compiled from `metadata.generation` = `generation`.
    fn entry_at(generation: i64) -> PolicyEntry {
        PolicyEntry::Ready(Arc::new(cloudflare_policy(
            PolicyKey::new("ns", "p"),
            Some(generation),
        )))
    }

    fn inputs<'a>(
        entry: Option<&'a PolicyEntry>,
        keys: Option<KeyStatus>,
        previous: Option<&'a AccessPolicyStatus>,
    ) -> Inputs<'a> {
        Inputs {
            generation: Some(2),
            previous,
            entry,
            conflicts: vec![],
            refused_hosts: &[],
            keys,
            audit: None,
            auth_url: "http://accessgate.sys.svc.cluster.local/auth/ns/p".into(),
            would_deny: None,
            disagreed: None,
            now: Timestamp::from_second(1_800_000_000).unwrap(),
        }
    }

    fn condition_of(s: &AccessPolicyStatus, t: ConditionType) -> Option<&Condition> {
        s.conditions.iter().find(|c| c.type_ == <&str>::from(t))
    }

    #[test]
    fn a_dry_run_policy_says_so_once_and_its_first_would_be_denial_once() {
        let mut policy = cloudflare_policy(PolicyKey::new("ns", "p"), Some(2));
        policy.dry_run = true;
        let entry = PolicyEntry::Ready(Arc::new(policy));
        let first = desired(&inputs(Some(&entry), Some(loaded()), None));
        let ready = condition_of(&first, ConditionType::Ready).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "DryRun")
        );
        assert!(ready.message.contains("NOT enforced"), "{}", ready.message);
        assert!(ready.message.contains("no would-be denial seen yet"));
        let turned_on = events(None, &first);
        assert!(
            turned_on.iter().any(|e| e.warning && e.reason == "DryRun"),
            "{turned_on:?}"
        );

        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let denied = desired(&Inputs {
            would_deny: Some(FirstSeen {
                generation: Some(2),
                at,
                what: Seen::WouldDeny(crate::core::reason::Reason::TokenMissing),
            }),
            ..inputs(Some(&entry), Some(loaded()), Some(&first))
        });
        let ready = condition_of(&denied, ConditionType::Ready).unwrap();
        assert!(
            ready.message.contains(
                "would-be denials seen since 2027-01-15T08:00:00Z (first: token_missing)"
            ),
            "{}",
            ready.message
        );
        // One write for the first would-be denial, no new Event; later requests change nothing.
        assert!(needs_write(Some(&first), &denied));
        assert_eq!(events(Some(&first), &denied), []);
        assert_eq!(
            ready.last_transition_time,
            condition_of(&first, ConditionType::Ready)
                .unwrap()
                .last_transition_time
        );
    }

    #[test]
    fn a_candidate_has_its_own_condition_and_never_touches_ready() {
        use crate::api::{AccessPolicySpec, CandidateSpec, IssuerSpec, RulesSpec};
        use crate::core::candidate::Comparison;
        use crate::core::reason::Reason;
        let spec = |rules: RulesSpec| AccessPolicySpec {
            issuer: IssuerSpec {
                team_domain: Some("team.cloudflareaccess.com".into()),
                ..Default::default()
            },
            audiences: vec!["a".repeat(64)],
            candidate: Some(CandidateSpec {
                rules: Some(rules),
                ..Default::default()
            }),
            ..Default::default()
        };
        let compiled = |rules| {
            PolicyEntry::Ready(Arc::new(
                crate::core::policy::compile(PolicyKey::new("ns", "p"), Some(2), &spec(rules))
                    .unwrap(),
            ))
        };
        let broken = compiled(RulesSpec {
            groups_claim: Some("a..b".into()),
            ..Default::default()
        });
        let s = desired(&inputs(Some(&broken), Some(loaded()), None));
        let ready = condition_of(&s, ConditionType::Ready).unwrap();
        assert_eq!(
            ready.reason, "Enforced",
            "a broken candidate leaves the live policy enforced"
        );
        let c = condition_of(&s, ConditionType::CandidateAgrees).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "CandidateInvalid")
        );
        assert!(
            c.message.starts_with("spec.candidate.rules.groupsClaim"),
            "{}",
            c.message
        );

        let good = compiled(RulesSpec::default());
        let quiet = desired(&inputs(Some(&good), Some(loaded()), None));
        let c = condition_of(&quiet, ConditionType::CandidateAgrees).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "NoDisagreementSeen")
        );
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let seen = desired(&Inputs {
            disagreed: Some(FirstSeen {
                generation: Some(2),
                at,
                what: Seen::Disagreed(Comparison::CandidateDenies(Reason::RuleDenied)),
            }),
            ..inputs(Some(&good), Some(loaded()), Some(&quiet))
        });
        let c = condition_of(&seen, ConditionType::CandidateAgrees).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "DisagreementsSeen")
        );
        assert!(
            c.message
                .contains("since 2027-01-15T08:00:00Z (first: candidate_denies (rule_denied))"),
            "{}",
            c.message
        );
        // Without a candidate there is no such condition.
        let plain = desired(&inputs(Some(&entry()), Some(loaded()), None));
        assert!(condition_of(&plain, ConditionType::CandidateAgrees).is_none());
    }

    fn loaded() -> KeyStatus {
        KeyStatus {
            ids: vec!["k1".into()],
            fetched_at: Some(SystemTime::UNIX_EPOCH),
            error: None,
        }
    }

    fn cond<'s>(s: &'s AccessPolicyStatus, t: &str) -> &'s Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn ready_when_valid_with_keys() {
        let e = entry();
        let s = desired(&inputs(Some(&e), Some(loaded()), None));
        assert_eq!(
            (
                cond(&s, "Ready").status.as_str(),
                cond(&s, "Ready").reason.as_str()
            ),
            ("True", "Enforced")
        );
        assert_eq!(cond(&s, "KeysAvailable").status, "True");
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.issuer.as_deref(), Some("https://t.cloudflareaccess.com"));
        assert_eq!(s.keys.as_ref().unwrap().ids, vec!["k1"]);
    }

    #[test]
    fn invalid_policy_says_why() {
        let e = PolicyEntry::Invalid {
            message: "spec.audiences[0]: must be an AUD tag".into(),
            generation: Some(2),
        };
        let s = desired(&inputs(Some(&e), None, None));
        let r = cond(&s, "Ready");
        assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "Invalid"));
        assert!(r.message.contains("spec.audiences[0]"));
        assert_eq!(
            events(None, &s),
            vec![EventSpec {
                warning: true,
                reason: "PolicyRejected",
                note: r.message.clone()
            }]
        );
    }

    /// The generations the status and each of its conditions say they observed.
    fn observed(s: &AccessPolicyStatus) -> Vec<Option<i64>> {
        let mut all = vec![s.observed_generation];
        all.extend(s.conditions.iter().map(|c| c.observed_generation));
        all
    }

    /// After an edit the status reports the generation now enforced, on the status and on
    /// every condition, with the generation read from the index entry as the status
    /// writer reads it.
    #[test]
    fn an_edit_is_observed_at_its_own_generation() {
        let created = entry_at(1);
        let first = desired(&Inputs {
            generation: created.generation(),
            ..inputs(Some(&created), Some(loaded()), None)
        });
        assert_eq!(observed(&first), [Some(1); 4]);
        let edited = entry_at(2);
        let second = desired(&Inputs {
            generation: edited.generation(),
            ..inputs(Some(&edited), Some(loaded()), Some(&first))
        });
        assert_eq!(observed(&second), [Some(2); 4]);
        assert!(needs_write(Some(&first), &second));
        assert_eq!(
            events(Some(&first), &second),
            [EventSpec {
                warning: false,
                reason: "PolicyAccepted",
                note: "generation 2 enforced".into()
            }]
        );
        let broken = PolicyEntry::Invalid {
            message: "spec.audiences[0]: must be an AUD tag".into(),
            generation: Some(3),
        };
        let third = desired(&Inputs {
            generation: broken.generation(),
            ..inputs(Some(&broken), Some(loaded()), Some(&second))
        });
        assert_eq!(observed(&third), [Some(3); 4]);
    }

    #[test]
    fn key_fetch_failure_is_not_ready() {
        let e = entry();
        let failing = KeyStatus {
            ids: vec![],
            fetched_at: None,
            error: Some("answered HTTP 503".into()),
        };
        let s = desired(&inputs(Some(&e), Some(failing), None));
        assert_eq!(cond(&s, "Ready").reason, "KeysUnavailable");
        assert_eq!(cond(&s, "KeysAvailable").reason, "FetchFailed");
    }

    /// A later pass with nothing changed (a key refresh with the same keys, a new leader)
    /// writes nothing, and a transition time moves only with its status.
    #[test]
    fn nothing_changed_is_no_write_and_transition_time_is_kept() {
        let e = entry();
        let first = desired(&inputs(Some(&e), Some(loaded()), None));
        let mut later_inputs = inputs(Some(&e), Some(loaded()), Some(&first));
        later_inputs.now = Timestamp::from_second(1_800_000_100).unwrap();
        let refreshed = KeyStatus {
            fetched_at: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(300)),
            ..loaded()
        };
        later_inputs.keys = Some(refreshed);
        let later = desired(&later_inputs);
        assert!(!needs_write(Some(&first), &later));
        assert_eq!(
            cond(&later, "Ready").last_transition_time,
            cond(&first, "Ready").last_transition_time
        );
        assert!(needs_write(None, &first));
    }

    #[test]
    fn events_follow_transitions() {
        let e = entry();
        let pending = desired(&inputs(Some(&e), None, None));
        assert!(
            events(None, &pending).is_empty(),
            "a first fetch under way is no news"
        );
        let fetched = desired(&inputs(Some(&e), Some(loaded()), Some(&pending)));
        assert_eq!(
            events(Some(&pending), &fetched)
                .iter()
                .map(|e| (e.reason, e.warning))
                .collect::<Vec<_>>(),
            [("PolicyAccepted", false)]
        );
        // Every reason a user must act on is a Warning named after it.
        let refused = [("h.example".to_owned(), HostRefusal::OwnedElsewhere)];
        let mut i = inputs(Some(&e), Some(loaded()), Some(&fetched));
        i.refused_hosts = &refused;
        let owned = desired(&i);
        assert_eq!(
            events(Some(&fetched), &owned)
                .iter()
                .map(|e| (e.reason, e.warning))
                .collect::<Vec<_>>(),
            [("HostOwnedElsewhere", true)]
        );
        let rotated_keys = KeyStatus {
            ids: vec!["k2".into()],
            ..loaded()
        };
        let rotated = desired(&inputs(Some(&e), Some(rotated_keys), Some(&fetched)));
        assert_eq!(
            events(Some(&fetched), &rotated)
                .iter()
                .map(|e| e.reason)
                .collect::<Vec<_>>(),
            ["KeyRotation"]
        );
        let failing_keys = KeyStatus {
            error: Some("timeout".into()),
            ..loaded()
        };
        let failing = desired(&inputs(Some(&e), Some(failing_keys), Some(&fetched)));
        assert_eq!(
            events(Some(&fetched), &failing)
                .iter()
                .map(|e| e.reason)
                .collect::<Vec<_>>(),
            ["KeyFetchFailing"]
        );
        assert!(events(Some(&fetched), &fetched).is_empty());
    }

    #[test]
    fn a_host_owned_elsewhere_is_not_ready_and_names_no_foreign_object() {
        let e = entry();
        let refused = [("admin.example.com".to_owned(), HostRefusal::OwnedElsewhere)];
        let mut i = inputs(Some(&e), Some(loaded()), None);
        i.refused_hosts = &refused;
        let s = desired(&i);
        let r = cond(&s, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "HostOwnedElsewhere")
        );
        assert!(r.message.contains("admin.example.com"));
    }

    #[test]
    fn a_host_outside_the_namespace_rules_is_host_not_allowed() {
        let e = entry();
        let refused = [
            ("admin.example.com".to_owned(), HostRefusal::OwnedElsewhere),
            ("x.example.com".to_owned(), HostRefusal::NotAllowed),
        ];
        let mut i = inputs(Some(&e), Some(loaded()), None);
        i.refused_hosts = &refused;
        let r = cond(&desired(&i), "Ready").clone();
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "HostNotAllowed")
        );
        assert!(r.message.contains("x.example.com"), "{}", r.message);
    }

    #[test]
    fn an_ingress_that_omits_a_mapped_header_is_named() {
        let e = entry();
        let audit = Audit {
            ingresses: vec!["web".into()],
            elsewhere: 1,
            unprotected: vec![("Ingress web".into(), vec!["x-auth-request-user".into()])],
        };
        let mut i = inputs(Some(&e), Some(loaded()), None);
        i.audit = Some(&audit);
        let s = desired(&i);
        let h = cond(&s, "HeadersProtected");
        assert_eq!(
            (h.status.as_str(), h.reason.as_str()),
            ("False", "ResponseHeadersNotListed")
        );
        assert!(
            h.message.contains("Ingress web omits x-auth-request-user"),
            "{}",
            h.message
        );
        let used = s.used_by.as_ref().unwrap();
        assert_eq!(
            (used.ingresses.as_slice(), used.other_namespaces),
            (&["web".to_string()][..], 1)
        );
        assert!(
            events(None, &s)
                .iter()
                .any(|e| e.reason == "ResponseHeadersNotListed" && e.warning)
        );
        // No Ingress at all: unknown, not a false alarm.
        let s = desired(&inputs(Some(&e), Some(loaded()), None));
        assert_eq!(cond(&s, "HeadersProtected").status, "Unknown");
    }
}
