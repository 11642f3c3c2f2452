//! Real Caddy (Debian's package) with `forward_auth` in front of an upstream, as its docs
//! describe for external auth services.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::stack::{ProxyProcess, installed};
use super::{Listening, start_on_free_port, wait_listening};

pub struct Caddy {
    pub process: ProxyProcess,
}

impl Caddy {
    /// `host` protected by `forward_auth` to `auth` (`127.0.0.1:PORT`) at `uri`, copying
    /// `copy_headers` to the upstream at `upstream_port`.
    pub fn start(
        host: &str,
        auth: &str,
        uri: &str,
        copy_headers: &[&str],
        upstream_port: u16,
    ) -> Caddy {
        // As examples/Caddyfile: client copies of the mapped headers are stripped first.
        let strip: String = copy_headers
            .iter()
            .map(|h| format!("\t\trequest_header -{h}\n"))
            .collect();
        start_on_free_port("caddy", |port| {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path().display();
            let caddyfile = format!(
                "{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {d}/data\n}}\n\n\
                 http://{host}:{port} {{\n\tbind 127.0.0.1\n\troute {{\n{strip}\t\tforward_auth {auth} {{\n\t\t\turi {uri}\n\t\t\tcopy_headers {}\n\t\t}}\n\t\treverse_proxy 127.0.0.1:{upstream_port}\n\t}}\n}}\n",
                copy_headers.join(" ")
            );
            std::fs::write(dir.path().join("Caddyfile"), caddyfile).unwrap();
            let log_path = dir.path().join("caddy.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let binary = installed(&["/usr/bin/caddy", "/usr/local/bin/caddy"], "caddy");
            let mut child = Command::new(binary)
                .args(["run", "--adapter", "caddyfile", "--config"])
                .arg(dir.path().join("Caddyfile"))
                .env("HOME", dir.path())
                .env("XDG_DATA_HOME", dir.path().join("data"))
                .env("XDG_CONFIG_HOME", dir.path().join("config"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start caddy");
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            match wait_listening("caddy", &mut child, port, Duration::from_secs(20), log) {
                Listening::Yes => Some(Caddy {
                    process: ProxyProcess {
                        child,
                        port,
                        dir,
                        log_file: "caddy.log",
                    },
                }),
                Listening::PortTaken => None,
            }
        })
    }
}
