//! The `AccessPolicy` spec: the fields a person writes, their schema, and the CEL rules the
//! API server checks on `kubectl apply`.
//!
//! Every rule CEL can check is also checked where the core compiles a spec
//! ([`crate::core::policy::compile`]), so the file source gets the same errors;
//! `tests/cluster/controller.rs` keeps the two honest against a real API server. The reserved
//! header names are one list both are built from (`tests/crd.rs`).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::AccessPolicyStatus;

/// Protects an application behind Cloudflare Access (or any OIDC-style issuer): which tokens
/// the auth endpoint accepts for it, and which identity headers it hands to the upstream.
// The derive's repeated `printcolumn(type_ = "string")` trips a clippy false positive.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "accessgate.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    plural = "accesspolicies",
    namespaced,
    // Not `ap`: Istio's AuthorizationPolicy has it, so `kubectl get ap` is ambiguous there.
    shortname = "acp",
    category = "accessgate",
    doc = "Protects an application behind Cloudflare Access: which tokens accessgate accepts for it and which identity headers it sends upstream.",
    status = "AccessPolicyStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    // `kubectl get acp -A` fits 120 columns; `-o wide` adds the long ones (priority 1).
    printcolumn(
        name = "Headers-Protected",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"HeadersProtected\")].status"
    ),
    printcolumn(
        name = "Issuer",
        type_ = "string",
        json_path = ".status.issuer",
        priority = 1
    ),
    printcolumn(
        name = "Audiences",
        type_ = "string",
        json_path = ".spec.audiences",
        priority = 1
    ),
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.mode",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.issuer.teamDomain) || self.audiences.all(a, a.matches('^[0-9a-f]{64}$'))"
).message("with issuer.teamDomain, every audience must be a Cloudflare Access AUD tag (64 lowercase hex characters)").reason(kube::core::Reason::FieldValueInvalid).field_path(".audiences"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.issuer.teamDomain) || !has(self.candidate) || !has(self.candidate.audiences) || self.candidate.audiences.all(a, a.matches('^[0-9a-f]{64}$'))"
).message("with issuer.teamDomain, every candidate audience must be a Cloudflare Access AUD tag (64 lowercase hex characters)").reason(kube::core::Reason::FieldValueInvalid).field_path(".candidate.audiences"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.upstreamAssertion) || !has(self.upstreamAssertion.header) || !has(self.claimHeaders) || !self.claimHeaders.exists(h, h.header.lowerAscii() == self.upstreamAssertion.header.lowerAscii())"
).message("upstreamAssertion.header must not be a claimHeaders header").reason(kube::core::Reason::FieldValueDuplicate).field_path(".upstreamAssertion.header"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.paths) || size(self.paths) == 0 || (has(self.hosts) && size(self.hosts) > 0)")
    .message("paths route the bare /auth endpoint and need hosts").reason(kube::core::Reason::FieldValueRequired).field_path(".hosts"))]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// Which accessgate install serves this policy, when a cluster runs several (one per
    /// ingress class, or old and new operator side by side): the install started with this
    /// `--class` (chart value `className`) serves it and writes its status and Events; every
    /// other install ignores it (by name it is `policy_unknown` there). Omitted: the install of
    /// the default class `accessgate`. A DNS label, like an Ingress's `ingressClassName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("className must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit").reason(kube::core::Reason::FieldValueInvalid))]
    pub class_name: Option<String>,

    /// Who signs the tokens. Set `teamDomain` for Cloudflare Access, or `url` and `jwksUri`
    /// for any other OIDC-style issuer.
    pub issuer: IssuerSpec,

    /// Accepted audiences. The token's `aud` (a string or an array) must contain at least one.
    /// For Cloudflare Access these are the application's AUD tags (64 hex characters).
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 256)))]
    #[x_kube(validation = kube::core::Rule::new("self.all(a, size(a) > 0 && size(a) <= 256)").message("audiences must be 1 to 256 characters").reason(kube::core::Reason::FieldValueInvalid))]
    pub audiences: Vec<String>,

    /// Hosts this policy serves on the host-selecting endpoints (bare `/auth?host=$host`,
    /// `/forward`, `/envoy`, gRPC without context): lowercase DNS names, or `*.` and a suffix
    /// of two or more labels matching one or more labels. A namespace routes a host only
    /// where it has a right to it (in a cluster: its own Ingress or HTTPRoute serves it, or
    /// the operator's hostClaims grant it) and no other namespace holds it; see the status
    /// reasons HostNotServed, HostOwnedElsewhere, HostNotAllowed. Not needed for
    /// `/auth/{namespace}/{name}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    #[x_kube(validation = kube::core::Rule::new("self.all(h, h.matches('^([*]\\\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*)$'))").message("hosts must be lowercase DNS names without port, or *. and a suffix of two or more labels").reason(kube::core::Reason::FieldValueInvalid))]
    pub hosts: Vec<String>,

    /// Path prefixes (matched by whole segments, like an Ingress `Prefix`) under `hosts`;
    /// the longest match wins. Defaults to `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    #[x_kube(validation = kube::core::Rule::new("self.all(p, p.startsWith('/') && size(p) <= 1024)").message("paths must start with '/'").reason(kube::core::Reason::FieldValueInvalid))]
    pub paths: Vec<String>,

    /// Where to look for the token, in order; the first source present is used.
    /// Default: `[header, cookie]` (`Cf-Access-Jwt-Assertion`, then the `CF_Authorization`
    /// cookie). `bearer` (`Authorization: Bearer`) is opt-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 3))]
    #[x_kube(validation = kube::core::Rule::new("self.all(x, self.exists_one(y, x == y))").message("tokenSources must not repeat").reason(kube::core::Reason::FieldValueDuplicate))]
    pub token_sources: Option<Vec<TokenSource>>,

    /// Which kinds of token are admitted. Default `[app]` (a person's session). Add `service`
    /// to admit Cloudflare service tokens (`common_name` set, empty `sub`). Cloudflare `org`
    /// tokens (the team-domain session) are never admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(validation = kube::core::Rule::new("self.all(x, self.exists_one(y, x == y))").message("tokenTypes must not repeat").reason(kube::core::Reason::FieldValueDuplicate))]
    pub token_types: Option<Vec<TokenType>>,

    /// Signature algorithms accepted. Default `[RS256]` (what Cloudflare Access uses).
    /// Only asymmetric algorithms exist here: `none` and HMAC are never accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 9))]
    pub algorithms: Option<Vec<SigningAlgorithm>>,

    /// Clock skew tolerated on `exp` and `nbf`, as a duration such as `60s` or `2m`.
    /// Default `60s`, at most `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,4}(ms|s|m)$"))]
    #[x_kube(validation = kube::core::Rule::new("duration(self) <= duration('5m')").message("leeway must be at most 5m").reason(kube::core::Reason::FieldValueInvalid))]
    pub leeway: Option<String>,

    /// Identity headers set on an allowed request, from token claims. Default when omitted:
    /// `email` to `X-Auth-Request-Email` and `sub` to `X-Auth-Request-User`. List each header
    /// in the Ingress `auth-response-headers` annotation so ingress-nginx forwards it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = kube::core::Rule::new("self.all(x, self.exists_one(y, x.header.lowerAscii() == y.header.lowerAscii()))").message("claimHeaders must not name a header twice").reason(kube::core::Reason::FieldValueDuplicate))]
    pub claim_headers: Option<Vec<ClaimHeader>>,

    /// Who may pass, beyond holding a valid token for the audience: `deny` matchers are
    /// checked first and win; then, if `allow` is not empty, one of its matchers must match.
    /// No rules: any valid token is allowed. A refused token gets 403 `rule_denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<RulesSpec>,

    /// Cloudflare identity enrichment: after the token verifies, fetch the user's full
    /// identity (`get-identity`: group names, identity provider, device posture, country),
    /// which Access JWTs do not carry reliably. Exposed to `claimHeaders` and `rules` under
    /// the `identity.` prefix: `identity.groups`, `identity.idp.type`, `identity.country`,
    /// `identity.devicePosture.<rule name>` (true/false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentitySpec>,

    /// `enforce` (default): the policy's verdict is the answer. `dryRun`: the policy is
    /// evaluated on every request it is selected for and its would-be verdict is counted
    /// (`accessgate_dry_run_decisions_total`) and logged, but it answers nothing: the request
    /// is answered as if the policy did not exist (another enforcing policy on the route
    /// decides; with none, it is allowed, with identity headers only when this policy would
    /// have allowed). For putting an app that has no auth today behind accessgate. Shown as
    /// `Ready` reason `DryRun`, with a Warning Event when turned on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PolicyMode>,

    /// A candidate version of the authorization, evaluated on the same requests beside the
    /// live one and never affecting the answer: disagreements are counted
    /// (`accessgate_candidate_decisions_total`), logged at a bounded rate and summarised in the
    /// `CandidateAgrees` condition. Each field omitted is the live one. Promote it by moving
    /// its fields into the spec and removing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<CandidateSpec>,

    /// Add a short-lived JWT signed by accessgate to every allowed request, so the app can
    /// verify who was let in and by which policy however the request reached it: ES256,
    /// issuer = this install, audience = `audience`, with `sub`, `email`, `groups` (enriched
    /// ones included), the claims `claimHeaders` map, `policy`, `iat` and `exp`. Apps verify
    /// it against the JWKS accessgate serves at `/.well-known/jwks.json` on its auth port.
    /// No signing key: every request is denied (`503 assertion_unavailable`), never sent on
    /// without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_assertion: Option<UpstreamAssertionSpec>,
}

