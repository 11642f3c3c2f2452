//! The authorization service: one request in, one [`Verdict`] out, for every entry point (the
//! HTTP dialects, gRPC ext_authz, `accessgate check`): select the policy → verify the token →
//! refetch the keys once on an unknown `kid` → enrich the identity → conclude → record (metrics,
//! decision log). The choices are the core's ([`crate::core::decision`]); this module does the
//! I/O between them, and nothing else decides. Adapters differ only in what they bring:
//! [`Policies`], [`Keys`], a [`SignatureMemo`], whether decisions are counted, and an
//! [`Observer`] of the steps (`check` prints its trace from one). See docs/architecture.md,
//! "The request path".

use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use serde_json::Value;
use url::Url;

use crate::core::candidate::{self, Comparison};
use crate::core::decision::{
    self, Decision, Enrichment, Observer, SignatureMemo, Unobserved, VerifiedToken,
};
use crate::core::dialect::{OriginalRequest, Routing};
use crate::core::index::{PolicyIndex, Selected};
use crate::core::jwks::KeyLookup;
use crate::core::policy::{Candidate, CompiledPolicy, ReadyCandidate};
use crate::core::reason::Reason;
use crate::identity::IdentityClient;
use crate::keys::signing::AssertionSigner;
use crate::keys::tokens::TokenCache;
use crate::keys::{FixedKeys, KeyStore};
use crate::metrics::Metrics;
use crate::serve::decision_log::DecisionLog;
use crate::serve::record;
use crate::serve::shadow::ShadowWatch;
use crate::serve::state::AppState;
use crate::serve::verdict::Verdict;

/// How the policy is chosen.
#[derive(Debug, Clone, Copy)]
pub enum Select<'a> {
    /// Named by the route (`/auth/{namespace}/{name}`, gRPC `context_extensions`).
    Name { namespace: &'a str, name: &'a str },
    /// By the original request's host and path (the bare endpoints).
    Route,
}

impl Select<'_> {
    /// How strictly the dialect must read the original request: host and path only choose
    /// the policy on [`Select::Route`].
    pub fn routing(&self) -> Routing {
        match self {
            Select::Name { .. } => Routing::Named,
            Select::Route => Routing::Strict,
        }
    }
}

/// One authorization, as an adapter read it from its protocol.
pub struct AuthRequest<'a> {
    pub select: Select<'a>,
    /// The client's headers, where the token is.
    pub headers: &'a HeaderMap,
    /// The original request, or why the adapter could not read one (denied with it).
    pub original: Result<OriginalRequest, Reason>,
}

/// Where policies are selected from.
pub trait Policies {
    fn select(&self, select: &Select<'_>, original: &OriginalRequest) -> Selected;
}

impl Policies for PolicyIndex {
    fn select(&self, select: &Select<'_>, original: &OriginalRequest) -> Selected {
        match select {
            Select::Name { namespace, name } => self.select_name(namespace, name),
            Select::Route => self.select_route(&original.host, &original.path),
        }
    }
}

impl Policies for AppState {
    /// From the live index; the index is held only while selecting (the policies are kept,
    /// by reference count, for the rest of the decision).
    fn select(&self, select: &Select<'_>, original: &OriginalRequest) -> Selected {
        self.index().select(select, original)
    }
}

/// The keys a token is verified with, and one more fetch when they lack its `kid`.
pub trait Keys: KeyLookup + Sync {
    /// Whether a fetch completed since the lookup, i.e. whether verifying again can give a
    /// different answer.
    fn refetch(&self, jwks_uri: &Url) -> impl Future<Output = bool> + Send;
}

impl Keys for KeyStore {
    fn refetch(&self, jwks_uri: &Url) -> impl Future<Output = bool> + Send {
        KeyStore::refetch(self, jwks_uri)
    }
}

impl Keys for FixedKeys {
    /// Never: a fixed set (the one `accessgate check` fetched a moment ago) would only be
    /// fetched again to show the same keys; the server refetches because its copy may be
    /// minutes old.
    async fn refetch(&self, _: &Url) -> bool {
        false
    }
}

/// The service, over the ports an entry point brings.
pub struct Authorizer<'a, P, K, M> {
    pub policies: &'a P,
    pub keys: &'a K,
    pub memo: &'a M,
    /// `None`: identities are not fetched (`check --no-identity`) and the decision is made
    /// on the token alone.
    pub identity: Option<&'a IdentityClient>,
    /// `None`: decisions are not counted (`check`).
    pub metrics: Option<&'a Metrics>,
    /// `None`: no decision log (off, or `check`).
    pub log: Option<&'a DecisionLog>,
    /// Signs upstream assertions; `None`: a policy that asks for one is refused
    /// (`assertion_unavailable`).
    pub signer: Option<&'a AssertionSigner>,
    /// `None`: first would-be denials and disagreements are not remembered (`check`).
    pub shadows: Option<&'a ShadowWatch>,
}

