//! The auth server over real HTTP against the real dev issuer: the auth contract (docs/reference.md, "The auth contract").
// Over ~10 s of real waiting (refetch limits, timeouts): the e2e tier, not the fast loop.
#![cfg(feature = "e2e")]

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use serde_json::json;

const NAMED: &str = "/auth/apps/web";

fn setup(extra: &str) -> (Issuer, Server) {
    let issuer = Issuer::start();
    let server = Server::start(
        &[("web.yaml", &policy_yaml("apps", "web", &issuer.url, extra))],
        &[],
    );
    (issuer, server)
}

fn groups_mapping() -> &'static str {
    "  hosts: [app.example.test]\n  claimHeaders:\n    - { header: X-Auth-Request-Email, claim: email }\n    - { header: X-Auth-Request-User, claim: sub }\n    - { header: X-Auth-Request-Groups, claim: custom.groups, join: \",\" }\n    - { header: X-Auth-Request-Name, claim: name }\n"
}

#[test]
fn valid_header_token_is_200_with_identity_headers() {
    let (issuer, server) = setup(groups_mapping());
    let token =
        issuer.token(json!({"sub": "u-1", "claims": {"custom": {"groups": ["eng", "sre"]}}}));
    let a = server.with_token(NAMED, &token);
    a.assert_allow();
    assert_eq!(a.header("x-auth-request-email"), Some("alice@example.com"));
    assert_eq!(a.header("x-auth-request-user"), Some("u-1"));
    assert_eq!(a.header("x-auth-request-groups"), Some("eng,sre"));
    assert_eq!(
        a.header("x-auth-request-name"),
        None,
        "absent claim, absent header"
    );
}

#[test]
fn valid_cookie_token_is_200() {
    let (issuer, server) = setup("");
    let token = issuer.token(json!({}));
    let cookie = format!("theme=dark; CF_Authorization={token}; lang=en");
    let a = server.auth(NAMED, "https://app.example.test/x", &[("cookie", &cookie)]);
    a.assert_allow();
    assert_eq!(a.header("x-auth-request-email"), Some("alice@example.com"));
}

#[test]
fn bearer_is_ignored_unless_opted_in() {
    let issuer = Issuer::start();
    let server = Server::start(
        &[
            ("a.yaml", &policy_yaml("apps", "web", &issuer.url, "")),
            (
                "b.yaml",
                &policy_yaml("apps", "api", &issuer.url, "  tokenSources: [bearer]\n"),
            ),
        ],
        &[],
    );
    let token = issuer.token(json!({}));
    let bearer = format!("Bearer {token}");
    server
        .auth(NAMED, "https://a/", &[("authorization", &bearer)])
        .assert_deny(401, "token_missing");
    server
        .auth(
            "/auth/apps/api",
            "https://a/",
            &[("authorization", &bearer)],
        )
        .assert_allow();
}

#[test]
fn missing_token_is_401() {
    let (_issuer, server) = setup("");
    server
        .auth(NAMED, "https://app.example.test/", &[])
        .assert_deny(401, "token_missing");
}

#[test]
fn time_claims_are_enforced_with_leeway() {
    let (issuer, server) = setup("  leeway: 30s\n");
    server
        .with_token(NAMED, &issuer.token(json!({"ttl": -120})))
        .assert_deny(401, "token_expired");
    // Expired 10 s ago: inside the 30 s leeway.
    server
        .with_token(NAMED, &issuer.token(json!({"ttl": -10})))
        .assert_allow();
    server
        .with_token(NAMED, &issuer.token(json!({"nbf_offset": 600})))
        .assert_deny(401, "token_not_yet_valid");
}

#[test]
fn audience_type_and_issuer_are_enforced() {
    let (issuer, server) = setup("");
    server
        .with_token(NAMED, &issuer.mint(json!({"aud": ["f".repeat(64)]})))
        .assert_deny(403, "audience_mismatch");
    server
        .with_token(NAMED, &issuer.mint(json!({"aud": []})))
        .assert_deny(403, "audience_mismatch");
    server
        .with_token(NAMED, &issuer.token(json!({"type": "service"})))
        .assert_deny(403, "token_type_not_allowed");
    server
        .with_token(NAMED, &issuer.token(json!({"type": "org"})))
        .assert_deny(403, "token_type_not_allowed");
    let other_iss = issuer.token(json!({"claims": {"iss": format!("{}/", issuer.url)}}));
    server
        .with_token(NAMED, &other_iss)
        .assert_deny(401, "issuer_mismatch");
}

