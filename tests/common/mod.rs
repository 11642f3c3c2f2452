//! Shared harness for the integration tests: real `accessgate` processes (dev issuer and
//! auth server) on loopback ports chosen by the OS, talked to over real HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_accessgate");
pub const AUD: &str = "4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2";

/// A child process killed on drop, with its output lines available to wait on.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Proc {
        Self::spawn_env(args, &[])
    }

    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .env("ACCESSGATE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn accessgate");
        let (tx, rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        pump(child.stdout.take().unwrap(), tx.clone(), log.clone());
        pump(child.stderr.take().unwrap(), tx, log.clone());
        Proc {
            child,
            lines: rx,
            log,
        }
    }

    /// The first output line (stdout or stderr) containing `needle`.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line containing {needle:?} within {timeout:?}; output so far:\n{}",
                    self.output()
                ),
            }
        }
    }

    pub fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// How many output lines so far contain `needle` (to wait for the next one with
    /// [`eventually`] without consuming lines another wait expects).
    pub fn count_lines(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (what the kubelet sends) and waits up to `timeout` for the process to
    /// exit; its exit status, or `None` if it is still running.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.signal("TERM");
        self.wait_exit(timeout)
    }

    /// Sends the signal `name` (`TERM`, `INT`, ...) without waiting.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
    }

    /// Waits up to `timeout` for the process to exit: its exit status, or `None` if it is
    /// still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        eventually(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies a child's output (stdout or stderr) line by line into its log and channel.
fn pump(
    out: impl std::io::Read + Send + 'static,
    tx: mpsc::Sender<String>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            log.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
}

