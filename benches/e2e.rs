//! End-to-end benchmarks (not tests): accessgate against the physical limit and against
//! peers, each ratio against a baseline measured in the same run on the same machine.
//! Writes docs/benchmarks.md. Run everything with `bench/run.sh`.
//!
//! Every server under load gets one core's worth of workers (nginx: one process;
//! accessgate: TOKIO_WORKER_THREADS=1; Go peers: GOMAXPROCS=1); wrk uses one thread. The
//! machine has two cores, so load generator and servers share them: the same for every row.

mod support;

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use common::nginx::{Nginx, STATIC_ALLOW, Site};
use common::*;
use serde_json::json;
use support::*;

/// A policy on one host mapping one claim to a header, as the zero-work server answers.
fn policy_named(name: &str, issuer: &str, host: &str) -> String {
    let extra = format!(
        "  hosts: [{host}]\n  claimHeaders:\n    - {{ header: X-Auth-Request-Email, claim: email }}\n"
    );
    policy_yaml("bench", name, issuer, &extra)
}

fn main() {
    zero_work::serve_if_asked();
    if listing() {
        return;
    }
    let started = Instant::now();
    let mut r = Report::new(
        "Through nginx, direct, cold verification, scale",
        "Every server under load gets one core's worth of workers; wrk `-t1 -c32`.",
    );
    let issuer = Issuer::start();
    let token = issuer.token(json!({"ttl": 7200}));
    let assertion = [
        ("Cf-Access-Jwt-Assertion", token.as_str()),
        ("X-Original-URL", "https://app.example.test/"),
    ];

    // 1. Through nginx (ingress-nginx's auth-url config) vs the same nginx with a static-200 auth location.
    let server = Server::start_in_env(
        {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(
                d.path().join("p.yaml"),
                policy_named("web", &issuer.url, "app.example.test"),
            )
            .unwrap();
            d
        },
        &[],
        &ONE_CORE,
    );
    let echo = common::echo::Echo::start();
    let headers = vec![
        "X-Auth-Request-Email".to_string(),
        "X-Auth-Request-User".to_string(),
    ];
    let real = Nginx::start(
        &[Site {
            host: "app.example.test".into(),
            auth_url: format!("{}/auth/bench/web", server.auth),
            response_headers: headers.clone(),
        }],
        echo.port(),
    );
    let ceiling = Nginx::start(
        &[Site {
            host: "app.example.test".into(),
            auth_url: STATIC_ALLOW.into(),
            response_headers: headers.clone(),
        }],
        echo.port(),
    );
    let host = [
        ("Host", "app.example.test"),
        ("Cf-Access-Jwt-Assertion", token.as_str()),
    ];
    let base = r.row(
        "through nginx",
        "nginx, auth location returns 200 (ceiling)",
        wrk(&ceiling.url("/"), &host),
        "",
    );
    let ours = r.row(
        "through nginx",
        "nginx + accessgate (auth-url subrequest, new connection each)",
        wrk(&real.url("/"), &host),
        "as ingress-nginx renders auth-url",
    );
    r.verdict(
        "through nginx: throughput vs ceiling",
        ours.rps / base.rps,
        "≥ 0.9",
        ours.rps >= 0.9 * base.rps,
    );
    r.verdict(
        "through nginx: p99 vs ceiling p99",
        ours.p99_ms / base.p99_ms,
        "≤ 1.5",
        ours.p99_ms <= 1.5 * base.p99_ms,
    );
    drop((real, ceiling));
    // What the subrequest itself costs nginx: the same config with a zero-work auth service
    // (a second nginx answering `return 200`), and with ingress-nginx's `auth-keepalive`.
    let noop = Nginx::start_return_200();
    let via_noop = Nginx::start(
        &[Site {
            host: "app.example.test".into(),
            auth_url: noop.url("/"),
            response_headers: headers.clone(),
        }],
        echo.port(),
    );
    let zero = r.row(
        "through nginx",
        "nginx + a zero-work auth service (nginx return 200)",
        wrk(&via_noop.url("/"), &host),
        "nginx's own subrequest cost",
    );
    drop(via_noop);
    r.verdict(
        "through nginx: accessgate vs a zero-work auth service",
        ours.rps / zero.rps,
        "(context)",
        true,
    );
    let keep = Nginx::start_keepalive(
        &[Site {
            host: "app.example.test".into(),
            auth_url: format!("{}/auth/bench/web", server.auth),
            response_headers: headers.clone(),
        }],
        echo.port(),
    );
    let kept = r.row(
        "through nginx",
        "nginx + accessgate with auth-keepalive",
        wrk(&keep.url("/"), &host),
        "nginx.ingress.kubernetes.io/auth-keepalive",
    );
    drop(keep);
    let keep_noop = Nginx::start_keepalive(
        &[Site {
            host: "app.example.test".into(),
            auth_url: noop.url("/"),
            response_headers: headers,
        }],
        echo.port(),
    );
    let zero_kept = r.row(
        "through nginx",
        "nginx + zero-work auth service with auth-keepalive",
        wrk(&keep_noop.url("/"), &host),
        "",
    );
    drop((keep_noop, noop));
    r.verdict(
        "through nginx, auth-keepalive: throughput vs ceiling",
        kept.rps / base.rps,
        "≥ 0.9",
        kept.rps >= 0.9 * base.rps,
    );
    r.verdict(
        "through nginx, auth-keepalive: p99 vs ceiling p99",
        kept.p99_ms / base.p99_ms,
        "≤ 1.5",
        kept.p99_ms <= 1.5 * base.p99_ms,
    );
    r.verdict(
        "through nginx, auth-keepalive: accessgate vs zero-work auth service",
        kept.rps / zero_kept.rps,
        "(context)",
        true,
    );

    // 2. Direct, cached token: accessgate against a zero-work server on its own stack (axum +
    // tokio, same route and response headers) and nginx `return 200`, interleaved.
    let direct = direct_rows(&mut r, &server.auth, &assertion);

    // 3. Cold verification per core vs openssl's RSA-2048 verify per core.
    let ours_cold = cold_verifications_per_second(&issuer);
    let openssl = openssl_rsa2048_verify_per_second();
    r.note(
        "cold verify (1 core)",
        "openssl speed rsa2048 verify/s",
        format!("{openssl:.0}/s"),
    );
    r.note(
        "cold verify (1 core)",
        "accessgate decide(), every token new, cache off",
        format!("{ours_cold:.0}/s"),
    );
    r.verdict(
        "cold verification vs openssl RSA-2048 verify",
        ours_cold / openssl,
        "≥ 0.9",
        ours_cold >= 0.9 * openssl,
    );

    // 4. Scale: 1 vs 10,000 policies.
    let (idle_1, load_1) = (rss_kib(server.proc.pid()), direct.clone());
    drop(server);
    // The YAML loader admits at most 1024 documents per file: 10 files of 1000.
    let many = tempfile::tempdir().unwrap();
    for f in 0..10 {
        let mut text = String::new();
        for i in f * 1000..(f + 1) * 1000 {
            writeln!(
                text,
                "{}\n---",
                policy_named(&format!("p{i}"), &issuer.url, &format!("h{i}.example.test"))
            )
            .unwrap();
        }
        std::fs::write(many.path().join(format!("many-{f}.yaml")), text).unwrap();
    }
    let t0 = Instant::now();
    let big = Server::start_in_env(many, &[], &ONE_CORE);
    let load_time = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let idle_10k = rss_kib(big.proc.pid());
    let load_10k = r.row(
        "scale",
        "accessgate, 10,000 policies, cached token",
        wrk(&format!("{}/auth/bench/p5000", big.auth), &assertion),
        format!("start-up with 10,000 policies: {load_time:.1?}"),
    );
    let busy_10k = rss_kib(big.proc.pid());
    drop(big);
    r.note(
        "scale",
        "RSS idle: 1 policy / 10,000 policies",
        format!(
            "{:.1} MiB / {:.1} MiB (after load: {:.1} MiB)",
            idle_1 as f64 / 1024.0,
            idle_10k as f64 / 1024.0,
            busy_10k as f64 / 1024.0
        ),
    );
    r.verdict(
        "p50 latency, 10,000 vs 1 policy",
        load_10k.p50_ms / load_1.p50_ms,
        "≤ 1.1",
        load_10k.p50_ms <= 1.1 * load_1.p50_ms,
    );
    r.verdict(
        "p99 latency, 10,000 vs 1 policy",
        load_10k.p99_ms / load_1.p99_ms,
        "≤ 1.1",
        load_10k.p99_ms <= 1.1 * load_1.p99_ms,
    );
    r.verdict(
        "RSS idle, 1 policy (MiB, target < 20)",
        idle_1 as f64 / 1024.0 / 20.0,
        "< 1 (of 20 MiB)",
        idle_1 < 20 * 1024,
    );
    r.verdict(
        "RSS idle, 10,000 policies (MiB, target < 64)",
        idle_10k as f64 / 1024.0 / 64.0,
        "< 1 (of 64 MiB)",
        idle_10k < 64 * 1024,
    );

    r.write("10-e2e", started.elapsed());
}

