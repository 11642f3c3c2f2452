//! The one vocabulary of denial reasons, shared by responses, metrics, logs and status.

use std::fmt;

/// Why a request was denied. Each reason maps to exactly one HTTP status (docs/reference.md,
/// "The auth contract").
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::VariantArray,
    strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
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
    /// The policy asks for a signed upstream assertion and no signing key is loaded.
    AssertionUnavailable,
    // 400: the proxy's subrequest itself is unusable.
    RequestMalformed,
    DialectMismatch,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: &'static [Reason] = <Reason as strum::VariantArray>::VARIANTS;

    /// The short code used on the wire, in metrics labels, logs and status: the variant's
    /// name in snake_case (`TokenMissing` → `token_missing`).
    pub fn code(self) -> &'static str {
        self.into()
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
            | Reason::IdentityUnavailable
            | Reason::AssertionUnavailable => 503,
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
    fn codes_are_the_wire_contract() {
        // Derived from the variant names, so a rename would change the wire: pin them.
        let codes: Vec<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(
            codes,
            [
                "token_missing",
                "token_malformed",
                "token_too_large",
                "algorithm_not_allowed",
                "key_unknown",
                "signature_invalid",
                "issuer_mismatch",
                "token_expired",
                "token_not_yet_valid",
                "audience_mismatch",
                "token_type_not_allowed",
                "rule_denied",
                "policy_unknown",
                "policy_invalid",
                "keys_unavailable",
                "identity_unavailable",
                "assertion_unavailable",
                "request_malformed",
                "dialect_mismatch",
            ]
        );
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
