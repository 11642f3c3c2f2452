//! A step-by-step account of one decision, for `accessgate check`. Pure. [`Explainer`] is
//! an [`Observer`] of the decision's own steps (the ones the server takes, reported as
//! they run): it adds only what each step looked at, so the trace can explain a decision
//! but never disagree with one.

use std::fmt::Write as _;

use axum::http::HeaderMap;
use serde_json::Value;
use url::Url;

use crate::core::decision::{
    Decision, Enrichment, Forgetful, Observer, Remembered, decide_observed,
};
use crate::core::headers::Rendered;
use crate::core::jwks::{KeyAnswer, KeyLookup};
use crate::core::policy::{CompiledMatcher, CompiledPolicy};
use crate::core::reason::Reason;
use crate::core::rules::{EmailClaim, MatcherSeen, Side};
use crate::core::verify::{ClaimCheck, Claims, TokenHeader};

/// One line of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub ok: bool,
    pub what: String,
    pub detail: String,
    /// For a failed claim check or deny rule: the reason the verifier gave.
    pub reason: Option<Reason>,
}

/// Collects the trace of one decision from the steps it reports.
#[derive(Debug, Default)]
pub struct Explainer {
    steps: Vec<Step>,
}

impl Explainer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The trace, ending with the verdict's line.
    pub fn finish(mut self, outcome: Result<(), Reason>) -> Vec<Step> {
        let verdict = match outcome {
            Ok(()) => "ALLOW (200)".to_owned(),
            Err(r) => format!("DENY ({} {})", r.status(), r.code()),
        };
        self.step(outcome.is_ok(), "decision", verdict);
        self.steps
    }

    fn step(&mut self, ok: bool, what: &str, detail: impl Into<String>) {
        self.steps.push(Step {
            ok,
            what: what.into(),
            detail: detail.into(),
            reason: None,
        });
    }

    fn failed(&mut self, what: &str, reason: Reason, detail: impl Into<String>) {
        self.steps.push(Step {
            ok: false,
            what: what.into(),
            detail: format!("{reason}: {}", detail.into()),
            reason: Some(reason),
        });
    }

    fn outcome(&mut self, what: &str, result: Result<(), Reason>, detail: impl Into<String>) {
        match result {
            Ok(()) => self.step(true, what, detail),
            Err(r) => self.failed(what, r, detail),
        }
    }
}

/// Traces the decision for a request carrying `headers` under `policy` (no refetch, no
/// enrichment: the pure decision alone).
pub fn trace(
    policy: &CompiledPolicy,
    headers: &HeaderMap,
    keys: &impl KeyLookup,
    now: u64,
) -> (Vec<Step>, Decision) {
    let mut explainer = Explainer::new();
    let decision = decide_observed(policy, headers, keys, &Forgetful, now, &mut explainer);
    (explainer.finish(decision.outcome()), decision)
}

fn show(v: Option<&Value>) -> String {
    v.map(Value::to_string).unwrap_or_else(|| "(absent)".into())
}

fn sources(policy: &CompiledPolicy) -> String {
    let names: Vec<String> = policy
        .token_sources
        .iter()
        .map(|t| format!("{t:?}").to_lowercase())
        .collect();
    names.join(", ")
}

impl Observer for Explainer {
    fn token(&mut self, policy: &CompiledPolicy, result: Result<&str, Reason>) {
        let sources = sources(policy);
        match result {
            Ok(t) => self.step(
                true,
                "token",
                format!("found ({} bytes) in sources [{sources}]", t.len()),
            ),
            Err(r) => self.failed("token", r, format!("none usable in sources [{sources}]")),
        }
    }

    fn remembered(&mut self, policy: &CompiledPolicy, hit: &Remembered) {
        self.step(
            true,
            "signature",
            format!(
                "verified before with kid {} ({:?}), still published at {}",
                hit.kid, hit.alg, policy.jwks_uri
            ),
        );
    }

    fn header(&mut self, policy: &CompiledPolicy, result: &Result<TokenHeader, Reason>) {
        match result {
            Ok(h) => self.step(
                true,
                "header",
                format!(
                    "alg {:?} (allowed {:?}), kid {}",
                    h.alg, policy.algorithms, h.kid
                ),
            ),
            Err(r) => self.failed(
                "header",
                *r,
                format!("allowed algorithms {:?}", policy.algorithms),
            ),
        }
    }

