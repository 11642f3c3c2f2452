//! `accessgate run` against a real kube-apiserver + etcd (built from Go modules), running
//! as a ServiceAccount with exactly the chart's RBAC: status, Events, enforcement of
//! changes, leader election and API-server outages.

use std::time::{Duration, Instant};

use crate::common::cluster::{ControlPlane, policy_in, ready_condition};
use crate::common::replica::{Replica, SYSTEM_NS};
use crate::common::*;
use serde_json::{Value, json};

/// A replica that refreshes keys as often as accessgate allows, 10 s (rotation and
/// fetch-failure tests).
fn replica(kubeconfig: &std::path::Path, identity: &str) -> Replica {
    Replica::start(
        kubeconfig,
        identity,
        &["--jwks-refresh", "10s", "--jwks-retry", "10s"],
    )
}

fn policy(name: &str, issuer: &str, audience: &str) -> String {
    format!(
        r#"{{"apiVersion":"accessgate.dev/v1alpha1","kind":"AccessPolicy","metadata":{{"name":"{name}","namespace":"apps"}},
"spec":{{"issuer":{{"url":"{issuer}","jwksUri":"{issuer}/cdn-cgi/access/certs"}},"audiences":["{audience}"]}}}}"#
    )
}

fn setup() -> (ControlPlane, Issuer, std::path::PathBuf) {
    let cp = ControlPlane::start();
    let issuer = Issuer::start();
    let kc = cp.service_account_kubeconfig(SYSTEM_NS, "accessgate");
    cp.kubectl_ok(&["create", "namespace", "apps"]);
    (cp, issuer, kc)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One control plane, one replica, namespace `apps` with policy `web`: the first scenario's
/// steps each look at one thing on it.
/// (Fields drop in order: the replica stops before the control plane.)
struct Apps {
    replica: Replica,
    issuer: Issuer,
    /// A token `web` allows.
    token: String,
    cp: ControlPlane,
}

impl Apps {
    fn start() -> Apps {
        let (cp, issuer, kc) = setup();
        let replica = replica(&kc, "replica-a");
        let token = issuer.token(json!({}));
        Apps {
            replica,
            issuer,
            token,
            cp,
        }
    }

    fn get(&self, name: &str) -> Value {
        self.cp.get_json(&["accesspolicy", name, "-n", "apps"])
    }

    /// The reasons of the Events in `apps` so far.
    fn event_reasons(&self) -> Vec<String> {
        self.cp.get_json(&["events.events.k8s.io", "-n", "apps"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["reason"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until `web`'s status says its current generation is enforced; the object.
    #[track_caller]
    fn wait_web_enforced(&self) -> Value {
        self.cp
            .wait_policy("apps", "web", Duration::from_secs(30), |o| {
                ready_condition(o) == Some(("True".into(), "Enforced".into()))
                    && o["status"]["observedGeneration"] == o["metadata"]["generation"]
            })
    }
}

/// The condition of `type_` in a policy's status.
fn condition<'a>(obj: &'a Value, type_: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition: {:#}", obj["status"]))
}

#[test]
fn policies_get_status_events_and_changes_are_enforced() {
    let _slot = crate::own_cluster_slot();
    let apps = Apps::start();
    a_new_policy_gets_status_and_is_enforced(&apps);
    kubectl_get_shows_ready_and_its_reason_in_120_columns(&apps);
    nonsense_is_refused_at_apply_naming_the_field(&apps);
    unfetchable_keys_are_ready_false_with_a_category(&apps);
    fetches_aimed_inside_the_cluster_are_refused(&apps);
    traffic_writes_nothing_to_status(&apps);
    // Before the key rotation below: a key set that moves is a status write of its own.
    a_dry_run_policy_is_impossible_to_miss(&apps);
    candidate_disagreements_are_state_not_traffic(&apps);
    keys_loaded_the_first_time_are_no_news(&apps);
    rotation_and_a_failing_key_endpoint_are_reported(&apps);
    edits_are_enforced_without_restart_and_observed(&apps);
    a_deleted_policy_is_unknown_at_once(&apps);

    let lease = apps
        .cp
        .get_json(&["lease", "accessgate-leader", "-n", SYSTEM_NS]);
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    assert!(!apps.replica.proc.output().contains("panicked"));
}

fn a_new_policy_gets_status_and_is_enforced(apps: &Apps) {
    apps.cp
        .apply(&policy("web", &apps.issuer.url, AUD))
        .unwrap();
    let obj = apps.wait_web_enforced();
    assert_eq!(
        obj["status"]["authUrl"],
        "http://accessgate.accessgate-system.svc.cluster.local/auth/apps/web"
    );
    assert_eq!(obj["status"]["issuer"], apps.issuer.url.as_str());
    assert!(!obj["status"]["keys"]["ids"].as_array().unwrap().is_empty());
    assert_eq!(apps.replica.status("/auth/apps/web", &apps.token), 200);
}

/// The printer columns show Ready with its reason beside it, as a new user reading `kubectl
/// get` needs them; `kubectl get acp -A` fits 120 columns (the issuer and audiences, long by
/// nature, are in `-o wide`).
fn kubectl_get_shows_ready_and_its_reason_in_120_columns(apps: &Apps) {
    let table = apps.cp.kubectl_ok(&["get", "acp", "-n", "apps"]);
    assert!(
        table.contains("READY") && table.contains("True") && !table.contains(&apps.issuer.url),
        "{table}"
    );
    assert!(
        table.contains("REASON") && table.contains("Enforced"),
        "{table}"
    );
    let all = apps.cp.kubectl_ok(&["get", "acp", "-A"]);
    assert!(all.lines().all(|l| l.len() <= 120), "{all}");
    let wide = apps
        .cp
        .kubectl_ok(&["get", "acp", "-n", "apps", "-o", "wide"]);
    assert!(
        wide.contains("ISSUER") && wide.contains(&apps.issuer.url) && wide.contains(AUD),
        "{wide}"
    );
}

/// Nonsense is refused at apply time by the CRD's CEL rules, with a readable message that
/// names the field it is about, not just `spec`.
fn nonsense_is_refused_at_apply_naming_the_field(apps: &Apps) {
    let team_domain_not_an_aud_tag = json!({"apiVersion": "accessgate.dev/v1alpha1",
        "kind": "AccessPolicy", "metadata": {"name": "bad", "namespace": "apps"},
        "spec": {"issuer": {"teamDomain": "t.cloudflareaccess.com"}, "audiences": ["not-a-tag"]}});
    let err = apps
        .cp
        .apply(&team_domain_not_an_aud_tag.to_string())
        .unwrap_err();
    assert!(
        err.contains("spec.audiences") && err.contains("AUD tag"),
        "{err}"
    );
    let err = apps
        .cp
        .apply(&policy("bad", "http://10.1.2.3", AUD))
        .unwrap_err();
    assert!(err.contains("https URL"), "{err}");
}

/// Keys that cannot be fetched: accepted, but Ready=False with a reason to act on, and the
/// error a category, not an error chain.
fn unfetchable_keys_are_ready_false_with_a_category(apps: &Apps) {
    let dead = ClosedPort::new();
    apps.cp
        .apply(&policy("nokeys", &format!("http://{}", dead.addr), AUD))
        .unwrap();
    // The first status may be written while the first fetch is still under way; the failed
    // fetch follows within a writer tick.
    let obj = apps
        .cp
        .wait_policy("apps", "nokeys", Duration::from_secs(30), |o| {
            ready_condition(o).is_some_and(|(s, _)| s == "False")
                && o["status"]["keys"]["error"].is_string()
        });
    assert_eq!(ready_condition(&obj).unwrap().1, "KeysUnavailable");
    assert_eq!(obj["status"]["keys"]["error"], "connect");
    // Enforced as that: the policy is known, its keys are not.
    assert_eq!(
        apps.replica.answer("/auth/apps/nokeys", &apps.token),
        (503, "keys_unavailable".to_owned())
    );
}

/// Fetches a tenant aims inside the cluster are refused, whatever the CRD lets through
/// (https to the metadata service, a private address): only 127.0.0.0/8 is allowed here.
/// Status and the Event carry the category, nothing fetched; the other policies are
/// untouched; get-identity is guarded the same way and fails closed.
fn fetches_aimed_inside_the_cluster_are_refused(apps: &Apps) {
    for (name, jwks) in [
        ("metadata", "https://169.254.169.254/keys"),
        ("private", "https://10.0.0.1/cdn-cgi/access/certs"),
        ("mapped", "https://[::ffff:169.254.169.254]/keys"),
    ] {
        let p = json!({"apiVersion": "accessgate.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": name, "namespace": "apps"},
            "spec": {"issuer": {"url": "https://issuer.example", "jwksUri": jwks}, "audiences": [AUD]}});
        apps.cp.apply(&p.to_string()).unwrap();
        let obj = apps
            .cp
            .wait_policy("apps", name, Duration::from_secs(30), |o| {
                o["status"]["keys"]["error"].is_string()
            });
        assert_eq!(obj["status"]["keys"]["error"], "blocked_address", "{name}");
        assert_eq!(
            condition(&obj, "KeysAvailable")["status"],
            "False",
            "{name}"
        );
        assert_eq!(
            ready_condition(&obj).unwrap(),
            ("False".into(), "KeysUnavailable".into())
        );
    }
    let blocked_events = || -> Vec<Value> {
        apps.cp.get_json(&["events.events.k8s.io", "-n", "apps"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == "KeyFetchFailing" && e["regarding"]["name"] == "metadata")
            .cloned()
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(10), || !blocked_events().is_empty()),
        "no KeyFetchFailing event for the blocked policy"
    );
    let events = blocked_events();
    assert!(
        events.iter().all(|e| e["note"] == "blocked_address"),
        "{events:?}"
    );
    assert_eq!(
        ready_condition(&apps.get("web")),
        Some(("True".into(), "Enforced".into()))
    );

    let enriched = json!({"apiVersion": "accessgate.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": "enriched", "namespace": "apps"},
        "spec": {"issuer": {"url": apps.issuer.url, "jwksUri": apps.issuer.certs_url()}, "audiences": [AUD],
                 "identity": {"url": "https://169.254.169.254/cdn-cgi/access/get-identity"}}});
    apps.cp.apply(&enriched.to_string()).unwrap();
    apps.cp
        .wait_policy("apps", "enriched", Duration::from_secs(30), |o| {
            ready_condition(o) == Some(("True".into(), "Enforced".into()))
        });
    assert!(
        eventually(Duration::from_secs(10), || apps
            .replica
            .status("/auth/apps/enriched", &apps.token)
            == 503),
        "identity from the metadata service was not refused"
    );
    let line = apps
        .replica
        .proc
        .wait_line("identity enrichment failed", Duration::from_secs(10));
    assert!(line.contains("blocked_address"), "{line}");
}

/// Decisions are counted in metrics, never in status: traffic writes nothing.
fn traffic_writes_nothing_to_status(apps: &Apps) {
    let before = apps.get("web");
    for _ in 0..20 {
        apps.replica.status("/auth/apps/web", "garbage");
    }
    assert!(
        apps.replica
            .metrics()
            .contains(r#"reason="token_malformed""#)
    );
    std::thread::sleep(Duration::from_secs(3)); // longer than --status-interval: nothing follows
    let after = apps.get("web");
    assert_eq!(
        before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"],
        "requests changed the stored policy"
    );
    assert!(after["status"].get("decisions").is_none());
}

/// A dry-run policy on an app with no auth: requests pass; `kubectl get` shows `DryRun`, a
/// Warning Event says so, metrics count the would-be denials, and the status changes once
/// at the first one, not with traffic.
fn a_dry_run_policy_is_impossible_to_miss(apps: &Apps) {
    apps.cp
        .apply(&policy_in(
            "apps",
            "legacy",
            &apps.issuer.url,
            r#","mode":"dryRun""#,
        ))
        .unwrap();
    let quiet = apps
        .cp
        .wait_policy("apps", "legacy", Duration::from_secs(30), |o| {
            ready_condition(o) == Some(("True".into(), "DryRun".into()))
        });
    assert!(
        condition(&quiet, "Ready")["message"]
            .as_str()
            .unwrap()
            .contains("no would-be denial seen yet"),
        "{:#}",
        quiet["status"]
    );
    let table = apps
        .cp
        .kubectl_ok(&["get", "acp", "legacy", "-n", "apps", "-o", "wide"]);
    assert!(
        table.contains("DryRun") && table.contains("MODE") && table.contains("dryRun"),
        "{table}"
    );
    assert!(
        eventually(Duration::from_secs(20), || apps.cp.get_json(&[
            "events.events.k8s.io",
            "-n",
            "apps"
        ])["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "DryRun"
                && e["type"] == "Warning"
                && e["regarding"]["name"] == "legacy")),
        "no Warning Event DryRun"
    );

    // No token at all: the app has no auth today, and keeps working.
    assert_eq!(
        apps.replica.answer("/auth/apps/legacy", ""),
        (200, String::new())
    );
    let seen = apps
        .cp
        .wait_policy("apps", "legacy", Duration::from_secs(30), |o| {
            condition(o, "Ready")["message"].as_str().is_some_and(|m| {
                m.contains("would-be denials seen since") && m.contains("(first: token_")
            })
        });
    assert!(
        apps.replica
            .metrics()
            .contains(r#"accessgate_dry_run_decisions_total{policy="apps/legacy",verdict="deny",reason="token_"#),
        "{}",
        apps.replica.metrics()
    );
    assert!(
        apps.replica
            .metrics()
            .contains("accessgate_dry_run_policies 1")
    );
    for _ in 0..20 {
        assert_eq!(apps.replica.status("/auth/apps/legacy", "garbage"), 200);
    }
    std::thread::sleep(Duration::from_secs(3)); // longer than --status-interval
    let after = apps.get("legacy");
    assert_eq!(
        seen["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"],
        "traffic after the first would-be denial wrote status: {:#} then {:#}",
        seen["status"], after["status"]
    );
    apps.cp
        .kubectl_ok(&["delete", "accesspolicy", "legacy", "-n", "apps"]);
}

/// A candidate that admits fewer people: the live answer is unchanged, `CandidateAgrees`
/// turns False once with the first difference, `Ready` stays `Enforced`.
fn candidate_disagreements_are_state_not_traffic(apps: &Apps) {
    apps.cp
        .apply(&policy_in(
            "apps",
            "trial",
            &apps.issuer.url,
            r#","candidate":{"rules":{"allow":[{"group":"admins"}]}}"#,
        ))
        .unwrap();
    let candidate = |o: &Value| {
        let c = condition(o, "CandidateAgrees");
        (
            c["status"].as_str().unwrap_or("").to_owned(),
            c["reason"].as_str().unwrap_or("").to_owned(),
        )
    };
    apps.cp
        .wait_policy("apps", "trial", Duration::from_secs(30), |o| {
            ready_condition(o) == Some(("True".into(), "Enforced".into()))
                && o["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "CandidateAgrees"))
                && candidate(o) == ("True".into(), "NoDisagreementSeen".into())
        });
    assert_eq!(
        apps.replica.status("/auth/apps/trial", &apps.token),
        200,
        "the live answer"
    );
    let obj = apps
        .cp
        .wait_policy("apps", "trial", Duration::from_secs(30), |o| {
            candidate(o) == ("False".into(), "DisagreementsSeen".into())
        });
    let message = condition(&obj, "CandidateAgrees")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("first: candidate_denies (rule_denied)"),
        "{message}"
    );
    assert_eq!(
        ready_condition(&obj),
        Some(("True".into(), "Enforced".into()))
    );
    for _ in 0..10 {
        assert_eq!(apps.replica.status("/auth/apps/trial", &apps.token), 200);
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        obj["metadata"]["resourceVersion"],
        apps.get("trial")["metadata"]["resourceVersion"],
        "more disagreements wrote status"
    );
    assert!(apps.replica.metrics().contains(
        r#"accessgate_candidate_decisions_total{policy="apps/trial",result="candidate_denies",reason="rule_denied"} 11"#
    ), "{}", apps.replica.metrics());
    apps.cp
        .kubectl_ok(&["delete", "accesspolicy", "trial", "-n", "apps"]);
}

/// Accepted policies get an Event; keys loaded the first time are no news.
fn keys_loaded_the_first_time_are_no_news(apps: &Apps) {
    let reasons = apps.event_reasons();
    assert!(
        reasons.iter().any(|r| r == "PolicyAccepted")
            && !reasons.iter().any(|r| r == "KeysFetched"),
        "{reasons:?}"
    );
}

/// Key rotation and a failing key endpoint are reported as Events and in status; cached keys
/// still serve. Picked up by the next refresh: within 11 s (10 s ±10 %), and the status write.
fn rotation_and_a_failing_key_endpoint_are_reported(apps: &Apps) {
    apps.issuer.rotate();
    let rotated = apps
        .cp
        .wait_policy("apps", "web", Duration::from_secs(30), |o| {
            o["status"]["keys"]["ids"]
                .as_array()
                .is_some_and(|a| a.len() == 2)
        });
    assert!(rotated["status"]["keys"]["error"].is_null());
    apps.issuer.certs_mode("fail");
    let failing = apps
        .cp
        .wait_policy("apps", "web", Duration::from_secs(30), |o| {
            o["status"]["keys"]["error"].is_string()
        });
    assert_eq!(failing["status"]["keys"]["error"], "http_status 503");
    assert_eq!(
        ready_condition(&failing).unwrap(),
        ("True".into(), "Enforced".into()),
        "cached keys still serve"
    );
    assert_eq!(apps.replica.status("/auth/apps/web", &apps.token), 200);
    apps.issuer.certs_mode("ok");
    assert!(
        eventually(Duration::from_secs(10), || {
            let r = apps.event_reasons();
            r.iter().any(|x| x == "KeyRotation") && r.iter().any(|x| x == "KeyFetchFailing")
        }),
        "{:?}",
        apps.event_reasons()
    );
}

/// Updates are enforced without restart: flip the audience 20 times, time apply → decision.
/// Each edit is observed: `status.observedGeneration` and Ready's own `observedGeneration`
/// follow `metadata.generation`, not only on a freshly created policy.
fn edits_are_enforced_without_restart_and_observed(apps: &Apps) {
    let first_generation = apps.get("web")["metadata"]["generation"].as_i64().unwrap();
    let mut latencies = Vec::new();
    for i in 0..20 {
        let (aud, expect) = if i % 2 == 0 {
            ("e".repeat(64), (403, "audience_mismatch"))
        } else {
            (AUD.to_owned(), (200, ""))
        };
        apps.cp
            .apply(&policy("web", &apps.issuer.url, &aud))
            .unwrap();
        let applied = Instant::now();
        let mut last = (0, String::new());
        assert!(
            eventually(Duration::from_secs(5), || {
                last = apps.replica.answer("/auth/apps/web", &apps.token);
                (last.0, last.1.as_str()) == expect
            }),
            "change {i} not enforced: {last:?}"
        );
        latencies.push(applied.elapsed());
    }
    eprintln!(
        "apply → enforced over 20 changes: median {:?}, max {:?}",
        median(latencies.clone()),
        latencies.iter().max().unwrap()
    );
    let obj = apps.wait_web_enforced();
    let generation = obj["metadata"]["generation"].as_i64().unwrap();
    assert_eq!(
        generation,
        first_generation + 20,
        "20 spec edits, 20 generations"
    );
    assert_eq!(obj["status"]["observedGeneration"], generation);
    assert_eq!(condition(&obj, "Ready")["observedGeneration"], generation);
    assert_eq!(
        condition(&obj, "KeysAvailable")["observedGeneration"],
        generation
    );
}

/// Delete: denied at once, as a policy accessgate does not know (not as one without keys).
fn a_deleted_policy_is_unknown_at_once(apps: &Apps) {
    apps.cp
        .kubectl_ok(&["delete", "accesspolicy", "web", "-n", "apps"]);
    let deleted = Instant::now();
    let mut last = (0, String::new());
    assert!(
        eventually(Duration::from_secs(5), || {
            last = apps.replica.answer("/auth/apps/web", &apps.token);
            last.0 != 200
        }),
        "still allowed after the delete"
    );
    assert_eq!(last, (503, "policy_unknown".to_owned()));
    eprintln!("delete → policy_unknown after {:?}", deleted.elapsed());
}

#[test]
fn only_the_leader_writes_status_and_a_standby_takes_over() {
    let _slot = crate::own_cluster_slot();
    let (cp, issuer, kc) = setup();
    let a = replica(&kc, "replica-a");
    let b = replica(&kc, "replica-b");
    cp.apply(&policy("web", &issuer.url, AUD)).unwrap();
    cp.wait_policy("apps", "web", Duration::from_secs(30), |o| {
        ready_condition(o) == Some(("True".into(), "Enforced".into()))
    });

    let holder = || {
        cp.get_json(&["lease", "accessgate-leader", "-n", SYSTEM_NS])["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_owned)
    };
    let (mut leader, standby, leader_id, standby_id) = match holder().as_deref() {
        Some("replica-a") => (a, b, "replica-a", "replica-b"),
        Some("replica-b") => (b, a, "replica-b", "replica-a"),
        other => panic!("no leader: {other:?}"),
    };
    let token = issuer.token(json!({}));
    let patches = |r: &Replica| {
        metric_sum(
            &r.metrics(),
            "accessgate_status_patches_total",
            &[("result", "ok")],
        )
    };
    let is_leader = |r: &Replica| metric_sum(&r.metrics(), "accessgate_leader", &[]) == 1.0;
    assert!(eventually(Duration::from_secs(10), || is_leader(&leader)));
    assert!(!is_leader(&standby));
    // Both replicas serve auth; traffic writes nothing, and only the leader writes.
    for r in [&leader, &standby] {
        assert_eq!(r.status("/auth/apps/web", &token), 200);
        assert_eq!(r.status("/auth/apps/web", "garbage"), 401);
    }
    let edit = |audiences: &str| {
        let mut p: Value = serde_json::from_str(&policy("web", &issuer.url, AUD)).unwrap();
        p["spec"]["audiences"] = serde_json::from_str(audiences).unwrap();
        cp.apply(&p.to_string()).unwrap();
        let generation =
            cp.get_json(&["accesspolicy", "web", "-n", "apps"])["metadata"]["generation"].clone();
        cp.wait_policy("apps", "web", Duration::from_secs(15), |o| {
            o["status"]["observedGeneration"] == generation
        })
    };
    edit(&format!(r#"["{AUD}", "second"]"#));
    assert!(patches(&leader) >= 2.0, "{}", leader.metrics());
    assert_eq!(patches(&standby), 0.0, "a standby wrote status");

    // Kill the leader: the standby takes the Lease. Nothing changed, so it writes nothing
    // (status was already right); the next change is written by it.
    let killed = Instant::now();
    let version = || {
        cp.get_json(&["accesspolicy", "web", "-n", "apps"])["metadata"]["resourceVersion"].clone()
    };
    let before = version();
    leader.proc.kill();
    assert!(
        eventually(Duration::from_secs(15), || is_leader(&standby)),
        "{}",
        standby.proc.output()
    );
    eprintln!(
        "leader killed → standby leading after {:?}",
        killed.elapsed()
    );
    // A few of its write passes (1 s each) with nothing to write.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(version(), before, "an uneventful failover rewrote status");
    assert_eq!(patches(&standby), 0.0);
    edit(&format!(r#"["{AUD}"]"#));
    assert!(patches(&standby) >= 1.0);
    assert_eq!(holder().as_deref(), Some(standby_id));
    let _ = leader_id;
    assert!(
        standby.proc.output().contains("\"leader\":true"),
        "{}",
        standby.proc.output()
    );
}

#[test]
fn api_server_outage_keeps_auth_serving_and_the_watch_resyncs() {
    let _slot = crate::own_cluster_slot();
    let (cp, issuer, kc) = setup();
    let replica = replica(&kc, "replica-a");
    cp.apply(&policy("web", &issuer.url, AUD)).unwrap();
    cp.apply(&policy("other", &issuer.url, AUD)).unwrap();
    cp.wait_policy("apps", "web", Duration::from_secs(30), |o| {
        ready_condition(o) == Some(("True".into(), "Enforced".into()))
    });
    let token = issuer.token(json!({}));
    assert_eq!(replica.status("/auth/apps/web", &token), 200);

    let watch_failures = || replica.proc.count_lines("AccessPolicy watch failed");
    let failures_before = watch_failures();
    cp.stop();
    // The API server is down: its port refuses connections, kubectl cannot reach it.
    let api = cp
        .server()
        .trim_start_matches("https://")
        .trim_end_matches('/');
    assert!(
        std::net::TcpStream::connect(api).is_err(),
        "the API server still accepts connections on {api}"
    );
    let (up, _, _) = cp.kubectl(&["get", "--raw", "/readyz"], None);
    assert!(!up, "the API server still answers /readyz");
    // The replica has noticed (its watch failed) and keeps answering from what it knows.
    assert!(
        eventually(Duration::from_secs(60), || watch_failures()
            > failures_before),
        "the replica never noticed the outage:\n{}",
        replica.proc.output()
    );
    for _ in 0..10 {
        assert_eq!(
            replica.status("/auth/apps/web", &token),
            200,
            "auth must keep answering while the API server is down"
        );
    }
    assert!(
        std::net::TcpStream::connect(api).is_err(),
        "the API server came back during the check"
    );
    cp.restart();
    // After the watch resyncs, a change made through the restarted API server is enforced.
    cp.kubectl_ok(&["delete", "accesspolicy", "other", "-n", "apps"]);
    // Refused as unknown: its keys were loaded, so only the deletion explains it.
    let unknown = (503, "policy_unknown".to_owned());
    assert!(
        eventually(Duration::from_secs(60), || replica
            .answer("/auth/apps/other", &token)
            == unknown),
        "watch did not resync: {:?}\n{}",
        replica.answer("/auth/apps/other", &token),
        replica.proc.output()
    );
    assert_eq!(replica.status("/auth/apps/web", &token), 200);
}

/// A spec for the CEL/code agreement table: a valid minimal Cloudflare spec with `patch`'s
/// fields set (a `null` removes one).
fn spec_with(patch: Value) -> Value {
    let mut spec = json!({"issuer": {"teamDomain": "t.cloudflareaccess.com"}, "audiences": [AUD]});
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            spec.as_object_mut().unwrap().remove(k);
        } else {
            spec[k] = v.clone();
        }
    }
    spec
}

/// `Ok` for an accepted spec; for a refused one, what both refusals must name (the field,
/// and the rule's message or the refused value), so a refusal for another reason is caught.
/// `a|b`: either wording (the API server's own for a list set, the code's).
type Expect = Result<(), &'static [&'static str]>;

/// The agreement table: (case, spec, expected).
fn cel_cases() -> Vec<(&'static str, Value, Expect)> {
    const OK: Expect = Ok(());
    let claim_header =
        |header: &str| spec_with(json!({"claimHeaders": [{"header": header, "claim": "sub"}]}));
    vec![
        ("minimal cloudflare", spec_with(json!({})), OK),
        (
            "generic loopback issuer",
            spec_with(
                json!({"issuer": {"url": "http://127.0.0.1:1", "jwksUri": "http://127.0.0.1:1/k"}, "audiences": ["app"]}),
            ),
            OK,
        ),
        (
            "full",
            spec_with(
                json!({"hosts": ["a.example.com"], "paths": ["/api"], "tokenSources": ["cookie", "bearer"], "tokenTypes": ["app", "service"], "algorithms": ["RS256", "ES256"], "leeway": "90s", "claimHeaders": [{"header": "X-Groups", "claim": "custom.groups", "join": ";"}]}),
            ),
            OK,
        ),
        (
            "no issuer",
            spec_with(json!({"issuer": {}})),
            Err(&["set exactly one of issuer.teamDomain or issuer.url"]),
        ),
        ("a class", spec_with(json!({"className": "blue"})), OK),
        (
            "a 63-character class",
            spec_with(json!({"className": "a".repeat(63)})),
            OK,
        ),
        (
            "an uppercase class",
            spec_with(json!({"className": "Blue"})),
            Err(&["spec.className", "className must be a DNS label"]),
        ),
        (
            "a dotted class",
            spec_with(json!({"className": "blue.green"})),
            Err(&["spec.className", "className must be a DNS label"]),
        ),
        (
            "an empty class",
            spec_with(json!({"className": ""})),
            Err(&["spec.className"]),
        ),
        (
            "a 64-character class",
            spec_with(json!({"className": "a".repeat(64)})),
            Err(&["spec.className"]),
        ),
        (
            "both issuers",
            spec_with(
                json!({"issuer": {"teamDomain": "t.cloudflareaccess.com", "url": "https://i.example", "jwksUri": "https://i.example/k"}}),
            ),
            Err(&["set exactly one of issuer.teamDomain or issuer.url"]),
        ),
        (
            "url without jwksUri",
            spec_with(json!({"issuer": {"url": "https://i.example"}, "audiences": ["x"]})),
            Err(&["issuer.url and issuer.jwksUri go together"]),
        ),
        (
            "plain http issuer",
            spec_with(
                json!({"issuer": {"url": "http://i.example", "jwksUri": "http://i.example/k"}, "audiences": ["x"]}),
            ),
            Err(&["spec.issuer.url", "must be an https URL"]),
        ),
        (
            "team domain with scheme",
            spec_with(json!({"issuer": {"teamDomain": "https://t.cloudflareaccess.com"}})),
            Err(&["spec.issuer.teamDomain", "without scheme or path"]),
        ),
        (
            "no audiences",
            spec_with(json!({"audiences": []})),
            Err(&["spec.audiences"]),
        ),
        (
            "audience not an AUD tag",
            spec_with(json!({"audiences": ["my-app"]})),
            Err(&["spec.audiences", "AUD tag"]),
        ),
        (
            "uppercase host",
            spec_with(json!({"hosts": ["A.example.com"]})),
            Err(&["spec.hosts", "hosts must be lowercase DNS names"]),
        ),
        (
            "paths without hosts",
            spec_with(json!({"paths": ["/x"]})),
            Err(&["paths route the bare /auth endpoint and need hosts"]),
        ),
        (
            "relative path",
            spec_with(json!({"hosts": ["a.example.com"], "paths": ["x"]})),
            Err(&["spec.paths", "paths must start with '/'"]),
        ),
        (
            "repeated token source",
            spec_with(json!({"tokenSources": ["cookie", "cookie"]})),
            Err(&["spec.tokenSources", "Duplicate value|listed twice"]),
        ),
        (
            "unknown token source",
            spec_with(json!({"tokenSources": ["query"]})),
            Err(&["query"]),
        ),
        (
            "org token type",
            spec_with(json!({"tokenTypes": ["org"]})),
            Err(&["org"]),
        ),
        (
            "HS256",
            spec_with(json!({"algorithms": ["HS256"]})),
            Err(&["HS256"]),
        ),
        (
            "none",
            spec_with(json!({"algorithms": ["none"]})),
            Err(&["none"]),
        ),
        (
            "leeway too long",
            spec_with(json!({"leeway": "10m"})),
            Err(&["spec.leeway", "leeway must be at most 5m"]),
        ),
        (
            "leeway not a duration",
            spec_with(json!({"leeway": "soon"})),
            Err(&["spec.leeway"]),
        ),
        (
            "header with underscore",
            claim_header("X_Email"),
            Err(&[
                "spec.claimHeaders[0].header",
                "only letters, digits and dashes",
            ]),
        ),
        (
            "reserved header",
            claim_header("Authorization"),
            Err(&["spec.claimHeaders[0].header", "reserved"]),
        ),
        (
            "reserved header prefix x-forwarded-",
            claim_header("X-Forwarded-Host"),
            Err(&["spec.claimHeaders[0].header", "reserved"]),
        ),
        (
            "reserved header prefix x-original-",
            claim_header("X-Original-URI"),
            Err(&["spec.claimHeaders[0].header", "reserved"]),
        ),
        (
            "reserved header prefix x-envoy-",
            claim_header("x-envoy-original-path"),
            Err(&["spec.claimHeaders[0].header", "reserved"]),
        ),
        (
            "reserved header prefix x-accessgate-",
            claim_header("X-Accessgate-Reason"),
            Err(&["spec.claimHeaders[0].header", "reserved"]),
        ),
        (
            "reserved header forwarded",
            claim_header("Forwarded"),
            Err(&["spec.claimHeaders[0].header", "reserved"]),
        ),
        (
            "reserved header x-request-id",
            claim_header("X-Request-Id"),
            Err(&["spec.claimHeaders[0].header", "reserved"]),
        ),
        (
            "header that only starts like a reserved prefix",
            claim_header("X-Forwarded"),
            OK,
        ),
        (
            "ASCII email and emailDomain matchers",
            spec_with(
                json!({"rules": {"allow": [{"email": "Alice+x@Example.com"}], "deny": [{"emailDomain": "Evil.Example"}]}}),
            ),
            OK,
        ),
        (
            "non-ASCII email matcher (KELVIN SIGN)",
            spec_with(json!({"rules": {"allow": [{"email": "eve@\u{212A}ube.io"}]}})),
            Err(&[
                "spec.rules.allow[0].email",
                "email must look like user@domain",
            ]),
        ),
        (
            "non-ASCII emailDomain matcher",
            spec_with(json!({"rules": {"deny": [{"emailDomain": "b\u{fc}cher.de"}]}})),
            Err(&[
                "spec.rules.deny[0].emailDomain",
                "emailDomain must be an ASCII domain name",
            ]),
        ),
        (
            "email matcher with a space",
            spec_with(json!({"rules": {"allow": [{"email": "al ice@example.com"}]}})),
            Err(&[
                "spec.rules.allow[0].email",
                "email must look like user@domain",
            ]),
        ),
        (
            "email matcher with a trailing dot",
            spec_with(json!({"rules": {"allow": [{"email": "alice@example.com."}]}})),
            Err(&[
                "spec.rules.allow[0].email",
                "email must look like user@domain",
            ]),
        ),
        (
            "duplicate header",
            spec_with(
                json!({"claimHeaders": [{"header": "X-A", "claim": "email"}, {"header": "x-a", "claim": "sub"}]}),
            ),
            Err(&["spec.claimHeaders", "Duplicate value|a header twice"]),
        ),
        (
            "empty claim segment",
            spec_with(json!({"claimHeaders": [{"header": "X-A", "claim": "a..b"}]})),
            Err(&[
                "spec.claimHeaders[0].claim",
                "dotted path without empty segments",
            ]),
        ),
        (
            "dry-run with a candidate",
            spec_with(
                json!({"mode": "dryRun", "candidate": {"audiences": [AUD], "rules": {"allow": [{"group": "admins"}]}, "claimHeaders": [{"header": "X-Groups", "claim": "custom.groups"}]}}),
            ),
            OK,
        ),
        (
            "an unknown mode",
            spec_with(json!({"mode": "audit"})),
            Err(&["audit", "enforce"]),
        ),
        (
            "a candidate audience that is not an AUD tag",
            spec_with(json!({"candidate": {"audiences": ["app"]}})),
            Err(&[
                "spec.candidate.audiences",
                "must be a Cloudflare Access AUD tag",
            ]),
        ),
        (
            "a candidate matcher with two fields",
            spec_with(
                json!({"candidate": {"rules": {"allow": [{"group": "a", "email": "a@example.com"}]}}}),
            ),
            Err(&[
                "spec.candidate.rules.allow[0]",
                "a matcher sets exactly one of",
            ]),
        ),
        (
            "a candidate naming a header twice",
            spec_with(
                json!({"candidate": {"claimHeaders": [{"header": "X-A", "claim": "a"}, {"header": "x-a", "claim": "b"}]}}),
            ),
            Err(&[
                "spec.candidate.claimHeaders",
                "Duplicate value|a header twice",
            ]),
        ),
        (
            "an upstream assertion",
            spec_with(
                json!({"upstreamAssertion": {"audience": "grafana", "header": "X-App-Assertion", "ttl": "2m"}}),
            ),
            OK,
        ),
        (
            "an assertion ttl under 10s",
            spec_with(json!({"upstreamAssertion": {"audience": "grafana", "ttl": "5s"}})),
            Err(&["spec.upstreamAssertion.ttl", "ttl must be from 10s to 5m"]),
        ),
        (
            "an assertion in a reserved header",
            spec_with(
                json!({"upstreamAssertion": {"audience": "grafana", "header": "Authorization"}}),
            ),
            Err(&["spec.upstreamAssertion.header", "reserved"]),
        ),
        (
            "an assertion in a claim header",
            spec_with(
                json!({"upstreamAssertion": {"audience": "grafana", "header": "X-User"}, "claimHeaders": [{"header": "x-user", "claim": "sub"}]}),
            ),
            Err(&[
                "spec.upstreamAssertion.header",
                "Duplicate value|must not be a claimHeaders header",
            ]),
        ),
        (
            "join with json",
            spec_with(
                json!({"claimHeaders": [{"header": "X-A", "claim": "g", "join": ",", "format": "json"}]}),
            ),
            Err(&[
                "spec.claimHeaders[0]",
                "join and format: json are exclusive",
            ]),
        ),
    ]
}

/// What the code says of `spec`: deserialised as the CRD type, then compiled. A candidate
/// that does not compile leaves the live policy enforced in the code (the file source has no
/// apply-time check); here it counts as the refusal the API server gives at apply.
fn code_verdict(spec: &Value) -> Result<(), String> {
    use accessgate::core::policy::{Candidate, PolicyKey, compile};
    serde_json::from_value::<accessgate::api::AccessPolicySpec>(spec.clone())
        .map_err(|e| e.to_string())
        .and_then(|s| compile(PolicyKey::new("apps", "x"), None, &s).map_err(|e| e.to_string()))
        .and_then(|p| match p.candidate {
            Some(Candidate::Invalid(e)) => Err(e.to_string()),
            _ => Ok(()),
        })
}

/// How `verdict` (the API server's or the code's) departs from `expected`, if it does.
fn disagreement(verdict: &Result<impl Sized, String>, expected: Expect) -> Option<String> {
    match (verdict, expected) {
        (Ok(_), Ok(())) => None,
        (Ok(_), Err(_)) => Some("accepted, expected a refusal".to_owned()),
        (Err(e), Ok(())) => Some(format!("refused, expected valid: {e}")),
        (Err(e), Err(names)) => {
            let named = |n: &&str| n.split('|').any(|wording| e.contains(wording));
            let missing: Vec<&&str> = names.iter().filter(|n| !named(n)).collect();
            (!missing.is_empty()).then(|| format!("refused without naming {missing:?}: {e}"))
        }
    }
}

/// The CRD's CEL rules and the code's validation refuse the same things, for the same
/// reason: each refusal names the field and the rule (or the refused value).
#[test]
fn cel_rules_and_code_validation_agree() {
    let _slot = crate::own_cluster_slot();
    let cp = ControlPlane::start();
    cp.kubectl_ok(&["create", "namespace", "apps"]);
    let mut disagreements = Vec::new();
    for (i, (name, spec, expected)) in cel_cases().into_iter().enumerate() {
        let obj = json!({"apiVersion": "accessgate.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": format!("case-{i}"), "namespace": "apps"}, "spec": spec});
        let api = cp.apply(&obj.to_string());
        let code = code_verdict(&spec);
        for (who, verdict) in [("API server", &api), ("code", &code.map(|_| String::new()))] {
            if let Some(d) = disagreement(verdict, expected) {
                disagreements.push(format!("{name}: {who} {d}"));
            }
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

fn ready_in(cp: &ControlPlane, namespace: &str, name: &str) -> Option<(String, String, String)> {
    let obj = cp.get_json(&["accesspolicy", name, "-n", namespace]);
    let c = obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?
        .clone();
    // A status from an older generation says nothing about this one.
    if c["observedGeneration"] != obj["metadata"]["generation"] {
        return None;
    }
    let s = |k: &str| c[k].as_str().unwrap_or("").to_owned();
    Some((s("status"), s("reason"), s("message")))
}

/// An Ingress in `namespace` serving `host` through the bare endpoint.
fn ingress_in(namespace: &str, name: &str, host: &str) -> String {
    format!(
        r#"{{"apiVersion":"networking.k8s.io/v1","kind":"Ingress","metadata":{{"name":"{name}","namespace":"{namespace}",
"annotations":{{"nginx.ingress.kubernetes.io/auth-url":"http://accessgate.accessgate-system.svc.cluster.local/auth?host=$host"}}}},
"spec":{{"rules":[{{"host":"{host}","http":{{"paths":[{{"path":"/","pathType":"Prefix","backend":{{"service":{{"name":"app","port":{{"number":80}}}}}}}}]}}}}]}}}}"#
    )
}

/// `GET /auth?host={host}` for `https://{host}/` with `token`: the status.
fn bare_auth(replica: &Replica, host: &str, token: &str) -> u16 {
    http()
        .get(format!("{}/auth?host={host}", replica.auth))
        .header("x-original-url", format!("https://{host}/"))
        .header("cf-access-jwt-assertion", token)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// The namespace the host ledger ConfigMap records for `key` (`_.` for a wildcard).
fn ledger_holder(cp: &ControlPlane, key: &str) -> Option<(String, bool)> {
    let (_, out, _) = cp.kubectl(
        &[
            "get",
            "configmap",
            "accessgate-hosts",
            "-n",
            SYSTEM_NS,
            "-o",
            "json",
        ],
        None,
    );
    let map: Value = serde_json::from_str(&out).ok()?;
    let holding: Value = serde_json::from_str(map["data"][key].as_str()?).ok()?;
    Some((
        holding["namespace"].as_str()?.to_owned(),
        holding.get("absentSince").is_some(),
    ))
}

/// A control plane with namespaces `victim` and `tenant`, an issuer for each, one replica.
fn tenancy() -> (ControlPlane, Issuer, Issuer, Replica) {
    let (cp, victim_issuer, kc) = setup();
    cp.kubectl_ok(&["create", "namespace", "victim"]);
    cp.kubectl_ok(&["create", "namespace", "tenant"]);
    let replica = replica(&kc, "replica-a");
    (cp, victim_issuer, Issuer::start(), replica)
}

/// Finding (HIGH), in the cluster: a namespace routes only hosts it serves itself. The
/// victim's Ingress serves `*.apps.example.test` and its policy holds the wildcard; a
/// tenant's claim on `secret.apps.example.test` (no Ingress of its own) is `HostNotServed`
/// and its token is refused there; a host the tenant does serve is its own.
#[test]
fn a_namespace_routes_only_the_hosts_it_serves() {
    let _slot = crate::own_cluster_slot();
    let (cp, victim_issuer, tenant_issuer, replica) = tenancy();
    cp.apply(&ingress_in("victim", "apps", "*.apps.example.test"))
        .unwrap();
    cp.apply(&policy_in(
        "victim",
        "apps",
        &victim_issuer.url,
        r#","hosts":["*.apps.example.test"]"#,
    ))
    .unwrap();
    cp.apply(&policy_in(
        "tenant",
        "grab",
        &tenant_issuer.url,
        r#","hosts":["secret.apps.example.test"]"#,
    ))
    .unwrap();
    cp.apply(&policy_in(
        "tenant",
        "own",
        &tenant_issuer.url,
        r#","hosts":["own.example.test"]"#,
    ))
    .unwrap();
    let is = |ns: &str, name: &str, status: &str, reason: &str| {
        eventually(Duration::from_secs(30), || {
            ready_in(&cp, ns, name).is_some_and(|(s, r, _)| s == status && r == reason)
        })
    };
    assert!(
        is("victim", "apps", "True", "Enforced"),
        "{:?}",
        ready_in(&cp, "victim", "apps")
    );
    for name in ["grab", "own"] {
        assert!(
            is("tenant", name, "False", "HostNotServed"),
            "tenant/{name}: {:?}",
            ready_in(&cp, "tenant", name)
        );
    }
    let (_, _, message) = ready_in(&cp, "tenant", "grab").unwrap();
    assert!(message.contains("secret.apps.example.test"), "{message}");
    assert!(!message.contains("victim"), "names the holder: {message}");

    let (victim_token, evil) = (
        victim_issuer.token(json!({})),
        tenant_issuer.token(json!({"email": "eve@evil.test"})),
    );
    // Changes reach the index a moment after the API server has them.
    let answers = |host: &str, token: &str, status: u16| {
        eventually(Duration::from_secs(10), || {
            bare_auth(&replica, host, token) == status
        })
    };
    assert_eq!(bare_auth(&replica, "secret.apps.example.test", &evil), 401);
    assert_eq!(
        bare_auth(&replica, "secret.apps.example.test", &victim_token),
        200
    );
    assert_eq!(bare_auth(&replica, "own.example.test", &evil), 503);
    // The leader records the holding in the ledger a moment later.
    assert!(eventually(Duration::from_secs(30), || {
        ledger_holder(&cp, "_.apps.example.test") == Some(("victim".to_owned(), false))
    }));

    // Serving the host with its own Ingress gives the tenant the right to it.
    cp.apply(&ingress_in("tenant", "own", "own.example.test"))
        .unwrap();
    assert!(
        is("tenant", "own", "True", "Enforced"),
        "{:?}",
        ready_in(&cp, "tenant", "own")
    );
    assert!(answers("own.example.test", &evil, 200));
    // ... but an Ingress of its own under the victim's wildcard does not take the host the
    // victim held first.
    cp.apply(&ingress_in("tenant", "grab", "secret.apps.example.test"))
        .unwrap();
    assert!(
        is("tenant", "grab", "False", "HostOwnedElsewhere"),
        "{:?}",
        ready_in(&cp, "tenant", "grab")
    );
    // nginx now sends that host to the tenant's backend: the victim's wildcard policy no
    // longer decides for it either, and nobody's token is let in there.
    assert!(answers("secret.apps.example.test", &victim_token, 503));
    assert_eq!(bare_auth(&replica, "secret.apps.example.test", &evil), 503);
    assert_eq!(
        bare_auth(&replica, "www.apps.example.test", &victim_token),
        200
    );

    // The other way round: a wildcard the tenant serves and holds does not decide for a host
    // under it that the victim serves with its own Ingress but forgot to name in a policy.
    cp.apply(&ingress_in("tenant", "wild", "*.wild.example.test"))
        .unwrap();
    cp.apply(&policy_in(
        "tenant",
        "wild",
        &tenant_issuer.url,
        r#","hosts":["*.wild.example.test"]"#,
    ))
    .unwrap();
    cp.apply(&ingress_in("victim", "forgot", "app.wild.example.test"))
        .unwrap();
    assert!(is("tenant", "wild", "True", "Enforced"));
    assert!(answers("x.wild.example.test", &evil, 200));
    assert!(answers("app.wild.example.test", &evil, 503));
}

/// Finding (MEDIUM), in the cluster: ownership is durable. Both namespaces serve
/// `admin.example.test`; the victim's claim came first. Its policy deleted and re-created
/// (Argo CD `Replace=true`, a restore), its Ingress briefly gone, or the host moved to a new
/// policy object: the tenant's waiting claim never gets the host. An operator freeing the
/// host in the ledger hands it over.
#[test]
fn host_ownership_survives_recreation_absence_and_moves() {
    let _slot = crate::own_cluster_slot();
    let (cp, victim_issuer, tenant_issuer, replica) = tenancy();
    const HOST: &str = "admin.example.test";
    let hosts = r#","hosts":["admin.example.test"]"#;
    cp.apply(&ingress_in("victim", "console", HOST)).unwrap();
    cp.apply(&ingress_in("tenant", "grab", HOST)).unwrap();
    cp.apply(&policy_in("victim", "console", &victim_issuer.url, hosts))
        .unwrap();
    let held_by_victim = || {
        eventually(Duration::from_secs(30), || {
            ledger_holder(&cp, HOST) == Some(("victim".to_owned(), false))
        })
    };
    assert!(
        held_by_victim(),
        "{:?}\n{}",
        ledger_holder(&cp, HOST),
        replica.proc.output()
    );
    cp.apply(&policy_in("tenant", "grab", &tenant_issuer.url, hosts))
        .unwrap();
    assert!(eventually(Duration::from_secs(30), || {
        ready_in(&cp, "tenant", "grab")
            .is_some_and(|(s, r, _)| s == "False" && r == "HostOwnedElsewhere")
    }));
    let (victim_token, evil) = (
        victim_issuer.token(json!({})),
        tenant_issuer.token(json!({})),
    );
    assert_eq!(bare_auth(&replica, HOST, &victim_token), 200);
    assert_eq!(bare_auth(&replica, HOST, &evil), 401);

    // Never 200 for the tenant while the victim is away; held, not handed over.
    let away = |what: &str| {
        assert!(
            eventually(Duration::from_secs(30), || ledger_holder(&cp, HOST)
                == Some(("victim".to_owned(), true))),
            "{what}: absence not recorded: {:?}",
            ledger_holder(&cp, HOST)
        );
        assert_eq!(bare_auth(&replica, HOST, &evil), 503, "{what}");
    };
    let back = |what: &str| {
        assert!(held_by_victim(), "{what}: {:?}", ledger_holder(&cp, HOST));
        assert!(
            eventually(Duration::from_secs(30), || bare_auth(
                &replica,
                HOST,
                &victim_token
            ) == 200),
            "{what}"
        );
        assert_eq!(bare_auth(&replica, HOST, &evil), 401, "{what}");
    };

    cp.kubectl_ok(&["delete", "accesspolicy", "console", "-n", "victim"]);
    away("deleted");
    cp.apply(&policy_in("victim", "console", &victim_issuer.url, hosts))
        .unwrap();
    back("re-created");

    cp.kubectl_ok(&["delete", "ingress", "console", "-n", "victim"]);
    away("Ingress gone");
    cp.apply(&ingress_in("victim", "console", HOST)).unwrap();
    back("Ingress back");

    cp.kubectl_ok(&["delete", "accesspolicy", "console", "-n", "victim"]);
    cp.apply(&policy_in(
        "victim",
        "console-v2",
        &victim_issuer.url,
        hosts,
    ))
    .unwrap();
    back("moved to a new policy");

    // The victim lets go and the operator frees the host: now the tenant may have it.
    cp.kubectl_ok(&["delete", "accesspolicy", "console-v2", "-n", "victim"]);
    away("released");
    cp.kubectl_ok(&[
        "patch",
        "configmap",
        "accessgate-hosts",
        "-n",
        SYSTEM_NS,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/data/admin.example.test"}]"#,
    ]);
    assert!(
        eventually(Duration::from_secs(30), || bare_auth(&replica, HOST, &evil)
            == 200),
        "{:?}",
        ledger_holder(&cp, HOST)
    );
    assert!(eventually(Duration::from_secs(30), || {
        ledger_holder(&cp, HOST) == Some(("tenant".to_owned(), false))
    }));
}

/// Finding (issue 19): a second install in the cluster overwrote the first's status
/// (`authUrl` flipping between the two Services, an Event storm). Two installs against one API
/// server, the default one and class `blue`, each with its own Lease, host ledger and Service:
/// each serves and writes status and Events for its own policies only. Over a 10 s window
/// (sampled, and every version the API server reported) `authUrl` names the owning install's
/// Service and nothing else; each policy has exactly one PolicyAccepted, from its own install;
/// each install answers `policy_unknown` for the other's policy by name.
#[test]
fn two_installs_serve_and_write_status_only_for_their_own_class() {
    let _slot = crate::own_cluster_slot();
    let (cp, issuer, kc) = setup();
    let blue = crate::common::replica::Install::of_class("blue");
    let blue_kc = cp.install_service_account_kubeconfig(
        SYSTEM_NS,
        "accessgate-blue",
        &blue.lease,
        &blue.ledger,
    );
    let url = |service: &str, name: &str| {
        format!("http://{service}.{SYSTEM_NS}.svc.cluster.local/auth/apps/{name}")
    };
    // (policy, owning replica's identity, its authUrl)
    let owners = [
        ("unclassed", "default-a", url("accessgate", "unclassed")),
        ("classed-blue", "blue-a", url(&blue.service, "classed-blue")),
    ];
    cp.apply(&policy_in("apps", "unclassed", &issuer.url, ""))
        .unwrap();
    cp.apply(&policy_in(
        "apps",
        "classed-blue",
        &issuer.url,
        r#","className":"blue""#,
    ))
    .unwrap();
    // Every version from here on, before any install runs: a write by the wrong install
    // shows in one of them even if the right one overwrote it at once.
    let watch = cp.watch(&["accesspolicy", "-n", "apps"]);
    assert!(
        eventually(Duration::from_secs(30), || watch.seen().len() >= 2),
        "kubectl get --watch printed nothing"
    );

    let default = Replica::start(&kc, "default-a", &[]);
    let blue_install = Replica::start_install(&blue_kc, "blue-a", &blue, &[]);
    for (name, _, auth_url) in &owners {
        cp.wait_policy("apps", name, Duration::from_secs(30), |o| {
            ready_condition(o) == Some(("True".into(), "Enforced".into()))
                && o["status"]["authUrl"] == *auth_url
        });
    }

    let token = issuer.token(json!({}));
    let started = Instant::now();
    let mut samples = 0;
    while started.elapsed() < Duration::from_secs(10) {
        for (name, _, auth_url) in &owners {
            let obj = cp.get_json(&["accesspolicy", name, "-n", "apps"]);
            assert_eq!(obj["status"]["authUrl"], *auth_url, "{name} flipped");
        }
        assert_eq!(
            default.answer("/auth/apps/unclassed", &token),
            (200, String::new())
        );
        assert_eq!(
            blue_install.answer("/auth/apps/classed-blue", &token),
            (200, String::new())
        );
        let unknown = (503, "policy_unknown".to_owned());
        assert_eq!(default.answer("/auth/apps/classed-blue", &token), unknown);
        assert_eq!(blue_install.answer("/auth/apps/unclassed", &token), unknown);
        samples += 1;
        std::thread::sleep(Duration::from_secs(1)); // sampling over the window, not a wait
    }
    assert!(samples >= 5, "only {samples} samples in the window");

    let versions = watch.seen();
    eprintln!("{} versions of the two policies seen", versions.len());
    for v in &versions {
        let name = v["metadata"]["name"].as_str().unwrap();
        let (_, _, auth_url) = owners.iter().find(|(n, _, _)| *n == name).unwrap();
        assert!(
            v["status"]["authUrl"].is_null() || v["status"]["authUrl"] == *auth_url,
            "{name} was written by the other install: {:#}",
            v["status"]
        );
    }

    let events = cp.get_json(&["events.events.k8s.io", "-n", "apps"]);
    let events = events["items"].as_array().unwrap();
    for (name, owner, _) in &owners {
        let about: Vec<&Value> = events
            .iter()
            .filter(|e| e["regarding"]["name"] == *name)
            .collect();
        for e in &about {
            assert_eq!(e["reportingInstance"], *owner, "{name}: {e:#}");
        }
        let accepted: Vec<&&Value> = about
            .iter()
            .filter(|e| e["reason"] == "PolicyAccepted")
            .collect();
        assert_eq!(accepted.len(), 1, "{name}: {accepted:#?}");
        assert!(
            accepted[0]["series"].is_null(),
            "{name}: PolicyAccepted repeated: {:#}",
            accepted[0]
        );
    }

    for (install, log_name) in [(&default, "default"), (&blue_install, "blue")] {
        let metrics = install.metrics();
        assert_eq!(
            metric_sum(&metrics, "accessgate_policies", &[("state", "other_class")]),
            1.0,
            "{log_name}: {metrics}"
        );
        assert_eq!(
            metric_sum(&metrics, "accessgate_policies", &[("state", "ready")]),
            1.0,
            "{log_name}"
        );
        assert!(
            install.proc.output().contains("\"ignored_other_class\":1"),
            "{log_name}: {}",
            install.proc.output()
        );
    }
    let holder = |lease: &str| {
        cp.get_json(&["lease", lease, "-n", SYSTEM_NS])["spec"]["holderIdentity"].clone()
    };
    assert_eq!(holder("accessgate-leader"), "default-a");
    assert_eq!(holder(&blue.lease), "blue-a");
}
