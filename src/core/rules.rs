//! `spec.rules`: who may pass among holders of a valid token. Pure.
//!
//! Deny matchers are checked first and win; then, if there are allow matchers, one must match.
//! A claim the token lacks matches nothing (Cloudflare trims large custom claims: missing groups
//! mean "unknown", not "none"). Email matching folds ASCII case only: Unicode folding would let
//! `eve@\u{212A}ube.io` (KELVIN SIGN) pass for `kube.io`. An email present but unusable
//! ([`EmailClaim::Unusable`]) fails closed both ways: no allow matches it and every email deny
//! does, or anyone who can get an odd address from the issuer (self-service, unverified, a
//! look-alike IDN) would slip past a deny written for the real one. See docs/security.md,
//! "Decisions where the spec was silent".

use serde_json::Value;

use crate::core::policy::{CompiledMatcher, CompiledRules, is_dns_name};
use crate::core::reason::Reason;
use crate::core::verify::{Claims, TokenKind};

/// Which list a matcher sits in: an unusable email fails closed in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Allow,
    Deny,
}

/// The token's `email` claim as the email matchers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmailClaim {
    /// No `email` claim (or `null`): no email matcher matches, allow or deny.
    Absent,
    /// A plain ASCII address, lowercased (ASCII only).
    Usable(String),
    /// Present but not safely comparable; the text says why. Allow matchers do not match,
    /// deny matchers do.
    Unusable(&'static str),
}

/// Reads the token's `email` for matching. `rules.check_email_verified` (generic issuers)
/// also requires `email_verified`, when present, to be `true` (or the string `"true"`, as
/// some IdPs send it).
pub fn email(rules: &CompiledRules, claims: &Claims) -> EmailClaim {
    let raw = match claims.get("email") {
        None | Some(Value::Null) => return EmailClaim::Absent,
        Some(Value::String(e)) => e,
        Some(_) => return EmailClaim::Unusable("email is not a string"),
    };
    if !raw.is_ascii() {
        return EmailClaim::Unusable("email is not ASCII");
    }
    if !is_plain_address(raw) {
        return EmailClaim::Unusable("email is not a plain user@domain address");
    }
    if rules.check_email_verified {
        match claims.get("email_verified") {
            None | Some(Value::Bool(true)) => {}
            Some(Value::String(v)) if v == "true" => {}
            Some(_) => return EmailClaim::Unusable("email_verified is not true"),
        }
    }
    EmailClaim::Usable(raw.to_ascii_lowercase())
}

/// Printable ASCII, one `@`, a non-empty local part, and a domain that is a DNS name (no
/// trailing dot, no empty label; the same test `emailDomain` values pass): the shapes a
/// deny on `emailDomain` can be sure about.
fn is_plain_address(e: &str) -> bool {
    e.bytes().all(|b| b.is_ascii_graphic())
        && e.split_once('@').is_some_and(|(user, domain)| {
            !user.is_empty() && is_dns_name(&domain.to_ascii_lowercase())
        })
}

/// Ok when the rules admit the token, `rule_denied` otherwise.
pub fn check(rules: &CompiledRules, claims: &Claims, kind: TokenKind) -> Result<(), Reason> {
    check_observed(rules, claims, kind, |_| {})
}

/// One matcher as [`check_observed`] evaluated it.
pub struct MatcherSeen<'a> {
    pub side: Side,
    pub matcher: &'a CompiledMatcher,
    /// The `email` claim as every email matcher saw it (why one failed closed).
    pub email: &'a EmailClaim,
    pub hit: bool,
}

