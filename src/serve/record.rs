//! What every verdict leaves behind: its count and latency in `/metrics`, a count per
//! withheld identity header, and one log line (a deny at info, an allow at debug). Never
//! the token.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use crate::core::dialect::OriginalRequest;
use crate::metrics::{DroppedHeaderLabels, Metrics};
use crate::serve::verdict::Verdict;

/// The metrics and log label of a verdict no policy was selected for.
pub static NO_POLICY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("-"));

/// Counts (when `metrics` is given) and logs one verdict reached under `policy`.
pub fn verdict(
    metrics: Option<&Metrics>,
    policy: &Arc<str>,
    original: Option<&OriginalRequest>,
    verdict: &Verdict,
    started: Instant,
) {
    if let Some(metrics) = metrics {
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
