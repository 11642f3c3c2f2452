//! The elected replica rotates the upstream assertion's key Secret (`--assertion-keys-secret`,
//! every `--assertion-key-rotation`): `next.pem` becomes `current.pem`, `current.pem` becomes
//! `previous.pem`, and a new `next.pem` is drawn. Every replica reads the Secret from its
//! mounted volume ([`crate::keys::signing`]), so a key is published by all of them a full step
//! before any signs with it, and stays published a full step after the last token it signed.
//! The time of the last step is an annotation on the Secret, so a new leader continues the
//! schedule instead of restarting it; the write carries the read `resourceVersion`, so two
//! replicas that both believe they lead cannot rotate twice. See docs/security.md, "The
//! upstream assertion".

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::keys::signing::{self, SigningError};

/// The annotation holding the time of the last rotation step (RFC 3339).
pub const ROTATED_AT: &str = "accessgate.dev/rotated-at";

/// The shortest step: longer than the kubelet's Secret sync (about a minute) plus the longest
/// assertion lifetime (5 minutes), with room.
pub const MIN_STEP: Duration = Duration::from_secs(600);

/// How often the leader looks at the Secret.
const CHECK: Duration = Duration::from_secs(60);

/// What rotates, and how often.
#[derive(Debug, Clone)]
pub struct KeyRotationConfig {
    pub namespace: String,
    pub secret: String,
    pub every: Duration,
}

/// The Secret's next data and annotation, when something is to change: the step when it is
/// due, a missing `next.pem` drawn (never a shift without one: it would sign with a key no
/// replica published), or the schedule started on a Secret without the annotation.
pub fn plan(
    data: &BTreeMap<String, ByteString>,
    rotated_at: Option<&str>,
    now: SystemTime,
    every: Duration,
    draw: impl FnOnce() -> Result<String, SigningError>,
) -> Result<Option<BTreeMap<String, ByteString>>, SigningError> {
    let last = rotated_at.and_then(|t| humantime::parse_rfc3339(t).ok());
    let due = last.is_some_and(|t| now.duration_since(t).unwrap_or_default() >= every);
    let has = |k: &str| data.contains_key(k);
    if last.is_some() && !due && has("next.pem") && has("current.pem") {
        return Ok(None);
    }
    let mut out = data.clone();
    if due && has("next.pem") && has("current.pem") {
        let current = out.remove("current.pem");
        let next = out.remove("next.pem");
        out.extend(current.map(|c| ("previous.pem".to_owned(), c)));
        out.extend(next.map(|n| ("current.pem".to_owned(), n)));
    }
    if !out.contains_key("next.pem") {
        out.insert("next.pem".into(), ByteString(draw()?.into_bytes()));
    }
    Ok(Some(out))
}

pub struct KeyRotation {
    pub client: Client,
    pub config: KeyRotationConfig,
}

impl KeyRotation {
    /// Looks at the Secret every minute while this replica leads, until `stop`.
    pub async fn run(self, mut leader: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = leader.changed() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if !*leader.borrow_and_update() {
                continue;
            }
            if let Err(e) = self.step(SystemTime::now()).await {
                tracing::warn!(secret = %self.config.secret, error = %e, "assertion key rotation failed; retried in a minute");
            }
        }
    }

    async fn step(&self, now: SystemTime) -> Result<(), RotationError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.config.namespace);
        let mut secret = api.get(&self.config.secret).await?;
        let data = secret.data.clone().unwrap_or_default();
        let rotated_at = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ROTATED_AT))
            .cloned();
        let Some(next) = plan(
            &data,
            rotated_at.as_deref(),
            now,
            self.config.every,
            signing::new_key_pem,
        )?
        else {
            return Ok(());
        };
        let shifted = next.get("current.pem") != data.get("current.pem");
        secret.data = Some(next);
        secret.string_data = None;
        secret.metadata.annotations.get_or_insert_default().insert(
            ROTATED_AT.into(),
            humantime::format_rfc3339_seconds(now).to_string(),
        );
        // `replace` sends the resourceVersion read above: a concurrent write makes it fail.
        api.replace(&self.config.secret, &PostParams::default(), &secret)
            .await?;
        if shifted {
            tracing::info!(secret = %self.config.secret, "assertion keys rotated: next is current, current is previous, a new next is published");
        } else {
            tracing::info!(secret = %self.config.secret, "assertion key schedule started (or next key drawn)");
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum RotationError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Key(#[from] SigningError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    fn text(d: &BTreeMap<String, ByteString>) -> Vec<(String, String)> {
        d.iter()
            .map(|(k, v)| (k.clone(), String::from_utf8(v.0.clone()).unwrap()))
            .collect()
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_due_step_shifts_every_key_by_one_and_draws_a_next() {
        let now = humantime::parse_rfc3339("2026-12-05T10:00:00Z").unwrap();
        let keys = data(&[
            ("previous.pem", "A"),
            ("current.pem", "B"),
            ("next.pem", "C"),
        ]);
        let draw = || Ok("D".to_owned());
        // Not due: nothing.
        assert_eq!(
            plan(&keys, Some("2026-12-05T00:00:00Z"), now, DAY, draw).unwrap(),
            None
        );
        // Due: B → previous, C → current, D → next; A leaves.
        let stepped = plan(&keys, Some("2026-12-04T09:00:00Z"), now, DAY, draw)
            .unwrap()
            .unwrap();
        assert_eq!(
            text(&stepped),
            [
                ("current.pem".into(), "C".into()),
                ("next.pem".into(), "D".into()),
                ("previous.pem".into(), "B".into())
            ]
        );
    }

    #[test]
    fn without_a_next_key_nothing_shifts_and_without_a_time_the_schedule_starts() {
        let now = SystemTime::now();
        let only_current = data(&[("current.pem", "B")]);
        let drawn = plan(
            &only_current,
            Some("2000-01-01T00:00:00Z"),
            now,
            DAY,
            || Ok("D".into()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            text(&drawn),
            [
                ("current.pem".into(), "B".into()),
                ("next.pem".into(), "D".into())
            ],
            "next is published first, never signed with at once"
        );
        let full = data(&[("current.pem", "B"), ("next.pem", "C")]);
        let started = plan(&full, None, now, DAY, || unreachable!("nothing to draw")).unwrap();
        assert_eq!(
            started.map(|d| text(&d)),
            Some(text(&full)),
            "same keys, the clock starts"
        );
        let garbled = plan(&full, Some("yesterday"), now, DAY, || unreachable!()).unwrap();
        assert_eq!(garbled.map(|d| text(&d)), Some(text(&full)));
    }
}
