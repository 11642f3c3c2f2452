//! The JOSE header: `alg` (none, HMAC with the public key, odd spellings and types), `kid`,
//! fields that point at keys (ignored: the issuer's key decides), `crit`/`b64`, duplicate
//! members and `typ`.

use accessgate::devissuer::Signer;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::{Case, Ctx, allow, b64, deny, hmac_token, parts, run};

/// The policy allowing RS256, PS256 and ES256.
const MULTI: &str = "/auth/apps/multi";

#[test]
fn cases() {
    let ctx = Ctx::start();
    let kid = ctx.kid.clone();
    let claims = Value::Object(ctx.claims());
    let payload_b64 = b64(claims.to_string());
    let certs = ctx.issuer.certs();
    let cert_pem = certs["public_cert"]["cert"].as_str().unwrap().to_owned();
    let jwk = certs["keys"][0].clone();
    let n = jwk["n"].as_str().unwrap().to_owned();
    let valid = ctx.valid();
    let valid_sig = parts(&valid)[2].clone();

    // A stranger's key pair: same issuer URL, different key.
    let stranger = Signer::new(ctx.issuer.url.clone()).unwrap();
    let sdoc = stranger.certs_document();
    let s_kid = stranger.current_kid().to_owned();
    let s_jwk = sdoc["keys"][0].clone();
    let s_der_b64 = {
        let pem = sdoc["public_cert"]["cert"].as_str().unwrap();
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
    };
    assert!(STANDARD.decode(&s_der_b64).is_ok());
    let s_sign = |header: Value| {
        stranger
            .sign_raw(&header.to_string(), &claims.to_string(), None)
            .unwrap()
    };

    let unsigned =
        |header: Value, sig: &str| format!("{}.{payload_b64}.{sig}", b64(header.to_string()));
    // The valid header with this `alg`, `kid`, … (signed by the issuer).
    let with = |member: &str, v: Value| ctx.with_header(json!({ member: v }));
    // Header text as written (for escapes and duplicates), over the valid claims.
    let header_text = |text: &str| ctx.sign(text, &claims.to_string());
    let hs256 = |secret: &[u8]| hmac_token(Algorithm::HS256, Some(&kid), &claims, secret);
    let pem = cert_pem.as_bytes();
    let mut c: Vec<Case> = Vec::new();

    // --- alg: none, in every spelling, with and without a signature segment
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": alg, "kid": kid, "typ": "JWT"});
        let two_segments = format!("{}.{payload_b64}", b64(h.to_string()));
        #[rustfmt::skip]
        c.extend([
            Case::tok(format!("alg {alg:?}, empty signature segment"), unsigned(h.clone(), ""), deny(401, "algorithm_not_allowed")),
            Case::tok(format!("alg {alg:?}, the real RS256 signature"), unsigned(h.clone(), &valid_sig), deny(401, "algorithm_not_allowed")),
            Case::tok(format!("alg {alg:?}, no signature segment (two segments)"), two_segments, deny(401, "token_malformed")),
        ]);
    }
    #[rustfmt::skip]
    c.extend([
        Case::tok("alg none without kid", unsigned(json!({"alg": "none"}), ""), deny(401, "algorithm_not_allowed")),
        Case::tok("alg none signed by the issuer's key anyway", with("alg", json!("none")), deny(401, "algorithm_not_allowed")),
    ]);

    // --- HMAC with the public material as the secret (key confusion)
    // Header says RS256, the signature is an HMAC keyed with the certificate.
    let rs256_over_hmac = {
        let msg = format!("{}.{payload_b64}", b64(ctx.jose().to_string()));
        let key = EncodingKey::from_secret(pem).unwrap();
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{msg}.{sig}")
    };
    #[rustfmt::skip]
    c.extend([
        Case::tok("HS256 with the certificate PEM as secret", hs256(pem), deny(401, "algorithm_not_allowed")),
        Case::tok("HS256 with the certificate PEM, trimmed as secret", hs256(cert_pem.trim().as_bytes()), deny(401, "algorithm_not_allowed")),
        Case::tok("HS256 with the JWK modulus text as secret", hs256(n.as_bytes()), deny(401, "algorithm_not_allowed")),
        Case::tok("HS256 with the JWK modulus bytes as secret", hs256(&URL_SAFE_NO_PAD.decode(&n).unwrap()), deny(401, "algorithm_not_allowed")),
        Case::tok("HS256 with the JWK JSON as secret", hs256(jwk.to_string().as_bytes()), deny(401, "algorithm_not_allowed")),
        Case::tok("HS256 with the whole certs document as secret", hs256(certs.to_string().as_bytes()), deny(401, "algorithm_not_allowed")),
        Case::tok("HS256 with the kid as secret", hs256(kid.as_bytes()), deny(401, "algorithm_not_allowed")),
        Case::tok("HS384 with the certificate PEM as secret", hmac_token(Algorithm::HS384, Some(&kid), &claims, pem), deny(401, "algorithm_not_allowed")),
        Case::tok("HS512 with the certificate PEM as secret", hmac_token(Algorithm::HS512, Some(&kid), &claims, pem), deny(401, "algorithm_not_allowed")),
        Case::tok("HS256 with the certificate PEM, no kid", hmac_token(Algorithm::HS256, None, &claims, pem), deny(401, "algorithm_not_allowed")),
        Case::tok("HS256 on a policy allowing RS256+PS256+ES256", hs256(pem), deny(401, "algorithm_not_allowed")).path(MULTI),
        Case::tok("RS256 header over an HMAC-with-certificate signature", rs256_over_hmac, deny(401, "signature_invalid")),
    ]);

    // --- other alg values
    for alg in ["PS256", "ES256", "EdDSA", "RS384", "RS512", "HS256"] {
        let name = format!("alg {alg} (not in the policy's list) over an RS256 signature");
        c.push(Case::tok(
            name,
            with("alg", json!(alg)),
            deny(401, "algorithm_not_allowed"),
        ));
    }
    for alg in [
        "rs256",
        " RS256",
        "RS256 ",
        "RS256\u{0}",
        "",
        "RSA256",
        "RS 256",
    ] {
        let name = format!("alg {alg:?} (not an algorithm name)");
        c.push(Case::tok(
            name,
            with("alg", json!(alg)),
            deny(401, "algorithm_not_allowed"),
        ));
    }
    // README: a JWK that declares `alg` only verifies tokens with that `alg`.
    assert_eq!(jwk["alg"], "RS256", "the dev issuer's JWK declares its alg");
    #[rustfmt::skip]
    c.extend([
        Case::tok("alg as null", with("alg", json!(null)), deny(401, "token_malformed")),
        Case::tok("alg as number", with("alg", json!(256)), deny(401, "token_malformed")),
        Case::tok("alg as array", with("alg", json!(["RS256"])), deny(401, "token_malformed")),
        Case::tok("alg as object", with("alg", json!({"name": "RS256"})), deny(401, "token_malformed")),
        Case::tok("alg as bool", with("alg", json!(true)), deny(401, "token_malformed")),
        Case::tok("alg missing", ctx.signed(&json!({"kid": kid, "typ": "JWT"}), &claims), deny(401, "token_malformed")),
        Case::tok("alg key in upper case (ALG)", ctx.signed(&json!({"ALG": "RS256", "kid": kid}), &claims), deny(401, "token_malformed")),
        Case::tok("alg spelled with a JSON escape (R\\u0053256) is RS256", header_text(&format!(r#"{{"alg":"R\u0053256","kid":"{kid}"}}"#)), allow()),
        Case::tok("alg name spelled with a JSON escape (al\\u0067) saying none", header_text(&format!(r#"{{"al\u0067":"none","kid":"{kid}"}}"#)), deny(401, "algorithm_not_allowed")),
        // Same RSA key family, other algorithm: the signature is PKCS#1 v1.5, not PSS.
        Case::tok("alg PS256 naming an RS256-declared key on a policy allowing PS256", with("alg", json!("PS256")), deny(401, "algorithm_not_allowed")).path(MULTI),
        Case::tok("alg ES256 naming an RSA key on a policy allowing ES256", with("alg", json!("ES256")), deny(401, "algorithm_not_allowed")).path(MULTI),
        Case::tok("RS256 token on the multi-algorithm policy", &valid, allow()).path(MULTI),
    ]);

    // --- kid
    let escaped_kid: String = kid
        .chars()
        .map(|ch| format!("\\u{:04x}", ch as u32))
        .collect();
    #[rustfmt::skip]
    c.extend([
        Case::tok("kid path-like ../../x", with("kid", json!("../../x")), deny(401, "key_unknown")),
        Case::tok("kid path-like /etc/passwd", with("kid", json!("/etc/passwd")), deny(401, "key_unknown")),
        Case::tok("kid URL", with("kid", json!("https://evil.example/jwks.json")), deny(401, "key_unknown")),
        Case::tok("kid 10 KiB long", with("kid", json!("k".repeat(10 * 1024))), deny(401, "key_unknown")),
        Case::tok("kid 257 characters", with("kid", json!("a".repeat(257))), deny(401, "key_unknown")),
        Case::tok("kid empty string", with("kid", json!("")), deny(401, "key_unknown")),
        Case::tok("kid null", with("kid", json!(null)), deny(401, "key_unknown")),
        Case::tok("kid unicode", with("kid", json!("ключ-🔑")), deny(401, "key_unknown")),
        Case::tok("kid with NUL", with("kid", json!(format!("{kid}\u{0}"))), deny(401, "key_unknown")),
        Case::tok("kid current kid in upper case", with("kid", json!(kid.to_uppercase())), deny(401, "key_unknown")),
        Case::tok("kid current kid plus a space", with("kid", json!(format!("{kid} "))), deny(401, "key_unknown")),
        Case::tok("kid current kid truncated", with("kid", json!(kid[..63])), deny(401, "key_unknown")),
        Case::tok("kid SQL-ish", with("kid", json!("' OR '1'='1")), deny(401, "key_unknown")),
        Case::tok("kid stranger's kid", with("kid", json!(s_kid)), deny(401, "key_unknown")),
        Case::tok("kid missing", ctx.signed(&json!({"alg": "RS256", "typ": "JWT"}), &claims), deny(401, "key_unknown")),
        Case::tok("kid as number", with("kid", json!(1)), deny(401, "token_malformed")),
        Case::tok("kid as array", with("kid", json!([kid])), deny(401, "token_malformed")),
        Case::tok("kid as object", with("kid", json!({"kid": kid})), deny(401, "token_malformed")),
        Case::tok("kid as bool", with("kid", json!(false)), deny(401, "token_malformed")),
        Case::tok("kid spelled with JSON escapes is the current kid", header_text(&format!(r#"{{"alg":"RS256","kid":"{escaped_kid}"}}"#)), allow()),
    ]);

    // --- header fields that point at keys are ignored: the issuer's key still decides
    let all_four = json!({"jku": "https://evil.example/j", "x5u": "https://evil.example/c", "jwk": s_jwk, "x5c": [s_der_b64]});
    #[rustfmt::skip]
    c.extend([
        Case::tok("jku to another host, signed by the issuer: ignored", with("jku", json!("https://evil.example/jwks.json")), allow()),
        Case::tok("jku to a file URL, signed by the issuer: ignored", with("jku", json!("file:///etc/passwd")), allow()),
        Case::tok("x5u to another host, signed by the issuer: ignored", with("x5u", json!("https://evil.example/cert.pem")), allow()),
        Case::tok("jwk of a stranger, signed by the issuer: ignored", with("jwk", s_jwk.clone()), allow()),
        Case::tok("x5c of a stranger, signed by the issuer: ignored", with("x5c", json!([s_der_b64])), allow()),
        Case::tok("x5t thumbprint, signed by the issuer: ignored", with("x5t", json!("dGh1bWJwcmludA")), allow()),
        Case::tok("jku, x5u, jwk and x5c together, signed by the issuer: ignored", ctx.with_header(all_four), allow()),
        Case::tok("stranger-signed, issuer's kid", s_sign(ctx.jose()), deny(401, "signature_invalid")),
        Case::tok("stranger-signed, issuer's kid, stranger's jwk embedded", s_sign(ctx.jose_with(json!({"jwk": s_jwk}))), deny(401, "signature_invalid")),
        Case::tok("stranger-signed, stranger's kid and jwk embedded", s_sign(ctx.jose_with(json!({"kid": s_kid, "jwk": s_jwk}))), deny(401, "key_unknown")),
        Case::tok("stranger-signed, stranger's kid, jku to its keys", s_sign(ctx.jose_with(json!({"kid": s_kid, "jku": "http://127.0.0.1:1/jwks"}))), deny(401, "key_unknown")),
        Case::tok("stranger-signed, no kid, x5c of the stranger", s_sign(json!({"alg": "RS256", "x5c": [s_der_b64]})), deny(401, "key_unknown")),
    ]);

    // --- crit and b64 (RFC 7515 §4.1.11, RFC 7797)
    let patched = |patch: Value| ctx.with_header(patch);
    let unencoded_payload = format!(
        "{}.{}.{valid_sig}",
        b64(ctx
            .jose_with(json!({"b64": false, "crit": ["b64"]}))
            .to_string()),
        r#"{"iss":"x"}"#
    );
    #[rustfmt::skip]
    c.extend([
        Case::tok("crit [\"exp\"]", patched(json!({"crit": ["exp"]})), deny(401, "token_malformed")),
        Case::tok("crit []", patched(json!({"crit": []})), deny(401, "token_malformed")),
        Case::tok("crit [\"b64\"] without b64", patched(json!({"crit": ["b64"]})), deny(401, "token_malformed")),
        Case::tok("crit [\"b64\"] with b64 false", patched(json!({"crit": ["b64"], "b64": false})), deny(401, "token_malformed")),
        Case::tok("crit [\"kid\"]", patched(json!({"crit": ["kid"]})), deny(401, "token_malformed")),
        Case::tok("crit [\"x-unknown\"]", patched(json!({"crit": ["x-unknown"]})), deny(401, "token_malformed")),
        Case::tok("crit as a string", patched(json!({"crit": "b64"})), deny(401, "token_malformed")),
        Case::tok("crit [\"b64\",\"b64\"] with b64 true", patched(json!({"crit": ["b64", "b64"], "b64": true})), deny(401, "token_malformed")),
        Case::tok("b64 false without crit", patched(json!({"b64": false})), deny(401, "token_malformed")),
        Case::tok("b64 as the string \"false\"", patched(json!({"b64": "false"})), deny(401, "token_malformed")),
        // b64 true is the default encoding, understood; nothing unknown is critical.
        Case::tok("b64 true", patched(json!({"b64": true})), allow()),
        Case::tok("crit [\"b64\"] with b64 true", patched(json!({"crit": ["b64"], "b64": true})), allow()),
        Case::tok("b64 false with an unencoded JSON payload segment", unencoded_payload, deny(401, "token_malformed")),
    ]);

    // --- duplicate members and odd typ
    let appended = |extra: &str| header_text(&ctx.raw_header(extra));
    let many_members = Value::Object((0..500).map(|i| (format!("x{i}"), json!(i))).collect());
    #[rustfmt::skip]
    c.extend([
        Case::tok("header duplicate alg (RS256 then none)", appended(r#""alg":"none""#), deny(401, "token_malformed")),
        Case::tok("header duplicate alg (RS256 twice)", appended(r#""alg":"RS256""#), deny(401, "token_malformed")),
        Case::tok("header duplicate kid", appended(r#""kid":"other""#), deny(401, "token_malformed")),
        Case::tok("header duplicate typ", appended(r#""typ":"JWT""#), deny(401, "token_malformed")),
        // RFC 7515 §4 lets parsers keep the last of a repeated member, or refuse: two parsers
        // could disagree, so every repeated member is refused, like repeated claims.
        Case::tok("header duplicate unknown member", appended(r#""x-note":1,"x-note":2"#), deny(401, "token_malformed")),
        Case::tok("header duplicate cty", appended(r#""cty":"x","cty":"y""#), deny(401, "token_malformed")),
        Case::tok("header duplicate alg, none first", header_text(&format!(r#"{{"alg":"none","alg":"RS256","kid":"{kid}"}}"#)), deny(401, "token_malformed")),
        Case::tok("typ as a number", with("typ", json!(1)), deny(401, "token_malformed")),
        Case::tok("typ missing", ctx.signed(&json!({"alg": "RS256", "kid": kid}), &claims), allow()),
        Case::tok("typ JOSE", with("typ", json!("JOSE")), allow()),
        Case::tok("header with 500 unknown members", ctx.with_header(many_members), allow()),
    ]);

    run("jose_header", ctx, c, |_| vec![]);
}