/// The server's service: the live index, the key caches, the verified-token cache, the
/// identity client, the metrics.
pub fn of(state: &AppState) -> Authorizer<'_, AppState, KeyStore, TokenCache> {
    Authorizer {
        policies: state,
        keys: &state.keys,
        memo: &state.tokens,
        identity: Some(&state.identity),
        metrics: Some(&state.metrics),
        log: state.decision_log.as_deref(),
        signer: state.signer.as_deref(),
        shadows: Some(&state.shadows),
    }
}

/// What one authorization decided besides its answer.
#[derive(Debug, Default)]
pub struct Shadows {
    /// The dry-run policy the request selected, and what it would have answered.
    pub dry_run: Option<(Arc<CompiledPolicy>, Decision)>,
    /// The candidate of the answering policy, if it has one.
    pub candidate: Option<CandidateSeen>,
    /// The candidate of the dry-run policy, if it has one.
    pub dry_run_candidate: Option<CandidateSeen>,
}

impl Shadows {
    /// Every candidate evaluated (no allocation on the hot path).
    pub fn candidates(&self) -> impl Iterator<Item = &CandidateSeen> {
        self.candidate.iter().chain(&self.dry_run_candidate)
    }
}

/// A candidate's decision beside its live policy's.
#[derive(Debug)]
pub struct CandidateSeen {
    /// The live policy (the candidate is its `candidate`).
    pub live: Arc<CompiledPolicy>,
    pub decision: Decision,
    pub comparison: Comparison,
}

/// One policy's decision on the request, with its candidate's.
struct Evaluated<'h> {
    decision: Decision,
    token: Option<VerifiedToken<'h>>,
    candidate: Option<CandidateSeen>,
}

