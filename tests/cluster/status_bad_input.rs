//! Bad input for the leader's status writer, on the real kube-apiserver: a status write the
//! API server refuses, a policy flapping between two specs, and an API server too slow to
//! answer a status write. Status may suffer; enforcement, other policies' status and
//! shutdown may not.
//!
//! The tests share one control plane; each has its own install (class, Lease, ServiceAccount)
//! and namespace, so they run side by side without writing each other's status.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::cluster::{ControlPlane, policy_in, ready_condition};
use crate::common::replica::{Install, Replica, SYSTEM_NS};
use crate::common::slow_api::SlowApi;
use crate::common::*;
use serde_json::{Value, json};

/// The replicas' `--status-interval` (set by [`Replica::start`]).
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// One test's install and namespace (both named `class`) on the shared control plane.
struct Bed {
    cp: &'static ControlPlane,
    issuer: Issuer,
    class: String,
    install: Install,
    /// As the install's ServiceAccount, straight to the API server.
    kubeconfig: PathBuf,
    _slot: std::sync::RwLockReadGuard<'static, ()>,
}

impl Bed {
    fn new(class: &str) -> Bed {
        let slot = crate::shared_cluster_slot();
        let cp = ControlPlane::shared();
        let install = Install::of_class(class);
        let kubeconfig = {
            let _one_at_a_time = crate::shared_setup();
            cp.kubectl_ok(&["create", "namespace", class]);
            cp.install_service_account_kubeconfig(
                SYSTEM_NS,
                &format!("accessgate-{class}"),
                &install.lease,
                &install.ledger,
            )
        };
        Bed {
            cp,
            issuer: Issuer::start(),
            class: class.to_owned(),
            install,
            kubeconfig,
            _slot: slot,
        }
    }

    /// A replica of this install reaching the API server with `kubeconfig`.
    fn replica(&self, kubeconfig: &Path, extra_args: &[&str]) -> Replica {
        let identity = format!("{}-a", self.class);
        Replica::start_install(kubeconfig, &identity, &self.install, extra_args)
    }

    /// Applies policy `name` of this install with `audiences`; its generation.
    fn edit(&self, name: &str, audiences: &[&str]) -> i64 {
        let class = format!(r#","className":"{}""#, self.class);
        let mut p: Value =
            serde_json::from_str(&policy_in(&self.class, name, &self.issuer.url, &class)).unwrap();
        p["spec"]["audiences"] = json!(audiences);
        self.cp.apply(&p.to_string()).expect("apply policy");
        self.get(name)["metadata"]["generation"]
            .as_i64()
            .expect("generation")
    }

    fn get(&self, name: &str) -> Value {
        self.cp.get_json(&["accesspolicy", name, "-n", &self.class])
    }

    /// Waits until policy `name`'s status says generation `generation` is enforced.
    #[track_caller]
    fn wait_enforced(&self, name: &str, generation: i64, timeout: Duration) -> Value {
        self.cp.wait_policy(&self.class, name, timeout, |o| {
            o["status"]["observedGeneration"] == generation
                && ready_condition(o) == Some(("True".into(), "Enforced".into()))
        })
    }
}

fn patches(replica: &Replica, result: &str) -> f64 {
    metric_sum(
        &replica.metrics(),
        "accessgate_status_patches_total",
        &[("result", result)],
    )
}

/// A ValidatingAdmissionPolicy (and its binding) under which the API server refuses every
/// status write to AccessPolicy `namespace/name`, whoever sends it.
fn refuse_status_of(namespace: &str, name: &str) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": "refuse-status"},
         "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["accessgate.dev"], "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"], "resources": ["accesspolicies/status"]}]},
            "matchConditions": [{"name": "the-refused-policy",
                "expression": format!("object.metadata.namespace == '{namespace}' && object.metadata.name == '{name}'")}],
            "validations": [{"expression": "false", "message": "status refused by the test's admission policy"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": "refuse-status"},
         "spec": {"policyName": "refuse-status", "validationActions": ["Deny"]}},
    ]})
    .to_string()
}

/// Whether the API server refuses a status write to `namespace/name` now (asked with a
/// server-side dry run, which runs admission and stores nothing).
fn status_refused(cp: &ControlPlane, namespace: &str, name: &str) -> bool {
    let (ok, _, err) = cp.kubectl(
        &[
            "patch",
            "accesspolicy",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"observedGeneration":1}}"#,
            "--dry-run=server",
        ],
        None,
    );
    !ok && err.contains("refused by the test")
}

