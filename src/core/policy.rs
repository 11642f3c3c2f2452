//! A policy as the core decides with it: an [`AccessPolicySpec`] validated and compiled into
//! its ready-to-enforce form. Pure: no I/O, no clock. The same checks as the CRD's CEL rules
//! ([`crate::api::policy`]), so a policy from a file gets the errors the API server gives.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderName;
use jsonwebtoken::Algorithm;
use url::Url;

use crate::api::{
    AccessPolicySpec, ClaimFormat, IdentityOnError, Matcher, PolicyMode, SigningAlgorithm,
    TokenSource, TokenType, is_reserved_assertion_header, is_reserved_header,
};

/// `namespace/name` of a policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub namespace: String,
    pub name: String,
}

impl PolicyKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A policy field that fails validation: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CompileError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> CompileError {
    CompileError {
        field: field.into(),
        message: message.into(),
    }
}

/// Whether the issuer is Cloudflare Access (which always sets `type`) or generic OIDC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssuerKind {
    CloudflareAccess,
    Generic,
}

/// How a claim value is turned into header text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimEncoding {
    /// Arrays joined with the separator; other non-strings as JSON text.
    Text { join: String },
    /// The value's JSON text.
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledClaimHeader {
    pub header: HeaderName,
    /// The claim as written (`custom.team`): the upstream assertion names it so.
    pub claim: String,
    pub path: Vec<String>,
    pub encoding: ClaimEncoding,
}

/// A validated policy, in the form the data path consults on every request.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    pub key: PolicyKey,
    /// `namespace/name`, made once: every decision is counted and logged under it.
    pub label: Arc<str>,
    pub generation: Option<i64>,
    pub issuer: String,
    pub issuer_kind: IssuerKind,
    pub jwks_uri: Url,
    pub audiences: HashSet<String>,
    /// (host, path prefix) pairs for the bare `/auth` endpoint.
    pub routes: Vec<(String, String)>,
    pub token_sources: Vec<TokenSource>,
    pub admit_app: bool,
    pub admit_service: bool,
    pub algorithms: Vec<Algorithm>,
    pub leeway_secs: u64,
    pub claim_headers: Vec<CompiledClaimHeader>,
    pub rules: CompiledRules,
    pub identity: Option<CompiledIdentity>,
    /// `spec.mode: dryRun`: evaluated and counted, never the answer (docs/routing.md, "Dry-run
    /// policies").
    pub dry_run: bool,
    /// `spec.candidate`: evaluated beside this policy, never the answer.
    pub candidate: Option<Candidate>,
    /// `spec.upstreamAssertion`: a signed JWT for the app on every allow.
    pub assertion: Option<CompiledAssertion>,
}

/// `spec.upstreamAssertion`, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledAssertion {
    pub audience: String,
    pub header: HeaderName,
    pub ttl: Duration,
}

/// The assertion header when a policy names none.
pub const DEFAULT_ASSERTION_HEADER: &str = "x-accessgate-assertion";

/// A policy's candidate authorization, or why it does not compile. A candidate that fails
/// is the candidate's own problem: the live policy is enforced as it is.
#[derive(Clone, Debug)]
pub enum Candidate {
    Ready(ReadyCandidate),
    Invalid(CompileError),
}

/// A compiled candidate.
#[derive(Clone, Debug)]
pub struct ReadyCandidate {
    /// The live policy with the candidate's audiences, rules and claim headers.
    pub policy: Arc<CompiledPolicy>,
    /// Its audiences differ from the live policy's, so the token's claim checks must run
    /// again for it; otherwise the live verification is its own.
    pub own_audiences: bool,
}

impl Candidate {
    pub fn ready(&self) -> Option<&ReadyCandidate> {
        match self {
            Candidate::Ready(c) => Some(c),
            Candidate::Invalid(_) => None,
        }
    }
}

/// `spec.identity`, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledIdentity {
    pub url: Url,
    pub deny_on_error: bool,
    pub cache_for: Duration,
}

/// One allow/deny condition, normalised for matching (emails, domains and countries
/// lowercase).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompiledMatcher {
    Email(String),
    EmailDomain(String),
    Group(String),
    ServiceToken(String),
    Country(String),
}

/// `spec.rules`, compiled. Empty lists: nothing denied, everything allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledRules {
    pub groups_path: Vec<String>,
    /// Whether email matchers consult `email_verified` (generic issuers; Cloudflare Access
    /// does not send it).
    pub check_email_verified: bool,
    pub allow: Vec<CompiledMatcher>,
    pub deny: Vec<CompiledMatcher>,
}

pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
const DEFAULT_LEEWAY_SECS: u64 = 60;

/// Validates `spec` and compiles it. Errors name the offending field (`spec.audiences[1]`).
pub fn compile(
    key: PolicyKey,
    generation: Option<i64>,
    spec: &AccessPolicySpec,
) -> Result<CompiledPolicy, CompileError> {
    check_class_name(spec)?;
    let (issuer, issuer_kind, jwks_uri) = compile_issuer(spec)?;
    let identity = compile_identity(spec, &issuer)?;
    let audiences = compile_audiences(spec, issuer_kind)?;
    let routes = compile_routes(spec)?;

    let token_sources = no_repeats(
        "spec.tokenSources",
        spec.token_sources
            .clone()
            .unwrap_or_else(|| vec![TokenSource::Header, TokenSource::Cookie]),
    )?;
    let token_types = no_repeats(
        "spec.tokenTypes",
        spec.token_types
            .clone()
            .unwrap_or_else(|| vec![TokenType::App]),
    )?;
    let algorithms = no_repeats(
        "spec.algorithms",
        spec.algorithms
            .clone()
            .unwrap_or_else(|| vec![SigningAlgorithm::RS256]),
    )?
    .into_iter()
    .map(jws_algorithm)
    .collect();

    Ok(CompiledPolicy {
        label: key.to_string().into(),
        key,
        generation,
        issuer,
        issuer_kind,
        jwks_uri,
        audiences,
        routes,
        token_sources,
        admit_app: token_types.contains(&TokenType::App),
        admit_service: token_types.contains(&TokenType::Service),
        algorithms,
        leeway_secs: compile_leeway(spec.leeway.as_deref())?,
        claim_headers: compile_claim_headers(spec)?,
        rules: compile_rules(spec, issuer_kind)?,
        identity,
        dry_run: spec.mode == Some(PolicyMode::DryRun),
        candidate: None,
        assertion: compile_assertion(spec)?,
    })
    .map(|live| with_candidate(live, spec))
}

