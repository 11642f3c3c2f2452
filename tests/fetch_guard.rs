//! Fetches a policy aims (JWKS, get-identity) as a tenant would aim them: the address guard
//! refuses loopback/private/link-local targets unless allowed, failures surface as
//! categories, never as text from the answer, and no setting, traffic or policy churn fetches
//! one JWKS URL more than a burst and then once per 10 s. Real HTTP throughout: the dev
//! issuer process, hand-written HTTP answers on loopback, `accessgate serve` and
//! `accessgate check`.
// Over ~10 s of real waiting (refetch limits, timeouts): the e2e tier, not the fast loop.
#![cfg(feature = "e2e")]

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use accessgate::core::index::PolicyEntry;
use accessgate::core::verify::Claims;
use accessgate::fetch::{AddressPolicy, AllowList};
use accessgate::identity::{IdentityClient, IdentityConfig, IdentityError};
use accessgate::keys::{FETCH_BURST, FETCH_PERIOD, KeyConfig, KeyStatus, KeyStore};
use accessgate::metrics::Metrics;
use accessgate::source::files::parse_manifests;
use common::*;
use serde_json::json;
use url::Url;

const SECRET: &str = "SECRET-INTERNAL-TEXT";

/// A loopback server answering every connection with `response` (a raw HTTP response).
fn raw_server(response: String) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 8192];
            let _ = s.read(&mut buf);
            let _ = s.write_all(response.as_bytes());
        }
    });
    format!("http://{addr}")
}