/// The signed identity handed to the app.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamAssertionSpec {
    /// The token's `aud`: the app it is for (a token for one app is refused by another). A
    /// name such as `grafana` or a URL, 1 to 256 characters.
    #[schemars(length(min = 1, max = 256))]
    pub audience: String,
    /// The request header that carries it. Default `X-Accessgate-Assertion`. Letters, digits
    /// and dashes; not a reserved name, not a `claimHeaders` header. List it in the Ingress
    /// `auth-response-headers` like the identity headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9-]*$')").message("header must contain only letters, digits and dashes").reason(kube::core::Reason::FieldValueInvalid))]
    #[x_kube(validation = assertion_header_rule())]
    pub header: Option<String>,
    /// Lifetime, as `<n>s` or `<n>m`: default `60s`, from `10s` to `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,4}(s|m)$"))]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('5m')").message("ttl must be from 10s to 5m").reason(kube::core::Reason::FieldValueInvalid))]
    pub ttl: Option<String>,
}

/// Whether a policy enforces its verdict.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum PolicyMode {
    /// The verdict is the answer.
    #[default]
    Enforce,
    /// The verdict is counted and logged, never the answer.
    DryRun,
}

/// The parts of a policy a candidate may change: who is let in and what the app is told.
/// Issuer, keys, token sources and routes are shared with the live policy (a candidate is
/// evaluated on the requests the live policy selects).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CandidateSpec {
    /// Replaces `audiences` (same limits; with `issuer.teamDomain`, AUD tags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 256)))]
    #[x_kube(validation = kube::core::Rule::new("self.all(a, size(a) > 0 && size(a) <= 256)").message("audiences must be 1 to 256 characters").reason(kube::core::Reason::FieldValueInvalid))]
    pub audiences: Option<Vec<String>>,
    /// Replaces `rules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<RulesSpec>,
    /// Replaces `claimHeaders`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = kube::core::Rule::new("self.all(x, self.exists_one(y, x.header.lowerAscii() == y.header.lowerAscii()))").message("claimHeaders must not name a header twice").reason(kube::core::Reason::FieldValueDuplicate))]
    pub claim_headers: Option<Vec<ClaimHeader>>,
}

