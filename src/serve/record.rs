//! What every verdict leaves behind: its count and latency in `/metrics`, a count per
//! withheld identity header, one log line (a deny at info, an allow at debug), and a line in
//! the decision log when it is on; and what the decisions beside it left (a dry-run policy's
//! would-be verdict, a candidate's comparison): counted, first sightings remembered for the
//! status, disagreements logged at a bounded rate. Never the token.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use serde_json::Value;

use crate::core::decision::VerifiedToken;
use crate::core::dialect::OriginalRequest;
use crate::core::reason::Reason;
use crate::metrics::{CandidateLabels, DroppedHeaderLabels, DryRunLabels, Metrics};
use crate::serve::authorize::{Shadows, unix_now};
use crate::serve::decision_log::{
    CandidateFacts, DecisionLog, DecisionRecord, DryRunFacts, RateLimit, TokenFacts,
};
use crate::serve::shadow::{Seen, ShadowWatch};
use crate::serve::verdict::Verdict;

/// The metrics and log label of a verdict no policy was selected for.
pub static NO_POLICY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("-"));

/// Where verdicts are recorded besides the operational log (`None`: not at all).
#[derive(Clone, Copy)]
pub struct Sinks<'a> {
    pub metrics: Option<&'a Metrics>,
    pub log: Option<&'a DecisionLog>,
    pub shadows: Option<&'a ShadowWatch>,
}

/// Candidate disagreements and dry-run would-be denials written to the operational log, per
/// second and process, each: the counts are in `/metrics`, the log only says that it happens
/// and on which request (an app with no auth yet would otherwise log every request).
static DISAGREEMENT_LOG: RateLimit = RateLimit::new(5);
static WOULD_DENY_LOG: RateLimit = RateLimit::new(5);

/// Counts, logs and (when on) writes to the decision log one verdict reached under `policy`,
/// with the token it verified, if any.
pub fn verdict(
    sinks: Sinks<'_>,
    policy: &Arc<str>,
    original: Option<&OriginalRequest>,
    verdict: &Verdict,
    token: Option<&VerifiedToken<'_>>,
    shadows: &Shadows,
    started: Instant,
) {
    let would_be = shadows
        .dry_run
        .as_ref()
        .map(|(p, d)| (&p.label, d.outcome().err()));
    let disagreement = shadows.candidates().find(|c| !c.comparison.is_agreement());
    if let Some(decisions) = sinks.log {
        decisions.record(&DecisionRecord {
            policy,
            original,
            status: verdict.status,
            reason: verdict.reason().map(Reason::code),
            token: token.map(facts),
            dry_run: would_be.map(|(policy, reason)| DryRunFacts {
                policy,
                reason: reason.map(Reason::code),
            }),
            candidate: disagreement.map(|c| CandidateFacts {
                policy: &c.live.label,
                result: c.comparison.result(),
                reason: c.comparison.reason(),
            }),
        });
    }
    if let Some(metrics) = sinks.metrics {
        let (decision, reason) = match (verdict.reason(), would_be) {
            (Some(r), _) => ("deny", r.code()),
            // Let through by the dry-run policy that would have refused it.
            (None, Some((p, Some(_)))) if Arc::ptr_eq(p, policy) => ("allow", "dry_run"),
            (None, _) => ("allow", "ok"),
        };
        metrics.count_decision(policy, decision, reason);
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
        if let Some((p, reason)) = would_be {
            metrics
                .dry_run_decisions
                .get_or_create(&DryRunLabels {
                    policy: p.clone(),
                    verdict: if reason.is_some() { "deny" } else { "allow" },
                    reason: reason.map_or("ok", Reason::code),
                })
                .inc();
        }
        for c in shadows.candidates() {
            metrics
                .candidate_decisions
                .get_or_create(&CandidateLabels {
                    policy: c.live.label.clone(),
                    result: c.comparison.result(),
                    reason: c.comparison.reason(),
                })
                .inc();
        }
    }
    if let Some(watch) = sinks.shadows {
        if let Some((p, Some(reason))) = &shadows
            .dry_run
            .as_ref()
            .map(|(p, d)| (p, d.outcome().err()))
        {
            watch.saw(&p.key, p.generation, Seen::WouldDeny(*reason));
        }
        for c in shadows
            .candidates()
            .filter(|c| !c.comparison.is_agreement())
        {
            watch.saw(
                &c.live.key,
                c.live.generation,
                Seen::Disagreed(c.comparison),
            );
        }
    }
    log(policy, original, verdict);
    if let Some((p, Some(reason))) = would_be
        && WOULD_DENY_LOG.admit(unix_now())
    {
        tracing::info!(policy = %p, reason = reason.code(), "dry-run policy would deny");
    }
    if let Some(c) = disagreement
        && DISAGREEMENT_LOG.admit(unix_now())
    {
        let (host, path) = original.map_or(("", ""), |r| (r.host.as_str(), r.path.as_str()));
        tracing::warn!(policy = %c.live.label, result = c.comparison.result(), reason = c.comparison.reason(), host, path,
            "candidate rules disagree with the live policy (more in accessgate_candidate_decisions_total)");
    }
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
