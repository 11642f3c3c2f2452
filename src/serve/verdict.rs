//! The answer to one authorization, as every protocol must give it: the status, the reason,
//! the auth response's own headers, and the headers to set on (or remove from) the request
//! that goes upstream. HTTP and gRPC render these fields; neither adds a status or a header
//! of its own.

use axum::http::header::{CACHE_CONTROL, WWW_AUTHENTICATE};
use axum::http::{HeaderName, HeaderValue};

use crate::core::decision::Decision;
use crate::core::headers::{DropReason, Rendered};
use crate::core::policy::CompiledPolicy;
use crate::core::reason::Reason;
use crate::core::verify::TokenKind;

/// Response header naming the deny reason (the proxy does not show it to the client).
pub const REASON_HEADER: &str = "x-accessgate-reason";
/// Every answer: a proxy or cache must never replay one decision for another request.
const NO_STORE: &str = "no-store";
/// A 401's challenge.
const BEARER_CHALLENGE: &str = "Bearer realm=\"accessgate\"";

/// One authorization's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The token's kind on allow (`None`: let through by a dry-run policy without a token
    /// it would admit), the reason on deny.
    pub outcome: Result<Option<TokenKind>, Reason>,
    /// 200 on allow, the reason's status on deny.
    pub status: u16,
    /// The auth response's `Cache-Control`.
    pub cache_control: &'static str,
    /// The auth response's `WWW-Authenticate` (401s).
    pub www_authenticate: Option<&'static str>,
    /// Identity headers for the upstream request (allow only), overwriting client copies.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Mapped identity headers with no value for this token: a proxy that only overwrites
    /// the headers it is given (Envoy) must remove client copies of these.
    pub remove: Vec<HeaderName>,
    /// Identity headers withheld because their value was unsafe (counted, never sent).
    pub dropped: Vec<(HeaderName, DropReason)>,
}

impl Verdict {
    pub fn deny(reason: Reason) -> Self {
        let status = reason.status();
        Self {
            outcome: Err(reason),
            status,
            cache_control: NO_STORE,
            www_authenticate: (status == 401).then_some(BEARER_CHALLENGE),
            set: Vec::new(),
            remove: Vec::new(),
            dropped: Vec::new(),
        }
    }

    fn allow(kind: TokenKind, headers: Rendered) -> Self {
        Self {
            outcome: Ok(Some(kind)),
            status: 200,
            cache_control: NO_STORE,
            www_authenticate: None,
            set: headers.set,
            remove: headers.absent,
            dropped: headers.dropped,
        }
    }

    /// An allow carrying the signed upstream assertion in `header` (set like an identity
    /// header, overwriting a client's copy).
    pub fn allow_asserted(
        kind: TokenKind,
        headers: Rendered,
        (header, token): (HeaderName, HeaderValue),
    ) -> Self {
        let mut v = Verdict::allow(kind, headers);
        v.set.push((header, token));
        v
    }

    /// The answer of a route only a dry-run policy covers: its `would_be` verdict when that
    /// is an allow (identity headers and assertion included); otherwise allowed with none of
    /// them, and every header the policy maps (and its assertion header) removed, so a
    /// client's own copies never reach the app as identity.
    pub fn pass(policy: &CompiledPolicy, would_be: Verdict) -> Self {
        if would_be.is_allow() {
            return would_be;
        }
        Self {
            outcome: Ok(None),
            status: 200,
            cache_control: NO_STORE,
            www_authenticate: None,
            set: Vec::new(),
            remove: policy
                .claim_headers
                .iter()
                .map(|h| h.header.clone())
                .chain(policy.assertion.as_ref().map(|a| a.header.clone()))
                .collect(),
            dropped: Vec::new(),
        }
    }

    pub fn is_allow(&self) -> bool {
        self.outcome.is_ok()
    }

    pub fn reason(&self) -> Option<Reason> {
        self.outcome.err()
    }

    /// The auth response's own headers (not the identity headers): `Cache-Control`, and on
    /// deny the reason and, for a 401, the challenge.
    pub fn response_headers(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        let reason = self.reason().map(|r| (REASON_HEADER, r.code()));
        let challenge = self
            .www_authenticate
            .map(|c| (WWW_AUTHENTICATE.as_str(), c));
        std::iter::once((CACHE_CONTROL.as_str(), self.cache_control))
            .chain(reason)
            .chain(challenge)
    }

    /// A deny's body: the reason code on a line (what a person reading the proxy's error
    /// page or a log sees).
    pub fn body(&self) -> String {
        self.reason()
            .map(|r| format!("{}\n", r.code()))
            .unwrap_or_default()
    }
}

impl From<Decision> for Verdict {
    fn from(decision: Decision) -> Self {
        match decision {
            Decision::Allow {
                kind,
                headers,
                assertion: None,
            } => Verdict::allow(kind, headers),
            // An assertion is signed by the service (`serve::authorize`); an allow that reaches
            // here with one unsigned is refused, never sent on without it.
            Decision::Allow {
                assertion: Some(_), ..
            } => Verdict::deny(Reason::AssertionUnavailable),
            Decision::Deny(reason) => Verdict::deny(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_401_carries_the_reason_the_challenge_and_no_store() {
        let v = Verdict::deny(Reason::TokenExpired);
        assert_eq!(v.status, 401);
        assert_eq!(
            v.response_headers().collect::<Vec<_>>(),
            [
                ("cache-control", "no-store"),
                (REASON_HEADER, "token_expired"),
                ("www-authenticate", "Bearer realm=\"accessgate\""),
            ]
        );
        assert_eq!(v.body(), "token_expired\n");
    }

    #[test]
    fn a_403_has_no_challenge_and_an_allow_no_reason() {
        let v = Verdict::deny(Reason::RuleDenied);
        assert_eq!(v.status, 403);
        assert_eq!(v.www_authenticate, None);
        let allow = Verdict::from(Decision::Allow {
            kind: TokenKind::App,
            headers: Rendered::default(),
            assertion: None,
        });
        assert_eq!((allow.status, allow.reason()), (200, None));
        assert_eq!(
            allow.response_headers().collect::<Vec<_>>(),
            [("cache-control", "no-store")]
        );
        assert_eq!(allow.body(), "");
    }
}
