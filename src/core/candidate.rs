//! How a candidate authorization's decision compares with the live one on the same request
//! (`spec.candidate`, docs/routing.md "Changing a policy safely"). Pure: both decisions are
//! made by [`crate::core::decision`]; this only says whether, and how, they differ.

use crate::core::decision::Decision;
use crate::core::reason::Reason;

/// The candidate's decision beside the live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// Same verdict, reason and identity headers.
    Agree,
    /// Live allows, the candidate would deny, for this reason.
    CandidateDenies(Reason),
    /// Live denies for this reason, the candidate would allow.
    CandidateAllows(Reason),
    /// Both deny, for different reasons (the candidate's).
    ReasonDiffers(Reason),
    /// Both allow, with different identity headers.
    HeadersDiffer,
}

impl Comparison {
    /// The metric's `result` label.
    pub fn result(&self) -> &'static str {
        match self {
            Comparison::Agree => "agree",
            Comparison::CandidateDenies(_) => "candidate_denies",
            Comparison::CandidateAllows(_) => "candidate_allows",
            Comparison::ReasonDiffers(_) => "reason_differs",
            Comparison::HeadersDiffer => "headers_differ",
        }
    }

    /// The metric's `reason` label: the deny reason the two disagree on (`ok` when none).
    pub fn reason(&self) -> &'static str {
        match self {
            Comparison::CandidateDenies(r)
            | Comparison::CandidateAllows(r)
            | Comparison::ReasonDiffers(r) => r.code(),
            Comparison::Agree | Comparison::HeadersDiffer => "ok",
        }
    }

    pub fn is_agreement(&self) -> bool {
        *self == Comparison::Agree
    }
}

/// Compares the two decisions on one request. Headers are compared as sets (the order of
/// `claimHeaders` is not a difference an app sees; a policy names a header once).
pub fn compare(live: &Decision, candidate: &Decision) -> Comparison {
    match (live, candidate) {
        (Decision::Allow { headers: l, .. }, Decision::Allow { headers: c, .. }) => {
            if same_set(&l.set, &c.set) && same_set(&l.absent, &c.absent) {
                Comparison::Agree
            } else {
                Comparison::HeadersDiffer
            }
        }
        (Decision::Allow { .. }, Decision::Deny(r)) => Comparison::CandidateDenies(*r),
        (Decision::Deny(r), Decision::Allow { .. }) => Comparison::CandidateAllows(*r),
        (Decision::Deny(l), Decision::Deny(c)) if l == c => Comparison::Agree,
        (Decision::Deny(_), Decision::Deny(c)) => Comparison::ReasonDiffers(*c),
    }
}

/// Whether two lists of distinct items hold the same items: at most 32 headers a side, so
/// a scan beats sorting copies (and allocates nothing on every request).
fn same_set<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::headers::Rendered;
    use crate::core::verify::TokenKind;
    use axum::http::{HeaderName, HeaderValue};

    fn allow(set: &[(&'static str, &'static str)], absent: &[&'static str]) -> Decision {
        Decision::Allow {
            kind: TokenKind::App,
            headers: Rendered {
                set: set
                    .iter()
                    .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
                    .collect(),
                dropped: Vec::new(),
                absent: absent.iter().map(|n| HeaderName::from_static(n)).collect(),
            },
            assertion: None,
        }
    }

    #[test]
    fn verdicts_reasons_and_headers_are_each_a_disagreement() {
        let a = allow(&[("x-a", "1"), ("x-b", "2")], &["x-c"]);
        let deny = |r| Decision::Deny(r);
        assert_eq!(compare(&a, &a), Comparison::Agree);
        assert_eq!(
            compare(&a, &allow(&[("x-b", "2"), ("x-a", "1")], &["x-c"])),
            Comparison::Agree,
            "the order of the headers is no difference"
        );
        assert_eq!(
            compare(&a, &allow(&[("x-a", "1"), ("x-b", "3")], &["x-c"])),
            Comparison::HeadersDiffer
        );
        assert_eq!(
            compare(&a, &allow(&[("x-a", "1"), ("x-b", "2")], &[])),
            Comparison::HeadersDiffer,
            "a header the proxy must remove is part of the answer"
        );
        assert_eq!(
            compare(&a, &deny(Reason::RuleDenied)),
            Comparison::CandidateDenies(Reason::RuleDenied)
        );
        assert_eq!(
            compare(&deny(Reason::AudienceMismatch), &a),
            Comparison::CandidateAllows(Reason::AudienceMismatch)
        );
        assert_eq!(
            compare(&deny(Reason::TokenExpired), &deny(Reason::TokenExpired)),
            Comparison::Agree
        );
        assert_eq!(
            compare(&deny(Reason::RuleDenied), &deny(Reason::AudienceMismatch)),
            Comparison::ReasonDiffers(Reason::AudienceMismatch)
        );
    }

    #[test]
    fn each_comparison_has_its_labels() {
        let labels = [
            Comparison::Agree,
            Comparison::CandidateDenies(Reason::RuleDenied),
            Comparison::CandidateAllows(Reason::AudienceMismatch),
            Comparison::ReasonDiffers(Reason::TokenExpired),
            Comparison::HeadersDiffer,
        ]
        .map(|c| (c.result(), c.reason(), c.is_agreement()));
        assert_eq!(
            labels,
            [
                ("agree", "ok", true),
                ("candidate_denies", "rule_denied", false),
                ("candidate_allows", "audience_mismatch", false),
                ("reason_differs", "token_expired", false),
                ("headers_differ", "ok", false),
            ]
        );
    }
}