/// 1. A status write the API server refuses is logged, counted as failed and retried with a
///    growing backoff, and holds no other policy's status; once the API server accepts it
///    again the status is written.
#[test]
fn a_refused_status_write_backs_off_and_holds_no_other_policy() {
    let bed = Bed::new("refusing");
    let ns = bed.class.as_str();
    // In force before the policy exists for any writer: every write of its status is refused.
    bed.cp.apply(&refuse_status_of(ns, "refused")).unwrap();
    let refused_gen = bed.edit("refused", &[AUD]);
    let web_gen = bed.edit("web", &[AUD]);
    assert!(
        eventually(Duration::from_secs(30), || status_refused(
            bed.cp, ns, "refused"
        )),
        "the admission policy never took effect"
    );
    let replica = bed.replica(&bed.kubeconfig, &[]);
    bed.wait_enforced("web", web_gen, Duration::from_secs(30));

    // Counted and logged, with the API server's reason.
    let failed = || patches(&replica, "failed");
    assert!(
        eventually(Duration::from_secs(30), || failed() >= 3.0),
        "fewer than 3 refused writes counted:\n{}",
        replica.metrics()
    );
    let line = replica
        .proc
        .wait_line("status write failed", Duration::from_secs(5));
    assert!(
        line.contains(&format!("{ns}/refused")) && line.contains("refused by the test"),
        "{line}"
    );

    // Backed off: over a window, fewer attempts than one per status interval would make
    // (half of them at most; the backoff doubles from 0.5 s, so a 12 s window from the third
    // attempt on holds two or three).
    let window = Duration::from_secs(12);
    let (began, at_start) = (Instant::now(), failed());
    let mut attempts = vec![(Duration::ZERO, at_start)];

    // Meanwhile another policy's edit reaches its status.
    let web_gen = bed.edit("web", &[AUD, "second"]);
    bed.wait_enforced("web", web_gen, Duration::from_secs(30));
    let web_written = failed();
    assert_eq!(
        bed.get("refused")["status"]["observedGeneration"],
        Value::Null,
        "the refused status was written"
    );

    while began.elapsed() < window {
        let now = failed();
        if now != attempts.last().unwrap().1 {
            attempts.push((began.elapsed(), now));
        }
        std::thread::sleep(Duration::from_millis(100)); // sampling the counter over the window
    }
    let in_window = failed() - at_start;
    let once_per_interval = window.as_secs_f64() / STATUS_INTERVAL.as_secs_f64();
    eprintln!("refused writes over {window:?} (elapsed, total): {attempts:?}");
    assert!(
        in_window <= once_per_interval / 2.0,
        "{in_window} refused writes in {window:?}: no backoff (first samples: {:?})",
        &attempts[..attempts.len().min(8)]
    );
    assert!(in_window >= 1.0, "the refused write was not retried");
    // Still refused, still retried after the other policy's status went through.
    assert!(
        eventually(Duration::from_secs(60), || failed() > web_written),
        "no retry after {web_written} refused writes"
    );

    // The API server accepts it again: the status is written at the next retry.
    bed.cp.kubectl_ok(&[
        "delete",
        "validatingadmissionpolicybinding",
        "refuse-status",
    ]);
    bed.cp
        .kubectl_ok(&["delete", "validatingadmissionpolicy", "refuse-status"]);
    bed.wait_enforced("refused", refused_gen, Duration::from_secs(90));
    let settled = failed();
    assert!(
        eventually(Duration::from_secs(10), || metric_sum(
            &replica.metrics(),
            "accessgate_status_queue_depth",
            &[]
        ) == 0.0),
        "the queue never emptied:\n{}",
        replica.metrics()
    );
    assert_eq!(failed(), settled, "failures went on after the recovery");
    assert!(!replica.proc.output().contains("panicked"));
}

