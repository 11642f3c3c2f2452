//! gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`) and `grpc.health.v1` on the
//! auth listener, driven by a client that shares no code with the server: a Go program
//! (`tests/grpc-client`, Envoy's own Go protos and grpc-go from the Go module proxy) fed
//! `CheckRequest`s shaped as Envoy's ext_authz filter builds them. Every gRPC answer is
//! compared with what the HTTP endpoints on the same port answer for the same request.
//! Checks that must not be UTF-8 (which Go's protobuf refuses to write) are serialised here
//! with the server's types (envoy-types), broken byte by byte, and sent as they are by the
//! same Go client, which decodes the answer with Envoy's protos.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};
use prost::Message;
use serde_json::{Value, json};

const HOST: &str = "app.example.test";

/// The Go client (`tests/grpc-client/build.sh`; a no-op when cached).
fn client_binary() -> &'static str {
    built_tool("tests/grpc-client/build.sh")
}

/// Runs the client; `stdin` is fed to it; returns its one JSON line.
fn client(args: &[&str], stdin: &str) -> Value {
    let mut child = Command::new(client_binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn grpc-client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "grpc-client {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "grpc-client printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn addr(server: &Server) -> &str {
    server.auth.strip_prefix("http://").unwrap()
}

/// A `CheckRequest` as Envoy's ext_authz filter sends it for an HTTP/1.1 request: the
/// original request in `attributes.request.http` (pseudo-headers included in `headers`,
/// `id` the stream id), the downstream peer in `source`, the route's context extensions.
fn envoy_check(host: &str, path: &str, headers: &[(&str, &str)], context: Value) -> Value {
    let mut h = json!({
        ":authority": host,
        ":method": "GET",
        ":path": path,
        ":scheme": "https",
        "accept": "*/*",
        "user-agent": "curl/8.14.1",
        "x-forwarded-proto": "https",
        "x-request-id": "6f0e5c1a-3b2d-4e8f-9a7b-1c2d3e4f5a6b",
        "x-envoy-external-address": "203.0.113.7",
        "x-forwarded-for": "203.0.113.7",
    });
    for (k, v) in headers {
        h[*k] = json!(v);
    }
    json!({
        "attributes": {
            "source": {"address": {"socketAddress": {"address": "203.0.113.7", "portValue": 53412}}},
            "destination": {"address": {"socketAddress": {"address": "10.244.0.12", "portValue": 10080}}},
            "request": {
                "time": "2026-11-30T12:00:00.123456Z",
                "http": {
                    "id": "10385725624416516474",
                    "method": "GET",
                    "headers": h,
                    "path": path,
                    "host": host,
                    "scheme": "https",
                    "size": "0",
                    "protocol": "HTTP/1.1"
                }
            },
            "contextExtensions": context,
            "metadataContext": {},
            "routeMetadataContext": {}
        }
    })
}

fn named(ns: &str, name: &str) -> Value {
    json!({"namespace": ns, "name": name})
}

/// A Check answer reduced to what the HTTP contract has: status, reason, headers.
#[derive(Debug)]
struct Checked {
    raw: Value,
    /// `status.code` of the CheckResponse (0 = OK).
    code: i64,
    /// The HTTP status the proxy answers with on a deny (`None` on allow).
    http_status: Option<u16>,
    /// Headers set (overwrite) on allow, or on the deny response.
    headers: Vec<(String, String)>,
    headers_to_remove: Vec<String>,
    body: String,
}

impl Checked {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn reason(&self) -> &str {
        self.header("x-accessgate-reason").unwrap_or("")
    }

    #[track_caller]
    fn assert_allow(&self) {
        assert_eq!(self.code, 0, "{:#}", self.raw);
        assert!(self.raw["denied_response"].is_null(), "{:#}", self.raw);
    }

    /// A deny with this status and reason, carrying the HTTP contract's headers and body.
    #[track_caller]
    fn assert_deny(&self, status: u16, reason: &str) {
        assert_eq!(
            (self.http_status, self.reason()),
            (Some(status), reason),
            "{:#}",
            self.raw
        );
        let expected_code = if status == 401 { 16 } else { 7 };
        assert_eq!(
            self.code, expected_code,
            "UNAUTHENTICATED for 401, else PERMISSION_DENIED"
        );
        assert_eq!(self.header("cache-control"), Some("no-store"));
        assert_eq!(
            self.header("www-authenticate"),
            (status == 401).then_some("Bearer realm=\"accessgate\"")
        );
        assert_eq!(self.body, format!("{reason}\n"));
        assert_eq!(self.raw["status"]["message"], reason);
    }
}

/// Envoy's `StatusCode` enum as protojson names it.
fn http_status(name: &str) -> u16 {
    match name {
        "OK" => 200,
        "BadRequest" => 400,
        "Unauthorized" => 401,
        "Forbidden" => 403,
        "InternalServerError" => 500,
        "ServiceUnavailable" => 503,
        other => panic!("unexpected HttpStatus code {other}"),
    }
}

fn check(server: &Server, request: &Value) -> Checked {
    let out = client(&["check", "-addr", addr(server)], &request.to_string());
    checked(out)
}

/// [`check`] with the request already serialised: the bytes go out exactly as given.
fn check_bytes(server: &Server, request: &[u8]) -> Checked {
    let hex: String = request.iter().map(|b| format!("{b:02x}")).collect();
    checked(client(
        &["check", "-addr", addr(server), "-proto-hex"],
        &hex,
    ))
}

/// The client's answer to one check as a [`Checked`]; panics on an RPC error.
fn checked(out: Value) -> Checked {
    let raw = out
        .get("response")
        .unwrap_or_else(|| panic!("no CheckResponse: {out}"))
        .clone();
    let code = raw["status"]["code"].as_i64().unwrap_or(0);
    let (section, http) = match raw.get("denied_response") {
        Some(d) => (
            d.clone(),
            Some(http_status(d["status"]["code"].as_str().unwrap())),
        ),
        None => (raw["ok_response"].clone(), None),
    };
    let mut headers = Vec::new();
    for h in section["headers"].as_array().cloned().unwrap_or_default() {
        // Every header overwrites: both the deprecated and the current spelling say so.
        assert_eq!(h["append"], json!(false), "{h}");
        assert_eq!(h["append_action"], "OVERWRITE_IF_EXISTS_OR_ADD", "{h}");
        headers.push((
            h["header"]["key"].as_str().unwrap().to_owned(),
            h["header"]["value"].as_str().unwrap_or("").to_owned(),
        ));
    }
    let headers_to_remove = section["headers_to_remove"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    Checked {
        code,
        http_status: http,
        headers,
        headers_to_remove,
        body: section["body"].as_str().unwrap_or("").to_owned(),
        raw,
    }
}

fn claim_headers(email_header: &str) -> String {
    format!(
        "  claimHeaders:\n    - {{ header: {email_header}, claim: email }}\n    - {{ header: X-Auth-Request-User, claim: sub }}\n    - {{ header: X-Auth-Request-Groups, claim: custom.groups, join: \",\" }}\n    - {{ header: X-Auth-Request-Name, claim: name }}\n"
    )
}

/// Dev issuer + `accessgate serve` with apps/web (host `app.example.test`, path `/`),
/// apps/admin (same host, `/admin`, maps the email to `X-Admin-Email` so the answer shows
/// which policy was chosen) and apps/api (name only, `bearer` tokens).
fn setup() -> (Issuer, Server) {
    let issuer = Issuer::start();
    let web = policy_yaml(
        "apps",
        "web",
        &issuer.url,
        &format!(
            "  hosts: [{HOST}]\n{}",
            claim_headers("X-Auth-Request-Email")
        ),
    );
    let admin = policy_yaml(
        "apps",
        "admin",
        &issuer.url,
        &format!(
            "  hosts: [{HOST}]\n  paths: [/admin]\n{}",
            claim_headers("X-Admin-Email")
        ),
    );
    let api = policy_yaml("apps", "api", &issuer.url, "  tokenSources: [bearer]\n");
    let server = Server::start(
        &[
            ("web.yaml", &web),
            ("admin.yaml", &admin),
            ("api.yaml", &api),
        ],
        &[],
    );
    (issuer, server)
}

#[test]
fn a_valid_token_is_ok_with_identity_headers_that_overwrite_and_remove() {
    let (issuer, server) = setup();
    let token = issuer.token(json!({"sub": "u-1"}));

    // Header token; the client also sent its own identity headers, which the answer must
    // replace (set) or strip (remove).
    let c = check(
        &server,
        &envoy_check(
            HOST,
            "/dashboards?orgId=1",
            &[
                ("cf-access-jwt-assertion", &token),
                ("x-auth-request-email", "mallory@example.com"),
                ("x-auth-request-groups", "admins"),
            ],
            named("apps", "web"),
        ),
    );
    c.assert_allow();
    assert_eq!(
        c.headers,
        vec![
            (
                "x-auth-request-email".to_owned(),
                "alice@example.com".to_owned()
            ),
            ("x-auth-request-user".to_owned(), "u-1".to_owned()),
        ]
    );
    assert_eq!(
        c.headers_to_remove,
        vec!["x-auth-request-groups", "x-auth-request-name"],
        "mapped headers the answer does not set are removed"
    );
    assert!(c.raw["ok_response"]["response_headers_to_add"].is_null());

    // Cookie token (Envoy joins cookies into one header).
    let cookie = format!("theme=dark; CF_Authorization={token}; lang=en");
    let c = check(
        &server,
        &envoy_check(HOST, "/", &[("cookie", &cookie)], named("apps", "web")),
    );
    c.assert_allow();
    assert_eq!(c.header("x-auth-request-email"), Some("alice@example.com"));

    // Bearer: only where the policy opts in.
    let bearer = format!("Bearer {token}");
    let c = check(
        &server,
        &envoy_check(
            HOST,
            "/",
            &[("authorization", &bearer)],
            named("apps", "api"),
        ),
    );
    c.assert_allow();
    assert_eq!(c.header("x-auth-request-email"), Some("alice@example.com"));
    check(
        &server,
        &envoy_check(
            HOST,
            "/",
            &[("authorization", &bearer)],
            named("apps", "web"),
        ),
    )
    .assert_deny(401, "token_missing");

    // `encode_raw_headers: true`: the headers arrive in header_map, one entry each, bytes
    // in raw_value (protojson: base64).
    let mut raw = envoy_check(HOST, "/", &[], named("apps", "web"));
    raw["attributes"]["request"]["http"]["headers"] = json!({});
    raw["attributes"]["request"]["http"]["headerMap"] = json!({"headers": [
        {"key": ":authority", "rawValue": b64(HOST.as_bytes())},
        {"key": ":path", "rawValue": b64(b"/")},
        {"key": "cf-access-jwt-assertion", "rawValue": b64(token.as_bytes())},
    ]});
    let c = check(&server, &raw);
    c.assert_allow();
    assert_eq!(c.header("x-auth-request-user"), Some("u-1"));

    // HTTP still works on the same port, with the same answer.
    let a = server.with_token("/auth/apps/web", &token);
    a.assert_allow();
    assert_eq!(a.header("x-auth-request-email"), Some("alice@example.com"));
    assert_eq!(
        server.metric_sum(
            "accessgate_decisions_total",
            &[("policy", "apps/web"), ("decision", "allow")]
        ),
        4.0,
        "gRPC and HTTP decisions are counted alike"
    );
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn denials_match_the_http_contract() {
    let (issuer, server) = setup();
    let wrong_aud = issuer.mint(json!({"aud": ["0".repeat(64)], "email": "a@example.com"}));
    let expired = issuer.token(json!({"ttl": -3600}));
    let cases = [
        (
            "no token",
            vec![],
            named("apps", "web"),
            "/auth/apps/web",
            401,
            "token_missing",
        ),
        (
            "wrong audience",
            vec![("cf-access-jwt-assertion", wrong_aud.as_str())],
            named("apps", "web"),
            "/auth/apps/web",
            403,
            "audience_mismatch",
        ),
        (
            "expired",
            vec![("cf-access-jwt-assertion", expired.as_str())],
            named("apps", "web"),
            "/auth/apps/web",
            401,
            "token_expired",
        ),
        (
            "unknown policy",
            vec![],
            named("apps", "nope"),
            "/auth/apps/nope",
            503,
            "policy_unknown",
        ),
        (
            "garbage token",
            vec![("cf-access-jwt-assertion", "not.a.jwt")],
            named("apps", "web"),
            "/auth/apps/web",
            401,
            "token_malformed",
        ),
    ];
    for (what, headers, context, http_path, status, reason) in cases {
        let c = check(&server, &envoy_check(HOST, "/x", &headers, context));
        c.assert_deny(status, reason);
        // The HTTP endpoint on the same port says the same.
        let a = server.auth(http_path, &format!("https://{HOST}/x"), &headers);
        a.assert_deny(status, reason);
        assert_eq!(
            (c.http_status, c.reason()),
            (Some(a.status), a.reason()),
            "{what}"
        );
    }

    // One of namespace/name without the other.
    for context in [json!({"namespace": "apps"}), json!({"name": "web"})] {
        check(&server, &envoy_check(HOST, "/", &[], context)).assert_deny(400, "request_malformed");
    }
    // Other context extensions are ignored (host routing applies).
    let token = issuer.token(json!({}));
    check(
        &server,
        &envoy_check(
            HOST,
            "/",
            &[("cf-access-jwt-assertion", &token)],
            json!({"team": "platform"}),
        ),
    )
    .assert_allow();
}

#[test]
fn without_context_the_policy_is_chosen_by_host_and_path_like_bare_auth() {
    let (issuer, server) = setup();
    let token = issuer.token(json!({}));
    // (authority, path) → expected: Ok(header that shows the policy) or Err((status, reason)).
    let cases = [
        (HOST, "/", Ok("x-auth-request-email")),
        (HOST, "/public/page?x=1", Ok("x-auth-request-email")),
        (HOST, "/admin", Ok("x-admin-email")),
        (HOST, "/admin/users", Ok("x-admin-email")),
        (HOST, "/ADMIN/users", Ok("x-admin-email")),
        (HOST, "/public/../admin/users", Ok("x-admin-email")),
        (HOST, "/public/%2e%2e/admin", Ok("x-admin-email")),
        (HOST, "//admin", Ok("x-admin-email")),
        (HOST, "/administrator", Ok("x-auth-request-email")),
        ("App.Example.TEST:8443", "/admin", Ok("x-admin-email")),
        ("app.example.test.", "/", Ok("x-auth-request-email")),
        (
            HOST,
            "/public/..;/admin/users",
            Err((400, "request_malformed")),
        ),
        (HOST, "/admin;x/users", Err((400, "request_malformed"))),
        (
            HOST,
            "/public%2F..%2Fadmin",
            Err((400, "request_malformed")),
        ),
        (
            HOST,
            "/public%2f..%2fadmin",
            Err((400, "request_malformed")),
        ),
        (HOST, "/public\\..\\admin", Err((400, "request_malformed"))),
        (HOST, "/a%252e%252e/admin", Err((400, "request_malformed"))),
        (HOST, "/admin%3Busers", Err((400, "request_malformed"))),
        (
            "admin.example.test:@app.example.test",
            "/",
            Err((400, "request_malformed")),
        ),
        (
            "user@app.example.test",
            "/",
            Err((400, "request_malformed")),
        ),
        ("adm%69n.example.test", "/", Err((400, "request_malformed"))),
        (
            "app.example.test:99999",
            "/",
            Err((400, "request_malformed")),
        ),
        ("other.example.test", "/", Err((503, "policy_unknown"))),
    ];
    for (authority, path, expected) in cases {
        let c = check(
            &server,
            &envoy_check(
                authority,
                path,
                &[("cf-access-jwt-assertion", &token)],
                json!({}),
            ),
        );
        // The bare HTTP endpoint, asked about the same request, answers the same.
        let nginx_host = authority.split(':').next().unwrap().trim_end_matches('.');
        let a = server.auth(
            &format!("/auth?host={nginx_host}"),
            &format!("https://{authority}{path}"),
            &[("cf-access-jwt-assertion", &token)],
        );
        match expected {
            Ok(header) => {
                c.assert_allow();
                assert_eq!(
                    c.header(header),
                    Some("alice@example.com"),
                    "{authority}{path}"
                );
                a.assert_allow();
                assert_eq!(
                    a.header(header),
                    Some("alice@example.com"),
                    "{authority}{path}"
                );
            }
            Err((status, reason)) => {
                c.assert_deny(status, reason);
                a.assert_deny(status, reason);
            }
        }
    }
}

#[test]
fn broken_check_requests_are_defined_denials() {
    let (issuer, server) = setup();
    let token = issuer.token(json!({}));
    let good = envoy_check(
        HOST,
        "/",
        &[("cf-access-jwt-assertion", &token)],
        named("apps", "web"),
    );
    check(&server, &good).assert_allow();

    let mut cases: Vec<(&str, Value)> = vec![
        ("no attributes", json!({})),
        (
            "no request",
            json!({"attributes": {"contextExtensions": named("apps", "web")}}),
        ),
        (
            "no http",
            json!({"attributes": {"request": {"time": "2026-11-30T12:00:00Z"}, "contextExtensions": named("apps", "web")}}),
        ),
    ];
    let mut edit = |what: &'static str, f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v["attributes"]["request"]["http"]);
        cases.push((what, v));
    };
    edit("empty host", &|h| {
        h["host"] = json!("");
        h["headers"].as_object_mut().unwrap().remove(":authority");
    });
    edit("empty path", &|h| h["path"] = json!(""));
    edit("empty method", &|h| h["method"] = json!(""));
    edit("too many headers", &|h| {
        for i in 0..130 {
            h["headers"][format!("x-filler-{i}")] = json!("v");
        }
    });
    edit("too many header bytes", &|h| {
        h["headers"]["x-big"] = json!("v".repeat(100 * 1024));
    });
    edit("CR LF in a header value", &|h| {
        h["headers"]["x-evil"] = json!("a\r\nx-auth-request-email: mallory@example.com");
    });
    edit("invalid header name", &|h| {
        h["headers"]["bad name"] = json!("v")
    });
    edit("non-UTF-8 raw value", &|h| {
        h["headers"] = json!({});
        h["headerMap"] = json!({"headers": [
            {"key": "cf-access-jwt-assertion", "rawValue": b64(b"\xff\xfe")},
        ]});
    });
    edit("headers and header_map both", &|h| {
        h["headerMap"] = json!({"headers": [{"key": "x-a", "rawValue": b64(b"1")}]});
    });
    edit("non-ASCII path", &|h| h["path"] = json!("/caf\u{e9}"));
    for (what, request) in cases {
        let c = check(&server, &request);
        assert_eq!(
            (c.http_status, c.reason()),
            (Some(400), "request_malformed"),
            "{what}: {:#}",
            c.raw
        );
        c.assert_deny(400, "request_malformed");
    }
    // And the server still answers.
    check(&server, &good).assert_allow();
}

/// A `CheckRequest` as [`envoy_check`] describes it, built with the types the server decodes
/// into (envoy-types), so that its serialised bytes can be broken on purpose. No
/// pseudo-headers: their values are in the fields (and a marked field must be marked once).
fn check_message(
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    context: &[(&str, &str)],
) -> CheckRequest {
    let owned = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    id: "10385725624416516474".into(),
                    method: "GET".into(),
                    headers: owned(headers),
                    path: path.into(),
                    host: host.into(),
                    scheme: "https".into(),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: owned(context),
            ..Default::default()
        }),
    }
}

