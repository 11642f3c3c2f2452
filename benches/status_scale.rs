//! Status at scale on the real API server: many policies over many namespaces, two
//! `accessgate run` replicas sharing the Lease, steady valid-token traffic spread over every
//! policy, JWKS refreshes at the floor (10 s, keys unchanged), spec edits under load, and a
//! leader failover. Reports status writes per policy per minute, status lag of a spec edit
//! (p50/p99), the follower's CPU, AccessPolicy watch events, and over the measurement window
//! the growth of etcd (database size, size in use, revision: from etcd's own metrics) and of
//! the kube-apiserver's resident memory. Figures only: nothing here asserts a duration.
//!
//! ACCESSGATE_SCALE_POLICIES (default 2000), ACCESSGATE_SCALE_SECONDS (measurement window,
//! default 120), ACCESSGATE_SCALE_RPS (default 200).

mod support;

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::cluster::ControlPlane;
use common::replica::{Replica, SYSTEM_NS};
use common::{Issuer, eventually, http, metric_sum};
use serde_json::{Value, json};
use support::Report;

const AUD: &str = "4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2";
const NAMESPACES: usize = 20;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn policy(ns: &str, name: &str, issuer: &str, audiences: &[&str]) -> Value {
    json!({"apiVersion": "accessgate.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"issuer": {"url": issuer, "jwksUri": format!("{issuer}/cdn-cgi/access/certs")},
                 "audiences": audiences}})
}

/// Policies Ready=True with `observedGeneration` equal to their generation.
fn enforced(cp: &ControlPlane) -> usize {
    let list = cp.get_json(&["accesspolicy", "-A"]);
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|o| {
                    o["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c["type"] == "Ready"
                                && c["status"] == "True"
                                && c["observedGeneration"] == o["metadata"]["generation"]
                        })
                    })
                })
                .count()
        })
        .unwrap_or(0)
}

/// AccessPolicy watch events the API server has sent.
fn watch_events(cp: &ControlPlane) -> f64 {
    let (_, text, _) = cp.kubectl(&["get", "--raw", "/metrics"], None);
    metric_sum(
        &text,
        "apiserver_watch_events_total",
        &[("resource", "accesspolicies")],
    )
}

/// What the cluster's storage holds, from etcd's own metrics endpoint (the kube-apiserver
/// does not report etcd's database size), and the kube-apiserver's resident memory. `None`
/// for a figure not exposed: a row then says so instead of showing a zero.
struct Storage {
    db_bytes: Option<f64>,
    in_use_bytes: Option<f64>,
    revision: Option<f64>,
    apiserver_rss_kib: Option<u64>,
}

fn storage(cp: &ControlPlane) -> Storage {
    let text = cp.etcd_metrics();
    let gauge = |name: &str| {
        text.lines()
            .any(|l| l.split([' ', '{']).next() == Some(name))
            .then(|| metric_sum(&text, name, &[]))
    };
    Storage {
        db_bytes: gauge("etcd_mvcc_db_total_size_in_bytes"),
        in_use_bytes: gauge("etcd_mvcc_db_total_size_in_use_in_bytes"),
        revision: gauge("etcd_debugging_mvcc_current_revision"),
        apiserver_rss_kib: Some(support::rss_kib(cp.apiserver_pid())).filter(|&k| k > 0),
    }
}

/// `start → end (+growth)` of one figure over the window, in `unit` (`scale` units per one),
/// or why it is missing.
fn growth(
    what: &str,
    start: Option<f64>,
    end: Option<f64>,
    scale: f64,
    unit: &str,
    window: Duration,
) -> String {
    match (start, end) {
        (Some(a), Some(b)) => format!(
            "{:.2} {unit} at the window's start, {:.2} {unit} at its end: {:+.2} {unit} in {:.0} s ({:+.3} {unit}/min)",
            a / scale,
            b / scale,
            (b - a) / scale,
            window.as_secs_f64(),
            (b - a) / scale / (window.as_secs_f64() / 60.0)
        ),
        _ => format!("not measured: {what} is not exposed"),
    }
}

fn patches(r: &Replica) -> f64 {
    metric_sum(
        &r.metrics(),
        "accessgate_status_patches_total",
        &[("result", "ok")],
    )
}

