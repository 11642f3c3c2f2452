//! `accessgate demo`: the dev issuer, the embedded example policy and the auth service on
//! loopback, and the `curl` lines that show an allow and a deny.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use super::serve::{self, ServeConfig};
use crate::devissuer::{self, IssuerState, MintRequest};
use crate::keys::KeyConfig;
use crate::keys::signing::{AssertionConfig, AssertionKeys};
use crate::serve::{ListenerLimits, ServiceConfig, Services};

const POLICY_TEMPLATE: &str = include_str!("../../examples/demo-policy.yaml");
pub const DEMO_AUDIENCE: &str = "d3m0a11d3m0a11d3m0a11d3m0a11d3m0a11d3m0a11d3m0a11d3m0a11d3m0a11";

#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub issuer_listen: SocketAddr,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
}

/// A running demo: the policy directory and the service (both stop when dropped).
pub struct Demo {
    pub dir: tempfile::TempDir,
    pub running: serve::ServeHandle,
}

/// Starts everything and prints the instructions.
pub async fn start(config: DemoConfig) -> anyhow::Result<Demo> {
    let issuer_listener = tokio::net::TcpListener::bind(config.issuer_listen).await?;
    let issuer_url = devissuer::issuer_url(issuer_listener.local_addr()?);
    let issuer = IssuerState::new(issuer_url.clone())?;
    tokio::spawn(crate::serve::serve_http(
        issuer_listener,
        devissuer::router(issuer.clone()),
    ));

    let dir = tempfile::Builder::new()
        .prefix("accessgate-demo-")
        .tempdir()?;
    std::fs::write(
        dir.path().join("policy.yaml"),
        POLICY_TEMPLATE.replace("${ISSUER}", &issuer_url),
    )?;
    let running = serve::start(ServeConfig {
        policies: dir.path().to_owned(),
        service: ServiceConfig {
            listen: config.listen,
            admin_listen: config.admin_listen,
            listeners: ListenerLimits::default(),
            services: Services {
                keys: KeyConfig::default(),
                token_cache_bytes: 32 << 20,
                enrichment: Default::default(),
                decision_log: None,
                assertion: AssertionConfig {
                    issuer: format!("http://{}", config.listen),
                    keys: AssertionKeys::Drawn,
                },
            },
            host_claims: None,
            host_release_after: std::time::Duration::from_secs(3600),
            class: Default::default(),
        },
    })
    .await?;
    running
        .state
        .keys
        .wait_first_fetch(Duration::from_secs(5))
        .await;

    let token = issuer.mint(&MintRequest {
        aud: vec![DEMO_AUDIENCE.into()],
        email: Some("alice@example.com".into()),
        claims: serde_json::from_value(json!({"custom": {"groups": ["engineering", "sre"]}}))?,
        ..Default::default()
    })?;
    let auth = format!("http://{}/auth/demo/app", running.listening.auth_addr);
    let url = "X-Original-URL: https://app.example.test/";
    println!(
        r#"accessgate demo is running (Ctrl-C to stop)
  dev issuer: {issuer_url}  (keys at {issuer_url}/cdn-cgi/access/certs)
  auth:       http://{auth_addr}   admin: http://{admin_addr}/metrics
  policy:     {policy}

A valid token: 200 with identity headers
  curl -i {auth} -H '{url}' -H 'Cf-Access-Jwt-Assertion: {token}'

No token: 401 token_missing
  curl -i {auth} -H '{url}'

Mint more tokens (any claims; "type": "service" or "org", "ttl": -60 for an expired one):
  curl -s -X POST {issuer_url}/mint -H 'content-type: application/json' -d '{{"aud": ["{DEMO_AUDIENCE}"], "email": "bob@example.com"}}'
"#,
        auth_addr = running.listening.auth_addr,
        admin_addr = running.listening.admin_addr,
        policy = dir.path().join("policy.yaml").display(),
    );
    Ok(Demo { dir, running })
}
