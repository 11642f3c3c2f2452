//! The decision log: one JSON line per decision, for an auditor, on a sink of its own. It says
//! who was let in or refused, by which policy and why, and never holds a token, cookie or
//! signature byte; the subject is a keyed hash unless the operator opts in to e-mails.
//! Writing never blocks a request: lines wait in a bounded queue for a writer thread, and
//! what does not fit (a full disk, a pipe nobody reads) is dropped and counted. See
//! docs/operating.md, "The decision log".

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::SystemTime;

use aws_lc_rs::hmac;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::core::dialect::OriginalRequest;
use crate::core::verify::TokenKind;
use crate::serve::authorize::unix_now;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    Stderr,
    /// Appended to; opened by the writer thread, so a FIFO without a reader delays only the
    /// log, never start-up.
    File(PathBuf),
}

/// What identifies the person or service behind a token in a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectField {
    /// `subject`: HMAC-SHA256 of `sub` (or a service token's `common_name`) under the
    /// install's key: the same person correlates across lines and replicas, and the log
    /// holds no address.
    #[default]
    Hashed,
    /// `subject` as above, and `email` in clear (the operator opted in).
    HashedAndEmail,
}

/// The install's secret for subject hashes.
#[derive(Clone)]
pub struct SubjectKey(hmac::Key);

