//! A step-by-step account of one decision, for `accessgate check`. Pure. The verdict is the
//! real [`decide`]'s, so the trace can explain a decision but never disagree with one.

use std::fmt::Write as _;

use axum::http::HeaderMap;
use serde_json::Value;

use crate::core::decision::{Decision, Forgetful, decide};
use crate::core::jwks::{KeyAnswer, KeyLookup};
use crate::core::policy::{CompiledMatcher, CompiledPolicy};
use crate::core::reason::Reason;
use crate::core::rules::{self, EmailClaim, Side, matcher_matches};
use crate::core::verify::{self, ClaimCheck, Claims, TokenKind};

/// One line of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub ok: bool,
    pub what: String,
    pub detail: String,
    /// For a failed claim check or deny rule: the reason the verifier gave.
    pub reason: Option<Reason>,
}

fn step(out: &mut Vec<Step>, ok: bool, what: &str, detail: impl Into<String>) {
    out.push(Step {
        ok,
        what: what.into(),
        detail: detail.into(),
        reason: None,
    });
}

fn step_failed(out: &mut Vec<Step>, what: &str, reason: Reason, detail: impl Into<String>) {
    out.push(Step {
        ok: false,
        what: what.into(),
        detail: format!("{reason}: {}", detail.into()),
        reason: Some(reason),
    });
}

fn show(v: Option<&Value>) -> String {
    v.map(Value::to_string).unwrap_or_else(|| "(absent)".into())
}

/// Traces the decision for a request carrying `headers` under `policy`.
pub fn trace(
    policy: &CompiledPolicy,
    headers: &HeaderMap,
    keys: &impl KeyLookup,
    now: u64,
) -> (Vec<Step>, Decision) {
    let decision = decide(policy, headers, keys, &Forgetful, now);
    let mut s = Vec::new();
    explain(policy, headers, keys, now, &mut s);
    let verdict = match &decision {
        Decision::Allow { .. } => "ALLOW (200)".to_owned(),
        Decision::Deny(r) => format!("DENY ({} {})", r.status(), r.code()),
    };
    step(&mut s, decision.outcome().is_ok(), "decision", verdict);
    (s, decision)
}

fn explain(
    policy: &CompiledPolicy,
    headers: &HeaderMap,
    keys: &impl KeyLookup,
    now: u64,
    s: &mut Vec<Step>,
) {
    let sources: Vec<String> = policy
        .token_sources
        .iter()
        .map(|t| format!("{t:?}").to_lowercase())
        .collect();
    let token = match verify::extract_token(headers, &policy.token_sources) {
        Ok(t) => {
            step(
                s,
                true,
                "token",
                format!(
                    "found ({} bytes) in sources [{}]",
                    t.len(),
                    sources.join(", ")
                ),
            );
            t
        }
        Err(r) => {
            return step(
                s,
                false,
                "token",
                format!("{r}: none usable in sources [{}]", sources.join(", ")),
            );
        }
    };
    let header = match verify::read_header(token, &policy.algorithms) {
        Ok(h) => {
            step(
                s,
                true,
                "header",
                format!(
                    "alg {:?} (allowed {:?}), kid {}",
                    h.alg, policy.algorithms, h.kid
                ),
            );
            h
        }
        Err(r) => {
            return step(
                s,
                false,
                "header",
                format!("{r} (allowed algorithms {:?})", policy.algorithms),
            );
        }
    };
    let key = match keys.lookup(&policy.jwks_uri, &header.kid) {
        KeyAnswer::Found(k) => {
            step(
                s,
                true,
                "key",
                format!("kid {} found in {}", k.kid, policy.jwks_uri),
            );
            k
        }
        KeyAnswer::Unknown => {
            return step(
                s,
                false,
                "key",
                format!("kid {} is not published at {}", header.kid, policy.jwks_uri),
            );
        }
        KeyAnswer::Unavailable => {
            return step(
                s,
                false,
                "key",
                format!("no keys could be loaded from {}", policy.jwks_uri),
            );
        }
    };
    let claims = match verify::verify_signature(token, &header, &key) {
        Ok(c) => {
            step(s, true, "signature", "valid");
            c
        }
        Err(r) => return step(s, false, "signature", r.to_string()),
    };
    explain_claims(policy, &claims, now, s);
}