/// Text the tests put where the bytes should not be UTF-8; [`latin1`] breaks it.
const MARK: &str = "cafe-latin1";

/// `message` serialised, with the one [`MARK`] in it turned into ISO-8859-1 text
/// (`caf\xe9-latin1`: an `é` as one byte, which is not UTF-8): what a proxy passing raw
/// header bytes on could send in a `string` field.
fn latin1(message: &CheckRequest) -> Vec<u8> {
    let mut bytes = message.encode_to_vec();
    let at: Vec<usize> = bytes
        .windows(MARK.len())
        .enumerate()
        .filter(|(_, w)| *w == MARK.as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "{MARK} must occur once in the message");
    bytes[at[0] + 3] = 0xe9;
    assert!(std::str::from_utf8(&bytes[at[0]..at[0] + MARK.len()]).is_err());
    bytes
}

#[test]
fn non_utf8_strings_in_a_check_are_a_400_deny_not_a_grpc_error() {
    let (issuer, server) = setup();
    let token = issuer.token(json!({}));
    let jwt = ("cf-access-jwt-assertion", token.as_str());
    let web = [("namespace", "apps"), ("name", "web")];

    // The same message, left as UTF-8, is an ordinary allow: only the bytes differ below.
    let in_header = check_message(HOST, "/", &[jwt, ("x-name", MARK)], &web);
    check_bytes(&server, &in_header.encode_to_vec()).assert_allow();

    let header_name = format!("x-{MARK}");
    let path = format!("/{MARK}");
    let host = format!("{MARK}.example.test");
    let cases = [
        ("a header value", in_header),
        (
            "a header name",
            check_message(HOST, "/", &[jwt, (&header_name, "v")], &web),
        ),
        ("the path", check_message(HOST, &path, &[jwt], &[])),
        ("the host", check_message(&host, "/", &[jwt], &[])),
        (
            "a context extension",
            check_message(HOST, "/", &[jwt], &[("namespace", "apps"), ("name", MARK)]),
        ),
    ];
    for (what, message) in cases {
        let c = check_bytes(&server, &latin1(&message));
        assert_eq!(
            (c.http_status, c.reason()),
            (Some(400), "request_malformed"),
            "non-UTF-8 in {what}: {:#}",
            c.raw
        );
        c.assert_deny(400, "request_malformed");
    }
    // And the server still answers.
    check(
        &server,
        &envoy_check(HOST, "/", &[jwt], named("apps", "web")),
    )
    .assert_allow();
}