/// `live` with its candidate compiled beside it: the live spec with the candidate's fields in
/// place of its own, through the same checks, its errors named under `spec.candidate`.
fn with_candidate(mut live: CompiledPolicy, spec: &AccessPolicySpec) -> CompiledPolicy {
    let Some(c) = &spec.candidate else {
        return live;
    };
    let merged = AccessPolicySpec {
        audiences: c
            .audiences
            .clone()
            .unwrap_or_else(|| spec.audiences.clone()),
        rules: c.rules.clone().or_else(|| spec.rules.clone()),
        claim_headers: c
            .claim_headers
            .clone()
            .or_else(|| spec.claim_headers.clone()),
        ..spec.clone()
    };
    let compiled = (|| {
        Ok::<_, CompileError>(CompiledPolicy {
            audiences: compile_audiences(&merged, live.issuer_kind)?,
            claim_headers: compile_claim_headers(&merged)?,
            rules: compile_rules(&merged, live.issuer_kind)?,
            dry_run: false,
            candidate: None,
            // A candidate is compared, never signed for: no assertion payload per request.
            assertion: None,
            ..live.clone()
        })
    })();
    live.candidate = Some(match compiled {
        Ok(p) => Candidate::Ready(ReadyCandidate {
            own_audiences: p.audiences != live.audiences,
            policy: Arc::new(p),
        }),
        Err(e) => Candidate::Invalid(CompileError {
            field: e.field.replacen("spec.", "spec.candidate.", 1),
            message: e.message,
        }),
    });
    live
}

fn compile_issuer(spec: &AccessPolicySpec) -> Result<(String, IssuerKind, Url), CompileError> {
    let issuer = &spec.issuer;
    match (&issuer.team_domain, &issuer.url, &issuer.jwks_uri) {
        (Some(team), None, None) => {
            if !is_dns_name(team) || !team.contains('.') {
                return Err(err(
                    "spec.issuer.teamDomain",
                    "must be a lowercase DNS name such as myteam.cloudflareaccess.com, without scheme or path",
                ));
            }
            let iss = format!("https://{team}");
            let jwks = Url::parse(&format!("{iss}/cdn-cgi/access/certs"))
                .map_err(|e| err("spec.issuer.teamDomain", e.to_string()))?;
            Ok((iss, IssuerKind::CloudflareAccess, jwks))
        }
        (None, Some(url), Some(jwks)) => {
            check_issuer_url("spec.issuer.url", url)?;
            let jwks = check_issuer_url("spec.issuer.jwksUri", jwks)?;
            Ok((url.clone(), IssuerKind::Generic, jwks))
        }
        (None, None, None) => Err(err(
            "spec.issuer",
            "set exactly one of issuer.teamDomain or issuer.url",
        )),
        (Some(_), Some(_), _) => Err(err(
            "spec.issuer",
            "set exactly one of issuer.teamDomain or issuer.url",
        )),
        _ => Err(err(
            "spec.issuer",
            "issuer.url and issuer.jwksUri go together",
        )),
    }
}

/// https everywhere, plain http only where the traffic cannot leave the machine.
fn check_issuer_url(field: &str, raw: &str) -> Result<Url, CompileError> {
    let url = Url::parse(raw).map_err(|e| err(field, format!("not a URL: {e}")))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(err(field, "must be an https URL (http only on loopback)")),
    }
}

fn compile_audiences(
    spec: &AccessPolicySpec,
    kind: IssuerKind,
) -> Result<HashSet<String>, CompileError> {
    if spec.audiences.is_empty() {
        return Err(err("spec.audiences", "at least one audience is required"));
    }
    if spec.audiences.len() > 32 {
        return Err(err("spec.audiences", "at most 32 audiences"));
    }
    for (i, aud) in spec.audiences.iter().enumerate() {
        if aud.is_empty() || aud.len() > 256 {
            return Err(err(
                format!("spec.audiences[{i}]"),
                "audiences must be 1 to 256 characters",
            ));
        }
        if kind == IssuerKind::CloudflareAccess && !is_aud_tag(aud) {
            return Err(err(
                format!("spec.audiences[{i}]"),
                "with issuer.teamDomain, every audience must be a Cloudflare Access AUD tag (64 lowercase hex characters)",
            ));
        }
    }
    Ok(spec.audiences.iter().cloned().collect())
}

fn is_aud_tag(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn compile_routes(spec: &AccessPolicySpec) -> Result<Vec<(String, String)>, CompileError> {
    if spec.hosts.len() > 64 || spec.paths.len() > 64 {
        return Err(err("spec.hosts", "at most 64 hosts and 64 paths"));
    }
    if !spec.paths.is_empty() && spec.hosts.is_empty() {
        return Err(err(
            "spec.paths",
            "paths route the bare /auth endpoint and need hosts",
        ));
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        if !crate::core::hosts::is_host_pattern(host) {
            return Err(err(
                format!("spec.hosts[{i}]"),
                "hosts must be lowercase DNS names without port, or *. and a suffix of two or more labels",
            ));
        }
    }
    for (i, path) in spec.paths.iter().enumerate() {
        if !path.starts_with('/') || path.len() > 1024 {
            return Err(err(format!("spec.paths[{i}]"), "paths must start with '/'"));
        }
    }
    let default_paths = ["/".to_string()];
    let paths: &[String] = if spec.paths.is_empty() {
        &default_paths
    } else {
        &spec.paths
    };
    Ok(spec
        .hosts
        .iter()
        .flat_map(|h| paths.iter().map(move |p| (h.clone(), normalise_prefix(p))))
        .collect())
}

/// `/app/` and `/app` are the same segment prefix.
fn normalise_prefix(p: &str) -> String {
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    }
}

