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

/// An install beside the default one, named as a second chart release would be: its own
/// `--class` and its own Lease, host ledger and Service (which its `authUrl`s name).
#[allow(dead_code)] // only the multi-install tests start one
pub struct Install {
    pub class: String,
    pub lease: String,
    pub ledger: String,
    pub service: String,
}

#[allow(dead_code)]
impl Install {
    pub fn of_class(class: &str) -> Install {
        Install {
            class: class.to_owned(),
            lease: format!("{class}-leader"),
            ledger: format!("{class}-hosts"),
            service: format!("accessgate-{class}"),
        }
    }

    fn args(&self) -> [&str; 8] {
        [
            "--class",
            &self.class,
            "--lease-name",
            &self.lease,
            "--host-ledger",
            &self.ledger,
            "--service-name",
            &self.service,
        ]
    }
}

impl Replica {
    /// [`Replica::start`] as a replica of `install`.
    #[allow(dead_code)]
    pub fn start_install(
        kubeconfig: &Path,
        identity: &str,
        install: &Install,
        extra_args: &[&str],
    ) -> Replica {
        let mut args = install.args().to_vec();
        args.extend_from_slice(extra_args);
        Replica::start(kubeconfig, identity, &args)
    }

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
        self.answer(path, token).0
    }

    /// The status and reason code (`x-accessgate-reason`, empty on an allow) `/auth/...`
    /// answers for `token`: a 503 says little, `policy_unknown` and `keys_unavailable` are
    /// different failures. `(0, "")` when the request fails.
    pub fn answer(&self, path: &str, token: &str) -> (u16, String) {
        let Ok(r) = http()
            .get(format!("{}{path}", self.auth))
            .header("x-original-url", "https://app.example.test/")
            .header("cf-access-jwt-assertion", token)
            .send()
        else {
            return (0, String::new());
        };
        let reason = r
            .headers()
            .get("x-accessgate-reason")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (r.status().as_u16(), reason)
    }

    /// The admin listener's `/metrics` text (empty when the request fails).
    #[allow(dead_code)] // not every test binary reads metrics
    pub fn metrics(&self) -> String {
        http()
            .get(format!("{}/metrics", self.admin))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default()
    }
}
