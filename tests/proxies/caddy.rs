//! Behind real Caddy (`forward_auth`) on the forward dialect: the proxy contract, and the
//! Caddyfile example.

use crate::common::caddy::Caddy;
use crate::contract::contract_tests;

contract_tests!(Caddy);

#[test]
fn the_caddy_example_strips_client_copies_before_forward_auth() {
    // Real Caddy adapts the example; in the JSON it runs, every mapped header is deleted
    // from the request before the forward_auth subroute.
    let out = std::process::Command::new("caddy")
        .args(["adapt", "--adapter", "caddyfile", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/Caddyfile"))
        .output()
        .expect("run caddy adapt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    let forward = json
        .find("/forward/monitoring/grafana")
        .expect("forward_auth uri");
    for header in [
        "x-auth-request-email",
        "x-auth-request-user",
        "x-auth-request-groups",
    ] {
        let delete = json
            .find(&format!("\"delete\":[\"{header}\"]"))
            .unwrap_or_else(|| panic!("{header} is not deleted: {json}"));
        assert!(
            delete < forward,
            "{header} is deleted after forward_auth runs"
        );
    }
}
