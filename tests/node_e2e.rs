//! The chart on a real node (issue 21): the image built from the project's Dockerfile by
//! buildah, run by a real kubelet (containerd + runc, CNI bridge, kube-proxy) from
//! `helm install`; its probes, ServiceAccount token, Lease, PodDisruptionBudget, `helm test`
//! Pod and rolling update exercised as a platform team would. See tests/node/README.md and
//! docs/testing.md ("What the node suite exercises"). Runs as root (the node needs it); the tests
//! take turns on one node cluster per test binary.
#![cfg(feature = "e2e")]

mod common;

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::cluster::ready_condition;
use common::nginx::{Nginx, Site};
use common::node::{self, CHART, Node, is_ready};
use common::*;
use serde_json::{Value, json};

/// The README's quick start: release `accessgate` in `accessgate-system`.
const QS_REL: &str = "accessgate";
const QS_NS: &str = "accessgate-system";
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/accessgate/files/rbac-rules.yaml"
);
/// The chart's default `leaseDuration`.
const LEASE_DURATION: Duration = Duration::from_secs(10);

/// Whether status describes the policy's current generation and says it is enforced.
fn enforced(obj: &Value) -> bool {
    obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        && ready_condition(obj) == Some(("True".into(), "Enforced".into()))
}

fn node() -> &'static Node {
    Node::shared()
}

struct QuickStart {
    installed_in: Duration,
    timeline: String,
}

/// The README's quick start, once per test binary (its release also installs the CRD every
/// other release of the suite uses): `helm install accessgate charts/accessgate --namespace
/// accessgate-system --create-namespace --wait` plus the test values (local images, the dev
/// issuer's address and CA), with `kubectl get pods -w` recording the pods' lifecycle.
fn quick_start() -> &'static QuickStart {
    static QS: OnceLock<QuickStart> = OnceLock::new();
    QS.get_or_init(|| {
        let node = node();
        node.prepare_namespace(QS_NS);
        let watch = node.watch_pods(QS_NS);
        let installed_in = node
            .install(
                QS_REL,
                QS_NS,
                &[
                    "--set",
                    "networkPolicy.ingressControllerNamespaces={ingress-nginx}",
                ],
            )
            .unwrap_or_else(|e| panic!("helm install (quick start) failed: {e}"));
        // kubectl prints the pods' last change a moment after helm saw it.
        eventually(Duration::from_secs(10), || {
            watch.timeline().matches(" 1/1 ").count() >= 2
        });
        QuickStart {
            installed_in,
            timeline: watch.timeline(),
        }
    })
}

/// An AccessPolicy for the node's dev issuer; `extra` is appended to `spec`.
fn policy(ns: &str, name: &str, extra: &str) -> String {
    policy_yaml(ns, name, &node().issuer.url, extra)
}

fn create_namespace(ns: &str) {
    let _ = node().cp.kubectl(&["create", "namespace", ns], None);
}

/// `GET http://IP/auth/NS/NAME` as an ingress controller sends it, with `token` if any.
fn auth(
    ip: &str,
    ns: &str,
    name: &str,
    token: Option<&str>,
) -> Result<(u16, reqwest::header::HeaderMap), String> {
    let mut req = http()
        .get(format!("http://{ip}/auth/{ns}/{name}"))
        .header("x-original-url", "https://app.example.test/")
        .timeout(Duration::from_secs(5));
    if let Some(t) = token {
        req = req.header("cf-access-jwt-assertion", t);
    }
    req.send()
        .map(|r| (r.status().as_u16(), r.headers().clone()))
        .map_err(|e| e.to_string())
}

/// Waits until the release has `n` Ready pods not being deleted; their names.
#[track_caller]
fn wait_ready_pods(ns: &str, release: &str, n: usize, timeout: Duration) -> Vec<String> {
    let mut ready = Vec::new();
    let ok = eventually(timeout, || {
        ready = node().ready_pods(ns, release);
        ready.len() == n && node().pods(ns, release).len() == n
    });
    assert!(
        ok,
        "{ns}/{release}: wanted {n} ready pods, have {ready:?}; pods: {}\n{}",
        node()
            .cp
            .kubectl(&["get", "pods", "-n", ns, "-o", "wide"], None)
            .1,
        node().health()
    );
    ready
}