impl<P: Policies, K: Keys, M: SignatureMemo> Authorizer<'_, P, K, M> {
    /// The verdict for `request`, recorded; each step is reported to `observer`.
    pub async fn authorize(
        &self,
        request: AuthRequest<'_>,
        observer: &mut impl Observer,
    ) -> Verdict {
        self.authorize_traced(request, observer, &mut Unobserved)
            .await
            .0
    }

    /// [`Authorizer::authorize`], also returning what was decided besides the answer; the
    /// candidates' steps are reported to `candidate_observer`.
    pub async fn authorize_traced(
        &self,
        request: AuthRequest<'_>,
        observer: &mut impl Observer,
        candidate_observer: &mut impl Observer,
    ) -> (Verdict, Shadows) {
        let started = Instant::now();
        let mut shadows = Shadows::default();
        let (label, verdict, token) = match &request.original {
            Err(reason) => (None, Verdict::deny(*reason), None),
            Ok(original) => {
                self.decide(
                    &request.select,
                    request.headers,
                    original,
                    &mut shadows,
                    observer,
                    candidate_observer,
                )
                .await
            }
        };
        let label = label.unwrap_or_else(|| match (request.select, verdict.reason()) {
            // An invalid policy was named: count its denials under its name.
            (Select::Name { namespace, name }, Some(Reason::PolicyInvalid)) => {
                Arc::from(format!("{namespace}/{name}"))
            }
            _ => record::NO_POLICY.clone(),
        });
        record::verdict(
            record::Sinks {
                metrics: self.metrics,
                log: self.log,
                shadows: self.shadows,
            },
            &label,
            request.original.as_ref().ok(),
            &verdict,
            token.as_ref(),
            &shadows,
            started,
        );
        (verdict, shadows)
    }

    /// The verdict, the label of the policy it was made under (`None`: none selected), and
    /// the token when it verified. The dry-run policy and candidates go to `shadows`.
    async fn decide<'h>(
        &self,
        select: &Select<'_>,
        headers: &'h HeaderMap,
        original: &OriginalRequest,
        shadows: &mut Shadows,
        observer: &mut impl Observer,
        candidate_observer: &mut impl Observer,
    ) -> (Option<Arc<str>>, Verdict, Option<VerifiedToken<'h>>) {
        let now = unix_now();
        let selected = self.policies.select(select, original);
        let live = match selected.enforcing {
            Ok(p) => {
                let evaluated = self
                    .evaluate(&p, headers, now, observer, candidate_observer)
                    .await;
                Ok((p, evaluated))
            }
            Err(reason) => Err(reason),
        };
        // The dry-run policy's steps are the trace only when nothing else answers.
        let dry_run = match &selected.dry_run {
            Some(p) if live.is_err() => Some(
                self.evaluate(p, headers, now, observer, candidate_observer)
                    .await,
            ),
            Some(p) => Some(
                self.evaluate(p, headers, now, &mut Unobserved, &mut Unobserved)
                    .await,
            ),
            None => None,
        };
        let mut answer = match live {
            Ok((p, live)) => {
                shadows.candidate = live.candidate;
                (
                    Some(p.label.clone()),
                    self.verdict_of(&p, live.decision, now),
                    live.token,
                )
            }
            Err(reason) => (None, Verdict::deny(reason), None),
        };
        if let (Some(p), Some(d)) = (selected.dry_run, dry_run) {
            shadows.dry_run_candidate = d.candidate;
            // Only a dry-run policy covers the request: it passes.
            if answer.1.reason() == Some(Reason::PolicyUnknown) && answer.0.is_none() {
                answer = (
                    Some(p.label.clone()),
                    Verdict::pass(&p, self.verdict_of(&p, d.decision.clone(), now)),
                    d.token,
                );
            }
            shadows.dry_run = Some((p, d.decision));
        }
        answer
    }

    /// The answer to `decision`: an allow with an assertion is signed here, and refused
    /// (`assertion_unavailable`) when it cannot be, never sent on without it.
    fn verdict_of(&self, policy: &CompiledPolicy, decision: Decision, now: u64) -> Verdict {
        let (kind, headers, claims, cfg) = match (decision, &policy.assertion) {
            (
                Decision::Allow {
                    kind,
                    headers,
                    assertion: Some(claims),
                },
                Some(cfg),
            ) => (kind, headers, claims, cfg),
            (other, _) => return Verdict::from(other),
        };
        let Some(signer) = self.signer else {
            return Verdict::deny(Reason::AssertionUnavailable);
        };
        match signer.sign(&claims, &cfg.audience, cfg.ttl, now) {
            Ok(token) => Verdict::allow_asserted(kind, headers, (cfg.header.clone(), token)),
            Err(e) => {
                tracing::error!(policy = %policy.label, error = %e, "cannot sign the upstream assertion; denied");
                Verdict::deny(Reason::AssertionUnavailable)
            }
        }
    }

    /// `policy`'s decision: verify, refetch once, verify again, enrich, conclude; then its
    /// candidate's on the same request.
    async fn evaluate<'h>(
        &self,
        policy: &Arc<CompiledPolicy>,
        headers: &'h HeaderMap,
        now: u64,
        observer: &mut impl Observer,
        candidate_observer: &mut impl Observer,
    ) -> Evaluated<'h> {
        let verify = |policy: &CompiledPolicy, observer: &mut _| {
            decision::verify_request(policy, headers, self.keys, self.memo, now, observer)
        };
        let mut verified = verify(policy, observer);
        // An unknown kid may mean the issuer rotated; no keys may mean the first fetch is
        // still running. One (coalesced, rate-limited) refetch, then verify again.
        if matches!(verified, Err(Reason::KeyUnknown | Reason::KeysUnavailable)) {
            let fetched = self.keys.refetch(&policy.jwks_uri).await;
            observer.refetched(&policy.jwks_uri, fetched);
            if fetched {
                verified = verify(policy, observer);
            }
        }
        let (decision, identity) = match &verified {
            Ok(token) => {
                let identity = self.identity_for(policy, token, now).await;
                let enrichment = identity.enrichment();
                observer.enrichment(policy, &enrichment, identity.failure());
                let decision = decision::conclude(policy, token, enrichment, observer);
                (decision, Some(identity))
            }
            Err(reason) => (Decision::Deny(*reason), None),
        };
        let candidate = match policy.candidate.as_ref().and_then(Candidate::ready) {
            None => None,
            Some(c) => {
                let theirs = self
                    .evaluate_candidate(
                        c,
                        headers,
                        now,
                        verified.as_ref().map_err(|r| *r),
                        identity.as_ref(),
                        candidate_observer,
                    )
                    .await;
                Some(CandidateSeen {
                    live: policy.clone(),
                    comparison: candidate::compare(&decision, &theirs),
                    decision: theirs,
                })
            }
        };
        Evaluated {
            decision,
            token: verified.ok(),
            candidate,
        }
    }

    /// A candidate's decision on the request the live policy has just decided: the live
    /// verification and identity are its own unless its audiences differ (same issuer and
    /// keys either way: no refetch of its own); an identity is fetched for it only when it
    /// alone admits the token.
    async fn evaluate_candidate(
        &self,
        candidate: &ReadyCandidate,
        headers: &HeaderMap,
        now: u64,
        live: Result<&VerifiedToken<'_>, Reason>,
        live_identity: Option<&Identity>,
        observer: &mut impl Observer,
    ) -> Decision {
        let c = &candidate.policy;
        let own;
        let token = match (candidate.own_audiences, live) {
            (false, Ok(t)) => t,
            // The live verification failed, for a reason the candidate shares.
            (false, Err(reason)) => return Decision::Deny(reason),
            (true, _) => {
                match decision::verify_request(c, headers, self.keys, self.memo, now, observer) {
                    Ok(t) => {
                        own = t;
                        &own
                    }
                    Err(reason) => return Decision::Deny(reason),
                }
            }
        };
        let fetched;
        let identity = match live_identity {
            Some(id) => id,
            None => {
                fetched = self.identity_for(c, token, now).await;
                &fetched
            }
        };
        decision::conclude(c, token, identity.enrichment(), observer)
    }

    /// The identity behind a verified token, if the policy asks for one and this service
    /// fetches identities.
    async fn identity_for(
        &self,
        policy: &CompiledPolicy,
        token: &VerifiedToken<'_>,
        now: u64,
    ) -> Identity {
        let client = match (&policy.identity, self.identity) {
            (None, _) => return Identity::NotConfigured,
            (Some(_), None) => return Identity::Skipped,
            (Some(_), Some(client)) => client,
        };
        match client
            .get_for_policy(policy, token.token, &token.claims, now)
            .await
        {
            Ok(id) => Identity::Fetched(id),
            Err(e) => {
                tracing::warn!(policy = %policy.label, error = %e, detail = e.detail(), "identity enrichment failed");
                Identity::Failed(e.to_string())
            }
        }
    }
}