    fn key(&mut self, policy: &CompiledPolicy, kid: &str, answer: &KeyAnswer) {
        let uri = &policy.jwks_uri;
        match answer {
            KeyAnswer::Found(k) => self.step(true, "key", format!("kid {} found in {uri}", k.kid)),
            KeyAnswer::Unknown => self.failed(
                "key",
                Reason::KeyUnknown,
                format!("kid {kid} is not published at {uri}"),
            ),
            KeyAnswer::Unavailable => self.failed(
                "key",
                Reason::KeysUnavailable,
                format!("no keys could be loaded from {uri}"),
            ),
        }
    }

    fn signature(&mut self, result: Result<(), Reason>) {
        match result {
            Ok(()) => self.step(true, "signature", "valid"),
            Err(r) => {
                let detail = match r {
                    Reason::SignatureInvalid => "does not verify with the published key",
                    Reason::AlgorithmNotAllowed => "the published key is for another algorithm",
                    _ => "the signature or the payload does not decode",
                };
                self.failed("signature", r, detail)
            }
        }
    }

    fn claim(
        &mut self,
        policy: &CompiledPolicy,
        claims: &Claims,
        check: ClaimCheck,
        result: Result<(), Reason>,
        now: u64,
    ) {
        let detail = claim_detail(check, policy, claims, now);
        self.outcome(check.name(), result, detail);
    }

    fn refetched(&mut self, jwks_uri: &Url, fetched: bool) {
        let detail = if fetched {
            format!("fetched again from {jwks_uri}; verifying again")
        } else {
            format!("not fetched again from {jwks_uri} (just fetched, or rate-limited)")
        };
        self.step(fetched, "refetch", detail);
    }

    fn enrichment(
        &mut self,
        policy: &CompiledPolicy,
        enrichment: &Enrichment,
        failure: Option<&str>,
    ) {
        let Some(cfg) = &policy.identity else {
            return;
        };
        match enrichment {
            Enrichment::NotConfigured => {}
            Enrichment::Fetched(id) => self.step(
                true,
                "identity",
                format!(
                    "fetched from {}: groups {}, email {}",
                    cfg.url,
                    show(id.get("groups")),
                    show(id.get("email"))
                ),
            ),
            Enrichment::Failed if cfg.deny_on_error => self.failed(
                "identity",
                Reason::IdentityUnavailable,
                format!(
                    "{} from {} (onError: deny)",
                    failure.unwrap_or("failed"),
                    cfg.url
                ),
            ),
            Enrichment::Failed => self.step(
                false,
                "identity",
                format!(
                    "{} from {}; onError: continueWithoutIdentity, decided on the token alone",
                    failure.unwrap_or("failed"),
                    cfg.url
                ),
            ),
            Enrichment::Skipped => self.step(
                true,
                "identity",
                format!(
                    "not fetched from {} (--no-identity): decided on the token alone, which the server never does",
                    cfg.url
                ),
            ),
        }
    }

    fn matcher(&mut self, _policy: &CompiledPolicy, seen: &MatcherSeen<'_>) {
        let note = match (seen.matcher, seen.email) {
            (
                CompiledMatcher::Email(_) | CompiledMatcher::EmailDomain(_),
                EmailClaim::Unusable(why),
            ) => format!(" ({why}: email matchers fail closed)"),
            _ => String::new(),
        };
        let verb = if seen.hit {
            "matches"
        } else {
            "does not match"
        };
        let detail = format!("{:?}{note} {verb}", seen.matcher);
        match (seen.side, seen.hit) {
            (Side::Deny, true) => self.failed("rule deny", Reason::RuleDenied, detail),
            (Side::Deny, false) => self.step(true, "rule deny", detail),
            (Side::Allow, hit) => self.step(hit, "rule allow", detail),
        }
    }