/// Seconds from a pod's creation to its Ready condition (the API's 1 s resolution).
fn ready_after(pod: &Value) -> i64 {
    let t = |s: &Value| chrono_secs(s.as_str().unwrap_or_default());
    let ready = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| t(&c["lastTransitionTime"]))
        .unwrap_or_default();
    ready - t(&pod["metadata"]["creationTimestamp"])
}

/// An RFC 3339 UTC timestamp (`2026-12-05T02:31:14Z`) as seconds since the epoch.
fn chrono_secs(s: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok()).unwrap_or(0);
    let (y, mo, d) = (n(0..4), n(5..7), n(8..10));
    let (h, mi, se) = (n(11..13), n(14..16), n(17..19));
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    days * 86400 + h * 3600 + mi * 60 + se
}

/// a. `helm install` with the image built from the Dockerfile: two pods Running and Ready
/// through the chart's own probes; the leader writes the status of a policy applied with
/// kubectl (Ready=True, the chart's authUrl); requests through the chart's Service (ClusterIP,
/// kube-proxy) with a dev-issuer token are allowed with identity headers, without one denied.
#[test]
fn quick_start_install_runs_ready_pods_that_enforce_a_policy() {
    let _turn = node::lock();
    let node = node();
    let qs = quick_start();
    eprintln!(
        "node cluster started in {:.1}s; helm install --wait took {:.1}s; `kubectl get pods -n {QS_NS} -w`:\n{}",
        node.started_in.as_secs_f64(),
        qs.installed_in.as_secs_f64(),
        qs.timeline
    );

    let pods = node.pods(QS_NS, QS_REL);
    assert_eq!(pods.len(), 2, "replicaCount 2\n{}", node.health());
    let image = format!("{}:{}", node.image.0, node.image.1);
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().unwrap();
        assert!(
            is_ready(pod),
            "{name} not Running+Ready: {:#}",
            pod["status"]
        );
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["image"], image.as_str());
        assert_eq!(c["imagePullPolicy"], "Never");
        // Ready through the chart's own probes (the kubelet ran them: no probe, no Ready gate).
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
        eprintln!("pod {name}: Ready {} s after creation", ready_after(pod));
    }

    // The leader (Lease holder) is one of them.
    let lease = "accessgate-leader";
    let mut holder = None;
    eventually(Duration::from_secs(30), || {
        holder = node.lease_holder(QS_NS, lease);
        holder.is_some()
    });
    let holder = holder.expect("a Lease holder");
    let names: Vec<&str> = pods
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&holder.as_str()),
        "holder {holder} not in {names:?}"
    );

    // A policy applied with kubectl: the leader writes its status.
    let apps = "apps";
    create_namespace(apps);
    node.cp
        .apply(&policy(apps, "web", ""))
        .expect("kubectl apply the policy");
    let obj = node
        .cp
        .wait_policy(apps, "web", Duration::from_secs(60), enforced);
    assert_eq!(
        ready_condition(&obj),
        Some(("True".into(), "Enforced".into()))
    );
    assert_eq!(
        obj["status"]["authUrl"],
        "http://accessgate.accessgate-system.svc.cluster.local/auth/apps/web",
        "{:#}",
        obj["status"]
    );

    // Through the Service's ClusterIP (kube-proxy's rules), from the host.
    let ip = node.cluster_ip(QS_NS, "accessgate");
    let token = node.issuer.token(json!({}));
    let mut last = Err(String::new());
    // Until kube-proxy's rules and the replicas' JWKS fetch are in place.
    let allowed = eventually(Duration::from_secs(30), || {
        last = auth(&ip, apps, "web", Some(&token));
        matches!(&last, Ok((200, _)))
    });
    assert!(allowed, "no 200 through {ip}: {last:?}");
    let (_, headers) = last.unwrap();
    assert_eq!(headers["x-auth-request-email"], "alice@example.com");
    // Both replicas answer the same (new connections spread over the endpoints).
    for _ in 0..20 {
        assert_eq!(auth(&ip, apps, "web", Some(&token)).unwrap().0, 200);
        let (status, h) = auth(&ip, apps, "web", None).unwrap();
        assert_eq!(status, 401);
        assert_eq!(h["x-accessgate-reason"], "token_missing");
    }
}

