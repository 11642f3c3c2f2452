//! Real Traefik v3 (built from the Go module proxy by `tests/traefik/build.sh`) with the
//! `forwardAuth` middleware in front of an upstream, as its docs describe for external auth
//! services: a file provider with one router, one service and one middleware.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::stack::ProxyProcess;
use super::{Listening, eventually, http, start_on_free_port, wait_listening};

pub struct Traefik {
    pub process: ProxyProcess,
}

/// The traefik binary (`tests/traefik/build.sh`; a no-op when cached).
fn traefik_binary() -> &'static str {
    super::built_tool("tests/traefik/build.sh")
}

/// A YAML double-quoted scalar (JSON strings are valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

impl Traefik {
    /// `host` routed to the upstream at `upstream_port` through `forwardAuth` to `auth_address`
    /// (a full URL, e.g. `http://127.0.0.1:PORT/forward/apps/web`), copying
    /// `auth_response_headers` from the auth answer to the upstream request.
    pub fn start(
        host: &str,
        auth_address: &str,
        auth_response_headers: &[&str],
        upstream_port: u16,
    ) -> Traefik {
        start_on_free_port("traefik", |port| {
            Self::start_on(
                port,
                host,
                auth_address,
                auth_response_headers,
                upstream_port,
            )
        })
    }

    /// Starts Traefik on `port`; `None` when another process had taken the port.
    fn start_on(
        port: u16,
        host: &str,
        auth_address: &str,
        auth_response_headers: &[&str],
        upstream_port: u16,
    ) -> Option<Traefik> {
        let dir = tempfile::tempdir().unwrap();
        let dynamic = dir.path().join("dynamic.yaml");
        let static_config = [
            "global: { checkNewVersion: false, sendAnonymousUsage: false }".to_owned(),
            "log: { level: DEBUG, noColor: true }".to_owned(),
            format!(
                "entryPoints: {{ web: {{ address: {} }} }}",
                q(&format!("127.0.0.1:{port}"))
            ),
            format!(
                "providers: {{ file: {{ filename: {}, watch: false }} }}",
                q(dynamic.to_str().unwrap())
            ),
        ]
        .join("\n");
        let mut dynamic_config = vec![
            "http:".to_owned(),
            "  routers:".to_owned(),
            "    app:".to_owned(),
            format!("      rule: {}", q(&format!("Host(`{host}`)"))),
            "      entryPoints: [web]".to_owned(),
            "      middlewares: [accessgate]".to_owned(),
            "      service: upstream".to_owned(),
            "  middlewares:".to_owned(),
            "    accessgate:".to_owned(),
            "      forwardAuth:".to_owned(),
            format!("        address: {}", q(auth_address)),
            "        trustForwardHeader: false".to_owned(),
            "        authResponseHeaders:".to_owned(),
        ];
        dynamic_config.extend(
            auth_response_headers
                .iter()
                .map(|h| format!("          - {}", q(h))),
        );
        dynamic_config.extend([
            "  services:".to_owned(),
            "    upstream:".to_owned(),
            "      loadBalancer:".to_owned(),
            "        servers:".to_owned(),
            format!(
                "          - url: {}",
                q(&format!("http://127.0.0.1:{upstream_port}"))
            ),
        ]);
        let dynamic_config = dynamic_config.join("\n") + "\n";
        std::fs::write(&dynamic, dynamic_config).unwrap();
        let config = dir.path().join("traefik.yaml");
        std::fs::write(&config, static_config).unwrap();
        let log = std::fs::File::create(dir.path().join("traefik.log")).unwrap();
        let mut child = Command::new(traefik_binary())
            .arg(format!("--configFile={}", config.display()))
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start traefik");
        let log_path = dir.path().join("traefik.log");
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Listening::PortTaken =
            wait_listening("traefik", &mut child, port, Duration::from_secs(30), log)
        {
            return None;
        }
        let mut traefik = Traefik {
            process: ProxyProcess {
                child,
                port,
                dir,
                log_file: "traefik.log",
            },
        };
        // The file provider loads asynchronously: until the router exists Traefik answers
        // 404 for every host. Any other answer (the auth service's 401 for a request without
        // a token) means the request went through the router and the middleware.
        let mut exited = None;
        let routed = eventually(Duration::from_secs(30), || {
            if let Ok(Some(status)) = traefik.process.child.try_wait() {
                exited = Some(status);
                return true;
            }
            match http()
                .get(format!("http://127.0.0.1:{port}/"))
                .header("host", format!("{host}:{port}"))
                .timeout(Duration::from_secs(2))
                .send()
            {
                Ok(resp) => !matches!(resp.status().as_u16(), 404 | 502),
                Err(_) => false,
            }
        });
        if let Some(status) = exited {
            panic!("traefik exited ({status}):\n{}", traefik.process.log());
        }
        if !routed {
            let _ = traefik.process.child.kill();
            panic!(
                "traefik did not route {host} on port {port} within 30s:\n{}",
                traefik.process.log()
            );
        }
        Some(traefik)
    }
}
