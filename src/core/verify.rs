//! Token extraction and JWT verification. Pure: keys come in as arguments, time as `now`.
//!
//! jsonwebtoken does the JOSE parsing and the signature; the claim checks are ours, so that
//! each failure has its exact reason code and the clock can be injected in tests.

use std::fmt;

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::api::TokenSource;
use crate::core::jwks::{MAX_KID_LEN, VerifyingKey};
use crate::core::policy::{CompiledPolicy, IssuerKind};
use crate::core::reason::Reason;

/// Cloudflare's header carrying the application token.
pub const ASSERTION_HEADER: &str = "cf-access-jwt-assertion";
/// Cloudflare's cookie carrying the application token.
pub const AUTH_COOKIE: &str = "CF_Authorization";
/// Longest token accepted. Access tokens with custom claims stay well under 8 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The first token found in the configured sources, in order. A source that is present
/// but ambiguous (two different values) is malformed rather than silently resolved.
pub fn extract_token<'h>(
    headers: &'h HeaderMap,
    sources: &[TokenSource],
) -> Result<&'h str, Reason> {
    for source in sources {
        let found = match source {
            TokenSource::Header => from_assertion_header(headers)?,
            TokenSource::Cookie => from_cookie(headers)?,
            TokenSource::Bearer => from_bearer(headers)?,
        };
        if let Some(token) = found {
            if token.len() > MAX_TOKEN_BYTES {
                return Err(Reason::TokenTooLarge);
            }
            return Ok(token);
        }
    }
    Err(Reason::TokenMissing)
}

/// At most one distinct non-empty value.
fn single<'h>(mut values: impl Iterator<Item = &'h str>) -> Result<Option<&'h str>, Reason> {
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.any(|v| v != first) {
        return Err(Reason::TokenMalformed);
    }
    Ok(Some(first))
}

fn from_assertion_header(headers: &HeaderMap) -> Result<Option<&str>, Reason> {
    let mut values = Vec::new();
    for v in headers.get_all(ASSERTION_HEADER) {
        let s = v.to_str().map_err(|_| Reason::TokenMalformed)?.trim();
        if !s.is_empty() {
            values.push(s);
        }
    }
    single(values.into_iter())
}

fn from_cookie(headers: &HeaderMap) -> Result<Option<&str>, Reason> {
    let mut values = Vec::new();
    for v in headers.get_all(COOKIE) {
        // Pair by pair: another cookie's raw UTF-8 (or worse) is not ours to judge and must not
        // hide ours, so the header is not required to be ASCII as a whole.
        for pair in v.as_bytes().split(|b| *b == b';') {
            let Ok(pair) = std::str::from_utf8(pair) else {
                continue;
            };
            let Ok(cookie) = cookie::Cookie::parse(pair.trim()) else {
                continue;
            };
            if cookie.name() == AUTH_COOKIE
                && let Some(value) = cookie.value_raw()
            {
                let value = value.trim_matches('"');
                if !value.is_empty() {
                    values.push(value);
                }
            }
        }
    }
    single(values.into_iter())
}

fn from_bearer(headers: &HeaderMap) -> Result<Option<&str>, Reason> {
    let mut values = Vec::new();
    for v in headers.get_all(AUTHORIZATION) {
        let s = v.to_str().map_err(|_| Reason::TokenMalformed)?;
        let Some((scheme, rest)) = s.split_once(' ') else {
            continue;
        };
        if scheme.eq_ignore_ascii_case("bearer") {
            let token = rest.trim();
            if !token.is_empty() {
                values.push(token);
            }
        }
    }
    single(values.into_iter())
}

/// The parts of the JOSE header needed to pick a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    pub alg: Algorithm,
    pub kid: String,
}