/// Where and how to fetch the identity.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = kube::core::Rule::new("!has(self.cacheFor) || duration(self.cacheFor) <= duration('60m')").message("identity.cacheFor must be at most 60m").reason(kube::core::Reason::FieldValueInvalid).field_path(".cacheFor"))]
#[serde(rename_all = "camelCase")]
pub struct IdentitySpec {
    /// The get-identity endpoint. Default `<issuer>/cdn-cgi/access/get-identity`. https only,
    /// except on loopback hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && (url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && (url(self).getHostname().startsWith('127.') || url(self).getHostname() == 'localhost' || url(self).getHostname() == '::1')))").message("identity.url must be an https URL (http only on loopback)").reason(kube::core::Reason::FieldValueInvalid))]
    pub url: Option<String>,
    /// What to do when the identity cannot be fetched: `deny` (default; 503
    /// `identity_unavailable`) or `continueWithoutIdentity` (decide on the token alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<IdentityOnError>,
    /// How long a fetched identity is reused (per `identity_nonce`, never past the token's
    /// `exp`), as `<n>s` or `<n>m`. Default `5m`, at most `60m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,4}(s|m)$"))]
    pub cache_for: Option<String>,
}

/// Behaviour when the identity endpoint fails.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum IdentityOnError {
    Deny,
    ContinueWithoutIdentity,
}

/// Allow and deny matchers.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RulesSpec {
    /// Claim holding the user's groups, as a dotted path. Default `custom.groups` (Cloudflare
    /// puts identity-provider groups there when configured to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub groups_claim: Option<String>,
    /// A token must match one of these (when any are listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub allow: Vec<Matcher>,
    /// A token matching any of these is refused, whatever `allow` says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub deny: Vec<Matcher>,
}

