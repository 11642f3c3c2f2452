//! The hostile-input corpus: requests built to trick the auth endpoint, sent to a live
//! `accessgate serve` with tokens signed by the real dev issuer.
//!
//! One file per category (`jose_header`, `token_structure`, `claims`, `claim_headers`,
//! `transport`, `request_dialect`). Each is one `#[test]` that starts ONE dev issuer and ONE
//! server (the policies are in [`Ctx::start`]), runs every case of its table against them, checks
//! the server survived (process running, `/healthz` 200, no panic in its output) and fails once,
//! listing every mismatching case. `self_test` checks the harness itself.
//!
//! A case is one row: a name, a request (by default `GET /auth/apps/web` with
//! `X-Original-URL: https://app.example.test/`; [`Case::tok`] adds a token in
//! `Cf-Access-Jwt-Assertion`) and what the contract (docs/reference.md, "The auth contract")
//! says comes back:
//! - [`deny`]`(status, reason)`: exactly that status, `X-Accessgate-Reason` and body `reason\n`,
//!   `Cache-Control: no-store`, `WWW-Authenticate` on a 401, no identity headers;
//! - [`allow`]`()` / [`allow_with`]`(headers)`: 200, empty body, no reason, `no-store`, each
//!   listed header exactly once with exactly these bytes, or absent;
//! - [`Expect::Refused`]: the HTTP layer refused it before accessgate decided anything: the
//!   connection closed or reset without an answer, or a 4xx WITHOUT `X-Accessgate-Reason`. An
//!   answer with a reason is accessgate's own decision (expect it with `deny`); a hang is a
//!   failure.
//!
//! Whatever the expectation, no answer may carry a control character, U+2028/U+2029 or non-UTF-8
//! bytes in a header value (answers are parsed byte-exactly), and neither an answer nor the
//! server's log may contain a token the request sent, in any source (header, cookie, bearer, raw
//! bytes): any 23 consecutive characters of one of its segments count as an echo.
//!
//! Adding a case: add a row to the table of its kind in the category's file; names are unique
//! within a category and are what a failure prints, so grep for them. If you believe accessgate
//! contradicts the design on it, keep the expectation the design demands and mark the row
//! `.suspected_bug("why")`: it still fails, labelled as such.

// Shared with the other test crates, which format it: `rustfmt tests/hostile/main.rs` must
// not rewrite files this crate does not own.
#[rustfmt::skip]
#[path = "../common/mod.rs"]
mod common;

mod claim_headers;
mod claims;
mod jose_header;
mod request_dialect;
mod self_test;
mod token_structure;
mod transport;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

const NAMED: &str = "/auth/apps/web";
const ORIGINAL: &str = "https://app.example.test/";
const MAX_TOKEN_BYTES: usize = 16 * 1024;
const MAX_VALUE_BYTES: usize = 3072;

// ---------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------