/// `accessgate demo` with every listener on a free port.
pub fn spawn_demo() -> Proc {
    Proc::spawn(&[
        "demo",
        "--issuer-listen",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
}

/// `accessgate dev-issuer` on a free port.
pub struct Issuer {
    pub proc: Proc,
    pub url: String,
}

impl Issuer {
    /// What the issuer's get-identity endpoint answers from now on (`POST /identity`).
    pub fn set_identity(&self, cfg: Value) {
        let r = http()
            .post(format!("{}/identity", self.url))
            .json(&cfg)
            .send()
            .unwrap();
        assert!(r.status().is_success());
    }

    pub fn start() -> Issuer {
        let proc = Proc::spawn(&[
            "dev-issuer",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ]);
        let line = proc.wait_line("dev issuer on ", Duration::from_secs(20));
        let url = line
            .split_whitespace()
            .nth(3)
            .expect("url in banner")
            .to_owned();
        Issuer { proc, url }
    }

    pub fn certs_url(&self) -> String {
        format!("{}/cdn-cgi/access/certs", self.url)
    }

    /// Mints a token; `req` is the dev issuer's MintRequest JSON.
    pub fn mint(&self, req: Value) -> String {
        let resp = http()
            .post(format!("{}/mint", self.url))
            .json(&req)
            .send()
            .expect("mint");
        assert!(
            resp.status().is_success(),
            "mint failed: {}",
            resp.text().unwrap_or_default()
        );
        resp.text().unwrap()
    }

    /// A normal app token for [`AUD`] plus `extra` MintRequest fields.
    pub fn token(&self, extra: Value) -> String {
        let mut req = json!({"aud": [AUD], "email": "alice@example.com"});
        req.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        self.mint(req)
    }

    pub fn sign_raw(&self, header: &str, payload: &str) -> String {
        let resp = http()
            .post(format!("{}/sign", self.url))
            .json(&json!({"header": header, "payload": payload}))
            .send()
            .expect("sign");
        assert!(resp.status().is_success());
        resp.text().unwrap()
    }

    pub fn rotate(&self) -> String {
        let v: Value = http()
            .post(format!("{}/rotate", self.url))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["kid"].as_str().unwrap().to_owned()
    }

    pub fn certs_mode(&self, mode: &str) {
        let resp = http()
            .post(format!("{}/certs-mode", self.url))
            .json(&json!({"mode": mode}))
            .send()
            .unwrap();
        assert!(resp.status().is_success());
    }

    pub fn certs(&self) -> Value {
        http().get(self.certs_url()).send().unwrap().json().unwrap()
    }

    /// Requests its certs endpoint has answered so far (each is one key fetch by a client).
    pub fn certs_calls(&self) -> u64 {
        let v: Value = http()
            .get(format!("{}/certs-calls", self.url))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["calls"].as_u64().unwrap()
    }
}

/// A policy YAML for the dev issuer at `issuer_url`; `extra` is appended to `spec`
/// (indented by the caller's two spaces).
pub fn policy_yaml(namespace: &str, name: &str, issuer_url: &str, extra: &str) -> String {
    format!(
        "apiVersion: accessgate.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{ name: {name}, namespace: {namespace} }}\nspec:\n  issuer:\n    url: {issuer_url}\n    jwksUri: {issuer_url}/cdn-cgi/access/certs\n  audiences: [\"{AUD}\"]\n{extra}"
    )
}

/// `accessgate serve` on free ports with a policy directory.
pub struct Server {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub auth: String,
    pub admin: String,
}

impl Server {
    pub fn start(files: &[(&str, &str)], extra_args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        Self::start_in(dir, extra_args)
    }

    pub fn start_in(dir: tempfile::TempDir, extra_args: &[&str]) -> Server {
        Self::start_in_env(dir, extra_args, &[])
    }

    pub fn start_in_env(
        dir: tempfile::TempDir,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let dir_arg = dir.path().to_str().unwrap().to_owned();
        let mut args = vec![
            "serve",
            "--policies",
            &dir_arg,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra_args);
        let proc = Proc::spawn_env(&args, env);
        let line = proc.wait_line("\"listening\"", Duration::from_secs(20));
        let v: Value = serde_json::from_str(&line).expect("json log line");
        let auth = format!("http://{}", v["auth"].as_str().unwrap());
        let admin = format!("http://{}", v["admin"].as_str().unwrap());
        Server {
            proc,
            dir,
            auth,
            admin,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces `file` in the policy directory in one step: written next to the directory,
    /// then renamed into it (as ConfigMap updates swap files), so the watcher sees one
    /// change and never a half-written file.
    pub fn write_policy(&self, file: &str, body: &str) {
        let outside = self.dir.path().parent().expect("policy dir has a parent");
        let mut tmp = tempfile::NamedTempFile::new_in(outside).unwrap();
        std::io::Write::write_all(&mut tmp, body.as_bytes()).unwrap();
        tmp.persist(self.dir.path().join(file)).unwrap();
    }

    /// Policy directory reloads the server has finished so far, good or bad: its log lines
    /// "policies reloaded" and "policy reload failed", written once the new set is in force
    /// (the reload counter in `/metrics` moves just before the set is swapped in).
    pub fn reloads(&self) -> usize {
        self.proc.count_lines("policies reloaded") + self.proc.count_lines("policy reload failed")
    }

    /// Runs `change` on the policy directory and returns once the server has finished
    /// reloading it, however long that takes on a loaded machine (30 s at most); returns
    /// how long it took.
    #[track_caller]
    pub fn reload_after(&self, change: impl FnOnce(&Path)) -> Duration {
        let before = self.reloads();
        let started = Instant::now();
        change(self.path());
        assert!(
            eventually(Duration::from_secs(30), || self.reloads() > before),
            "no policy reload within 30 s of the change:\n{}",
            self.proc.output()
        );
        started.elapsed()
    }

    /// [`Server::write_policy`], then waits for the reload it causes.
    #[track_caller]
    pub fn replace_policy(&self, file: &str, body: &str) -> Duration {
        self.reload_after(|_| self.write_policy(file, body))
    }

    /// GET {auth}{path} with X-Original-URL and the given extra headers.
    pub fn auth(&self, path: &str, original_url: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = http()
            .get(format!("{}{}", self.auth, path))
            .header("x-original-url", original_url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Answer::from(req.send().expect("auth request"))
    }

    pub fn with_token(&self, path: &str, token: &str) -> Answer {
        self.auth(
            path,
            "https://app.example.test/",
            &[("cf-access-jwt-assertion", token)],
        )
    }

    pub fn metrics(&self) -> String {
        http()
            .get(format!("{}/metrics", self.admin))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// The sum of the samples of metric `name` (an OpenMetrics family name, e.g.
    /// `accessgate_key_fetches_total`) whose labels include every `labels` pair.
    pub fn metric_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics(), name, labels)
    }

    pub fn is_healthy(&self) -> bool {
        http()
            .get(format!("{}/healthz", self.admin))
            .send()
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    }
}

/// An auth response, reduced to what tests assert on.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    fn from(resp: reqwest::blocking::Response) -> Answer {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().unwrap_or_default();
        Answer {
            status,
            headers,
            body,
        }
    }

    pub fn reason(&self) -> &str {
        self.headers
            .get("x-accessgate-reason")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a deny with exactly this status and reason, and the contract's headers.
    #[track_caller]
    pub fn assert_deny(&self, status: u16, reason: &str) {
        assert_eq!(
            (self.status, self.reason()),
            (status, reason),
            "body: {}",
            self.body
        );
        assert_eq!(self.header("cache-control"), Some("no-store"));
        if status == 401 {
            assert_eq!(
                self.header("www-authenticate"),
                Some("Bearer realm=\"accessgate\"")
            );
        }
    }

    #[track_caller]
    pub fn assert_allow(&self) {
        assert_eq!(
            self.status,
            200,
            "reason {} body {}",
            self.reason(),
            self.body
        );
        assert_eq!(self.body, "");
        assert_eq!(self.header("cache-control"), Some("no-store"));
    }
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// The sum of the samples of metric `name` in an OpenMetrics text whose labels include every
/// `labels` pair (0 when there are none).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (family, label_set) = series.split_once('{').unwrap_or((series, ""));
            family == name
                && labels
                    .iter()
                    .all(|(k, v)| label_set.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| value.parse::<f64>().expect("metric value"))
        .sum()
}

/// Polls `f` until it returns true or `timeout` passes. The pause between polls is the one
/// sleep tests need: it waits for a condition, it does not stand in for one.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25)); // between polls, not instead of one
    }
    f()
}

/// A loopback address nothing listens on, for as long as this value lives: a TCP socket
/// bound there without listening (and without `SO_REUSEADDR`), so connecting is refused and
/// no other process can take the port meanwhile, as it could a port merely found free.
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    pub addr: std::net::SocketAddr,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("tcp socket");
        socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
        let addr = socket.local_addr().unwrap();
        ClosedPort {
            _socket: socket,
            addr,
        }
    }
}

