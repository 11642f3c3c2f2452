//! The one vocabulary of denial reasons, shared by responses, metrics, logs and status.

use std::fmt;

/// Why a request was denied. Each reason maps to exactly one HTTP status (design §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    // 401: the caller is not authenticated.
    TokenMissing,
    TokenMalformed,
    TokenTooLarge,
    AlgorithmNotAllowed,
    KeyUnknown,
    SignatureInvalid,
    IssuerMismatch,
    TokenExpired,
    TokenNotYetValid,
    // 403: authenticated, but this policy refuses the token.
    AudienceMismatch,
    TokenTypeNotAllowed,
    RuleDenied,
    // 503: a configuration problem on our side; still a deny.
    PolicyUnknown,
    PolicyInvalid,
    KeysUnavailable,
    /// Cloudflare identity enrichment was required and could not be had.
    IdentityUnavailable,
    // 400: the proxy's subrequest itself is unusable.
    RequestMalformed,
    DialectMismatch,
}

impl Reason {
    pub const ALL: [Reason; 18] = [
        Reason::TokenMissing,
        Reason::TokenMalformed,
        Reason::TokenTooLarge,
        Reason::AlgorithmNotAllowed,
        Reason::KeyUnknown,
        Reason::SignatureInvalid,
        Reason::IssuerMismatch,
        Reason::TokenExpired,
        Reason::TokenNotYetValid,
        Reason::AudienceMismatch,
        Reason::TokenTypeNotAllowed,
        Reason::RuleDenied,
        Reason::PolicyUnknown,
        Reason::PolicyInvalid,
        Reason::KeysUnavailable,
        Reason::IdentityUnavailable,
        Reason::RequestMalformed,
        Reason::DialectMismatch,
    ];

    /// The short code used on the wire, in metrics labels, logs and status.
    pub fn code(self) -> &'static str {
        match self {
            Reason::TokenMissing => "token_missing",
            Reason::TokenMalformed => "token_malformed",
            Reason::TokenTooLarge => "token_too_large",
            Reason::AlgorithmNotAllowed => "algorithm_not_allowed",
            Reason::KeyUnknown => "key_unknown",
            Reason::SignatureInvalid => "signature_invalid",
            Reason::IssuerMismatch => "issuer_mismatch",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::AudienceMismatch => "audience_mismatch",
            Reason::TokenTypeNotAllowed => "token_type_not_allowed",
            Reason::RuleDenied => "rule_denied",
            Reason::PolicyUnknown => "policy_unknown",
            Reason::PolicyInvalid => "policy_invalid",
            Reason::KeysUnavailable => "keys_unavailable",
            Reason::IdentityUnavailable => "identity_unavailable",
            Reason::RequestMalformed => "request_malformed",
            Reason::DialectMismatch => "dialect_mismatch",
        }
    }

    /// The HTTP status the auth endpoint answers with for this reason.
    pub fn status(self) -> u16 {
        match self {
            Reason::TokenMissing
            | Reason::TokenMalformed
            | Reason::TokenTooLarge
            | Reason::AlgorithmNotAllowed
            | Reason::KeyUnknown
            | Reason::SignatureInvalid
            | Reason::IssuerMismatch
            | Reason::TokenExpired
            | Reason::TokenNotYetValid => 401,
            Reason::AudienceMismatch | Reason::TokenTypeNotAllowed | Reason::RuleDenied => 403,
            Reason::PolicyUnknown
            | Reason::PolicyInvalid
            | Reason::KeysUnavailable
            | Reason::IdentityUnavailable => 503,
            Reason::RequestMalformed | Reason::DialectMismatch => 400,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut codes: Vec<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert!(
            codes
                .iter()
                .all(|c| c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'))
        );
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
    }

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(Reason::TokenExpired.status(), 401);
        assert_eq!(Reason::AudienceMismatch.status(), 403);
        assert_eq!(Reason::KeysUnavailable.status(), 503);
        assert_eq!(Reason::DialectMismatch.status(), 400);
        assert!(Reason::ALL.iter().all(|r| r.status() != 200));
    }
}