/// Reads `alg` and `kid` without trusting anything: structure, algorithm allow-list, kid
/// shape. Header fields that point at keys (`jku`, `x5u`, `jwk`, `x5c`) are never used.
/// The header is one JSON object without repeated keys; `typ`/`cty` are text if present;
/// `crit` may name only `b64`, and `b64` may only be `true` (RFC 7515 §4.1.11, RFC 7797:
/// no extension that changes what is signed is understood, so none is accepted).
pub fn read_header(token: &str, allowed: &[Algorithm]) -> Result<TokenHeader, Reason> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::TokenMalformed);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(Reason::TokenMalformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Reason::TokenMalformed)?;
    let Claims(mut raw) = serde_json::from_slice(&bytes).map_err(|_| Reason::TokenMalformed)?;
    let text_or_absent = |v: Option<&Value>| matches!(v, None | Some(Value::String(_)));
    // `b64` may only say what is true anyway (an encoded payload); `crit` may only name it.
    let b64_ok = matches!(raw.get("b64"), None | Some(Value::Bool(true)));
    let crit_ok = match raw.get("crit") {
        None => true,
        Some(c) => *c == serde_json::json!(["b64"]) && raw.get("b64") == Some(&Value::Bool(true)),
    };
    if !b64_ok || !crit_ok || !text_or_absent(raw.get("typ")) || !text_or_absent(raw.get("cty")) {
        return Err(Reason::TokenMalformed);
    }
    let Some(Value::String(alg)) = raw.remove("alg") else {
        return Err(Reason::TokenMalformed);
    };
    // Parsing "none" or an unknown name fails, and HMAC is never in a policy's list.
    let alg: Algorithm = alg.parse().map_err(|_| Reason::AlgorithmNotAllowed)?;
    if !allowed.contains(&alg) {
        return Err(Reason::AlgorithmNotAllowed);
    }
    if signature.is_empty() {
        return Err(Reason::SignatureInvalid);
    }
    let kid = match raw.remove("kid") {
        Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= MAX_KID_LEN => kid,
        Some(Value::String(_)) | None | Some(Value::Null) => return Err(Reason::KeyUnknown),
        Some(_) => return Err(Reason::TokenMalformed),
    };
    Ok(TokenHeader { alg, kid })
}

/// Claims of a verified token. Duplicate keys are refused at every depth (top-level claims,
/// members of nested objects, objects inside arrays): two parsers could disagree on which
/// value counts, and the upstream or the IdP may be one of them. One parse, no second pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims(pub Map<String, Value>);

impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Claims;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of claims")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Claims, A::Error> {
                unique_map(map).map(Claims)
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON value, built like `serde_json::Value` but refusing a repeated key in any object.
struct UniqueValue(Value);

impl<'de> Deserialize<'de> for UniqueValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(UniqueValue)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity; `null` as serde_json's own Value does.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(UniqueValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        unique_map(map).map(Value::Object)
    }
}

/// An object's members; a key seen twice (after JSON unescaping) is an error.
fn unique_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Map<String, Value>, A::Error> {
    let mut out = Map::new();
    while let Some(k) = map.next_key::<String>()? {
        if out.contains_key(&k) {
            return Err(de::Error::custom(format!("duplicate key {k:?}")));
        }
        let UniqueValue(v) = map.next_value()?;
        out.insert(k, v);
    }
    Ok(out)
}

impl Claims {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// Rough heap size, for cache accounting.
    pub fn approx_bytes(&self) -> usize {
        fn size(v: &Value) -> usize {
            match v {
                Value::String(s) => 24 + s.len(),
                Value::Array(a) => 24 + a.iter().map(size).sum::<usize>(),
                Value::Object(o) => {
                    48 + o.iter().map(|(k, v)| 24 + k.len() + size(v)).sum::<usize>()
                }
                _ => 16,
            }
        }
        self.0.iter().map(|(k, v)| 48 + k.len() + size(v)).sum()
    }

    /// A dotted path into nested objects.
    pub fn path(&self, path: &[String]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut v = self.0.get(first)?;
        for seg in rest {
            v = v.as_object()?.get(seg)?;
        }
        Some(v)
    }
}

/// Verifies the token's signature with `key` (pre-parsed for `header.alg`, see
/// [`VerifyingKey::parsed_for`]) and, only then, parses its payload: once, refusing
/// duplicate keys at every depth.
pub fn verify_signature(
    token: &str,
    header: &TokenHeader,
    key: &VerifyingKey,
) -> Result<Claims, Reason> {
    if key.alg.is_some_and(|a| a != header.alg) || key.key.family() != header.alg.family() {
        return Err(Reason::AlgorithmNotAllowed);
    }
    let (signing_input, signature) = token.rsplit_once('.').ok_or(Reason::TokenMalformed)?;
    let (_, payload) = signing_input
        .split_once('.')
        .ok_or(Reason::TokenMalformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| Reason::TokenMalformed)?;
    let parsed = key.parsed_for(header.alg).ok_or(Reason::SignatureInvalid)?;
    parsed
        .verify_sig(signing_input.as_bytes(), &signature)
        .map_err(|_| Reason::SignatureInvalid)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| Reason::TokenMalformed)?;
    serde_json::from_slice(&payload).map_err(|_| Reason::TokenMalformed)
}

/// What kind of principal a verified token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A person's session.
    App,
    /// A service token (`common_name` set, `sub` empty).
    Service,
}

fn number(v: Option<&Value>) -> Result<Option<f64>, Reason> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or(Reason::TokenMalformed),
        Some(_) => Err(Reason::TokenMalformed),
    }
}

