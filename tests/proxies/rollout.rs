//! Rollouts that drop nothing: real nginx whose auth subrequests go to the endpoints of an
//! accessgate Service (two instances), under steady load while each instance in turn is sent
//! SIGTERM and replaced by a new one, as a rolling update does. No client may see anything
//! but 200.
//!
//! On SIGTERM an instance turns `/readyz` 503 at once, keeps answering for its drain period
//! while its endpoint leaves the Service, then stops accepting, answers what is in flight and
//! exits 0. The endpoint leaves here as in a cluster, while the instance drains and not
//! before: nginx's pool is rewritten and reloaded once the instance has answered a request
//! while unready. nginx never retries a failed subrequest on the other instance
//! (`proxy_next_upstream off`, as with the Service's one address), so an instance that
//! stopped at once, or dropped what it had, fails clients.

use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::echo::Echo;
use crate::common::nginx::Nginx;
use crate::common::*;

const HOST: &str = "app.example.test";
const AUTH_PATH: &str = "/auth/apps/web";

/// An instance of the Service: `accessgate serve` on ports of its own choosing, with the
/// policy `apps/web` for `issuer`. Its drain period leaves nginx's reload ample time.
fn instance(issuer: &Issuer) -> Server {
    Server::start(
        &[("web.yaml", &policy_yaml("apps", "web", &issuer.url, ""))],
        &["--drain-period", "3s", "--shutdown-grace", "10s"],
    )
}

/// The instance's address as an endpoint of the Service.
fn endpoint(instance: &Server) -> String {
    instance.auth.trim_start_matches("http://").to_owned()
}

/// The status of the instance's `/readyz`; `None` once it no longer answers.
fn readiness(instance: &Server) -> Option<u16> {
    http()
        .get(format!("{}/readyz", instance.admin))
        .send()
        .ok()
        .map(|r| r.status().as_u16())
}

/// The requests the instance has allowed so far, from its own `/metrics`; `None` once it
/// no longer answers.
fn answered(instance: &Server) -> Option<u64> {
    let text = http()
        .get(format!("{}/metrics", instance.admin))
        .send()
        .ok()?
        .text()
        .ok()?;
    Some(metric_sum(&text, "accessgate_decisions_total", &[("reason", "ok")]) as u64)
}

/// What one SIGTERM did to the instance that got it.
#[derive(Debug)]
struct Drained {
    /// `/readyz` answered 503 after the signal.
    unready: bool,
    /// Requests it allowed after `/readyz` turned 503 and before its endpoint left.
    answered_unready: u64,
    exit: Option<ExitStatus>,
    output: String,
}

#[test]
fn rolling_restarts_behind_nginx_drop_no_request() {
    let issuer = Issuer::start();
    let mut instances = [instance(&issuer), instance(&issuer)];
    let echo = Echo::start();
    let pool = |instances: &[Server]| instances.iter().map(endpoint).collect::<Vec<_>>();
    let nginx = Nginx::start_pool(HOST, AUTH_PATH, &pool(&instances), echo.port());
    let token = issuer.token(json!({}));

    // Steady load: 4 clients, each sending one request after another, each on a connection
    // of its own (a reload closes nginx's idle client connections, which a client reusing
    // one could race).
    let stop = Arc::new(AtomicBool::new(false));
    let (total, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let url = nginx.url("/page");
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, total, bad, token, url) = (
                stop.clone(),
                total.clone(),
                bad.clone(),
                token.clone(),
                url.clone(),
            );
            std::thread::spawn(move || {
                let client = http();
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let status = client
                        .get(&url)
                        .header("host", HOST)
                        .header("connection", "close")
                        .header("cf-access-jwt-assertion", &token)
                        .send()
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    total.fetch_add(1, Ordering::Relaxed);
                    if status != 200 {
                        bad.fetch_add(1, Ordering::Relaxed);
                        statuses.push(status);
                    }
                }
                statuses
            })
        })
        .collect();

    let started = Instant::now();
    let mut drained = Vec::new();
    for _round in 0..2 {
        for i in 0..instances.len() {
            let staying = endpoint(&instances[1 - i]);
            let leaving = &mut instances[i];
            // One SIGTERM, as the kubelet sends: a second would cut the drain short.
            leaving.proc.signal("TERM");
            // Unready at once, and still answering: a request allowed after /readyz said 503.
            let mut at_unready = None;
            let unready = eventually(Duration::from_secs(10), || {
                if readiness(leaving) == Some(503) {
                    at_unready = answered(leaving);
                }
                at_unready.is_some()
            });
            let mut answered_unready = 0;
            if let Some(at) = at_unready {
                eventually(Duration::from_secs(10), || {
                    answered_unready = answered(leaving).unwrap_or(at) - at;
                    answered_unready > 0
                });
            }
            // The endpoint leaves the Service.
            nginx.set_pool(HOST, AUTH_PATH, &[staying], echo.port());
            let exit = leaving.proc.wait_exit(Duration::from_secs(30));
            drained.push(Drained {
                unready,
                answered_unready,
                exit,
                output: leaving.proc.output(),
            });
            // Its replacement joins once ready, and takes its share.
            *leaving = instance(&issuer);
            assert!(
                eventually(Duration::from_secs(20), || readiness(leaving) == Some(200)),
                "the new instance never became ready:\n{}",
                leaving.proc.output()
            );
            nginx.set_pool(HOST, AUTH_PATH, &pool(&instances), echo.port());
            assert!(
                eventually(Duration::from_secs(20), || answered(&instances[i])
                    .is_some_and(|n| n > 0)),
                "the new instance got no request:\n{}",
                nginx.error_log()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    // Non-200 answers by status (0: no answer at all).
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    for status in clients.into_iter().flat_map(|c| c.join().unwrap()) {
        *statuses.entry(status).or_default() += 1;
    }
    let (total, bad) = (total.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    eprintln!(
        "zero-drop rollout: {total} requests through nginx in {:?}, {} SIGTERM+replace cycles, {bad} non-2xx; allowed while unready: {:?}",
        started.elapsed(),
        drained.len(),
        drained
            .iter()
            .map(|d| d.answered_unready)
            .collect::<Vec<_>>()
    );
    assert!(total > 100, "the load never ran: {total} requests");
    assert_eq!(
        bad, 0,
        "clients saw non-200 answers during the rollout: {statuses:?}"
    );
    // nginx's view: no subrequest an instance refused, reset or cut short.
    let failed: Vec<String> = nginx
        .error_log()
        .lines()
        .filter(|l| l.contains("[error]"))
        .map(str::to_owned)
        .collect();
    assert!(failed.is_empty(), "nginx errors: {failed:#?}");
    // Each instance's own view: it drained (answered while unready), then stopped its
    // listeners with nothing left in flight, and exited 0.
    for (n, d) in drained.iter().enumerate() {
        assert!(
            d.unready,
            "cycle {n}: /readyz did not turn 503 after SIGTERM"
        );
        assert!(
            d.answered_unready > 0,
            "cycle {n}: the instance answered nothing while draining"
        );
        assert!(
            d.output.contains("listeners stopped") && !d.output.contains("still in flight"),
            "cycle {n}: not a graceful stop:\n{}",
            d.output
        );
        assert!(
            d.exit.is_some_and(|s| s.success()),
            "cycle {n}: exit {:?}:\n{}",
            d.exit,
            d.output
        );
    }
}