/// What a case must get back.
#[derive(Clone, Debug)]
enum Expect {
    /// Exactly this status and reason code, plus the contract's deny headers.
    Deny(u16, &'static str),
    /// Exactly 200, empty body; each listed header must be absent (`None`) or present exactly
    /// once with exactly these bytes.
    Allow(Vec<(&'static str, Option<Vec<u8>>)>),
    /// Refused by the HTTP layer before accessgate decides: the connection closed or reset
    /// without an answer, or a 4xx answer without `X-Accessgate-Reason`.
    Refused,
}

fn deny(status: u16, reason: &'static str) -> Expect {
    Expect::Deny(status, reason)
}

fn allow() -> Expect {
    Expect::Allow(vec![])
}

/// Allow with header expectations: `Some(text)` present with exactly these bytes, `None` absent.
fn allow_with(checks: &[(&'static str, Option<&str>)]) -> Expect {
    Expect::Allow(
        checks
            .iter()
            .map(|(h, v)| (*h, v.map(|s| s.as_bytes().to_vec())))
            .collect(),
    )
}

enum Req {
    Http {
        method: &'static str,
        path: String,
        original_url: Option<Vec<u8>>,
        headers: Vec<(String, Vec<u8>)>,
    },
    /// Bytes written as-is on a fresh connection (for what an HTTP client refuses to send).
    Raw(Vec<u8>),
}

struct Case {
    name: String,
    req: Req,
    expect: Expect,
    /// Set when the server is believed to contradict the design on this case.
    bug: Option<&'static str>,
}

impl Case {
    /// GET `/auth/apps/web` with `X-Original-URL: https://app.example.test/` and no token.
    fn new(name: impl Into<String>, expect: Expect) -> Case {
        Case {
            name: name.into(),
            req: Req::Http {
                method: "GET",
                path: NAMED.into(),
                original_url: Some(ORIGINAL.as_bytes().to_vec()),
                headers: vec![],
            },
            expect,
            bug: None,
        }
    }

    /// A token in `Cf-Access-Jwt-Assertion`.
    fn tok(name: impl Into<String>, token: impl AsRef<str>, expect: Expect) -> Case {
        Case::new(name, expect).token(token.as_ref())
    }

    fn raw(name: impl Into<String>, bytes: Vec<u8>, expect: Expect) -> Case {
        Case {
            name: name.into(),
            req: Req::Raw(bytes),
            expect,
            bug: None,
        }
    }

    /// One more `Cf-Access-Jwt-Assertion` header.
    fn token(self, token: &str) -> Case {
        self.header("cf-access-jwt-assertion", token)
    }

    /// One more `Cookie` header.
    fn cookie(self, value: impl AsRef<[u8]>) -> Case {
        self.header("cookie", value)
    }

    /// One more `Authorization` header.
    fn authorization(self, value: impl AsRef<[u8]>) -> Case {
        self.header("authorization", value)
    }

    fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Case {
        if let Req::Http { headers, .. } = &mut self.req {
            headers.push((name.to_owned(), value.as_ref().to_vec()));
        }
        self
    }

    fn url(mut self, url: impl AsRef<[u8]>) -> Case {
        if let Req::Http { original_url, .. } = &mut self.req {
            *original_url = Some(url.as_ref().to_vec());
        }
        self
    }

    fn no_url(mut self) -> Case {
        if let Req::Http { original_url, .. } = &mut self.req {
            *original_url = None;
        }
        self
    }

    fn path(mut self, p: impl Into<String>) -> Case {
        if let Req::Http { path, .. } = &mut self.req {
            *path = p.into();
        }
        self
    }

    fn method(mut self, m: &'static str) -> Case {
        if let Req::Http { method, .. } = &mut self.req {
            *method = m;
        }
        self
    }

    #[allow(dead_code)] // no case is flagged today; kept for the next one
    fn suspected_bug(mut self, note: &'static str) -> Case {
        self.bug = Some(note);
        self
    }

    /// The credential header values this request sends, in any source and any spelling of
    /// the header name (for raw requests, read from the raw lines).
    fn credentials(&self) -> Vec<Vec<u8>> {
        let headers: Vec<(Vec<u8>, Vec<u8>)> = match &self.req {
            Req::Http { headers, .. } => headers
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
                .collect(),
            Req::Raw(bytes) => bytes
                .split(|b| *b == b'\n')
                .filter_map(|line| {
                    let colon = line.iter().position(|b| *b == b':')?;
                    Some((
                        line[..colon].trim_ascii().to_vec(),
                        line[colon + 1..].to_vec(),
                    ))
                })
                .collect(),
        };
        let mut out = Vec::new();
        for (name, value) in headers {
            if name.eq_ignore_ascii_case(b"cf-access-jwt-assertion")
                || name.eq_ignore_ascii_case(b"authorization")
            {
                out.push(value);
            } else if name.eq_ignore_ascii_case(b"cookie") {
                for pair in value.split(|b| *b == b';') {
                    if let Some(eq) = pair.iter().position(|b| *b == b'=') {
                        out.push(pair[eq + 1..].to_vec());
                    }
                }
            }
        }
        out
    }
}

/// The length of one piece of a token looked for in answers and logs.
const NEEDLE: usize = 16;

/// What "contains the token" means: any 16-character window, at every 8th offset, of any
/// base64url run of 16+ characters in a credential (so any echoed stretch of 23 characters of
/// a segment is caught). Runs of one repeated character (`aaaa…`) are filler, not secrets.
fn token_needles(case: &Case) -> HashSet<Vec<u8>> {
    const W: usize = NEEDLE;
    let mut needles = HashSet::new();
    for value in case.credentials() {
        let runs = value.split(|b| !(b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'));
        for run in runs.filter(|r| r.len() >= W && r.iter().any(|b| *b != r[0])) {
            let mut starts: Vec<usize> = (0..=run.len() - W).step_by(W / 2).collect();
            starts.push(run.len() - W);
            for s in starts {
                needles.insert(run[s..s + W].to_vec());
            }
        }
    }
    needles
}

/// Whether any needle occurs in `hay`.
fn contains_any(hay: &[u8], needles: &HashSet<Vec<u8>>) -> bool {
    !needles.is_empty() && hay.windows(NEEDLE).any(|w| needles.contains(w))
}

/// The names of the cases whose token occurs in `log` (one pass over the log).
fn logged_tokens<'a>(log: &[u8], cases: &'a [Case]) -> Vec<&'a str> {
    let per_case: Vec<HashSet<Vec<u8>>> = cases.iter().map(token_needles).collect();
    let all: HashSet<&[u8]> = per_case.iter().flatten().map(Vec::as_slice).collect();
    let found: HashSet<&[u8]> = log.windows(NEEDLE).filter(|w| all.contains(w)).collect();
    cases
        .iter()
        .zip(&per_case)
        .filter(|(_, needles)| needles.iter().any(|n| found.contains(n.as_slice())))
        .map(|(c, _)| c.name.as_str())
        .collect()
}

// ---------------------------------------------------------------------------------------
// One issuer + one server per test function
// ---------------------------------------------------------------------------------------

struct Ctx {
    issuer: Issuer,
    server: Server,
    kid: String,
    now: i64,
    client: reqwest::blocking::Client,
}

/// The header mapping the claim-header cases assert on.
const WEB_EXTRA: &str = concat!(
    "  hosts: [app.example.test]\n",
    "  claimHeaders:\n",
    "    - { header: X-Auth-Request-Email, claim: email }\n",
    "    - { header: X-Auth-Request-User, claim: sub }\n",
    "    - { header: X-Auth-Request-Name, claim: name }\n",
    "    - { header: X-Auth-Request-Groups, claim: custom.groups, join: \",\" }\n",
    "    - { header: X-Auth-Request-Meta, claim: custom.meta, format: json }\n",
    "    - { header: X-Auth-Request-Level, claim: level }\n",
);

impl Ctx {
    fn start() -> Ctx {
        let issuer = Issuer::start();
        let policy = |name: &str, extra: &str| policy_yaml("apps", name, &issuer.url, extra);
        #[rustfmt::skip]
        let files = [
            // The default policy: routed host, the claim headers above.
            ("web.yaml", policy("web", WEB_EXTRA)),
            ("multi.yaml", policy("multi", "  algorithms: [RS256, PS256, ES256]\n")),
            ("bearer.yaml", policy("bearer", "  tokenSources: [bearer]\n")),
            // Email rules (the dev issuer is a generic `url:` issuer, so email_verified counts).
            ("allow-domain.yaml", policy("allow-domain", "  rules:\n    allow:\n      - { emailDomain: kube.io }\n")),
            ("allow-email.yaml", policy("allow-email", "  rules:\n    allow:\n      - { email: alice@example.com }\n")),
            ("deny-domain.yaml", policy("deny-domain", "  rules:\n    deny:\n      - { emailDomain: kube.io }\n")),
            // /admin on the routed host admits only group admins (the valid token has none).
            ("guard.yaml", policy("guard", "  hosts: [app.example.test]\n  paths: [/admin]\n  rules:\n    allow:\n      - { group: admins }\n")),
            // Two policies claiming one host: that route is policy_invalid, by name each works.
            ("c1.yaml", policy("c1", "  hosts: [conflict.example.test]\n")),
            ("c2.yaml", policy("c2", "  hosts: [conflict.example.test]\n")),
        ];
        let files: Vec<(&str, &str)> = files.iter().map(|(n, b)| (*n, b.as_str())).collect();
        let server = Server::start(&files, &[]);
        let certs = issuer.certs();
        let keys = certs["keys"].as_array().expect("keys array");
        assert_eq!(keys.len(), 1, "no rotation yet: exactly one key: {certs}");
        let kid = keys[0]["kid"].as_str().unwrap().to_owned();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        Ctx {
            issuer,
            server,
            kid,
            now,
            client: http(),
        }
    }

    /// An otherwise-valid claim set.
    fn claims(&self) -> Map<String, Value> {
        let v = json!({
            "iss": self.issuer.url,
            "aud": [AUD],
            "exp": self.now + 3600,
            "iat": self.now,
            "type": "app",
            "email": "alice@example.com",
            "sub": "user-1",
        });
        v.as_object().unwrap().clone()
    }

    /// The valid claims with `patch` merged over them (a `null` in `patch` stays `null`).
    fn payload(&self, patch: Value) -> Value {
        let mut c = self.claims();
        c.extend(patch.as_object().cloned().unwrap_or_default());
        Value::Object(c)
    }

    /// The valid claims without `names`.
    fn payload_without(&self, names: &[&str]) -> Value {
        let mut c = self.claims();
        for n in names {
            c.remove(*n);
        }
        Value::Object(c)
    }

    fn jose(&self) -> Value {
        json!({"alg": "RS256", "kid": self.kid, "typ": "JWT"})
    }

    /// The standard header with `patch` merged over it.
    fn jose_with(&self, patch: Value) -> Value {
        let mut h = self.jose().as_object().unwrap().clone();
        h.extend(patch.as_object().cloned().unwrap_or_default());
        Value::Object(h)
    }

    /// Signed by the issuer's current key (RS256), whatever the texts say.
    /// The dev issuer's `POST /sign` (as `Issuer::sign_raw`), over one reused client.
    fn sign(&self, header: &str, payload: &str) -> String {
        let resp = self
            .client
            .post(format!("{}/sign", self.issuer.url))
            .json(&json!({"header": header, "payload": payload}))
            .send()
            .expect("sign");
        assert!(resp.status().is_success(), "sign failed");
        resp.text().unwrap()
    }

    fn signed(&self, header: &Value, payload: &Value) -> String {
        self.sign(&header.to_string(), &payload.to_string())
    }

    fn valid(&self) -> String {
        self.signed(&self.jose(), &Value::Object(self.claims()))
    }

    fn with_claims(&self, patch: Value) -> String {
        self.signed(&self.jose(), &self.payload(patch))
    }

    fn without_claims(&self, names: &[&str]) -> String {
        self.signed(&self.jose(), &self.payload_without(names))
    }

    fn with_header(&self, patch: Value) -> String {
        self.signed(&self.jose_with(patch), &Value::Object(self.claims()))
    }

    /// Signed with the standard header over this payload text.
    fn with_payload_text(&self, payload: &str) -> String {
        self.sign(&self.jose().to_string(), payload)
    }

    /// The valid claims' JSON text with `extra` members appended (for duplicate keys).
    fn raw_payload(&self, extra: &str) -> String {
        let base = Value::Object(self.claims()).to_string();
        format!("{},{extra}}}", &base[..base.len() - 1])
    }

    /// The standard header's JSON text with `extra` members appended.
    fn raw_header(&self, extra: &str) -> String {
        let base = self.jose().to_string();
        format!("{},{extra}}}", &base[..base.len() - 1])
    }
}

// ---------------------------------------------------------------------------------------
// Sending a case and reading the answer byte-exactly
// ---------------------------------------------------------------------------------------

/// An answer as it came off the wire: header names lower-cased, values as raw bytes (without
/// the optional whitespace around them), the body as raw bytes.
struct Reply {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// What is wrong with the framing itself (bare CR or LF, folded lines, bad lengths).
    framing: Vec<String>,
}

impl Reply {
    /// Every value of `name` (lower case), in order.
    fn all(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        self.all(name).first().copied()
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// How an exchange ended.
enum Outcome {
    Answered(Reply),
    /// The connection was closed or reset without any answer: a transport-level refusal.
    Closed(String),
    /// Anything else: no connection, a timeout (a hang is not a refusal), an unreadable answer.
    Failed(String),
}

/// Sends `req` to the auth listener at `base` (`http://host:port`).
fn send(client: &reqwest::blocking::Client, base: &str, req: &Req) -> Outcome {
    match req {
        Req::Http {
            method,
            path,
            original_url,
            headers,
        } => {
            let map = match header_map(original_url.as_deref(), headers) {
                Ok(map) => map,
                Err(e) => return Outcome::Failed(format!("bad test header: {e}")),
            };
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let resp = match client
                .request(method, format!("{base}{path}"))
                .headers(map)
                .send()
            {
                Ok(resp) => resp,
                Err(e) => return classify(&e),
            };
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect();
            match resp.bytes() {
                Ok(body) => Outcome::Answered(Reply {
                    status,
                    headers,
                    body: body.to_vec(),
                    framing: vec![],
                }),
                Err(e) => Outcome::Failed(format!("reading the body: {}", chain(&e))),
            }
        }
        Req::Raw(bytes) => raw_exchange(base, bytes, RAW_TIMEOUT),
    }
}

/// The request headers as reqwest sends them: `X-Original-URL` first, then the case's, in order.
fn header_map(
    original_url: Option<&[u8]>,
    headers: &[(String, Vec<u8>)],
) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    if let Some(u) = original_url {
        let v = HeaderValue::from_bytes(u).map_err(|e| e.to_string())?;
        map.append("x-original-url", v);
    }
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?,
            HeaderValue::from_bytes(v).map_err(|e| e.to_string())?,
        );
    }
    Ok(map)
}

/// An error and all its sources, on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

fn is_closed_kind(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
    )
}

/// A client error is a refusal only if the server closed or reset the connection.
fn classify(e: &reqwest::Error) -> Outcome {
    let text = chain(e);
    if e.is_timeout() {
        return Outcome::Failed(format!(
            "no answer in time (a hang is not a refusal): {text}"
        ));
    }
    if e.is_connect() || e.is_builder() {
        return Outcome::Failed(format!("request not sent: {text}"));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && is_closed_kind(io.kind())
        {
            return Outcome::Closed(text);
        }
        source = s.source();
    }
    // hyper's own words for a connection closed before any answer.
    if text.contains("connection closed before message completed") {
        return Outcome::Closed(text);
    }
    Outcome::Failed(format!("transport: {text}"))
}

/// How long a raw exchange waits for the server to finish answering and close.
const RAW_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes `bytes` on a new connection (`Connection: close` is the case's job) and reads the
/// answer until the server closes.
fn raw_exchange(base: &str, bytes: &[u8], timeout: Duration) -> Outcome {
    let addr = base.trim_start_matches("http://");
    let mut s = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("connect: {e}")),
    };
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    // A server may answer and close while we still write: read whatever it said anyway.
    let wrote = s.write_all(bytes);
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let ended = loop {
        match s.read(&mut chunk) {
            Ok(0) => break None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Some(e),
        }
    };
    let wrote = match wrote {
        Ok(()) => "request written".to_owned(),
        Err(e) => format!("writing the request: {e}"),
    };
    match ended {
        Some(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Outcome::Failed(format!(
                "no end of answer within {timeout:?} (a hang is not a refusal); {wrote}; received {:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            ))
        }
        Some(e) if buf.is_empty() && is_closed_kind(e.kind()) => {
            Outcome::Closed(format!("{wrote}; reading: {e}"))
        }
        Some(e) if !is_closed_kind(e.kind()) => Outcome::Failed(format!("{wrote}; reading: {e}")),
        None if buf.is_empty() => Outcome::Closed(format!("{wrote}; closed without an answer")),
        // Closed after (part of) an answer: parse it; a truncated one says so.
        _ => match parse_reply(&buf) {
            Ok(reply) => Outcome::Answered(reply),
            Err(e) => Outcome::Failed(format!("{e}: {:?}", String::from_utf8_lossy(&buf))),
        },
    }
}

/// Parses one HTTP/1.1 answer byte-exactly. Hard errors (no status line, no end of head)
/// are `Err`; everything a lenient client would paper over is listed in `framing`.
fn parse_reply(buf: &[u8]) -> Result<Reply, String> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("answer without the CRLF CRLF ending its head")?;
    let (head, rest) = (&buf[..end], &buf[end + 4..]);
    let mut framing = Vec::new();
    let mut lines = split_crlf(head).into_iter();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix(b"HTTP/1.0 "))
        .and_then(|l| l.get(..3))
        .and_then(|c| std::str::from_utf8(c).ok()?.parse::<u16>().ok())
        .ok_or_else(|| format!("unparsable status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let shown = String::from_utf8_lossy(line);
        if line.iter().any(|b| *b == b'\r' || *b == b'\n') {
            framing.push(format!("bare CR or LF inside the answer's head: {shown:?}"));
        }
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            framing.push(format!("folded (continuation) header line: {shown:?}"));
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            framing.push(format!("header line without a colon: {shown:?}"));
            continue;
        };
        let name = &line[..colon];
        let is_token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
        if name.is_empty() || !name.iter().all(is_token) {
            framing.push(format!("header name is not a token: {shown:?}"));
            continue;
        }
        let value = line[colon + 1..].trim_ascii_start();
        let trailing = value
            .iter()
            .rev()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count();
        let value = &value[..value.len() - trailing];
        headers.push((
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            value.to_vec(),
        ));
    }
    let mut reply = Reply {
        status,
        headers,
        body: vec![],
        framing,
    };
    let lengths = reply.all("content-length");
    let chunked = reply
        .all("transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case(b"chunked"));
    reply.body = if chunked {
        dechunk(rest).map_err(|e| format!("bad chunked body ({e})"))?
    } else if let [len] = lengths.as_slice() {
        let len: usize = std::str::from_utf8(len)
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| format!("bad Content-Length {len:?}"))?;
        if rest.len() < len {
            return Err(format!("body shorter than Content-Length {len}"));
        }
        if rest.len() > len {
            reply.framing.push(format!(
                "{} bytes after the answer's body",
                rest.len() - len
            ));
        }
        rest[..len].to_vec()
    } else {
        if lengths.len() > 1 {
            reply.framing.push("Content-Length given twice".into());
        }
        rest.to_vec()
    };
    Ok(reply)
}

/// The lines of a head, split at CRLF only (a bare CR or LF stays inside its line).
fn split_crlf(head: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < head.len() {
        if &head[i..i + 2] == b"\r\n" {
            lines.push(&head[start..i]);
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    lines.push(&head[start..]);
    lines
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("no chunk size line")?;
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or("bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------
// Checking an answer against the contract
// ---------------------------------------------------------------------------------------

fn show(v: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(v))
}

/// Everything the contract says about one answer; `Err` lists what is wrong.
fn check(case: &Case, got: Outcome) -> Result<(), String> {
    let a = match (got, &case.expect) {
        (Outcome::Closed(_), Expect::Refused) => return Ok(()),
        (Outcome::Closed(how), _) => return Err(format!("closed without an answer: {how}")),
        (Outcome::Failed(why), _) => return Err(why),
        (Outcome::Answered(a), _) => a,
    };
    let mut problems = a.framing.clone();
    let reasons = a.all("x-accessgate-reason");
    let body = String::from_utf8_lossy(&a.body);
    match &case.expect {
        Expect::Refused => {
            if let Some(reason) = reasons.first() {
                problems.push(format!(
                    "expected a refusal by the HTTP layer, but accessgate decided: {} {} \
                     (expect that with deny(...))",
                    a.status,
                    show(reason)
                ));
            } else if !(400..500).contains(&a.status) {
                problems.push(format!(
                    "expected a refusal by the HTTP layer (closed, or a 4xx without a reason), \
                     got {} (body {body:?})",
                    a.status
                ));
            }
        }
        Expect::Deny(status, want) => {
            let reason = a.text("x-accessgate-reason").unwrap_or("");
            if (a.status, reason) != (*status, *want) {
                problems.push(format!(
                    "expected {status} {want}, got {} {reason:?} (body {body:?})",
                    a.status
                ));
            } else {
                if a.body != format!("{want}\n").as_bytes() {
                    problems.push(format!("deny body {body:?}"));
                }
                if *status == 401
                    && a.text("www-authenticate") != Some("Bearer realm=\"accessgate\"")
                {
                    problems.push("401 without WWW-Authenticate".into());
                }
            }
            if reasons.len() > 1 {
                problems.push(format!("{} X-Accessgate-Reason headers", reasons.len()));
            }
            if a.text("cache-control") != Some("no-store") {
                problems.push("no Cache-Control: no-store".into());
            }
            let leaked: Vec<&str> = a
                .headers
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| k.starts_with("x-auth-request-"))
                .collect();
            if !leaked.is_empty() {
                problems.push(format!("identity headers on a deny: {leaked:?}"));
            }
        }
        Expect::Allow(checks) => {
            if a.status != 200 {
                let reason = reasons.first().map(|r| show(r)).unwrap_or_default();
                problems.push(format!(
                    "expected 200, got {} {reason} (body {body:?})",
                    a.status
                ));
            } else {
                if !a.body.is_empty() {
                    problems.push(format!("allow body {body:?}"));
                }
                if !reasons.is_empty() {
                    problems.push(format!("allow carries a reason {}", show(reasons[0])));
                }
                if a.text("cache-control") != Some("no-store") {
                    problems.push("no Cache-Control: no-store".into());
                }
                for (name, want) in checks {
                    let got = a.all(name);
                    let ok = match want {
                        None => got.is_empty(),
                        Some(w) => got == [w.as_slice()],
                    };
                    if !ok {
                        let got: Vec<String> = got.iter().map(|v| show(v)).collect();
                        problems.push(format!(
                            "header {name}: expected {}, got {}",
                            want.as_deref().map(show).unwrap_or("<absent>".into()),
                            if got.is_empty() {
                                "<absent>".into()
                            } else {
                                got.join(" and ")
                            }
                        ));
                    }
                }
                let mut seen = HashSet::new();
                for (k, _) in &a.headers {
                    if k.starts_with("x-auth-request-") && !seen.insert(k.as_str()) {
                        problems.push(format!("identity header {k} more than once"));
                    }
                }
            }
        }
    }
    // No answer ever carries a control character, a Unicode line or paragraph separator or
    // bytes that are not UTF-8 in a header value, or any part of a token the request sent.
    for (k, v) in &a.headers {
        let text = std::str::from_utf8(v);
        if v.iter().any(|b| *b < 0x20 || *b == 0x7f)
            || text.is_ok_and(|t| {
                t.chars()
                    .any(|c| c.is_control() || "\u{2028}\u{2029}".contains(c))
            })
        {
            problems.push(format!(
                "control character in response header {k}: {}",
                show(v)
            ));
        }
        if text.is_err() {
            problems.push(format!("response header {k} is not UTF-8: {}", show(v)));
        }
    }
    let needles = token_needles(case);
    if contains_any(&a.body, &needles) {
        problems.push("the token is echoed in the body".into());
    }
    for (k, v) in &a.headers {
        if contains_any(v, &needles) {
            problems.push(format!("the token is echoed in response header {k}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Runs every case, then `post` (extra checks on the live server), then checks the server
/// survived and never logged a token, then fails once listing every mismatch.
fn run(category: &str, mut ctx: Ctx, cases: Vec<Case>, post: impl FnOnce(&Ctx) -> Vec<String>) {
    let mut names = HashSet::new();
    for c in &cases {
        assert!(
            names.insert(c.name.clone()),
            "duplicate case name {}",
            c.name
        );
    }
    let started = std::time::Instant::now();
    let client = http();
    let mut failures = Vec::new();
    let mut flagged = 0;
    for case in &cases {
        let got = send(&client, &ctx.server.auth, &case.req);
        if let Err(why) = check(case, got) {
            let note = case
                .bug
                .map(|b| format!("\n      (marked SUSPECTED BUG: {b})"))
                .unwrap_or_default();
            failures.push(format!("  - {}: {why}{note}", case.name));
        }
        if case.bug.is_some() {
            flagged += 1;
        }
    }
    let post_problems = post(&ctx);
    let running = ctx.server.proc.is_running();
    let healthy = ctx.server.is_healthy();
    // Everything the server logged for this table is in once a last, marked request's deny
    // line is (logs are written in order).
    let marker = format!("hostile-end-of-{category}");
    let _ = ctx
        .client
        .get(format!("{}/auth/apps/nope", ctx.server.auth))
        .header("x-original-url", ORIGINAL)
        .header("x-request-id", &marker)
        .send();
    assert!(
        eventually(Duration::from_secs(20), || ctx
            .server
            .proc
            .output()
            .contains(&marker)),
        "the server never logged the end marker"
    );
    let output = ctx.server.proc.output();
    let panicked = output.contains("panicked");
    let logged = logged_tokens(output.as_bytes(), &cases);
    eprintln!(
        "hostile/{category}: {} cases, {} mismatching, {flagged} marked as suspected bugs, {:.1?}",
        cases.len(),
        failures.len(),
        started.elapsed()
    );
    let mut report = String::new();
    if !failures.is_empty() {
        report.push_str(&format!(
            "{} of {} {category} cases mismatch:\n{}\n",
            failures.len(),
            cases.len(),
            failures.join("\n")
        ));
    }
    for p in post_problems {
        report.push_str(&format!("{p}\n"));
    }
    if !logged.is_empty() {
        report.push_str(&format!("the server logged the token of: {logged:?}\n"));
    }
    if !running {
        report.push_str("the server process exited\n");
    }
    if !healthy {
        report.push_str("/healthz does not answer 200 after the cases\n");
    }
    if panicked {
        report.push_str(&format!("the server panicked:\n{output}\n"));
    }
    assert!(report.is_empty(), "{report}");
}

// ---------------------------------------------------------------------------------------
// Helpers for building hostile tokens
// ---------------------------------------------------------------------------------------

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

/// The same token with the character at `i` of segment `seg` replaced by `with`.
fn replace_char(token: &str, seg: usize, i: usize, with: char) -> String {
    let mut p = parts(token);
    let mut chars: Vec<char> = p[seg].chars().collect();
    chars[i] = with;
    p[seg] = chars.into_iter().collect();
    p.join(".")
}

/// A base64url character different from `c` that keeps every data bit meaningful.
fn other_b64_char(c: char) -> char {
    if c == 'A' { 'B' } else { 'A' }
}

/// HMAC token over `claims` with `secret`, as an attacker who read the public key would make.
fn hmac_token(alg: Algorithm, kid: Option<&str>, claims: &Value, secret: &[u8]) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
}

/// Unpadded base64 length of `n` bytes.
fn b64_len(n: usize) -> usize {
    (4 * n).div_ceil(3)
}

/// A validly signed token of exactly `len` characters (padding claim plus header filler).
fn token_of_len(ctx: &Ctx, len: usize) -> String {
    let sig_len = parts(&ctx.valid())[2].len();
    for j in 0..4 {
        let header = ctx.jose_with(json!({"fill": "y".repeat(j)})).to_string();
        let base = ctx.payload(json!({"pad": ""})).to_string().len();
        let fixed = b64_len(header.len()) + 2 + sig_len;
        if len < fixed + b64_len(base) {
            break;
        }
        if let Some(k) = (0..len).find(|k| fixed + b64_len(base + k) == len) {
            let t = ctx.sign(
                &header,
                &ctx.payload(json!({"pad": "x".repeat(k)})).to_string(),
            );
            assert_eq!(t.len(), len);
            return t;
        }
    }
    panic!("no token of length {len}")
}
