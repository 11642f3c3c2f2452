//! Signals on the real binary. SIGTERM (the kubelet's) drains: `/readyz` 503 while the auth
//! listener keeps answering for `--drain-period`. Ctrl-C (SIGINT) is a person at a terminal:
//! no drain, exit 130. A second signal during a drain ends it at once (130 for SIGINT, 143
//! for SIGTERM). Every drain here is 60 s, so an exit within [`PROMPT`] cannot be the drain
//! running out; no test asserts how fast an exit is beyond that.

use std::time::Duration;

use crate::common::cluster::ControlPlane;
use crate::common::replica::{Install, Replica, SYSTEM_NS};
use crate::common::*;
use serde_json::json;

/// Long enough to tell "at once" from "after the drain" on a loaded machine.
const PROMPT: Duration = Duration::from_secs(20);
const SLOW_DRAIN: [&str; 4] = ["--drain-period", "60s", "--shutdown-grace", "60s"];

fn serve(issuer: &Issuer) -> Server {
    Server::start(
        &[("web.yaml", &policy_yaml("apps", "web", &issuer.url, ""))],
        &SLOW_DRAIN,
    )
}

fn readyz(admin: &str) -> u16 {
    http()
        .get(format!("{admin}/readyz"))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// After a SIGTERM: not ready, still running, still answering auth requests.
#[track_caller]
fn assert_draining(server: &mut Server, token: &str) {
    assert!(
        eventually(Duration::from_secs(10), || readyz(&server.admin) == 503),
        "/readyz did not turn 503 after SIGTERM:\n{}",
        server.proc.output()
    );
    server.with_token("/auth/apps/web", token).assert_allow();
    assert!(server.proc.is_running(), "{}", server.proc.output());
}

#[track_caller]
fn assert_exit_code(status: Option<std::process::ExitStatus>, code: i32, log: &str) {
    let status = status.unwrap_or_else(|| panic!("still running {PROMPT:?} after the signal"));
    assert_eq!(status.code(), Some(code), "{status:?}\n{log}");
}

#[test]
fn ctrl_c_stops_serve_without_draining() {
    let issuer = Issuer::start();
    let mut server = serve(&issuer);
    server.proc.signal("INT");
    let status = server.proc.wait_exit(PROMPT);
    assert_exit_code(status, 130, &server.proc.output());
}

#[test]
fn a_second_sigterm_ends_the_drain_at_once() {
    let issuer = Issuer::start();
    let token = issuer.token(json!({}));
    let mut server = serve(&issuer);
    server.proc.signal("TERM");
    assert_draining(&mut server, &token);
    // One SIGTERM keeps draining.
    std::thread::sleep(Duration::from_secs(2));
    assert_draining(&mut server, &token);
    server.proc.signal("TERM");
    let status = server.proc.wait_exit(PROMPT);
    assert_exit_code(status, 143, &server.proc.output());
}

#[test]
fn ctrl_c_during_the_drain_exits_at_once() {
    let issuer = Issuer::start();
    let token = issuer.token(json!({}));
    let mut server = serve(&issuer);
    server.proc.signal("TERM");
    assert_draining(&mut server, &token);
    server.proc.signal("INT");
    let status = server.proc.wait_exit(PROMPT);
    assert_exit_code(status, 130, &server.proc.output());
}

#[test]
fn ctrl_c_stops_the_demo_and_removes_its_policy_directory() {
    let mut demo = spawn_demo();
    let line = demo.wait_line("policy:", Duration::from_secs(30));
    let policy = line.split_whitespace().last().unwrap().to_owned();
    assert!(std::path::Path::new(&policy).is_file(), "{line}");
    demo.wait_line("/mint", Duration::from_secs(10));
    demo.signal("INT");
    let status = demo.wait_exit(PROMPT);
    assert_exit_code(status, 130, &demo.output());
    assert!(
        !std::path::Path::new(&policy).exists(),
        "the demo left {policy} behind"
    );
}

#[test]
fn ctrl_c_stops_run_at_once_and_releases_the_lease() {
    // On the shared control plane, as an install of its own (class, Lease, ServiceAccount).
    let _slot = crate::shared_cluster_slot();
    let cp = ControlPlane::shared();
    let install = Install::of_class("signals");
    let kc = {
        let _one_at_a_time = crate::shared_setup();
        cp.install_service_account_kubeconfig(
            SYSTEM_NS,
            "accessgate-signals",
            &install.lease,
            &install.ledger,
        )
    };
    let mut replica = Replica::start_install(&kc, "replica-a", &install, &SLOW_DRAIN);
    let holder = || {
        cp.get_json(&["lease", &install.lease, "-n", SYSTEM_NS])["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        eventually(Duration::from_secs(30), || holder() == "replica-a"),
        "replica-a never took the Lease:\n{}",
        replica.proc.output()
    );
    replica.proc.signal("INT");
    let status = replica.proc.wait_exit(PROMPT);
    assert_exit_code(status, 130, &replica.proc.output());
    assert_eq!(
        holder(),
        "",
        "the Lease still names a holder after Ctrl-C:\n{}",
        replica.proc.output()
    );
}