impl SubjectKey {
    /// At least 16 bytes of secret (the chart's Secret holds 32 random bytes).
    pub fn new(secret: &[u8]) -> Result<Self, DecisionLogError> {
        if secret.len() < 16 {
            return Err(DecisionLogError::ShortKey(secret.len()));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// A key for this process only: hashes do not correlate across restarts or replicas.
    pub fn ephemeral() -> Self {
        let secret: [u8; 32] = rand::random();
        Self(hmac::Key::new(hmac::HMAC_SHA256, &secret))
    }

    /// The first 128 bits of the HMAC, hex: enough to tell subjects apart, short to read.
    fn hash(&self, subject: &str) -> String {
        let tag = hmac::sign(&self.0, subject.as_bytes());
        tag.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecisionLogError {
    #[error("the decision log key must be at least 16 bytes, got {0}")]
    ShortKey(usize),
    #[error("cannot start the decision log writer: {0}")]
    Thread(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct DecisionLogConfig {
    pub sink: Sink,
    /// Allow lines per second at most (0: none).
    pub allows_per_second: u32,
    /// Deny lines per second at most (0: none).
    pub denies_per_second: u32,
    pub subject: SubjectField,
    pub key: SubjectKey,
    /// Lines waiting for the writer at most; more are dropped.
    pub queue_lines: usize,
}

/// What the token said, for a decision that got as far as a verified token.
#[derive(Debug, Clone, Copy)]
pub struct TokenFacts<'a> {
    pub kind: TokenKind,
    pub kid: &'a str,
    /// `sub`, or a service token's `common_name`.
    pub subject: Option<&'a str>,
    pub email: Option<&'a str>,
}

/// One decision, as the authorization service saw it.
#[derive(Debug, Clone, Copy)]
pub struct DecisionRecord<'a> {
    /// `namespace/name`, or `-` when no policy was selected.
    pub policy: &'a str,
    pub original: Option<&'a OriginalRequest>,
    pub status: u16,
    /// `None` on allow.
    pub reason: Option<&'static str>,
    pub token: Option<TokenFacts<'a>>,
    /// The dry-run policy the request selected and what it would have answered.
    pub dry_run: Option<DryRunFacts<'a>>,
    /// A candidate that disagreed with its live policy on this request.
    pub candidate: Option<CandidateFacts<'a>>,
}

/// A dry-run policy's would-be verdict.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DryRunFacts<'a> {
    pub policy: &'a str,
    /// The would-be deny reason; `None`: it would have allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// How a candidate disagreed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CandidateFacts<'a> {
    /// The live policy whose candidate this is.
    pub policy: &'a str,
    /// `candidate_denies`, `candidate_allows`, `reason_differs` or `headers_differ`.
    pub result: &'static str,
    /// The reason they disagree on, or `ok`.
    pub reason: &'static str,
}

/// Counts of what the log wrote and what it dropped, by why.
#[derive(Debug, Clone, Default)]
pub struct DecisionLogCounters {
    pub written: Counter,
    pub rate_limited: Counter,
    pub queue_full: Counter,
    pub sink_failed: Counter,
}

/// The log: cheap to call from every request; `None` lines cost one atomic each.
pub struct DecisionLog {
    tx: SyncSender<String>,
    allows: RateLimit,
    denies: RateLimit,
    subject: SubjectField,
    key: SubjectKey,
    counters: DecisionLogCounters,
}

impl DecisionLog {
    /// Starts the writer thread for `config.sink`.
    pub fn start(
        config: DecisionLogConfig,
        counters: DecisionLogCounters,
    ) -> Result<Arc<Self>, DecisionLogError> {
        let sink = config.sink.clone();
        Self::start_with(config, counters, move || open(&sink))
    }

    /// [`DecisionLog::start`] with the writer `open` returns (tests give a blocking one).
    fn start_with<W: Write + 'static>(
        config: DecisionLogConfig,
        counters: DecisionLogCounters,
        open: impl FnOnce() -> std::io::Result<W> + Send + 'static,
    ) -> Result<Arc<Self>, DecisionLogError> {
        let (tx, rx) = sync_channel(config.queue_lines.max(1));
        let written = counters.written.clone();
        let failed = counters.sink_failed.clone();
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || write_lines(rx, open, &written, &failed))?;
        Ok(Arc::new(Self {
            tx,
            allows: RateLimit::new(config.allows_per_second),
            denies: RateLimit::new(config.denies_per_second),
            subject: config.subject,
            key: config.key,
            counters,
        }))
    }

    /// Queues the line for `record`, unless its rate is spent or the queue is full.
    pub fn record(&self, record: &DecisionRecord<'_>) {
        // A would-be denial and a disagreement are what an auditor of a change looks for:
        // at the deny rate.
        let notable = record.reason.is_some()
            || record.dry_run.is_some_and(|d| d.reason.is_some())
            || record.candidate.is_some();
        let limit = if notable { &self.denies } else { &self.allows };
        if !limit.admit(unix_now()) {
            self.counters.rate_limited.inc();
            return;
        }
        match self.tx.try_send(self.line(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.queue_full.inc();
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters.sink_failed.inc();
            }
        }
    }

    /// The JSON line for `record` (without the newline).
    fn line(&self, record: &DecisionRecord<'_>) -> String {
        let request = record.original;
        let token = record.token;
        let line = Line {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            policy: record.policy,
            host: request.map(|r| r.host.as_str()),
            path: request.map(|r| clip(&r.path, MAX_PATH)),
            method: request.map(|r| clip(&r.method, MAX_SHORT)),
            request_id: request.and_then(|r| r.request_id.as_deref().map(|id| clip(id, MAX_SHORT))),
            verdict: if record.reason.is_none() {
                "allow"
            } else {
                "deny"
            },
            status: record.status,
            reason: record.reason,
            token_type: token.map(|t| match t.kind {
                TokenKind::App => "app",
                TokenKind::Service => "service",
            }),
            kid: token.map(|t| t.kid),
            subject: token.and_then(|t| t.subject).map(|s| self.key.hash(s)),
            email: match self.subject {
                SubjectField::Hashed => None,
                SubjectField::HashedAndEmail => token.and_then(|t| t.email),
            },
            dry_run: record.dry_run,
            candidate: record.candidate,
        };
        // Serialising borrowed strings and numbers cannot fail.
        serde_json::to_string(&line).unwrap_or_default()
    }
}

/// Longest path in a line, and longest method or request id: a client chooses these (up to
/// the request head limit), and the queue must stay small while a sink is blocked.
const MAX_PATH: usize = 1024;
const MAX_SHORT: usize = 128;

/// `text` cut to at most `max` bytes, on a character boundary.
fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The fields of one line, in the order an auditor reads them (docs/operating.md).
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    policy: &'a str,
    host: Option<&'a str>,
    path: Option<&'a str>,
    method: Option<&'a str>,
    request_id: Option<&'a str>,
    verdict: &'static str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    token_type: Option<&'static str>,
    kid: Option<&'a str>,
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<DryRunFacts<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate: Option<CandidateFacts<'a>>,
}

fn open(sink: &Sink) -> std::io::Result<Box<dyn Write>> {
    Ok(match sink {
        Sink::Stdout => Box::new(std::io::stdout()),
        Sink::Stderr => Box::new(std::io::stderr()),
        Sink::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
    })
}

