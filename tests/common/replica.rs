//! `accessgate run` as a replica against the test control plane: every address on loopback
//! (so the fetch guard allows 127.0.0.0/8 only), status written every second.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::{Proc, eventually, http};

pub const SYSTEM_NS: &str = "accessgate-system";

pub struct Replica {
    pub proc: Proc,
    pub auth: String,
    pub admin: String,
}

impl Replica {
    /// Starts a replica as the ServiceAccount in `kubeconfig` and waits until it is ready.
    pub fn start(kubeconfig: &Path, identity: &str, extra_args: &[&str]) -> Replica {
        let mut args = vec![
            "run",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--pod-namespace",
            SYSTEM_NS,
            "--identity",
            identity,
            "--lease-duration",
            "6s",
            "--status-interval",
            "1s",
            "--allow-fetch-cidr",
            "127.0.0.0/8",
        ];
        args.extend_from_slice(extra_args);
        let proc = Proc::spawn_env(&args, &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
        let line = proc.wait_line("\"listening\"", Duration::from_secs(30));
        let v: Value = serde_json::from_str(&line).unwrap();
        let r = Replica {
            auth: format!("http://{}", v["auth"].as_str().unwrap()),
            admin: format!("http://{}", v["admin"].as_str().unwrap()),
            proc,
        };
        let ready = eventually(Duration::from_secs(30), || {
            http()
                .get(format!("{}/readyz", r.admin))
                .send()
                .is_ok_and(|x| x.status() == 200)
        });
        assert!(
            ready,
            "replica {identity} never became ready:\n{}",
            r.proc.output()
        );
        r
    }

    /// The status `/auth/...` answers for `token` (0 when the request fails).
    pub fn status(&self, path: &str, token: &str) -> u16 {
        http()
            .get(format!("{}{path}", self.auth))
            .header("x-original-url", "https://app.example.test/")
            .header("cf-access-jwt-assertion", token)
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }
}