/// A lowercase DNS name: dot-separated labels of `a-z`, `0-9` and inner `-`, at most 63
/// bytes each and 253 in all. No trailing dot, no empty label, nothing outside ASCII.
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// One DNS label (RFC 1123): `a-z`, `0-9` and inner `-`, at most 63 bytes.
pub fn is_dns_label(s: &str) -> bool {
    !s.contains('.') && is_dns_name(s)
}

/// `spec.className`, when set, is a DNS label (the CRD's CEL rule says the same). Checked
/// before a source decides whose a policy is: a malformed class matches no install, so it
/// is refused rather than silently served by none.
pub fn check_class_name(spec: &AccessPolicySpec) -> Result<(), CompileError> {
    match spec.class_name.as_deref() {
        Some(class) if !is_dns_label(class) => Err(err(
            "spec.className",
            "className must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit",
        )),
        _ => Ok(()),
    }
}

fn no_repeats<T: PartialEq + fmt::Debug>(
    field: &str,
    items: Vec<T>,
) -> Result<Vec<T>, CompileError> {
    if items.is_empty() {
        return Err(err(field, "must not be empty"));
    }
    for (i, item) in items.iter().enumerate() {
        if items[..i].contains(item) {
            return Err(err(
                format!("{field}[{i}]"),
                format!("{item:?} is listed twice"),
            ));
        }
    }
    Ok(items)
}

fn jws_algorithm(a: SigningAlgorithm) -> Algorithm {
    match a {
        SigningAlgorithm::RS256 => Algorithm::RS256,
        SigningAlgorithm::RS384 => Algorithm::RS384,
        SigningAlgorithm::RS512 => Algorithm::RS512,
        SigningAlgorithm::PS256 => Algorithm::PS256,
        SigningAlgorithm::PS384 => Algorithm::PS384,
        SigningAlgorithm::PS512 => Algorithm::PS512,
        SigningAlgorithm::ES256 => Algorithm::ES256,
        SigningAlgorithm::ES384 => Algorithm::ES384,
        SigningAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// A duration in the shape the CRD schema allows (`<1-4 digits><unit>`, `units` as its
/// pattern lists them), read by humantime, at most `max`.
fn schema_duration(
    raw: &str,
    field: &str,
    units: &[&str],
    max: Duration,
    shape: &str,
    too_long: &str,
) -> Result<Duration, CompileError> {
    let digits = raw.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let shape_ok = !digits.is_empty()
        && digits.len() <= 4
        && digits.bytes().all(|b| b.is_ascii_digit())
        && units.contains(&&raw[digits.len()..]);
    let d = shape_ok
        .then(|| humantime::parse_duration(raw).ok())
        .flatten()
        .ok_or_else(|| err(field, shape))?;
    if d > max {
        return Err(err(field, too_long));
    }
    Ok(d)
}

fn compile_leeway(raw: Option<&str>) -> Result<u64, CompileError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LEEWAY_SECS);
    };
    let d = schema_duration(
        raw,
        "spec.leeway",
        &["ms", "s", "m"],
        MAX_LEEWAY,
        "not a duration such as 60s, 500ms or 2m",
        "leeway must be at most 5m",
    )?;
    Ok(d.as_secs())
}

fn compile_claim_headers(
    spec: &AccessPolicySpec,
) -> Result<Vec<CompiledClaimHeader>, CompileError> {
    let Some(list) = &spec.claim_headers else {
        return Ok(vec![
            default_header("x-auth-request-email", "email"),
            default_header("x-auth-request-user", "sub"),
        ]);
    };
    if list.len() > 32 {
        return Err(err("spec.claimHeaders", "at most 32 claim headers"));
    }
    let mut out: Vec<CompiledClaimHeader> = Vec::with_capacity(list.len());
    for (i, ch) in list.iter().enumerate() {
        let field = format!("spec.claimHeaders[{i}]");
        let lower = ch.header.to_ascii_lowercase();
        let valid_name = !lower.is_empty()
            && lower.len() <= 128
            && !lower.starts_with('-')
            && lower
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid_name {
            return Err(err(
                format!("{field}.header"),
                "header must contain only letters, digits and dashes",
            ));
        }
        if is_reserved_header(&lower) {
            return Err(err(
                format!("{field}.header"),
                format!("{} is reserved", ch.header),
            ));
        }
        let header = HeaderName::from_bytes(lower.as_bytes())
            .map_err(|e| err(format!("{field}.header"), e.to_string()))?;
        if out.iter().any(|o| o.header == header) {
            return Err(err(
                format!("{field}.header"),
                "claimHeaders must not name a header twice",
            ));
        }
        let path: Vec<String> = ch.claim.split('.').map(str::to_owned).collect();
        if ch.claim.len() > 256 || path.iter().any(String::is_empty) {
            return Err(err(
                format!("{field}.claim"),
                "claim must be a dotted path without empty segments",
            ));
        }
        let encoding = match (ch.format, &ch.join) {
            (Some(ClaimFormat::Json), Some(_)) => {
                return Err(err(
                    format!("{field}.join"),
                    "join and format: json are exclusive",
                ));
            }
            (Some(ClaimFormat::Json), None) => ClaimEncoding::Json,
            (_, join) => {
                let join = join.clone().unwrap_or_else(|| ",".into());
                if join.len() > 8 || join.chars().any(char::is_control) {
                    return Err(err(
                        format!("{field}.join"),
                        "join must be at most 8 printable characters",
                    ));
                }
                ClaimEncoding::Text { join }
            }
        };
        out.push(CompiledClaimHeader {
            header,
            claim: ch.claim.clone(),
            path,
            encoding,
        });
    }
    Ok(out)
}

