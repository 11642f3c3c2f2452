//! What the decisions that are never the answer leave behind: a dry-run policy's would-be
//! verdict and a candidate's disagreement with its live policy. Counted in `/metrics` on every
//! request; remembered here only once per policy generation (the first would-be denial, the
//! first disagreement), so the status the elected replica writes changes once, not with
//! traffic. See docs/routing.md, "Changing a policy safely".

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

use crate::core::candidate::Comparison;
use crate::core::policy::PolicyKey;
use crate::core::reason::Reason;

/// The first time a policy generation's shadow decision said something worth a status line.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstSeen {
    pub generation: Option<i64>,
    pub at: SystemTime,
    /// The reason of the first would-be denial, or the first disagreement's.
    pub what: Seen,
}

/// What was seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seen {
    /// A dry-run policy would have denied.
    WouldDeny(Reason),
    /// The candidate disagreed with the live policy.
    Disagreed(Comparison),
}

/// Per policy: the first would-be denial and the first disagreement of its current
/// generation. Written on the first of each only; every later request reads under a shared
/// lock and leaves.
#[derive(Debug, Default)]
pub struct ShadowWatch {
    would_deny: RwLock<HashMap<PolicyKey, FirstSeen>>,
    disagreed: RwLock<HashMap<PolicyKey, FirstSeen>>,
    /// Policies whose entry changed since the status writer last took them.
    changed: Mutex<Vec<PolicyKey>>,
}

impl ShadowWatch {
    /// Records that `key` at `generation` saw `what`, unless it already did.
    pub fn saw(&self, key: &PolicyKey, generation: Option<i64>, what: Seen) {
        let map = match what {
            Seen::WouldDeny(_) => &self.would_deny,
            Seen::Disagreed(_) => &self.disagreed,
        };
        let known = |m: &HashMap<PolicyKey, FirstSeen>| {
            m.get(key).is_some_and(|f| f.generation == generation)
        };
        if known(&map.read().unwrap_or_else(|e| e.into_inner())) {
            return;
        }
        let mut m = map.write().unwrap_or_else(|e| e.into_inner());
        if known(&m) {
            return;
        }
        m.insert(
            key.clone(),
            FirstSeen {
                generation,
                at: SystemTime::now(),
                what,
            },
        );
        drop(m);
        self.changed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key.clone());
    }

    /// The first would-be denial of `key` at `generation`.
    pub fn would_deny(&self, key: &PolicyKey, generation: Option<i64>) -> Option<FirstSeen> {
        Self::get(&self.would_deny, key, generation)
    }

    /// The first disagreement of `key`'s candidate at `generation`.
    pub fn disagreed(&self, key: &PolicyKey, generation: Option<i64>) -> Option<FirstSeen> {
        Self::get(&self.disagreed, key, generation)
    }

    fn get(
        map: &RwLock<HashMap<PolicyKey, FirstSeen>>,
        key: &PolicyKey,
        generation: Option<i64>,
    ) -> Option<FirstSeen> {
        map.read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .filter(|f| f.generation == generation)
            .cloned()
    }

    /// The policies with a new first sighting since the last call.
    pub fn take_changed(&self) -> Vec<PolicyKey> {
        std::mem::take(&mut *self.changed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Forgets policies that are gone (keeps the maps as large as the policies that have
    /// shadows, not every one that ever had).
    pub fn retain(&self, keep: impl Fn(&PolicyKey) -> bool) {
        for map in [&self.would_deny, &self.disagreed] {
            map.write()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|k, _| keep(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_sighting_of_a_generation_is_kept_and_reported() {
        let watch = ShadowWatch::default();
        let p = PolicyKey::new("ns", "p");
        watch.saw(&p, Some(1), Seen::WouldDeny(Reason::TokenMissing));
        watch.saw(&p, Some(1), Seen::WouldDeny(Reason::RuleDenied));
        assert_eq!(watch.take_changed(), std::slice::from_ref(&p));
        assert_eq!(
            watch.would_deny(&p, Some(1)).map(|f| f.what),
            Some(Seen::WouldDeny(Reason::TokenMissing))
        );
        assert_eq!(watch.disagreed(&p, Some(1)), None);
        assert!(watch.take_changed().is_empty(), "nothing new");

        // An edit starts over: the new generation has seen nothing yet.
        assert_eq!(watch.would_deny(&p, Some(2)), None);
        watch.saw(&p, Some(2), Seen::Disagreed(Comparison::HeadersDiffer));
        assert_eq!(
            watch.disagreed(&p, Some(2)).map(|f| f.what),
            Some(Seen::Disagreed(Comparison::HeadersDiffer))
        );
        assert_eq!(watch.take_changed(), std::slice::from_ref(&p));

        watch.retain(|_| false);
        assert_eq!(watch.disagreed(&p, Some(2)), None);
    }
}