/// What enrichment brought back, owned until the decision is concluded.
enum Identity {
    NotConfigured,
    Skipped,
    Fetched(Arc<Value>),
    /// The failure's category (never text from the answer).
    Failed(String),
}

impl Identity {
    fn enrichment(&self) -> Enrichment<'_> {
        match self {
            Identity::NotConfigured => Enrichment::NotConfigured,
            Identity::Skipped => Enrichment::Skipped,
            Identity::Fetched(id) => Enrichment::Fetched(id),
            Identity::Failed(_) => Enrichment::Failed,
        }
    }

    fn failure(&self) -> Option<&str> {
        match self {
            Identity::Failed(why) => Some(why),
            _ => None,
        }
    }
}

/// Seconds since the Unix epoch: the decision's clock (and the decision log's).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decision::Forgetful;
    use crate::core::explain::Explainer;
    use crate::core::fixtures::{ISS, index, keys_of};
    use crate::core::jwks::{KeyAnswer, KeySet};
    use crate::devissuer::{MintRequest, Signer};
    use axum::http::HeaderValue;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Serves `before` until the first refetch, `after` from then on.
    struct Rotating {
        sets: Mutex<(KeySet, Option<KeySet>)>,
        refetches: AtomicU32,
    }

    impl KeyLookup for Rotating {
        fn lookup(&self, _: &Url, kid: &str) -> KeyAnswer {
            let sets = self.sets.lock().unwrap();
            match sets.0.get(kid) {
                Some(k) => KeyAnswer::Found(k.clone()),
                None => KeyAnswer::Unknown,
            }
        }
    }

    impl Keys for Rotating {
        async fn refetch(&self, _: &Url) -> bool {
            self.refetches.fetch_add(1, Ordering::Relaxed);
            let mut sets = self.sets.lock().unwrap();
            if let Some(after) = sets.1.take() {
                sets.0 = after;
            }
            true
        }
    }

    fn headers_with(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "cf-access-jwt-assertion",
            HeaderValue::from_str(token).unwrap(),
        );
        h
    }

    fn original() -> OriginalRequest {
        OriginalRequest {
            method: "GET".into(),
            scheme: "https".into(),
            host: "app.example.test".into(),
            path: "/".into(),
            client_ip: None,
            request_id: None,
        }
    }

    /// A service on `policies` and `keys` alone: no memo, identity, metrics, log, signer.
    fn bare<'a, K>(
        policies: &'a PolicyIndex,
        keys: &'a K,
    ) -> Authorizer<'a, PolicyIndex, K, Forgetful> {
        Authorizer {
            policies,
            keys,
            memo: &Forgetful,
            identity: None,
            metrics: None,
            log: None,
            signer: None,
            shadows: None,
        }
    }

    /// A request for `ns/p` by name, carrying `headers`.
    fn for_ns_p(headers: &HeaderMap) -> AuthRequest<'_> {
        AuthRequest {
            select: Select::Name {
                namespace: "ns",
                name: "p",
            },
            headers,
            original: Ok(original()),
        }
    }

    async fn authorize(keys: &Rotating, token: &str, trace: &mut Explainer) -> Verdict {
        let index = index();
        let headers = headers_with(token);
        bare(&index, keys)
            .authorize(for_ns_p(&headers), trace)
            .await
    }

    fn mint(signer: &Signer) -> String {
        let req = MintRequest {
            aud: vec!["aud-1".into()],
            ..Default::default()
        };
        signer.mint(&req, unix_now() as i64).unwrap()
    }

    #[tokio::test]
    async fn an_unknown_kid_is_refetched_once_then_verified_again() {
        let mut signer = Signer::new(ISS).unwrap();
        let before = keys_of(&signer.certs_document());
        signer.rotate().unwrap();
        let keys = Rotating {
            sets: Mutex::new((before, Some(keys_of(&signer.certs_document())))),
            refetches: AtomicU32::new(0),
        };
        let mut trace = Explainer::new();
        let verdict = authorize(&keys, &mint(&signer), &mut trace).await;
        assert_eq!((verdict.status, verdict.reason()), (200, None));
        assert_eq!(keys.refetches.load(Ordering::Relaxed), 1);
        // The trace is the service's own walk: the key missed, the refetch, the key found.
        let keys_seen: Vec<(bool, String)> = trace
            .finish(Ok(()))
            .into_iter()
            .filter(|s| s.what == "key" || s.what == "refetch")
            .map(|s| (s.ok, s.what))
            .collect();
        assert_eq!(
            keys_seen,
            [
                (false, "key".to_owned()),
                (true, "refetch".to_owned()),
                (true, "key".to_owned())
            ]
        );
    }

    #[tokio::test]
    async fn a_kid_still_unknown_after_the_refetch_is_denied_without_another() {
        let signer = Signer::new(ISS).unwrap();
        let stranger = Signer::new(ISS).unwrap();
        let keys = Rotating {
            sets: Mutex::new((keys_of(&signer.certs_document()), None)),
            refetches: AtomicU32::new(0),
        };
        let verdict = authorize(&keys, &mint(&stranger), &mut Explainer::new()).await;
        assert_eq!(verdict.reason(), Some(Reason::KeyUnknown));
        assert_eq!(
            verdict.www_authenticate,
            Some("Bearer realm=\"accessgate\"")
        );
        assert_eq!(keys.refetches.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn an_unreadable_request_is_denied_with_its_reason_and_selects_no_policy() {
        let index = index();
        let keys = Rotating {
            sets: Mutex::new((KeySet::default(), None)),
            refetches: AtomicU32::new(0),
        };
        let service = bare(&index, &keys);
        let request = AuthRequest {
            select: Select::Route,
            headers: &HeaderMap::new(),
            original: Err(Reason::DialectMismatch),
        };
        let verdict = service.authorize(request, &mut Unobserved).await;
        assert_eq!(
            (verdict.status, verdict.reason()),
            (400, Some(Reason::DialectMismatch))
        );
        assert_eq!(keys.refetches.load(Ordering::Relaxed), 0);
    }

    /// An index of `spec` compiled as `ns/p` on the fixture issuer (audience `aud-1`).
    fn index_of(edit: impl FnOnce(&mut crate::api::AccessPolicySpec)) -> PolicyIndex {
        use crate::core::index::PolicyEntry;
        use crate::core::policy::{PolicyKey, compile};
        let mut spec = crate::core::fixtures::spec();
        edit(&mut spec);
        let key = PolicyKey::new("ns", "p");
        let policy = compile(key.clone(), Some(1), &spec).unwrap();
        PolicyIndex::build([(key, PolicyEntry::Ready(Arc::new(policy)))])
    }

    /// The verdict and shadows of `headers` against `ns/p` of `index`, keys from `signer`.
    async fn traced(
        index: &PolicyIndex,
        signer: &Signer,
        headers: HeaderMap,
    ) -> (Verdict, Shadows) {
        traced_signed(index, signer, headers, None).await
    }

    /// [`traced`], with assertions signed by `assertions`.
    async fn traced_signed(
        index: &PolicyIndex,
        signer: &Signer,
        headers: HeaderMap,
        assertions: Option<&AssertionSigner>,
    ) -> (Verdict, Shadows) {
        let keys = crate::core::fixtures::FixedKeys(Some(keys_of(&signer.certs_document())));
        let service = Authorizer {
            signer: assertions,
            ..bare(index, &keys)
        };
        service
            .authorize_traced(for_ns_p(&headers), &mut Unobserved, &mut Unobserved)
            .await
    }

    fn member_of(signer: &Signer, group: &str) -> String {
        let mut claims = serde_json::Map::new();
        claims.insert("custom".into(), serde_json::json!({ "groups": [group] }));
        let req = MintRequest {
            aud: vec!["aud-1".into()],
            email: Some("ana@example.com".into()),
            claims,
            ..Default::default()
        };
        signer.mint(&req, unix_now() as i64).unwrap()
    }

    #[tokio::test]
    async fn a_dry_run_policy_alone_lets_requests_through_and_keeps_its_would_be_verdict() {
        let signer = Signer::new(ISS).unwrap();
        let index = index_of(|spec| spec.mode = Some(crate::api::PolicyMode::DryRun));

        // No token: it would deny; the answer is a 200 that removes every mapped header.
        let (verdict, shadows) = traced(&index, &signer, HeaderMap::new()).await;
        assert_eq!((verdict.status, verdict.outcome), (200, Ok(None)));
        assert!(verdict.set.is_empty());
        let removed: Vec<&str> = verdict.remove.iter().map(|h| h.as_str()).collect();
        assert_eq!(removed, ["x-auth-request-email", "x-auth-request-user"]);
        let (policy, would_be) = shadows.dry_run.expect("the dry-run policy was evaluated");
        assert_eq!(
            (policy.key.to_string(), would_be.outcome()),
            ("ns/p".into(), Err(Reason::TokenMissing))
        );

        // A valid token: it would allow, and its identity headers go upstream.
        let (verdict, shadows) =
            traced(&index, &signer, headers_with(&member_of(&signer, "eng"))).await;
        assert_eq!(verdict.status, 200);
        assert!(
            verdict
                .set
                .iter()
                .any(|(h, v)| h == "x-auth-request-email" && v == "ana@example.com")
        );
        assert_eq!(shadows.dry_run.map(|(_, d)| d.outcome()), Some(Ok(())));
    }

    #[tokio::test]
    async fn a_candidate_is_compared_and_never_changes_the_answer() {
        use crate::api::{CandidateSpec, Matcher, RulesSpec};
        use crate::core::candidate::Comparison;
        let signer = Signer::new(ISS).unwrap();
        let admins_only = RulesSpec {
            allow: vec![Matcher {
                group: Some("admins".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let index = index_of(|spec| {
            spec.candidate = Some(CandidateSpec {
                rules: Some(admins_only),
                ..Default::default()
            })
        });
        let (verdict, shadows) =
            traced(&index, &signer, headers_with(&member_of(&signer, "eng"))).await;
        assert_eq!(
            (verdict.status, verdict.reason()),
            (200, None),
            "live allows"
        );
        let seen = shadows.candidates().next().unwrap();
        assert_eq!(
            seen.comparison,
            Comparison::CandidateDenies(Reason::RuleDenied)
        );
        assert_eq!(seen.live.key.to_string(), "ns/p");

        let (verdict, shadows) =
            traced(&index, &signer, headers_with(&member_of(&signer, "admins"))).await;
        assert_eq!(verdict.status, 200);
        assert_eq!(
            shadows.candidates().next().unwrap().comparison,
            Comparison::Agree
        );

        // Denied by both for the same reason: agreement.
        let (verdict, shadows) = traced(&index, &signer, HeaderMap::new()).await;
        assert_eq!(verdict.reason(), Some(Reason::TokenMissing));
        assert_eq!(
            shadows.candidates().next().unwrap().comparison,
            Comparison::Agree
        );
    }

    #[tokio::test]
    async fn an_allow_that_asks_for_an_assertion_is_signed_or_refused_never_sent_without() {
        use crate::api::UpstreamAssertionSpec;
        let issuer = Signer::new(ISS).unwrap();
        let index = index_of(|spec| {
            spec.upstream_assertion = Some(UpstreamAssertionSpec {
                audience: "grafana".into(),
                ..Default::default()
            })
        });
        let token = member_of(&issuer, "eng");
        // No signer: refused.
        let (verdict, _) = traced(&index, &issuer, headers_with(&token)).await;
        assert_eq!(
            (verdict.status, verdict.reason()),
            (503, Some(Reason::AssertionUnavailable))
        );

        let signer = AssertionSigner::new("https://ag.test".into(), None).unwrap();
        let (verdict, _) =
            traced_signed(&index, &issuer, headers_with(&token), Some(&signer)).await;
        assert_eq!(verdict.status, 200);
        let (_, value) = verdict
            .set
            .iter()
            .find(|(h, _)| h == "x-accessgate-assertion")
            .expect("the assertion header");
        let claims =
            jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(value.as_bytes())
                .unwrap()
                .claims;
        assert_eq!(
            (
                &claims["aud"],
                &claims["email"],
                &claims["policy"],
                &claims["groups"]
            ),
            (
                &serde_json::json!("grafana"),
                &serde_json::json!("ana@example.com"),
                &serde_json::json!("ns/p"),
                &serde_json::json!(["eng"])
            )
        );
    }
}
