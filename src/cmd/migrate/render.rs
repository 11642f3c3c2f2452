//! The Gateway API and Envoy Gateway manifests equivalent to an Ingress's accessgate auth:
//! the HTTPRoute (with the `ExternalAuth` filter, or bare beside a `SecurityPolicy`), and the
//! ReferenceGrant that lets the route's namespace name accessgate's Service. Pure; the shapes
//! are those of examples/gateway-api-external-auth-http.yaml and examples/envoy-gateway.yaml,
//! which tests/proxies/gateway_examples.rs validates against the upstream CRDs.

use k8s_openapi::api::networking::v1::Ingress;
use serde_json::{Value, json};

use super::analyze::{IngressReport, PolicyRef};
use crate::controller::install::InstallService;

/// The headers accessgate reads the token from: the filters send only what they list.
const TOKEN_HEADERS: [&str; 2] = ["cf-access-jwt-assertion", "cookie"];

/// Which manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    GatewayApi,
    EnvoyGateway,
}

/// The manifests for `ing` on `flavor`, attached to the Gateway `gateway` (namespace, name);
/// or why none can be written.
pub fn manifests(
    ing: &Ingress,
    report: &IngressReport,
    install: &InstallService,
    gateway: (&str, &str),
    flavor: Flavor,
) -> Result<Vec<Value>, String> {
    let Some(PolicyRef::Name { namespace, name }) = &report.policy else {
        return Err("no named accessgate policy".into());
    };
    let path = format!("/envoy/{namespace}/{name}");
    let backend =
        json!({"name": install.name, "namespace": install.namespace, "port": install.port});
    let filter = json!({
        "type": "ExternalAuth",
        "externalAuth": {
            "protocol": "HTTP",
            "backendRef": backend,
            "http": {
                "path": path,
                "allowedHeaders": TOKEN_HEADERS,
                "allowedResponseHeaders": report.response_headers,
            }
        }
    });
    let spec = ing.spec.as_ref().ok_or("the Ingress has no spec")?;
    let mut hostnames: Vec<String> = Vec::new();
    let mut rules = Vec::new();
    for rule in spec.rules.iter().flatten() {
        hostnames.extend(rule.host.clone());
        for p in rule.http.iter().flat_map(|h| &h.paths) {
            let service = p
                .backend
                .service
                .as_ref()
                .ok_or("a path backend that is not a Service")?;
            let port = service
                .port
                .as_ref()
                .and_then(|p| p.number)
                .ok_or_else(|| {
                    format!(
                        "Service {} is named by port name; HTTPRoute needs the number",
                        service.name
                    )
                })?;
            let kind = match p.path_type.as_str() {
                "Exact" => "Exact",
                _ => "PathPrefix",
            };
            let mut r = json!({
                "matches": [{"path": {"type": kind, "value": p.path.clone().unwrap_or_else(|| "/".into())}}],
                "backendRefs": [{"name": service.name, "port": port}],
            });
            if flavor == Flavor::GatewayApi {
                r["filters"] = json!([filter]);
            }
            rules.push(r);
        }
    }
    if rules.is_empty() {
        return Err("the Ingress has no path rules".into());
    }
    hostnames.sort();
    hostnames.dedup();
    let (ns, route) = (&report.namespace, &report.name);
    let route_doc = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": route, "namespace": ns},
        "spec": {
            "parentRefs": [{"name": gateway.1, "namespace": gateway.0}],
            "hostnames": hostnames,
            "rules": rules,
        }
    });
    let (from_group, from_kind) = match flavor {
        Flavor::GatewayApi => ("gateway.networking.k8s.io", "HTTPRoute"),
        Flavor::EnvoyGateway => ("gateway.envoyproxy.io", "SecurityPolicy"),
    };
    let grant = json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {
            "name": format!("accessgate-from-{ns}-{}", from_kind.to_ascii_lowercase()),
            "namespace": install.namespace,
        },
        "spec": {
            "from": [{"group": from_group, "kind": from_kind, "namespace": ns}],
            "to": [{"group": "", "kind": "Service", "name": install.name}],
        }
    });
    let mut out = vec![route_doc];
    if flavor == Flavor::EnvoyGateway {
        out.push(json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "SecurityPolicy",
            "metadata": {"name": format!("{route}-accessgate"), "namespace": ns},
            "spec": {
                "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": route}],
                "extAuth": {
                    "headersToExtAuth": TOKEN_HEADERS,
                    "http": {
                        "backendRefs": [backend],
                        "path": path,
                        "headersToBackend": report.response_headers,
                    }
                }
            }
        }));
    }
    out.push(grant);
    Ok(out)
}
