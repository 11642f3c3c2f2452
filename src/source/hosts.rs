//! What the cluster says about hosts: which namespace serves which host (its Ingress rules
//! and accepted HTTPRoute hostnames), and the host ledger the leader keeps in a ConfigMap.
//! Conversions only; the decisions are in [`crate::core::hosts`].
//!
//! The ledger ConfigMap has one key per held pattern (a wildcard `*.` is written `_.`, as
//! ConfigMap keys allow no `*` and no DNS name starts with `_`), each value a JSON
//! [`Holding`]: `{"namespace":"team-a","since":1764892800}` plus `absentSince` while the
//! holder no longer claims it. An operator frees a host by deleting its key.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;
use kube::api::DynamicObject;

use crate::core::hosts::{Holding, Ledger, ServedHosts};

/// The hosts each namespace's Ingresses and HTTPRoutes serve. An HTTPRoute counts once a
/// Gateway has accepted it (`status.parents[].conditions` `Accepted=True`): a route no
/// Gateway serves would otherwise grant a host to whoever wrote it.
pub fn served_hosts<'a>(
    ingresses: impl IntoIterator<Item = &'a Ingress>,
    routes: impl IntoIterator<Item = &'a DynamicObject>,
) -> ServedHosts {
    let mut served = ServedHosts::default();
    for ingress in ingresses {
        let ns = ingress.namespace().unwrap_or_default();
        let rules = ingress.spec.as_ref().and_then(|s| s.rules.as_ref());
        for host in rules
            .into_iter()
            .flatten()
            .filter_map(|r| r.host.as_deref())
        {
            served.add_ingress_host(&ns, host);
        }
    }
    for route in routes {
        if !accepted(route) {
            continue;
        }
        let ns = route.namespace().unwrap_or_default();
        let hostnames = route.data["spec"]["hostnames"].as_array();
        for host in hostnames.into_iter().flatten().filter_map(|h| h.as_str()) {
            served.add_route_hostname(&ns, host);
        }
    }
    served
}

fn accepted(route: &DynamicObject) -> bool {
    let parents = route.data["status"]["parents"].as_array();
    parents.into_iter().flatten().any(|parent| {
        let conditions = parent["conditions"].as_array();
        conditions
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Accepted" && c["status"] == "True")
    })
}

/// The ledger a ConfigMap records; keys or values it cannot read are left out (and so, for
/// that pattern, the next holder is chosen afresh) and reported.
pub fn ledger_from(map: Option<&ConfigMap>) -> (Ledger, Vec<String>) {
    let mut ledger = Ledger::new();
    let mut unreadable = Vec::new();
    let data = map.and_then(|m| m.data.as_ref());
    for (key, value) in data.into_iter().flatten() {
        let pattern = match key.strip_prefix("_.") {
            Some(suffix) => format!("*.{suffix}"),
            None => key.clone(),
        };
        match serde_json::from_str::<Holding>(value) {
            Ok(holding) if crate::core::hosts::is_host_pattern(&pattern) => {
                ledger.insert(pattern, holding);
            }
            _ => unreadable.push(key.clone()),
        }
    }
    (ledger, unreadable)
}

/// The ConfigMap `data` recording `ledger`.
pub fn ledger_data(ledger: &Ledger) -> BTreeMap<String, String> {
    ledger
        .iter()
        .map(|(pattern, holding)| {
            let key = match pattern.strip_prefix("*.") {
                Some(suffix) => format!("_.{suffix}"),
                None => pattern.clone(),
            };
            let value = serde_json::to_string(holding).expect("a Holding serialises");
            (key, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ledger_round_trips_through_configmap_data() {
        let mut ledger = Ledger::new();
        ledger.insert(
            "*.apps.example.com".into(),
            Holding {
                namespace: "a".into(),
                since: 5,
                absent_since: Some(9),
            },
        );
        ledger.insert(
            "x.example.com".into(),
            Holding {
                namespace: "b".into(),
                since: 7,
                absent_since: None,
            },
        );
        let data = ledger_data(&ledger);
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["_.apps.example.com", "x.example.com"]
        );
        assert_eq!(data["x.example.com"], r#"{"namespace":"b","since":7}"#);
        let map = ConfigMap {
            data: Some(data),
            ..Default::default()
        };
        assert_eq!(ledger_from(Some(&map)), (ledger, vec![]));
    }

    #[test]
    fn unreadable_ledger_entries_are_reported_not_trusted() {
        let map = ConfigMap {
            data: Some(BTreeMap::from([
                ("x.example.com".into(), "not json".into()),
                (
                    "UPPER.example.com".into(),
                    r#"{"namespace":"a","since":1}"#.into(),
                ),
            ])),
            ..Default::default()
        };
        let (ledger, bad) = ledger_from(Some(&map));
        assert!(ledger.is_empty());
        assert_eq!(bad.len(), 2);
    }

    #[test]
    fn only_accepted_routes_serve_hosts() {
        let route = |ns: &str, accepted: &str| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": "r", "namespace": ns},
                "spec": {"hostnames": ["*.gw.example.com"]},
                "status": {"parents": [{"conditions": [{"type": "Accepted", "status": accepted}]}]}
            }))
            .unwrap()
        };
        let ingress: Ingress = serde_json::from_value(json!({
            "metadata": {"name": "i", "namespace": "ing"},
            "spec": {"rules": [{"host": "*.apps.example.com"}, {"http": {"paths": []}}]}
        }))
        .unwrap();
        let routes = [route("yes", "True"), route("no", "False")];
        let served = served_hosts([&ingress], &routes);
        assert!(served.serves("yes", "a.b.gw.example.com"));
        assert!(!served.serves("no", "a.gw.example.com"));
        assert!(served.serves("ing", "x.apps.example.com"));
    }
}