/// 2. A policy flapping between two specs every 100 ms gets at most one status write per
///    status interval, and its status settles on the last generation.
#[test]
fn a_flapping_policy_is_written_at_most_once_per_interval() {
    let bed = Bed::new("flapping");
    let replica = bed.replica(&bed.kubeconfig, &[]);
    let generation = bed.edit("flap", &[AUD]);
    bed.wait_enforced("flap", generation, Duration::from_secs(30));
    let written_before = patches(&replica, "ok");

    // Straight to the API server: a kubectl process per edit could not keep the pace.
    let admin = bed.cp.admin_http();
    let url = format!(
        "{}/apis/accessgate.dev/v1alpha1/namespaces/{}/accesspolicies/flap",
        bed.cp.server(),
        bed.class
    );
    let specs: [&[&str]; 2] = [&[AUD, "second"], &[AUD]];
    let flapping = Duration::from_secs(5);
    let began = Instant::now();
    let mut next = began;
    let mut edits = 0;
    while began.elapsed() < flapping {
        let edit = json!({"spec": {"audiences": specs[edits % 2]}});
        let answer = admin
            .patch(&url)
            .header("content-type", "application/merge-patch+json")
            .body(edit.to_string())
            .send()
            .expect("edit the policy");
        assert!(answer.status().is_success(), "{:?}", answer.text());
        edits += 1;
        next += Duration::from_millis(100);
        std::thread::sleep(next.saturating_duration_since(Instant::now())); // the flap's pace
    }
    let flapped = began.elapsed();
    let last_generation = bed.get("flap")["metadata"]["generation"].clone();
    assert_eq!(
        last_generation,
        generation + edits as i64,
        "an edit was lost"
    );
    let last_generation = last_generation.as_i64().unwrap();

    // Settles on the last generation.
    bed.wait_enforced("flap", last_generation, Duration::from_secs(30));
    let written = patches(&replica, "ok") - written_before;
    // One write per interval while it flapped, one for the generation it settled on, and one
    // for an interval boundary the measurement straddles.
    let bound = (flapped.as_secs_f64() / STATUS_INTERVAL.as_secs_f64()).ceil() + 2.0;
    eprintln!("{edits} edits in {flapped:.1?}: {written} status writes (bound {bound})");
    assert!(
        edits as f64 >= 2.0 * bound,
        "only {edits} edits in {flapped:?}: too few to tell a bound from a storm"
    );
    assert!(
        written <= bound,
        "{written} status writes for {edits} edits in {flapped:?}: a write storm"
    );
    assert!(written >= 1.0);

    // And nothing more once it has settled.
    std::thread::sleep(3 * STATUS_INTERVAL); // a few writer passes with nothing to write
    assert_eq!(patches(&replica, "ok") - written_before, written);
    assert_eq!(patches(&replica, "failed"), 0.0);
}

/// 3. A slow API server delays status, never enforcement: with status writes held in a
///    proxy (every request to the API server also slowed), an edit is enforced while its
///    status write waits, another policy's status is written meanwhile, the held write lands
///    once let through, and a replica whose status write hangs still shuts down.
#[test]
fn a_slow_api_server_delays_status_never_enforcement() {
    let bed = Bed::new("slowapi");
    let proxy = SlowApi::start(bed.cp, Duration::from_millis(300));
    let kubeconfig = proxy.kubeconfig(bed.cp, &bed.kubeconfig);
    let replica = bed.replica(&kubeconfig, &["--drain-period", "1s"]);
    let slow_gen = bed.edit("slow", &[AUD]);
    let other_gen = bed.edit("other", &[AUD]);
    bed.wait_enforced("slow", slow_gen, Duration::from_secs(60));
    bed.wait_enforced("other", other_gen, Duration::from_secs(60));
    assert!(
        proxy.status_writes() >= 2,
        "status did not go through the proxy"
    );
    let token = bed.issuer.token(json!({}));
    let slow_path = format!("/auth/{}/slow", bed.class);
    assert_eq!(replica.status(&slow_path, &token), 200);

    // The token's audience leaves the policy; its status write is held.
    proxy.hold_status_of("slow");
    let slow_gen = bed.edit("slow", &["e".repeat(64).as_str()]);
    assert!(
        eventually(Duration::from_secs(30), || replica
            .status(&slow_path, &token)
            == 403),
        "the edit was not enforced:\n{}",
        replica.proc.output()
    );
    assert!(
        eventually(Duration::from_secs(30), || proxy.waiting() >= 1),
        "the writer never tried to write the edit's status"
    );
    // Enforced first, status still behind: enforcement did not wait for the status write.
    assert_ne!(bed.get("slow")["status"]["observedGeneration"], slow_gen);
    assert_eq!(replica.status(&slow_path, &token), 403);

    // Another policy's edit is written while that write hangs.
    let other_gen = bed.edit("other", &[AUD, "second"]);
    bed.wait_enforced("other", other_gen, Duration::from_secs(30));
    assert!(proxy.waiting() >= 1, "the held write was let through");
    assert_ne!(bed.get("slow")["status"]["observedGeneration"], slow_gen);

    // Let through: the status catches up with what has been enforced all along.
    proxy.release();
    bed.wait_enforced("slow", slow_gen, Duration::from_secs(60));
    assert_eq!(replica.status(&slow_path, &token), 403);

    // A status write that never returns does not hold shutdown: SIGTERM still ends the
    // replica, with 0, and the Lease is released.
    proxy.hold_status_of("slow");
    let slow_gen = bed.edit("slow", &[AUD]);
    assert!(eventually(Duration::from_secs(30), || proxy.waiting() >= 1));
    let mut replica = replica;
    let exit = replica.proc.terminate(Duration::from_secs(60));
    assert!(
        exit.is_some_and(|s| s.success()),
        "replica did not exit cleanly ({exit:?}) with a status write hanging:\n{}",
        replica.proc.output()
    );
    let lease = bed
        .cp
        .get_json(&["lease", &bed.install.lease, "-n", SYSTEM_NS]);
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "Lease not released: {lease:#}"
    );
    assert_ne!(bed.get("slow")["status"]["observedGeneration"], slow_gen);
}