/// The claim checks exactly as the verifier runs them ([`verify::check_claims_observed`]):
/// each line's verdict is the check's own result, and the trace stops where verification
/// stops. Only the detail text (the values looked at) is added here.
fn explain_claims(policy: &CompiledPolicy, claims: &Claims, now: u64, s: &mut Vec<Step>) {
    let mut seen = Vec::new();
    let outcome = verify::check_claims_observed(claims, policy, now, |check, result| {
        seen.push((check, result));
    });
    for (check, result) in seen {
        let detail = claim_detail(check, policy, claims, now);
        match result {
            Ok(()) => step(s, true, check.name(), detail),
            Err(r) => step_failed(s, check.name(), r, detail),
        }
    }
    if let Ok(kind) = outcome {
        explain_rules(policy, claims, kind, s);
        let rendered = crate::core::headers::render(claims, &policy.claim_headers);
        let mut text = String::new();
        for (k, v) in &rendered.set {
            let _ = write!(text, "{k}: {}; ", String::from_utf8_lossy(v.as_bytes()));
        }
        for (k, why) in &rendered.dropped {
            let _ = write!(text, "{k} dropped ({}); ", why.code());
        }
        step(
            s,
            true,
            "headers",
            if text.is_empty() {
                "none".into()
            } else {
                text.trim_end_matches("; ").to_owned()
            },
        );
    }
}

/// What a claim check looked at, for the reader; never a verdict.
fn claim_detail(check: ClaimCheck, policy: &CompiledPolicy, claims: &Claims, now: u64) -> String {
    let leeway = policy.leeway_secs;
    let time = |name: &str| match claims.get(name) {
        Some(Value::Number(n)) if n.as_f64().is_some() => {
            let t = n.as_f64().unwrap_or_default();
            format!("{n} ({:+.0} s from now, leeway {leeway} s)", t - now as f64)
        }
        other => show(other),
    };
    match check {
        ClaimCheck::Issuer => format!(
            "expected {:?}, got {}",
            policy.issuer,
            show(claims.get("iss"))
        ),
        ClaimCheck::Expiry => time("exp"),
        ClaimCheck::NotBefore => time("nbf"),
        ClaimCheck::IssuedAt => time("iat"),
        ClaimCheck::Audience => {
            let mut wanted: Vec<&String> = policy.audiences.iter().collect();
            wanted.sort();
            format!("one of {wanted:?}, got {}", show(claims.get("aud")))
        }
        ClaimCheck::TokenType => format!(
            "type {}, sub {}, common_name {}",
            show(claims.get("type")),
            show(claims.get("sub")),
            show(claims.get("common_name"))
        ),
    }
}