/// The writer thread: writes what is queued, and flushes whenever the queue is empty (lines
/// reach the sink promptly, without a flush per line under load). A sink that fails is
/// reported once; its lines are counted as failed from then on.
fn write_lines<W: Write>(
    rx: Receiver<String>,
    open: impl FnOnce() -> std::io::Result<W>,
    written: &Counter,
    failed: &Counter,
) {
    let mut out = match open() {
        Ok(w) => Some(std::io::BufWriter::new(w)),
        Err(e) => {
            tracing::error!(error = %e, "cannot open the decision log; its lines are dropped");
            None
        }
    };
    while let Ok(first) = rx.recv() {
        // Lines in the buffer: counted as written once a flush put them on the sink.
        let mut pending = 0;
        let mut next = Some(first);
        while let Some(line) = next.take() {
            if let Some(w) = out.as_mut() {
                match w
                    .write_all(line.as_bytes())
                    .and_then(|()| w.write_all(b"\n"))
                {
                    Ok(()) => pending += 1,
                    Err(e) => {
                        tracing::error!(error = %e, "the decision log sink failed; its lines are dropped");
                        failed.inc_by(pending + 1);
                        pending = 0;
                        out = None;
                    }
                }
            } else {
                failed.inc();
            }
            next = rx.try_recv().ok();
        }
        if let Some(w) = out.as_mut() {
            match w.flush() {
                Ok(()) => {
                    written.inc_by(pending);
                }
                Err(e) => {
                    tracing::error!(error = %e, "the decision log sink failed; its lines are dropped");
                    failed.inc_by(pending);
                    out = None;
                }
            }
        }
    }
}

/// At most `per_second` admissions in each wall-clock second; lock-free (one CAS).
pub(crate) struct RateLimit {
    per_second: u32,
    /// The current second (high 32 bits) and how many were admitted in it (low 32).
    window: AtomicU64,
}