fn ok_json(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn guarded(allow: &[&str]) -> AddressPolicy {
    AddressPolicy::Guarded(AllowList::parse(allow).unwrap())
}

/// A key store for exactly `url`, after its first fetch.
async fn status_after_first_fetch(addresses: AddressPolicy, url: &str) -> KeyStatus {
    let store = KeyStore::new(
        KeyConfig {
            addresses,
            fetch_timeout: Duration::from_secs(10),
            ..KeyConfig::default()
        },
        Metrics::new(),
    )
    .unwrap();
    let url = Url::parse(url).unwrap();
    store.retain(&HashSet::from([url.clone()]));
    assert!(
        store.wait_first_fetch(Duration::from_secs(30)).await,
        "no fetch of {url} was attempted within 30 s"
    );
    store.status(&url).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_fetches_to_loopback_are_refused_unless_allowed() {
    let issuer = tokio::task::spawn_blocking(Issuer::start).await.unwrap();
    let by_name = issuer.certs_url().replace("127.0.0.1", "localhost");

    for url in [issuer.certs_url(), by_name.clone()] {
        let s = status_after_first_fetch(guarded(&[]), &url).await;
        assert_eq!(s.error.as_deref(), Some("blocked_address"), "{url}");
        assert!(s.ids.is_empty());
    }
    // The metadata service and a private address, as a tenant would name them.
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/keys",
        "http://[::ffff:a9fe:a9fe]/keys",
        "http://0.0.0.0/keys",
    ] {
        let s = status_after_first_fetch(guarded(&["127.0.0.0/8"]), url).await;
        assert_eq!(s.error.as_deref(), Some("blocked_address"), "{url}");
    }

    // Allowed by the operator: fetched.
    let s = status_after_first_fetch(guarded(&["127.0.0.0/8"]), &issuer.certs_url()).await;
    assert_eq!(s.error, None);
    assert!(!s.ids.is_empty());
    // `localhost` may also resolve to ::1: the whole answer must be allowed.
    let s = status_after_first_fetch(guarded(&["127.0.0.0/8", "::1/128"]), &by_name).await;
    assert_eq!(s.error, None, "{by_name}");
    // File mode's default: anything.
    let s = status_after_first_fetch(AddressPolicy::AllowAll, &issuer.certs_url()).await;
    assert_eq!(s.error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_fetch_failures_are_categories_without_fetched_text() {
    let secret_json = format!(r#"{{"error":"{SECRET}"}}"#);
    let cases = [
        (ok_json(&secret_json), "not_jwks".to_owned()),
        (ok_json(&format!("<html>{SECRET}</html>")), "not_jwks".into()),
        (ok_json(r#"{"keys": [{"kid": "x", "kty": "oct", "k": "AA"}]}"#), "no_usable_keys".into()),
        (
            format!(
                "HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{secret_json}",
                secret_json.len()
            ),
            "http_status 404".into(),
        ),
        (
            "HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into(),
            "redirect".into(),
        ),
        (
            ok_json(&format!(r#"{{"keys": [], "pad": "{}"}}"#, "x".repeat(1 << 20))),
            "too_large".into(),
        ),
        (format!("{SECRET} / not http\r\n\r\n"), "request".into()),
    ];
    for (response, want) in cases {
        let base = raw_server(response);
        let s = status_after_first_fetch(guarded(&["127.0.0.0/8"]), &format!("{base}/certs")).await;
        assert_eq!(s.error.as_deref(), Some(want.as_str()), "{base}");
    }
    let closed = ClosedPort::new();
    let s = status_after_first_fetch(AddressPolicy::AllowAll, &format!("http://{}/", closed.addr))
        .await;
    assert_eq!(s.error.as_deref(), Some("connect"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_fetches_are_guarded_too() {
    let issuer = tokio::task::spawn_blocking(Issuer::start).await.unwrap();
    let token = {
        let i = &issuer;
        tokio::task::block_in_place(|| i.token(json!({"claims": {"identity_nonce": "n-1"}})))
    };
    let yaml = policy_yaml("apps", "p", &issuer.url, "  identity: {}\n");
    let PolicyEntry::Ready(policy) = parse_manifests("p", &yaml).unwrap().remove(0).1 else {
        panic!("invalid policy")
    };
    let claims: Claims = {
        use base64::Engine;
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    let client = |addresses| {
        IdentityClient::new(
            IdentityConfig {
                addresses,
                ..IdentityConfig::default()
            },
            Metrics::new(),
        )
        .unwrap()
    };
    let e = client(guarded(&[]))
        .get_for_policy(&policy, &token, &claims, now())
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "get-identity: blocked_address");
    assert!(matches!(e, IdentityError::Fetch(_)));
    let id = client(guarded(&["127.0.0.0/8"]))
        .get_for_policy(&policy, &token, &claims, now())
        .await
        .unwrap();
    assert_eq!(id["email"], "alice@example.com");
}

/// `accessgate serve --fetch-guard`: the dev issuer on loopback is refused (503
/// keys_unavailable, `blocked_address` in the log); allowing 127.0.0.0/8 opens it.
#[test]
fn serve_opts_into_the_guard() {
    let issuer = Issuer::start();
    let policy = policy_yaml("apps", "web", &issuer.url, "");
    let token = issuer.token(json!({}));

    let server = Server::start(&[("p.yaml", &policy)], &["--fetch-guard"]);
    server
        .with_token("/auth/apps/web", &token)
        .assert_deny(503, "keys_unavailable");
    let line = server
        .proc
        .wait_line("signing key fetch failed", Duration::from_secs(20));
    assert!(line.contains(r#""error":"blocked_address""#), "{line}");

    let server = Server::start(
        &[("p.yaml", &policy)],
        &["--allow-fetch-cidr", "127.0.0.0/8"],
    );
    server.with_token("/auth/apps/web", &token).assert_allow();

    let server = Server::start(&[("p.yaml", &policy)], &[]);
    server.with_token("/auth/apps/web", &token).assert_allow();
}

/// A JWKS endpoint answering internal text: status and logs say `not_jwks`, nothing of the body.
#[test]
fn fetched_text_never_reaches_the_log() {
    let base = raw_server(ok_json(&format!(r#"{{"error":"{SECRET}"}}"#)));
    let policy = format!(
        "apiVersion: accessgate.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{ name: web, namespace: apps }}\nspec:\n  issuer:\n    url: {base}\n    jwksUri: {base}/certs\n  audiences: [\"{AUD}\"]\n"
    );
    let server = Server::start(&[("p.yaml", &policy)], &[]);
    let line = server
        .proc
        .wait_line("signing key fetch failed", Duration::from_secs(20));
    assert!(line.contains(r#""error":"not_jwks""#), "{line}");
    server
        .with_token("/auth/apps/web", "a.b.c")
        .assert_deny(401, "token_malformed");
    assert!(
        !server.proc.output().contains(SECRET),
        "{}",
        server.proc.output()
    );
}

/// `accessgate check` uses the same fetch: guard, cap and categories.
#[test]
fn check_fetches_like_the_server() {
    let issuer = Issuer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, policy_yaml("apps", "web", &issuer.url, "")).unwrap();
    let token = issuer.token(json!({}));
    let check = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args([
                "check",
                "--policy",
                file.to_str().unwrap(),
                "--token",
                &token,
            ])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = check(&[]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = check(&["--fetch-guard"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAILED to fetch") && out.contains("blocked_address"),
        "{out}"
    );
    let (code, out) = check(&["--allow-fetch-cidr", "127.0.0.0/8"]);
    assert_eq!(code, 0, "{out}");

    // A key document over the 1 MiB cap is refused, as the server refuses it.
    let big = raw_server(ok_json(&format!(
        r#"{{"keys": [], "pad": "{}"}}"#,
        "x".repeat(1 << 20)
    )));
    std::fs::write(
        &file,
        format!(
            "apiVersion: accessgate.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{ name: web, namespace: apps }}\nspec:\n  issuer:\n    url: {big}\n    jwksUri: {big}/certs\n  audiences: [\"{AUD}\"]\n"
        ),
    )
    .unwrap();
    let (code, out) = check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("too_large"), "{out}");
}

/// The most fetches of one URL the key store allows over `elapsed`: the burst, then one per
/// period.
fn fetch_limit(elapsed: Duration) -> u64 {
    u64::from(FETCH_BURST) + elapsed.as_secs() / FETCH_PERIOD.as_secs()
}

/// Five policies on the dev issuer's JWKS URL (or on `base`'s, to take it away).
fn five_policies(base: &str) -> String {
    (0..5)
        .map(|i| policy_yaml("apps", &format!("p{i}"), base, ""))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The worst `accessgate serve` accepts: every fetch interval at its floor (10 s), five
/// policies on one JWKS URL, a flood of tokens with unknown kids, the key endpoint failing
/// every other round, and the URL taken away from every policy and given back as fast as
/// the server reloads. The issuer counts the fetches over the server's whole life: never
/// more than the burst plus one per period.
#[test]
fn no_setting_traffic_or_churn_fetches_a_jwks_url_more_than_a_burst_then_once_per_10s() {
    let issuer = Issuer::start();
    let nowhere = ClosedPort::new();
    let on = five_policies(&issuer.url);
    let off = five_policies(&format!("http://{}", nowhere.addr));
    let unknown_kids: Vec<String> = (0..20)
        .map(|i| issuer.token(json!({"header": {"kid": format!("unknown-{i}")}})))
        .collect();
    let started = Instant::now();
    let server = Server::start(
        &[("p.yaml", &on)],
        &[
            "--jwks-refresh",
            "10s",
            "--jwks-retry",
            "10s",
            "--jwks-refetch-min-interval",
            "10s",
        ],
    );
    let until = started + Duration::from_secs(25);
    let requests = AtomicUsize::new(0);
    let mut churns = 0;
    let auth = format!("{}/auth/apps/p0", server.auth);
    std::thread::scope(|s| {
        s.spawn(|| {
            let client = http();
            while Instant::now() < until {
                for token in &unknown_kids {
                    let status = client
                        .get(&auth)
                        .header("x-original-url", "https://app.example.test/")
                        .header("cf-access-jwt-assertion", token)
                        .send()
                        .unwrap()
                        .status();
                    assert!(matches!(status.as_u16(), 401 | 503), "{status}");
                    requests.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        while Instant::now() < until {
            issuer.certs_mode(if churns % 2 == 0 { "fail" } else { "ok" });
            server.replace_policy("p.yaml", &off);
            server.replace_policy("p.yaml", &on);
            churns += 1;
        }
    });
    let fetches = issuer.certs_calls();
    let limit = fetch_limit(started.elapsed());
    eprintln!(
        "{fetches} key fetches (limit {limit}) over {:?}: {churns} rounds of churn, {} requests",
        started.elapsed(),
        requests.load(Ordering::Relaxed)
    );
    // Each round would fetch at least once without the limit (a URL given back to a policy
    // is fetched at once): the churn alone asks for more than the limit.
    assert!(
        churns > limit,
        "only {churns} rounds: the test proves nothing"
    );
    assert!(requests.into_inner() > 100, "the flood did not happen");
    assert!(
        (1..=limit).contains(&fetches),
        "{fetches} key fetches over {:?}; at most {limit} allowed:\n{}",
        started.elapsed(),
        server.proc.output()
    );
}

/// The limit lives in the key store, not in the flags: configured with no intervals at all
/// (which the binary refuses) and asked to refetch in a loop while the URL is dropped and
/// added again between asks, it still fetches a burst and then once per period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_store_limits_fetches_per_url_even_with_zero_intervals() {
    let issuer = tokio::task::spawn_blocking(Issuer::start).await.unwrap();
    let url = Url::parse(&issuer.certs_url()).unwrap();
    let started = Instant::now();
    let store = KeyStore::new(
        KeyConfig {
            refresh_interval: Duration::ZERO,
            retry_interval: Duration::ZERO,
            unknown_kid_min_interval: Duration::ZERO,
            ..KeyConfig::default()
        },
        Metrics::new(),
    )
    .unwrap();
    let (used, unused) = (HashSet::from([url.clone()]), HashSet::new());
    let mut asks = 0u64;
    while started.elapsed() < Duration::from_secs(12) {
        store.retain(&used);
        store.refetch(&url).await;
        if asks % 2 == 0 {
            store.retain(&unused);
        }
        asks += 1;
        tokio::task::yield_now().await;
    }
    let fetches = tokio::task::block_in_place(|| issuer.certs_calls());
    let limit = fetch_limit(started.elapsed());
    eprintln!(
        "{fetches} key fetches (limit {limit}) over {:?}: {asks} asks",
        started.elapsed()
    );
    assert!(asks > limit);
    assert!(
        (1..=limit).contains(&fetches),
        "{fetches} key fetches over {:?}; at most {limit} allowed",
        started.elapsed()
    );
}

/// Intervals that schedule key fetches are refused below 10 s by `serve` and `run`, before
/// anything starts, naming the flag, the value and the floor.
#[test]
fn fetch_intervals_below_the_floor_are_refused_at_start() {
    for command in [&["serve", "--policies", "/nonexistent"][..], &["run"]] {
        for flag in [
            "--jwks-refresh",
            "--jwks-retry",
            "--jwks-refetch-min-interval",
        ] {
            for value in ["0s", "9s", "9999ms"] {
                let out = Command::new(BIN)
                    .args(command)
                    .args([flag, value])
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                assert_eq!(
                    out.status.code(),
                    Some(2),
                    "{command:?} {flag} {value}: {err}"
                );
                for needle in [flag, &format!("'{value}'"), "at least 10s"] {
                    assert!(
                        err.contains(needle),
                        "{flag} {value}: no {needle:?} in {err}"
                    );
                }
            }
        }
    }
}

/// Seconds since the Unix epoch: the decision's clock.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
