//! Transport: where the token comes from (header, cookie, bearer) and in which order,
//! duplicates, cookie jars, and requests the HTTP layer must refuse.

use serde_json::json;

use crate::{Case, Expect, MAX_TOKEN_BYTES, NAMED, ORIGINAL, allow, allow_with, deny, run};

/// The policy reading tokens only from `Authorization: Bearer`.
const BEARER: &str = "/auth/apps/bearer";

#[test]
fn cases() {
    let ctx = crate::Ctx::start();
    let valid = ctx.valid();
    let other = ctx.with_claims(json!({"email": "bob@example.com"}));
    let expired = ctx.with_claims(json!({"exp": ctx.now - 3600}));
    let email = |e: &'static str| allow_with(&[("x-auth-request-email", Some(e))]);
    let alice = || email("alice@example.com");
    let many = |n: usize| -> Vec<String> { (0..n).map(|i| format!("c{i}=v{i}")).collect() };
    let cf = |token: &str| format!("CF_Authorization={token}");
    let bearer = |token: &str| format!("Bearer {token}");
    let mut c: Vec<Case> = Vec::new();

    // --- header source
    #[rustfmt::skip]
    c.extend([
        Case::new("no token at all", deny(401, "token_missing")),
        Case::new("empty assertion header", deny(401, "token_missing")).token(""),
        Case::new("whitespace-only assertion header", deny(401, "token_missing")).token("   "),
        Case::tok("token with surrounding spaces", format!("  {valid}  "), alice()),
        Case::tok("token with a Bearer prefix in the assertion header", bearer(&valid), deny(401, "token_malformed")),
        Case::tok("two tokens comma-joined in one header", format!("{valid}, {valid}"), deny(401, "token_malformed")),
        Case::tok("two identical assertion headers", &valid, alice()).token(&valid),
        Case::tok("two different valid assertion headers", &valid, deny(401, "token_malformed")).token(&other),
        Case::tok("valid then garbage assertion header", &valid, deny(401, "token_malformed")).token("garbage"),
        Case::tok("empty then valid assertion header", "", alice()).token(&valid),
        Case::tok("assertion header with raw UTF-8 bytes", format!("{valid}é"), deny(401, "token_malformed")),
        Case::tok("assertion header of 16 KiB + 1 of x", "x".repeat(MAX_TOKEN_BYTES + 1), deny(401, "token_too_large")),
        Case::new("assertion header name in odd case", alice()).header("CF-ACCESS-JWT-ASSERTION", &valid),
    ]);

    // --- precedence: header first, a bad present token is not retried from the cookie
    #[rustfmt::skip]
    c.extend([
        Case::tok("valid header, garbage cookie", &valid, alice()).cookie(cf("garbage")),
        Case::tok("garbage header, valid cookie", "garbage", deny(401, "token_malformed")).cookie(cf(&valid)),
        Case::tok("expired header, valid cookie", &expired, deny(401, "token_expired")).cookie(cf(&valid)),
        Case::tok("header and cookie different valid tokens: header wins", &other, email("bob@example.com")).cookie(cf(&valid)),
        Case::new("empty header, valid cookie", alice()).token("").cookie(cf(&valid)),
    ]);

    // --- cookie source
    #[rustfmt::skip]
    c.extend([
        Case::new("valid cookie alone", alice()).cookie(cf(&valid)),
        Case::new("valid cookie, quoted value", alice()).cookie(cf(&format!("\"{valid}\""))),
        Case::new("cookie name in lower case", deny(401, "token_missing")).cookie(format!("cf_authorization={valid}")),
        Case::new("cookie name with a suffix", deny(401, "token_missing")).cookie(format!("CF_Authorization_old={valid}; CF_AuthorizationX={valid}")),
        Case::new("cookie with an empty value", deny(401, "token_missing")).cookie("CF_Authorization="),
        Case::new("cookie header without any pair", deny(401, "token_missing")).cookie(";;; ;"),
        Case::new("cookie with garbage value", deny(401, "token_malformed")).cookie("CF_Authorization=garbage"),
        Case::new("two identical CF_Authorization cookies", alice()).cookie(format!("{}; {}", cf(&valid), cf(&valid))),
        Case::new("two different CF_Authorization cookies in one header", deny(401, "token_malformed")).cookie(format!("{}; {}", cf(&valid), cf(&other))),
        Case::new("two different CF_Authorization cookies in two headers", deny(401, "token_malformed")).cookie(cf(&valid)).cookie(cf(&other)),
        Case::new("valid and empty CF_Authorization cookies", alice()).cookie(format!("CF_Authorization=; {}", cf(&valid))),
    ]);
    let jar = |n: usize, tokens: &[(usize, &str)]| {
        let mut jar = many(n);
        for (pos, token) in tokens {
            jar.insert(*pos, cf(token));
        }
        jar.join("; ")
    };
    #[rustfmt::skip]
    c.extend([
        Case::new("5000 cookies, valid CF_Authorization first", alice()).cookie(jar(5000, &[(0, &valid)])),
        Case::new("5000 cookies, valid CF_Authorization in the middle", alice()).cookie(jar(5000, &[(2500, &valid)])),
        Case::new("5000 cookies, valid CF_Authorization last", alice()).cookie(jar(5000, &[(5000, &valid)])),
        Case::new("5000 cookies, no CF_Authorization", deny(401, "token_missing")).cookie(jar(5000, &[])),
        Case::new("5000 cookies with two different CF_Authorization", deny(401, "token_malformed")).cookie(jar(5000, &[(10, &valid), (4000, &other)])),
        Case::new("two cookie headers, the token in the first", alice()).cookie(cf(&valid)).cookie(many(49).join("; ")),
        // Regression: a cookie header holding some other cookie with raw UTF-8 (browsers send
        // what JavaScript stored) used to be skipped whole, hiding our valid cookie in it.
        Case::new("valid CF_Authorization next to a cookie with raw UTF-8", alice()).cookie(format!("name=José; {}", cf(&valid))),
        Case::new("raw UTF-8 cookie in its own Cookie header, token in another", alice()).cookie("name=José").cookie(cf(&valid)),
        Case::new("bearer token ignored unless opted in", deny(401, "token_missing")).authorization(bearer(&valid)),
    ]);

    // --- bearer source on a bearer-only policy
    #[rustfmt::skip]
    c.extend([
        Case::new("bearer: valid", allow()).path(BEARER).authorization(bearer(&valid)),
        Case::new("bearer: lower-case scheme", allow()).path(BEARER).authorization(format!("bearer {valid}")),
        Case::new("bearer: upper-case scheme", allow()).path(BEARER).authorization(format!("BEARER {valid}")),
        Case::new("bearer: two spaces", allow()).path(BEARER).authorization(format!("Bearer  {valid}")),
        Case::new("bearer: Basic scheme", deny(401, "token_missing")).path(BEARER).authorization("Basic dXNlcjpwYXNz"),
        Case::new("bearer: scheme only", deny(401, "token_missing")).path(BEARER).authorization("Bearer"),
        Case::new("bearer: token without scheme", deny(401, "token_missing")).path(BEARER).authorization(&valid),
        Case::new("bearer: two different", deny(401, "token_malformed")).path(BEARER).authorization(bearer(&valid)).authorization(bearer(&other)),
        Case::new("bearer: assertion header ignored", deny(401, "token_missing")).path(BEARER).token(&valid),
        Case::new("bearer: cookie ignored", deny(401, "token_missing")).path(BEARER).cookie(cf(&valid)),
        Case::new("bearer: raw UTF-8 in Authorization", deny(401, "token_malformed")).path(BEARER).authorization(format!("Bearer {valid}é")),
    ]);

    // --- requests the HTTP layer must refuse; the server must survive them
    let mut three_hundred = Case::tok(
        "300 extra headers with a valid token",
        &valid,
        Expect::Refused,
    );
    for i in 0..300 {
        three_hundred = three_hundred.header(&format!("x-h{i}"), "v");
    }
    let mib = 1 << 20;
    #[rustfmt::skip]
    c.extend([
        Case::new("1 MiB junk header", Expect::Refused).header("x-junk", "j".repeat(mib)),
        Case::new("1 MiB cookie header with the token", Expect::Refused).cookie(format!("{}; pad={}", cf(&valid), "p".repeat(mib))),
        Case::new("1 MiB assertion header", Expect::Refused).token(&"a".repeat(mib)),
        three_hundred,
    ]);
    // A request written byte for byte, with one more header line.
    let raw = |extra: &str| -> Vec<u8> {
        format!("GET {NAMED} HTTP/1.1\r\nHost: x\r\nX-Original-URL: {ORIGINAL}\r\nConnection: close\r\n{extra}\r\n").into_bytes()
    };
    let bare_lf =
        format!("GET {NAMED} HTTP/1.1\nHost: x\nX-Original-URL: {ORIGINAL}\nConnection: close\n\n");
    let tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec();
    #[rustfmt::skip]
    c.extend([
        Case::raw("raw: NUL in the assertion header", raw(&format!("Cf-Access-Jwt-Assertion: {valid}\u{0}x\r\n")), Expect::Refused),
        Case::raw("raw: DEL in the assertion header", raw(&format!("Cf-Access-Jwt-Assertion: {valid}\u{7f}\r\n")), Expect::Refused),
        Case::raw("raw: obs-fold continuation of the assertion header", raw(&format!("Cf-Access-Jwt-Assertion: {valid}\r\n x\r\n")), Expect::Refused),
        Case::raw("raw: header name with a space", raw("Cf-Access-Jwt-Assertion : x\r\n"), Expect::Refused),
        Case::raw("raw: well-formed request with the token", raw(&format!("Cf-Access-Jwt-Assertion: {valid}\r\n")), allow()),
        Case::raw("raw: bare LF line endings, no token", bare_lf.into_bytes(), deny(401, "token_missing")),
        Case::raw("raw: garbage instead of HTTP", tls_hello, Expect::Refused),
    ]);

    run("transport", ctx, c, |_| vec![]);
}