/// b. `helm test` runs the chart's test Pod (curl through the Service's admin port, by its
/// cluster DNS name) to success.
#[test]
fn helm_test_pod_succeeds() {
    let _turn = node::lock();
    let node = node();
    quick_start();
    node.publish_service_dns(QS_NS, "accessgate");
    let started = Instant::now();
    let out = node.helm_ok(&["test", QS_REL, "--namespace", QS_NS, "--timeout", "120s"]);
    eprintln!(
        "helm test took {:.1}s:\n{out}",
        started.elapsed().as_secs_f64()
    );
    assert!(out.contains("Phase:          Succeeded"), "{out}");
}

/// f. The pods as the kubelet runs them, seen from the host: uid/gid 65532, no capabilities,
/// the root filesystem mounted read-only, the projected ServiceAccount token in place; and
/// the ServiceAccount can do exactly what charts/accessgate/files/rbac-rules.yaml grants.
#[test]
fn pods_run_as_nonroot_read_only_with_token_and_only_the_charts_rbac() {
    let _turn = node::lock();
    let node = node();
    quick_start();
    for name in node.ready_pods(QS_NS, QS_REL) {
        let pid = node
            .container_pid(&name)
            .unwrap_or_else(|| panic!("no accessgate process for pod {name} on the host"));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(field("Uid:"), "65532 65532 65532 65532", "{name}");
        assert_eq!(field("Gid:"), "65532 65532 65532 65532", "{name}");
        assert_eq!(field("CapEff:"), "0000000000000000", "{name}");
        assert_eq!(field("NoNewPrivs:"), "1", "{name}");
        assert_eq!(
            field("Seccomp:"),
            "2",
            "{name}: seccomp filter (RuntimeDefault)"
        );
        let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let root = mountinfo
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .rfind(|f| f.get(4) == Some(&"/"))
            .expect("a root mount");
        assert!(
            root[5].split(',').any(|o| o == "ro"),
            "{name}: root mounted {:?}",
            root
        );
        let sa = format!("/proc/{pid}/root/var/run/secrets/kubernetes.io/serviceaccount");
        let token = std::fs::read_to_string(format!("{sa}/token")).unwrap();
        assert_eq!(token.trim().split('.').count(), 3, "{name}: a JWT");
        assert_eq!(
            std::fs::read_to_string(format!("{sa}/namespace")).unwrap(),
            QS_NS
        );
        assert!(
            std::fs::read_to_string(format!("{sa}/ca.crt"))
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        // Writing to the image's filesystem fails inside the pod's root (as the pod's uid
        // would see it: read-only for everyone).
        let probe = format!("/proc/{pid}/root/usr/local/bin/.write-probe");
        let err = std::fs::write(&probe, b"x").expect_err("root filesystem is read-only");
        assert_eq!(err.raw_os_error(), Some(30), "EROFS, got {err}");
        eprintln!("pod {name}: pid {pid}, uid 65532, root ro, token mounted");
    }

    // RBAC: `kubectl auth can-i --list` as the ServiceAccount, against the rules file.
    let sa = format!("system:serviceaccount:{QS_NS}:accessgate");
    let rules: Value = serde_saphyr::from_str(&std::fs::read_to_string(RULES).unwrap()).unwrap();
    let mut granted = BTreeSet::new();
    for rule in rules["cluster"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rules["lease"].as_array().unwrap())
    {
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                let g = g.as_str().unwrap();
                let r = r.as_str().unwrap();
                let (res, sub) = r.split_once('/').map_or((r, ""), |(a, b)| (a, b));
                let mut key = if g.is_empty() {
                    res.to_owned()
                } else {
                    format!("{res}.{g}")
                };
                if !sub.is_empty() {
                    key = format!("{key}/{sub}");
                }
                granted.insert(key);
            }
        }
    }
    // Every authenticated user may review itself (system:basic-user), nothing else.
    let self_reviews = [
        "selfsubjectaccessreviews.authorization.k8s.io",
        "selfsubjectrulesreviews.authorization.k8s.io",
        "selfsubjectreviews.authentication.k8s.io",
    ];
    for ns in [QS_NS, "apps"] {
        let list = node
            .cp
            .kubectl_ok(&["auth", "can-i", "--list", "--as", &sa, "-n", ns]);
        for line in list.lines().skip(1) {
            let resource = line.split_whitespace().next().unwrap_or_default();
            if resource.is_empty() || line.trim_start().starts_with('[') {
                continue; // non-resource URLs (discovery, /version, /healthz...)
            }
            assert!(
                granted.contains(resource) || self_reviews.contains(&resource),
                "{sa} may use {resource} in {ns}, which rbac-rules.yaml does not grant:\n{list}"
            );
        }
    }
    let can = |args: &[&str]| {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--as", &sa]);
        node.cp.kubectl(&a, None).1.trim().to_owned()
    };
    for yes in [
        &["watch", "accesspolicies.accessgate.dev", "-A"][..],
        &[
            "patch",
            "accesspolicies.accessgate.dev",
            "--subresource=status",
            "-n",
            "apps",
        ],
        &["patch", "leases/accessgate-leader", "-n", QS_NS],
        &["patch", "configmaps/accessgate-hosts", "-n", QS_NS],
        &["create", "events.events.k8s.io", "-n", "apps"],
    ] {
        assert_eq!(can(yes), "yes", "{yes:?}");
    }
    for no in [
        &["get", "secrets", "-A"][..],
        &["get", "secrets", "-n", QS_NS],
        &["list", "pods", "-n", QS_NS],
        &["create", "pods", "-n", QS_NS],
        &["update", "accesspolicies.accessgate.dev", "-n", "apps"],
        &["delete", "accesspolicies.accessgate.dev", "-n", "apps"],
        &[
            "patch",
            "leases/kube-controller-manager",
            "-n",
            "kube-system",
        ],
        &["get", "leases/other", "-n", QS_NS],
        &["patch", "configmaps/other", "-n", QS_NS],
        &["patch", "deployments", "-n", QS_NS],
        &["create", "leases.coordination.k8s.io", "-n", "kube-system"],
        &["create", "configmaps", "-n", "apps"],
    ] {
        assert_eq!(can(no), "no", "{no:?}");
    }
}