/// The Go client's raw answer to a `application/grpc` POST of `body_hex` to `path` at `addr`.
fn grpc_raw(addr: &str, path: &str, body_hex: &str) -> Value {
    client(
        &[
            "raw",
            "-addr",
            addr,
            "-path",
            path,
            "-content-type",
            "application/grpc",
            "-body-hex",
            body_hex,
        ],
        "",
    )
}

#[test]
fn non_grpc_requests_on_the_grpc_paths_never_read_as_an_allow() {
    let (issuer, server) = setup();
    let token = issuer.token(json!({}));
    let a = addr(&server);
    let check_path = "/envoy.service.auth.v3.Authorization/Check";

    // HTTP/2 without gRPC framing: the HTTP router, which knows no such path.
    let r = client(
        &["raw", "-addr", a, "-path", check_path, "-body-hex", "00"],
        "",
    );
    assert_eq!(r["proto"], "HTTP/2.0", "{r}");
    assert_eq!(
        (
            r["status"].as_u64(),
            r["headers"]["x-accessgate-reason"].as_str()
        ),
        (Some(503), Some("policy_unknown")),
        "{r}"
    );

    // gRPC content type, garbage body: a gRPC error, never grpc-status 0 / a CheckResponse.
    for body in ["", "68656c6c6f", "0000000005ffffffffff", "01000000020000"] {
        let r = grpc_raw(a, check_path, body);
        let grpc_status = r["trailers"]["grpc-status"]
            .as_str()
            .or(r["headers"]["grpc-status"].as_str())
            .unwrap_or_else(|| panic!("no grpc-status: {r}"));
        assert_ne!(grpc_status, "0", "body {body}: {r}");
    }

    // An unknown gRPC method of ours, or another service: not OK either.
    let r = grpc_raw(a, "/envoy.service.auth.v3.Authorization/Nope", "0000000000");
    assert_eq!(
        r["headers"]["grpc-status"]
            .as_str()
            .or(r["trailers"]["grpc-status"].as_str()),
        Some("12"),
        "{r}"
    );
    let r = grpc_raw(a, "/my.App/Method", "0000000000");
    assert_eq!(
        (
            r["status"].as_u64(),
            r["headers"]["x-accessgate-reason"].as_str()
        ),
        (Some(503), Some("policy_unknown")),
        "{r}"
    );

    // HTTP/1.1 with a gRPC content type: the HTTP router as well.
    let resp = http()
        .post(format!("{}{check_path}", server.auth))
        .header("content-type", "application/grpc")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);

    // The HTTP dialects over h2c work as over HTTP/1.1.
    let r = client(
        &[
            "raw",
            "-addr",
            a,
            "-method",
            "GET",
            "-path",
            "/auth/apps/web",
            "-H",
            &format!("X-Original-URL: https://{HOST}/"),
            "-H",
            &format!("Cf-Access-Jwt-Assertion: {token}"),
        ],
        "",
    );
    assert_eq!(
        (r["proto"].as_str(), r["status"].as_u64()),
        (Some("HTTP/2.0"), Some(200)),
        "{r}"
    );
    assert_eq!(r["headers"]["x-auth-request-email"], "alice@example.com");

    // Still serving gRPC after all of that.
    check(
        &server,
        &envoy_check(
            HOST,
            "/",
            &[("cf-access-jwt-assertion", &token)],
            named("apps", "web"),
        ),
    )
    .assert_allow();
}