fn compile_assertion(spec: &AccessPolicySpec) -> Result<Option<CompiledAssertion>, CompileError> {
    let Some(a) = &spec.upstream_assertion else {
        return Ok(None);
    };
    if a.audience.is_empty() || a.audience.len() > 256 || a.audience.chars().any(char::is_control) {
        return Err(err(
            "spec.upstreamAssertion.audience",
            "audience must be 1 to 256 printable characters",
        ));
    }
    let field = "spec.upstreamAssertion.header";
    let name = a.header.as_deref().unwrap_or(DEFAULT_ASSERTION_HEADER);
    let valid = !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid {
        return Err(err(
            field,
            "header must contain only letters, digits and dashes",
        ));
    }
    if is_reserved_assertion_header(name) {
        return Err(err(field, "this header name is reserved"));
    }
    let lower = name.to_ascii_lowercase();
    if spec
        .claim_headers
        .iter()
        .flatten()
        .any(|h| h.header.eq_ignore_ascii_case(&lower))
    {
        return Err(err(
            field,
            "upstreamAssertion.header must not be a claimHeaders header",
        ));
    }
    let header = HeaderName::from_bytes(lower.as_bytes())
        .map_err(|_| err(field, "header must contain only letters, digits and dashes"))?;
    let ttl = match a.ttl.as_deref() {
        None => Duration::from_secs(60),
        Some(raw) => {
            const SHAPE: &str = "ttl must be from 10s to 5m";
            let d = schema_duration(
                raw,
                "spec.upstreamAssertion.ttl",
                &["s", "m"],
                Duration::from_secs(300),
                SHAPE,
                SHAPE,
            )?;
            if d < Duration::from_secs(10) {
                return Err(err("spec.upstreamAssertion.ttl", SHAPE));
            }
            d
        }
    };
    Ok(Some(CompiledAssertion {
        audience: a.audience.clone(),
        header,
        ttl,
    }))
}

fn compile_identity(
    spec: &AccessPolicySpec,
    issuer: &str,
) -> Result<Option<CompiledIdentity>, CompileError> {
    let Some(id) = &spec.identity else {
        return Ok(None);
    };
    let url = match &id.url {
        Some(u) => check_issuer_url("spec.identity.url", u)?,
        None => check_issuer_url(
            "spec.identity.url",
            &format!(
                "{}/cdn-cgi/access/get-identity",
                issuer.trim_end_matches('/')
            ),
        )?,
    };
    let cache_for = match id.cache_for.as_deref() {
        None => Duration::from_secs(300),
        Some(raw) => schema_duration(
            raw,
            "spec.identity.cacheFor",
            &["s", "m"],
            Duration::from_secs(3600),
            "a duration such as 90s or 5m, at most 60m",
            "a duration such as 90s or 5m, at most 60m",
        )?,
    };
    Ok(Some(CompiledIdentity {
        url,
        deny_on_error: id.on_error != Some(IdentityOnError::ContinueWithoutIdentity),
        cache_for,
    }))
}

fn compile_rules(spec: &AccessPolicySpec, kind: IssuerKind) -> Result<CompiledRules, CompileError> {
    let rules = spec.rules.clone().unwrap_or_default();
    let groups_claim = rules.groups_claim.as_deref().unwrap_or("custom.groups");
    let groups_path: Vec<String> = groups_claim.split('.').map(str::to_owned).collect();
    if groups_claim.len() > 256 || groups_path.iter().any(String::is_empty) {
        return Err(err(
            "spec.rules.groupsClaim",
            "must be a dotted path without empty segments",
        ));
    }
    if rules.allow.len() > 256 || rules.deny.len() > 256 {
        return Err(err("spec.rules", "at most 256 allow and 256 deny matchers"));
    }
    let compile_list =
        |list: &[Matcher], field: &str| -> Result<Vec<CompiledMatcher>, CompileError> {
            list.iter()
                .enumerate()
                .map(|(i, m)| compile_matcher(m, &format!("spec.rules.{field}[{i}]")))
                .collect()
        };
    Ok(CompiledRules {
        groups_path,
        check_email_verified: kind == IssuerKind::Generic,
        allow: compile_list(&rules.allow, "allow")?,
        deny: compile_list(&rules.deny, "deny")?,
    })
}

fn compile_matcher(m: &Matcher, field: &str) -> Result<CompiledMatcher, CompileError> {
    let set = [
        &m.email,
        &m.email_domain,
        &m.group,
        &m.service_token,
        &m.country,
    ]
    .iter()
    .filter(|f| f.is_some())
    .count();
    if set != 1 {
        return Err(err(
            field,
            "a matcher sets exactly one of email, emailDomain, group, serviceToken, country",
        ));
    }
    let nonempty = |v: &str, max: usize, what: &str| {
        if v.is_empty() || v.len() > max || v.chars().any(char::is_control) {
            Err(err(
                field,
                format!("{what} must be 1 to {max} printable characters"),
            ))
        } else {
            Ok(())
        }
    };
    // Emails and domains are ASCII only and fold ASCII case only (see `rules`): a value
    // with anything else could never match a token's email, which would make it a silent
    // no-op in `allow` and a catch-all in `deny`.
    if let Some(e) = &m.email {
        let ok = e.len() <= 254
            && e.split_once('@').is_some_and(|(u, d)| {
                !u.is_empty()
                    && u.bytes().all(|b| b.is_ascii_graphic())
                    && is_dns_name(&d.to_ascii_lowercase())
            });
        if !ok {
            return Err(err(
                format!("{field}.email"),
                "email must look like user@domain, in printable ASCII",
            ));
        }
        return Ok(CompiledMatcher::Email(e.to_ascii_lowercase()));
    }
    if let Some(d) = &m.email_domain {
        let lower = d.to_ascii_lowercase();
        if !is_dns_name(&lower) {
            return Err(err(
                format!("{field}.emailDomain"),
                "emailDomain must be an ASCII domain name without '@'",
            ));
        }
        return Ok(CompiledMatcher::EmailDomain(lower));
    }
    if let Some(g) = &m.group {
        nonempty(g, 256, "group")?;
        return Ok(CompiledMatcher::Group(g.clone()));
    }
    if let Some(cn) = &m.service_token {
        nonempty(cn, 256, "serviceToken")?;
        return Ok(CompiledMatcher::ServiceToken(cn.clone()));
    }
    let country = m.country.as_deref().unwrap_or_default();
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(err(
            format!("{field}.country"),
            "country must be an ISO 3166-1 alpha-2 code such as US",
        ));
    }
    Ok(CompiledMatcher::Country(country.to_ascii_uppercase()))
}