    fn rules(&mut self, policy: &CompiledPolicy, _: &Claims, result: Result<(), Reason>) {
        let rules = &policy.rules;
        if rules.allow.is_empty() && rules.deny.is_empty() {
            return self.step(true, "rules", "none: any valid token for the audience");
        }
        if let Err(r) = result
            && !self.steps.iter().any(|s| s.reason == Some(r))
        {
            self.failed("rules", r, "no allow matcher matches");
        }
    }

    fn headers(&mut self, rendered: &Rendered) {
        let mut text = String::new();
        for (k, v) in &rendered.set {
            let _ = write!(text, "{k}: {}; ", String::from_utf8_lossy(v.as_bytes()));
        }
        for (k, why) in &rendered.dropped {
            let _ = write!(text, "{k} dropped ({}); ", why.code());
        }
        let text = if text.is_empty() {
            "none".into()
        } else {
            text.trim_end_matches("; ").to_owned()
        };
        self.step(true, "headers", text);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Matcher, RulesSpec};
    use crate::core::fixtures::{FixedKeys, ISS, Signer, keys_of, policy, policy_with};
    use crate::core::reason::Reason;
    use axum::http::HeaderValue;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_remembered_verification_and_each_enrichment_are_a_line_of_their_own() {
        use crate::api::{AccessPolicySpec, IdentityOnError, IdentitySpec};
        use crate::core::policy::{PolicyKey, compile};
        let mut e = Explainer::new();
        e.remembered(
            &policy(),
            &Remembered {
                kid: "k1".into(),
                alg: jsonwebtoken::Algorithm::RS256,
                key_fingerprint: [0; 32],
                claims: std::sync::Arc::new(serde_json::from_str("{}").unwrap()),
            },
        );
        let steps = e.finish(Ok(()));
        assert_eq!((steps[0].ok, steps[0].what.as_str()), (true, "signature"));
        assert!(
            steps[0].detail.contains("verified before with kid k1"),
            "{}",
            steps[0].detail
        );

        let with_identity = |on_error| {
            compile(
                PolicyKey::new("ns", "p"),
                None,
                &AccessPolicySpec {
                    identity: Some(IdentitySpec {
                        on_error,
                        ..Default::default()
                    }),
                    ..crate::core::fixtures::spec()
                },
            )
            .unwrap()
        };
        let deny = with_identity(None);
        let lenient = with_identity(Some(IdentityOnError::ContinueWithoutIdentity));
        let id = serde_json::json!({"groups": ["sre"], "email": "a@b.c"});
        let line = |p: &CompiledPolicy, en: Enrichment| {
            let mut e = Explainer::new();
            e.enrichment(p, &en, Some("timeout"));
            let steps = e.finish(Ok(()));
            steps
                .into_iter()
                .find(|s| s.what == "identity")
                .map(|s| (s.ok, s.detail))
        };
        let (ok, detail) = line(&deny, Enrichment::Fetched(&id)).unwrap();
        assert!(
            ok && detail.contains("groups") && detail.contains("sre"),
            "{detail}"
        );
        let (ok, detail) = line(&deny, Enrichment::Failed).unwrap();
        assert!(
            !ok && detail.contains("timeout") && detail.contains("onError: deny"),
            "{detail}"
        );
        let (ok, detail) = line(&lenient, Enrichment::Failed).unwrap();
        assert!(
            !ok && detail.contains("continueWithoutIdentity"),
            "{detail}"
        );
        let (ok, detail) = line(&deny, Enrichment::Skipped).unwrap();
        assert!(ok && detail.contains("--no-identity"), "{detail}");
        assert_eq!(
            line(&policy(), Enrichment::Fetched(&id)),
            None,
            "no identity section"
        );
    }

    /// A failed signature says why, each reason in its own words.
    #[test]
    fn the_signature_line_says_why_it_failed() {
        let line = |result| {
            let mut e = Explainer::new();
            e.signature(result);
            let steps = e.finish(Ok(()));
            (steps[0].ok, steps[0].detail.clone())
        };
        assert_eq!(line(Ok(())), (true, "valid".into()));
        for (reason, why) in [
            (
                Reason::SignatureInvalid,
                "does not verify with the published key",
            ),
            (
                Reason::AlgorithmNotAllowed,
                "the published key is for another algorithm",
            ),
            (
                Reason::TokenMalformed,
                "the signature or the payload does not decode",
            ),
        ] {
            let (ok, detail) = line(Err(reason));
            assert!(!ok && detail.contains(why), "{reason:?}: {detail}");
        }
    }