impl RateLimit {
    pub(crate) const fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window: AtomicU64::new(0),
        }
    }

    pub(crate) fn admit(&self, now: u64) -> bool {
        if self.per_second == 0 {
            return false;
        }
        let second = now & 0xffff_ffff;
        let mut seen = self.window.load(Ordering::Relaxed);
        loop {
            let (at, count) = (seen >> 32, seen & 0xffff_ffff);
            let next = if at == second {
                if count >= u64::from(self.per_second) {
                    return false;
                }
                seen + 1
            } else {
                (second << 32) | 1
            };
            match self.window.compare_exchange_weak(
                seen,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => seen = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::Sender;
    use std::time::Duration;

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJl";

    /// A writer that hands every write to the test.
    struct Captured(Sender<Vec<u8>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A writer that never returns from a write: a pipe nobody reads.
    struct Blocked;
    impl Write for Blocked {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(0)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn config(subject: SubjectField) -> DecisionLogConfig {
        DecisionLogConfig {
            sink: Sink::Stderr,
            allows_per_second: 1000,
            denies_per_second: 1000,
            subject,
            key: SubjectKey::new(b"0123456789abcdef-install-secret").unwrap(),
            queue_lines: 16,
        }
    }

    fn request() -> OriginalRequest {
        OriginalRequest {
            method: "GET".into(),
            scheme: "https".into(),
            host: "app.example.com".into(),
            path: "/admin".into(),
            client_ip: Some("198.51.100.7".into()),
            request_id: Some("req-1".into()),
        }
    }

    fn facts() -> TokenFacts<'static> {
        TokenFacts {
            kind: TokenKind::App,
            kid: "kid-1",
            subject: Some("user-1"),
            email: Some("alice@example.com"),
        }
    }

    /// A `team/app` record of `status` for `original`, with no token facts.
    fn record<'a>(
        original: Option<&'a OriginalRequest>,
        status: u16,
        reason: Option<&'static str>,
    ) -> DecisionRecord<'a> {
        DecisionRecord {
            policy: "team/app",
            original,
            status,
            reason,
            token: None,
            dry_run: None,
            candidate: None,
        }
    }

    /// The lines `records` produce, as JSON values.
    fn lines(subject: SubjectField, records: &[DecisionRecord<'_>]) -> Vec<serde_json::Value> {
        let (tx, rx) = std::sync::mpsc::channel();
        let log = DecisionLog::start_with(config(subject), Default::default(), move || {
            Ok(Captured(tx))
        })
        .unwrap();
        for r in records {
            log.record(r);
        }
        drop(log);
        let bytes: Vec<u8> = rx.iter().flatten().collect();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_line_has_every_field_and_no_email_by_default() {
        let original = request();
        let deny = DecisionRecord {
            token: Some(facts()),
            ..record(Some(&original), 403, Some("rule_denied"))
        };
        let got = lines(SubjectField::Hashed, &[deny]);
        let line = &got[0];
        for (field, want) in [
            ("policy", "team/app"),
            ("host", "app.example.com"),
            ("path", "/admin"),
            ("method", "GET"),
            ("request_id", "req-1"),
            ("verdict", "deny"),
            ("reason", "rule_denied"),
            ("token_type", "app"),
            ("kid", "kid-1"),
        ] {
            assert_eq!(line[field], want, "{field}: {line}");
        }
        assert_eq!(line["status"], 403);
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
        let subject = line["subject"].as_str().unwrap();
        assert_eq!(subject.len(), 32, "{line}");
        assert_ne!(subject, "user-1");
        assert!(line.get("email").is_none(), "{line}");
        assert!(!line.to_string().contains("alice"), "{line}");
    }

    #[test]
    fn the_subject_hash_is_keyed_and_stable() {
        let a = SubjectKey::new(b"0123456789abcdef").unwrap();
        let b = SubjectKey::new(b"0123456789abcdeg").unwrap();
        assert_eq!(a.hash("user-1"), a.hash("user-1"));
        assert_ne!(a.hash("user-1"), a.hash("user-2"));
        assert_ne!(a.hash("user-1"), b.hash("user-1"), "another install's key");
        assert!(matches!(
            SubjectKey::new(b"short"),
            Err(DecisionLogError::ShortKey(5))
        ));
    }

    #[test]
    fn email_only_when_opted_in() {
        let allow = DecisionRecord {
            token: Some(facts()),
            ..record(None, 200, None)
        };
        let line = &lines(SubjectField::HashedAndEmail, &[allow])[0];
        assert_eq!(line["email"], "alice@example.com");
        assert_eq!(line["verdict"], "allow");
        assert!(line.get("reason").is_none(), "{line}");
    }

    #[test]
    fn nothing_of_the_token_reaches_a_line() {
        // Whatever a record holds, a line is built from named fields only; the token's
        // segments never appear even when a header value or path carried them.
        let mut original = request();
        original.path = "/callback".into();
        let r = record(Some(&original), 401, Some("signature_invalid"));
        let text = lines(SubjectField::HashedAndEmail, &[r])[0].to_string();
        for segment in TOKEN.split('.') {
            assert!(!text.contains(segment), "{text}");
        }
    }

    #[test]
    fn a_client_chosen_value_cannot_forge_a_line() {
        // The request id comes from a header the client may set; a newline in it must not
        // start a second, forged line.
        let mut original = request();
        original.request_id = Some("r\n{\"verdict\":\"allow\",\"policy\":\"team/app\"}".into());
        let r = record(Some(&original), 403, Some("rule_denied"));
        let got = lines(SubjectField::Hashed, &[r]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["verdict"], "deny");
        assert_eq!(got[0]["request_id"], original.request_id.clone().unwrap());
    }

    #[test]
    fn client_chosen_fields_are_bounded() {
        let mut original = request();
        original.path = format!("/{}", "é".repeat(10_000));
        original.request_id = Some("r".repeat(10_000));
        let r = record(Some(&original), 403, Some("rule_denied"));
        let line = &lines(SubjectField::Hashed, &[r])[0];
        let path = line["path"].as_str().unwrap();
        assert!(
            path.len() <= MAX_PATH && path.len() > MAX_PATH - 4,
            "{}",
            path.len()
        );
        assert_eq!(line["request_id"].as_str().unwrap().len(), MAX_SHORT);
        assert!(line.to_string().len() < 2 * MAX_PATH, "a line stays small");
    }

    #[test]
    fn allows_and_denies_have_their_own_rates() {
        let limit = RateLimit::new(2);
        assert!(limit.admit(10) && limit.admit(10));
        assert!(!limit.admit(10), "third in the same second");
        assert!(limit.admit(11), "a new second");
        assert!(!RateLimit::new(0).admit(10), "0: never");
    }

    #[test]
    fn a_blocked_sink_drops_and_counts_instead_of_blocking() {
        let counters = DecisionLogCounters::default();
        let log = DecisionLog::start_with(config(SubjectField::Hashed), counters.clone(), || {
            Ok(Blocked)
        })
        .unwrap();
        let original = request();
        let r = record(Some(&original), 403, Some("rule_denied"));
        // The writer takes what its 8 KiB buffer holds and blocks in the write; 16 more
        // fill the queue; every line after that is dropped, and `record` returns each time.
        for _ in 0..200 {
            log.record(&r);
        }
        let dropped = counters.queue_full.get();
        assert!(dropped >= 100, "dropped {dropped}");
        assert_eq!(counters.written.get(), 0, "nothing reached the sink");
    }
}