/// A steady stream of requests through real nginx (`auth_request` to the Service) while
/// `run` goes on; (2xx, non-2xx, transport errors).
fn stream_during<T>(nginx: &Nginx, token: &str, run: impl FnOnce() -> T) -> ((u64, u64, u64), T) {
    let stop = AtomicBool::new(false);
    let (ok, bad, err) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let statuses = std::sync::Mutex::new(BTreeSet::new());
    let out = std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let client = http();
                while !stop.load(Ordering::Relaxed) {
                    let r = client
                        .get(nginx.url("/"))
                        .header("host", "app.example.test")
                        .header("cf-access-jwt-assertion", token)
                        .send();
                    match r {
                        Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => {
                            statuses.lock().unwrap().insert(r.status().as_u16());
                            bad.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(_) => err.fetch_add(1, Ordering::Relaxed),
                    };
                    std::thread::sleep(Duration::from_millis(10)); // pacing: a steady stream
                }
            });
        }
        let out = run();
        stop.store(true, Ordering::Relaxed);
        out
    });
    if !statuses.lock().unwrap().is_empty() {
        eprintln!("non-2xx statuses seen: {:?}", statuses.lock().unwrap());
    }
    ((ok.into_inner(), bad.into_inner(), err.into_inner()), out)
}

/// c. `helm upgrade` changing an argument (logLevel) rolls both pods, with 0 non-2xx for a
/// steady stream of requests through real nginx (`auth_request` to the Service's ClusterIP)
/// during the whole rollout, the old pods' drain included.
#[test]
fn helm_upgrade_rolls_the_pods_without_a_failed_request() {
    let _turn = node::lock();
    let node = node();
    quick_start();
    let (rel, ns) = ("roll", "roll");
    let installed = node.install(
        rel,
        ns,
        &["--set", "crds.install=false", "--set", "className=roll"],
    );
    installed.unwrap_or_else(|e| panic!("helm install {rel}: {e}"));
    node.cp
        .apply(&policy(ns, "web", "  className: roll\n"))
        .expect("policy");
    node.cp
        .wait_policy(ns, "web", Duration::from_secs(60), enforced);
    let before = wait_ready_pods(ns, rel, 2, Duration::from_secs(60));
    let ip = node.cluster_ip(ns, "roll-accessgate");
    let token = node.issuer.token(json!({}));
    let warm = eventually(Duration::from_secs(30), || {
        matches!(auth(&ip, ns, "web", Some(&token)), Ok((200, _)))
    });
    assert!(warm, "the Service never allowed before the rollout");

    let echo = echo::Echo::start();
    let nginx = Nginx::start(
        &[Site {
            host: "app.example.test".into(),
            auth_url: format!("http://{ip}/auth/{ns}/web"),
            response_headers: vec!["X-Auth-Request-Email".into()],
        }],
        echo.addr.unwrap().port(),
    );
    assert_eq!(nginx.get("app.example.test", "/", &[]).status(), 401);
    let watch = node.watch_pods(ns);
    let ((ok, bad, err), (upgrade_took, rollout_took)) = stream_during(&nginx, &token, || {
        let started = Instant::now();
        node.helm_ok(&[
            "upgrade",
            rel,
            CHART,
            "--namespace",
            ns,
            "--reuse-values",
            "--set",
            "logLevel=debug",
            "--wait",
            "--timeout",
            "180s",
        ]);
        let upgrade_took = started.elapsed();
        // The whole rollout: until the old pods are gone (their preStop drain included).
        let gone = eventually(Duration::from_secs(120), || {
            node.pods(ns, rel)
                .iter()
                .all(|p| !before.iter().any(|b| p["metadata"]["name"] == b.as_str()))
        });
        assert!(gone, "old pods still there");
        (upgrade_took, started.elapsed())
    });
    eprintln!(
        "helm upgrade --wait {:.1}s, rollout incl. old pods' drain {:.1}s: {ok} 2xx, {bad} non-2xx, {err} transport errors through nginx\n`kubectl get pods -n {ns} -w`:\n{}",
        upgrade_took.as_secs_f64(),
        rollout_took.as_secs_f64(),
        watch.timeline()
    );
    let after = wait_ready_pods(ns, rel, 2, Duration::from_secs(60));
    assert!(
        after.iter().all(|a| !before.contains(a)),
        "{before:?} -> {after:?}"
    );
    for pod in node.pods(ns, rel) {
        let args = pod["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .clone();
        assert!(args.contains(&json!("--log=debug")), "{args:?}");
    }
    assert!(ok > 0, "no request went through");
    assert_eq!(
        (bad, err),
        (0, 0),
        "{ok} 2xx, {bad} non-2xx, {err} errors during the rollout:\n{}",
        nginx.error_log()
    );
    node.uninstall(rel, ns);
}

/// d. Deleting the leader pod (as `kubectl delete pod` does: preStop drain, SIGTERM) moves
/// the Lease to another pod, within the lease duration of the old leader's exit, and the new
/// leader writes the status of a policy edited afterwards.
#[test]
fn deleting_the_leader_moves_the_lease_and_status_writing() {
    let _turn = node::lock();
    let node = node();
    quick_start();
    let (rel, ns) = ("failover", "failover");
    node.install(
        rel,
        ns,
        &["--set", "crds.install=false", "--set", "className=failover"],
    )
    .unwrap_or_else(|e| panic!("helm install {rel}: {e}"));
    let lease = "failover-accessgate-leader";
    node.cp
        .apply(&policy(ns, "web", "  className: failover\n"))
        .expect("policy");
    node.cp
        .wait_policy(ns, "web", Duration::from_secs(60), enforced);
    let pods = wait_ready_pods(ns, rel, 2, Duration::from_secs(60));
    let leader = node.lease_holder(ns, lease).expect("a leader");
    assert!(pods.contains(&leader));
    let pid = node.container_pid(&leader).expect("the leader's process");

    let deleted = Instant::now();
    node.cp
        .kubectl_ok(&["delete", "pod", &leader, "-n", ns, "--wait=false"]);
    let mut exited = None;
    let mut holder = None;
    let moved = eventually(Duration::from_secs(90), || {
        if exited.is_none() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            exited = Some(deleted.elapsed());
        }
        holder = node.lease_holder(ns, lease);
        holder.as_deref().is_some_and(|h| h != leader)
    });
    let moved_at = deleted.elapsed();
    assert!(moved, "the Lease stayed with {leader}");
    let holder = holder.unwrap();
    eventually(Duration::from_secs(30), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    let exited = exited.unwrap_or(deleted.elapsed());
    eprintln!(
        "leader {leader} deleted: its process exited after {:.1}s (preStop sleep, drain), the Lease moved to {holder} after {:.1}s: {:.1}s without a leader",
        exited.as_secs_f64(),
        moved_at.as_secs_f64(),
        moved_at.saturating_sub(exited).as_secs_f64()
    );
    // Within the lease duration of the old leader's end (it releases the Lease on SIGTERM;
    // a leader that vanished would lose it at expiry): a generous bound from leaseDuration.
    assert!(
        moved_at <= exited + 2 * LEASE_DURATION,
        "Lease moved {moved_at:?} after delete, leader exited at {exited:?}"
    );
    assert!(
        node.pods(ns, rel)
            .iter()
            .any(|p| p["metadata"]["name"] == holder.as_str())
    );

    // The new leader writes status: edit the policy (a new generation) after the old leader
    // is gone.
    assert!(
        node.container_pid(&leader).is_none(),
        "old leader still running"
    );
    node.cp
        .apply(&policy(
            ns,
            "web",
            "  className: failover\n  claimHeaders:\n    - { header: X-Auth-Request-User, claim: email }\n",
        ))
        .expect("edit policy");
    let obj = node
        .cp
        .wait_policy(ns, "web", Duration::from_secs(60), enforced);
    assert_eq!(obj["metadata"]["generation"], 2, "{:#}", obj["metadata"]);
    node.uninstall(rel, ns);
}

/// e. Evicting both pods through the Eviction API (what `kubectl drain` does): the first is
/// evicted, the PodDisruptionBudget (minAvailable 1) refuses the second with 429 while the
/// first is replaced; once the replacement is Ready the second may go.
#[test]
fn eviction_respects_the_pod_disruption_budget() {
    let _turn = node::lock();
    let node = node();
    quick_start();
    let (rel, ns) = ("evict", "evict");
    node.install(
        rel,
        ns,
        &["--set", "crds.install=false", "--set", "className=evict"],
    )
    .unwrap_or_else(|e| panic!("helm install {rel}: {e}"));
    let pods = wait_ready_pods(ns, rel, 2, Duration::from_secs(60));
    let pdb = "evict-accessgate";
    let allowed = || {
        node.cp.get_json(&["pdb", pdb, "-n", ns])["status"]["disruptionsAllowed"]
            .as_i64()
            .unwrap_or(-1)
    };
    assert!(
        eventually(Duration::from_secs(60), || allowed() == 1),
        "PDB never allowed a disruption: {:#}",
        node.cp.get_json(&["pdb", pdb, "-n", ns])["status"]
    );
    let (first, body) = node.evict(ns, &pods[0]);
    assert_eq!(first, 201, "first eviction: {body}");
    let (second, body) = node.evict(ns, &pods[1]);
    assert_eq!(
        second, 429,
        "second eviction must be refused by the PDB: {body}"
    );
    assert!(body.contains("disruption budget"), "{body}");
    eprintln!(
        "eviction of {}: 201; of {}: 429 ({})",
        pods[0],
        pods[1],
        body.trim()
    );
    // The first is replaced; the second keeps serving until then.
    let replaced = wait_ready_pods(ns, rel, 2, Duration::from_secs(90));
    assert!(
        replaced.contains(&pods[1]) && !replaced.contains(&pods[0]),
        "{replaced:?}"
    );
    assert!(eventually(Duration::from_secs(60), || allowed() == 1));
    let (again, body) = node.evict(ns, &pods[1]);
    assert_eq!(
        again, 201,
        "with the replacement Ready, the second may go: {body}"
    );
    node.uninstall(rel, ns);
}

/// g1. A policy applied while a pod is being replaced is enforced by the new pod (asked
/// directly at its pod IP, bypassing the Service).
#[test]
fn policy_applied_during_a_pod_replacement_is_enforced_by_the_new_pod() {
    let _turn = node::lock();
    let node = node();
    quick_start();
    let (rel, ns) = ("replace", "replace");
    node.install(
        rel,
        ns,
        &["--set", "crds.install=false", "--set", "className=replace"],
    )
    .unwrap_or_else(|e| panic!("helm install {rel}: {e}"));
    let pods = wait_ready_pods(ns, rel, 2, Duration::from_secs(60));
    node.cp
        .kubectl_ok(&["delete", "pod", &pods[0], "-n", ns, "--wait=false"]);
    // The replacement exists and is not Ready yet: apply the policy now.
    let mut new_pod = None;
    assert!(eventually(Duration::from_secs(60), || {
        new_pod = node
            .pods(ns, rel)
            .into_iter()
            .find(|p| !pods.iter().any(|o| p["metadata"]["name"] == o.as_str()));
        new_pod.is_some()
    }));
    let new_pod = new_pod.unwrap();
    let new_name = new_pod["metadata"]["name"].as_str().unwrap().to_owned();
    let was_ready = is_ready(&new_pod);
    node.cp
        .apply(&policy(ns, "late", "  className: replace\n"))
        .expect("policy");
    eprintln!(
        "policy applied while {new_name} was {}",
        if was_ready {
            "already Ready"
        } else {
            "not Ready yet"
        }
    );
    wait_ready_pods(ns, rel, 2, Duration::from_secs(90));
    let pod = node.cp.get_json(&["pod", &new_name, "-n", ns]);
    let pod_ip = format!("{}:8080", pod["status"]["podIP"].as_str().unwrap());
    let token = node.issuer.token(json!({}));
    let mut last = Err(String::new());
    let ok = eventually(Duration::from_secs(30), || {
        last = auth(&pod_ip, ns, "late", Some(&token));
        matches!(&last, Ok((200, _)))
    });
    assert!(ok, "new pod {new_name} at {pod_ip} did not allow: {last:?}");
    assert_eq!(auth(&pod_ip, ns, "late", None).unwrap().0, 401);
    node.cp
        .wait_policy(ns, "late", Duration::from_secs(60), enforced);
    node.uninstall(rel, ns);
}

/// g2. Pods that cannot reach the API server at start (KUBERNETES_SERVICE_HOST/PORT pointing
/// at a closed port) stay not-Ready, and the Service's endpoints exclude them: they never
/// serve an empty policy set. (Today the process exits 1 once leader election's first
/// request fails, so the kubelet restarts it with back-off: CrashLoopBackOff, never Ready.
/// Printed, not asserted: retrying instead would keep the same not-Ready outcome.)
#[test]
fn pods_without_the_api_server_stay_not_ready_and_out_of_the_service() {
    let _turn = node::lock();
    let node = node();
    quick_start();
    let (rel, ns) = ("noapi", "noapi");
    node.prepare_namespace(ns);
    let values = node.test_values.display().to_string();
    let env = format!(
        "extraEnv[0].name=SSL_CERT_FILE,extraEnv[0].value=/etc/accessgate/ca/ca.crt,extraEnv[1].name=KUBERNETES_SERVICE_HOST,extraEnv[1].value={},extraEnv[2].name=KUBERNETES_SERVICE_PORT,extraEnv[2].value=1",
        node::NODE_IP
    );
    node.helm_ok(&[
        "install",
        rel,
        CHART,
        "--namespace",
        ns,
        "-f",
        &values,
        "--set",
        "crds.install=false",
        "--set",
        "className=noapi",
        "--set-string",
        &env,
    ]);
    // Both pods start (Running) and are probed for a while: four readiness periods and more.
    let running = eventually(Duration::from_secs(60), || {
        let pods = node.pods(ns, rel);
        pods.len() == 2 && pods.iter().all(|p| p["status"]["phase"] == "Running")
    });
    assert!(running, "two Running pods\n{}", node.health());
    let observed = Instant::now();
    while observed.elapsed() < Duration::from_secs(25) {
        let pods = node.pods(ns, rel);
        for p in &pods {
            assert!(
                !is_ready(p),
                "{} became Ready without the API server",
                p["metadata"]["name"]
            );
        }
        assert_eq!(
            node.ready_endpoints(ns, "noapi-accessgate"),
            Vec::<String>::new()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let pods = node.pods(ns, rel);
    let pod = &pods[0];
    let name = pod["metadata"]["name"].as_str().unwrap();
    let ip = pod["status"]["podIP"].as_str().unwrap();
    let readyz = http()
        .get(format!("http://{ip}:9090/readyz"))
        .send()
        .map(|r| (r.status().as_u16(), r.text().unwrap_or_default()));
    let answer = auth(
        &format!("{ip}:8080"),
        ns,
        "web",
        Some(&node.issuer.token(json!({}))),
    );
    eprintln!(
        "pod {name} without the API server: /readyz {readyz:?}, auth {answer:?}, restarts {}, last state {}; events:\n{}\nlogs:\n{}",
        pod["status"]["containerStatuses"][0]["restartCount"],
        pod["status"]["containerStatuses"][0]["lastState"],
        node.cp
            .kubectl(
                &[
                    "get",
                    "events",
                    "-n",
                    ns,
                    "--field-selector",
                    &format!("involvedObject.name={name}")
                ],
                None
            )
            .1,
        node.logs(ns, name)
            .lines()
            .take(8)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // It waits for the API server instead of crash-looping: up, answering /readyz with 503.
    assert_eq!(
        readyz.as_ref().map(|(status, _)| *status).ok(),
        Some(503),
        "{readyz:?}"
    );
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
    // The Service has no ready endpoint: kube-proxy refuses connections to it.
    let ip = node.cluster_ip(ns, "noapi-accessgate");
    assert!(
        auth(&ip, ns, "web", None).is_err(),
        "the Service answered without a ready pod"
    );
    node.uninstall(rel, ns);
}

/// g3. A value the chart's schema refuses makes `helm install` fail before anything reaches
/// the cluster: no release, no pod.
#[test]
fn schema_refusal_never_reaches_the_node() {
    let _turn = node::lock();
    let node = node();
    quick_start();
    let ns = "badvalues";
    let values = node.test_values.display().to_string();
    let (ok, _, err) = node.helm(&[
        "install",
        "bad",
        CHART,
        "--namespace",
        ns,
        "--create-namespace",
        "-f",
        &values,
        "--set",
        "crds.install=false",
        "--set",
        "logFormat=yaml",
    ]);
    assert!(!ok, "helm accepted logFormat=yaml");
    assert!(err.contains("logFormat"), "{err}");
    eprintln!("helm install refused: {}", err.trim());
    let (_, pods, _) = node.cp.kubectl(
        &[
            "get",
            "pods,deployments",
            "-A",
            "-l",
            "app.kubernetes.io/instance=bad",
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(pods.trim(), "", "objects of a refused release: {pods}");
    let (_, list, _) = node.helm(&["list", "--all", "--namespace", ns, "-q"]);
    assert_eq!(list.trim(), "");
}
