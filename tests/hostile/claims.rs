//! Claims: `exp`/`nbf`/`iat` types and values, `aud`, `iss`, `type` and token kind, the order
//! of checks, duplicate keys at depth, email rules.

use serde_json::{Value, json};

use crate::{AUD, Case, Ctx, Expect, allow, deny, run};

#[test]
fn cases() {
    let ctx = Ctx::start();
    let now = ctx.now;
    let iss = ctx.issuer.url.clone();
    // The valid claims with one claim set to `v`.
    let set = |claim: &str, v: Value| ctx.with_claims(json!({ claim: v }));
    let mut c: Vec<Case> = Vec::new();

    // --- exp, nbf, iat of the wrong type
    for claim in ["exp", "nbf", "iat"] {
        #[rustfmt::skip]
        c.extend([
            Case::tok(format!("{claim} is a string"), set(claim, json!("9999999999")), deny(401, "token_malformed")),
            Case::tok(format!("{claim} is a bool"), set(claim, json!(true)), deny(401, "token_malformed")),
            Case::tok(format!("{claim} is null"), set(claim, json!(null)), deny(401, "token_malformed")),
            Case::tok(format!("{claim} is an object"), set(claim, json!({"t": now + 3600})), deny(401, "token_malformed")),
            Case::tok(format!("{claim} is an array"), set(claim, json!([now + 3600])), deny(401, "token_malformed")),
            Case::tok(format!("{claim} is an empty string"), set(claim, json!("")), deny(401, "token_malformed")),
        ]);
    }

    // --- exp values
    let upper_exp = {
        let mut p = ctx.payload_without(&["exp"]);
        p["EXP"] = json!(now + 3600);
        p
    };
    // `exp` written as this JSON number text (beyond what serde_json's `json!` can hold).
    let exp_text = |text: &str| {
        let base = Value::Object(ctx.claims()).to_string();
        let payload = base.replace(
            &format!(r#""exp":{}"#, now + 3600),
            &format!(r#""exp":{text}"#),
        );
        assert_ne!(payload, base);
        ctx.with_payload_text(&payload)
    };
    #[rustfmt::skip]
    c.extend([
        Case::tok("exp missing", ctx.without_claims(&["exp"]), deny(401, "token_malformed")),
        Case::tok("exp key in upper case only (EXP)", ctx.signed(&ctx.jose(), &upper_exp), deny(401, "token_malformed")),
        Case::tok("exp negative", set("exp", json!(-1)), deny(401, "token_expired")),
        Case::tok("exp 0", set("exp", json!(0)), deny(401, "token_expired")),
        Case::tok("exp -0.0", set("exp", json!(-0.0)), deny(401, "token_expired")),
        Case::tok("exp 1.5", set("exp", json!(1.5)), deny(401, "token_expired")),
        Case::tok("exp i64::MIN", set("exp", json!(i64::MIN)), deny(401, "token_expired")),
        Case::tok("exp -1e300", set("exp", json!(-1e300)), deny(401, "token_expired")),
        Case::tok("exp two minutes ago (beyond the 60 s leeway)", set("exp", json!(now - 120)), deny(401, "token_expired")),
        Case::tok("exp 30 s ago (inside the leeway)", set("exp", json!(now - 30)), allow()),
        Case::tok("exp 1e300", set("exp", json!(1e300)), allow()),
        Case::tok("exp u64::MAX", set("exp", json!(u64::MAX)), allow()),
        Case::tok("exp a float in the future", set("exp", json!(now as f64 + 3600.75)), allow()),
        Case::tok("exp u64::MAX + 1", exp_text("18446744073709551616"), allow()),
        Case::tok("exp a 40-digit integer", exp_text("9999999999999999999999999999999999999999"), allow()),
        Case::tok("exp 1E12 (exponent form)", exp_text("1E12"), allow()),
        Case::tok("exp 1e400 (out of f64 range)", exp_text("1e400"), deny(401, "token_malformed")),
        Case::tok("exp -1e400", exp_text("-1e400"), deny(401, "token_malformed")),
    ]);

    // --- nbf values
    #[rustfmt::skip]
    c.extend([
        Case::tok("nbf an hour ahead", set("nbf", json!(now + 3600)), deny(401, "token_not_yet_valid")),
        Case::tok("nbf 1e300", set("nbf", json!(1e300)), deny(401, "token_not_yet_valid")),
        Case::tok("nbf u64::MAX", set("nbf", json!(u64::MAX)), deny(401, "token_not_yet_valid")),
        Case::tok("nbf 30 s ahead (inside the leeway)", set("nbf", json!(now + 30)), allow()),
        Case::tok("nbf negative", set("nbf", json!(-1)), allow()),
        Case::tok("nbf 0", set("nbf", json!(0)), allow()),
        Case::tok("nbf -1e300", set("nbf", json!(-1e300)), allow()),
        Case::tok("nbf a float in the past", set("nbf", json!(now as f64 - 0.5)), allow()),
    ]);

    // --- iat values (README: iat in the future beyond the leeway is token_not_yet_valid)
    #[rustfmt::skip]
    c.extend([
        Case::tok("iat an hour ahead", set("iat", json!(now + 3600)), deny(401, "token_not_yet_valid")),
        Case::tok("iat 1e300", set("iat", json!(1e300)), deny(401, "token_not_yet_valid")),
        Case::tok("iat i64::MAX", set("iat", json!(i64::MAX)), deny(401, "token_not_yet_valid")),
        Case::tok("iat 30 s ahead (inside the leeway)", set("iat", json!(now + 30)), allow()),
        Case::tok("iat negative", set("iat", json!(-1)), allow()),
        Case::tok("iat 0", set("iat", json!(0)), allow()),
        Case::tok("iat missing", ctx.without_claims(&["iat"]), allow()),
    ]);

    // --- aud
    #[rustfmt::skip]
    c.extend([
        Case::tok("aud a plain string equal to the audience (RFC 7519)", set("aud", json!(AUD)), allow()),
        Case::tok("aud an array with the audience among others", set("aud", json!(["other", AUD, "more"])), allow()),
        Case::tok("aud the audience twice", set("aud", json!([AUD, AUD])), allow()),
        Case::tok("aud an empty array", set("aud", json!([])), deny(403, "audience_mismatch")),
        Case::tok("aud another audience", set("aud", json!(["other"])), deny(403, "audience_mismatch")),
        Case::tok("aud an empty string", set("aud", json!("")), deny(403, "audience_mismatch")),
        Case::tok("aud upper case", set("aud", json!(AUD.to_uppercase())), deny(403, "audience_mismatch")),
        Case::tok("aud with a trailing space", set("aud", json!(format!("{AUD} "))), deny(403, "audience_mismatch")),
        Case::tok("aud a prefix", set("aud", json!(&AUD[..63])), deny(403, "audience_mismatch")),
        Case::tok("aud containing it as a substring", set("aud", json!(format!("x{AUD}"))), deny(403, "audience_mismatch")),
        Case::tok("aud comma-joined with another", set("aud", json!(format!("{AUD},other"))), deny(403, "audience_mismatch")),
        Case::tok("aud missing", ctx.without_claims(&["aud"]), deny(403, "audience_mismatch")),
        Case::tok("aud null", set("aud", json!(null)), deny(401, "token_malformed")),
        Case::tok("aud a number", set("aud", json!(42)), deny(401, "token_malformed")),
        Case::tok("aud a bool", set("aud", json!(true)), deny(401, "token_malformed")),
        Case::tok("aud an object", set("aud", json!({"aud": AUD})), deny(401, "token_malformed")),
        Case::tok("aud an array of numbers", set("aud", json!([1, 2])), deny(401, "token_malformed")),
        Case::tok("aud an array with the audience and a number", set("aud", json!([AUD, 1])), deny(401, "token_malformed")),
        Case::tok("aud an array with null", set("aud", json!([AUD, null])), deny(401, "token_malformed")),
        Case::tok("aud a nested array", set("aud", json!([[AUD]])), deny(401, "token_malformed")),
    ]);

    // --- iss
    let escaped_iss = Value::Object(ctx.claims())
        .to_string()
        .replace("http://", "http:\\/\\/");
    #[rustfmt::skip]
    c.extend([
        Case::tok("iss with a trailing slash", set("iss", json!(format!("{iss}/"))), deny(401, "issuer_mismatch")),
        Case::tok("iss in upper case", set("iss", json!(iss.to_uppercase())), deny(401, "issuer_mismatch")),
        Case::tok("iss https instead of http", set("iss", json!(iss.replace("http://", "https://"))), deny(401, "issuer_mismatch")),
        Case::tok("iss localhost instead of 127.0.0.1", set("iss", json!(iss.replace("127.0.0.1", "localhost"))), deny(401, "issuer_mismatch")),
        Case::tok("iss with the certs path", set("iss", json!(format!("{iss}/cdn-cgi/access/certs"))), deny(401, "issuer_mismatch")),
        Case::tok("iss with a trailing space", set("iss", json!(format!("{iss} "))), deny(401, "issuer_mismatch")),
        Case::tok("iss with a NUL", set("iss", json!(format!("{iss}\u{0}"))), deny(401, "issuer_mismatch")),
        Case::tok("iss empty", set("iss", json!("")), deny(401, "issuer_mismatch")),
        Case::tok("iss null", set("iss", json!(null)), deny(401, "issuer_mismatch")),
        Case::tok("iss a number", set("iss", json!(1)), deny(401, "issuer_mismatch")),
        Case::tok("iss an array holding the issuer", set("iss", json!([iss])), deny(401, "issuer_mismatch")),
        Case::tok("iss an object", set("iss", json!({"url": iss})), deny(401, "issuer_mismatch")),
        Case::tok("iss another issuer", set("iss", json!("https://evil.cloudflareaccess.com")), deny(401, "issuer_mismatch")),
        Case::tok("iss missing", ctx.without_claims(&["iss"]), deny(401, "issuer_mismatch")),
        Case::tok("iss spelled with JSON escapes (http:\\/\\/) is the issuer", ctx.with_payload_text(&escaped_iss), allow()),
    ]);

    // --- type and token kind (the dev issuer is a generic `url:` issuer)
    let service_no_sub = {
        let mut p = ctx.payload_without(&["sub", "email"]);
        p["common_name"] = json!("ci.access");
        p
    };
    #[rustfmt::skip]
    c.extend([
        Case::tok("type org", set("type", json!("org")), deny(403, "token_type_not_allowed")),
        Case::tok("type service", set("type", json!("service")), deny(403, "token_type_not_allowed")),
        Case::tok("type APP (upper case)", set("type", json!("APP")), deny(403, "token_type_not_allowed")),
        Case::tok("type app with a trailing space", set("type", json!("app ")), deny(403, "token_type_not_allowed")),
        Case::tok("type empty", set("type", json!("")), deny(403, "token_type_not_allowed")),
        Case::tok("type a number", set("type", json!(1)), deny(401, "token_malformed")),
        Case::tok("type a bool", set("type", json!(true)), deny(401, "token_malformed")),
        Case::tok("type null", set("type", json!(null)), deny(401, "token_malformed")),
        Case::tok("type an array [\"app\"]", set("type", json!(["app"])), deny(401, "token_malformed")),
        Case::tok("type an object", set("type", json!({"type": "app"})), deny(401, "token_malformed")),
        // README: generic (issuer.url) issuers may omit `type`. (The Cloudflare-issuer refusal
        // of a missing type needs an https team domain and is unit-tested, not reachable here.)
        Case::tok("type missing (generic issuer)", ctx.without_claims(&["type"]), allow()),
        Case::tok("org token minted by the dev issuer", ctx.issuer.token(json!({"type": "org"})), deny(403, "token_type_not_allowed")),
        // Service-token shapes on a policy admitting only app tokens.
        Case::tok("service token minted by the dev issuer", ctx.issuer.token(json!({"type": "service"})), deny(403, "token_type_not_allowed")),
        Case::tok("service shape: common_name, empty sub", ctx.with_claims(json!({"common_name": "ci.access", "sub": "", "email": null})), deny(403, "token_type_not_allowed")),
        Case::tok("service shape: common_name, no sub", ctx.signed(&ctx.jose(), &service_no_sub), deny(403, "token_type_not_allowed")),
        Case::tok("app token that also has a common_name and a sub", set("common_name", json!("ci.access")), allow()),
        Case::tok("sub as a number", set("sub", json!(7)), deny(401, "token_malformed")),
        Case::tok("sub null with a common_name", ctx.with_claims(json!({"sub": null, "common_name": "ci.access"})), deny(401, "token_malformed")),
    ]);

    // --- order: authentication failures (401) before authorisation ones (403)
    let evil_no_exp = {
        let mut p = ctx.payload_without(&["exp"]);
        p["iss"] = json!("https://evil.example");
        p
    };
    let dup_expired = ctx.raw_payload(&format!(r#""exp":{}"#, now - 3600));
    #[rustfmt::skip]
    c.extend([
        Case::tok("expired and wrong audience: expiry first", ctx.with_claims(json!({"exp": now - 3600, "aud": ["other"]})), deny(401, "token_expired")),
        Case::tok("wrong issuer and expired: issuer first", ctx.with_claims(json!({"exp": now - 3600, "iss": "https://evil.example"})), deny(401, "issuer_mismatch")),
        Case::tok("wrong issuer and exp missing: issuer first", ctx.signed(&ctx.jose(), &evil_no_exp), deny(401, "issuer_mismatch")),
        Case::tok("wrong audience and org type: audience first", ctx.with_claims(json!({"aud": ["other"], "type": "org"})), deny(403, "audience_mismatch")),
        Case::tok("service shape with wrong audience: audience first", ctx.with_claims(json!({"aud": ["other"], "common_name": "ci", "sub": ""})), deny(403, "audience_mismatch")),
        Case::tok("not yet valid and wrong type: time first", ctx.with_claims(json!({"nbf": now + 3600, "type": "org"})), deny(401, "token_not_yet_valid")),
        Case::tok("duplicate claim and expired: malformed first", ctx.with_payload_text(&dup_expired), deny(401, "token_malformed")),
    ]);

    // --- duplicate keys below the top level (README: token_malformed at every depth)
    let appended = |extra: &str| ctx.with_payload_text(&ctx.raw_payload(extra));
    #[rustfmt::skip]
    c.extend([
        Case::tok("nested duplicate key: groups twice inside custom", appended(r#""custom":{"groups":["a"],"groups":["admins"]}"#), deny(401, "token_malformed")),
        Case::tok("nested duplicate key: groups twice inside custom, one spelled with an escape", appended(r#""custom":{"groups":["a"],"gr\u006fups":["admins"]}"#), deny(401, "token_malformed")),
        Case::tok("nested duplicate key: a key twice three objects deep", appended(r#""custom":{"a":{"b":{"role":"user","role":"admin"}}}"#), deny(401, "token_malformed")),
        Case::tok("nested duplicate key: a key twice in an object inside an array", appended(r#""roles":[{"name":"user"},{"name":"user","name":"admin"}]"#), deny(401, "token_malformed")),
        Case::tok("the same key in sibling objects is not a duplicate", appended(r#""roles":[{"name":"a"},{"name":"b"}],"custom":{"name":"c"}"#), allow()),
    ]);

    // --- email rules: ASCII case folding only; an unusable email fails closed both ways
    let on = |policy: &str, name: &str, patch: Value, expect: Expect| {
        Case::tok(name, ctx.with_claims(patch), expect).path(format!("/auth/apps/{policy}"))
    };
    #[rustfmt::skip]
    c.extend([
        on("allow-domain", "emailDomain kube.io: eve@kube.io passes", json!({"email": "eve@kube.io"}), allow()),
        on("allow-domain", "emailDomain kube.io: ASCII case is folded (EVE@KUBE.IO)", json!({"email": "EVE@KUBE.IO"}), allow()),
        on("allow-domain", "emailDomain kube.io: KELVIN SIGN (eve@\u{212A}ube.io) does not pass", json!({"email": "eve@\u{212A}ube.io"}), deny(403, "rule_denied")),
        on("allow-domain", "emailDomain kube.io: trailing dot (eve@kube.io.) does not pass", json!({"email": "eve@kube.io."}), deny(403, "rule_denied")),
        on("allow-email", "allow email: non-ASCII look-alike (Cyrillic a) does not pass", json!({"email": "\u{430}lice@example.com"}), deny(403, "rule_denied")),
        on("allow-email", "allow email: non-ASCII look-alike (zero-width space) does not pass", json!({"email": "alice@example.com\u{200B}"}), deny(403, "rule_denied")),
        on("allow-email", "allow email: non-ASCII look-alike (dotted capital I) does not pass", json!({"email": "AL\u{130}CE@example.com"}), deny(403, "rule_denied")),
        on("allow-email", "allow email: non-ASCII look-alike (fullwidth full stop) does not pass", json!({"email": "alice@example\u{FF0E}com"}), deny(403, "rule_denied")),
        on("allow-email", "allow email: the ASCII address passes", json!({}), allow()),
        on("deny-domain", "deny emailDomain kube.io: KELVIN SIGN cannot dodge it", json!({"email": "eve@\u{212A}ube.io"}), deny(403, "rule_denied")),
        on("deny-domain", "deny emailDomain kube.io: any non-ASCII email is denied (fail closed)", json!({"email": "jos\u{e9}@example.com"}), deny(403, "rule_denied")),
        on("deny-domain", "deny emailDomain kube.io: an email that is not a string is denied", json!({"email": ["eve@kube.io"]}), deny(403, "rule_denied")),
        on("deny-domain", "deny emailDomain kube.io: another ASCII domain passes", json!({}), allow()),
    ]);
    // email_verified (generic issuer): anything but true makes the email unusable, so the
    // allow-email rule stops matching and the deny-domain rule starts matching.
    #[rustfmt::skip]
    let verified = [
        // (shown as,  value,             on allow-email,            on deny-domain)
        ("true",      json!(true),    allow(),                   allow()),
        ("\"true\"",  json!("true"),  allow(),                   allow()),
        ("false",     json!(false),   deny(403, "rule_denied"), deny(403, "rule_denied")),
        ("\"false\"", json!("false"), deny(403, "rule_denied"), deny(403, "rule_denied")),
        ("null",      json!(null),    deny(403, "rule_denied"), deny(403, "rule_denied")),
    ];
    for (what, v, on_allow_email, on_deny_domain) in verified {
        let patch = json!({ "email_verified": v });
        #[rustfmt::skip]
        c.extend([
            on("allow-email", &format!("allow email, email_verified {what}"), patch.clone(), on_allow_email),
            on("deny-domain", &format!("deny emailDomain, email_verified {what}"), patch, on_deny_domain),
        ]);
    }
    #[rustfmt::skip]
    c.push(Case::tok("email_verified false on a policy without email rules: allowed", set("email_verified", json!(false)), allow()));

    run("claims", ctx, c, |_| vec![]);
}
