//! Claim values that become headers: control characters and Unicode separators (the header is
//! dropped whole, the others still go out), safe Unicode (emitted as-is), the 3072-byte limit,
//! value encodings, list items holding the join separator, and the drop counter.

use serde_json::{Value, json};

use crate::{Case, Ctx, MAX_VALUE_BYTES, allow_with, deny, run};

#[test]
fn cases() {
    let ctx = Ctx::start();
    let email = ("x-auth-request-email", Some("alice@example.com"));
    let mut c: Vec<Case> = Vec::new();

    // Unsafe: the header is dropped whole, the others still go out.
    let dropped_name = || allow_with(&[("x-auth-request-name", None), ("x-admin", None), email]);
    for (what, value) in [
        ("CRLF header injection", "Eve\r\nX-Admin: true"),
        ("LF", "Eve\nX-Admin: true"),
        ("CR", "Eve\rX-Admin: true"),
        ("NUL", "Eve\u{0}"),
        ("tab", "Eve\tAdams"),
        ("vertical tab", "Eve\u{b}"),
        ("form feed", "Eve\u{c}"),
        ("ESC (ANSI sequence)", "Eve\u{1b}[31m"),
        ("BEL", "Eve\u{7}"),
        ("DEL", "Eve\u{7f}"),
        ("C1 NEL U+0085", "Eve\u{85}X-Admin: true"),
        ("C1 first U+0080", "Eve\u{80}"),
        ("C1 CSI U+009B", "Eve\u{9b}31m"),
        ("C1 last U+009F", "Eve\u{9f}"),
        ("only a LF", "\n"),
        ("LINE SEPARATOR U+2028", "Eve\u{2028}X-Admin: true"),
        ("PARAGRAPH SEPARATOR U+2029", "Eve\u{2029}X-Admin: true"),
        ("only a U+2028", "\u{2028}"),
    ] {
        let token = ctx.with_claims(json!({ "name": value }));
        c.push(Case::tok(
            format!("name with {what}: dropped"),
            token,
            dropped_name(),
        ));
    }
    // Expectations: header `h` absent (email still there), or `h` exactly `v`.
    let dropped = |h: &'static str| allow_with(&[(h, None), email]);
    let emitted = |h: &'static str, v: &str| allow_with(&[(h, Some(v))]);
    let user_kept = || {
        allow_with(&[
            ("x-auth-request-email", None),
            ("x-auth-request-user", Some("user-1")),
        ])
    };
    // Tokens: the valid claims with `patch` merged, or with `custom.<key>` set.
    let claims = |patch| ctx.with_claims(patch);
    let custom = |key: &str, v: Value| ctx.with_claims(json!({"custom": { key: v }}));
    #[rustfmt::skip]
    c.extend([
        Case::tok("email with CRLF: email dropped, sub kept", claims(json!({"email": "a@b.c\r\nX-Auth-Request-User: admin"})), user_kept()),
        Case::tok("sub with a NUL: user dropped, email kept", claims(json!({"sub": "admin\u{0}"})), dropped("x-auth-request-user")),
        Case::tok("groups with one LF element: whole header dropped", custom("groups", json!(["eng", "a\nb", "sre"])), dropped("x-auth-request-groups")),
        Case::tok("groups with a CR inside a nested array: JSON-escaped, emitted", custom("groups", json!([["a\rb"]])), emitted("x-auth-request-groups", r#"["a\rb"]"#)),
        Case::tok("json-format claim with control characters is escaped, so it goes out", custom("meta", json!({"note": "a\r\nb\u{0}"})), emitted("x-auth-request-meta", r#"{"note":"a\r\nb\u0000"}"#)),
        Case::tok("groups with one U+2028 element: whole header dropped, request allowed", custom("groups", json!(["eng", "a\u{2028}b"])), dropped("x-auth-request-groups")),
        Case::tok("json-format claim with U+2029 (JSON does not escape it): dropped", custom("meta", json!({"note": "a\u{2029}b"})), dropped("x-auth-request-meta")),
        Case::tok("email with U+2028: email dropped, sub kept", claims(json!({"email": "a@b.c\u{2028}X-Auth-Request-User: admin"})), user_kept()),
        Case::tok("json-format claim with C1 and DEL raw: dropped", custom("meta", json!("x\u{85}\u{7f}")), dropped("x-auth-request-meta")),
    ]);

    // Safe unicode and punctuation: emitted exactly, as UTF-8 bytes.
    for (what, value) in [
        ("Latin accents", "José Müller"),
        ("CJK", "山田太郎"),
        ("emoji with ZWJ", "👩‍💻 Zoë"),
        ("no-break space", "Jos\u{a0}é"),
        ("colons and semicolons", "a: b; c=d"),
        ("quotes and backslashes", r#"\"quoted\" \\"#),
        (
            "percent-encoded CRLF as literal text",
            "a%0d%0aX-Admin:%20true",
        ),
        ("HTML", "<script>alert(1)</script>"),
    ] {
        let token = ctx.with_claims(json!({ "name": value }));
        let expect = allow_with(&[("x-auth-request-name", Some(value)), email]);
        c.push(Case::tok(
            format!("name with {what}: emitted as-is"),
            token,
            expect,
        ));
    }

    // Length: more than 3072 bytes is dropped whole, never truncated.
    let exactly = "x".repeat(MAX_VALUE_BYTES);
    let one_more = "x".repeat(MAX_VALUE_BYTES + 1);
    let multibyte_exact = "é".repeat(MAX_VALUE_BYTES / 2);
    let multibyte_over = "é".repeat(MAX_VALUE_BYTES / 2 + 1);
    // 1000 groups "g000".."g999" joined: 4999 bytes; 614 of them: 3069.
    let groups: Vec<String> = (0..1000).map(|i| format!("g{i:03}")).collect();
    let fits = &groups[..614];
    let joined = fits.join(",");
    assert_eq!(joined.len(), 3069);
    let name = |v: &str| ctx.with_claims(json!({ "name": v }));
    #[rustfmt::skip]
    c.extend([
        Case::tok("name of exactly 3072 bytes: emitted", name(&exactly), emitted("x-auth-request-name", &exactly)),
        Case::tok("name of 3073 bytes: dropped", name(&one_more), dropped("x-auth-request-name")),
        Case::tok("name of 1536 two-byte chars (3072 bytes): emitted", name(&multibyte_exact), emitted("x-auth-request-name", &multibyte_exact)),
        Case::tok("name of 1537 two-byte chars (3074 bytes): dropped", name(&multibyte_over), dropped("x-auth-request-name")),
        Case::tok("name of 10000 bytes: dropped", name(&"n".repeat(10_000)), dropped("x-auth-request-name")),
        Case::tok("1000 groups joined beyond 3072 bytes: dropped, not truncated", custom("groups", json!(groups)), dropped("x-auth-request-groups")),
        Case::tok("614 groups joined within 3072 bytes: emitted", custom("groups", json!(fits)), emitted("x-auth-request-groups", &joined)),
    ]);

    // Value encodings (docs/reference.md, "Claim values as headers": strings as-is, numbers/bools JSON text, arrays joined,
    // objects JSON).
    let groups_as = |want: Option<&str>| allow_with(&[("x-auth-request-groups", want), email]);
    #[rustfmt::skip]
    c.extend([
        Case::tok("groups array of strings", custom("groups", json!(["eng", "sre"])), groups_as(Some("eng,sre"))),
        Case::tok("groups of mixed types", custom("groups", json!(["a", 1, true, 1.5])), groups_as(Some("a,1,true,1.5"))),
        Case::tok("groups with nulls skipped", custom("groups", json!([null, "a", null])), groups_as(Some("a"))),
        Case::tok("groups empty array", custom("groups", json!([])), groups_as(None)),
        Case::tok("groups only nulls", custom("groups", json!([null])), groups_as(None)),
        Case::tok("groups a plain string", custom("groups", json!("eng")), groups_as(Some("eng"))),
        Case::tok("groups an object", custom("groups", json!({"k": "v"})), groups_as(Some(r#"{"k":"v"}"#))),
        Case::tok("groups null", custom("groups", json!(null)), groups_as(None)),
        Case::tok("groups empty string", custom("groups", json!("")), groups_as(None)),
        Case::tok("custom is a string (path does not resolve)", claims(json!({"custom": "groups"})), groups_as(None)),
        Case::tok("custom is an array (path does not resolve)", claims(json!({"custom": [{"groups": ["x"]}]})), groups_as(None)),
        Case::tok("dotted claim name is not a path", claims(json!({"custom.groups": ["x"]})), groups_as(None)),
    ]);
    // A list item holding the join separator would read as two items to an app splitting on
    // it (`staff,admins` → `admins`): the header is dropped whole. `format: json` keeps it.
    #[rustfmt::skip]
    c.extend([
        Case::tok("groups item with a comma (join ,): dropped, admins never an item", custom("groups", json!(["staff,admins", "eng"])), groups_as(None)),
        Case::tok("groups item that is only a comma: dropped", custom("groups", json!(["eng", ","])), groups_as(None)),
        Case::tok("groups item that is an object with a comma in its JSON: dropped", custom("groups", json!([{"a": 1, "b": 2}])), groups_as(None)),
        Case::tok("groups items with spaces (join ,): emitted", custom("groups", json!(["site admins", "eng"])), groups_as(Some("site admins,eng"))),
        Case::tok("json-format list with a comma inside an item: emitted as JSON", custom("meta", json!(["staff,admins", "eng"])), emitted("x-auth-request-meta", r#"["staff,admins","eng"]"#)),
    ]);
    let level = |v: Value| ctx.with_claims(json!({ "level": v }));
    let nested_dup = ctx.raw_payload(r#""custom":{"groups":["a"],"groups":["b"]}"#);
    let named_like_headers = json!({"X-Admin": "true", "x-auth-request-admin": "true"});
    #[rustfmt::skip]
    c.extend([
        Case::tok("level integer", level(json!(42)), emitted("x-auth-request-level", "42")),
        Case::tok("level negative", level(json!(-7)), emitted("x-auth-request-level", "-7")),
        Case::tok("level float", level(json!(1.5)), emitted("x-auth-request-level", "1.5")),
        // serde_json's JSON text for 1e300.
        Case::tok("level 1e300", level(json!(1e300)), emitted("x-auth-request-level", "1e+300")),
        Case::tok("level u64::MAX", level(json!(u64::MAX)), emitted("x-auth-request-level", "18446744073709551615")),
        Case::tok("level bool", level(json!(false)), emitted("x-auth-request-level", "false")),
        Case::tok("level object", level(json!({"a": [1, "b"]})), emitted("x-auth-request-level", r#"{"a":[1,"b"]}"#)),
        Case::tok("json format of an array", custom("meta", json!(["a", "b"])), emitted("x-auth-request-meta", r#"["a","b"]"#)),
        Case::tok("json format of unicode keeps UTF-8", custom("meta", json!({"n": "José"})), emitted("x-auth-request-meta", r#"{"n":"José"}"#)),
        Case::tok("nested duplicate key inside a mapped claim (custom.groups twice): malformed", ctx.with_payload_text(&nested_dup), deny(401, "token_malformed")),
        Case::tok("a claim named like a header does not become one", claims(named_like_headers), allow_with(&[("x-admin", None), ("x-auth-request-admin", None), email])),
    ]);
    let all_unsafe = json!({
        "email": "ok@example.com",
        "sub": "u\r\n",
        "name": "José",
        "custom": {"groups": ["x\u{0}"], "meta": {"ok": true}},
        "level": "l\u{9b}",
    });
    #[rustfmt::skip]
    c.push(Case::tok("all unsafe at once: only the safe ones go out", claims(all_unsafe), allow_with(&[
        ("x-auth-request-email", Some("ok@example.com")),
        ("x-auth-request-user", None),
        ("x-auth-request-name", Some("José")),
        ("x-auth-request-groups", None),
        ("x-auth-request-meta", Some(r#"{"ok":true}"#)),
        ("x-auth-request-level", None),
    ])));

    assert!(
        !ctx.server
            .metrics()
            .contains("accessgate_header_values_dropped_total{"),
        "nothing dropped before the cases"
    );
    // README: every dropped header is counted in accessgate_header_values_dropped_total.
    run("claim_headers", ctx, c, |ctx| {
        let m = ctx.server.metrics();
        [
            ("x-auth-request-name", "control_character"),
            ("x-auth-request-name", "too_long"),
            ("x-auth-request-groups", "too_long"),
            ("x-auth-request-groups", "control_character"),
            ("x-auth-request-groups", "separator_in_item"),
            ("x-auth-request-meta", "control_character"),
            ("x-auth-request-email", "control_character"),
        ]
        .iter()
        .map(|(h, r)| {
            format!(r#"accessgate_header_values_dropped_total{{policy="apps/web",header="{h}",reason="{r}"}}"#)
        })
        .filter(|needle| !m.contains(needle.as_str()))
        .map(|needle| format!("metric missing after the cases: {needle}"))
        .collect()
    });
}