#[test]
fn service_tokens_are_admitted_only_when_listed() {
    let (issuer, server) = setup(
        "  tokenTypes: [service]\n  claimHeaders:\n    - { header: X-Service, claim: common_name }\n",
    );
    let a = server.with_token(
        NAMED,
        &issuer.token(json!({"type": "service", "common_name": "ci.access"})),
    );
    a.assert_allow();
    assert_eq!(a.header("x-service"), Some("ci.access"));
    server
        .with_token(NAMED, &issuer.token(json!({})))
        .assert_deny(403, "token_type_not_allowed");
}

#[test]
fn forged_and_broken_tokens_are_401() {
    let (issuer, server) = setup("");
    let good = issuer.token(json!({}));
    let parts: Vec<&str> = good.split('.').collect();
    let kid = issuer.certs()["keys"][0]["kid"]
        .as_str()
        .unwrap()
        .to_owned();

    // alg: none, with and without a signature segment.
    let none_header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{kid}"}}"#));
    server
        .with_token(NAMED, &format!("{none_header}.{}.", parts[1]))
        .assert_deny(401, "algorithm_not_allowed");
    // HS256 signed with the issuer's public certificate as the secret (key confusion).
    let pem = issuer.certs()["public_cert"]["cert"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(kid.clone());
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let hs = jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    server
        .with_token(NAMED, &hs)
        .assert_deny(401, "algorithm_not_allowed");
    // Payload swapped after signing.
    let evil = URL_SAFE_NO_PAD.encode(
        String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
            .unwrap()
            .replace("alice", "mallory"),
    );
    server
        .with_token(NAMED, &format!("{}.{evil}.{}", parts[0], parts[2]))
        .assert_deny(401, "signature_invalid");
    // Truncated, garbage, wrong segment counts, oversized.
    server
        .with_token(NAMED, &good[..good.len() - 10])
        .assert_deny(401, "signature_invalid");
    server
        .with_token(NAMED, "garbage")
        .assert_deny(401, "token_malformed");
    server
        .with_token(NAMED, &format!("{}.{}", parts[0], parts[1]))
        .assert_deny(401, "token_malformed");
    server
        .with_token(NAMED, &format!("{good}.x"))
        .assert_deny(401, "token_malformed");
    server
        .with_token(NAMED, &"a".repeat(20_000))
        .assert_deny(401, "token_too_large");
    // A kid the issuer never published, signed by the real key.
    let unknown = issuer.token(json!({"header": {"kid": "../../etc/passwd"}}));
    server
        .with_token(NAMED, &unknown)
        .assert_deny(401, "key_unknown");
    // Signed, but the claims are not JSON.
    let header = format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#);
    server
        .with_token(NAMED, &issuer.sign_raw(&header, "not json"))
        .assert_deny(401, "token_malformed");
    // Duplicate claim names: two parsers could disagree, so refuse.
    let dup = format!(
        r#"{{"iss":"{}","aud":["{AUD}"],"exp":9999999999,"type":"app","email":"a@x","email":"b@x"}}"#,
        issuer.url
    );
    server
        .with_token(NAMED, &issuer.sign_raw(&header, &dup))
        .assert_deny(401, "token_malformed");
    assert!(server.is_healthy());
}

#[test]
fn unsafe_claim_values_never_become_headers() {
    let (issuer, server) = setup(groups_mapping());
    let token = issuer.token(
        json!({"claims": {"name": "Eve\r\nX-Admin: true", "custom": {"groups": ["a\u{0}b"]}}}),
    );
    let a = server.with_token(NAMED, &token);
    a.assert_allow();
    assert_eq!(a.header("x-auth-request-name"), None);
    assert_eq!(a.header("x-admin"), None);
    assert_eq!(a.header("x-auth-request-groups"), None);
    assert_eq!(a.header("x-auth-request-email"), Some("alice@example.com"));
    let m = server.metrics();
    assert!(m.contains(r#"accessgate_header_values_dropped_total{policy="apps/web",header="x-auth-request-name",reason="control_character"} 1"#), "{m}");
}

#[test]
fn request_problems_are_400_and_503() {
    let (issuer, server) = setup("");
    let token = issuer.token(json!({}));
    let t = [("cf-access-jwt-assertion", token.as_str())];
    let resp = http()
        .get(format!("{}{NAMED}", server.auth))
        .header("cf-access-jwt-assertion", &token)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400, "no X-Original-URL");
    server
        .auth(NAMED, "not a url", &t)
        .assert_deny(400, "request_malformed");
    server
        .auth(NAMED, "https://app.example.test/%ff", &t)
        .assert_deny(400, "request_malformed");
    let mut both = t.to_vec();
    both.push(("x-forwarded-uri", "/"));
    server
        .auth(NAMED, "https://app.example.test/", &both)
        .assert_deny(400, "dialect_mismatch");
    server
        .auth("/auth/apps/nope", "https://app.example.test/", &t)
        .assert_deny(503, "policy_unknown");
    server
        .auth("/auth/other/web", "https://app.example.test/", &t)
        .assert_deny(503, "policy_unknown");
    server
        .auth("/elsewhere", "https://app.example.test/", &t)
        .assert_deny(503, "policy_unknown");
}

#[test]
fn unreachable_or_garbage_jwks_is_503_keys_unavailable() {
    // A port nobody listens on (and nobody can take while the test runs).
    let closed = ClosedPort::new();
    let free = closed.addr;
    let issuer = Issuer::start();
    let token = issuer.token(json!({"claims": {"iss": format!("http://{free}")}}));
    let server = Server::start(
        &[(
            "p.yaml",
            &policy_yaml("apps", "web", &format!("http://{free}"), ""),
        )],
        &["--jwks-timeout", "1s"],
    );
    server
        .with_token(NAMED, &token)
        .assert_deny(503, "keys_unavailable");

    issuer.certs_mode("garbage");
    let server2 = Server::start(
        &[("p.yaml", &policy_yaml("apps", "web", &issuer.url, ""))],
        &[],
    );
    server2
        .with_token(NAMED, &issuer.token(json!({})))
        .assert_deny(503, "keys_unavailable");
    let m = server2.metrics();
    assert!(m.contains("result=\"error\""), "{m}");
}

/// The `kid` in a token's header.
fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// A rotation while one server runs: the first token signed with the new key makes it
/// refetch the key set once, and is allowed; the previous key verifies while the issuer
/// still publishes it, and stops once a second rotation has dropped it.
#[test]
fn rotation_new_kid_works_first_time_and_previous_key_still_verifies() {
    let issuer = Issuer::start();
    let server = Server::start(
        &[("web.yaml", &policy_yaml("apps", "web", &issuer.url, ""))],
        &[],
    );
    let fetches = || server.metric_sum("accessgate_key_fetches_total", &[("result", "success")]);
    let old = issuer.token(json!({}));
    let old_kid = kid_of(&old);
    server.with_token(NAMED, &old).assert_allow();
    let before = fetches();
    assert_eq!(before, 1.0, "one fetch so far");

    let new_kid = issuer.rotate();
    assert_ne!(new_kid, old_kid);
    let new = issuer.token(json!({}));
    assert_eq!(
        kid_of(&new),
        new_kid,
        "the token is signed with the new key"
    );
    // Unknown kid → one refetch → allowed on the very first request.
    server.with_token(NAMED, &new).assert_allow();
    assert_eq!(fetches(), before + 1.0, "one refetch for the new kid");
    // That refetch loaded the rotated set: the new key next to the previous one (its log
    // line is written before the answer, and read from the process's output meanwhile).
    let last_loaded = || {
        let out = server.proc.output();
        let line = out.lines().rfind(|l| l.contains("signing keys loaded"));
        line.unwrap_or_default().to_owned()
    };
    assert!(
        eventually(Duration::from_secs(10), || last_loaded().contains(&new_kid)),
        "no key set with {new_kid} loaded:\n{}",
        server.proc.output()
    );
    assert!(last_loaded().contains(&old_kid), "{}", last_loaded());
    // The kid picks the key: the new key's signature under the old kid does not verify.
    server
        .with_token(NAMED, &issuer.token(json!({"header": {"kid": old_kid}})))
        .assert_deny(401, "signature_invalid");
    // The previous key is still published, so its tokens keep working.
    server.with_token(NAMED, &old).assert_allow();
    assert_eq!(fetches(), before + 1.0, "known kids fetch nothing");

    // Rotate again: the first key is no longer published. The newest kid is unknown, so the
    // server refetches as soon as the 10 s refetch limit allows (asking earlier is refused
    // with key_unknown and fetches nothing); from then on the first key's tokens fail.
    let newest_kid = issuer.rotate();
    let newest = issuer.token(json!({}));
    assert_eq!(kid_of(&newest), newest_kid);
    assert!(
        eventually(Duration::from_secs(30), || {
            let a = server.with_token(NAMED, &newest);
            if a.status != 200 {
                a.assert_deny(401, "key_unknown");
            }
            a.status == 200
        }),
        "the newest kid was never accepted:\n{}",
        server.proc.output()
    );
    assert_eq!(fetches(), before + 2.0, "one refetch for the newest kid");
    server
        .with_token(NAMED, &old)
        .assert_deny(401, "key_unknown");
    server.with_token(NAMED, &new).assert_allow();
}

#[test]
fn unknown_kid_refetches_are_rate_limited() {
    let (issuer, server) = setup("");
    server
        .with_token(NAMED, &issuer.token(json!({})))
        .assert_allow();
    let fetches = || server.metric_sum("accessgate_key_fetches_total", &[]);
    let (before, calls_before) = (fetches(), issuer.certs_calls());
    for i in 0..20 {
        let t = issuer.token(json!({"header": {"kid": format!("nope-{i}")}}));
        server.with_token(NAMED, &t).assert_deny(401, "key_unknown");
    }
    // The first unknown kid refetches (the issuer may have rotated); the rest are held back
    // by the refetch limit. Counted on both sides: accessgate's metric and the issuer's calls.
    let (refetched, calls) = (fetches() - before, issuer.certs_calls() - calls_before);
    assert_eq!(refetched, 1.0, "20 unknown kids caused {refetched} fetches");
    assert_eq!(calls, 1, "the issuer saw {calls} key fetches");
}

/// The issuer's key endpoint fails, then the issuer is gone: tokens never verified before
/// (so not in the token cache) still verify against the key set fetched before the outage,
/// although a refetch during the outage failed.
#[test]
fn jwks_outage_after_success_keeps_serving_from_cache() {
    let (issuer, server) = setup("");
    server
        .with_token(NAMED, &issuer.token(json!({})))
        .assert_allow();
    // Minted now, while the issuer runs; each is sent for the first time during the outage.
    let fresh = |who: &str| issuer.token(json!({"email": format!("{who}@example.com")}));
    let (while_failing, while_gone) = (fresh("failing"), fresh("gone"));
    let unknown_kid = issuer.token(json!({"header": {"kid": "rotated-away"}}));
    let failed = || server.metric_sum("accessgate_key_fetches_total", &[("result", "error")]);

    issuer.certs_mode("fail");
    // An unknown kid makes the server refetch into the outage; the fetch fails and the key
    // set it had is kept.
    let failed_before = failed();
    server
        .with_token(NAMED, &unknown_kid)
        .assert_deny(401, "key_unknown");
    assert_eq!(failed(), failed_before + 1.0, "{}", server.metrics());
    server.with_token(NAMED, &while_failing).assert_allow();

    drop(issuer); // the issuer is gone entirely
    server.with_token(NAMED, &while_gone).assert_allow();
}

#[test]
fn host_routing_on_bare_auth_picks_the_policy() {
    let issuer = Issuer::start();
    let server = Server::start(
        &[
            (
                "a.yaml",
                &policy_yaml(
                    "apps",
                    "a",
                    &issuer.url,
                    "  hosts: [a.example.test]\n  claimHeaders:\n    - { header: X-Policy-A, claim: email }\n",
                ),
            ),
            (
                "b.yaml",
                &policy_yaml(
                    "apps",
                    "b",
                    &issuer.url,
                    "  hosts: [b.example.test]\n  paths: [/admin]\n  tokenTypes: [service]\n",
                ),
            ),
        ],
        &[],
    );
    let user = issuer.token(json!({}));
    let t = [("cf-access-jwt-assertion", user.as_str())];
    // The bare endpoint is called as `/auth?host=$host`: nginx's own `$host` (lowercase,
    // no port) alongside X-Original-URL built from the client's Host header.
    let a = server.auth(
        "/auth?host=a.example.test",
        "https://A.example.test:443/any/path",
        &t,
    );
    a.assert_allow();
    assert_eq!(a.header("x-policy-a"), Some("alice@example.com"));
    // b's /admin admits only service tokens; neither case nor path tricks dodge it.
    let b = "/auth?host=b.example.test";
    for path in ["/admin/x", "/ADMIN/x", "/Admin", "/x/../admin/y"] {
        server
            .auth(b, &format!("https://b.example.test{path}"), &t)
            .assert_deny(403, "token_type_not_allowed");
    }
    for path in [
        "/public/..%2Fadmin",
        "/admin;/x",
        "/x/..;/admin",
        "/admin%3b",
        "/admin\\x",
    ] {
        server
            .auth(b, &format!("https://b.example.test{path}"), &t)
            .assert_deny(400, "request_malformed");
    }
    server
        .auth(b, "https://b.example.test/other", &t)
        .assert_deny(503, "policy_unknown");
    server
        .auth("/auth?host=c.example.test", "https://c.example.test/", &t)
        .assert_deny(503, "policy_unknown");
    // Without nginx's `$host` the bare endpoint cannot know what nginx routed on.
    server
        .auth("/auth", "https://a.example.test/", &t)
        .assert_deny(400, "request_malformed");
    // nginx routed on another host than the client's Host header (absolute-form request).
    server
        .auth("/auth?host=b.example.test", "https://a.example.test/", &t)
        .assert_deny(400, "request_malformed");
}

#[test]
fn policy_edits_take_effect_without_restart_and_bad_edits_keep_the_last_good_set() {
    let (issuer, server) = setup("");
    let token = issuer.token(json!({"claims": {"department": "R&D"}}));
    server.with_token(NAMED, &token).assert_allow();

    // New header mapping.
    let mapped = policy_yaml(
        "apps",
        "web",
        &issuer.url,
        "  claimHeaders:\n    - { header: X-Department, claim: department }\n",
    );
    server.replace_policy("web.yaml", &mapped);
    let a = server.with_token(NAMED, &token);
    a.assert_allow();
    assert_eq!(a.header("x-department"), Some("R&D"));

    // A broken edit is refused; the previous set stays in force.
    server.replace_policy("web.yaml", "apiVersion: accessgate.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: web, namespace: apps}\nspec:\n  audiences: []\n");
    assert!(
        server
            .metrics()
            .contains("accessgate_policy_reloads_total{result=\"error\"}")
    );
    let a = server.with_token(NAMED, &token);
    a.assert_allow();
    assert_eq!(a.header("x-department"), Some("R&D"));
    assert!(server.proc.output().contains("keeping the previous set"));

    // Audience removed: the same token is now refused.
    let other_aud = policy_yaml("apps", "web", &issuer.url, "").replace(AUD, &"e".repeat(64));
    server.replace_policy("web.yaml", &other_aud);
    server
        .with_token(NAMED, &token)
        .assert_deny(403, "audience_mismatch");

    // Deleted: unknown at once.
    server.reload_after(|dir| std::fs::remove_file(dir.join("web.yaml")).unwrap());
    server
        .with_token(NAMED, &token)
        .assert_deny(503, "policy_unknown");
}

/// Reading the policy files is not a change. notify reports every open, and every reload
/// opens every file: taking those for changes reloaded the directory forever, stalling
/// requests with 10,000 policies (found by the churn benchmark).
#[test]
fn reading_the_policy_files_does_not_reload_them() {
    let (issuer, server) = setup("");
    let edited = policy_yaml(
        "apps",
        "web",
        &issuer.url,
        "  claimHeaders:\n    - { header: X-Email, claim: email }\n",
    );
    server.replace_policy("web.yaml", &edited);
    let after_edit = server.reloads();
    for entry in std::fs::read_dir(server.path()).unwrap() {
        let _ = std::fs::read_to_string(entry.unwrap().path());
    }
    assert!(
        !eventually(Duration::from_secs(3), || server.reloads() > after_edit),
        "the directory was reloaded without a change: {} reloads after the edit",
        server.reloads() - after_edit
    );
    server
        .with_token(NAMED, &issuer.token(json!({})))
        .assert_allow();
}

#[test]
fn serve_refuses_to_start_on_an_invalid_policy_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "apiVersion: accessgate.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: x}\nspec:\n  issuer: {teamDomain: t.cloudflareaccess.com}\n  audiences: [not-a-tag]\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--policies",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("spec.audiences[0]"),
        "{err}"
    );
}

