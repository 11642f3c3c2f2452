//! The state every request handler shares: the live policy index (swapped whole), the key
//! caches, the metrics, and whoever else watches decisions.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::core::index::{PolicyEntry, PolicyIndex};
use crate::core::policy::{Candidate, PolicyKey};
use crate::identity::IdentityClient;
use crate::keys::KeyStore;
use crate::keys::signing::AssertionSigner;
use crate::keys::tokens::TokenCache;
use crate::metrics::{Metrics, PolicyStateLabels};
use crate::serve::decision_log::DecisionLog;
use crate::serve::shadow::ShadowWatch;
use crate::source::PolicySink;

pub struct AppState {
    index: ArcSwap<PolicyIndex>,
    pub keys: KeyStore,
    pub metrics: Arc<Metrics>,
    pub tokens: TokenCache,
    pub identity: IdentityClient,
    /// One line per decision for auditors; `None`: off.
    pub decision_log: Option<Arc<DecisionLog>>,
    /// First would-be denials of dry-run policies and first candidate disagreements.
    pub shadows: ShadowWatch,
    /// Signs upstream assertions; `None`: no keys (policies asking for one are refused).
    pub signer: Option<Arc<AssertionSigner>>,
    loaded: AtomicBool,
    /// Set on SIGTERM: `/readyz` answers 503 while the auth listener drains.
    draining: AtomicBool,
}

impl AppState {
    pub fn new(
        keys: KeyStore,
        metrics: Arc<Metrics>,
        tokens: TokenCache,
        identity: IdentityClient,
        decision_log: Option<Arc<DecisionLog>>,
        signer: Option<Arc<AssertionSigner>>,
    ) -> Arc<Self> {
        let retained = tokens.clone();
        keys.on_key_set_change(Arc::new(move |url, kids| retained.retain_kids(url, kids)));
        Arc::new(Self {
            index: ArcSwap::from_pointee(PolicyIndex::default()),
            keys,
            metrics,
            tokens,
            identity,
            decision_log,
            shadows: ShadowWatch::default(),
            signer,
            loaded: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        })
    }

    /// The index as of now; requests hold it for their whole decision.
    pub fn index(&self) -> arc_swap::Guard<Arc<PolicyIndex>> {
        self.index.load()
    }

    /// Makes `index` the live policy set. Key caches for new issuers start fetching first,
    /// so the first request under a new policy finds a fetch already under way.
    pub fn install(&self, index: PolicyIndex) {
        self.keys.retain(&index.jwks_uris());
        // Warn about the conflicts and refusals of the policies that moved, not every one at
        // every change.
        let moved: Option<HashSet<PolicyKey>> = index
            .changed_since(self.index.load().revision())
            .map(|keys| keys.into_iter().collect());
        let concerns = |key: &PolicyKey| moved.as_ref().is_none_or(|m| m.contains(key));
        for conflict in index
            .conflicts()
            .filter(|c| c.policies.iter().any(concerns))
        {
            tracing::warn!(host = %conflict.host, path = %conflict.path, policies = ?conflict.policies.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "several policies claim the same route; requests on it are denied with policy_invalid");
        }
        for (policy, hosts) in index.refusals().filter(|(k, _)| concerns(k)) {
            tracing::warn!(policy = %policy, hosts = ?hosts.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
                "host claims not routed: another namespace holds the hosts, or this namespace neither serves them nor is granted them");
        }
        // Only the policies that moved (one edit among 10,000 looks at one), unless unknown.
        let looked_at: Vec<(PolicyKey, &PolicyEntry)> = match &moved {
            Some(keys) => keys
                .iter()
                .filter_map(|k| Some((k.clone(), index.entry(k)?)))
                .collect(),
            None => index.entries().collect(),
        };
        for (key, entry) in looked_at {
            if let PolicyEntry::Ready(p) = entry {
                if let Some(Candidate::Invalid(e)) = &p.candidate {
                    tracing::warn!(policy = %key, error = %e, "candidate rules do not compile: not evaluated; the live policy is enforced as it is");
                }
                if p.dry_run {
                    tracing::warn!(policy = %key, "policy in dry-run: evaluated, NOT enforced");
                }
            }
        }
        self.metrics
            .policies
            .get_or_create(&PolicyStateLabels { state: "ready" })
            .set(index.ready() as i64);
        self.metrics
            .policies
            .get_or_create(&PolicyStateLabels { state: "invalid" })
            .set(index.invalid() as i64);
        self.metrics.dry_run_policies.set(index.dry_run() as i64);
        self.shadows.retain(|k| index.entry(k).is_some());
        self.index.store(Arc::new(index));
        self.loaded.store(true, Ordering::Release);
    }

    /// Ready once a policy set has been installed (it may be empty), until shutdown begins.
    pub fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire) && !self.is_draining()
    }

    /// Shutdown has begun: still answering, no longer ready.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

impl PolicySink for AppState {
    fn install(&self, index: PolicyIndex) {
        AppState::install(self, index)
    }

    fn ignored_other_class(&self, count: usize) {
        self.metrics
            .policies
            .get_or_create(&PolicyStateLabels {
                state: "other_class",
            })
            .set(count as i64);
    }
}
