//! The pod, as the chart renders it. No kubelet or container runtime runs here (no Docker
//! engine, and a kubelet needs a container runtime and cgroup delegation this sandbox lacks),
//! so the Deployment's container is run the way a kubelet would run it, under bubblewrap:
//!
//! - command and args exactly as rendered (the image's ENTRYPOINT when `command` is unset),
//!   env with `fieldRef`s resolved, the binary at the image's path;
//! - uid/gid from the security context, a read-only root filesystem, a private PID space;
//! - the ServiceAccount's token, CA and namespace at
//!   `/var/run/secrets/kubernetes.io/serviceaccount`, `KUBERNETES_SERVICE_HOST/PORT` pointing
//!   at the test API server: the in-cluster configuration path, not a kubeconfig;
//! - the rendered liveness and readiness probes polled as the kubelet would;
//! - then SIGTERM, as on a rollout: the Lease is released and the process exits 0.
//!
//! The RBAC objects are applied from the same render, so the pod runs with exactly the
//! chart's permissions.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::cluster::ControlPlane;
use crate::common::*;
use serde_json::{Value, json};

const NS: &str = "accessgate-system";
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/accessgate");
/// Where the Dockerfile puts the binary (its ENTRYPOINT).
const IMAGE_ENTRYPOINT: &str = "/usr/local/bin/accessgate";
const POD: &str = "accessgate-7d9f-abcde";

fn helm_bin() -> &'static str {
    built_tool("tests/controlplane/build-helm.sh")
}

fn render(values: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "accessgate",
        CHART,
        "--namespace",
        NS,
        "--kube-version",
        "1.36.0",
    ];
    for v in values {
        args.extend_from_slice(&["--set", v]);
    }
    let out = Command::new(helm_bin()).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple::<Value>(&String::from_utf8(out.stdout).unwrap())
        .unwrap()
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// The process a kubelet would start for `container`, sandboxed.
fn run_container(
    container: &Value,
    pod_security: &Value,
    sa_dir: &std::path::Path,
    api_port: &str,
) -> Child {
    let sc = |k: &str| {
        container["securityContext"][k]
            .as_i64()
            .or(pod_security[k].as_i64())
    };
    let (uid, gid) = (
        sc("runAsUser").expect("runAsUser"),
        sc("runAsGroup").expect("runAsGroup"),
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let mut argv: Vec<String> = match container["command"].as_array() {
        Some(cmd) => cmd.iter().map(|c| c.as_str().unwrap().to_owned()).collect(),
        None => vec![IMAGE_ENTRYPOINT.to_owned()],
    };
    argv.extend(
        container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().unwrap().to_owned()),
    );
    let mut cmd = Command::new("bwrap");
    cmd.args([
        "--unshare-user",
        "--unshare-pid",
        "--die-with-parent",
        "--new-session",
    ])
    .args(["--uid", &uid.to_string(), "--gid", &gid.to_string()])
    // Read-only root; the runtime's own mounts; nothing writable but what the pod mounts.
    .args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"])
    // The image's binary at its path, read-only.
    .args(["--tmpfs", "/usr/local/bin", "--ro-bind"])
    .arg(BIN)
    .arg(IMAGE_ENTRYPOINT)
    .args(["--remount-ro", "/usr/local/bin"])
    // The projected ServiceAccount volume (/var/run is /run), read-only.
    .args(["--tmpfs", "/run", "--ro-bind"])
    .arg(sa_dir)
    .arg("/run/secrets/kubernetes.io/serviceaccount")
    .args(["--remount-ro", "/run", "--clearenv"]);
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        cmd.args(["--tmpfs", m["mountPath"].as_str().unwrap()]);
    }
    let mut env = vec![
        ("KUBERNETES_SERVICE_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("KUBERNETES_SERVICE_PORT".to_owned(), api_port.to_owned()),
        ("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned()),
    ];
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_owned();
        let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => POD.to_owned(),
            Some("metadata.namespace") => NS.to_owned(),
            Some(other) => panic!("fieldRef {other} not resolved by this test"),
            None => e["value"].as_str().unwrap_or_default().to_owned(),
        };
        env.push((name, value));
    }
    for (k, v) in &env {
        cmd.args(["--setenv", k, v]);
    }
    cmd.args(&argv)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bwrap (Debian package bubblewrap; tests/run.sh installs it)")
}

/// The probe's URL on loopback, resolving a named port to the container's number.
fn probe_url(container: &Value, probe: &str) -> String {
    let get = &container[probe]["httpGet"];
    let port = match &get["port"] {
        Value::String(name) => container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name.as_str())
            .unwrap()["containerPort"]
            .as_u64()
            .unwrap(),
        n => n.as_u64().unwrap(),
    };
    format!("http://127.0.0.1:{port}{}", get["path"].as_str().unwrap())
}

