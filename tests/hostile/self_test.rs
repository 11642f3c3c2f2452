//! The harness's own tests: each check fails for the reason it names. No accessgate here:
//! answers are written byte for byte, and the peers that never answer are local sockets.

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use crate::{
    Case, Expect, Outcome, allow, allow_with, check, deny, logged_tokens, parse_reply,
    raw_exchange, send,
};

/// A deny exactly as the contract wants it.
const DENY_401: &str = concat!(
    "HTTP/1.1 401 Unauthorized\r\n",
    "cache-control: no-store\r\n",
    "x-accessgate-reason: token_missing\r\n",
    "www-authenticate: Bearer realm=\"accessgate\"\r\n",
    "content-length: 14\r\n",
    "\r\n",
    "token_missing\n",
);

/// A made-up token; its signature segment is what an echo would leak.
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLXRoYXQtaXMtbG9uZy1lbm91Z2gtdG8tbWF0dGVy";

fn reply(bytes: impl AsRef<[u8]>) -> Outcome {
    Outcome::Answered(parse_reply(bytes.as_ref()).expect("a parsable answer"))
}

/// An allow carrying one more raw header line.
fn allow_plus(line: &[u8]) -> Outcome {
    let mut bytes = b"HTTP/1.1 200 OK\r\ncache-control: no-store\r\n".to_vec();
    bytes.extend_from_slice(line);
    bytes.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
    reply(bytes)
}

/// `Ok` as "ok", else the problems.
fn verdict(case: &Case, got: Outcome) -> String {
    match check(case, got) {
        Ok(()) => "ok".into(),
        Err(e) => e,
    }
}

#[test]
fn refused_means_the_http_layer_refused() {
    let refused = Case::new("refused", Expect::Refused);
    let decided = verdict(&refused, reply(DENY_401));
    assert!(decided.contains("accessgate decided"), "{decided}");
    let ok_200 = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    assert_ne!(verdict(&refused, reply(ok_200)), "ok");
    let err_500 = "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n";
    assert_ne!(verdict(&refused, reply(err_500)), "ok");
    let parser_431 = "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(verdict(&refused, reply(parser_431)), "ok");
    assert_eq!(verdict(&refused, Outcome::Closed("reset".into())), "ok");
    assert_ne!(verdict(&refused, Outcome::Failed("timed out".into())), "ok");
    // The fixture itself is a proper deny, and a deny never passes as closed.
    let missing = Case::new("deny", deny(401, "token_missing"));
    assert_eq!(verdict(&missing, reply(DENY_401)), "ok");
    assert_ne!(verdict(&missing, Outcome::Closed("reset".into())), "ok");
}

#[test]
fn a_hang_is_not_a_refusal() {
    // Listening, so the connection is made, but nobody ever answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", silent.local_addr().unwrap());
    let refused = Case::new("refused", Expect::Refused);
    let raw = raw_exchange(&base, b"GET / HTTP/1.1\r\n\r\n", Duration::from_millis(300));
    let why = verdict(&refused, raw);
    assert!(why.contains("a hang is not a refusal"), "{why}");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let why = verdict(&refused, send(&client, &base, &refused.req));
    assert!(why.contains("a hang is not a refusal"), "{why}");
    drop(silent);
}

#[test]
fn a_connection_closed_without_an_answer_is_a_refusal() {
    let closing = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closing.local_addr().unwrap());
    let peer = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = closing.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
        }
    });
    let refused = Case::new("refused", Expect::Refused);
    let raw = raw_exchange(&base, b"GET / HTTP/1.1\r\n\r\n", Duration::from_secs(5));
    assert_eq!(verdict(&refused, raw), "ok");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert_eq!(verdict(&refused, send(&client, &base, &refused.req)), "ok");
    peer.join().unwrap();
}

#[test]
fn header_values_are_read_byte_exactly() {
    let case = Case::new("allow", allow());
    assert_eq!(
        verdict(&case, allow_plus(b"x-auth-request-name: Eve")),
        "ok"
    );
    for (line, problem) in [
        (&b"x-auth-request-name: Eve\x85"[..], "not UTF-8"),
        (
            "x-auth-request-name: Eve\u{85}".as_bytes(),
            "control character",
        ),
        (
            "x-auth-request-name: Eve\u{2028}x".as_bytes(),
            "control character",
        ),
        (
            "x-auth-request-name: Eve\u{2029}x".as_bytes(),
            "control character",
        ),
        (b"x-auth-request-name: Eve\x1b[31m", "control character"),
        (b"x-auth-request-name: Eve\x7f", "control character"),
        (b"x-auth-request-name: Eve\nX-Admin: true", "bare CR or LF"),
        (b"x-auth-request-name: Eve\rX-Admin: true", "bare CR or LF"),
        (b"x-auth-request-name: Eve\r\n X-Admin: true", "folded"),
    ] {
        let why = verdict(&case, allow_plus(line));
        assert!(
            why.contains(problem),
            "{:?}: {why}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn allowed_headers_are_exact_and_single() {
    let case = Case::new("allow", allow_with(&[("x-auth-request-name", Some("Eve"))]));
    let twice = b"x-auth-request-name: Eve\r\nx-auth-request-name: Mallory";
    let why = verdict(&case, allow_plus(twice));
    assert!(why.contains("header x-auth-request-name"), "{why}");
    assert!(why.contains("more than once"), "{why}");
    let absent = Case::new("absent", allow_with(&[("x-admin", None)]));
    assert_ne!(verdict(&absent, allow_plus(b"x-admin: true")), "ok");
}

#[test]
fn a_token_echoed_anywhere_fails() {
    let sig = TOKEN.rsplit('.').next().unwrap();
    let piece = &sig[10..33];
    let raw_request = format!("GET / HTTP/1.1\r\nCookie: a=b; CF_Authorization={TOKEN}\r\n\r\n");
    let sources = [
        Case::tok("assertion header", TOKEN, deny(401, "token_missing")),
        Case::new("cookie", deny(401, "token_missing"))
            .cookie(format!("a=b; CF_Authorization={TOKEN}")),
        Case::new("bearer", deny(401, "token_missing")).authorization(format!("Bearer {TOKEN}")),
        Case::raw("raw", raw_request.into_bytes(), deny(401, "token_missing")),
    ];
    for case in &sources {
        assert_eq!(verdict(case, reply(DENY_401)), "ok", "{}", case.name);
        let in_body = DENY_401.replace(
            "14\r\n\r\ntoken_missing\n",
            &format!("37\r\n\r\ntoken_missing{piece}\n"),
        );
        let why = verdict(case, reply(in_body));
        assert!(why.contains("echoed in the body"), "{}: {why}", case.name);
        let in_header =
            DENY_401.replace("\r\n\r\n", &format!("\r\nx-debug: seen {piece}.\r\n\r\n"));
        let why = verdict(case, reply(in_header));
        assert!(
            why.contains("echoed in response header x-debug"),
            "{}: {why}",
            case.name
        );
    }
    let log = format!("{{\"msg\":\"deny\",\"note\":\"{piece}\"}}\n");
    assert_eq!(logged_tokens(log.as_bytes(), &sources).len(), sources.len());
    assert!(logged_tokens(b"{\"msg\":\"deny\"}", &sources).is_empty());
}
