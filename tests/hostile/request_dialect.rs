//! The ingress-nginx dialect and the endpoints: `X-Original-URL`, `X-Original-Method`, other
//! proxies' headers, policy selection by path, host routing with `?host=$host`, ambiguous paths
//! (segments a Windows server trims included).
//! Every request here carries the valid token unless it says "no token".

use crate::{Case, Ctx, Expect, NAMED, ORIGINAL, allow, deny, run};

const APP: &str = "app.example.test";

#[test]
fn cases() {
    let ctx = Ctx::start();
    let valid = ctx.valid();
    // A case with the valid token.
    let t = |name: &str, expect: Expect| Case::tok(name.to_owned(), &valid, expect);
    // Bare /auth routed by nginx's `$host` (`?host=$host`) and the path of X-Original-URL.
    let r = |name: &str, host: &str, url: &str, expect: Expect| {
        t(name, expect).path(format!("/auth?host={host}")).url(url)
    };
    let mut c: Vec<Case> = Vec::new();

    // --- X-Original-URL
    let path_8k = format!("https://app.example.test/{}", "p".repeat(8192));
    #[rustfmt::skip]
    c.extend([
        t("X-Original-URL missing", deny(400, "request_malformed")).no_url(),
        Case::new("X-Original-URL missing, no token", deny(400, "request_malformed")).no_url(),
        t("X-Original-URL empty", deny(400, "request_malformed")).url(""),
        t("X-Original-URL relative path", deny(400, "request_malformed")).url("/admin"),
        t("X-Original-URL scheme-relative", deny(400, "request_malformed")).url("//app.example.test/"),
        t("X-Original-URL garbage", deny(400, "request_malformed")).url("not a url"),
        t("X-Original-URL only a scheme", deny(400, "request_malformed")).url("https://"),
        t("X-Original-URL space in host", deny(400, "request_malformed")).url("https://exa mple.com/"),
        t("X-Original-URL ftp scheme", deny(400, "request_malformed")).url("ftp://app.example.test/"),
        t("X-Original-URL file scheme", deny(400, "request_malformed")).url("file:///etc/passwd"),
        t("X-Original-URL javascript scheme", deny(400, "request_malformed")).url("javascript:alert(1)"),
        t("X-Original-URL data scheme", deny(400, "request_malformed")).url("data:text/plain,hi"),
        t("X-Original-URL ws scheme", deny(400, "request_malformed")).url("ws://app.example.test/"),
        t("X-Original-URL port out of range", deny(400, "request_malformed")).url("https://app.example.test:99999/"),
        t("X-Original-URL %ff in the path", deny(400, "request_malformed")).url("https://app.example.test/%ff"),
        t("X-Original-URL overlong UTF-8 %c0%af in the path", deny(400, "request_malformed")).url("https://app.example.test/%c0%af"),
        t("X-Original-URL %00 in the path", deny(400, "request_malformed")).url("https://app.example.test/a%00b"),
        t("X-Original-URL %0d%0a in the path", deny(400, "request_malformed")).url("https://app.example.test/a%0d%0aX-Admin:%20true"),
        t("X-Original-URL %09 tab in the path", deny(400, "request_malformed")).url("https://app.example.test/a%09b"),
        t("X-Original-URL %7f DEL in the path", deny(400, "request_malformed")).url("https://app.example.test/a%7f"),
        t("X-Original-URL %c2%85 C1 NEL in the path", deny(400, "request_malformed")).url("https://app.example.test/a%c2%85"),
        t("X-Original-URL raw UTF-8 in the path", deny(400, "request_malformed")).url("https://app.example.test/é"),
        t("X-Original-URL raw UTF-8 host", deny(400, "request_malformed")).url("https://bücher.example/"),
        t("two X-Original-URL headers", deny(400, "request_malformed")).header("x-original-url", "https://other.example.test/"),
        t("two identical X-Original-URL headers", deny(400, "request_malformed")).header("x-original-url", ORIGINAL),
        // Odd but legitimate URLs: the named endpoint does not route by URL.
        t("X-Original-URL upper-case scheme and host: allowed", allow()).url("HTTPS://APP.EXAMPLE.TEST/"),
        t("X-Original-URL with a port: allowed", allow()).url("https://app.example.test:8443/x"),
        t("X-Original-URL IPv6 host: allowed", allow()).url("https://[::1]:8443/"),
        t("X-Original-URL punycode host: allowed", allow()).url("https://xn--bcher-kva.example/"),
        t("X-Original-URL query with %ff (only the path is decoded): allowed", allow()).url("https://app.example.test/?q=%ff"),
        t("X-Original-URL fragment: allowed", allow()).url("https://app.example.test/#frag"),
        t("X-Original-URL dot segments: allowed", allow()).url("https://app.example.test/a/../../b/./c"),
        t("X-Original-URL encoded dot segments: allowed", allow()).url("https://app.example.test/%2e%2e/%2e%2e/etc/passwd"),
        t("X-Original-URL 8 KiB path: allowed", allow()).url(path_8k),
    ]);

    // --- X-Original-Method
    let m = |name: &str, method: &str, expect: Expect| {
        t(name, expect).header("x-original-method", method)
    };
    #[rustfmt::skip]
    c.extend([
        m("X-Original-Method lower case", "get", deny(400, "request_malformed")),
        m("X-Original-Method mixed case", "Get", deny(400, "request_malformed")),
        m("X-Original-Method empty", "", deny(400, "request_malformed")),
        m("X-Original-Method with a space", "G ET", deny(400, "request_malformed")),
        m("X-Original-Method with a digit", "GET1", deny(400, "request_malformed")),
        m("X-Original-Method with a slash", "GET/", deny(400, "request_malformed")),
        m("X-Original-Method with raw UTF-8", "GÉT", deny(400, "request_malformed")),
        m("X-Original-Method with a semicolon", "GET;", deny(400, "request_malformed")),
        m("two X-Original-Method headers", "GET", deny(400, "request_malformed")).header("x-original-method", "POST"),
        m("X-Original-Method POST: allowed", "POST", allow()),
        m("X-Original-Method DELETE: allowed", "DELETE", allow()),
        m("X-Original-Method PATCH: allowed", "PATCH", allow()),
        m("X-Original-Method CONNECT: allowed", "CONNECT", allow()),
        m("X-Original-Method PROPFIND: allowed", "PROPFIND", allow()),
        // Regression: nginx accepts [A-Z_-] in a method, so a WebDAV/DeltaV request (RFC 3253
        // VERSION-CONTROL, UPnP M-SEARCH) that ingress-nginx forwards must be decided, not refused.
        m("X-Original-Method VERSION-CONTROL (RFC 3253): allowed", "VERSION-CONTROL", allow()),
        m("X-Original-Method with an underscore (MY_METHOD): allowed", "MY_METHOD", allow()),
    ]);

    // --- foreign dialects (another proxy's headers on the nginx endpoint)
    #[rustfmt::skip]
    c.extend([
        t("foreign header x-forwarded-uri", deny(400, "dialect_mismatch")).header("x-forwarded-uri", "/"),
        t("foreign header x-forwarded-method", deny(400, "dialect_mismatch")).header("x-forwarded-method", "/"),
        t("foreign header x-envoy-expected-rq-timeout-ms", deny(400, "dialect_mismatch")).header("x-envoy-expected-rq-timeout-ms", "/"),
        t("foreign header X-FORWARDED-URI", deny(400, "dialect_mismatch")).header("X-FORWARDED-URI", "/"),
        t("foreign header with an empty value", deny(400, "dialect_mismatch")).header("x-forwarded-uri", ""),
        Case::new("foreign header and no X-Original-URL", deny(400, "dialect_mismatch")).no_url().header("x-forwarded-method", "GET"),
        Case::new("foreign header, no token", deny(400, "dialect_mismatch")).header("x-forwarded-uri", "/"),
    ]);
    // Headers ingress-nginx itself sends on the auth subrequest are not foreign.
    c.push(
        t("ingress-nginx's own headers: allowed", allow())
            .header("x-original-method", "GET")
            .header("x-real-ip", "203.0.113.9")
            .header("x-forwarded-for", "203.0.113.9, 10.0.0.1")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "app.example.test")
            .header("x-sent-from", "nginx-ingress-controller")
            .header("x-request-id", "abc")
            .header("x-auth-request-redirect", "/x"),
    );
    c.push(
        t("garbage X-Real-IP and X-Request-ID: allowed", allow())
            .header("x-real-ip", "not an ip")
            .header("x-request-id", "é"),
    );

    // --- endpoints and policy selection
    let long_name = format!("/auth/apps/{}", "a".repeat(5000));
    #[rustfmt::skip]
    c.extend([
        t("endpoint unknown name", deny(503, "policy_unknown")).path("/auth/apps/nope"),
        t("endpoint unknown namespace", deny(503, "policy_unknown")).path("/auth/other/web"),
        t("endpoint names in upper case", deny(503, "policy_unknown")).path("/auth/APPS/WEB"),
        t("endpoint trailing slash", deny(503, "policy_unknown")).path("/auth/apps/web/"),
        t("endpoint extra segment", deny(503, "policy_unknown")).path("/auth/apps/web/extra"),
        t("endpoint namespace only", deny(503, "policy_unknown")).path("/auth/apps"),
        t("endpoint encoded slash joining ns/name", deny(503, "policy_unknown")).path("/auth/apps%2Fweb"),
        t("endpoint NUL in the name", deny(503, "policy_unknown")).path("/auth/apps/web%00"),
        t("endpoint double slash", deny(503, "policy_unknown")).path("/auth//apps/web"),
        t("endpoint upper-case AUTH", deny(503, "policy_unknown")).path("/AUTH/apps/web"),
        t("endpoint unrelated path", deny(503, "policy_unknown")).path("/elsewhere"),
        t("endpoint root", deny(503, "policy_unknown")).path("/"),
        t("endpoint 5000-character name", deny(503, "policy_unknown")).path(long_name),
        t("endpoint percent-encoded letters decode to the name", allow()).path("/auth/%61pps/w%65b"),
        t("endpoint with a query string", allow()).path("/auth/apps/web?x=1&y"),
        t("POST to the auth endpoint", allow()).method("POST"),
        t("HEAD to the auth endpoint", allow()).method("HEAD"),
        t("OPTIONS to the auth endpoint", allow()).method("OPTIONS"),
        Case::new("unknown policy and no token: policy first", deny(503, "policy_unknown")).path("/auth/apps/nope"),
        Case::new("unknown policy and bad URL: request first", deny(400, "request_malformed")).path("/auth/apps/nope").url("garbage"),
        t("conflicting policy by name still works", allow()).path("/auth/apps/c1"),
    ]);

    // --- host routing: bare /auth?host=$host; the two hosts must agree
    #[rustfmt::skip]
    c.extend([
        r("route: configured host", APP, "https://app.example.test/any", allow()),
        r("route: host upper case with trailing dot", APP, "https://APP.EXAMPLE.TEST./x", allow()),
        r("route: host with port", APP, "https://app.example.test:8443/x", allow()),
        r("route: encoded dot segments", APP, "https://app.example.test/%2e%2e/%2e%2e/x", allow()),
        r("route: suffix-extended host", "app.example.test.evil.com", "https://app.example.test.evil.com/", deny(503, "policy_unknown")),
        r("route: host in the query", "evil.com", "https://evil.com/?app.example.test", deny(503, "policy_unknown")),
        r("route: host in the fragment", "evil.com", "https://evil.com/#@app.example.test", deny(503, "policy_unknown")),
        r("route: IP host", "127.0.0.1", "https://127.0.0.1/", deny(503, "policy_unknown")),
        r("route: subdomain", "x.app.example.test", "https://x.app.example.test/", deny(503, "policy_unknown")),
        r("route: two policies on one host", "conflict.example.test", "https://conflict.example.test/", deny(503, "policy_invalid")),
        // What nginx routed on and what X-Original-URL says must be one host, written plainly.
        t("route: no host parameter", deny(400, "request_malformed")).path("/auth").url("https://app.example.test/"),
        r("route: empty host parameter", "", "https://app.example.test/", deny(400, "request_malformed")),
        r("route: two host parameters", "app.example.test&host=app.example.test", "https://app.example.test/", deny(400, "request_malformed")),
        r("route: absolute-form: nginx routed elsewhere", "evil.example", "https://app.example.test/", deny(400, "request_malformed")),
        r("route: host parameter percent-encoded", "%61pp.example.test", "https://app.example.test/", deny(400, "request_malformed")),
        r("route: host parameter with a port", "app.example.test:443", "https://app.example.test/", deny(400, "request_malformed")),
        r("route: host as userinfo", "evil.com", "https://app.example.test@evil.com/", deny(400, "request_malformed")),
        r("route: userinfo with empty port", APP, "https://app.example.test:@evil.example/", deny(400, "request_malformed")),
        r("route: backslash trick", "evil.com", "https://evil.com\\@app.example.test/", deny(400, "request_malformed")),
        r("route: fragment after the port", APP, "https://app.example.test:#/admin/users", deny(400, "request_malformed")),
        r("route: query after the port", APP, "https://app.example.test:?/admin/users", deny(400, "request_malformed")),
        r("route: percent-escape in the host", APP, "https://%61pp.example.test/", deny(400, "request_malformed")),
        r("route: fullwidth letter in the host", APP, "https://\u{ff41}pp.example.test/", deny(400, "request_malformed")),
        r("route: non-numeric port", APP, "https://app.example.test:http/", deny(400, "request_malformed")),
    ]);
    // Path forms on a host with a guarded /admin (group admins; the token has none).
    for path in [
        "/admin/users",
        "/ADMIN/users",
        "/Admin/users",
        "/aDmIn",
        "/x/../admin",
        "/%61dmin",
        "//admin//users",
    ] {
        let url = format!("https://app.example.test{path}");
        let name = format!("route path: {path} meets the /admin policy");
        c.push(r(&name, APP, &url, deny(403, "rule_denied")));
    }
    // Ambiguous paths: refused where they would choose a policy; by name no policy is chosen
    // by path, so the same path is an ordinary request.
    #[rustfmt::skip]
    let ambiguous = [
        "/admin;/users", "/admin%3B/users", "/admin%3b/users", "/public/..;/admin/users",
        "/admin/users\\..\\..\\x", "/admin%5Cusers", "/public%2F..%2Fadmin", "/public%2f..%2fadmin",
        "/%2561dmin", "/admin%252Fx",
    ];
    for path in ambiguous {
        let url = format!("https://app.example.test{path}");
        #[rustfmt::skip]
        c.extend([
            r(&format!("route path: {path} is ambiguous"), APP, &url, deny(400, "request_malformed")),
            t(&format!("named path: {path} is accepted"), allow()).url(&url),
        ]);
    }
    // The forward dialect's bare endpoint follows the same path rules.
    #[rustfmt::skip]
    c.push(t("forward route path: ;", deny(400, "request_malformed"))
        .path("/forward").no_url().header("x-forwarded-host", APP).header("x-forwarded-uri", "/admin;/users"));
    // A segment ending in `.` or whitespace, raw or escaped: Windows path normalisation (IIS,
    // ASP.NET, anything mapping URLs onto files) trims it and serves `/admin/users`, while the
    // prefix match would see a segment `admin.` under the root policy. Refused on both bare
    // endpoints; by name the path chooses nothing and is accepted, as `;` is.
    #[rustfmt::skip]
    let trimmed = [
        "/admin./users", "/admin%2e/users", "/admin%2E/users", "/admin%20/users", "/admin /users",
        "/admin%c2%a0/users", "/admin...", "/admin%2e%2e%2e/users", "/admin.%20./users", "/admin.",
    ];
    for path in trimmed {
        let url = format!("https://app.example.test{path}");
        #[rustfmt::skip]
        c.extend([
            r(&format!("route path: {path} ends a segment Windows trims"), APP, &url, deny(400, "request_malformed")),
            t(&format!("forward route path: {path} ends a segment Windows trims"), deny(400, "request_malformed"))
                .path("/forward").no_url().header("x-forwarded-host", APP).header("x-forwarded-uri", path),
            t(&format!("named path: {path} is accepted"), allow()).url(&url),
        ]);
    }
    // Whitespace that is a control character is refused on every endpoint.
    for path in ["/admin%09/users", "/admin%0b/users", "/admin%0c/users"] {
        let url = format!("https://app.example.test{path}");
        #[rustfmt::skip]
        c.extend([
            r(&format!("route path: {path} ends a segment Windows trims"), APP, &url, deny(400, "request_malformed")),
            t(&format!("forward route path: {path} ends a segment Windows trims"), deny(400, "request_malformed"))
                .path("/forward").no_url().header("x-forwarded-host", APP).header("x-forwarded-uri", path),
        ]);
    }
    // Dots inside a segment, and dot segments themselves, are ordinary.
    #[rustfmt::skip]
    c.extend([
        r("route path: /admin/./users meets the /admin policy", APP, "https://app.example.test/admin/./users", deny(403, "rule_denied")),
        r("route path: /admin/v1.2/x.json meets the /admin policy", APP, "https://app.example.test/admin/v1.2/x.json", deny(403, "rule_denied")),
        r("route path: /.well-known/x: allowed", APP, "https://app.example.test/.well-known/x", allow()),
    ]);

    // --- written byte for byte
    let raw = |target: &str, url: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nX-Original-URL: {url}\r\nCf-Access-Jwt-Assertion: {valid}\r\nConnection: close\r\n\r\n").into_bytes()
    };
    #[rustfmt::skip]
    c.extend([
        Case::raw("raw: unnormalised dot segments in the auth path", raw("/auth/apps/nope/../web", ORIGINAL), deny(503, "policy_unknown")),
        Case::raw("raw: absolute-form request target", raw(&format!("http://evil.example{NAMED}"), ORIGINAL), allow()),
        // Raw control bytes in X-Original-URL never reach accessgate: the HTTP parser refuses them.
        Case::raw("raw: NUL byte in X-Original-URL", raw(NAMED, "https://app.example.test/a\u{0}b"), Expect::Refused),
        Case::raw("raw: DEL byte in X-Original-URL", raw(NAMED, "https://app.example.test/a\u{7f}b"), Expect::Refused),
        Case::raw("raw: ESC byte in X-Original-URL", raw(NAMED, "https://app.example.test/a\u{1b}b"), Expect::Refused),
    ]);

    run("request_dialect", ctx, c, |_| vec![]);
}