/// One condition on the token: set exactly one field. A claim the token lacks never matches.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = kube::core::Rule::new("[has(self.email), has(self.emailDomain), has(self.group), has(self.serviceToken), has(self.country)].filter(x, x).size() == 1").message("a matcher sets exactly one of email, emailDomain, group, serviceToken, country").reason(kube::core::Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase")]
pub struct Matcher {
    /// The `email` claim equals this, ignoring ASCII case only. Printable ASCII, with a DNS
    /// domain. A token whose email is not a plain ASCII address (or, with `issuer.url`, has
    /// `email_verified` other than true) never matches an `allow` email matcher and always
    /// matches a `deny` one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[!-?A-~]+@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$')").message("email must look like user@domain, in printable ASCII").reason(kube::core::Reason::FieldValueInvalid))]
    pub email: Option<String>,
    /// The `email` claim is in this domain (exactly, ignoring ASCII case only; `example.com`
    /// does not match `a.example.com`). Unusable emails are handled as for `email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$')").message("emailDomain must be an ASCII domain name without '@'").reason(kube::core::Reason::FieldValueInvalid))]
    pub email_domain: Option<String>,
    /// The groups claim (`groupsClaim`) contains this group (exact, case-sensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub group: Option<String>,
    /// A service token with this `common_name` (the Cloudflare service token's Client ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub service_token: Option<String>,
    /// The `country` claim (ISO 3166-1 alpha-2, as Cloudflare sets it) equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z]{2}$"))]
    pub country: Option<String>,
}

/// The token issuer: exactly one of `teamDomain` or `url` (with `jwksUri`).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = kube::core::Rule::new("has(self.teamDomain) != has(self.url)").message("set exactly one of issuer.teamDomain or issuer.url").reason(kube::core::Reason::FieldValueRequired).field_path(".teamDomain"))]
#[x_kube(validation = kube::core::Rule::new("has(self.url) == has(self.jwksUri)").message("issuer.url and issuer.jwksUri go together").reason(kube::core::Reason::FieldValueRequired).field_path(".jwksUri"))]
#[serde(rename_all = "camelCase")]
pub struct IssuerSpec {
    /// Cloudflare Access team domain, such as `myteam.cloudflareaccess.com`. The token issuer
    /// is then `https://<teamDomain>` and keys come from `https://<teamDomain>/cdn-cgi/access/certs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$')").message("teamDomain must be a lowercase DNS name such as myteam.cloudflareaccess.com, without scheme or path").reason(kube::core::Reason::FieldValueInvalid))]
    pub team_domain: Option<String>,

    /// Issuer URL for a non-Cloudflare issuer; the token's `iss` must equal it exactly.
    /// Must be `https://`, except on loopback hosts (for local tests and demos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && (url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && (url(self).getHostname().startsWith('127.') || url(self).getHostname() == 'localhost' || url(self).getHostname() == '::1')))").message("issuer.url must be an https URL (http only on loopback)").reason(kube::core::Reason::FieldValueInvalid))]
    pub url: Option<String>,

    /// JWKS endpoint for `url` (a plain JWKS or Cloudflare's certs document).
    /// Same scheme rule as `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && (url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && (url(self).getHostname().startsWith('127.') || url(self).getHostname() == 'localhost' || url(self).getHostname() == '::1')))").message("issuer.jwksUri must be an https URL (http only on loopback)").reason(kube::core::Reason::FieldValueInvalid))]
    pub jwks_uri: Option<String>,
}

/// A place the token may be carried.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenSource {
    /// The `Cf-Access-Jwt-Assertion` request header.
    Header,
    /// The `CF_Authorization` cookie.
    Cookie,
    /// `Authorization: Bearer <token>`.
    Bearer,
}

/// A kind of Access token.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    /// A person's application session.
    App,
    /// A Cloudflare service token (machine client).
    Service,
}

