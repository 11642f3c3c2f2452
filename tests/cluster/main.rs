//! The cluster tier: accessgate against a real kube-apiserver + etcd (built from Go modules),
//! the Helm chart rendered and installed, the chart's pod under bubblewrap, the chart's
//! monitoring checked with promtool. One binary, one module per subject; tests that need a
//! control plane of their own (they stop it, kill it, or need an empty cluster) take the
//! binary's cluster slot alone, the others share [`ControlPlane::shared`] side by side.
#![cfg(feature = "e2e")]

#[path = "../chart_support/mod.rs"]
mod chart_support;
#[path = "../common/mod.rs"]
mod common;

mod assertion_keys;
mod chart_observability;
mod chart_pod;
mod controller;
mod helm;
mod ingress_audit;
mod resync;
mod shutdown_signals;
mod status_bad_input;

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

#[allow(unused_imports)] // named by the docs above
use common::cluster::ControlPlane;

/// Control planes are heavy on two cores: one of its own at a time, and none beside the
/// shared one's tests.
static CLUSTER_SLOT: RwLock<()> = RwLock::new(());

/// Held by a test that starts a control plane of its own, for as long as it runs: bind it
/// first (`let _slot = own_cluster_slot();`) so it is released after the control plane stops.
pub fn own_cluster_slot() -> RwLockWriteGuard<'static, ()> {
    CLUSTER_SLOT.write().unwrap_or_else(|e| e.into_inner())
}

/// Held by a test on [`ControlPlane::shared`] (its own namespace and install class), which
/// runs beside the other tests on it.
pub fn shared_cluster_slot() -> RwLockReadGuard<'static, ()> {
    CLUSTER_SLOT.read().unwrap_or_else(|e| e.into_inner())
}

/// Held while a test applies namespaces and RBAC on [`ControlPlane::shared`]: two tests
/// applying the shared `accessgate-system` namespace at once race (both create).
pub fn shared_setup() -> std::sync::MutexGuard<'static, ()> {
    static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SETUP.lock().unwrap_or_else(|e| e.into_inner())
}