/// [`check`], telling `seen` each matcher it evaluated, in order, until the verdict was
/// known: the trace of `accessgate check` is these calls, not a second evaluation.
pub fn check_observed(
    rules: &CompiledRules,
    claims: &Claims,
    kind: TokenKind,
    mut seen: impl FnMut(MatcherSeen<'_>),
) -> Result<(), Reason> {
    let email = email(rules, claims);
    let mut hit = |side: Side, matcher: &CompiledMatcher| {
        let hit = matches_with(matcher, side, &email, rules, claims, kind);
        seen(MatcherSeen {
            side,
            matcher,
            email: &email,
            hit,
        });
        hit
    };
    if rules.deny.iter().any(|m| hit(Side::Deny, m)) {
        return Err(Reason::RuleDenied);
    }
    if !rules.allow.is_empty() && !rules.allow.iter().any(|m| hit(Side::Allow, m)) {
        return Err(Reason::RuleDenied);
    }
    Ok(())
}

fn matches_with(
    m: &CompiledMatcher,
    side: Side,
    email: &EmailClaim,
    rules: &CompiledRules,
    claims: &Claims,
    kind: TokenKind,
) -> bool {
    let on_email = |test: &dyn Fn(&str) -> bool| match email {
        EmailClaim::Absent => false,
        EmailClaim::Usable(e) => test(e),
        EmailClaim::Unusable(_) => side == Side::Deny,
    };
    match m {
        CompiledMatcher::Email(want) => on_email(&|e| e == want),
        CompiledMatcher::EmailDomain(domain) => {
            on_email(&|e| e.rsplit_once('@').is_some_and(|(_, d)| d == domain))
        }
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
            check_email_verified: false,
            allow,
            deny,
        }
    }

    /// As compiled for a generic (`issuer.url`) issuer.
    fn generic(allow: Vec<CompiledMatcher>, deny: Vec<CompiledMatcher>) -> CompiledRules {
        CompiledRules {
            check_email_verified: true,
            ..rules(allow, deny)
        }
    }

    fn allowed(r: &CompiledRules, c: &Claims) -> bool {
        check(r, c, TokenKind::App).is_ok()
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

    #[test]
    fn kelvin_sign_email_does_not_match_domain() {
        // U+212A KELVIN SIGN lowercases to 'k' under Unicode rules.
        let eve = claims(serde_json::json!({"email": "eve@\u{212A}ube.io"}));
        assert_eq!(
            "eve@\u{212A}ube.io".to_lowercase(),
            "eve@kube.io",
            "the trap"
        );
        assert!(!allowed(
            &rules(vec![EmailDomain("kube.io".into())], vec![]),
            &eve
        ));
        assert!(!allowed(
            &rules(vec![Email("eve@kube.io".into())], vec![]),
            &eve
        ));
    }

    #[test]
    fn non_ascii_email_never_matches_an_allow_matcher() {
        for email in [
            "alice@example.com\u{200B}",
            "alice@exa\u{0301}mple.com",
            "\u{0430}lice@example.com", // Cyrillic a
            "alice@example.com\u{FF0E}",
            "ALİCE@example.com", // dotted capital I: lowercases to "i\u{307}"
        ] {
            let c = claims(serde_json::json!({ "email": email }));
            for m in [
                Email("alice@example.com".into()),
                EmailDomain("example.com".into()),
            ] {
                assert!(
                    !allowed(&rules(vec![m.clone()], vec![]), &c),
                    "{email} {m:?}"
                );
            }
        }
    }

    #[test]
    fn non_ascii_email_always_matches_an_email_deny_matcher() {
        let eve = claims(
            serde_json::json!({"email": "eve@\u{212A}ube.io", "custom": {"groups": ["sre"]}}),
        );
        for deny in [
            EmailDomain("kube.io".into()),
            EmailDomain("unrelated.example".into()),
            Email("someone@else.example".into()),
        ] {
            assert_eq!(
                check(
                    &rules(vec![Group("sre".into())], vec![deny.clone()]),
                    &eve,
                    TokenKind::App
                ),
                Err(Reason::RuleDenied),
                "{deny:?}"
            );
        }
        // Matchers on other claims are unaffected: the group still admits without an
        // email deny.
        assert!(allowed(
            &rules(vec![Group("sre".into())], vec![Country("KP".into())]),
            &eve
        ));
    }

    #[test]
    fn email_matching_folds_ascii_case_only() {
        let c = claims(serde_json::json!({"email": "ALICE@EXAMPLE.COM"}));
        assert!(allowed(
            &rules(vec![Email("alice@example.com".into())], vec![]),
            &c
        ));
        assert!(allowed(
            &rules(vec![EmailDomain("example.com".into())], vec![]),
            &c
        ));
        assert_eq!(
            email(&rules(vec![], vec![]), &c),
            EmailClaim::Usable("alice@example.com".into())
        );
    }

    #[test]
    fn odd_ascii_emails_fail_closed() {
        for email in [
            "eve@evil.com.",     // trailing dot: the same DNS name as evil.com
            "eve@evil.com ",     // trailing space
            "eve@evil..com",     // empty label
            "eve@evil.com\u{0}", // NUL
            "eve@@evil.com",
            "eve",
            "@evil.com",
            "eve@",
            "eve@[127.0.0.1]",
            "eve@evil_com.com",
        ] {
            let c = claims(serde_json::json!({ "email": email }));
            assert!(
                !allowed(&rules(vec![EmailDomain("evil.com".into())], vec![]), &c),
                "{email:?} allowed"
            );
            assert!(
                !allowed(&rules(vec![], vec![EmailDomain("evil.com".into())]), &c),
                "{email:?} dodged the deny"
            );
        }
    }

    #[test]
    fn non_string_email_fails_closed_and_null_is_absent() {
        for v in [
            serde_json::json!(["eve@evil.com"]),
            serde_json::json!(7),
            serde_json::json!({"a": 1}),
        ] {
            let c = claims(serde_json::json!({ "email": v }));
            assert!(
                !allowed(&rules(vec![], vec![EmailDomain("evil.com".into())]), &c),
                "{v}"
            );
            assert!(
                !allowed(&rules(vec![EmailDomain("evil.com".into())], vec![]), &c),
                "{v}"
            );
        }
        let null = claims(serde_json::json!({ "email": null }));
        assert!(allowed(
            &rules(vec![], vec![EmailDomain("evil.com".into())]),
            &null
        ));
        assert!(!allowed(
            &rules(vec![EmailDomain("evil.com".into())], vec![]),
            &null
        ));
    }

    #[test]
    fn missing_email_matches_neither_allow_nor_deny() {
        let svc = claims(serde_json::json!({"common_name": "ci.access", "sub": ""}));
        assert!(allowed(
            &generic(vec![], vec![EmailDomain("evil.com".into())]),
            &svc
        ));
        assert!(!allowed(
            &generic(vec![EmailDomain("evil.com".into())], vec![]),
            &svc
        ));
    }

    #[test]
    fn unverified_email_fails_closed_with_generic_issuers() {
        let c = |verified: serde_json::Value| {
            claims(serde_json::json!({"email": "alice@example.com", "email_verified": verified}))
        };
        let allow = generic(vec![EmailDomain("example.com".into())], vec![]);
        let deny = generic(vec![], vec![Email("bob@other.example".into())]);
        for v in [
            serde_json::json!(false),
            serde_json::json!("false"),
            serde_json::json!(null),
            serde_json::json!(0),
            serde_json::json!("yes"),
        ] {
            assert!(
                !allowed(&allow, &c(v.clone())),
                "allow with email_verified {v}"
            );
            assert!(
                !allowed(&deny, &c(v.clone())),
                "deny dodged with email_verified {v}"
            );
        }
        for v in [serde_json::json!(true), serde_json::json!("true")] {
            assert!(allowed(&allow, &c(v.clone())), "{v}");
            assert!(allowed(&deny, &c(v.clone())), "{v}");
        }
        let absent = claims(serde_json::json!({"email": "alice@example.com"}));
        assert!(allowed(&allow, &absent) && allowed(&deny, &absent));
    }

    #[test]
    fn email_verified_is_ignored_for_cloudflare_issuers() {
        // Cloudflare Access does not send it; a stray one changes nothing.
        let c = claims(serde_json::json!({"email": "alice@example.com", "email_verified": false}));
        assert!(allowed(
            &rules(vec![EmailDomain("example.com".into())], vec![]),
            &c
        ));
        assert!(allowed(
            &rules(vec![], vec![Email("bob@other.example".into())]),
            &c
        ));
    }

    /// What `check_observed` reports: each matcher it evaluated, in order, stopping where
    /// the verdict is known, with the same hit `check` used.
    fn seen(r: &CompiledRules, c: &Claims) -> (Result<(), Reason>, Vec<(Side, bool)>) {
        let mut out = Vec::new();
        let verdict = check_observed(r, c, TokenKind::App, |s| out.push((s.side, s.hit)));
        (verdict, out)
    }

    #[test]
    fn check_observed_reports_the_matchers_check_evaluated() {
        let eve = claims(serde_json::json!({"email": "eve@\u{212A}ube.io"}));
        let domain = || EmailDomain("kube.io".into());
        // An unusable email fails closed on each side.
        assert_eq!(
            seen(&rules(vec![domain()], vec![]), &eve),
            (Err(Reason::RuleDenied), vec![(Side::Allow, false)])
        );
        assert_eq!(
            seen(&rules(vec![], vec![domain()]), &eve),
            (Err(Reason::RuleDenied), vec![(Side::Deny, true)])
        );
        // A deny hit ends the evaluation: the allow list is never looked at.
        let bob =
            claims(serde_json::json!({"email": "bob@kube.io", "custom": {"groups": ["ops"]}}));
        let both = rules(vec![Group("ops".into())], vec![Email("bob@kube.io".into())]);
        assert_eq!(
            seen(&both, &bob),
            (Err(Reason::RuleDenied), vec![(Side::Deny, true)])
        );
        // Allow matchers until the first hit.
        let allow = rules(
            vec![Group("dev".into()), Group("ops".into()), domain()],
            vec![],
        );
        assert_eq!(
            seen(&allow, &bob),
            (Ok(()), vec![(Side::Allow, false), (Side::Allow, true)])
        );
        assert_eq!(seen(&rules(vec![], vec![]), &bob), (Ok(()), vec![]));
    }
}