fn explain_rules(policy: &CompiledPolicy, claims: &Claims, kind: TokenKind, s: &mut Vec<Step>) {
    let rules = &policy.rules;
    if rules.allow.is_empty() && rules.deny.is_empty() {
        return step(s, true, "rules", "none: any valid token for the audience");
    }
    let email_note = match rules::email(rules, claims) {
        EmailClaim::Unusable(why) => format!(" ({why}: email matchers fail closed)"),
        EmailClaim::Absent | EmailClaim::Usable(_) => String::new(),
    };
    let describe = |m: &CompiledMatcher| {
        let note = match m {
            CompiledMatcher::Email(_) | CompiledMatcher::EmailDomain(_) => email_note.as_str(),
            _ => "",
        };
        format!("{m:?}{note}")
    };
    for m in &rules.deny {
        let hit = matcher_matches(m, Side::Deny, rules, claims, kind);
        let detail = format!(
            "{} {}",
            describe(m),
            if hit { "matches" } else { "does not match" }
        );
        if hit {
            step_failed(s, "rule deny", Reason::RuleDenied, detail);
        } else {
            step(s, true, "rule deny", detail);
        }
    }
    for m in &rules.allow {
        let hit = matcher_matches(m, Side::Allow, rules, claims, kind);
        step(
            s,
            hit,
            "rule allow",
            format!(
                "{} {}",
                describe(m),
                if hit { "matches" } else { "does not match" }
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::{
        AccessPolicySpec, IssuerSpec, Matcher, PolicyKey, RulesSpec, compile,
    };
    use crate::core::reason::Reason;
    use crate::devissuer::Signer;
    use crate::keys::{KeySet, parse_key_set};
    use axum::http::HeaderValue;
    use url::Url;

    const ISS: &str = "http://127.0.0.1:9";
    const NOW: u64 = 1_800_000_000;

    struct Fixed(KeySet);
    impl KeyLookup for Fixed {
        fn lookup(&self, _: &Url, kid: &str) -> KeyAnswer {
            self.0
                .get(kid)
                .cloned()
                .map(KeyAnswer::Found)
                .unwrap_or(KeyAnswer::Unknown)
        }
    }

    fn policy() -> CompiledPolicy {
        policy_with(None)
    }

    fn policy_with(rules: Option<RulesSpec>) -> CompiledPolicy {
        let spec = AccessPolicySpec {
            rules,
            issuer: IssuerSpec {
                team_domain: None,
                url: Some(ISS.into()),
                jwks_uri: Some(format!("{ISS}/certs")),
            },
            audiences: vec!["aud-1".into()],
            ..Default::default()
        };
        compile(PolicyKey::new("ns", "p"), None, &spec).unwrap()
    }

    /// Traces `payload` (signed by a fresh issuer key) and returns the steps and verdict.
    fn traced(payload: serde_json::Value) -> (Vec<Step>, Decision) {
        traced_under(&policy(), payload)
    }

    fn traced_under(policy: &CompiledPolicy, payload: serde_json::Value) -> (Vec<Step>, Decision) {
        let signer = Signer::new(ISS).unwrap();
        let keys = Fixed(parse_key_set(signer.certs_document().to_string().as_bytes()).unwrap());
        let kid = keys.0.ids()[0].clone();
        let token = signer
            .sign_raw(
                &format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#),
                &payload.to_string(),
                None,
            )
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "cf-access-jwt-assertion",
            HeaderValue::from_str(&token).unwrap(),
        );
        trace(policy, &h, &keys, NOW)
    }

    /// The trace agrees with the decision: an allow has no failing step, a deny has a first
    /// failing step carrying the decision's reason, and nothing after it claims success for
    /// a check the verifier never reached.
    fn assert_agrees(steps: &[Step], decision: &Decision) {
        let failed: Vec<&Step> = steps
            .iter()
            .filter(|s| !s.ok && s.what != "decision")
            .collect();
        match decision {
            Decision::Allow { .. } => assert!(failed.is_empty(), "{steps:#?}"),
            Decision::Deny(r) => {
                let first = failed.first().unwrap_or_else(|| panic!("{steps:#?}"));
                assert_eq!(first.reason, Some(*r), "{steps:#?}");
            }
        }
    }

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "iss": ISS, "aud": ["aud-1"], "exp": NOW + 3600, "iat": NOW, "type": "app",
            "email": "alice@example.com", "sub": "u1",
        })
    }

    fn with(patch: serde_json::Value) -> serde_json::Value {
        let mut v = valid();
        for (k, x) in patch.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    /// Tokens the old trace re-checked with its own, looser rules, printing `ok` for a
    /// claim the verifier refused (or skipping a check the verifier failed on).
    #[test]
    fn trace_and_decision_agree_where_the_old_explain_did_not() {
        for (payload, failing, reason) in [
            // Old: `aud` ok because one element matched; verifier: a non-string element is
            // malformed.
            (
                with(serde_json::json!({"aud": ["aud-1", 7]})),
                "aud",
                Reason::TokenMalformed,
            ),
            // Old: non-numeric nbf / iat were skipped without a line; verifier: malformed.
            (
                with(serde_json::json!({"nbf": "soon"})),
                "nbf",
                Reason::TokenMalformed,
            ),
            (
                with(serde_json::json!({"iat": true})),
                "iat",
                Reason::TokenMalformed,
            ),
            // Old: `exp` as a numeric string was "missing"; verifier: malformed (same
            // verdict, now with the verifier's reason on the line).
            (
                with(serde_json::json!({"exp": "9999999999"})),
                "exp",
                Reason::TokenMalformed,
            ),
            // Boundaries and the type check come from the verifier too.
            (
                with(serde_json::json!({"exp": NOW - 61})),
                "exp",
                Reason::TokenExpired,
            ),
            (
                with(serde_json::json!({"nbf": NOW + 61})),
                "nbf",
                Reason::TokenNotYetValid,
            ),
            (
                with(serde_json::json!({"aud": "aud-2"})),
                "aud",
                Reason::AudienceMismatch,
            ),
            (
                with(serde_json::json!({"type": "org"})),
                "token type",
                Reason::TokenTypeNotAllowed,
            ),
        ] {
            let (steps, decision) = traced(payload);
            assert_eq!(decision, Decision::Deny(reason), "{steps:#?}");
            assert_agrees(&steps, &decision);
            let lines: Vec<&Step> = steps.iter().filter(|s| s.what == failing).collect();
            assert!(
                lines.len() == 1 && !lines[0].ok && lines[0].reason == Some(reason),
                "{failing}: {steps:#?}"
            );
        }
        // Inside the leeway, and with `aud` as a plain string, both sides allow.
        for payload in [
            with(serde_json::json!({"exp": NOW - 59})),
            with(serde_json::json!({"aud": "aud-1"})),
        ] {
            let (steps, decision) = traced(payload);
            assert!(matches!(decision, Decision::Allow { .. }), "{steps:#?}");
            assert_agrees(&steps, &decision);
        }
    }

    #[test]
    fn trace_stops_where_verification_stops() {
        let (steps, decision) = traced(with(
            serde_json::json!({"iss": "https://evil.example", "exp": NOW - 3600}),
        ));
        assert_eq!(decision, Decision::Deny(Reason::IssuerMismatch));
        let names: Vec<&str> = steps.iter().map(|s| s.what.as_str()).collect();
        assert_eq!(
            names,
            ["token", "header", "key", "signature", "iss", "decision"]
        );
        assert_agrees(&steps, &decision);
    }

    #[test]
    fn trace_shows_unusable_email_failing_closed_as_the_decision_does() {
        let domain = |d: &str| Matcher {
            email_domain: Some(d.into()),
            ..Default::default()
        };
        let deny = policy_with(Some(RulesSpec {
            deny: vec![domain("kube.io")],
            ..Default::default()
        }));
        let allow = policy_with(Some(RulesSpec {
            allow: vec![domain("kube.io")],
            ..Default::default()
        }));
        for (p, payload, side) in [
            (
                &deny,
                with(serde_json::json!({"email": "eve@\u{212A}ube.io"})),
                "rule deny",
            ),
            (
                &allow,
                with(serde_json::json!({"email": "eve@\u{212A}ube.io"})),
                "rule allow",
            ),
            (
                &allow,
                with(serde_json::json!({"email": "eve@kube.io", "email_verified": false})),
                "rule allow",
            ),
        ] {
            let (steps, decision) = traced_under(p, payload);
            assert_eq!(decision, Decision::Deny(Reason::RuleDenied), "{steps:#?}");
            let line = steps.iter().find(|s| s.what == side).unwrap();
            assert!(
                !line.ok && line.detail.contains("fail closed"),
                "{steps:#?}"
            );
        }
        let (steps, decision) =
            traced_under(&allow, with(serde_json::json!({"email": "EVE@KUBE.IO"})));
        assert!(matches!(decision, Decision::Allow { .. }), "{steps:#?}");
        assert_agrees(&steps, &decision);
    }
}
