//! `spec.rules`: who may pass among holders of a valid token. Pure.
//!
//! Deny matchers are checked first and win; then, if there are allow matchers, one must
//! match. A claim the token lacks never matches, so a deny on a missing claim does not fire
//! and an allow on it does not admit (Cloudflare trims large custom claims: missing groups
//! mean "unknown", not "none").

use serde_json::Value;

use crate::policy::{CompiledMatcher, CompiledRules};
use crate::reason::Reason;
use crate::verify::{Claims, TokenKind};

/// Ok when the rules admit the token, `rule_denied` otherwise.
pub fn check(rules: &CompiledRules, claims: &Claims, kind: TokenKind) -> Result<(), Reason> {
    let matches = |m: &CompiledMatcher| matcher_matches(m, rules, claims, kind);
    if rules.deny.iter().any(matches) {
        return Err(Reason::RuleDenied);
    }
    if !rules.allow.is_empty() && !rules.allow.iter().any(matches) {
        return Err(Reason::RuleDenied);
    }
    Ok(())
}

/// Why a matcher matched or not, for `accessgate check`.
pub fn matcher_matches(
    m: &CompiledMatcher,
    rules: &CompiledRules,
    claims: &Claims,
    kind: TokenKind,
) -> bool {
    let email = || {
        claims
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_lowercase)
    };
    match m {
        CompiledMatcher::Email(want) => email().is_some_and(|e| e == *want),
        CompiledMatcher::EmailDomain(domain) => email()
            .and_then(|e| e.rsplit_once('@').map(|(_, d)| d == domain))
            .unwrap_or(false),
        CompiledMatcher::Group(group) => match claims.path(&rules.groups_path) {
            Some(Value::Array(list)) => list.iter().any(|g| g.as_str() == Some(group)),
            Some(Value::String(one)) => one == group,
            _ => false,
        },
        CompiledMatcher::ServiceToken(cn) => {
            kind == TokenKind::Service
                && claims.get("common_name").and_then(Value::as_str) == Some(cn)
        }
        CompiledMatcher::Country(c) => claims
            .get("country")
            .and_then(Value::as_str)
            .is_some_and(|x| x.eq_ignore_ascii_case(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CompiledMatcher::*;

    fn rules(allow: Vec<CompiledMatcher>, deny: Vec<CompiledMatcher>) -> CompiledRules {
        CompiledRules {
            groups_path: vec!["custom".into(), "groups".into()],
            allow,
            deny,
        }
    }

    fn claims(v: serde_json::Value) -> Claims {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn no_rules_allow_everyone() {
        assert_eq!(
            check(
                &rules(vec![], vec![]),
                &claims(serde_json::json!({})),
                TokenKind::App
            ),
            Ok(())
        );
    }

    #[test]
    fn allow_by_each_kind() {
        let alice = claims(
            serde_json::json!({"email": "Alice@Example.com", "country": "de", "custom": {"groups": ["sre", "eng"]}}),
        );
        for m in [
            Email("alice@example.com".into()),
            EmailDomain("example.com".into()),
            Group("sre".into()),
            Country("DE".into()),
        ] {
            assert_eq!(
                check(&rules(vec![m.clone()], vec![]), &alice, TokenKind::App),
                Ok(()),
                "{m:?}"
            );
        }
        for m in [
            Email("bob@example.com".into()),
            EmailDomain("other.com".into()),
            EmailDomain("ample.com".into()),
            Group("SRE".into()),
            Country("US".into()),
            ServiceToken("x".into()),
        ] {
            assert_eq!(
                check(&rules(vec![m.clone()], vec![]), &alice, TokenKind::App),
                Err(Reason::RuleDenied),
                "{m:?}"
            );
        }
    }

    #[test]
    fn deny_wins_over_allow() {
        let alice = claims(serde_json::json!({"email": "alice@example.com", "country": "KP"}));
        let r = rules(
            vec![EmailDomain("example.com".into())],
            vec![Country("KP".into())],
        );
        assert_eq!(check(&r, &alice, TokenKind::App), Err(Reason::RuleDenied));
    }

    #[test]
    fn missing_claims_never_match() {
        let nobody = claims(serde_json::json!({"email": "a@example.com"}));
        assert_eq!(
            check(
                &rules(vec![], vec![Group("banned".into())]),
                &nobody,
                TokenKind::App
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &rules(vec![Group("sre".into())], vec![]),
                &nobody,
                TokenKind::App
            ),
            Err(Reason::RuleDenied)
        );
    }

    #[test]
    fn service_tokens_match_by_common_name_only_when_service() {
        let svc = claims(serde_json::json!({"common_name": "ci.access", "sub": ""}));
        let r = rules(vec![ServiceToken("ci.access".into())], vec![]);
        assert_eq!(check(&r, &svc, TokenKind::Service), Ok(()));
        assert_eq!(check(&r, &svc, TokenKind::App), Err(Reason::RuleDenied));
    }

    #[test]
    fn a_single_string_group_claim_counts() {
        let c = claims(serde_json::json!({"custom": {"groups": "sre"}}));
        assert_eq!(
            check(
                &rules(vec![Group("sre".into())], vec![]),
                &c,
                TokenKind::App
            ),
            Ok(())
        );
    }
}
