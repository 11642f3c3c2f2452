//! A step-by-step account of one decision, for `accessgate check`. Pure. The verdict is the
//! real [`decide`]'s, so the trace can explain a decision but never disagree with one.

use std::fmt::Write as _;

use axum::http::HeaderMap;
use serde_json::Value;

use crate::decision::{Decision, decide};
use crate::keys::{KeyAnswer, KeyLookup};
use crate::policy::{CompiledMatcher, CompiledPolicy};
use crate::rules::matcher_matches;
use crate::tokencache::TokenCache;
use crate::verify::{self, Claims, TokenKind};

/// One line of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub ok: bool,
    pub what: String,
    pub detail: String,
}

fn step(out: &mut Vec<Step>, ok: bool, what: &str, detail: impl Into<String>) {
    out.push(Step {
        ok,
        what: what.into(),
        detail: detail.into(),
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
    let decision = decide(policy, headers, keys, &TokenCache::disabled(), now);
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

fn explain_claims(policy: &CompiledPolicy, claims: &Claims, now: u64, s: &mut Vec<Step>) {
    let leeway = policy.leeway_secs;
    let iss_ok = claims.get("iss").and_then(Value::as_str) == Some(policy.issuer.as_str());
    step(
        s,
        iss_ok,
        "iss",
        format!(
            "expected {:?}, got {}",
            policy.issuer,
            show(claims.get("iss"))
        ),
    );
    let num = |k: &str| claims.get(k).and_then(Value::as_f64);
    match num("exp") {
        Some(exp) => {
            let left = exp - now as f64;
            step(
                s,
                left + leeway as f64 >= 0.0,
                "exp",
                format!("{exp} ({left:+.0} s from now, leeway {leeway} s)"),
            );
        }
        None => step(
            s,
            false,
            "exp",
            format!("missing or not a number: {}", show(claims.get("exp"))),
        ),
    }
    for k in ["nbf", "iat"] {
        if let Some(t) = num(k) {
            step(
                s,
                t <= (now + leeway) as f64,
                k,
                format!("{t} ({:+.0} s from now)", t - now as f64),
            );
        }
    }
    let mut wanted: Vec<&String> = policy.audiences.iter().collect();
    wanted.sort();
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => policy.audiences.contains(a),
        Some(Value::Array(l)) => l
            .iter()
            .filter_map(Value::as_str)
            .any(|a| policy.audiences.contains(a)),
        _ => false,
    };
    step(
        s,
        aud_ok,
        "aud",
        format!("one of {wanted:?}, got {}", show(claims.get("aud"))),
    );
    let kind_text = format!(
        "type {}, sub {}, common_name {}",
        show(claims.get("type")),
        show(claims.get("sub")),
        show(claims.get("common_name"))
    );
    match verify::check_claims(claims, policy, now) {
        Ok(kind) => {
            step(s, true, "token type", format!("{kind:?}: {kind_text}"));
            explain_rules(policy, claims, kind, s);
            let rendered = crate::headers::render(claims, &policy.claim_headers);
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
        Err(r) => step(s, false, "claims", format!("{r} ({kind_text})")),
    }
}

fn explain_rules(policy: &CompiledPolicy, claims: &Claims, kind: TokenKind, s: &mut Vec<Step>) {
    let rules = &policy.rules;
    if rules.allow.is_empty() && rules.deny.is_empty() {
        return step(s, true, "rules", "none: any valid token for the audience");
    }
    let describe = |m: &CompiledMatcher| format!("{m:?}");
    for m in &rules.deny {
        let hit = matcher_matches(m, rules, claims, kind);
        step(
            s,
            !hit,
            "rule deny",
            format!(
                "{} {}",
                describe(m),
                if hit {
                    "matches: denied"
                } else {
                    "does not match"
                }
            ),
        );
    }
    for m in &rules.allow {
        let hit = matcher_matches(m, rules, claims, kind);
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