#[test]
fn admin_endpoints_report_health_readiness_and_metrics() {
    let (issuer, server) = setup("");
    assert!(server.is_healthy());
    assert_eq!(
        http()
            .get(format!("{}/readyz", server.admin))
            .send()
            .unwrap()
            .status(),
        200
    );
    server
        .with_token(NAMED, &issuer.token(json!({})))
        .assert_allow();
    server
        .auth(NAMED, "https://app.example.test/", &[])
        .assert_deny(401, "token_missing");
    let m = server.metrics();
    for needle in [
        r#"accessgate_decisions_total{policy="apps/web",decision="allow",reason="ok"} 1"#,
        r#"accessgate_decisions_total{policy="apps/web",decision="deny",reason="token_missing"} 1"#,
        "accessgate_decision_duration_seconds_count 2",
        "accessgate_key_fetches_total{",
        "accessgate_keys_loaded{",
        r#"accessgate_policies{state="ready"} 1"#,
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
}

#[test]
fn logs_never_contain_tokens() {
    let (issuer, server) = setup("");
    let token = issuer.token(json!({}));
    server.with_token(NAMED, &token).assert_allow();
    let mut tampered = token.clone().into_bytes();
    let i = tampered.len() - 20;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    server
        .with_token(NAMED, std::str::from_utf8(&tampered).unwrap())
        .assert_deny(401, "signature_invalid");
    // The deny line is written after the answer: wait for it.
    server
        .proc
        .wait_line("\"reason\":\"signature_invalid\"", Duration::from_secs(10));
    let out = server.proc.output();
    let signature = token.rsplit('.').next().unwrap();
    assert!(!out.contains(&signature[..20]));
    assert!(!out.contains(token.split('.').nth(1).unwrap()));
}

#[test]
fn rules_allow_and_deny_with_deny_winning() {
    let (issuer, server) = setup(
        "  tokenTypes: [app, service]\n  rules:\n    allow:\n      - { emailDomain: example.com }\n      - { serviceToken: ci.access }\n    deny:\n      - { group: banned }\n      - { country: KP }\n",
    );
    server
        .with_token(NAMED, &issuer.token(json!({})))
        .assert_allow();
    server
        .with_token(NAMED, &issuer.token(json!({"email": "bob@other.com"})))
        .assert_deny(403, "rule_denied");
    server
        .with_token(
            NAMED,
            &issuer.token(json!({"claims": {"custom": {"groups": ["eng", "banned"]}}})),
        )
        .assert_deny(403, "rule_denied");
    server
        .with_token(NAMED, &issuer.token(json!({"claims": {"country": "KP"}})))
        .assert_deny(403, "rule_denied");
    server
        .with_token(
            NAMED,
            &issuer.token(json!({"type": "service", "common_name": "ci.access"})),
        )
        .assert_allow();
    server
        .with_token(
            NAMED,
            &issuer.token(json!({"type": "service", "common_name": "other.access"})),
        )
        .assert_deny(403, "rule_denied");
}

#[test]
fn forward_dialect_reads_x_forwarded_headers() {
    let (issuer, server) = setup("  hosts: [app.example.test]\n");
    let token = issuer.token(json!({}));
    let fwd = |path: &str, extra: &[(&str, &str)]| {
        let mut req = http()
            .get(format!("{}{path}", server.auth))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "app.example.test")
            .header("x-forwarded-uri", "/dashboards?x=1");
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = req.send().unwrap();
        (
            resp.status().as_u16(),
            resp.headers()
                .get("x-accessgate-reason")
                .map(|v| v.to_str().unwrap().to_owned()),
        )
    };
    let t = ("cf-access-jwt-assertion", token.as_str());
    assert_eq!(fwd("/forward/apps/web", &[t]).0, 200);
    assert_eq!(
        fwd("/forward", &[t]).0,
        200,
        "host routing on the bare endpoint"
    );
    assert_eq!(
        fwd("/forward/apps/web", &[]),
        (401, Some("token_missing".into()))
    );
    // An nginx-shaped request on the forward endpoint (or the reverse) is refused.
    assert_eq!(
        fwd(
            "/forward/apps/web",
            &[t, ("x-original-url", "https://app.example.test/")]
        ),
        (400, Some("dialect_mismatch".into()))
    );
    server
        .auth(
            NAMED,
            "https://app.example.test/",
            &[t, ("x-forwarded-uri", "/")],
        )
        .assert_deny(400, "dialect_mismatch");
}

