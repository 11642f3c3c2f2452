//! Where policies come from. `files`: a directory of AccessPolicy manifests.

pub mod files;
