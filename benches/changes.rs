//! What changing a policy safely costs on the cached path (not a test): the same cached token
//! against the same policy, plain, with candidate rules beside it, in dry-run, with a signed
//! upstream assertion, and with the decision log on (at its default rates, and writing every
//! line). Each subject is its own
//! `accessgate serve` (one core's worth of workers); subjects are measured in turn, repeated,
//! and each ratio is against the plain policy measured in the same run. Writes
//! `target/bench-report/15-changes.md` (joined into docs/benchmarks.md by `bench/run.sh`).

mod support;

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::Instant;

use common::nginx::{Nginx, Site};
use common::*;
use serde_json::json;
use support::*;

/// The e2e bench's policy: one host, one claim header.
const PLAIN: &str = "  hosts: [app.example.test]\n  claimHeaders:\n    - { header: X-Auth-Request-Email, claim: email }\n";

/// Candidate rules evaluated on every request: another rule and another header mapping, so
/// the candidate verifies, concludes and renders headers of its own.
const CANDIDATE: &str = "  candidate:\n    rules:\n      allow:\n        - { emailDomain: example.com }\n    claimHeaders:\n      - { header: X-Auth-Request-Email, claim: email }\n      - { header: X-Auth-Request-User, claim: sub }\n";

fn serve(issuer: &Issuer, extra_spec: &str, args: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        policy_yaml("bench", "web", &issuer.url, &format!("{PLAIN}{extra_spec}")),
    )
    .unwrap();
    Server::start_in_env(dir, args, &ONE_CORE)
}

fn main() {
    if listing() {
        return;
    }
    let started = Instant::now();
    let mut r = Report::new(
        "Changing a policy safely: candidate rules, dry-run, decision log; the upstream assertion",
        "The direct cached path (`/auth/{ns}/{name}`, one token, wrk `-t1 -c32`) of one policy, in six forms, each its own server measured in turn; means over 3 interleaved repeats. The assertion is signed once per half its lifetime (30 s) per identity, as in production.",
    );
    let issuer = Issuer::start();
    let token = issuer.token(json!({"ttl": 7200}));
    let headers = [
        ("Cf-Access-Jwt-Assertion", token.as_str()),
        ("X-Original-URL", "https://app.example.test/"),
    ];
    let logs = tempfile::tempdir().unwrap();
    let log = |name: &str| logs.path().join(name).to_str().unwrap().to_owned();
    let (default_log, every_log) = (log("default.jsonl"), log("every.jsonl"));
    let subjects: Vec<(&str, Server)> = vec![
        ("plain policy (baseline)", serve(&issuer, "", &[])),
        ("with candidate rules", serve(&issuer, CANDIDATE, &[])),
        ("in dry-run", serve(&issuer, "  mode: dryRun\n", &[])),
        (
            "with a signed upstream assertion (issue 23)",
            serve(&issuer, "  upstreamAssertion:\n    audience: bench\n", &[]),
        ),
        (
            "decision log on, default rates (10 allows/s)",
            serve(&issuer, "", &["--decision-log", &default_log]),
        ),
        (
            "decision log on, every line written",
            serve(
                &issuer,
                "",
                &[
                    "--decision-log",
                    &every_log,
                    "--decision-log-allows-per-second",
                    "10000000",
                    "--decision-log-queue-lines",
                    "1000000",
                ],
            ),
        ),
    ];
    const REPEATS: usize = 3;
    let mut loads: Vec<Vec<Load>> = vec![Vec::new(); subjects.len()];
    for rep in 1..=REPEATS {
        for (i, (name, server)) in subjects.iter().enumerate() {
            let url = format!("{}/auth/bench/web", server.auth);
            loads[i].push(r.row(
                "cached path",
                name,
                wrk(&url, &headers),
                format!("repeat {rep} of {REPEATS}"),
            ));
        }
    }
    // Through nginx as ingress-nginx renders auth-url (a subrequest on a new connection
    // each), the plain policy and the one with an assertion, each header listed in
    // auth-response-headers.
    let echo = common::echo::Echo::start();
    let through = |server: &Server, assertion: bool| {
        let mut headers = vec![
            "X-Auth-Request-Email".to_string(),
            "X-Auth-Request-User".to_string(),
        ];
        if assertion {
            headers.push("X-Accessgate-Assertion".into());
        }
        Nginx::start(
            &[Site {
                host: "app.example.test".into(),
                auth_url: format!("{}/auth/bench/web", server.auth),
                response_headers: headers,
            }],
            echo.port(),
        )
    };
    let plain_nginx = through(&subjects[0].1, false);
    let asserted_nginx = through(&subjects[3].1, true);
    let host = [
        ("Host", "app.example.test"),
        ("Cf-Access-Jwt-Assertion", token.as_str()),
    ];
    let (mut plain, mut asserted) = (Vec::new(), Vec::new());
    for rep in 1..=REPEATS {
        let n = format!("repeat {rep} of {REPEATS}");
        plain.push(r.row(
            "through nginx",
            "nginx + accessgate, plain policy",
            wrk(&plain_nginx.url("/"), &host),
            &n,
        ));
        asserted.push(r.row(
            "through nginx",
            "nginx + accessgate, with a signed upstream assertion",
            wrk(&asserted_nginx.url("/"), &host),
            &n,
        ));
    }
    let (plain, asserted) = (mean(&plain), mean(&asserted));
    r.verdict(
        "through nginx with a signed upstream assertion: throughput vs plain policy",
        asserted.rps / plain.rps,
        "≥ 0.9",
        asserted.rps >= 0.9 * plain.rps,
    );

    let means: Vec<Load> = loads.iter().map(|l| mean(l)).collect();
    let base = &means[0];
    for (i, ((name, server), m)) in subjects.iter().zip(&means).enumerate().skip(1) {
        // The last subject writes every allow, far past the default rates: context for
        // whoever raises them, not a target.
        let target = if i == subjects.len() - 1 {
            "(context)"
        } else {
            "≥ 0.9"
        };
        r.verdict(
            &format!("cached path {name}: throughput vs plain policy"),
            m.rps / base.rps,
            target,
            m.rps >= 0.9 * base.rps,
        );
        let written = server.metric_sum(
            "accessgate_decision_log_lines_total",
            &[("result", "written")],
        );
        let dropped = server.metric_sum("accessgate_decision_log_lines_total", &[]) - written;
        if written + dropped > 0.0 {
            r.note(
                "cached path",
                name,
                format!("decision log: {written:.0} lines written, {dropped:.0} dropped (rate limit or full queue)"),
            );
        }
    }
    let candidate = &subjects[1].1;
    let by = |result: &str| {
        candidate.metric_sum(
            "accessgate_candidate_decisions_total",
            &[("result", result)],
        )
    };
    r.note(
        "cached path",
        subjects[1].0,
        format!(
            "{:.0} requests compared with the candidate: {:.0} headers_differ (it maps one more header), {:.0} agree",
            candidate.metric_sum("accessgate_candidate_decisions_total", &[]),
            by("headers_differ") + 0.0,
            by("agree") + 0.0
        ),
    );
    r.write("15-changes", started.elapsed());
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