/// One of the policy's claim checks, in the order [`check_claims`] runs them. `accessgate
/// check` shows these steps as the verifier took them (see [`check_claims_observed`]), so
/// no check exists twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimCheck {
    Issuer,
    Expiry,
    NotBefore,
    IssuedAt,
    Audience,
    TokenType,
}

impl ClaimCheck {
    /// The claim (or, for the type, the aspect) the check looks at.
    pub fn name(self) -> &'static str {
        match self {
            ClaimCheck::Issuer => "iss",
            ClaimCheck::Expiry => "exp",
            ClaimCheck::NotBefore => "nbf",
            ClaimCheck::IssuedAt => "iat",
            ClaimCheck::Audience => "aud",
            ClaimCheck::TokenType => "token type",
        }
    }
}

/// `iss` equals the policy's issuer exactly.
pub fn check_issuer(claims: &Claims, policy: &CompiledPolicy) -> Result<(), Reason> {
    match claims.get("iss") {
        Some(Value::String(iss)) if *iss == policy.issuer => Ok(()),
        _ => Err(Reason::IssuerMismatch),
    }
}

/// `exp` is required, a finite number, and not past `now` by more than the leeway.
pub fn check_expiry(claims: &Claims, policy: &CompiledPolicy, now: u64) -> Result<(), Reason> {
    let exp = number(claims.get("exp"))?.ok_or(Reason::TokenMalformed)?;
    if now as f64 > exp + policy.leeway_secs as f64 {
        return Err(Reason::TokenExpired);
    }
    Ok(())
}

/// A time claim that may be absent but must not lie ahead of `now` beyond the leeway.
fn not_in_future(
    claims: &Claims,
    name: &str,
    policy: &CompiledPolicy,
    now: u64,
) -> Result<(), Reason> {
    match number(claims.get(name))? {
        Some(t) if now as f64 + (policy.leeway_secs as f64) < t => Err(Reason::TokenNotYetValid),
        _ => Ok(()),
    }
}

/// `nbf`, when present, is a number not later than `now` plus the leeway.
pub fn check_not_before(claims: &Claims, policy: &CompiledPolicy, now: u64) -> Result<(), Reason> {
    not_in_future(claims, "nbf", policy, now)
}

/// `iat`, when present, is a number not later than `now` plus the leeway.
pub fn check_issued_at(claims: &Claims, policy: &CompiledPolicy, now: u64) -> Result<(), Reason> {
    not_in_future(claims, "iat", policy, now)
}

/// `aud` (a string, or an array of strings) holds one of the policy's audiences. A
/// non-string element anywhere in the array is malformed, even next to a matching one.
pub fn check_audience(claims: &Claims, policy: &CompiledPolicy) -> Result<(), Reason> {
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => policy.audiences.contains(a),
        Some(Value::Array(list)) => {
            let mut any = false;
            for a in list {
                let Value::String(a) = a else {
                    return Err(Reason::TokenMalformed);
                };
                any |= policy.audiences.contains(a);
            }
            any
        }
        None => false,
        Some(_) => return Err(Reason::TokenMalformed),
    };
    if audience_ok {
        Ok(())
    } else {
        Err(Reason::AudienceMismatch)
    }
}

/// The token's kind, if the policy admits it.
pub fn check_token_type(claims: &Claims, policy: &CompiledPolicy) -> Result<TokenKind, Reason> {
    let kind = token_kind(claims, policy.issuer_kind)?;
    let admitted = match kind {
        TokenKind::App => policy.admit_app,
        TokenKind::Service => policy.admit_service,
    };
    if admitted {
        Ok(kind)
    } else {
        Err(Reason::TokenTypeNotAllowed)
    }
}

/// The policy's claim checks, in an order that reports authentication failures (401)
/// before authorisation ones (403).
pub fn check_claims(
    claims: &Claims,
    policy: &CompiledPolicy,
    now: u64,
) -> Result<TokenKind, Reason> {
    check_claims_observed(claims, policy, now, |_, _| {})
}

/// [`check_claims`], telling `seen` the outcome of each check as it runs; it stops at the
/// first failure, exactly as the verifier does (it is the verifier).
pub fn check_claims_observed(
    claims: &Claims,
    policy: &CompiledPolicy,
    now: u64,
    mut seen: impl FnMut(ClaimCheck, Result<(), Reason>),
) -> Result<TokenKind, Reason> {
    let mut step = |check: ClaimCheck, outcome: Result<(), Reason>| {
        seen(check, outcome);
        outcome
    };
    step(ClaimCheck::Issuer, check_issuer(claims, policy))?;
    step(ClaimCheck::Expiry, check_expiry(claims, policy, now))?;
    step(ClaimCheck::NotBefore, check_not_before(claims, policy, now))?;
    step(ClaimCheck::IssuedAt, check_issued_at(claims, policy, now))?;
    step(ClaimCheck::Audience, check_audience(claims, policy))?;
    let kind = check_token_type(claims, policy);
    step(ClaimCheck::TokenType, kind.map(|_| ()))?;
    kind
}

