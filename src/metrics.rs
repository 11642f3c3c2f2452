//! Prometheus metrics. Label values come from bounded sets: policy keys, reason codes,
//! JWKS URLs, configured header names. Never a token, never a claim value.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `namespace/name`, or `-` when no policy was resolved (shared, not copied per request).
    pub policy: Arc<str>,
    pub decision: &'static str,
    /// Reason code, or `ok` for an allow.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DryRunLabels {
    /// The dry-run policy.
    pub policy: Arc<str>,
    /// What it would have answered: `allow` or `deny`.
    pub verdict: &'static str,
    /// Reason code, or `ok` for an allow.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CandidateLabels {
    /// The live policy whose candidate was evaluated.
    pub policy: Arc<str>,
    /// `agree`, `candidate_denies`, `candidate_allows`, `reason_differs`, `headers_differ`.
    pub result: &'static str,
    /// The deny reason they disagree on, or `ok`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyFetchLabels {
    pub jwks_uri: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdentityFetchLabels {
    /// `ok` or a failure category (`timeout`, `blocked_address`, `groups_over_limit`, ...).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksLabels {
    pub jwks_uri: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLogLabels {
    /// `written`, or why the line was dropped: `rate_limited`, `queue_full`, `sink_failed`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DroppedHeaderLabels {
    pub policy: Arc<str>,
    pub header: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyStateLabels {
    /// `ready`, `invalid`, or `other_class` (seen by the source, served by another install).
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `auth` or `admin`.
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DroppedConnectionLabels {
    pub listener: &'static str,
    /// `over_limit`, `head_timeout`, `idle_timeout` or `shutdown`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngressNamespaceLabels {
    /// The Ingress's namespace (not `namespace`: Prometheus gives that to the scraped pod's).
    pub ingress_namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusWriteLabels {
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// The elected replica's status writer (cluster mode).
pub struct StatusWriterMetrics {
    pub patches: Family<StatusWriteLabels, Counter>,
    pub patch_seconds: Histogram,
    /// Policies waiting for a write (changed, backing off, or inside their minimum interval).
    pub queue: Gauge,
    /// 1 while this replica holds the Lease and writes status.
    pub leader: Gauge,
}

/// All metric families, registered once.
pub struct Metrics {
    registry: Registry,
    pub decisions: Family<DecisionLabels, Counter>,
    pub decision_seconds: Histogram,
    pub key_fetches: Family<KeyFetchLabels, Counter>,
    pub keys_loaded: Family<JwksLabels, Gauge>,
    pub identity_fetches: Family<IdentityFetchLabels, Counter>,
    pub identity_cache_bytes: Gauge,
    pub headers_dropped: Family<DroppedHeaderLabels, Counter>,
    pub policy_reloads: Family<ReloadLabels, Counter>,
    pub policies: Family<PolicyStateLabels, Gauge>,
    pub connections_open: Family<ListenerLabels, Gauge>,
    pub connections_dropped: Family<DroppedConnectionLabels, Counter>,
    pub status: StatusWriterMetrics,
    /// Ingresses naming a policy this install does not serve (`controller::ingress_refs`).
    pub ingress_policy_missing: Family<IngressNamespaceLabels, Gauge>,
    pub decision_log_lines: Family<DecisionLogLabels, Counter>,
    /// Policies in dry-run: evaluated, not enforcing.
    pub dry_run_policies: Gauge,
    pub dry_run_decisions: Family<DryRunLabels, Counter>,
    pub candidate_decisions: Family<CandidateLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("accessgate");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Auth decisions by policy, outcome and reason code",
            decisions.clone(),
        );
        // 10 µs .. ~5 s: a cached decision is microseconds, a cold fetch can be seconds.
        let decision_seconds = Histogram::new(exponential_buckets(0.00001, 2.5, 15));
        registry.register(
            "decision_duration_seconds",
            "Time to answer an auth request",
            decision_seconds.clone(),
        );
        let key_fetches = Family::<KeyFetchLabels, Counter>::default();
        registry.register(
            "key_fetches",
            "JWKS fetches by URL and result",
            key_fetches.clone(),
        );
        let keys_loaded = Family::<JwksLabels, Gauge>::default();
        registry.register(
            "keys_loaded",
            "Signing keys currently held per JWKS URL",
            keys_loaded.clone(),
        );
        let identity_fetches = Family::<IdentityFetchLabels, Counter>::default();
        registry.register(
            "identity_fetches",
            "get-identity fetches by result (ok or failure category)",
            identity_fetches.clone(),
        );
        let identity_cache_bytes = Gauge::default();
        registry.register(
            "identity_cache_bytes",
            "Approximate bytes of cached identities (bounded by --identity-cache-mib)",
            identity_cache_bytes.clone(),
        );
        let headers_dropped = Family::<DroppedHeaderLabels, Counter>::default();
        registry.register(
            "header_values_dropped",
            "Identity header values not emitted: unsafe, too long, or a list item holding its separator",
            headers_dropped.clone(),
        );
        let policy_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy set reloads by result",
            policy_reloads.clone(),
        );
        let policies = Family::<PolicyStateLabels, Gauge>::default();
        registry.register(
            "policies",
            "Policies by state: ready and invalid are this install's; other_class are ignored, another install's class",
            policies.clone(),
        );
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Open connections per listener (bounded by --max-connections / --admin-max-connections)",
            connections_open.clone(),
        );
        let connections_dropped = Family::<DroppedConnectionLabels, Counter>::default();
        registry.register(
            "connections_dropped",
            "Connections accessgate closed with no request in flight: refused over the cap, request head or keep-alive idle timeout, shutdown",
            connections_dropped.clone(),
        );
        let ingress_policy_missing = Family::<IngressNamespaceLabels, Gauge>::default();
        registry.register(
            "ingress_policy_missing",
            "Ingresses whose auth-url reaches this install and names an AccessPolicy it does not serve, by the Ingress's namespace (cluster mode)",
            ingress_policy_missing.clone(),
        );
        let patches = Family::<StatusWriteLabels, Counter>::default();
        registry.register(
            "status_patches",
            "AccessPolicy status patches by this replica, by result (only the elected replica writes)",
            patches.clone(),
        );
        // 1 ms .. ~16 s: a patch is milliseconds, a slow API server seconds.
        let patch_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "status_patch_duration_seconds",
            "Time one status patch took",
            patch_seconds.clone(),
        );
        let queue = Gauge::default();
        registry.register(
            "status_queue_depth",
            "Policies waiting for a status write",
            queue.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the Lease and writes status and Events",
            leader.clone(),
        );
        let decision_log_lines = Family::<DecisionLogLabels, Counter>::default();
        registry.register(
            "decision_log_lines",
            "Decision log lines by result: written, or dropped (rate_limited, queue_full, sink_failed)",
            decision_log_lines.clone(),
        );
        let dry_run_policies = Gauge::default();
        registry.register(
            "dry_run_policies",
            "Policies in dry-run mode: evaluated on every request they select, never the answer",
            dry_run_policies.clone(),
        );
        let dry_run_decisions = Family::<DryRunLabels, Counter>::default();
        registry.register(
            "dry_run_decisions",
            "What dry-run policies would have answered, by policy, verdict and reason",
            dry_run_decisions.clone(),
        );
        let candidate_decisions = Family::<CandidateLabels, Counter>::default();
        registry.register(
            "candidate_decisions",
            "Candidate rules evaluated beside their live policy, by policy and result (agree or how they disagree)",
            candidate_decisions.clone(),
        );
        let status = StatusWriterMetrics {
            patches,
            patch_seconds,
            queue,
            leader,
        };
        Arc::new(Self {
            registry,
            decisions,
            decision_seconds,
            key_fetches,
            keys_loaded,
            identity_fetches,
            identity_cache_bytes,
            headers_dropped,
            policy_reloads,
            policies,
            connections_open,
            connections_dropped,
            status,
            ingress_policy_missing,
            decision_log_lines,
            dry_run_policies,
            dry_run_decisions,
            candidate_decisions,
        })
    }

    /// Counts one answer: `allow`/`ok`, `deny`/its reason, or `allow`/`dry_run` for a request
    /// a dry-run policy let through although it would have denied it.
    pub fn count_decision(&self, policy: &Arc<str>, decision: &'static str, reason: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                policy: policy.clone(),
                decision,
                reason,
            })
            .inc();
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