#[test]
fn health_is_serving_once_policies_are_loaded() {
    let (_issuer, server) = setup();
    let a = addr(&server);
    assert_eq!(client(&["health", "-addr", a], "")["status"], "SERVING");
    assert_eq!(
        client(
            &[
                "health",
                "-addr",
                a,
                "-service",
                "envoy.service.auth.v3.Authorization"
            ],
            ""
        )["status"],
        "SERVING"
    );
    assert_eq!(
        client(&["health", "-addr", a, "-watch"], "")["status"],
        "SERVING"
    );
    let unknown = client(&["health", "-addr", a, "-service", "nope"], "");
    assert_eq!(unknown["rpc_error"]["code"], "NotFound", "{unknown}");
    let unknown = client(&["health", "-addr", a, "-service", "nope", "-watch"], "");
    assert_eq!(unknown["status"], "SERVICE_UNKNOWN", "{unknown}");
}

#[test]
fn on_sigterm_health_turns_not_serving_and_watch_ends_so_shutdown_completes() {
    use std::io::{BufRead, BufReader};
    use std::time::Duration;

    let issuer = Issuer::start();
    let mut server = Server::start(
        &[("web.yaml", &policy_yaml("apps", "web", &issuer.url, ""))],
        &["--drain-period", "5s", "--shutdown-grace", "120s"],
    );
    let a = addr(&server).to_owned();
    let mut watch = Command::new(client_binary())
        .args(["health", "-addr", &a, "-watch", "-all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = || -> Value {
        serde_json::from_str(&lines.next().expect("a line from the watch").unwrap()).unwrap()
    };
    assert_eq!(next(), json!({"status": "SERVING"}));

    let term = Command::new("kill")
        .args(["-TERM", &server.proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert_eq!(next(), json!({"status": "NOT_SERVING"}));
    assert_eq!(
        next(),
        json!({"end": "OK"}),
        "the watch ends once NOT_SERVING is said"
    );
    assert!(watch.wait().unwrap().success());

    // Still draining: health says NOT_SERVING, and checks are decided as before (an allow
    // and a deny with its reason), not refused.
    assert_eq!(
        client(&["health", "-addr", &a], "")["status"],
        "NOT_SERVING"
    );
    let ask = |token: &str| {
        client(
            &["check", "-addr", &a],
            &envoy_check(
                HOST,
                "/",
                &[("cf-access-jwt-assertion", token)],
                named("apps", "web"),
            )
            .to_string(),
        )
    };
    checked(ask(&issuer.token(json!({})))).assert_allow();
    checked(ask("garbage")).assert_deny(401, "token_malformed");
    assert!(
        !server.proc.output().contains("listeners stopped"),
        "the drain ended before the checks; they prove nothing:\n{}",
        server.proc.output()
    );

    // No stream holds the shutdown up to its grace period.
    assert!(
        eventually(Duration::from_secs(100), || !server.proc.is_running()),
        "server still running:\n{}",
        server.proc.output()
    );
    let log = server.proc.output();
    assert!(log.contains("listeners stopped"), "{log}");
    // After the drain the listener is gone: a check is refused, not answered.
    let after = ask(&issuer.token(json!({})));
    assert_eq!(after["rpc_error"]["code"], "Unavailable", "{after}");
    assert!(
        !log.contains("requests still in flight after the grace period"),
        "{log}"
    );
}

/// Finding (HIGH) over gRPC without context: a tenant's claim on a host under the wildcard
/// another namespace holds is not routed; the wildcard's policy answers (and refuses the
/// tenant's self-minted token), on any depth under the wildcard.
#[test]
fn a_tenant_cannot_take_a_host_under_a_held_wildcard_by_grpc() {
    let victim = Issuer::start();
    let tenant = Issuer::start();
    let server = Server::start(
        &[(
            "apps.yaml",
            &policy_yaml(
                "victim",
                "apps",
                &victim.url,
                "  hosts: [\"*.apps.example.test\"]\n",
            ),
        )],
        &[],
    );
    server.reload_after(|dir| {
        std::fs::write(
            dir.join("tenant.yaml"),
            policy_yaml(
                "tenant",
                "grab",
                &tenant.url,
                "  hosts: [secret.apps.example.test]\n",
            ),
        )
        .unwrap()
    });
    let ask = |authority: &str, token: &str| {
        check(
            &server,
            &envoy_check(
                authority,
                "/",
                &[("cf-access-jwt-assertion", token)],
                json!({}),
            ),
        )
    };
    let evil = tenant.token(json!({"email": "eve@evil.test"}));
    let c = ask("secret.apps.example.test", &evil);
    assert_eq!(c.http_status, Some(401), "{}", c.reason());
    let good = victim.token(json!({}));
    ask("secret.apps.example.test", &good).assert_allow();
    ask("a.b.apps.example.test", &good).assert_allow();
    ask("apps.example.test", &good).assert_deny(503, "policy_unknown");
}
