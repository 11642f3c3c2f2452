//! The live set of policies: lookup by `namespace/name` and by host + path. Pure; the
//! sources build a new index and swap it in whole (see `server::State`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use url::Url;

use crate::policy::{CompiledPolicy, PolicyKey};
use crate::reason::Reason;

/// A policy as the index holds it: enforceable, or refused with the validation message.
#[derive(Debug, Clone)]
pub enum Entry {
    Ready(Arc<CompiledPolicy>),
    Invalid(String),
}

#[derive(Debug, Clone)]
enum Route {
    Policy(Arc<CompiledPolicy>),
    /// Two or more policies claim the same host and path: none of them is chosen.
    Conflict,
}

/// A route claimed by several policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConflict {
    pub host: String,
    pub path: String,
    pub policies: Vec<PolicyKey>,
}

#[derive(Debug, Default)]
pub struct PolicyIndex {
    by_name: HashMap<String, HashMap<String, Entry>>,
    /// Per host, prefixes sorted longest first.
    by_host: HashMap<String, Vec<(String, Route)>>,
    conflicts: Vec<RouteConflict>,
    len: usize,
}

impl PolicyIndex {
    pub fn build(entries: impl IntoIterator<Item = (PolicyKey, Entry)>) -> Self {
        let mut index = PolicyIndex::default();
        let mut claims: HashMap<(String, String), Vec<Arc<CompiledPolicy>>> = HashMap::new();
        for (key, entry) in entries {
            if let Entry::Ready(p) = &entry {
                for (host, path) in &p.routes {
                    claims
                        .entry((host.clone(), path.clone()))
                        .or_default()
                        .push(p.clone());
                }
            }
            index
                .by_name
                .entry(key.namespace)
                .or_default()
                .insert(key.name, entry);
            index.len += 1;
        }
        for ((host, path), mut policies) in claims {
            let route = if policies.len() == 1 {
                Route::Policy(policies.pop().expect("one element"))
            } else {
                let mut keys: Vec<PolicyKey> = policies.iter().map(|p| p.key.clone()).collect();
                keys.sort();
                index.conflicts.push(RouteConflict {
                    host: host.clone(),
                    path: path.clone(),
                    policies: keys,
                });
                Route::Conflict
            };
            index.by_host.entry(host).or_default().push((path, route));
        }
        for routes in index.by_host.values_mut() {
            routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        }
        index
            .conflicts
            .sort_by(|a, b| (&a.host, &a.path).cmp(&(&b.host, &b.path)));
        index
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// For `/auth/{namespace}/{name}`.
    pub fn by_name(&self, namespace: &str, name: &str) -> Result<&Arc<CompiledPolicy>, Reason> {
        match self.by_name.get(namespace).and_then(|m| m.get(name)) {
            Some(Entry::Ready(p)) => Ok(p),
            Some(Entry::Invalid(_)) => Err(Reason::PolicyInvalid),
            None => Err(Reason::PolicyUnknown),
        }
    }

    /// For the bare `/auth`: the longest path prefix (whole segments) under the exact host.
    pub fn by_route(&self, host: &str, path: &str) -> Result<&Arc<CompiledPolicy>, Reason> {
        let routes = self.by_host.get(host).ok_or(Reason::PolicyUnknown)?;
        for (prefix, route) in routes {
            if segment_prefix(prefix, path) {
                return match route {
                    Route::Policy(p) => Ok(p),
                    Route::Conflict => Err(Reason::PolicyInvalid),
                };
            }
        }
        Err(Reason::PolicyUnknown)
    }

    pub fn entry(&self, key: &PolicyKey) -> Option<&Entry> {
        self.by_name.get(&key.namespace)?.get(&key.name)
    }

    pub fn entries(&self) -> impl Iterator<Item = (PolicyKey, &Entry)> {
        self.by_name.iter().flat_map(|(ns, m)| {
            m.iter()
                .map(move |(name, e)| (PolicyKey::new(ns.clone(), name.clone()), e))
        })
    }

    pub fn conflicts(&self) -> &[RouteConflict] {
        &self.conflicts
    }

    /// Every JWKS URL an enforceable policy needs.
    pub fn jwks_uris(&self) -> HashSet<Url> {
        self.by_name
            .values()
            .flat_map(|m| m.values())
            .filter_map(|e| match e {
                Entry::Ready(p) => Some(p.jwks_uri.clone()),
                Entry::Invalid(_) => None,
            })
            .collect()
    }
}

/// `/api` matches `/api` and `/api/x`, not `/apix`. Both sides are normalised (no trailing slash but `/`).
fn segment_prefix(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{AccessPolicySpec, IssuerSpec, compile};

    fn policy(name: &str, hosts: &[&str], paths: &[&str]) -> (PolicyKey, Entry) {
        let spec = AccessPolicySpec {
            issuer: IssuerSpec {
                team_domain: Some("t.cloudflareaccess.com".into()),
                ..Default::default()
            },
            audiences: vec!["a".repeat(64)],
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let key = PolicyKey::new("ns", name);
        (
            key.clone(),
            Entry::Ready(Arc::new(compile(key, None, &spec).unwrap())),
        )
    }

    #[test]
    fn lookup_by_name() {
        let idx = PolicyIndex::build([
            policy("a", &[], &[]),
            (PolicyKey::new("ns", "bad"), Entry::Invalid("x".into())),
        ]);
        assert_eq!(idx.by_name("ns", "a").unwrap().key.name, "a");
        assert_eq!(idx.by_name("ns", "bad").unwrap_err(), Reason::PolicyInvalid);
        assert_eq!(idx.by_name("ns", "zzz").unwrap_err(), Reason::PolicyUnknown);
        assert_eq!(
            idx.by_name("other", "a").unwrap_err(),
            Reason::PolicyUnknown
        );
    }

    #[test]
    fn longest_segment_prefix_wins() {
        let idx = PolicyIndex::build([
            policy("root", &["app.example.com"], &[]),
            policy("api", &["app.example.com"], &["/api"]),
            policy("admin", &["app.example.com"], &["/api/admin"]),
        ]);
        let name = |path: &str| {
            idx.by_route("app.example.com", path)
                .map(|p| p.key.name.clone())
        };
        assert_eq!(name("/").unwrap(), "root");
        assert_eq!(name("/apix").unwrap(), "root");
        assert_eq!(name("/api").unwrap(), "api");
        assert_eq!(name("/api/v1").unwrap(), "api");
        assert_eq!(name("/api/admin/users").unwrap(), "admin");
        assert_eq!(
            idx.by_route("other.example.com", "/").unwrap_err(),
            Reason::PolicyUnknown
        );
    }

    #[test]
    fn conflicting_routes_choose_nobody() {
        let idx = PolicyIndex::build([
            policy("one", &["app.example.com"], &["/x"]),
            policy("two", &["app.example.com"], &["/x"]),
            policy("root", &["app.example.com"], &[]),
        ]);
        assert_eq!(
            idx.by_route("app.example.com", "/x/y").unwrap_err(),
            Reason::PolicyInvalid
        );
        assert_eq!(
            idx.by_route("app.example.com", "/z").unwrap().key.name,
            "root"
        );
        assert_eq!(idx.conflicts().len(), 1);
        assert_eq!(
            idx.conflicts()[0].policies,
            vec![PolicyKey::new("ns", "one"), PolicyKey::new("ns", "two")]
        );
    }

    #[test]
    fn jwks_uris_are_deduplicated() {
        let idx = PolicyIndex::build([policy("a", &[], &[]), policy("b", &[], &[])]);
        assert_eq!(idx.jwks_uris().len(), 1);
    }
}
