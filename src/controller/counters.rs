//! Per-policy decision counters for status (`decisions` in AccessPolicy status): allowed,
//! denied and the last denial, since this replica started. Lock-free on the hot path once a
//! policy has its counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use crate::core::reason::Reason;
use crate::serve::state::DecisionObserver;

#[derive(Default)]
struct Counters {
    allowed: AtomicU64,
    denied: AtomicU64,
    last_denial: Mutex<Option<(Reason, SystemTime)>>,
}

/// A copy of one policy's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub allowed: u64,
    pub denied: u64,
    pub last_denial: Option<(Reason, SystemTime)>,
}

pub struct DecisionStats {
    since: SystemTime,
    by_policy: RwLock<HashMap<String, Arc<Counters>>>,
}

impl Default for DecisionStats {
    fn default() -> Self {
        Self {
            since: SystemTime::now(),
            by_policy: RwLock::default(),
        }
    }
}

impl DecisionStats {
    pub fn since(&self) -> SystemTime {
        self.since
    }

    /// Counts one decision for `policy` (`namespace/name`).
    pub fn record(&self, policy: &str, outcome: Result<(), Reason>) {
        let existing = self
            .by_policy
            .read()
            .expect("stats lock")
            .get(policy)
            .cloned();
        let counters = match existing {
            Some(c) => c,
            None => self
                .by_policy
                .write()
                .expect("stats lock")
                .entry(policy.to_owned())
                .or_default()
                .clone(),
        };
        match outcome {
            Ok(()) => {
                counters.allowed.fetch_add(1, Ordering::Relaxed);
            }
            Err(reason) => {
                counters.denied.fetch_add(1, Ordering::Relaxed);
                *counters.last_denial.lock().expect("stats lock") =
                    Some((reason, SystemTime::now()));
            }
        }
    }

    pub fn snapshot(&self, policy: &str) -> Snapshot {
        match self.by_policy.read().expect("stats lock").get(policy) {
            None => Snapshot {
                allowed: 0,
                denied: 0,
                last_denial: None,
            },
            Some(c) => Snapshot {
                allowed: c.allowed.load(Ordering::Relaxed),
                denied: c.denied.load(Ordering::Relaxed),
                last_denial: *c.last_denial.lock().expect("stats lock"),
            },
        }
    }
}

impl DecisionObserver for DecisionStats {
    fn observe(&self, policy: &str, outcome: Result<(), Reason>) {
        self.record(policy, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_policy() {
        let s = DecisionStats::default();
        s.record("a/b", Ok(()));
        s.record("a/b", Ok(()));
        s.record("a/b", Err(Reason::TokenExpired));
        s.record("c/d", Err(Reason::AudienceMismatch));
        let ab = s.snapshot("a/b");
        assert_eq!((ab.allowed, ab.denied), (2, 1));
        assert_eq!(ab.last_denial.unwrap().0, Reason::TokenExpired);
        assert_eq!(
            s.snapshot("x/y"),
            Snapshot {
                allowed: 0,
                denied: 0,
                last_denial: None
            }
        );
    }
}
