//! Micro-benchmarks of one decision: with the verified-token cache (the steady state) and
//! without it (a first sight of every token: signature verification); and what a policy with
//! an upstream assertion adds to the cached one (its payload, and the signed token reused for
//! half its lifetime). Not tests; run with `cargo bench --bench verify`.

use std::hint::black_box;

use std::time::Duration;

use accessgate::api::{AccessPolicySpec, IssuerSpec, UpstreamAssertionSpec};
use accessgate::core::decision::{Decision, decide};
use accessgate::core::policy::{PolicyKey, compile};
use accessgate::devissuer::{MintRequest, Signer};
use accessgate::keys::signing::AssertionSigner;
use accessgate::keys::tokens::TokenCache;
use accessgate::keys::{FixedKeys, parse_key_set};
use axum::http::{HeaderMap, HeaderValue};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::Algorithm;

const ISS: &str = "http://127.0.0.1:9";

fn bench(c: &mut Criterion) {
    let signer = Signer::new(ISS).unwrap();
    let keys = FixedKeys(Some(
        parse_key_set(signer.certs_document().to_string().as_bytes()).unwrap(),
    ));
    let spec = AccessPolicySpec {
        issuer: IssuerSpec {
            team_domain: None,
            url: Some(ISS.into()),
            jwks_uri: Some(format!("{ISS}/certs")),
        },
        audiences: vec!["aud".into()],
        ..Default::default()
    };
    let policy = compile(PolicyKey::new("ns", "p"), None, &spec).unwrap();
    let now = accessgate::devissuer::unix_now();
    let request = |token: &str| {
        let mut h = HeaderMap::new();
        h.insert(
            "cf-access-jwt-assertion",
            HeaderValue::from_str(token).unwrap(),
        );
        h
    };
    let tokens: Vec<HeaderMap> = (0..256)
        .map(|i| {
            let req = MintRequest {
                aud: vec!["aud".into()],
                email: Some(format!("user{i}@example.com")),
                ..Default::default()
            };
            request(&signer.mint(&req, now).unwrap())
        })
        .collect();

    let cache = TokenCache::new(32 << 20);
    c.bench_function("decide_cached", |b| {
        b.iter(|| black_box(decide(&policy, &tokens[0], &keys, &cache, now as u64)))
    });
    // The same, for a policy that asks for an upstream assertion: the decision builds its
    // payload; the signer reuses the token it signed for that payload (one signature per
    // identity per half-TTL), as the service does on every allow.
    let asserted = compile(
        PolicyKey::new("ns", "p"),
        None,
        &AccessPolicySpec {
            upstream_assertion: Some(UpstreamAssertionSpec {
                audience: "app".into(),
                header: None,
                ttl: None,
            }),
            ..spec.clone()
        },
    )
    .unwrap();
    c.bench_function("decide_cached_with_assertion_payload", |b| {
        b.iter(|| black_box(decide(&asserted, &tokens[0], &keys, &cache, now as u64)))
    });
    let assertions = AssertionSigner::new("https://accessgate.test".into(), None).unwrap();
    let Decision::Allow {
        assertion: Some(payload),
        ..
    } = decide(&asserted, &tokens[0], &keys, &cache, now as u64)
    else {
        panic!("the asserted policy allows the token with a payload");
    };
    c.bench_function("assertion_sign_reused", |b| {
        b.iter(|| black_box(assertions.sign(&payload, "app", Duration::from_secs(60), now as u64)))
    });

    let off = TokenCache::disabled();
    let mut i = 0;
    c.bench_function("decide_cold_rs256", |b| {
        b.iter(|| {
            i = (i + 1) % tokens.len();
            black_box(decide(&policy, &tokens[i], &keys, &off, now as u64))
        })
    });

    // The floor under the cold path: aws-lc's RSA-2048 verification of the same signing
    // input with the same pre-parsed key, nothing else (no base64, JSON or claim checks).
    let token = tokens[0]["cf-access-jwt-assertion"].to_str().unwrap();
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let kid = accessgate::core::verify::read_header(token, &policy.algorithms)
        .unwrap()
        .kid;
    let parsed = keys
        .0
        .as_ref()
        .and_then(|set| set.get(&kid))
        .unwrap()
        .parsed_for(Algorithm::RS256)
        .unwrap();
    c.bench_function("aws_lc_rsa2048_verify_only", |b| {
        b.iter(|| {
            black_box(
                parsed
                    .verify_sig(signing_input.as_bytes(), &signature)
                    .is_ok(),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
