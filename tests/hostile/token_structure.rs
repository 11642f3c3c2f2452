//! Token structure: segment counts, base64 a strict decoder refuses, header and payload JSON
//! that is not an object, duplicate claim names, signature tampering, size limits.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::{
    Case, Ctx, MAX_TOKEN_BYTES, allow, b64, deny, other_b64_char, parts, replace_char, run,
    token_of_len,
};

#[test]
fn cases() {
    let ctx = Ctx::start();
    let kid = ctx.kid.clone();
    let valid = ctx.valid();
    let p = parts(&valid);
    let (h, pl, sig) = (p[0].clone(), p[1].clone(), p[2].clone());
    let mid = sig.len() / 2;
    let header_text = ctx.jose().to_string();
    let claims_text = Value::Object(ctx.claims()).to_string();
    // The valid token with one character of segment 0 (header), 1 or 2 (signature) replaced.
    let at = |seg: usize, i: usize, with: char| replace_char(&valid, seg, i, with);
    let mut c: Vec<Case> = Vec::new();

    // --- segment counts 0..6 dots and empty segments
    #[rustfmt::skip]
    c.extend([
        Case::tok("baseline: valid token", &valid, allow()),
        Case::tok("0 dots: one base64 blob", &h, deny(401, "token_malformed")),
        Case::tok("0 dots: plain word", "garbage", deny(401, "token_malformed")),
        Case::tok("1 dot: header.payload", format!("{h}.{pl}"), deny(401, "token_malformed")),
        Case::tok("3 dots: extra empty segment", format!("{valid}."), deny(401, "token_malformed")),
        Case::tok("3 dots: extra segment", format!("{valid}.{sig}"), deny(401, "token_malformed")),
        Case::tok("4 dots: JWE-shaped", format!("{h}.{pl}.{sig}.{pl}.{sig}"), deny(401, "token_malformed")),
        Case::tok("5 dots", format!("{valid}.a.b.c"), deny(401, "token_malformed")),
        Case::tok("6 dots: two tokens joined", format!("{valid}.{valid}"), deny(401, "token_malformed")),
        Case::tok("leading dot", format!(".{valid}"), deny(401, "token_malformed")),
        Case::tok("only dots (2)", "..", deny(401, "token_malformed")),
        Case::tok("only dots (6)", "......", deny(401, "token_malformed")),
        Case::tok("single dot", ".", deny(401, "token_malformed")),
        Case::tok("empty header segment", format!(".{pl}.{sig}"), deny(401, "token_malformed")),
        Case::tok("empty payload segment", format!("{h}..{sig}"), deny(401, "token_malformed")),
        Case::tok("empty signature segment", format!("{h}.{pl}."), deny(401, "signature_invalid")),
        Case::tok("header and payload empty", format!("..{sig}"), deny(401, "token_malformed")),
    ]);

    // --- base64 that a strict base64url decoder refuses
    let padded_header = {
        let mut padded = header_text.clone();
        while padded.len() % 3 == 0 {
            padded.push(' ');
        }
        STANDARD.encode(padded)
    };
    #[rustfmt::skip]
    c.extend([
        Case::tok("header with = padding", format!("{h}==.{pl}.{sig}"), deny(401, "token_malformed")),
        Case::tok("header with one =", format!("{h}=.{pl}.{sig}"), deny(401, "token_malformed")),
        Case::tok("signature with = padding", format!("{h}.{pl}.{sig}=="), deny(401, "token_malformed")),
        Case::tok("header with standard-alphabet +", at(0, 5, '+'), deny(401, "token_malformed")),
        Case::tok("header with standard-alphabet /", at(0, 5, '/'), deny(401, "token_malformed")),
        Case::tok("signature with standard-alphabet +", at(2, mid, '+'), deny(401, "token_malformed")),
        Case::tok("signature with standard-alphabet /", at(2, mid, '/'), deny(401, "token_malformed")),
        Case::tok("space inside the header", at(0, 5, ' '), deny(401, "token_malformed")),
        Case::tok("space inside the signature", at(2, mid, ' '), deny(401, "token_malformed")),
        Case::tok("% escape in the header", at(0, 5, '%'), deny(401, "token_malformed")),
        Case::tok("header in standard base64 with padding", format!("{padded_header}.{pl}.{sig}"), deny(401, "token_malformed")),
        Case::tok("header base64 of invalid length (4n+1)", format!("{h}A.{pl}.{sig}"), deny(401, "token_malformed")),
        Case::tok("non-ASCII inside the header", at(0, 5, 'é'), deny(401, "token_malformed")),
        Case::tok("non-ASCII inside the signature", at(2, mid, 'ß'), deny(401, "token_malformed")),
        // The payload is only decoded after the signature check over its exact bytes.
        Case::tok("payload with = padding", format!("{h}.{pl}==.{sig}"), deny(401, "signature_invalid")),
        Case::tok("payload with standard-alphabet +", at(1, 5, '+'), deny(401, "signature_invalid")),
        Case::tok("space inside the payload", at(1, 5, ' '), deny(401, "signature_invalid")),
    ]);

    // --- header and payload JSON that is not a JOSE header / claims object
    let header = |text: &str| ctx.sign(text, &claims_text);
    let payload = |text: &str| ctx.sign(&header_text, text);
    let deep = format!(r#""deep":{}{}"#, "[".repeat(200), "]".repeat(200));
    #[rustfmt::skip]
    c.extend([
        Case::tok("header is not JSON", header("not json"), deny(401, "token_malformed")),
        Case::tok("header is empty", header(""), deny(401, "token_malformed")),
        Case::tok("header is a JSON array", header(&format!(r#"["RS256","{kid}"]"#)), deny(401, "token_malformed")),
        Case::tok("header is a JSON string", header(r#""RS256""#), deny(401, "token_malformed")),
        Case::tok("header is a JSON number", header("42"), deny(401, "token_malformed")),
        Case::tok("header is JSON null", header("null"), deny(401, "token_malformed")),
        Case::tok("header is an empty object", header("{}"), deny(401, "token_malformed")),
        Case::tok("header is truncated JSON", header(&header_text[..header_text.len() - 1]), deny(401, "token_malformed")),
        Case::tok("header is JSON with trailing garbage", header(&format!("{header_text}x")), deny(401, "token_malformed")),
        Case::tok("header is JSON with a comment", header(&format!("/*c*/{header_text}")), deny(401, "token_malformed")),
        Case::tok("header is JSON with a BOM", header(&format!("\u{feff}{header_text}")), deny(401, "token_malformed")),
        Case::tok("header is single-quoted JSON", header(&header_text.replace('"', "'")), deny(401, "token_malformed")),
        Case::tok("payload is not JSON", payload("not json"), deny(401, "token_malformed")),
        Case::tok("payload is a JSON array", payload(&format!("[{claims_text}]")), deny(401, "token_malformed")),
        Case::tok("payload is a JSON string", payload(r#""alice""#), deny(401, "token_malformed")),
        Case::tok("payload is a JSON number", payload("1"), deny(401, "token_malformed")),
        Case::tok("payload is JSON true", payload("true"), deny(401, "token_malformed")),
        Case::tok("payload is JSON null", payload("null"), deny(401, "token_malformed")),
        Case::tok("payload is truncated JSON", payload(&claims_text[..claims_text.len() - 1]), deny(401, "token_malformed")),
        Case::tok("payload is JSON with trailing garbage", payload(&format!("{claims_text}}}")), deny(401, "token_malformed")),
        Case::tok("payload is two JSON objects", payload(&format!("{claims_text}{claims_text}")), deny(401, "token_malformed")),
        Case::tok("payload is JSON with a BOM", payload(&format!("\u{feff}{claims_text}")), deny(401, "token_malformed")),
        Case::tok("payload is JSON with NaN", payload(&ctx.raw_payload(r#""level":NaN"#)), deny(401, "token_malformed")),
        Case::tok("payload is JSON with a lone surrogate escape", payload(&ctx.raw_payload(r#""name":"\ud800""#)), deny(401, "token_malformed")),
        Case::tok("payload is JSON nested 200 deep", payload(&ctx.raw_payload(&deep)), deny(401, "token_malformed")),
        Case::tok("payload is JSON with a number out of f64 range", payload(&ctx.raw_payload(r#""level":1e400"#)), deny(401, "token_malformed")),
        Case::tok("payload is an empty object (no iss)", payload("{}"), deny(401, "issuer_mismatch")),
        Case::tok("payload JSON with surrounding whitespace (legal JSON text)", payload(&format!(" \n\t{claims_text}\r\n ")), allow()),
    ]);

    // --- duplicate claim names (README: token_malformed)
    let appended = |extra: &str| payload(&ctx.raw_payload(extra));
    #[rustfmt::skip]
    c.extend([
        Case::tok("duplicate claim exp", appended(r#""exp":9999999999"#), deny(401, "token_malformed")),
        Case::tok("duplicate claim iss", appended(r#""iss":"https://evil.example""#), deny(401, "token_malformed")),
        Case::tok("duplicate claim aud", appended(r#""aud":["evil"]"#), deny(401, "token_malformed")),
        Case::tok("duplicate claim email", appended(r#""email":"mallory@example.com""#), deny(401, "token_malformed")),
        Case::tok("duplicate claim sub", appended(r#""sub":"admin""#), deny(401, "token_malformed")),
        Case::tok("duplicate claim type", appended(r#""type":"org""#), deny(401, "token_malformed")),
        Case::tok("duplicate claim unmapped claim twice", appended(r#""x":1,"x":1"#), deny(401, "token_malformed")),
        Case::tok("duplicate claim name via a JSON escape (em\\u0061il)", appended(r#""em\u0061il":"mallory@example.com""#), deny(401, "token_malformed")),
    ]);

    // --- signature tampering
    // 342 characters carry 256 bytes: the last one holds 2 data bits and 4 zero bits.
    assert_eq!(sig.len(), 342);
    let first = sig.chars().next().unwrap();
    let middle = sig.chars().nth(mid).unwrap();
    let other = parts(&ctx.with_claims(json!({"email": "mallory@example.com"})));
    let year_later = ctx
        .payload(json!({"exp": ctx.now + 86400 * 365}))
        .to_string();
    let kid_only = format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#);
    #[rustfmt::skip]
    c.extend([
        Case::tok("one character flipped mid-signature", at(2, mid, other_b64_char(middle)), deny(401, "signature_invalid")),
        Case::tok("one character flipped at signature start", at(2, 0, other_b64_char(first)), deny(401, "signature_invalid")),
        Case::tok("last signature character with non-zero trailing bits", at(2, sig.len() - 1, 'B'), deny(401, "token_malformed")),
        Case::tok("signature truncated by 1 (length 4n+1)", &valid[..valid.len() - 1], deny(401, "token_malformed")),
        Case::tok("signature truncated by 2 (255 bytes)", &valid[..valid.len() - 2], deny(401, "signature_invalid")),
        Case::tok("signature all zero bytes", format!("{h}.{pl}.{}", "A".repeat(342)), deny(401, "signature_invalid")),
        Case::tok("signature of one byte", format!("{h}.{pl}.AA"), deny(401, "signature_invalid")),
        Case::tok("signature doubled (513 bytes)", format!("{h}.{pl}.{sig}{sig}"), deny(401, "signature_invalid")),
        Case::tok("payload of another token, this signature", format!("{h}.{}.{sig}", other[1]), deny(401, "signature_invalid")),
        Case::tok("signature of another token", format!("{h}.{pl}.{}", other[2]), deny(401, "signature_invalid")),
        Case::tok("payload edited after signing (alice -> mallory)", format!("{h}.{}.{sig}", b64(claims_text.replace("alice", "mallory"))), deny(401, "signature_invalid")),
        Case::tok("header edited after signing (typ dropped)", format!("{}.{pl}.{sig}", b64(kid_only)), deny(401, "signature_invalid")),
        Case::tok("payload edited after signing (exp pushed out)", format!("{h}.{}.{sig}", b64(year_later)), deny(401, "signature_invalid")),
    ]);

    // --- size
    let cookie_20k = format!("CF_Authorization={}", token_of_len(&ctx, 20 * 1024));
    #[rustfmt::skip]
    c.extend([
        Case::tok("16384 bytes of 'a' (at the limit, not a JWT)", "a".repeat(MAX_TOKEN_BYTES), deny(401, "token_malformed")),
        Case::tok("16385 bytes of 'a'", "a".repeat(MAX_TOKEN_BYTES + 1), deny(401, "token_too_large")),
        Case::tok("valid token of exactly 16384 bytes", token_of_len(&ctx, MAX_TOKEN_BYTES), allow()),
        Case::tok("valid token of 16385 bytes", token_of_len(&ctx, MAX_TOKEN_BYTES + 1), deny(401, "token_too_large")),
        Case::tok("valid token of 100 KiB", token_of_len(&ctx, 100 * 1024), deny(401, "token_too_large")),
        Case::tok("100 KiB of dots", ".".repeat(100 * 1024), deny(401, "token_too_large")),
        Case::new("token of 20 KiB in the cookie", deny(401, "token_too_large")).cookie(cookie_20k),
    ]);

    run("token_structure", ctx, c, |_| vec![]);
}