/// How a child process that was given a port to listen on got on.
pub enum Listening {
    /// The child itself holds a listening socket on the port.
    Yes,
    /// Another process bound the port first (the child said "address already in use").
    PortTaken,
}

/// Starts a child that must be told which port to listen on (nginx, Caddy, Traefik cannot
/// pick one and report it): picks a free port and calls `start`; when `start` reports the
/// port taken, because another process bound it between the pick and the child's own bind,
/// tries again with a new port, five times at most.
pub fn start_on_free_port<T>(what: &str, mut start: impl FnMut(u16) -> Option<T>) -> T {
    let mut taken = Vec::new();
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if let Some(started) = start(port) {
            return started;
        }
        eprintln!("{what}: port {port} was taken before it could bind it; trying another");
        taken.push(port);
    }
    panic!("{what}: every port tried was taken before it could bind it: {taken:?}")
}

/// Waits (up to `timeout`) until `child` itself listens on 127.0.0.1:`port`, or reports the
/// port taken ("address already in use" in `log()`), or exits; panics with `log()` on exit
/// or timeout. A connect alone would not tell the child from a process that took the port.
pub fn wait_listening(
    what: &str,
    child: &mut Child,
    port: u16,
    timeout: Duration,
    log: impl Fn() -> String,
) -> Listening {
    let taken = |log: &str| log.to_ascii_lowercase().contains("address already in use");
    let mut exited = None;
    let mut outcome = None;
    let done = eventually(timeout, || {
        if listens(child.id(), port) {
            outcome = Some(Listening::Yes);
        } else if taken(&log()) {
            outcome = Some(Listening::PortTaken);
        } else if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
        }
        outcome.is_some() || exited.is_some()
    });
    match outcome {
        Some(Listening::PortTaken) => {
            let _ = child.kill();
            let _ = child.wait();
            Listening::PortTaken
        }
        Some(Listening::Yes) => Listening::Yes,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let why = match exited {
                Some(status) => format!("exited ({status})"),
                None if done => "stopped".to_owned(),
                None => format!("was not listening on port {port} within {timeout:?}"),
            };
            panic!("{what} {why}:\n{}", log())
        }
    }
}

/// Whether process `pid` holds a TCP socket listening on 127.0.0.1:`port` (from
/// /proc/net/tcp and the process's file descriptors).
pub fn listens(pid: u32, port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // sl local_address rem_address st ... inode; st 0A is LISTEN.
            (f.len() > 9 && f[1] == want && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
}

/// `GET path` through a proxy listening on loopback `port`, as a client of `host` would send
/// it (`Host: host:port`), with `headers`.
pub fn get_through(
    client: &reqwest::blocking::Client,
    port: u16,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::blocking::Response {
    let mut req = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("host", format!("{host}:{port}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send()
        .unwrap_or_else(|e| panic!("request through the proxy on {port}: {e}"))
}

/// The binary a build script under `tests/` produces (the last line of its stdout): a Go
/// tool built from the module proxy and cached under ~/.cache/accessgate, so a no-op when
/// the cached binary exists. Built once per test process.
pub fn built_tool(script: &'static str) -> &'static str {
    static BUILT: std::sync::Mutex<Vec<(&'static str, &'static str)>> =
        std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    if let Some((_, path)) = built.iter().find(|(s, _)| *s == script) {
        return path;
    }
    let full = format!("{}/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(&full)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {full}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(
        Path::new(&path).is_file(),
        "{script} did not print a binary path (got {path:?}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path: &'static str = Box::leak(path.into_boxed_str());
    built.push((script, path));
    path
}

pub mod caddy;
pub mod cluster;
pub mod echo;
pub mod nginx;
pub mod node;
pub mod replica;
pub mod slow_api;
pub mod stack;
pub mod traefik;
pub mod traefik_nginx;