fn is_leader(r: &Replica) -> bool {
    metric_sum(&r.metrics(), "accessgate_leader", &[]) == 1.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if support::listing() {
        return;
    }
    let started = Instant::now();
    let n = env_or("ACCESSGATE_SCALE_POLICIES", 2000) as usize;
    let window = Duration::from_secs(env_or("ACCESSGATE_SCALE_SECONDS", 120));
    let rps = env_or("ACCESSGATE_SCALE_RPS", 200);

    let cp = ControlPlane::start();
    let issuer = Issuer::start();
    let kc = cp.service_account_kubeconfig(SYSTEM_NS, "accessgate");
    let names: Vec<(String, String)> = (0..n)
        .map(|i| (format!("ns-{:02}", i % NAMESPACES), format!("p-{i:05}")))
        .collect();
    for ns in 0..NAMESPACES {
        cp.kubectl_ok(&["create", "namespace", &format!("ns-{ns:02}")]);
    }
    let empty = storage(&cp);
    for chunk in names.chunks(250) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|(ns, name)| policy(ns, name, &issuer.url, &[AUD]))
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        cp.apply(&list.to_string()).expect("apply policies");
    }
    let args = ["--jwks-refresh", "10s", "--jwks-retry", "10s"];
    let a = Replica::start(&kc, "replica-a", &args);
    let b = Replica::start(&kc, "replica-b", &args);
    let settled = Instant::now();
    assert!(
        eventually(Duration::from_secs(600), || enforced(&cp) == n),
        "not every policy became Ready: {} of {n}",
        enforced(&cp)
    );
    let first_status = settled.elapsed();
    let (mut leader, follower) = if is_leader(&a) { (a, b) } else { (b, a) };
    // The first statuses are written; let their Events and counters settle before measuring.
    let queue = |r: &Replica| metric_sum(&r.metrics(), "accessgate_status_queue_depth", &[]);
    let mut last = -1.0;
    assert!(eventually(Duration::from_secs(300), || {
        let now = patches(&leader);
        let still = now == last && queue(&leader) == 0.0;
        last = now;
        std::thread::sleep(Duration::from_secs(2));
        still
    }));
    let events_at_start = cp.get_json(&["events.events.k8s.io", "-A"])["items"]
        .as_array()
        .map_or(0, Vec::len);

    // Steady traffic over every policy, on both replicas, while edits are timed.
    let token = issuer.token(json!({}));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = [leader.auth.clone(), follower.auth.clone()]
        .into_iter()
        .enumerate()
        .map(|(t, auth)| {
            let (stop, sent, failed, token, names) = (
                stop.clone(),
                sent.clone(),
                failed.clone(),
                token.clone(),
                names.clone(),
            );
            let gap = Duration::from_secs_f64(2.0 / rps as f64);
            std::thread::spawn(move || {
                let client = http();
                let mut i = t;
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let (ns, name) = &names[i % names.len()];
                    let ok = client
                        .get(format!("{auth}/auth/{ns}/{name}"))
                        .header("x-original-url", "https://app.example.test/")
                        .header("cf-access-jwt-assertion", &token)
                        .send()
                        .is_ok_and(|r| r.status() == 200);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 7;
                    next += gap;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            })
        })
        .collect();

    let (storage_before, watch_before) = (storage(&cp), watch_events(&cp));
    let patches_before = patches(&leader) + patches(&follower);
    let cpu_before = support::cpu_seconds(follower.proc.pid());
    let began = Instant::now();
    // Spec edits spread over the window: time until status shows the new generation.
    let edits = 20usize;
    let mut lags = Vec::new();
    for e in 0..edits {
        let (ns, name) = &names[(e * 97) % n];
        let edited = policy(ns, name, &issuer.url, &[AUD, &format!("edit-{e}")]);
        let t = Instant::now();
        cp.apply(&edited.to_string()).expect("edit");
        let generation =
            cp.get_json(&["accesspolicy", name, "-n", ns])["metadata"]["generation"].clone();
        assert!(eventually(Duration::from_secs(60), || {
            cp.get_json(&["accesspolicy", name, "-n", ns])["status"]["observedGeneration"]
                == generation
        }));
        lags.push(t.elapsed());
        let pause = window.saturating_sub(began.elapsed()) / (edits - e) as u32;
        std::thread::sleep(pause.min(Duration::from_secs(30)));
    }
    let elapsed = began.elapsed();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let cpu = support::cpu_seconds(follower.proc.pid()) - cpu_before;
    let (storage_after, watch_after) = (storage(&cp), watch_events(&cp));
    let writes = patches(&leader) + patches(&follower) - patches_before;
    let minutes = elapsed.as_secs_f64() / 60.0;
    // Edits write once each (generation, Ready): what is left is steady-state writing.
    let steady = (writes - edits as f64).max(0.0);

    // Failover with nothing changed: the standby takes over and writes nothing.
    let before_failover = patches(&follower);
    let killed = Instant::now();
    leader.proc.kill();
    let took_over = eventually(Duration::from_secs(30), || is_leader(&follower));
    let failover = killed.elapsed();
    std::thread::sleep(Duration::from_secs(10));
    let failover_writes = patches(&follower) - before_failover;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        let _ = t.join();
    }
    lags.sort();

    let mut report = Report::new(
        "Status at scale (real API server)",
        &format!(
            "{n} AccessPolicies over {NAMESPACES} namespaces, two `accessgate run` replicas sharing the Lease, \
             {rps} valid-token requests/s spread over every policy on both replicas, JWKS refresh every 10 s \
             (keys unchanged), {edits} spec edits spread over a {:.0?} window, then the leader killed.",
            window
        ),
    );
    let per_policy_minute = steady / n as f64 / minutes;
    report.note(
        "steady state",
        "status writes",
        format!(
            "{steady:.0} besides the {edits} edits in {:.0} s: {per_policy_minute:.4} per policy per minute (target ≤ 0.05)",
            elapsed.as_secs_f64()
        ),
    );
    report.note(
        "steady state",
        "AccessPolicy watch events",
        format!(
            "{:.0} in the window ({:.2}/s), {} requests sent, {} not 200",
            watch_after - watch_before,
            (watch_after - watch_before) / elapsed.as_secs_f64(),
            sent,
            failed
        ),
    );
    report.note(
        "steady state",
        "follower CPU",
        format!(
            "{:.1} % of one core over the window (serving its half of the traffic included)",
            100.0 * cpu / elapsed.as_secs_f64()
        ),
    );
    report.note(
        "spec edit",
        "status lag",
        format!(
            "p50 {:.2?}, p99 {:.2?}, max {:.2?} over {edits} edits (target p99 < 2 s)",
            percentile(&lags, 0.5),
            percentile(&lags, 0.99),
            lags.last().unwrap()
        ),
    );
    let mb = |b: Option<f64>| b.map_or("?".to_owned(), |b| format!("{:.2} MB", b / 1e6));
    report.note(
        "etcd",
        "database size",
        format!(
            "{} empty (before any policy); {}",
            mb(empty.db_bytes),
            growth(
                "etcd_mvcc_db_total_size_in_bytes",
                storage_before.db_bytes,
                storage_after.db_bytes,
                1e6,
                "MB",
                elapsed
            )
        ),
    );
    report.note(
        "etcd",
        "database size in use",
        format!(
            "{} empty; {} (the file above only shrinks when compacted and defragmented)",
            mb(empty.in_use_bytes),
            growth(
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                storage_before.in_use_bytes,
                storage_after.in_use_bytes,
                1e6,
                "MB",
                elapsed
            )
        ),
    );
    report.note(
        "etcd",
        "revision",
        match (storage_before.revision, storage_after.revision) {
            (Some(a), Some(b)) => format!(
                "{:.0} → {:.0}: {:.0} writes to etcd in the window ({:.2}/s; every write counts: status, Events, the Lease, the edits), {writes:.0} of them status patches",
                a,
                b,
                b - a,
                (b - a) / elapsed.as_secs_f64()
            ),
            _ => "not measured: etcd_debugging_mvcc_current_revision is not exposed".to_owned(),
        },
    );
    report.note(
        "kube-apiserver",
        "resident memory",
        growth(
            "the kube-apiserver's VmRSS",
            storage_before.apiserver_rss_kib.map(|k| k as f64),
            storage_after.apiserver_rss_kib.map(|k| k as f64),
            1024.0,
            "MiB",
            elapsed,
        ),
    );
    report.note(
        "start",
        "first status for every policy",
        format!("{first_status:.1?}; {events_at_start} Events in all (Warning or PolicyAccepted per new policy, none per replica start)"),
    );
    report.note(
        "failover",
        "standby takes over",
        format!(
            "leading after {failover:.1?} ({}), {failover_writes:.0} status writes in the 10 s after (target 0)",
            if took_over { "took over" } else { "did not take over" }
        ),
    );
    report.verdict(
        "status writes per policy per minute vs the 0.05 budget",
        per_policy_minute / 0.05,
        "≤ 1.00×",
        per_policy_minute <= 0.05,
    );
    let p99 = percentile(&lags, 0.99).as_secs_f64();
    report.verdict(
        "spec edit status lag p99 vs 2 s",
        p99 / 2.0,
        "< 1.00×",
        p99 < 2.0,
    );
    report.write("25-status-scale", started.elapsed());
}
