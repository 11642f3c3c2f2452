//! Real nginx configured as ingress-nginx v1.15 generates it for `auth-url` +
//! `auth-response-headers` (see shared/research/ingress-nginx-equivalent.conf): an internal
//! auth location doing a body-less GET subrequest with the X-Original-* headers, and
//! `auth_request_set` + `proxy_set_header` per response header.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::stack::installed;
use super::{Listening, http, start_on_free_port, wait_listening};

/// One Ingress: a host whose `/` is protected by `auth_url`.
pub struct Site {
    pub host: String,
    /// Full auth URL, e.g. `http://127.0.0.1:PORT/auth/apps/web` (IP literal: no resolver),
    /// or [`STATIC_ALLOW`] for an auth location that answers 200 itself (the ceiling).
    pub auth_url: String,
    pub response_headers: Vec<String>,
}

/// `auth_url` value for an auth location that allows everything without a subrequest
/// leaving nginx: the best any auth service could do.
pub const STATIC_ALLOW: &str = "static";

pub struct Nginx {
    child: Child,
    pub port: u16,
    pub prefix: tempfile::TempDir,
}

impl Nginx {
    pub fn start(sites: &[Site], upstream_port: u16) -> Nginx {
        Self::start_with(|prefix, port| config(prefix, port, sites, upstream_port, false))
    }

    /// As ingress-nginx renders it with the `auth-keepalive` annotation: the auth subrequests
    /// reuse connections from an upstream pool instead of opening one each.
    pub fn start_keepalive(sites: &[Site], upstream_port: u16) -> Nginx {
        Self::start_with(|prefix, port| config(prefix, port, sites, upstream_port, true))
    }

    /// nginx answering `return 200` on every request: the floor of any HTTP answer.
    pub fn start_return_200() -> Nginx {
        Self::start_with(|prefix, port| {
            let p = prefix.display();
            format!(
                "daemon off;\nmaster_process off;\npid {p}/run/nginx.pid;\nevents {{ worker_connections 1024; }}\nhttp {{\n    access_log off;\n    client_body_temp_path {p}/run/body; proxy_temp_path {p}/run/proxy;\n    fastcgi_temp_path {p}/run/fcgi; uwsgi_temp_path {p}/run/uwsgi; scgi_temp_path {p}/run/scgi;\n    server {{ listen 127.0.0.1:{port}; location / {{ return 200; }} }}\n}}\n"
            )
        })
    }

    /// nginx as production runs it (a master and a worker, so it can reload), serving `host`
    /// with auth subrequests for `auth_path` to `pool`, the `127.0.0.1:PORT` endpoints of the
    /// accessgate Service that ingress-nginx's `auth-url` names (keepalive, as with
    /// `auth-keepalive`). A subrequest an endpoint fails is failed, not retried on another
    /// (`proxy_next_upstream off`), as with the Service's one address. [`Nginx::set_pool`]
    /// is an endpoint leaving or joining the Service.
    pub fn start_pool(host: &str, auth_path: &str, pool: &[String], upstream_port: u16) -> Nginx {
        Self::start_with(|prefix, port| {
            pool_config(prefix, port, host, auth_path, pool, upstream_port)
        })
    }

