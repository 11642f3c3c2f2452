//! Rollouts that drop nothing: real nginx (auth subrequests to an upstream of two accessgate
//! instances, as a Service with two endpoints) under steady load while each instance in turn
//! is sent SIGTERM and started again, several times. No client may see anything but 200.
//!
//! On SIGTERM an instance turns `/readyz` 503 at once, keeps answering for its drain period,
//! then stops accepting, answers what is in flight and exits 0.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::echo::Echo;
use common::*;
use serde_json::json;

/// A free loopback port; an instance restarts on the same one.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Instance {
    proc: Proc,
    auth: u16,
    admin: u16,
}

fn start_instance(dir: &std::path::Path, auth: u16, admin: u16) -> Instance {
    // A port just released may still be taken by another test's process for a moment:
    // retry the start rather than race.
    for attempt in 0..20 {
        let proc = Proc::spawn(&[
            "serve",
            "--policies",
            dir.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{auth}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
            "--drain-period",
            "1s",
            "--shutdown-grace",
            "10s",
        ]);
        let ready = eventually(Duration::from_secs(20), || {
            http()
                .get(format!("http://127.0.0.1:{admin}/readyz"))
                .send()
                .is_ok_and(|r| r.status() == 200)
                || proc.output().contains("cannot listen")
        });
        if ready && !proc.output().contains("cannot listen") {
            return Instance { proc, auth, admin };
        }
        eprintln!("start attempt {attempt} failed:\n{}", proc.output());
        std::thread::sleep(Duration::from_millis(200)); // backing off a port clash
    }
    panic!("instance on {auth} never started");
}

fn nginx(upstreams: &[u16], echo_port: u16) -> (Child, u16, tempfile::TempDir) {
    let prefix = tempfile::tempdir().unwrap();
    for d in ["logs", "run"] {
        std::fs::create_dir_all(prefix.path().join(d)).unwrap();
    }
    let p = prefix.path().display();
    let port = free_port();
    let servers: String = upstreams
        .iter()
        .map(|u| format!("server 127.0.0.1:{u} max_fails=0;"))
        .collect();
    // As ingress-nginx renders auth-url with auth-keepalive, to a Service with two endpoints.
    let conf = format!(
        r#"daemon off; master_process off; pid {p}/run/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {p}/run/b; proxy_temp_path {p}/run/p; fastcgi_temp_path {p}/run/f;
    uwsgi_temp_path {p}/run/u; scgi_temp_path {p}/run/s; access_log off;
    upstream accessgate {{ {servers} keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        server_name app.example.test;
        location = /_external-auth {{
            internal;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://accessgate/auth/apps/web;
        }}
        location / {{
            auth_request /_external-auth;
            proxy_pass http://127.0.0.1:{echo_port};
        }}
    }}
}}
"#
    );
    std::fs::write(prefix.path().join("nginx.conf"), conf).unwrap();
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|b| std::path::Path::new(b).exists())
        .expect("nginx is installed by tests/run.sh");
    let child = Command::new(bin)
        .args(["-p", &p.to_string(), "-e", &format!("{p}/logs/error.log")])
        .arg("-c")
        .arg(prefix.path().join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    (child, port, prefix)
}

#[test]
fn rolling_restarts_behind_nginx_drop_no_request() {
    let issuer = Issuer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web.yaml"),
        policy_yaml("apps", "web", &issuer.url, ""),
    )
    .unwrap();
    let ports = [(free_port(), free_port()), (free_port(), free_port())];
    let mut instances: Vec<Instance> = ports
        .iter()
        .map(|(a, b)| start_instance(dir.path(), *a, *b))
        .collect();
    let echo = Echo::start();
    let (mut nginx, port, _prefix) = nginx(&[ports[0].0, ports[1].0], echo.port());
    let token = issuer.token(json!({}));

    // Steady load: 4 clients, each sending one request after another.
    let stop = Arc::new(AtomicBool::new(false));
    let (total, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, total, bad, token) =
                (stop.clone(), total.clone(), bad.clone(), token.clone());
            std::thread::spawn(move || {
                let client = http();
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let status = client
                        .get(format!("http://127.0.0.1:{port}/page"))
                        .header("host", "app.example.test")
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
    let mut restarts = 0;
    for _round in 0..3 {
        for instance in instances.iter_mut() {
            let (auth, admin) = (instance.auth, instance.admin);
            instance.proc.signal("TERM");
            // Not ready at once, while still answering (the drain period is 1 s).
            let unready = eventually(Duration::from_secs(5), || {
                http()
                    .get(format!("http://127.0.0.1:{admin}/readyz"))
                    .send()
                    .is_ok_and(|r| r.status() == 503)
            });
            assert!(unready, "/readyz did not turn 503 after SIGTERM");
            // One SIGTERM, as the kubelet sends: a second would cut the drain short.
            let status = instance.proc.wait_exit(Duration::from_secs(30));
            assert!(
                status.is_some_and(|s| s.success()),
                "instance did not exit 0 after SIGTERM: {status:?}\n{}",
                instance.proc.output()
            );
            *instance = start_instance(dir.path(), auth, admin);
            restarts += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let statuses: Vec<u16> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let _ = nginx.kill();
    let _ = nginx.wait();
    let (total, bad) = (total.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    eprintln!(
        "zero-drop rollout: {total} requests through nginx in {:?}, {restarts} SIGTERM+restart cycles, {bad} non-2xx",
        started.elapsed()
    );
    assert!(total > 100, "the load never ran: {total} requests");
    assert_eq!(
        bad, 0,
        "clients saw non-200 answers during the rollout: {statuses:?}"
    );
}
