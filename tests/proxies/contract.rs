//! The proxy contract: what a proxy in front of accessgate must do with its answers, written
//! once over [`Proxy`] and run for each proxy by [`contract_tests!`] (nginx as ingress-nginx
//! renders `auth-url`, Caddy, Traefik; Traefik's ingress-nginx provider runs it on one
//! cluster in `traefik_ingress_nginx`). Allowed requests reach the upstream with the
//! verified identity headers and nothing a client wrote in their place; denials reach the
//! client with accessgate's status for accessgate's reason and nothing reaches the upstream;
//! a key rotation refuses nothing.

use serde_json::{Value, json};

use crate::common::echo::received;
use crate::common::stack::{HEADERS, Proxy, Stack};

/// The stack's policy accepting service tokens only: they carry no email, sub or groups.
pub const SERVICE_ONLY: &str = "  tokenTypes: [service]\n";

/// One `#[test]` per scenario for the proxy type `$proxy`, named for the scenario (the
/// calling module names the proxy).
macro_rules! contract_tests {
    ($proxy:ty) => {
        $crate::contract::contract_tests!(@on_start $proxy:
            valid_tokens_reach_upstream_with_identity_headers,
            client_cannot_spoof_identity_headers,
            denials_reach_the_client_and_nothing_reaches_upstream,
            key_rotation_mid_run_refuses_nothing
        );

        #[test]
        fn client_cannot_supply_identity_a_service_token_lacks() {
            $crate::contract::client_cannot_supply_identity_a_service_token_lacks(
                &$crate::common::stack::Stack::<$proxy>::with_spec(&format!(
                    "{}{}",
                    $crate::common::stack::MAPPING,
                    $crate::contract::SERVICE_ONLY
                )),
            );
        }
    };
    // Scenarios run on the stack's own policy (`Stack::start`).
    (@on_start $proxy:ty: $($scenario:ident),*) => {
        $(
            #[test]
            fn $scenario() {
                $crate::contract::$scenario(&$crate::common::stack::Stack::<$proxy>::start());
            }
        )*
    };
}
pub(crate) use contract_tests;

const JWT: &str = "cf-access-jwt-assertion";

/// A token with email, sub and groups, from the header or the cookie: allowed, with the
/// policy's headers (`MAPPING`) at the upstream.
pub fn valid_tokens_reach_upstream_with_identity_headers<P: Proxy>(s: &Stack<P>) {
    let token = s
        .issuer
        .token(json!({"sub": "u-42", "claims": {"custom": {"groups": ["eng", "ops"]}}}));
    for (name, value) in [
        (JWT, token.clone()),
        ("cookie", format!("CF_Authorization={token}")),
    ] {
        let seen = s.through(&[(name, &value)]);
        assert_eq!(
            received(&seen, "x-auth-request-email"),
            ["alice@example.com"],
            "{name}: {seen}"
        );
        assert_eq!(received(&seen, "x-auth-request-user"), ["u-42"], "{seen}");
        assert_eq!(
            received(&seen, "x-auth-request-groups"),
            ["eng,ops"],
            "{seen}"
        );
    }
}

/// Client copies of the mapped headers: replaced by the verified value where the token has
/// the claim, and not passed on where it has none.
pub fn client_cannot_spoof_identity_headers<P: Proxy>(s: &Stack<P>) {
    // email and sub are claims of this token; custom.groups is not.
    let token = s.issuer.token(json!({"sub": "u-1"}));
    let seen = s.through(&[
        (JWT, &token),
        ("x-auth-request-email", "ceo@example.com"),
        ("x-auth-request-user", "root"),
        ("x-auth-request-groups", "admins"),
    ]);
    assert_eq!(
        received(&seen, "x-auth-request-email"),
        ["alice@example.com"],
        "{seen}"
    );
    assert_eq!(received(&seen, "x-auth-request-user"), ["u-1"], "{seen}");
    assert_withheld(s, &seen, "X-Auth-Request-Groups");
}

/// A service token has no email, sub or groups: nothing a client sends in their place
/// reaches the upstream. The stack's policy is `MAPPING` with [`SERVICE_ONLY`].
pub fn client_cannot_supply_identity_a_service_token_lacks<P: Proxy>(s: &Stack<P>) {
    let svc = s.issuer.token(json!({"type": "service"}));
    let seen = s.through(&[
        (JWT, &svc),
        ("x-auth-request-email", "ceo@example.com"),
        ("X-Auth-Request-User", "root"),
        ("X-Auth-Request-Groups", "admins"),
    ]);
    for header in HEADERS {
        assert_withheld(s, &seen, header);
    }
}

/// No token, an expired one (401, `WWW-Authenticate` passed to the client), the wrong
/// audience, a token type the policy refuses (403): each for accessgate's own reason.
pub fn denials_reach_the_client_and_nothing_reaches_upstream<P: Proxy>(s: &Stack<P>) {
    let resp = s.refused(&[], 401, "token_missing");
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"accessgate\""),
        "the proxy passes WWW-Authenticate to the client"
    );
    let expired = s.issuer.token(json!({"ttl": -3600}));
    s.refused(&[(JWT, &expired)], 401, "token_expired");
    let wrong_aud = s.issuer.mint(json!({"aud": ["0".repeat(64)]}));
    s.refused(&[(JWT, &wrong_aud)], 403, "audience_mismatch");
    let service = s.issuer.token(json!({"type": "service"}));
    s.refused(&[(JWT, &service)], 403, "token_type_not_allowed");
}

/// The issuer rotates its key: the first token with the new kid costs one key refetch and
/// is allowed; tokens signed with the previous key (still published) keep working.
pub fn key_rotation_mid_run_refuses_nothing<P: Proxy>(s: &Stack<P>) {
    let old = s.issuer.token(json!({}));
    s.through(&[(JWT, &old)]);
    s.issuer.rotate();
    let new = s.issuer.token(json!({}));
    let fetches = || {
        s.server
            .metric_sum("accessgate_key_fetches_total", &[("result", "success")])
    };
    let before = fetches();
    s.through(&[(JWT, &new)]);
    assert_eq!(fetches(), before + 1.0, "one refetch for the new kid");
    s.through(&[(JWT, &old)]);
}

/// The upstream got no value of `header` but the proxy's own constant for a withheld header
/// ([`Proxy::withheld_header_value`]): nothing a client sent.
#[track_caller]
fn assert_withheld<P: Proxy>(s: &Stack<P>, seen: &Value, header: &str) {
    assert!(HEADERS.contains(&header), "{header} is not a mapped header");
    let constant = s.proxy.withheld_header_value(header);
    let got = received(seen, &header.to_ascii_lowercase());
    assert!(
        got.iter().all(|v| Some(v) == constant.as_ref()),
        "the upstream got {header}: {got:?} with no claim behind it: {seen}"
    );
}