/// The PID (host view) of the process started from the image's entrypoint inside `sandbox`.
fn inner_pid(sandbox: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let is_ours = cmdline.starts_with(IMAGE_ENTRYPOINT.as_bytes());
        // A descendant of the sandbox: walk the parent chain.
        let mut parent = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))?
            .trim()
            .parse::<u32>()
            .ok()?;
        for _ in 0..4 {
            if parent == sandbox {
                return is_ours.then_some(pid);
            }
            let s = std::fs::read_to_string(format!("/proc/{parent}/status")).ok()?;
            parent = s
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))?
                .trim()
                .parse()
                .ok()?;
        }
        None
    })
}

#[test]
fn the_rendered_pod_runs_in_cluster_becomes_ready_and_releases_its_lease_on_sigterm() {
    let _slot = crate::own_cluster_slot();
    let cp = ControlPlane::start();
    let issuer = Issuer::start();
    let objects = render(&[
        "replicaCount=1",
        "fetch.allowCidrs={127.0.0.0/8}",
        "statusInterval=1s",
    ]);
    // Everything but the CRD (the control plane installed it) and the Deployment itself.
    cp.kubectl_ok(&["create", "namespace", NS]);
    for o in &objects {
        if !matches!(
            o["kind"].as_str(),
            Some("CustomResourceDefinition" | "Deployment")
        ) {
            cp.apply(&o.to_string())
                .unwrap_or_else(|e| panic!("apply {}: {e}", o["kind"]));
        }
    }
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let sa = pod["serviceAccountName"].as_str().unwrap();

    // What the kubelet projects into the pod.
    let sa_dir = tempfile::tempdir().unwrap();
    let token = cp.kubectl_ok(&["create", "token", sa, "-n", NS, "--duration=1h"]);
    std::fs::write(sa_dir.path().join("token"), token.trim()).unwrap();
    std::fs::copy(
        &cp.env["ACCESSGATE_CP_CA_CERT"],
        sa_dir.path().join("ca.crt"),
    )
    .unwrap();
    std::fs::write(sa_dir.path().join("namespace"), NS).unwrap();

    let mut sandbox = run_container(
        container,
        &pod["securityContext"],
        sa_dir.path(),
        &cp.env["ACCESSGATE_CP_APISERVER_PORT"],
    );
    let live = probe_url(container, "livenessProbe");
    let ready = probe_url(container, "readinessProbe");
    let ok = |url: &str| http().get(url).send().is_ok_and(|r| r.status() == 200);
    let probed = eventually(Duration::from_secs(60), || {
        ok(&live) && ok(&ready) || sandbox.try_wait().is_ok_and(|s| s.is_some())
    });
    if !(probed && ok(&ready)) {
        let mut stderr = String::new();
        if let Some(mut e) = sandbox.stderr.take() {
            let _ = sandbox.kill();
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        panic!("probes never passed ({:?}):\n{stderr}", sandbox.try_wait());
    }

    // In-cluster config and the chart's RBAC: it watches, and as leader writes status.
    cp.kubectl_ok(&["create", "namespace", "apps"]);
    let policy = json!({"apiVersion": "accessgate.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": "web", "namespace": "apps"},
        "spec": {"issuer": {"url": issuer.url, "jwksUri": issuer.certs_url()}, "audiences": [AUD]}});
    cp.apply(&policy.to_string()).unwrap();
    let enforced = eventually(Duration::from_secs(60), || {
        let obj = cp.get_json(&["accesspolicy", "web", "-n", "apps"]);
        obj["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["reason"] == "Enforced")
        })
    });
    assert!(enforced, "the sandboxed pod never wrote status");
    let lease_name = format!(
        "{}-leader",
        deployment["metadata"]["name"].as_str().unwrap()
    );
    let holder = || {
        cp.get_json(&["lease", &lease_name, "-n", NS])["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        holder(),
        POD,
        "the pod's name (from the downward API) holds the Lease"
    );

    // Rollout: SIGTERM to the container's process, as the kubelet sends it after preStop.
    let pid = inner_pid(sandbox.id()).expect("the container's process");
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let mut status = None;
    let exited = eventually(Duration::from_secs(90), || {
        status = sandbox.try_wait().unwrap();
        status.is_some()
    });
    let mut stderr = String::new();
    if let Some(mut e) = sandbox.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(exited, "still running after SIGTERM");
    assert!(status.unwrap().success(), "exit {status:?}\n{stderr}");
    assert!(stderr.contains("lease released"), "{stderr}");
    assert_eq!(
        holder(),
        "",
        "the Lease still names a holder after shutdown"
    );
}
