//! The signed upstream assertion through `accessgate serve`, checked by two verifiers that
//! accessgate's code did not write (`tests/verifiers/`: Node on panva/jose, Go on go-jose):
//! the claims an app relies on, a wrong audience refused, and a key rotation through the key
//! directory in which no token ever fails to verify. Needs node and Go (`tests/run.sh`).
#![cfg(feature = "e2e")]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const ISSUER: &str = "https://accessgate.test";

/// (node script, Go binary), built once by tests/verifiers/build.sh.
fn verifiers() -> &'static (String, String) {
    static BUILT: OnceLock<(String, String)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/verifiers/build.sh"
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let line = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("no {k}= line in {text}"))
                .to_owned()
        };
        (line("node"), line("go"))
    })
}

/// Each verifier's answer: the verified claims, or its error.
fn verify(server: &Server, audience: &str, token: &str) -> [Result<Value, String>; 2] {
    let (node, go) = verifiers();
    let jwks = format!("{}/.well-known/jwks.json", server.auth);
    let args = [
        "--jwks",
        &jwks,
        "--issuer",
        ISSUER,
        "--audience",
        audience,
        "--token",
        token,
    ];
    let run = |mut cmd: Command| {
        let out = cmd.args(args).output().unwrap();
        if out.status.success() {
            Ok(serde_json::from_slice(&out.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    };
    let mut n = Command::new("node");
    n.arg(node);
    [run(n), run(Command::new(go))]
}

fn key_pem() -> String {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem()
}

/// A SEC1 key, as Helm's `genPrivateKey "ecdsa"` writes one.
fn sec1_key_pem() -> String {
    let out = Command::new("openssl")
        .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout"])
        .output()
        .unwrap();
    let pem = String::from_utf8(out.stdout).unwrap();
    assert!(pem.contains("BEGIN EC PRIVATE KEY"), "{pem}");
    pem
}

const POLICY: &str = "  rules:\n    groupsClaim: custom.groups\n  upstreamAssertion:\n    audience: grafana\n    ttl: 60s\n";

fn serve(issuer: &Issuer, keys: &Path) -> Server {
    Server::start(
        &[("p.yaml", &policy_yaml("apps", "web", &issuer.url, POLICY))],
        &[
            "--assertion-keys",
            keys.to_str().unwrap(),
            "--assertion-issuer",
            ISSUER,
        ],
    )
}

fn assertion_for(server: &Server, token: &str) -> String {
    let answer = server.with_token("/auth/apps/web", token);
    answer.assert_allow();
    answer
        .header("x-accessgate-assertion")
        .expect("an assertion on the allow")
        .to_owned()
}

fn kid(assertion: &str) -> String {
    let header = assertion.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

fn published(server: &Server) -> Vec<String> {
    let set: Value = http()
        .get(format!("{}/.well-known/jwks.json", server.auth))
        .send()
        .unwrap()
        .json()
        .unwrap();
    set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn independent_verifiers_accept_the_assertion_for_its_app_and_refuse_it_for_another() {
    let issuer = Issuer::start();
    let keys = tempfile::tempdir().unwrap();
    std::fs::write(keys.path().join("current.pem"), sec1_key_pem()).unwrap();
    let server = serve(&issuer, keys.path());
    let token = issuer.token(json!({"sub": "u-ana", "email": "ana@example.com", "claims": {"custom": {"groups": ["eng", "sre"]}}}));
    let assertion = assertion_for(&server, &token);
    assert!(!assertion.contains(&token) && !token.contains(&assertion));

    for (who, answer) in ["node jose", "go-jose"]
        .into_iter()
        .zip(verify(&server, "grafana", &assertion))
    {
        let claims = answer.unwrap_or_else(|e| panic!("{who} refused a good assertion: {e}"));
        assert_eq!(claims["iss"], ISSUER, "{who}");
        assert_eq!(claims["aud"], "grafana", "{who}");
        assert_eq!(claims["sub"], "u-ana", "{who}");
        assert_eq!(claims["email"], "ana@example.com", "{who}");
        assert_eq!(claims["groups"], json!(["eng", "sre"]), "{who}");
        assert_eq!(claims["policy"], "apps/web", "{who}");
        assert_eq!(claims["claims"]["email"], "ana@example.com", "{who}");
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, 60, "{who}");
    }
    for (who, answer) in
        ["node jose", "go-jose"]
            .into_iter()
            .zip(verify(&server, "prometheus", &assertion))
    {
        let e = answer.expect_err(&format!("{who} accepted an assertion for another app"));
        assert!(e.contains("aud"), "{who}: {e}");
    }
    // A client's own header never survives: the answer sets it.
    let forged = server.auth(
        "/auth/apps/web",
        "https://app.example.test/",
        &[
            ("cf-access-jwt-assertion", &token),
            ("x-accessgate-assertion", "forged"),
        ],
    );
    assert_ne!(forged.header("x-accessgate-assertion"), Some("forged"));
}

#[test]
fn a_rotation_through_the_key_directory_never_fails_a_verification() {
    let issuer = Issuer::start();
    let keys = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: &str| std::fs::write(keys.path().join(name), pem).unwrap();
    write("current.pem", &key_pem());
    let server = serve(&issuer, keys.path());
    let token = issuer.token(json!({}));
    let before = assertion_for(&server, &token);
    let old = kid(&before);
    assert_eq!(published(&server), std::slice::from_ref(&old));

    // Step 1: the next key is published, not yet signing.
    write("next.pem", &key_pem());
    assert!(eventually(Duration::from_secs(15), || published(&server)
        .len()
        == 2));
    let new = published(&server).into_iter().find(|k| *k != old).unwrap();
    assert_eq!(kid(&assertion_for(&server, &token)), old);

    // Step 2: it signs; the old one stays published for the tokens it signed.
    std::fs::rename(
        keys.path().join("current.pem"),
        keys.path().join("previous.pem"),
    )
    .unwrap();
    std::fs::rename(
        keys.path().join("next.pem"),
        keys.path().join("current.pem"),
    )
    .unwrap();
    let mut after = String::new();
    assert!(eventually(Duration::from_secs(15), || {
        after = assertion_for(&server, &issuer.token(json!({"sub": "u-new"})));
        kid(&after) == new
    }));
    for assertion in [&before, &after] {
        for (who, answer) in ["node jose", "go-jose"]
            .into_iter()
            .zip(verify(&server, "grafana", assertion))
        {
            answer
                .unwrap_or_else(|e| panic!("{who} refused an assertion during the rotation: {e}"));
        }
    }

    // Step 3: the old key leaves; what it signed is refused, what the new one signs is not.
    std::fs::remove_file(keys.path().join("previous.pem")).unwrap();
    assert!(eventually(Duration::from_secs(15), || published(&server)
        == [new.clone()]));
    for (who, answer) in ["node jose", "go-jose"]
        .into_iter()
        .zip(verify(&server, "grafana", &before))
    {
        answer.expect_err(&format!("{who} accepted a token whose key left the JWKS"));
    }
    for (who, answer) in ["node jose", "go-jose"]
        .into_iter()
        .zip(verify(&server, "grafana", &after))
    {
        answer.unwrap_or_else(|e| panic!("{who}: {e}"));
    }
}

#[test]
fn a_key_directory_that_does_not_load_stops_the_start_with_the_reason() {
    let empty = tempfile::tempdir().unwrap();
    let policies = tempfile::tempdir().unwrap();
    let mut proc = Proc::spawn(&[
        "serve",
        "--policies",
        policies.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--assertion-keys",
        empty.path().to_str().unwrap(),
    ]);
    let status = proc.wait_exit(Duration::from_secs(20)).expect("it exits");
    assert!(!status.success());
    assert!(proc.output().contains("current.pem"), "{}", proc.output());
}
