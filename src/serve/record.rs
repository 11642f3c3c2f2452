//! What every verdict leaves behind: its count and latency in `/metrics`, a count per
//! withheld identity header, one log line (a deny at info, an allow at debug), and a line in
//! the decision log when it is on. Never the token.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use serde_json::Value;

use crate::core::decision::VerifiedToken;
use crate::core::dialect::OriginalRequest;
use crate::core::reason::Reason;
use crate::metrics::{DroppedHeaderLabels, Metrics};
use crate::serve::decision_log::{DecisionLog, DecisionRecord, TokenFacts};
use crate::serve::verdict::Verdict;

/// The metrics and log label of a verdict no policy was selected for.
pub static NO_POLICY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("-"));

/// Where verdicts are recorded besides the operational log (`None`: not at all).
#[derive(Clone, Copy)]
pub struct Sinks<'a> {
    pub metrics: Option<&'a Metrics>,
    pub log: Option<&'a DecisionLog>,
}

/// Counts, logs and (when on) writes to the decision log one verdict reached under `policy`,
/// with the token it verified, if any.
pub fn verdict(
    sinks: Sinks<'_>,
    policy: &Arc<str>,
    original: Option<&OriginalRequest>,
    verdict: &Verdict,
    token: Option<&VerifiedToken<'_>>,
    started: Instant,
) {
    if let Some(decisions) = sinks.log {
        decisions.record(&DecisionRecord {
            policy,
            original,
            status: verdict.status,
            reason: verdict.reason().map(Reason::code),
            token: token.map(facts),
        });
    }
    if let Some(metrics) = sinks.metrics {
        metrics.count_decision(policy, verdict.outcome.map(|_| ()));
        metrics
            .decision_seconds
            .observe(started.elapsed().as_secs_f64());
        for (name, why) in &verdict.dropped {
            metrics
                .headers_dropped
                .get_or_create(&DroppedHeaderLabels {
                    policy: policy.clone(),
                    header: name.to_string(),
                    reason: why.code(),
                })
                .inc();
        }
    }
    log(policy, original, verdict);
}

/// What the decision log may say of a verified token: never the token itself.
fn facts<'a>(token: &'a VerifiedToken<'_>) -> TokenFacts<'a> {
    let text = |name: &str| token.claims.get(name).and_then(Value::as_str);
    TokenFacts {
        kind: token.kind,
        kid: &token.key.kid,
        // Cloudflare: a person's `sub`; a service token's `sub` is empty, its `common_name`
        // names it.
        subject: text("sub")
            .filter(|s| !s.is_empty())
            .or_else(|| text("common_name")),
        email: text("email"),
    }
}

fn log(policy: &str, original: Option<&OriginalRequest>, verdict: &Verdict) {
    let (host, path, method, client_ip, request_id) = match original {
        Some(r) => (
            r.host.as_str(),
            r.path.as_str(),
            r.method.as_str(),
            r.client_ip.as_deref(),
            r.request_id.as_deref(),
        ),
        None => ("", "", "", None, None),
    };
    match verdict.outcome {
        Ok(kind) => {
            tracing::debug!(policy, host, path, method, client_ip, request_id, kind = ?kind, "allow")
        }
        Err(reason) => tracing::info!(
            policy,
            host,
            path,
            method,
            client_ip,
            request_id,
            reason = reason.code(),
            status = verdict.status,
            "deny"
        ),
    }
}