fn default_header(name: &'static str, claim: &str) -> CompiledClaimHeader {
    CompiledClaimHeader {
        header: HeaderName::from_static(name),
        claim: claim.to_owned(),
        path: vec![claim.to_owned()],
        encoding: ClaimEncoding::Text { join: ",".into() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ClaimHeader, IssuerSpec, Matcher, RulesSpec};

    const AUD: &str = "4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2";

    fn spec() -> AccessPolicySpec {
        AccessPolicySpec {
            issuer: IssuerSpec {
                team_domain: Some("myteam.cloudflareaccess.com".into()),
                ..Default::default()
            },
            audiences: vec![AUD.into()],
            ..Default::default()
        }
    }

    fn compile_spec(s: &AccessPolicySpec) -> Result<CompiledPolicy, CompileError> {
        compile(PolicyKey::new("ns", "p"), Some(1), s)
    }

    /// Every count and length limit at its edge: the largest value compiles, one more is
    /// refused (a file-mode policy meets these without the CRD's schema in front).
    #[test]
    fn limits_hold_at_their_edges() {
        let generic = || AccessPolicySpec {
            issuer: IssuerSpec {
                url: Some("https://issuer.example".into()),
                jwks_uri: Some("https://issuer.example/certs".into()),
                ..Default::default()
            },
            audiences: vec!["aud".into()],
            ..Default::default()
        };
        type Edit = Box<dyn Fn(&mut AccessPolicySpec, usize)>;
        let header = |i: usize, claim: String| ClaimHeader {
            header: format!("X-Claim-{i}"),
            claim,
            join: None,
            format: None,
        };
        fn domains(n: usize) -> Vec<Matcher> {
            (0..n)
                .map(|i| Matcher {
                    email_domain: Some(format!("d{i}.example.com")),
                    ..Default::default()
                })
                .collect()
        }
        let edges: [(&str, usize, Edit); 13] = [
            (
                "audiences",
                32,
                Box::new(|s, n| s.audiences = (0..n).map(|i| format!("aud-{i}")).collect()),
            ),
            (
                "join length",
                8,
                Box::new(move |s, n| {
                    s.claim_headers = Some(vec![ClaimHeader {
                        join: Some(";".repeat(n)),
                        ..header(0, "groups".into())
                    }])
                }),
            ),
            (
                "groupsClaim length",
                256,
                Box::new(|s, n| {
                    s.rules = Some(RulesSpec {
                        groups_claim: Some("g".repeat(n)),
                        ..Default::default()
                    })
                }),
            ),
            (
                "audience length",
                256,
                Box::new(|s, n| s.audiences = vec!["a".repeat(n)]),
            ),
            (
                "hosts",
                64,
                Box::new(|s, n| s.hosts = (0..n).map(|i| format!("h{i}.example.com")).collect()),
            ),
            (
                "paths",
                64,
                Box::new(|s, n| {
                    s.hosts = vec!["h.example.com".into()];
                    s.paths = (0..n).map(|i| format!("/p{i}")).collect()
                }),
            ),
            (
                "path length",
                1024,
                Box::new(|s, n| {
                    s.hosts = vec!["h.example.com".into()];
                    s.paths = vec![format!("/{}", "p".repeat(n - 1))]
                }),
            ),
            (
                "leeway digits",
                4,
                Box::new(|s, n| s.leeway = Some(format!("{}ms", "1".repeat(n)))),
            ),
            (
                "claim headers",
                32,
                Box::new(move |s, n| {
                    s.claim_headers = Some((0..n).map(|i| header(i, format!("c{i}"))).collect())
                }),
            ),
            (
                "claim length",
                256,
                Box::new(move |s, n| s.claim_headers = Some(vec![header(0, "c".repeat(n))])),
            ),
            (
                "group length",
                256,
                Box::new(|s, n| {
                    s.rules = Some(RulesSpec {
                        allow: vec![Matcher {
                            group: Some("g".repeat(n)),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                }),
            ),
            (
                "allow matchers",
                256,
                Box::new(|s, n| {
                    s.rules = Some(RulesSpec {
                        allow: domains(n),
                        ..Default::default()
                    })
                }),
            ),
            (
                "deny matchers",
                256,
                Box::new(|s, n| {
                    s.rules = Some(RulesSpec {
                        deny: domains(n),
                        ..Default::default()
                    })
                }),
            ),
        ];
        for (what, most, edit) in edges {
            let mut s = generic();
            edit(&mut s, most);
            assert!(
                compile_spec(&s).is_ok(),
                "{what}: {most}: {:?}",
                compile_spec(&s).err()
            );
            let mut s = generic();
            edit(&mut s, most + 1);
            assert!(compile_spec(&s).is_err(), "{what}: {}", most + 1);
        }
    }

    #[test]
    fn an_issuer_names_exactly_one_kind_and_says_which_is_missing() {
        let with = |issuer: IssuerSpec| {
            compile_spec(&AccessPolicySpec {
                issuer,
                audiences: vec!["aud".into()],
                ..Default::default()
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        let one = "spec.issuer: set exactly one of issuer.teamDomain or issuer.url";
        assert_eq!(with(IssuerSpec::default()), Err(one.to_owned()));
        assert_eq!(
            with(IssuerSpec {
                team_domain: Some("t.cloudflareaccess.com".into()),
                url: Some("https://i.example".into()),
                jwks_uri: None,
            }),
            Err(one.to_owned())
        );
        assert_eq!(
            with(IssuerSpec {
                url: Some("https://i.example".into()),
                ..Default::default()
            }),
            Err("spec.issuer: issuer.url and issuer.jwksUri go together".to_owned())
        );
    }

    #[test]
    fn a_cloudflare_audience_is_64_lowercase_hex_characters() {
        let aud = |a: String| {
            compile_spec(&AccessPolicySpec {
                issuer: IssuerSpec {
                    team_domain: Some("t.cloudflareaccess.com".into()),
                    ..Default::default()
                },
                audiences: vec![a],
                ..Default::default()
            })
            .is_ok()
        };
        assert!(aud("a".repeat(64)));
        assert!(!aud("abc".into()), "hex, but short");
        assert!(!aud("g".repeat(64)), "64 characters, not hex");
        assert!(!aud("A".repeat(64)), "upper case");
    }

    #[test]
    fn a_country_matcher_is_two_letters_uppercased() {
        let spec = |country: &str| AccessPolicySpec {
            issuer: IssuerSpec {
                url: Some("https://issuer.example".into()),
                jwks_uri: Some("https://issuer.example/certs".into()),
                ..Default::default()
            },
            audiences: vec!["aud".into()],
            rules: Some(RulesSpec {
                deny: vec![Matcher {
                    country: Some(country.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = compile_spec(&spec("US")).unwrap();
        let p2 = compile_spec(&spec("us")).unwrap();
        assert_eq!(p.rules.deny, [CompiledMatcher::Country("US".into())]);
        assert_eq!(p2.rules.deny, p.rules.deny);
        for bad in ["U", "USA", "U1"] {
            let e = compile_spec(&spec(bad)).unwrap_err();
            assert_eq!(e.field, "spec.rules.deny[0].country", "{bad}");
        }
    }

    #[test]
    fn cloudflare_defaults() {
        let p = compile_spec(&spec()).unwrap();
        assert_eq!(p.issuer, "https://myteam.cloudflareaccess.com");
        assert_eq!(
            p.jwks_uri.as_str(),
            "https://myteam.cloudflareaccess.com/cdn-cgi/access/certs"
        );
        assert_eq!(
            p.token_sources,
            vec![TokenSource::Header, TokenSource::Cookie]
        );
        assert!(p.admit_app && !p.admit_service);
        assert_eq!(p.algorithms, vec![Algorithm::RS256]);
        assert_eq!(p.leeway_secs, 60);
        let names: Vec<_> = p.claim_headers.iter().map(|h| h.header.as_str()).collect();
        assert_eq!(names, ["x-auth-request-email", "x-auth-request-user"]);
    }

    #[test]
    fn class_name_is_a_dns_label() {
        for good in ["blue", "accessgate", "a", "team-2", &"a".repeat(63)] {
            let s = AccessPolicySpec {
                class_name: Some(good.to_owned()),
                ..spec()
            };
            assert!(compile_spec(&s).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "Blue",
            "-blue",
            "blue-",
            "blue.green",
            "blue_green",
            &"a".repeat(64),
        ] {
            let s = AccessPolicySpec {
                class_name: Some(bad.to_owned()),
                ..spec()
            };
            assert_eq!(
                compile_spec(&s).unwrap_err().field,
                "spec.className",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cloudflare_audience_must_be_an_aud_tag() {
        let mut s = spec();
        s.audiences.push("my-app".into());
        assert_eq!(compile_spec(&s).unwrap_err().field, "spec.audiences[1]");
    }

    #[test]
    fn issuer_choice_is_exclusive() {
        let mut s = spec();
        s.issuer.url = Some("https://issuer.example".into());
        s.issuer.jwks_uri = Some("https://issuer.example/keys".into());
        assert_eq!(compile_spec(&s).unwrap_err().field, "spec.issuer");
        s.issuer.team_domain = None;
        s.issuer.jwks_uri = None;
        assert_eq!(compile_spec(&s).unwrap_err().field, "spec.issuer");
    }

    #[test]
    fn plain_http_issuer_only_on_loopback() {
        let mut s = spec();
        s.issuer = IssuerSpec {
            team_domain: None,
            url: Some("http://127.0.0.1:9400".into()),
            jwks_uri: Some("http://127.0.0.1:9400/cdn-cgi/access/certs".into()),
        };
        s.audiences = vec!["anything".into()];
        let p = compile_spec(&s).unwrap();
        assert_eq!(p.issuer_kind, IssuerKind::Generic);
        s.issuer.jwks_uri = Some("http://keys.example.com/certs".into());
        assert_eq!(compile_spec(&s).unwrap_err().field, "spec.issuer.jwksUri");
        s.issuer.jwks_uri = Some("http://localhost:1/certs".into());
        s.issuer.url = Some("http://10.0.0.1".into());
        assert_eq!(compile_spec(&s).unwrap_err().field, "spec.issuer.url");
    }

    #[test]
    fn team_domain_is_a_bare_hostname() {
        for bad in [
            "https://myteam.cloudflareaccess.com",
            "myteam",
            "MyTeam.cloudflareaccess.com",
            "a.b/c",
        ] {
            let mut s = spec();
            s.issuer.team_domain = Some(bad.into());
            assert_eq!(
                compile_spec(&s).unwrap_err().field,
                "spec.issuer.teamDomain",
                "{bad}"
            );
        }
    }

    #[test]
    fn header_names_are_checked() {
        for (bad, why) in [
            ("X_Auth", "underscore"),
            ("Host", "reserved"),
            ("set-cookie", "reserved"),
            ("", "empty"),
        ] {
            let mut s = spec();
            s.claim_headers = Some(vec![ClaimHeader {
                header: bad.into(),
                claim: "email".into(),
                join: None,
                format: None,
            }]);
            assert_eq!(
                compile_spec(&s).unwrap_err().field,
                "spec.claimHeaders[0].header",
                "{why}"
            );
        }
    }

    #[test]
    fn duplicate_header_is_refused_case_insensitively() {
        let mut s = spec();
        let h = |name: &str| ClaimHeader {
            header: name.into(),
            claim: "email".into(),
            join: None,
            format: None,
        };
        s.claim_headers = Some(vec![h("X-Email"), h("x-email")]);
        assert_eq!(
            compile_spec(&s).unwrap_err().field,
            "spec.claimHeaders[1].header"
        );
    }

    #[test]
    fn claim_paths_split_on_dots() {
        let mut s = spec();
        s.claim_headers = Some(vec![ClaimHeader {
            header: "X-Groups".into(),
            claim: "custom.groups".into(),
            join: Some(";".into()),
            format: None,
        }]);
        let p = compile_spec(&s).unwrap();
        assert_eq!(p.claim_headers[0].path, vec!["custom", "groups"]);
        assert_eq!(
            p.claim_headers[0].encoding,
            ClaimEncoding::Text { join: ";".into() }
        );
        s.claim_headers.as_mut().unwrap()[0].claim = "custom..groups".into();
        assert_eq!(
            compile_spec(&s).unwrap_err().field,
            "spec.claimHeaders[0].claim"
        );
    }

    #[test]
    fn leeway_is_bounded() {
        let mut s = spec();
        s.leeway = Some("2m".into());
        assert_eq!(compile_spec(&s).unwrap().leeway_secs, 120);
        s.leeway = Some("10m".into());
        assert_eq!(compile_spec(&s).unwrap_err().field, "spec.leeway");
        s.leeway = Some("1m30s".into());
        assert_eq!(compile_spec(&s).unwrap_err().field, "spec.leeway");
        s.leeway = Some("soon".into());
        assert_eq!(compile_spec(&s).unwrap_err().field, "spec.leeway");
    }

    #[test]
    fn routes_default_to_root_and_need_hosts() {
        let mut s = spec();
        s.hosts = vec!["app.example.com".into()];
        assert_eq!(
            compile_spec(&s).unwrap().routes,
            vec![("app.example.com".into(), "/".into())]
        );
        s.paths = vec!["/api/".into()];
        assert_eq!(
            compile_spec(&s).unwrap().routes,
            vec![("app.example.com".into(), "/api".into())]
        );
        s.hosts.clear();
        assert_eq!(compile_spec(&s).unwrap_err().field, "spec.paths");
    }

    #[test]
    fn repeated_token_source_is_refused() {
        let mut s = spec();
        s.token_sources = Some(vec![TokenSource::Cookie, TokenSource::Cookie]);
        assert_eq!(compile_spec(&s).unwrap_err().field, "spec.tokenSources[1]");
    }

    fn with_claim_header(name: &str) -> AccessPolicySpec {
        let mut s = spec();
        s.claim_headers = Some(vec![ClaimHeader {
            header: name.into(),
            claim: "email".into(),
            join: None,
            format: None,
        }]);
        s
    }

    #[test]
    fn proxy_and_request_describing_header_names_are_reserved() {
        for bad in [
            "X-Forwarded-For",
            "x-forwarded-host",
            "X-FORWARDED-PROTO",
            "X-Forwarded-Email",
            "X-Original-URL",
            "X-Original-URI",
            "x-original-method",
            "X-Original-Forwarded-For",
            "X-Envoy-Original-Path",
            "x-envoy-peer-metadata",
            "X-Accessgate-Reason",
            "x-accessgate-anything",
            "Forwarded",
            "X-Real-IP",
            "X-Request-ID",
            "True-Client-IP",
            "X-Client-IP",
            "CF-Connecting-IP",
        ] {
            assert!(is_reserved_header(bad), "{bad}");
            assert_eq!(
                compile_spec(&with_claim_header(bad)).unwrap_err().field,
                "spec.claimHeaders[0].header",
                "{bad}"
            );
        }
        for ok in [
            "X-Auth-Request-Email",
            "X-Forwarded",
            "X-Forwardedfor",
            "X-Envoy",
            "X-Accessgate",
            "X-Originals",
            "Cf-Access-Authenticated-User-Email",
            "Remote-User",
        ] {
            assert!(!is_reserved_header(ok), "{ok}");
            assert!(compile_spec(&with_claim_header(ok)).is_ok(), "{ok}");
        }
    }

    fn with_matcher(m: Matcher, deny: bool) -> AccessPolicySpec {
        let mut s = spec();
        let mut rules = crate::api::RulesSpec::default();
        if deny {
            rules.deny = vec![m];
        } else {
            rules.allow = vec![m];
        }
        s.rules = Some(rules);
        s
    }

    #[test]
    fn non_ascii_email_matchers_are_refused() {
        for (email, domain) in [
            (Some("eve@\u{212A}ube.io"), None),
            (Some("\u{0430}lice@example.com"), None),
            (Some("alice@example.com\u{2028}"), None),
            (Some("al ice@example.com"), None),
            (Some("alice@example.com."), None),
            (Some("alice@exa_mple.com"), None),
            (None, Some("\u{212A}ube.io")),
            (None, Some("exa\u{0301}mple.com")),
            (None, Some("b\u{00FC}cher.de")),
            (None, Some("example.com.")),
        ] {
            for deny in [false, true] {
                let m = Matcher {
                    email: email.map(Into::into),
                    email_domain: domain.map(Into::into),
                    ..Default::default()
                };
                let list = if deny { "deny" } else { "allow" };
                let want = format!(
                    "spec.rules.{list}[0].{}",
                    if email.is_some() {
                        "email"
                    } else {
                        "emailDomain"
                    }
                );
                assert_eq!(
                    compile_spec(&with_matcher(m, deny)).unwrap_err().field,
                    want,
                    "{email:?} {domain:?}"
                );
            }
        }
    }

    #[test]
    fn email_matchers_fold_ascii_case_at_compile_time() {
        let m = Matcher {
            email: Some("Alice.Smith+Tag@Example.COM".into()),
            ..Default::default()
        };
        let p = compile_spec(&with_matcher(m, false)).unwrap();
        assert_eq!(
            p.rules.allow,
            vec![CompiledMatcher::Email("alice.smith+tag@example.com".into())]
        );
        let m = Matcher {
            email_domain: Some("Example.COM".into()),
            ..Default::default()
        };
        let p = compile_spec(&with_matcher(m, true)).unwrap();
        assert_eq!(
            p.rules.deny,
            vec![CompiledMatcher::EmailDomain("example.com".into())]
        );
    }

    #[test]
    fn email_verified_is_consulted_only_for_generic_issuers() {
        assert!(!compile_spec(&spec()).unwrap().rules.check_email_verified);
        let mut s = spec();
        s.issuer = IssuerSpec {
            team_domain: None,
            url: Some("https://issuer.example".into()),
            jwks_uri: Some("https://issuer.example/keys".into()),
        };
        s.audiences = vec!["app".into()];
        assert!(compile_spec(&s).unwrap().rules.check_email_verified);
    }

    /// An identity fetch that fails denies unless the policy says to continue without it.
    #[test]
    fn identity_denies_on_error_unless_told_to_continue() {
        use crate::api::{IdentityOnError, IdentitySpec};
        let deny_on_error = |on_error| {
            let mut s = spec();
            s.identity = Some(IdentitySpec {
                on_error,
                ..Default::default()
            });
            compile_spec(&s).unwrap().identity.unwrap().deny_on_error
        };
        assert!(deny_on_error(None));
        assert!(deny_on_error(Some(IdentityOnError::Deny)));
        assert!(!deny_on_error(Some(
            IdentityOnError::ContinueWithoutIdentity
        )));
    }

    /// A candidate is the live policy with its own audiences, rules and claim headers, each
    /// defaulting to the live one; it is never in dry-run itself.
    #[test]
    fn a_candidate_replaces_only_the_fields_it_names() {
        use crate::api::CandidateSpec;
        let other = "a".repeat(64);
        let header = |name: &str| ClaimHeader {
            header: name.into(),
            claim: "email".into(),
            join: None,
            format: None,
        };
        let header_names = |p: &CompiledPolicy| -> Vec<String> {
            p.claim_headers
                .iter()
                .map(|h| h.header.to_string())
                .collect()
        };
        let ready = |s: &AccessPolicySpec| match compile_spec(s).unwrap().candidate {
            Some(Candidate::Ready(c)) => c,
            other => panic!("{other:?}"),
        };
        let mut s = spec();
        s.mode = Some(PolicyMode::DryRun);
        s.claim_headers = Some(vec![header("X-Live")]);
        s.candidate = Some(CandidateSpec {
            audiences: Some(vec![other.clone()]),
            claim_headers: Some(vec![header("X-Candidate")]),
            ..Default::default()
        });
        let c = ready(&s);
        assert!(c.own_audiences);
        assert_eq!(c.policy.audiences, HashSet::from([other]));
        assert_eq!(header_names(&c.policy), ["x-candidate"]);
        assert!(!c.policy.dry_run, "a candidate is evaluated as enforcing");
        assert!(c.policy.candidate.is_none());

        // The live policy signs an assertion; its candidate is only compared, never signed for.
        s.upstream_assertion = Some(crate::api::UpstreamAssertionSpec {
            audience: "app".into(),
            header: None,
            ttl: None,
        });
        let c = ready(&s);
        assert!(compile_spec(&s).unwrap().assertion.is_some());
        assert!(c.policy.assertion.is_none());
        s.upstream_assertion = None;

        s.candidate = Some(CandidateSpec {
            rules: Some(RulesSpec::default()),
            ..Default::default()
        });
        let c = ready(&s);
        assert!(
            !c.own_audiences,
            "the live audiences: the live verification is its own"
        );
        assert_eq!(c.policy.audiences, HashSet::from([AUD.to_owned()]));
        assert_eq!(header_names(&c.policy), ["x-live"]);
    }

    /// The upstream assertion's audience, header and ttl at their edges (the CRD's schema and
    /// CEL say the same; a file-mode policy meets only these).
    #[test]
    fn an_upstream_assertion_is_checked_at_its_edges() {
        use crate::api::UpstreamAssertionSpec;
        let with = |audience: &str, header: Option<String>, ttl: Option<&str>| {
            let mut s = spec();
            s.upstream_assertion = Some(UpstreamAssertionSpec {
                audience: audience.into(),
                header,
                ttl: ttl.map(Into::into),
            });
            compile_spec(&s).map(|p| p.assertion.unwrap())
        };
        let field = |r: Result<CompiledAssertion, CompileError>| r.unwrap_err().field;
        let a = with("grafana", None, None).unwrap();
        assert_eq!(
            (a.audience.as_str(), a.header.as_str(), a.ttl),
            ("grafana", DEFAULT_ASSERTION_HEADER, Duration::from_secs(60))
        );
        assert!(with(&"a".repeat(256), None, None).is_ok());
        for bad in ["", &"a".repeat(257), "graf\nana"] {
            assert_eq!(
                field(with(bad, None, None)),
                "spec.upstreamAssertion.audience",
                "{bad:?}"
            );
        }
        let h = |name: &str| Some(name.to_owned());
        assert_eq!(
            with("g", h("X-App-Assertion"), None)
                .unwrap()
                .header
                .as_str(),
            "x-app-assertion"
        );
        assert!(with("g", Some("a".repeat(128)), None).is_ok());
        for bad in [
            String::new(),
            "a".repeat(129),
            "-x".into(),
            "x_y".into(),
            "x y".into(),
        ] {
            assert_eq!(
                field(with("g", Some(bad.clone()), None)),
                "spec.upstreamAssertion.header",
                "{bad:?}"
            );
        }
        assert_eq!(
            with("g", None, Some("10s")).unwrap().ttl,
            Duration::from_secs(10)
        );
        assert_eq!(
            with("g", None, Some("5m")).unwrap().ttl,
            Duration::from_secs(300)
        );
        for bad in ["9s", "6m", "0s"] {
            assert_eq!(
                field(with("g", None, Some(bad))),
                "spec.upstreamAssertion.ttl",
                "{bad}"
            );
        }
    }
}