    /// The headers line lists what is set and what is dropped and why, or says none.
    #[test]
    fn the_headers_line_names_each_header_set_or_dropped() {
        use crate::core::headers::DropReason;
        use axum::http::{HeaderName, HeaderValue};
        let line = |rendered: &Rendered| {
            let mut e = Explainer::new();
            e.headers(rendered);
            let steps = e.finish(Ok(()));
            let step = steps.iter().find(|s| s.what == "headers").unwrap();
            (step.ok, step.detail.clone())
        };
        let rendered = Rendered {
            set: vec![(
                HeaderName::from_static("x-auth-request-email"),
                HeaderValue::from_static("a@b.c"),
            )],
            dropped: vec![(
                HeaderName::from_static("x-auth-request-groups"),
                DropReason::SeparatorInItem,
            )],
            absent: vec![],
        };
        assert_eq!(
            line(&rendered),
            (
                true,
                "x-auth-request-email: a@b.c; x-auth-request-groups dropped (separator_in_item)"
                    .into()
            )
        );
        assert_eq!(line(&Rendered::default()), (true, "none".into()));
    }

    /// Traces `payload` (signed by a fresh issuer key) and returns the steps and verdict.
    fn traced(payload: serde_json::Value) -> (Vec<Step>, Decision) {
        traced_under(&policy(), payload)
    }

    fn traced_under(policy: &CompiledPolicy, payload: serde_json::Value) -> (Vec<Step>, Decision) {
        let signer = Signer::new(ISS).unwrap();
        let keys = FixedKeys(Some(keys_of(&signer.certs_document())));
        let kid = keys.0.as_ref().unwrap().ids()[0].clone();
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

    /// The detail of each line, as `accessgate check` prints it: what the step looked at.
    fn detail<'s>(steps: &'s [Step], what: &str) -> &'s str {
        let step = steps.iter().find(|s| s.what == what);
        &step
            .unwrap_or_else(|| panic!("no {what} line: {steps:#?}"))
            .detail
    }

    #[test]
    fn each_line_says_what_its_check_looked_at() {
        let (steps, decision) = traced(with(serde_json::json!({"nbf": NOW + 30})));
        assert!(matches!(decision, Decision::Allow { .. }), "{steps:#?}");
        assert!(
            detail(&steps, "token").ends_with("in sources [header, cookie]"),
            "{steps:#?}"
        );
        assert_eq!(
            detail(&steps, "iss"),
            format!("expected {ISS:?}, got {:?}", ISS)
        );
        assert_eq!(
            detail(&steps, "exp"),
            format!("{} (+3600 s from now, leeway 60 s)", NOW + 3600)
        );
        assert_eq!(
            detail(&steps, "nbf"),
            format!("{} (+30 s from now, leeway 60 s)", NOW + 30)
        );
        assert_eq!(
            detail(&steps, "iat"),
            format!("{NOW} (+0 s from now, leeway 60 s)")
        );
        assert_eq!(detail(&steps, "aud"), r#"one of ["aud-1"], got ["aud-1"]"#);
        assert_eq!(
            detail(&steps, "token type"),
            r#"type "app", sub "u1", common_name (absent)"#
        );
    }

    #[test]
    fn no_matching_allow_rule_is_the_failing_line_of_a_rules_deny() {
        let allow = policy_with(Some(RulesSpec {
            allow: vec![Matcher {
                email_domain: Some("kube.io".into()),
                ..Default::default()
            }],
            ..Default::default()
        }));
        let (steps, decision) = traced_under(&allow, valid());
        assert_eq!(decision, Decision::Deny(Reason::RuleDenied));
        // The allow line shows the matcher missing; the verdict's reason needs a line too.
        let failing = steps.iter().find(|s| s.reason.is_some());
        let failing = failing.unwrap_or_else(|| panic!("no line carries the reason: {steps:#?}"));
        assert_eq!(
            (failing.what.as_str(), failing.detail.as_str()),
            ("rules", "rule_denied: no allow matcher matches")
        );
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