#[test]
fn envoy_dialect_reads_method_path_and_host_and_lists_headers_to_remove() {
    let (issuer, server) = setup(groups_mapping());
    let token = issuer.token(json!({}));
    // Shaped as Envoy's ext_authz HTTP service sends it: original method, path_prefix +
    // original path, Host = original authority, allowed headers only.
    let resp = http()
        .delete(format!("{}/envoy/apps/web/items/7?force=1", server.auth))
        .header("host", "app.example.test")
        .header("cf-access-jwt-assertion", &token)
        .header("x-forwarded-proto", "https")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-auth-request-email"], "alice@example.com");
    // The token has no groups or name claim: Envoy must remove client copies of those.
    let remove = resp.headers()["x-envoy-auth-headers-to-remove"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(remove, "x-auth-request-groups,x-auth-request-name");
    let resp = http()
        .get(format!("{}/envoy/apps/web", server.auth))
        .header("host", "app.example.test")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http()
        .get(format!("{}/envoy/apps/web/x", server.auth))
        .header("host", "app.example.test")
        .header("x-original-url", "https://app.example.test/x")
        .header("cf-access-jwt-assertion", &token)
        .send()
        .unwrap();
    assert_eq!(
        (
            resp.status().as_u16(),
            resp.headers()["x-accessgate-reason"].to_str().unwrap()
        ),
        (400, "dialect_mismatch")
    );
}

/// Envoy's `path_prefix` carries the namespace and name as the proxy wrote them; an
/// encoded letter in either must not shift where the original path begins.
#[test]
fn envoy_dialect_accepts_a_percent_encoded_namespace_and_name() {
    let (issuer, server) = setup(groups_mapping());
    let token = issuer.token(json!({}));
    for path in ["/envoy/app%73/w%65b/items/7?force=1", "/envoy/%61pps/web"] {
        let resp = http()
            .get(format!("{}{path}", server.auth))
            .header("host", "app.example.test")
            .header("cf-access-jwt-assertion", &token)
            .send()
            .unwrap();
        assert_eq!(
            (
                resp.status().as_u16(),
                resp.headers()
                    .get("x-accessgate-reason")
                    .map(|v| v.to_str().unwrap().to_owned())
            ),
            (200, None),
            "{path}"
        );
        assert_eq!(resp.headers()["x-auth-request-email"], "alice@example.com");
    }
}