/// Cloudflare marks both application and service tokens `type: app` and tells a service
/// token by its `common_name` and empty `sub`; `org` (the team-domain session) and any
/// other type are refused. Generic issuers may omit `type`.
fn token_kind(claims: &Claims, issuer: IssuerKind) -> Result<TokenKind, Reason> {
    match claims.get("type") {
        Some(Value::String(t)) if t == "app" => {}
        None if issuer == IssuerKind::Generic => {}
        Some(Value::String(_)) | None => return Err(Reason::TokenTypeNotAllowed),
        Some(_) => return Err(Reason::TokenMalformed),
    }
    let common_name =
        matches!(claims.get("common_name"), Some(Value::String(cn)) if !cn.is_empty());
    let no_subject = match claims.get("sub") {
        None => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => return Err(Reason::TokenMalformed),
    };
    Ok(if common_name && no_subject {
        TokenKind::Service
    } else {
        TokenKind::App
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::sync::Arc;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const DEFAULT: [TokenSource; 2] = [TokenSource::Header, TokenSource::Cookie];

    #[test]
    fn claims_that_are_not_an_object_say_what_was_expected() {
        let e = serde_json::from_str::<Claims>("[1]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a JSON object of claims"), "{e}");
    }

    #[test]
    fn only_a_generic_issuer_may_leave_the_token_type_out() {
        let untyped: Claims = serde_json::from_value(serde_json::json!({"sub": "u"})).unwrap();
        assert_eq!(
            token_kind(&untyped, IssuerKind::CloudflareAccess),
            Err(Reason::TokenTypeNotAllowed)
        );
        assert_eq!(
            token_kind(&untyped, IssuerKind::Generic),
            Ok(TokenKind::App)
        );
    }

    /// A service token is one with a `common_name` and no subject; anything else is a
    /// person's (app) token.
    #[test]
    fn a_service_token_has_a_common_name_and_no_subject() {
        for (claims, want) in [
            (
                serde_json::json!({"sub": "", "common_name": "ci.access"}),
                TokenKind::Service,
            ),
            (
                serde_json::json!({"common_name": "ci.access"}),
                TokenKind::Service,
            ),
            (
                serde_json::json!({"sub": "u", "common_name": "ci.access"}),
                TokenKind::App,
            ),
            (serde_json::json!({"sub": "u"}), TokenKind::App),
            (serde_json::json!({"sub": ""}), TokenKind::App),
            (serde_json::json!({}), TokenKind::App),
        ] {
            let mut claims = claims;
            claims["type"] = "app".into();
            let parsed: Claims = serde_json::from_value(claims.clone()).unwrap();
            assert_eq!(
                token_kind(&parsed, IssuerKind::CloudflareAccess),
                Ok(want),
                "{claims}"
            );
        }
    }

    #[test]
    fn header_wins_over_cookie() {
        let h = headers(&[
            ("cf-access-jwt-assertion", "a.b.c"),
            ("cookie", "CF_Authorization=x.y.z"),
        ]);
        assert_eq!(extract_token(&h, &DEFAULT), Ok("a.b.c"));
    }

    #[test]
    fn cookie_is_found_among_others() {
        let h = headers(&[("cookie", "theme=dark; CF_Authorization=x.y.z; other=1")]);
        assert_eq!(extract_token(&h, &DEFAULT), Ok("x.y.z"));
        let h = headers(&[(
            "cookie",
            "CF_Authorization_old=nope; CF_AuthorizationX=nope",
        )]);
        assert_eq!(extract_token(&h, &DEFAULT), Err(Reason::TokenMissing));
    }

    #[test]
    fn other_cookies_with_raw_utf8_do_not_hide_ours() {
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_bytes("name=José; CF_Authorization=a.b.c".as_bytes()).unwrap(),
        );
        assert_eq!(extract_token(&h, &DEFAULT), Ok("a.b.c"));
        h.insert(
            "cookie",
            HeaderValue::from_bytes(b"x=\xff\xfe; CF_Authorization=a.b.c").unwrap(),
        );
        assert_eq!(extract_token(&h, &DEFAULT), Ok("a.b.c"));
    }

    #[test]
    fn conflicting_cookies_are_malformed() {
        let h = headers(&[
            ("cookie", "CF_Authorization=a.b.c"),
            ("cookie", "CF_Authorization=d.e.f"),
        ]);
        assert_eq!(extract_token(&h, &DEFAULT), Err(Reason::TokenMalformed));
        let h = headers(&[("cookie", "CF_Authorization=a.b.c; CF_Authorization=a.b.c")]);
        assert_eq!(extract_token(&h, &DEFAULT), Ok("a.b.c"));
    }

    #[test]
    fn bearer_only_when_opted_in() {
        let h = headers(&[("authorization", "Bearer a.b.c")]);
        assert_eq!(extract_token(&h, &DEFAULT), Err(Reason::TokenMissing));
        assert_eq!(extract_token(&h, &[TokenSource::Bearer]), Ok("a.b.c"));
        let h = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(
            extract_token(&h, &[TokenSource::Bearer]),
            Err(Reason::TokenMissing)
        );
    }

    #[test]
    fn oversized_token_is_refused() {
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        let h = headers(&[("cf-access-jwt-assertion", &big)]);
        assert_eq!(extract_token(&h, &DEFAULT), Err(Reason::TokenTooLarge));
    }

    #[test]
    fn a_token_of_exactly_the_size_limit_is_read() {
        // 16 KiB: twice what an Access token with many custom claims reaches.
        assert_eq!(MAX_TOKEN_BYTES, 16 * 1024);
        let most = "a".repeat(MAX_TOKEN_BYTES);
        let h = headers(&[("cf-access-jwt-assertion", &most)]);
        assert_eq!(extract_token(&h, &DEFAULT), Ok(most.as_str()));
        let cookie = format!("{AUTH_COOKIE}={most}a");
        let h = headers(&[("cookie", &cookie)]);
        assert_eq!(
            extract_token(&h, &DEFAULT),
            Err(Reason::TokenTooLarge),
            "the limit holds for every source"
        );
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn header_checks() {
        let rs = [Algorithm::RS256];
        let tok = |h: &str| format!("{}.{}.sig", b64(h), b64("{}"));
        assert_eq!(
            read_header(&tok(r#"{"alg":"RS256","kid":"k1"}"#), &rs),
            Ok(TokenHeader {
                alg: Algorithm::RS256,
                kid: "k1".into()
            })
        );
        // A good header over an empty payload is malformed here, before any key is looked up.
        let empty_payload = format!("{}..sig", b64(r#"{"alg":"RS256","kid":"k1"}"#));
        assert_eq!(
            read_header(&empty_payload, &rs),
            Err(Reason::TokenMalformed)
        );
        assert_eq!(
            read_header(&tok(r#"{"alg":"none","kid":"k1"}"#), &rs),
            Err(Reason::AlgorithmNotAllowed)
        );
        assert_eq!(
            read_header(&tok(r#"{"alg":"HS256","kid":"k1"}"#), &rs),
            Err(Reason::AlgorithmNotAllowed)
        );
        assert_eq!(
            read_header(&tok(r#"{"alg":"RS256"}"#), &rs),
            Err(Reason::KeyUnknown)
        );
        assert_eq!(
            read_header(&tok(r#"{"alg":"RS256","kid":7}"#), &rs),
            Err(Reason::TokenMalformed)
        );
        assert_eq!(
            read_header(&tok(r#"{"alg":"RS256","alg":"none"}"#), &rs),
            Err(Reason::TokenMalformed)
        );
        assert_eq!(
            read_header(&tok("not json"), &rs),
            Err(Reason::TokenMalformed)
        );
        assert_eq!(read_header("a.b", &rs), Err(Reason::TokenMalformed));
        assert_eq!(read_header("a.b.c.d", &rs), Err(Reason::TokenMalformed));
        assert_eq!(read_header("!!.b.c", &rs), Err(Reason::TokenMalformed));
        let unsigned = format!("{}.{}.", b64(r#"{"alg":"RS256","kid":"k"}"#), b64("{}"));
        assert_eq!(read_header(&unsigned, &rs), Err(Reason::SignatureInvalid));
    }

    /// A `kid` names a published key: empty or longer than any key set keeps is no key.
    #[test]
    fn a_kid_is_one_to_max_kid_len_characters() {
        let rs = [Algorithm::RS256];
        let tok = |kid: &str| {
            let header = serde_json::json!({"alg": "RS256", "kid": kid}).to_string();
            format!("{}.{}.sig", b64(&header), b64("{}"))
        };
        let longest = "k".repeat(MAX_KID_LEN);
        assert_eq!(read_header(&tok(&longest), &rs).map(|h| h.kid), Ok(longest));
        assert_eq!(read_header(&tok("k"), &rs).map(|h| h.kid), Ok("k".into()));
        for unusable in [String::new(), "k".repeat(MAX_KID_LEN + 1)] {
            assert_eq!(
                read_header(&tok(&unusable), &rs),
                Err(Reason::KeyUnknown),
                "{} characters",
                unusable.len()
            );
        }
    }

    /// RFC 7515 §4.1.11 and RFC 7797: an extension that changes what is signed is not
    /// understood, so it is refused; `b64: true` (what is signed anyway) may be named.
    #[test]
    fn critical_and_unencoded_payload_headers_are_refused() {
        let rs = [Algorithm::RS256];
        let tok = |extra: &str| {
            let header = format!(r#"{{"alg":"RS256","kid":"k1"{extra}}}"#);
            format!("{}.{}.sig", b64(&header), b64("{}"))
        };
        for bad in [
            r#","crit":["exp"]"#,
            r#","crit":["exp"],"b64":true"#,
            r#","crit":["b64"]"#,
            r#","crit":["b64"],"b64":false"#,
            r#","crit":["b64","exp"],"b64":true"#,
            r#","crit":[]"#,
            r#","crit":"b64","b64":true"#,
            r#","b64":false"#,
            r#","b64":"true""#,
            r#","typ":1"#,
            r#","cty":{}"#,
        ] {
            assert_eq!(
                read_header(&tok(bad), &rs),
                Err(Reason::TokenMalformed),
                "{bad}"
            );
        }
        for ok in [
            "",
            r#","b64":true"#,
            r#","crit":["b64"],"b64":true"#,
            r#","typ":"JWT","cty":"JWT""#,
        ] {
            assert_eq!(
                read_header(&tok(ok), &rs).map(|h| h.kid),
                Ok("k1".into()),
                "{ok}"
            );
        }
    }

    /// An RS256 token from the dev issuer, and its key as published (declaring RS256).
    fn signed_token() -> (String, TokenHeader, Arc<VerifyingKey>) {
        use crate::devissuer::Signer;
        let signer = Signer::new(crate::core::fixtures::ISS).unwrap();
        let keys = crate::core::fixtures::keys_of(&signer.certs_document());
        let kid = keys.ids()[0].clone();
        let token = signer
            .sign_raw(
                &format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#),
                r#"{"sub":"s"}"#,
                None,
            )
            .unwrap();
        let header = read_header(&token, &[Algorithm::RS256]).unwrap();
        (token, header, keys.get(&kid).unwrap().clone())
    }

    #[test]
    fn a_key_verifies_only_the_algorithm_it_declares() {
        let (token, header, published) = signed_token();
        assert_eq!(published.alg, Some(Algorithm::RS256));
        assert!(verify_signature(&token, &header, &published).is_ok());
        let declaring = |alg| VerifyingKey::new(published.kid.clone(), published.key.clone(), alg);
        assert!(verify_signature(&token, &header, &declaring(None)).is_ok());
        for other in [Algorithm::RS384, Algorithm::PS256] {
            assert_eq!(
                verify_signature(&token, &header, &declaring(Some(other))),
                Err(Reason::AlgorithmNotAllowed),
                "{other:?}"
            );
        }
    }

    #[test]
    fn a_key_of_another_family_is_refused_even_without_a_declared_algorithm() {
        let (token, header, _) = signed_token();
        // RFC 7515 Appendix A.3's P-256 public key, declaring no algorithm.
        let ec = crate::core::fixtures::keys_of(&serde_json::json!({"keys": [{
            "kid": "ec", "kty": "EC", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
        }]}));
        let ec = ec.get("ec").unwrap();
        assert_eq!(ec.alg, None);
        assert_eq!(
            verify_signature(&token, &header, ec),
            Err(Reason::AlgorithmNotAllowed)
        );
    }

    /// Claims holding one time claim.
    fn at(claim: &str, t: u64) -> Claims {
        Claims(Map::from_iter([(claim.to_owned(), Value::from(t))]))
    }

    const NOW: u64 = 1_800_000_000;

    fn leeway_30() -> CompiledPolicy {
        let mut policy = crate::core::fixtures::policy();
        policy.leeway_secs = 30;
        policy
    }

    #[test]
    fn nbf_and_iat_may_lie_ahead_by_the_leeway_and_no_more() {
        let policy = leeway_30();
        type Check = fn(&Claims, &CompiledPolicy, u64) -> Result<(), Reason>;
        for (claim, check) in [
            ("nbf", check_not_before as Check),
            ("iat", check_issued_at as Check),
        ] {
            assert_eq!(check(&at(claim, NOW), &policy, NOW), Ok(()), "{claim}");
            assert_eq!(check(&at(claim, NOW + 30), &policy, NOW), Ok(()), "{claim}");
            assert_eq!(
                check(&at(claim, NOW + 31), &policy, NOW),
                Err(Reason::TokenNotYetValid),
                "{claim}"
            );
            assert_eq!(
                check(&Claims(Map::new()), &policy, NOW),
                Ok(()),
                "{claim} absent"
            );
        }
    }

    #[test]
    fn exp_may_lie_behind_by_the_leeway_and_no_more() {
        let policy = leeway_30();
        assert_eq!(check_expiry(&at("exp", NOW + 1), &policy, NOW), Ok(()));
        assert_eq!(check_expiry(&at("exp", NOW - 30), &policy, NOW), Ok(()));
        assert_eq!(
            check_expiry(&at("exp", NOW - 31), &policy, NOW),
            Err(Reason::TokenExpired)
        );
        assert_eq!(
            check_expiry(&Claims(Map::new()), &policy, NOW),
            Err(Reason::TokenMalformed),
            "exp is required"
        );
    }

    #[test]
    fn duplicate_claims_are_refused() {
        assert!(serde_json::from_str::<Claims>(r#"{"sub":"a","sub":"b"}"#).is_err());
        assert!(serde_json::from_str::<Claims>(r#"{"sub":"a","email":"b"}"#).is_ok());
    }

    #[test]
    fn nested_duplicate_keys_are_refused_at_every_depth() {
        for bad in [
            r#"{"custom":{"groups":["a"],"groups":["admins"]}}"#,
            r#"{"custom":{"a":{"b":{"x":1,"x":2}}}}"#,
            r#"{"list":[{"role":"user","role":"admin"}]}"#,
            r#"{"list":[1,[{"k":1}],[{"k":1,"k":1}]]}"#,
            // The same key after JSON unescaping.
            r#"{"custom":{"groups":["a"],"gr\u006fups":["admins"]}}"#,
            r#"{"custom":{},"custom":{}}"#,
        ] {
            assert!(serde_json::from_str::<Claims>(bad).is_err(), "{bad}");
        }
        // Equal keys in different objects are not duplicates.
        let ok: Claims = serde_json::from_str(
            r#"{"a":{"k":1},"b":{"k":2},"l":[{"k":1},{"k":2}],"n":null,"f":1.5,"u":18446744073709551615,"i":-3}"#,
        )
        .unwrap();
        assert_eq!(
            Value::Object(ok.0),
            serde_json::json!({"a":{"k":1},"b":{"k":2},"l":[{"k":1},{"k":2}],"n":null,"f":1.5,"u":u64::MAX,"i":-3})
        );
    }

    #[test]
    fn nested_duplicate_claim_in_a_signed_token_is_malformed() {
        use crate::core::fixtures::Signer;
        use crate::core::jwks::parse_key_set;
        let signer = Signer::new("http://127.0.0.1:9").unwrap();
        let keys = parse_key_set(signer.certs_document().to_string().as_bytes()).unwrap();
        let kid = keys.ids()[0].clone();
        let header_text = format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#);
        let token = signer
            .sign_raw(
                &header_text,
                r#"{"iss":"http://127.0.0.1:9","custom":{"groups":["a"],"groups":["admins"]}}"#,
                None,
            )
            .unwrap();
        let header = read_header(&token, &[Algorithm::RS256]).unwrap();
        let key = keys.get(&header.kid).unwrap();
        assert_eq!(
            verify_signature(&token, &header, key),
            Err(Reason::TokenMalformed)
        );
    }

    /// The cache's weigher counts this: 48 per claim and per object, 24 per string, array
    /// or object member, 16 per other value, plus the text of every key and string.
    #[test]
    fn claims_weigh_their_text_and_their_structure() {
        let c: Claims =
            serde_json::from_str(r#"{"s":"abc","n":1,"a":["x",2],"o":{"k":"vv"}}"#).unwrap();
        let s = 48 + 1 + (24 + 3);
        let n = 48 + 1 + 16;
        let a = 48 + 1 + (24 + (24 + 1) + 16);
        let o = 48 + 1 + (48 + (24 + 1 + (24 + 2)));
        assert_eq!(c.approx_bytes(), s + n + a + o);
        assert_eq!(Claims(Map::new()).approx_bytes(), 0);
    }

    #[test]
    fn claim_paths_walk_objects() {
        let c: Claims =
            serde_json::from_str(r#"{"custom":{"groups":["a","b"]},"email":"x"}"#).unwrap();
        assert_eq!(
            c.path(&["custom".into(), "groups".into()]),
            Some(&serde_json::json!(["a", "b"]))
        );
        assert_eq!(c.path(&["email".into(), "x".into()]), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// JOSE headers built from the fields attackers play with (alg spellings, kid
            /// shapes, duplicates, extra members, padding, alphabets, segment counts), so the
            /// parser is reached rather than refused at the first byte.
            #[test]
            fn read_header_only_admits_allowed(
                alg in prop::sample::select(vec![r#""RS256""#, r#""HS256""#, r#""none""#, r#""rs256""#, r#""RS256 ""#, r#""""#, "null", "256", r#"["RS256"]"#]),
                kid in prop::sample::select(vec![None, Some(r#""k1""#.to_owned()), Some(r#""""#.to_owned()), Some("7".to_owned()), Some(format!(r#""{}""#, "k".repeat(MAX_KID_LEN + 1))), Some(r#""k\u0000""#.to_owned())]),
                duplicate_alg in prop::option::weighted(0.2, prop::sample::select(vec![r#""RS256""#, r#""none""#])),
                extra in prop::option::weighted(0.3, prop::sample::select(vec![r#""typ":"JWT""#, r#""crit":["exp"]"#, r#""jku":"https://evil""#, r#""b64":false"#])),
                encoding in 0u8..4,
                segments in 1usize..5,
            ) {
                let mut members = vec![format!(r#""alg":{alg}"#)];
                if let Some(k) = &kid { members.push(format!(r#""kid":{k}"#)); }
                if let Some(d) = duplicate_alg { members.push(format!(r#""alg":{d}"#)); }
                if let Some(e) = extra { members.push(e.to_owned()); }
                let json = format!("{{{}}}", members.join(","));
                let head = match encoding {
                    0 => URL_SAFE_NO_PAD.encode(&json),
                    1 => base64::engine::general_purpose::URL_SAFE.encode(&json),
                    2 => base64::engine::general_purpose::STANDARD.encode(&json),
                    _ => json.clone(),
                };
                let token = [head.as_str(), "e30", "c2ln", "c2ln"][..segments.min(4)].join(".");
                if let Ok(h) = read_header(&token, &[Algorithm::RS256]) {
                    prop_assert_eq!(h.alg, Algorithm::RS256);
                    prop_assert_eq!(alg, r#""RS256""#, "{}", json);
                    prop_assert!(duplicate_alg.is_none(), "duplicate alg admitted: {}", json);
                    prop_assert!(!h.kid.is_empty() && h.kid.len() <= MAX_KID_LEN);
                    prop_assert_eq!(segments, 3, "a token has three segments");
                }
            }

            #[test]
            fn structured_headers_round_trip(kid in "[ -~]{1,64}", alg in prop::sample::select(vec!["RS256", "HS256", "none", "ES256", "rs256"])) {
                let header = serde_json::json!({"alg": alg, "kid": kid}).to_string();
                let token = format!("{}.{}.c2ln", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode("{}"));
                let got = read_header(&token, &[Algorithm::RS256]);
                if alg == "RS256" {
                    prop_assert_eq!(got, Ok(TokenHeader { alg: Algorithm::RS256, kid }));
                } else {
                    prop_assert_eq!(got, Err(Reason::AlgorithmNotAllowed));
                }
            }

            #[test]
            fn our_cookie_is_found_among_any_others(
                others in prop::collection::vec(("[A-Za-z][A-Za-z0-9_]{0,10}", "[A-Za-z0-9._-]{0,20}"), 0..20),
                pos in 0usize..20,
                token in "[A-Za-z0-9_-]{1,40}\\.[A-Za-z0-9_-]{1,40}\\.[A-Za-z0-9_-]{1,40}",
            ) {
                let mut pairs: Vec<String> = others.iter().filter(|(k, _)| k != AUTH_COOKIE).map(|(k, v)| format!("{k}={v}")).collect();
                let at = pos.min(pairs.len());
                pairs.insert(at, format!("{AUTH_COOKIE}={token}"));
                let h = headers(&[("cookie", &pairs.join("; "))]);
                prop_assert_eq!(extract_token(&h, &[TokenSource::Cookie]), Ok(token.as_str()));
            }

            #[test]
            fn extract_never_panics(cookie in "[ -~]{0,300}", assertion in "[ -~]{0,100}", auth in "[ -~]{0,100}") {
                let mut h = HeaderMap::new();
                for (name, v) in [("cookie", &cookie), ("cf-access-jwt-assertion", &assertion), ("authorization", &auth)] {
                    if let Ok(v) = HeaderValue::from_str(v) { h.append(name, v); }
                }
                let _ = extract_token(&h, &[TokenSource::Header, TokenSource::Cookie, TokenSource::Bearer]);
            }
        }
    }
}