    /// Rewrites the pool of a [`Nginx::start_pool`] nginx and reloads it (SIGHUP); returns
    /// once the old worker has finished what it had and exited, so every subrequest from
    /// then on goes to `pool`.
    #[track_caller]
    pub fn set_pool(&self, host: &str, auth_path: &str, pool: &[String], upstream_port: u16) {
        let exited = || self.error_log().matches("exited with code").count();
        let before = exited();
        let conf = pool_config(
            self.prefix.path(),
            self.port,
            host,
            auth_path,
            pool,
            upstream_port,
        );
        std::fs::write(self.prefix.path().join("nginx.conf"), conf).unwrap();
        self.signal(libc::SIGHUP);
        assert!(
            super::eventually(Duration::from_secs(30), || exited() > before),
            "nginx did not reload:\n{}",
            self.error_log()
        );
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// Renders the config for a port and starts nginx on it; a port another process took
    /// first is given up for a new one (see [`start_on_free_port`]).
    fn start_with(render: impl Fn(&Path, u16) -> String) -> Nginx {
        start_on_free_port("nginx", |port| {
            let prefix = tempfile::tempdir().unwrap();
            for d in ["logs", "run"] {
                std::fs::create_dir_all(prefix.path().join(d)).unwrap();
            }
            let conf = render(prefix.path(), port);
            let conf_path = prefix.path().join("nginx.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let p = prefix.path().to_str().unwrap();
            // nginx reports start-up errors (a taken port among them) in the error log.
            let binary = installed(&["/usr/sbin/nginx", "/usr/bin/nginx"], "nginx");
            let mut child = Command::new(binary)
                .args([
                    "-p",
                    p,
                    "-e",
                    &format!("{p}/logs/error.log"),
                    "-c",
                    conf_path.to_str().unwrap(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nginx");
            let error_log = prefix.path().join("logs/error.log");
            let log = || std::fs::read_to_string(&error_log).unwrap_or_default();
            match wait_listening("nginx", &mut child, port, Duration::from_secs(20), log) {
                Listening::Yes => Some(Nginx {
                    child,
                    port,
                    prefix,
                }),
                Listening::PortTaken => None,
            }
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// A request to `host` through nginx.
    pub fn get(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::blocking::Response {
        let mut req = http().get(self.url(path)).header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().expect("request through nginx")
    }

    /// Sends `request_target` with `host` byte for byte (no client library normalising
    /// either), `Connection: close`; returns the status code.
    pub fn raw_get(&self, request_target: &str, host: &str, headers: &[(&str, &str)]) -> u16 {
        use std::io::{Read, Write};
        let mut req =
            format!("GET {request_target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        conn.write_all(req.as_bytes()).unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).unwrap();
        let text = String::from_utf8_lossy(&answer);
        text.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"))
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM first: a master stops its workers, which a SIGKILL would leave running.
        self.signal(libc::SIGTERM);
        let stopped = super::eventually(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The config of [`Nginx::start_pool`]: the auth location of [`config`] reduced to what the
/// pool needs, the master's reload events logged (`notice`).
fn pool_config(
    prefix: &Path,
    port: u16,
    host: &str,
    auth_path: &str,
    pool: &[String],
    upstream_port: u16,
) -> String {
    let p = prefix.display();
    let servers: String = pool
        .iter()
        .map(|endpoint| format!("server {endpoint} max_fails=0; "))
        .collect();
    // Workers run as the master's user: as root, nginx would otherwise switch to `nobody`,
    // which cannot reach the temporary prefix.
    // SAFETY: geteuid(2) has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root root;"
    } else {
        ""
    };
    format!(
        r#"daemon off; master_process on; worker_processes 1; {user}
pid {p}/run/nginx.pid;
error_log {p}/logs/error.log notice;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {p}/run/body; proxy_temp_path {p}/run/proxy;
    fastcgi_temp_path {p}/run/fcgi; uwsgi_temp_path {p}/run/uwsgi; scgi_temp_path {p}/run/scgi;
    access_log off;
    upstream accessgate {{ {servers}keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        server_name {host};
        location = /_external-auth {{
            internal;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream off;
            proxy_pass http://accessgate{auth_path};
        }}
        location / {{
            auth_request /_external-auth;
            proxy_pass http://127.0.0.1:{upstream_port};
        }}
    }}
}}
"#
    )
}

fn config(prefix: &Path, port: u16, sites: &[Site], upstream_port: u16, keepalive: bool) -> String {
    let p = prefix.display();
    let mut servers = String::new();
    let mut upstreams = String::new();
    for (n, site) in sites.iter().enumerate() {
        let mut auth_set = String::new();
        for (i, name) in site.response_headers.iter().enumerate() {
            let var = name.to_ascii_lowercase().replace('-', "_");
            writeln!(
                auth_set,
                "            auth_request_set    $authHeader{i} $upstream_http_{var};"
            )
            .unwrap();
            writeln!(
                auth_set,
                "            proxy_set_header    '{name}' $authHeader{i};"
            )
            .unwrap();
        }
        write!(
            servers,
            r#"
    server {{
        listen 127.0.0.1:{port};
        server_name {host};

        location = /_external-auth-Lw-Prefix {{
            internal;
            access_log off;
            proxy_intercept_errors      off;
            proxy_pass_request_body     off;
            proxy_set_header            Content-Length          "";
            proxy_set_header            X-Forwarded-Proto       "";
            proxy_set_header            X-Request-ID            $req_id;
            proxy_set_header            Host                    127.0.0.1;
            proxy_set_header            X-Original-URL          $scheme://$http_host$request_uri;
            proxy_set_header            X-Original-Method       $request_method;
            proxy_set_header            X-Sent-From             "nginx-ingress-controller";
            proxy_set_header            X-Real-IP               $remote_addr;
            proxy_set_header            X-Forwarded-For         $remote_addr;
            proxy_set_header            X-Auth-Request-Redirect $request_uri;
            proxy_buffering             off;
            proxy_buffer_size           4k;
            proxy_buffers               4 4k;
            proxy_request_buffering     on;
            proxy_ssl_server_name       on;
            proxy_pass_request_headers  on;
            client_max_body_size        1m;
            proxy_http_version          1.1;
{auth_target}
        }}

        location / {{
            set $pass_access_scheme $scheme;
            set $best_http_host     $http_host;
            set $pass_port          $server_port;

            auth_request        /_external-auth-Lw-Prefix;
            auth_request_set    $auth_cookie $upstream_http_set_cookie;
            add_header          Set-Cookie $auth_cookie;
{auth_set}
            client_max_body_size      1m;
            proxy_set_header Host                     $best_http_host;
            proxy_set_header Upgrade                  $http_upgrade;
            proxy_set_header Connection               $connection_upgrade;
            proxy_set_header X-Request-ID             $req_id;
            proxy_set_header X-Real-IP                $remote_addr;
            proxy_set_header X-Forwarded-For          $remote_addr;
            proxy_set_header X-Forwarded-Host         $best_http_host;
            proxy_set_header X-Forwarded-Port         $pass_port;
            proxy_set_header X-Forwarded-Proto        $pass_access_scheme;
            proxy_set_header X-Forwarded-Scheme       $pass_access_scheme;
            proxy_set_header X-Scheme                 $pass_access_scheme;
            proxy_set_header X-Original-Forwarded-For $http_x_forwarded_for;
            proxy_set_header Proxy                    "";
            proxy_buffering off;
            proxy_http_version 1.1;
            proxy_pass http://127.0.0.1:{upstream_port};
        }}
    }}
"#,
            host = site.host,
            auth_target = if site.auth_url == STATIC_ALLOW {
                "            return 200;".to_owned()
            } else if keepalive {
                let rest = site.auth_url.strip_prefix("http://").expect("http auth url");
                let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                writeln!(upstreams, "    upstream auth_{n} {{ server {authority}; keepalive 32; }}").unwrap();
                format!(
                    "            proxy_set_header Connection \"\";\n            proxy_pass http://auth_{n}{path};"
                )
            } else {
                format!(
                    "            set $target \"{}\";\n            proxy_pass $target;",
                    site.auth_url
                )
            },
        )
        .unwrap();
    }
    format!(
        r#"# ingress-nginx v1.15 equivalent (auth-url + auth-response-headers), for tests.
daemon off;
master_process off;
pid {p}/run/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {p}/run/body;  proxy_temp_path {p}/run/proxy;
    fastcgi_temp_path {p}/run/fcgi;  uwsgi_temp_path {p}/run/uwsgi;  scgi_temp_path {p}/run/scgi;
    access_log {p}/logs/access.log;

    underscores_in_headers off;
    ignore_invalid_headers on;
    map $http_x_request_id $req_id {{ default $http_x_request_id; "" $request_id; }}
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
{upstreams}{servers}}}
"#
    )
}