/// An asymmetric JWS algorithm.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// One identity header built from a claim.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new("!(has(self.join) && has(self.format) && self.format == 'json')").message("join and format: json are exclusive").reason(kube::core::Reason::FieldValueForbidden).field_path(".format"))]
#[serde(rename_all = "camelCase")]
pub struct ClaimHeader {
    /// Header name sent to the upstream, such as `X-Auth-Request-Email`. Letters, digits and
    /// dashes only (ingress-nginx drops names with underscores); hop-by-hop, credential and
    /// request-describing names (Host, Cookie, Authorization, Set-Cookie, Forwarded,
    /// X-Real-IP, X-Request-ID, `X-Forwarded-*`, `X-Original-*`, `X-Envoy-*`,
    /// `X-Accessgate-*`, ...) are refused.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9-]*$')").message("header must contain only letters, digits and dashes").reason(kube::core::Reason::FieldValueInvalid))]
    #[x_kube(validation = reserved_header_rule())]
    pub header: String,

    /// Claim to read, as a dotted path into nested objects (`email`, `custom.groups`).
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[^.]+(\\\\.[^.]+)*$')").message("claim must be a dotted path without empty segments").reason(kube::core::Reason::FieldValueInvalid))]
    pub claim: String,

    /// For array claims: join the elements with this separator (default `,`). An element
    /// holding the separator (its non-space part: `,` for `, `; any whitespace for a
    /// separator of spaces) would read as two elements to an app splitting the header, so
    /// the header is then not sent (counted as `separator_in_item`). For lists whose
    /// elements may hold it, use `format: json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8))]
    pub join: Option<String>,

    /// How non-string values are written: `text` (default; arrays joined) or `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ClaimFormat>,
}

/// How a claim value becomes header text: `text` (default; arrays joined with `join`) or
/// `json` (the claim's JSON text, the safe choice for lists whose elements may hold the
/// separator).
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClaimFormat {
    /// Strings as-is, numbers and booleans as JSON text, arrays joined, objects as JSON.
    Text,
    /// The claim's JSON text: the safe choice for lists whose elements may hold a separator.
    Json,
}

/// Header names a claim may never be written to: hop-by-hop, framing, credentials, and the
/// headers proxies and apps trust to describe the original request and client. Lowercase.
/// The CRD's CEL rule is built from this list and [`RESERVED_HEADER_PREFIXES`], so the two
/// validations cannot drift apart.
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "cookie",
    "authorization",
    "set-cookie",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-authenticate",
    "www-authenticate",
    "cache-control",
    "cf-access-jwt-assertion",
    "x-real-ip",
    "forwarded",
    "x-request-id",
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
];

/// Header name prefixes a claim may never be written to (lowercase): the proxies' own
/// descriptions of the request (`X-Forwarded-*`; ingress-nginx's `X-Original-URL`,
/// `-URI`, `-Method`, `-Forwarded-For`), Envoy's internal headers, and accessgate's own.
pub const RESERVED_HEADER_PREFIXES: &[&str] =
    &["x-forwarded-", "x-original-", "x-envoy-", "x-accessgate-"];

/// Whether a claim header may not use this name (compared ASCII-case-insensitively).
pub fn is_reserved_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_HEADERS.contains(&lower.as_str())
        || RESERVED_HEADER_PREFIXES
            .iter()
            .any(|p| lower.starts_with(p))
}

/// Whether the assertion may not be carried in this header: the reserved names, except
/// accessgate's own `X-Accessgate-*` (the default is `X-Accessgate-Assertion`).
pub fn is_reserved_assertion_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !lower.starts_with("x-accessgate-") && is_reserved_header(&lower)
}

/// The CEL twin of [`is_reserved_assertion_header`].
fn assertion_header_rule() -> kube::core::Rule {
    let quoted = |list: &[&str]| {
        list.iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let prefixes: Vec<&str> = RESERVED_HEADER_PREFIXES
        .iter()
        .copied()
        .filter(|p| *p != "x-accessgate-")
        .collect();
    kube::core::Rule::new(format!(
        "!(self.lowerAscii() in [{}]) && ![{}].exists(p, self.lowerAscii().startsWith(p))",
        quoted(RESERVED_HEADERS),
        quoted(&prefixes)
    ))
    .message("this header name is reserved")
    .reason(kube::core::Reason::FieldValueForbidden)
}

/// The CEL twin of [`is_reserved_header`], built from the same lists.
fn reserved_header_rule() -> kube::core::Rule {
    let quoted = |list: &[&str]| {
        list.iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    kube::core::Rule::new(format!(
        "!(self.lowerAscii() in [{}]) && ![{}].exists(p, self.lowerAscii().startsWith(p))",
        quoted(RESERVED_HEADERS),
        quoted(RESERVED_HEADER_PREFIXES)
    ))
    .message("this header name is reserved")
    .reason(kube::core::Reason::FieldValueForbidden)
}