/// Means over interleaved repeats of the three direct subjects; returns accessgate's.
fn direct_rows(r: &mut Report, auth: &str, assertion: &[(&str, &str)]) -> Load {
    const REPEATS: usize = 2;
    let floor_nginx = Nginx::start_return_200();
    let zero_work = zero_work::ZeroWork::start();
    let url = |base: &str| format!("{base}/auth/bench/web");
    let (mut nginx, mut zero, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 1..=REPEATS {
        let n = format!("repeat {rep} of {REPEATS}");
        nginx.push(r.row(
            "direct",
            "nginx return 200",
            wrk(&floor_nginx.url("/"), assertion),
            &n,
        ));
        zero.push(r.row(
            "direct",
            "zero-work axum + tokio server, same route and headers",
            wrk(&url(&zero_work.url), assertion),
            &n,
        ));
        ours.push(r.row(
            "direct",
            "accessgate /auth/{ns}/{name}, cached token",
            wrk(&url(auth), assertion),
            &n,
        ));
    }
    let (nginx, zero, ours) = (mean(&nginx), mean(&zero), mean(&ours));
    r.verdict(
        "direct, cached: throughput vs zero-work server on the same stack",
        ours.rps / zero.rps,
        "≥ 0.85",
        ours.rps >= 0.85 * zero.rps,
    );
    r.verdict(
        "direct, cached: p99 vs zero-work server's p99",
        ours.p99_ms / zero.p99_ms,
        "≤ 1.5",
        ours.p99_ms <= 1.5 * zero.p99_ms,
    );
    r.verdict(
        "direct, cached: throughput vs nginx return 200",
        ours.rps / nginx.rps,
        "≥ 0.6",
        ours.rps >= 0.6 * nginx.rps,
    );
    r.verdict(
        "direct: zero-work server vs nginx return 200 (the stack's own floor)",
        zero.rps / nginx.rps,
        "(context)",
        true,
    );
    ours
}

fn mean(loads: &[Load]) -> Load {
    let n = loads.len().max(1) as f64;
    Load {
        rps: loads.iter().map(|l| l.rps).sum::<f64>() / n,
        p50_ms: loads.iter().map(|l| l.p50_ms).sum::<f64>() / n,
        p99_ms: loads.iter().map(|l| l.p99_ms).sum::<f64>() / n,
        failures: loads.iter().map(|l| l.failures).sum(),
    }
}

fn cold_verifications_per_second(issuer: &Issuer) -> f64 {
    use accessgate::api::{AccessPolicySpec, IssuerSpec};
    use accessgate::core::decision::{Decision, decide};
    use accessgate::core::policy::{PolicyKey, compile};
    use accessgate::keys::tokens::TokenCache;
    use accessgate::keys::{FixedKeys, parse_key_set};
    let keys = FixedKeys(Some(
        parse_key_set(issuer.certs().to_string().as_bytes()).unwrap(),
    ));
    let spec = AccessPolicySpec {
        issuer: IssuerSpec {
            team_domain: None,
            url: Some(issuer.url.clone()),
            jwks_uri: Some(issuer.certs_url()),
        },
        audiences: vec![AUD.into()],
        ..Default::default()
    };
    let policy = compile(PolicyKey::new("bench", "cold"), None, &spec).unwrap();
    let requests: Vec<axum::http::HeaderMap> = (0..2000)
        .map(|i| {
            let t = issuer.token(json!({"email": format!("u{i}@example.com")}));
            let mut h = axum::http::HeaderMap::new();
            h.insert("cf-access-jwt-assertion", t.parse().unwrap());
            h
        })
        .collect();
    let off = TokenCache::disabled();
    let now = accessgate::devissuer::unix_now() as u64;
    let t = Instant::now();
    let mut allowed = 0;
    for _ in 0..3 {
        for h in &requests {
            if matches!(decide(&policy, h, &keys, &off, now), Decision::Allow { .. }) {
                allowed += 1;
            }
        }
    }
    assert_eq!(allowed, 3 * requests.len(), "every cold token must verify");
    allowed as f64 / t.elapsed().as_secs_f64()
}

fn openssl_rsa2048_verify_per_second() -> f64 {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "3", "rsa2048"])
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.trim_start().starts_with("rsa") && l.contains("2048"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(f64::NAN)
}
