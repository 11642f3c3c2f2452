//! Where policies come from: `files` (a directory of manifests) or `kube` (the API server).

pub mod files;
pub mod kube;
