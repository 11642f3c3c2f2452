//! Shared harness for the integration tests: real `accessgate` processes (dev issuer and
//! auth server) on loopback ports chosen by the OS, talked to over real HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
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
        pump_err(child.stderr.take().unwrap(), tx, log.clone());
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
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pump(
    out: ChildStdout,
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

fn pump_err(
    out: ChildStderr,
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

/// `accessgate dev-issuer` on a free port.
pub struct Issuer {
    pub proc: Proc,
    pub url: String,
}

impl Issuer {
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

    pub fn write_policy(&self, file: &str, body: &str) {
        // Write then rename, as kubectl/ConfigMap updates do, so no half file is read.
        let tmp: PathBuf = self.dir.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, self.dir.path().join(file)).unwrap();
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

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

pub mod caddy;
pub mod cluster;
pub mod echo;
pub mod nginx;
pub mod traefik;
