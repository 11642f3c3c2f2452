//! Which policies an install serves. Several installs can share a cluster (one per ingress
//! class, or the operator's blue/green); each serves, and writes status and Events for, only
//! the policies of its own class, so none overwrites another's status. Both sources filter
//! with it before the index is built: another class's policy is `policy_unknown` here.
//!
//! The rule: a policy with `spec.className` belongs to the install started with that
//! `--class`. A policy without one belongs to the default class, [`DEFAULT_CLASS`]: an
//! install claims such policies when `--claim-unclassed` says so, which by default is
//! exactly when its class is the default one. So a single install needs no setting, and a
//! second install needs only its own class.

use crate::api::AccessPolicySpec;

/// The class of an install nobody configured, and of a policy without `className`.
pub const DEFAULT_CLASS: &str = "accessgate";

/// An install's class and whether it also serves policies that name none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallClass {
    name: String,
    claims_unclassed: bool,
}

impl InstallClass {
    /// `claims_unclassed`: `None` means "when `name` is [`DEFAULT_CLASS`]".
    pub fn new(name: impl Into<String>, claims_unclassed: Option<bool>) -> Self {
        let name = name.into();
        let claims_unclassed = claims_unclassed.unwrap_or(name == DEFAULT_CLASS);
        InstallClass {
            name,
            claims_unclassed,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn claims_unclassed(&self) -> bool {
        self.claims_unclassed
    }

    /// Whether a policy with this spec is this install's to serve.
    pub fn owns(&self, spec: &AccessPolicySpec) -> bool {
        match spec.class_name.as_deref() {
            Some(class) => class == self.name,
            None => self.claims_unclassed,
        }
    }
}

impl Default for InstallClass {
    fn default() -> Self {
        InstallClass::new(DEFAULT_CLASS, None)
    }
}

impl std::fmt::Display for InstallClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(class: Option<&str>) -> AccessPolicySpec {
        AccessPolicySpec {
            class_name: class.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn the_default_install_owns_unclassed_and_its_own_class_only() {
        let default = InstallClass::default();
        assert!(default.owns(&spec(None)));
        assert!(default.owns(&spec(Some("accessgate"))));
        assert!(!default.owns(&spec(Some("blue"))));
    }

    #[test]
    fn another_class_leaves_unclassed_policies_to_the_default_install() {
        let blue = InstallClass::new("blue", None);
        assert!(blue.owns(&spec(Some("blue"))));
        assert!(!blue.owns(&spec(None)));
        assert!(!blue.owns(&spec(Some("accessgate"))));
    }

    #[test]
    fn claiming_unclassed_policies_can_be_moved_to_another_install() {
        let green = InstallClass::new("green", Some(true));
        assert!(green.owns(&spec(None)) && green.owns(&spec(Some("green"))));
        let default = InstallClass::new(DEFAULT_CLASS, Some(false));
        assert!(!default.owns(&spec(None)));
        assert!(default.owns(&spec(Some("accessgate"))));
    }

    #[test]
    fn class_names_compare_exactly() {
        let blue = InstallClass::new("blue", None);
        assert!(!blue.owns(&spec(Some("Blue"))));
        assert!(!blue.owns(&spec(Some("blue "))));
        assert!(!blue.owns(&spec(Some(""))));
    }
}
