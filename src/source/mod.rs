//! Where policies come from: `files` (a directory of manifests) or `kube` (the API server).
//! A source builds each new policy set and hands it to a [`PolicySink`]; it knows nothing of
//! who serves it. Both keep only this install's policies ([`class`]).

pub mod class;
pub mod files;
pub mod hosts;
pub mod kube;

use crate::core::index::PolicyIndex;

/// Takes each new policy set, whole.
pub trait PolicySink: Send + Sync {
    fn install(&self, index: PolicyIndex);

    /// How many policies of other installs' classes the source left out of the set it is
    /// about to install (told before each [`PolicySink::install`]).
    fn ignored_other_class(&self, count: usize);
}
